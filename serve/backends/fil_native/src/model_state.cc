// See model_state.h. The checks run in model.py's order, with its messages.
#include "model_state.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace fil {

static const char* kInput = "input__0";
static const char* kOutput = "output__0";
constexpr double kSelfCheckAtol = 1e-5;  // model.SELF_CHECK_ATOL

static bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

static std::string Env(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

static std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

static std::string Strip(const std::string& s) {
  auto a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

static std::string FileName(const std::string& path) { return path.substr(path.find_last_of('/') + 1); }

// rapids-triton model_instance_state.hpp joins <model dir>/<version>/<default_model_filename>;
// fil_backend src/model.h model_file() adds FIL's default name when that is a directory.
static std::string ModelFile(const ModelSource& source, const std::string& model_type) {
  std::string path = source.repository + "/" + std::to_string(source.version);
  std::string name = source.config.value("default_model_filename", std::string());
  if (!name.empty()) path += "/" + name;
  return IsDir(path) ? path + "/" + kModelFilenames.at(model_type) : path;
}

static const nlohmann::json* Tensor(const nlohmann::json& config, const char* section, const char* name) {
  if (!config.contains(section)) return nullptr;
  for (const auto& t : config[section]) {
    if (t.value("name", std::string()) == name) return &t;
  }
  return nullptr;
}

static std::vector<int64_t> Dims(const nlohmann::json& tensor) {
  std::vector<int64_t> out;
  for (const auto& d : tensor.value("dims", nlohmann::json::array())) out.push_back(JsonInt(d));
  return out;
}

ModelState::ModelState(const ModelSource& source, LogFn log, PublishFn publish)
    : log_(log), publish_(std::move(publish)) {
  auto started = std::chrono::steady_clock::now();
  tag_ = source.name + "/" + std::to_string(source.version);
  const auto& config = source.config;
  Parameters params;
  try {
    params = ReadParameters(config.value("parameters", nlohmann::json::object()));
  } catch (const ConfigError& e) {
    throw ConfigError(std::string("config.pbtxt: ") + e.what());
  }
  std::string path = ModelFile(source, params.model_type);
  model_ = TreeliteModel::Load(path, params.model_type, params.xgboost_allow_unknown_field);
  if (model_->NumTarget() != 1) {
    // src/tl_utils.h tl_get_num_classes(): "Multi-target model not supported"
    throw ModelLoadError(FileName(path) + " is a multi-target model; FIL serves single-target models");
  }
  std::string postprocessor = ApplyNativePostprocessor(*model_, params.predict_proba);

  max_batch_size_ = config.contains("max_batch_size") ? JsonInt(config["max_batch_size"]) : 0;
  if (max_batch_size_ < 1) throw ModelLoadError("max_batch_size must be >= 1: FIL models take a batch dimension");
  const nlohmann::json* input = Tensor(config, "input", kInput);
  const nlohmann::json* output = Tensor(config, "output", kOutput);
  if (!input || !output) {
    throw ModelLoadError(std::string("config.pbtxt must declare input '") + kInput + "' and output '" + kOutput + "'");
  }
  for (const nlohmann::json* t : {input, output}) {
    std::string type = t->value("data_type", std::string("None"));
    if (type != "TYPE_FP32") throw ModelLoadError(t->value("name", "") + " must be TYPE_FP32, config says " + type);
  }
  auto in_dims = Dims(*input);
  n_features_ = static_cast<int>(model_->NumFeature());
  if (in_dims != std::vector<int64_t>{n_features_}) {
    // native FIL would read rows of the model's width out of a narrower/wider buffer
    throw ModelLoadError(std::string(kInput) + " dims are " + PyList(in_dims) + " in config.pbtxt but " +
                         FileName(path) + " has " + std::to_string(n_features_) + " features");
  }

  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  threads_ = params.cpu_nthread > 0 ? params.cpu_nthread : static_cast<int>(cores);  // src/shared_state.h
  gtil_ = std::make_unique<GTILPredictor>(*model_, threads_);
  int k = gtil_->NumOutputs();
  bool gpu = false;  // model.py reads the instance kind; every group KIND_GPU is a GPU deployment
  if (config.contains("instance_group") && !config["instance_group"].empty()) {
    gpu = true;
    for (const auto& g : config["instance_group"]) gpu = gpu && g.value("kind", std::string()) == "KIND_GPU";
  }
  if (params.output_class && !params.predict_proba && k > 1 && !(gpu || CpuLabelArgmax())) {
    throw ModelLoadError(
        FileName(path) + " has " + std::to_string(k) +
        " class outputs, so a label output (output_class true, predict_proba false) makes native FIL " +
        NativeRelease() +
        " on CPU ask Treelite for a 'max_index' post-processor it does not have, and every request fails "
        "(fil_backend src/tl_model.h; fixed in 25.09). On GPU it is the arg-max, threshold ignored. Serve "
        "predict_proba true and take the arg-max or apply the threshold in the client.");
  }
  format_ = std::make_unique<OutputFormat>(k, params.predict_proba, params.output_class, params.threshold);
  int64_t declared = 1;
  auto out_dims = Dims(*output);
  for (auto d : out_dims) declared *= d;
  if (declared != format_->width) {
    std::string what = params.predict_proba ? "probabilities" : params.output_class ? "a label" : "outputs";
    std::string w = std::to_string(format_->width);
    throw ModelLoadError(std::string(kOutput) + " dims are " + PyList(out_dims) + " in config.pbtxt but this model writes " +
                         w + " " + what + " per row (predict_proba=" + (params.predict_proba ? "true" : "false") +
                         ", " + ClassifierKey() + "=" + (params.output_class ? "true" : "false") + ", " +
                         std::to_string(k) + " model output(s)); declare dims: [ " + w +
                         " ] (native FIL would answer wrong values or overrun its buffer)");
  }
  response_dims_ = ResponseDims(*output);

  // A truncated or damaged checkpoint can parse and still fail on every row: predict a few
  // rows now, so that such a version is refused at load and the old one keeps serving.
  std::vector<float> probe(4 * n_features_), probe_out(4 * format_->width);
  const double steps = static_cast<double>(std::max<size_t>(1, probe.size() - 1));  // np.linspace(-3, 3)
  for (size_t i = 0; i < probe.size(); ++i) probe[i] = static_cast<float>(-3.0 + 6.0 * i / steps);
  try {
    gtil_->PredictFormatted(probe.data(), 4, *format_, probe_out.data());
  } catch (const std::exception& e) {
    throw ModelLoadError(FileName(path) + " loads but cannot predict (" + e.what() + "): the file is damaged");
  }
  for (float v : probe_out) {
    if (!std::isfinite(v)) throw ModelLoadError(FileName(path) + " predicts non-finite values: the file is damaged");
  }
  current_.store(gtil_.get(), std::memory_order_release);

  std::string how = "GTIL";
  std::string compile = Lower(Strip(Env("FIL_COMPILE", "1")));
  if (compile != "0" && compile != "false" && compile != "no" && compile != "off") {
    StartCompiled(source, params, postprocessor, &how);
  } else {
    publish_(0);
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  char loaded[32];
  std::snprintf(loaded, sizeof loaded, "%.2f", seconds);
  Log(0, params.model_type + " " + FileName(path) + ", " + std::to_string(model_->NumTree()) + " trees, " +
             std::to_string(n_features_) + " features, " + std::to_string(k) + " output(s), serving with " + how +
             " (loaded in " + loaded + " s, native backend)");
}

void ModelState::StartCompiled(const ModelSource& source, const Parameters& params,
                               const std::string& postprocessor, std::string* how) {
  std::string tmp = Env("TMPDIR", "/tmp");
  std::string cache_dir = Env("FIL_CACHE_DIR", tmp + "/fil-cache-" + std::to_string(getuid()));
  std::string path = ModelFile(source, params.model_type);
  std::string cached = CachedLibrary(cache_dir, CacheKey(path, postprocessor));
  if (!cached.empty() && TrySwap(cached)) {
    *how = "compiled library from cache " + cached;
    publish_(1);
    return;
  }
  std::string helper = source.backend_dir + "/fil_compile.py";
  std::string python = Env("FIL_PYTHON");
  if (python.empty()) {  // the launcher records the interpreter that has treelite and tl2cgen
    std::ifstream recorded(source.backend_dir + "/fil_python");
    std::getline(recorded, python);
    python = Strip(python).empty() ? "python3" : Strip(python);
  }
  if (access(helper.c_str(), R_OK) != 0) {
    *how = "GTIL";
    Log(1, helper + " is missing, so the model cannot be compiled; staying on GTIL");
    publish_(-1);
    return;
  }
  *how = "GTIL while compiling in the background";
  publish_(0);
  std::vector<std::string> argv = {python, helper, path, params.model_type, cache_dir,
                                   "--jobs", std::to_string(std::max(1u, std::thread::hardware_concurrency()))};
  if (params.predict_proba) argv.push_back("--predict-proba");
  if (params.xgboost_allow_unknown_field) argv.push_back("--allow-unknown-field");
  job_ = std::make_unique<CompileJob>(argv, [this](const CompileResult& r) {
    if (r.cancelled) return;
    if (!r.library.empty()) {
      bool swapped = TrySwap(r.library);  // logs why not
      if (swapped) Log(0, "now serving with compiled library " + r.library);
      publish_(swapped ? 1 : -1);
      return;
    }
    Log(1, r.compiler_missing ? r.error + "; staying on GTIL" : "compiling the model failed; staying on GTIL:\n" + r.error);
    publish_(-1);
  });
}

bool ModelState::TrySwap(const std::string& library) {
  std::lock_guard<std::mutex> lock(swap_mutex_);
  std::unique_ptr<CompiledPredictor> compiled;
  double diff;
  try {
    compiled = std::make_unique<CompiledPredictor>(library, n_features_, gtil_->NumOutputs(), threads_);
    diff = SelfCheck(*gtil_, *compiled, n_features_, *format_);
  } catch (const std::exception& e) {  // a broken cache entry must not stop serving
    Log(1, "cannot use compiled library " + library + ": " + e.what() + "; staying on GTIL");
    return false;
  }
  if (!(diff <= kSelfCheckAtol)) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", diff);
    Log(1, "compiled library " + library + " differs from GTIL by " + text + "; staying on GTIL");
    return false;
  }
  compiled_ = std::move(compiled);
  current_.store(compiled_.get(), std::memory_order_release);  // the next execute() uses it
  return true;
}

ModelState::~ModelState() {
  if (job_) job_->Cancel();  // before anything it may swap in goes away
  job_.reset();
}

}  // namespace fil
