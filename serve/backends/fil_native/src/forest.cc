// See forest.h. Each piece names the fil_forest.py function it mirrors.
#include "forest.h"

#include <dlfcn.h>
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

#include "fil_config.h"

#ifndef FIL_WRAPPER_VERSION
#error "FIL_WRAPPER_VERSION must be defined (the Makefile reads it from fil_forest.py)"
#endif

namespace fil {

const std::map<std::string, std::string> kModelFilenames = {
    {"treelite_checkpoint", "checkpoint.tl"}, {"xgboost_json", "xgboost.json"}, {"xgboost_ubj", "xgboost.ubj"},
    {"xgboost", "xgboost.model"},             {"lightgbm", "model.txt"},
};

static std::string TreeliteError() {
  const char* e = TreeliteGetLastError();
  return e ? e : "unknown Treelite error";
}

static bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// -- the model --------------------------------------------------------------------------------
std::unique_ptr<TreeliteModel> TreeliteModel::Load(const std::string& path, const std::string& model_type,
                                                   bool xgboost_allow_unknown_field) {
  std::string name = path.substr(path.find_last_of('/') + 1);
  if (!IsRegularFile(path)) {
    throw ModelLoadError("model file " + path + " does not exist (model_type " + PyRepr(model_type) + " reads " +
                         name + ")");
  }
  const std::string parser = xgboost_allow_unknown_field ? R"({"allow_unknown_field": true})"
                                                         : R"({"allow_unknown_field": false})";
  TreeliteModelHandle handle = nullptr;
  int rc;
  if (model_type == "treelite_checkpoint") {
    rc = TreeliteDeserializeModelFromFile(path.c_str(), &handle);
  } else if (model_type == "xgboost_json") {
    rc = TreeliteLoadXGBoostModelJSON(path.c_str(), parser.c_str(), &handle);
  } else if (model_type == "xgboost_ubj") {
    rc = TreeliteLoadXGBoostModelUBJSON(path.c_str(), parser.c_str(), &handle);
  } else if (model_type == "xgboost") {
    rc = TreeliteLoadXGBoostModelLegacyBinary(path.c_str(), "{}", &handle);
  } else if (model_type == "lightgbm") {
    rc = TreeliteLoadLightGBMModel(path.c_str(), "{}", &handle);
  } else {
    throw ModelLoadError("model_type " + PyRepr(model_type) +
                         " is not a FIL model_type; use one of ['lightgbm', 'treelite_checkpoint', 'xgboost', "
                         "'xgboost_json', 'xgboost_ubj']");
  }
  if (rc != 0 || handle == nullptr) {
    std::string hint;
    if (model_type == "xgboost") {
      std::ifstream in(path, std::ios::binary);
      char first = 0;
      if (in.get(first) && (first == '{' || first == '[')) {
        // XGBoost >= 2.1 writes UBJSON from save_model("xgboost.model"); the legacy binary
        // format needs save_model("<name>.deprecated") or save_raw("deprecated")
        hint =
            "; the file is JSON/UBJSON, not XGBoost's legacy binary format (XGBoost >= 2.1 "
            "save_model('xgboost.model') writes UBJSON): use model_type xgboost_ubj/xgboost_json "
            "with xgboost.ubj/xgboost.json";
      }
    }
    throw ModelLoadError("cannot read " + path + " as model_type " + PyRepr(model_type) + ": " + TreeliteError() +
                         hint);
  }
  return std::unique_ptr<TreeliteModel>(new TreeliteModel(handle));
}

TreeliteModel::~TreeliteModel() { TreeliteFreeModel(handle_); }

TreeliteBufferFrame TreeliteModel::Field(const char* name) const {
  TreeliteBufferFrame frame{};
  if (TreeliteGetHeaderField(handle_, name, &frame) != 0) {
    throw ModelLoadError(std::string("cannot read the model's ") + name + ": " + TreeliteError());
  }
  return frame;
}

static int64_t FrameInt(const TreeliteBufferFrame& f, size_t i) {
  switch (f.itemsize) {
    case 1: return static_cast<const uint8_t*>(f.buf)[i];
    case 2: return static_cast<const int16_t*>(f.buf)[i];
    case 4: return static_cast<const int32_t*>(f.buf)[i];
    case 8: return static_cast<const int64_t*>(f.buf)[i];
    default: throw ModelLoadError("unexpected Treelite header field width " + std::to_string(f.itemsize));
  }
}

size_t TreeliteModel::NumTree() const {
  size_t n = 0;
  if (TreeliteQueryNumTree(handle_, &n) != 0) throw ModelLoadError(TreeliteError());
  return n;
}

size_t TreeliteModel::NumFeature() const {
  size_t n = 0;
  if (TreeliteQueryNumFeature(handle_, &n) != 0) throw ModelLoadError(TreeliteError());
  return n;
}

int TreeliteModel::NumTarget() const { return static_cast<int>(FrameInt(Field("num_target"), 0)); }
int TreeliteModel::TaskType() const { return static_cast<int>(FrameInt(Field("task_type"), 0)); }

std::vector<int32_t> TreeliteModel::NumClass() const {
  auto f = Field("num_class");
  std::vector<int32_t> out;
  for (size_t i = 0; i < f.nitem; ++i) out.push_back(static_cast<int32_t>(FrameInt(f, i)));
  return out;
}

std::vector<int32_t> TreeliteModel::LeafVectorShape() const {
  auto f = Field("leaf_vector_shape");
  std::vector<int32_t> out;
  for (size_t i = 0; i < f.nitem; ++i) out.push_back(static_cast<int32_t>(FrameInt(f, i)));
  return out;
}

std::string TreeliteModel::Postprocessor() const {
  auto f = Field("postprocessor");
  return std::string(static_cast<const char*>(f.buf), f.nitem);
}

void TreeliteModel::SetPostprocessor(const std::string& name) {
  std::string copy = name;
  char format[] = "=c";
  TreeliteBufferFrame frame{copy.data(), format, 1, copy.size()};
  if (TreeliteSetHeaderField(handle_, "postprocessor", frame) != 0) {
    throw ModelLoadError("cannot set the post-processor " + name + ": " + TreeliteError());
  }
}

int TreeliteModel::NumOutputs() const {
  auto classes = NumClass();
  int most = classes.empty() ? 1 : *std::max_element(classes.begin(), classes.end());
  return NumTarget() * most;
}

constexpr int kTaskMulticlass = 2;  // treelite::TaskType::kMultiClf

std::string ApplyNativePostprocessor(TreeliteModel& model, bool predict_proba) {
  if (!predict_proba || model.TaskType() != kTaskMulticlass) return "";
  auto leaf_shape = model.LeafVectorShape();
  std::string wanted = (leaf_shape.size() > 1 && leaf_shape[1] == 1) ? "softmax" : "identity_multiclass";
  if (model.Postprocessor() == wanted) return "";
  model.SetPostprocessor(wanted);
  return wanted;
}

// -- output format ----------------------------------------------------------------------------
OutputFormat::OutputFormat(int n_model_outputs, bool predict_proba, bool output_class, float threshold_)
    : k(n_model_outputs), threshold(threshold_) {
  if (predict_proba) {
    mode = kProba, width = k == 1 ? 2 : k;
  } else if (output_class) {
    mode = kLabel, width = 1;
  } else {
    mode = kRaw, width = k;
  }
}

void OutputFormat::Apply(const float* raw, int64_t rows, float* out) const {
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = raw + r * k;
    float* o = out + r * width;
    if (mode == kProba && k == 1) {
      o[1] = p[0];
      o[0] = 1.0f - p[0];
    } else if (mode == kLabel) {
      if (k == 1) {
        o[0] = p[0] > threshold ? 1.0f : 0.0f;
      } else {  // np.argmax: the first largest
        int best = 0;
        for (int j = 1; j < k; ++j) best = p[j] > p[best] ? j : best;
        o[0] = static_cast<float>(best);
      }
    } else {
      std::memcpy(o, p, sizeof(float) * k);
    }
  }
}

