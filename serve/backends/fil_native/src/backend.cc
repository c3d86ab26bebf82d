// The Triton entry points of the native `fil` backend (libtriton_fil.so): the C++ twin of
// serve/backends/fil/model.py, serving the same config.pbtxt and model files with the same
// answers (docs/fil_contract.md), without a Python stub in the request path.
//
// Dynamic batching: every request of one execute() call is checked on its own (a bad one
// gets its own error, the others are answered), the valid ones are concatenated, predicted
// once and split again.
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "model_state.h"
#include "triton_abi.h"

namespace {

using fil::ModelState;

uint64_t NowNs() {  // Triton's statistics clock (steady_clock since its epoch)
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Log(int level, const std::string& message) {
  auto triton_level = level == 0 ? TRITONSERVER_LOG_INFO : level == 1 ? TRITONSERVER_LOG_WARN : TRITONSERVER_LOG_ERROR;
  if (TRITONSERVER_LogIsEnabled(triton_level)) {
    TRITONSERVER_Error* err = TRITONSERVER_LogMessage(triton_level, __FILE__, __LINE__, message.c_str());
    if (err) TRITONSERVER_ErrorDelete(err);
  }
}

TRITONSERVER_Error* Error(TRITONSERVER_Error_Code code, const std::string& message) {
  return TRITONSERVER_ErrorNew(code, message.c_str());
}

// Takes an error returned by a Triton call: its message, and the error freed.
std::string Consume(TRITONSERVER_Error* err) {
  std::string message = TRITONSERVER_ErrorMessage(err);
  TRITONSERVER_ErrorDelete(err);
  return message;
}

// fil_compiled{model, version}: what each loaded version is served with (docs/fil_contract.md).
// One family object for the whole backend, so that two loads of one version (a reload) share
// their series by reference count: the old load's delete does not remove the new one's.
constexpr const char* kCompiledMetric = "fil_compiled";
constexpr const char* kCompiledHelp =
    "What the fil backend serves a model version with: 1 the compiled library, 0 Treelite GTIL "
    "(compiling, or compilation off), -1 GTIL for good (compilation failed or was refused)";
TRITONSERVER_MetricFamily* compiled_family = nullptr;

// One model version's fil_compiled series, deleted with it; metrics never fail a load.
class CompiledGauge {
 public:
  CompiledGauge(const std::string& model, uint64_t version) {
    if (!compiled_family) return;
    std::string v = std::to_string(version);
    const TRITONSERVER_Parameter* labels[] = {
        TRITONSERVER_ParameterNew("model", TRITONSERVER_PARAMETER_STRING, model.c_str()),
        TRITONSERVER_ParameterNew("version", TRITONSERVER_PARAMETER_STRING, v.c_str())};
    if (TRITONSERVER_Error* err = TRITONSERVER_MetricNew(&metric_, compiled_family, labels, 2)) {
      Log(1, std::string("[fil] cannot create the ") + kCompiledMetric + " metric: " + Consume(err));
      metric_ = nullptr;
    }
    for (auto* label : labels) TRITONSERVER_ParameterDelete(const_cast<TRITONSERVER_Parameter*>(label));
  }
  ~CompiledGauge() {
    if (metric_) LogError(TRITONSERVER_MetricDelete(metric_));
  }
  void Set(double value) {
    if (metric_) LogError(TRITONSERVER_MetricSet(metric_, value));
  }

 private:
  static void LogError(TRITONSERVER_Error* err) {
    if (err) Log(1, std::string("[fil] ") + kCompiledMetric + ": " + Consume(err));
  }
  TRITONSERVER_Metric* metric_ = nullptr;
};

const char* TypeName(TRITONSERVER_DataType t) {
  static const char* names[] = {"INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                "INT32",   "INT64", "FP16", "FP32",   "FP64",   "BYTES",  "BF16"};
  return t >= 0 && t <= TRITONSERVER_TYPE_BF16 ? names[t] : "UNKNOWN";
}

struct InstanceState {
  TRITONBACKEND_ModelInstance* instance;
  ModelState* model;
  std::vector<float> batch_in, batch_out;  // reused; one execute() at a time per instance
};

// One request's input, checked: rows and where they are, or why it cannot be served.
struct Checked {
  std::string problem;  // empty: valid
  int64_t rows = 0;
  std::vector<std::pair<const void*, uint64_t>> buffers;
};

Checked Check(TRITONBACKEND_Request* request, const ModelState& model) {
  // Triton checks the same against config.pbtxt before a request reaches us; kept as a guard.
  Checked c;
  TRITONBACKEND_Input* input = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_RequestInput(request, "input__0", &input)) {
    c.problem = "input__0 is missing: " + Consume(err);
    return c;
  }
  TRITONSERVER_DataType type;
  const int64_t* shape = nullptr;
  uint32_t dims = 0, buffer_count = 0;
  uint64_t byte_size = 0;
  if (TRITONSERVER_Error* err = TRITONBACKEND_InputProperties(input, nullptr, &type, &shape, &dims, &byte_size, &buffer_count)) {
    c.problem = Consume(err);
    return c;
  }
  std::vector<int64_t> dims_list(shape, shape + dims);
  if (type != TRITONSERVER_TYPE_FP32) {
    c.problem = std::string("input__0 must be FP32, got ") + TypeName(type);
  } else if (dims != 2 || shape[1] != model.n_features()) {
    c.problem = "input__0 must have shape [rows, " + std::to_string(model.n_features()) + "], got " + fil::PyList(dims_list);
  } else if (shape[0] > model.max_batch_size()) {
    c.problem = "input__0 has " + std::to_string(shape[0]) + " rows, more than max_batch_size " +
                std::to_string(model.max_batch_size());
  } else if (byte_size != static_cast<uint64_t>(shape[0]) * model.n_features() * sizeof(float)) {
    c.problem = "input__0 holds " + std::to_string(byte_size) + " bytes, not " + std::to_string(shape[0]) + " rows of " +
                std::to_string(model.n_features()) + " FP32 values";
  }
  if (!c.problem.empty()) return c;
  c.rows = shape[0];
  for (uint32_t i = 0; i < buffer_count; ++i) {
    const void* data = nullptr;
    uint64_t size = 0;
    TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
    int64_t memory_id = 0;
    if (TRITONSERVER_Error* err = TRITONBACKEND_InputBuffer(input, i, &data, &size, &memory, &memory_id)) {
      c.problem = Consume(err);
      return c;
    }
    if (memory == TRITONSERVER_MEMORY_GPU) {
      c.problem = "input__0 is in GPU memory; this backend reads CPU memory";
      return c;
    }
    c.buffers.emplace_back(data, size);
  }
  return c;
}

void SendError(TRITONBACKEND_Request* request, TRITONSERVER_Error_Code code, const std::string& message) {
  TRITONBACKEND_Response* response = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ResponseNew(&response, request)) {
    Log(2, "[fil] cannot create an error response: " + Consume(err));
    return;
  }
  TRITONSERVER_Error* error = Error(code, message);
  if (TRITONSERVER_Error* err = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, error)) {
    Log(2, "[fil] cannot send an error response: " + Consume(err));
  }
  TRITONSERVER_ErrorDelete(error);
}