// -- GTIL -------------------------------------------------------------------------------------
static TreeliteGTILConfigHandle GtilConfig(int nthread) {
  std::string json = R"({"predict_type": "default", "nthread": )" + std::to_string(nthread) + "}";
  TreeliteGTILConfigHandle config = nullptr;
  if (TreeliteGTILParseConfig(json.c_str(), &config) != 0) throw ModelLoadError(TreeliteError());
  return config;
}

GTILPredictor::GTILPredictor(const TreeliteModel& model, int threads)
    : model_(model), n_outputs_(model.NumOutputs()) {
  one_ = GtilConfig(1);
  all_ = GtilConfig(threads > 0 ? threads : -1);
  const uint64_t* shape = nullptr;
  uint64_t ndim = 0;
  if (TreeliteGTILGetOutputShape(model_.handle(), 1, one_, &shape, &ndim) != 0) throw ModelLoadError(TreeliteError());
  uint64_t per_row = 1;
  for (uint64_t i = 1; i < ndim; ++i) per_row *= shape[i];
  if (per_row != static_cast<uint64_t>(n_outputs_)) {
    throw ModelLoadError("GTIL writes " + std::to_string(per_row) + " values per row, the model header says " +
                         std::to_string(n_outputs_));
  }
}

GTILPredictor::~GTILPredictor() {
  if (one_) TreeliteGTILDeleteConfig(one_);
  if (all_) TreeliteGTILDeleteConfig(all_);
}