// Create the response and its output__0 buffer for `rows` rows; nullptr (and the error sent)
// when Triton cannot give one.
float* NewOutput(TRITONBACKEND_Request* request, const ModelState& model, int64_t rows,
                 TRITONBACKEND_Response** response) {
  if (TRITONSERVER_Error* err = TRITONBACKEND_ResponseNew(response, request)) {
    Log(2, "[fil] cannot create a response: " + Consume(err));
    return nullptr;
  }
  std::vector<int64_t> shape{rows};
  shape.insert(shape.end(), model.response_dims().begin(), model.response_dims().end());
  TRITONBACKEND_Output* output = nullptr;
  void* buffer = nullptr;
  TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
  int64_t memory_id = 0;
  uint64_t bytes = static_cast<uint64_t>(rows) * model.format().width * sizeof(float);
  TRITONSERVER_Error* err = TRITONBACKEND_ResponseOutput(*response, &output, "output__0", TRITONSERVER_TYPE_FP32,
                                                         shape.data(), static_cast<uint32_t>(shape.size()));
  if (!err) err = TRITONBACKEND_OutputBuffer(output, &buffer, bytes, &memory, &memory_id);
  if (!err && memory == TRITONSERVER_MEMORY_GPU) err = Error(TRITONSERVER_ERROR_INTERNAL, "output buffer in GPU memory");
  if (err) {
    TRITONBACKEND_ResponseSend(*response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
    TRITONSERVER_ErrorDelete(err);
    *response = nullptr;
    return nullptr;
  }
  return static_cast<float*>(buffer);
}

void Send(TRITONBACKEND_Response* response) {
  if (TRITONSERVER_Error* err = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, nullptr)) {
    Log(2, "[fil] cannot send a response: " + Consume(err));
  }
}

const float* Contiguous(const Checked& c, int n_features, std::vector<float>& scratch, size_t offset) {
  if (c.buffers.size() == 1) return static_cast<const float*>(c.buffers[0].first);
  size_t at = offset;  // several buffers (e.g. a tensor sent in pieces): copy them in order
  scratch.resize(std::max(scratch.size(), offset + static_cast<size_t>(c.rows) * n_features));
  for (const auto& [data, size] : c.buffers) {
    std::memcpy(scratch.data() + at, data, size);
    at += size / sizeof(float);
  }
  return scratch.data() + offset;
}

}  // namespace

extern "C" {

TRITONSERVER_Error* TRITONBACKEND_Initialize(TRITONBACKEND_Backend* backend) {
  uint32_t major = 0, minor = 0;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ApiVersion(&major, &minor)) return err;
  if (major != kBackendApiMajor || minor < kBackendApiMinor) {
    return Error(TRITONSERVER_ERROR_UNSUPPORTED,
                 "the fil backend needs Triton backend API " + std::to_string(kBackendApiMajor) + "." +
                     std::to_string(kBackendApiMinor) + "+, the server has " + std::to_string(major) + "." +
                     std::to_string(minor));
  }
  Log(0, "[fil] native fil backend (libtriton_fil.so), backend API " + std::to_string(major) + "." +
             std::to_string(minor) + ", behaving like native FIL " + fil::NativeRelease());
  if (TRITONSERVER_Error* err =
          TRITONSERVER_MetricFamilyNew(&compiled_family, TRITONSERVER_METRIC_KIND_GAUGE, kCompiledMetric, kCompiledHelp)) {
    Log(1, std::string("[fil] no ") + kCompiledMetric + " metric: " + Consume(err));
    compiled_family = nullptr;
  }
  (void)backend;
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_Finalize(TRITONBACKEND_Backend*) {
  // every model, and so every metric, is finalized before the backend
  TRITONSERVER_Error* err = compiled_family ? TRITONSERVER_MetricFamilyDelete(compiled_family) : nullptr;
  compiled_family = nullptr;
  return err;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  fil::ModelSource source;
  const char* text = nullptr;
  TRITONBACKEND_ArtifactType artifact;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelName(model, &text)) return err;
  source.name = text;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelVersion(model, &source.version)) return err;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelRepository(model, &artifact, &text)) return err;
  source.repository = text;
  TRITONBACKEND_Backend* backend = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelBackend(model, &backend)) return err;
  if (TRITONSERVER_Error* err = TRITONBACKEND_BackendArtifacts(backend, &artifact, &text)) return err;
  source.backend_dir = text;
  TRITONSERVER_Message* message = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelConfig(model, 1, &message)) return err;
  const char* json = nullptr;
  size_t size = 0;
  TRITONSERVER_Error* err = TRITONSERVER_MessageSerializeToJson(message, &json, &size);
  if (!err) {
    source.config = nlohmann::json::parse(json, json + size, nullptr, false);
    if (source.config.is_discarded()) err = Error(TRITONSERVER_ERROR_INTERNAL, "cannot parse the model config JSON");
  }
  TRITONSERVER_MessageDelete(message);
  if (err) return err;
  try {
    // the gauge lives as long as the state's publish callback: deleted with the model
    auto gauge = std::make_shared<CompiledGauge>(source.name, source.version);
    auto* state = new ModelState(source, Log, [gauge](double value) { gauge->Set(value); });
    return TRITONBACKEND_ModelSetState(model, state);
  } catch (const fil::ConfigError& e) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, e.what());
  } catch (const std::exception& e) {
    return Error(TRITONSERVER_ERROR_INVALID_ARG, e.what());
  }
}

TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state = nullptr;  // null when ModelInitialize failed: Triton still calls this
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelState(model, &state)) return err;
  delete static_cast<ModelState*>(state);
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
  TRITONBACKEND_Model* model = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceModel(instance, &model)) return err;
  void* state = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelState(model, &state)) return err;
  if (!state) return Error(TRITONSERVER_ERROR_INTERNAL, "the model failed to initialize");
  return TRITONBACKEND_ModelInstanceSetState(instance, new InstanceState{instance, static_cast<ModelState*>(state), {}, {}});
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  void* state = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceState(instance, &state)) return err;
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

namespace {
enum Progress : uint8_t { kUntouched = 0, kAnswered, kReleased };
TRITONSERVER_Error* Execute(TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request** requests, uint32_t count,
                            std::vector<uint8_t>& progress);
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                                        TRITONBACKEND_Request** requests, uint32_t count) {
  std::vector<uint8_t> progress(count, kUntouched);
  try {
    return Execute(instance, requests, count, progress);
  } catch (const std::exception& e) {  // nothing may escape into Triton: answer and release what is left
    for (uint32_t i = 0; i < count; ++i) {
      if (progress[i] == kUntouched) {
        SendError(requests[i], TRITONSERVER_ERROR_INTERNAL, std::string("fil backend error: ") + e.what());
      }
      if (progress[i] != kReleased) TRITONBACKEND_RequestRelease(requests[i], TRITONSERVER_REQUEST_RELEASE_ALL);
    }
    return nullptr;
  }
}

}  // extern "C"