void GTILPredictor::PredictRaw(const float* x, int64_t rows, float* out) const {
  auto config = rows >= kParallelMinRows ? all_ : one_;
  if (TreeliteGTILPredict(model_.handle(), x, "float32", static_cast<uint64_t>(rows), out, config) != 0) {
    throw std::runtime_error("Treelite GTIL failed: " + TreeliteError());
  }
}

void GTILPredictor::PredictFormatted(const float* x, int64_t rows, const OutputFormat& fmt, float* out) const {
  if (fmt.mode == OutputFormat::kRaw) return PredictRaw(x, rows, out);
  thread_local std::vector<float> raw;  // one per Triton instance thread, reused
  raw.resize(static_cast<size_t>(rows) * n_outputs_);
  PredictRaw(x, rows, raw.data());
  fmt.Apply(raw.data(), rows, out);
}

// -- compiled library -------------------------------------------------------------------------
CompiledPredictor::CompiledPredictor(const std::string& path, int n_features, int n_outputs, int threads)
    : path_(path), n_features_(n_features), n_outputs_(n_outputs), threads_(std::max(1, threads)) {
  lib_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib_) throw ModelLoadError(std::string("cannot open ") + path + ": " + dlerror());
  auto num_outputs = reinterpret_cast<int (*)()>(dlsym(lib_, "fil_num_outputs"));
  auto num_features = reinterpret_cast<int (*)()>(dlsym(lib_, "fil_num_features"));
  fn_ = reinterpret_cast<PredictFn>(dlsym(lib_, "fil_predict"));
  if (!num_outputs || !num_features || !fn_) {
    dlclose(lib_);
    throw ModelLoadError(path + " has no fil_predict/fil_num_outputs/fil_num_features entry points");
  }
  if (num_outputs() != n_outputs || num_features() != n_features) {
    std::string built = std::to_string(num_features()) + " features / " + std::to_string(num_outputs());
    dlclose(lib_);
    throw ModelLoadError(path + " was built for " + built + " outputs, the model has " + std::to_string(n_features) +
                         " / " + std::to_string(n_outputs));
  }
}

CompiledPredictor::~CompiledPredictor() {
  if (lib_) dlclose(lib_);
}

void CompiledPredictor::PredictRaw(const float* x, int64_t rows, float* out) const {
  Run(x, rows, OutputFormat::kRaw, n_outputs_, 0.0f, out);
}

void CompiledPredictor::PredictFormatted(const float* x, int64_t rows, const OutputFormat& fmt, float* out) const {
  Run(x, rows, fmt.mode, fmt.width, fmt.threshold, out);
}

void CompiledPredictor::Run(const float* x, int64_t rows, int mode, int width, float threshold, float* out) const {
  int64_t rc = 0;
  if (rows >= kParallelMinRows && threads_ > 1) {  // row blocks on separate cores
    std::vector<int64_t> codes(threads_, 0);
    std::vector<std::thread> workers;
    for (int t = 1; t < threads_; ++t) {
      int64_t a = rows * t / threads_, b = rows * (t + 1) / threads_;
      workers.emplace_back([=, &codes] {
        codes[t] = fn_(x + a * n_features_, b - a, n_features_, out + a * width, mode, threshold);
      });
    }
    codes[0] = fn_(x, rows / threads_, n_features_, out, mode, threshold);
    for (auto& w : workers) w.join();
    rc = *std::min_element(codes.begin(), codes.end());
  } else {
    rc = fn_(x, rows, n_features_, out, mode, threshold);
  }
  if (rc != 0) {
    throw std::runtime_error("compiled model " + path_ + " rejected the batch (code " + std::to_string(rc) + ")");
  }
}