namespace {

TRITONSERVER_Error* Execute(TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request** requests, uint32_t count,
                            std::vector<uint8_t>& progress) {
  const uint64_t exec_start = NowNs();
  void* vstate = nullptr;
  if (TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceState(instance, &vstate)) return err;
  auto* state = static_cast<InstanceState*>(vstate);
  const ModelState& model = *state->model;
  const fil::Predictor* predictor = model.Current();  // one predictor per call, even if a swap happens meanwhile
  const int nf = model.n_features(), width = model.format().width;

  std::vector<Checked> checked;
  checked.reserve(count);
  int64_t total_rows = 0;
  for (uint32_t i = 0; i < count; ++i) {
    checked.push_back(Check(requests[i], model));
    if (checked.back().problem.empty()) total_rows += checked.back().rows;
  }
  // Bad requests get their error now (INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT).
  for (uint32_t i = 0; i < count; ++i) {
    if (!checked[i].problem.empty()) {
      SendError(requests[i], TRITONSERVER_ERROR_INVALID_ARG, checked[i].problem);
      progress[i] = kAnswered;
    }
  }

  std::vector<bool> success(count, false);
  uint64_t compute_start = NowNs(), compute_end = compute_start;
  if (total_rows > 0) {
    std::vector<uint32_t> valid;
    for (uint32_t i = 0; i < count; ++i) {
      if (checked[i].problem.empty()) valid.push_back(i);
    }
    if (valid.size() == 1) {  // the common case under sequential load: predict into the response
      uint32_t i = valid[0];
      TRITONBACKEND_Response* response = nullptr;
      float* out = NewOutput(requests[i], model, checked[i].rows, &response);
      if (out) {
        const float* x = Contiguous(checked[i], nf, state->batch_in, 0);
        compute_start = NowNs();
        try {
          predictor->PredictFormatted(x, checked[i].rows, model.format(), out);
          compute_end = NowNs();
          Send(response);
          success[i] = true;
        } catch (const std::exception& e) {
          compute_end = NowNs();
          TRITONBACKEND_ResponseDelete(response);
          SendError(requests[i], TRITONSERVER_ERROR_INTERNAL, std::string("prediction failed: ") + e.what());
        }
      }
      progress[i] = kAnswered;  // with the answer, or with the error NewOutput sent
    } else {  // concatenate, predict once, split
      state->batch_in.resize(static_cast<size_t>(total_rows) * nf);
      state->batch_out.resize(static_cast<size_t>(total_rows) * width);
      size_t at = 0;
      for (uint32_t i : valid) {
        for (const auto& [data, size] : checked[i].buffers) {
          std::memcpy(state->batch_in.data() + at, data, size);
          at += size / sizeof(float);
        }
      }
      std::string failure;
      compute_start = NowNs();
      try {
        predictor->PredictFormatted(state->batch_in.data(), total_rows, model.format(), state->batch_out.data());
      } catch (const std::exception& e) {
        failure = std::string("prediction failed: ") + e.what();
      }
      compute_end = NowNs();
      size_t row = 0;
      for (uint32_t i : valid) {
        if (!failure.empty()) {
          SendError(requests[i], TRITONSERVER_ERROR_INTERNAL, failure);
          progress[i] = kAnswered;
          continue;
        }
        TRITONBACKEND_Response* response = nullptr;
        float* out = NewOutput(requests[i], model, checked[i].rows, &response);
        if (out) {
          std::memcpy(out, state->batch_out.data() + row * width, sizeof(float) * checked[i].rows * width);
          Send(response);
          success[i] = true;
        }
        progress[i] = kAnswered;  // with the answer, or with the error NewOutput sent
        row += checked[i].rows;
      }
    }
  }
  const uint64_t exec_end = NowNs();
  for (uint32_t i = 0; i < count; ++i) {
    if (TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceReportStatistics(
            instance, requests[i], success[i], exec_start, compute_start, compute_end, exec_end)) {
      Log(1, "[fil] cannot report statistics: " + Consume(err));
    }
  }
  if (total_rows > 0) {
    if (TRITONSERVER_Error* err = TRITONBACKEND_ModelInstanceReportBatchStatistics(
            instance, static_cast<uint64_t>(total_rows), exec_start, compute_start, compute_end, exec_end)) {
      Log(1, "[fil] cannot report batch statistics: " + Consume(err));
    }
  }
  for (uint32_t i = 0; i < count; ++i) {
    if (TRITONSERVER_Error* err = TRITONBACKEND_RequestRelease(requests[i], TRITONSERVER_REQUEST_RELEASE_ALL)) {
      Log(2, "[fil] cannot release a request: " + Consume(err));
    }
    progress[i] = kReleased;
  }
  return nullptr;  // every request was answered and released here
}

}  // namespace