// -- self-check -------------------------------------------------------------------------------
std::vector<float> CheckRows(int n_features, int rows, uint64_t seed) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&state] {  // splitmix64 -> [0, 1)
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(static_cast<size_t>(rows) * n_features);
  for (auto& v : x) {
    double u = next();
    if (u < 0.10) {
      v = nan;
    } else if (u < 0.12) {
      v = inf;
    } else if (u < 0.14) {
      v = -inf;
    } else if (u < 0.44) {
      v = static_cast<float>(static_cast<int>(next() * 13) - 1);  // small integers: category ids
    } else {  // Box-Muller: a normal value, times 3
      double r = std::sqrt(-2.0 * std::log(1.0 - next())), t = 2.0 * M_PI * next();
      v = static_cast<float>(3.0 * r * std::cos(t));
    }
  }
  std::fill(x.begin(), x.begin() + n_features, 0.0f);
  if (rows > 1) std::fill(x.begin() + n_features, x.begin() + 2 * n_features, nan);
  return x;
}

double SelfCheck(const GTILPredictor& reference, const CompiledPredictor& candidate, int n_features,
                 const OutputFormat& fmt) {
  const int rows = 512, k = reference.NumOutputs();
  auto x = CheckRows(n_features, rows, 0);
  std::vector<float> ref(rows * k), got(rows * k);
  reference.PredictRaw(x.data(), rows, ref.data());
  candidate.PredictRaw(x.data(), rows, got.data());
  double diff = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, std::fabs(double(ref[i]) - double(got[i])));
  if (std::isnan(diff)) return diff;
  std::vector<float> want(rows * fmt.width), have(rows * fmt.width);
  fmt.Apply(ref.data(), rows, want.data());
  candidate.PredictFormatted(x.data(), rows - 1, fmt, have.data());  // a batch and a single row
  candidate.PredictFormatted(x.data() + (rows - 1) * n_features, 1, fmt, have.data() + (rows - 1) * fmt.width);
  for (int r = 0; r < rows; ++r) {
    if (fmt.mode == OutputFormat::kLabel) {  // labels are exact away from the threshold / a tie
      const float* p = ref.data() + r * k;
      if (k == 1 && std::fabs(double(p[0]) - fmt.threshold) <= 1e-6) continue;
      if (k > 1) {
        std::vector<float> sorted(p, p + k);
        std::sort(sorted.begin(), sorted.end());
        if (double(sorted[k - 1]) - sorted[k - 2] <= 1e-6) continue;
      }
    }
    for (int j = 0; j < fmt.width; ++j) {
      double d = std::fabs(double(want[r * fmt.width + j]) - double(have[r * fmt.width + j]));
      diff = std::isnan(d) ? d : std::max(diff, d);
      if (std::isnan(diff)) return diff;
    }
  }
  return diff;
}

// -- compile cache ----------------------------------------------------------------------------
std::string CacheKey(const std::string& model_path, const std::string& postprocessor) {
  std::string key = FileSha256Hex(model_path);
  return postprocessor.empty() ? key : Sha256Hex(key + ":" + postprocessor);
}

std::string CachedLibrary(const std::string& cache_dir, const std::string& key) {
  // fil_forest.cache_key: "<key[:40]>-tl2cgen<version>-w<WRAPPER_VERSION>"; the tl2cgen
  // version is Python's to know, so any version built with this wrapper is a candidate
  // (the self-check decides whether it is used).
  std::string pattern = cache_dir + "/" + key.substr(0, 40) + "-tl2cgen*-w" + std::to_string(FIL_WRAPPER_VERSION) +
                        "/libforest.so";
  glob_t found{};
  std::string best;
  if (glob(pattern.c_str(), 0, nullptr, &found) == 0 && found.gl_pathc > 0) {
    best = found.gl_pathv[found.gl_pathc - 1];  // sorted: the highest tl2cgen version
  }
  globfree(&found);
  return best;
}

}  // namespace fil
