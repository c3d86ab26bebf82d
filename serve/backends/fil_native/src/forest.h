// Tree-ensemble prediction for the native `fil` backend: the C++ twin of
// serve/backends/fil/fil_forest.py. Load a model file with the Treelite loader native FIL
// uses, predict with Treelite GTIL or with the tl2cgen-compiled library the Python side
// builds into the cache, and shape the output as native FIL does (fil_backend r25.08
// src/tl_utils.h, src/tl_model.h; docs/fil_contract.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "treelite_abi.h"

namespace fil {

// The model file or its configuration cannot be served; the message says why.
struct ModelLoadError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// FIL's default file name per model_type (fil_forest.FIL_MODEL_FILENAMES).
extern const std::map<std::string, std::string> kModelFilenames;

// A Treelite model (owned handle) and the header fields the backend reads.
class TreeliteModel {
 public:
  // fil_forest.load_model: the loader native FIL uses for `model_type`
  // (xgboost_allow_unknown_field applies to JSON and UBJSON). Throws ModelLoadError.
  static std::unique_ptr<TreeliteModel> Load(const std::string& path, const std::string& model_type,
                                             bool xgboost_allow_unknown_field);
  ~TreeliteModel();
  TreeliteModel(const TreeliteModel&) = delete;
  TreeliteModel& operator=(const TreeliteModel&) = delete;

  TreeliteModelHandle handle() const { return handle_; }
  size_t NumTree() const;
  size_t NumFeature() const;
  int NumTarget() const;
  int TaskType() const;
  std::vector<int32_t> NumClass() const;
  std::vector<int32_t> LeafVectorShape() const;
  std::string Postprocessor() const;
  void SetPostprocessor(const std::string& name);
  int NumOutputs() const;  // numbers per row the forest produces: targets x the largest class count

 private:
  explicit TreeliteModel(TreeliteModelHandle handle) : handle_(handle) {}
  TreeliteBufferFrame Field(const char* name) const;
  TreeliteModelHandle handle_;
};

// fil_forest.apply_native_postprocessor: with predict_proba, a multi-class model gets
// `softmax` (one value per leaf) or `identity_multiclass` (class vectors). Returns the name
// set, or "" when the model keeps its own.
std::string ApplyNativePostprocessor(TreeliteModel& model, bool predict_proba);

// fil_forest.OutputFormat: the forest's rows x k outputs -> native FIL's output__0.
struct OutputFormat {
  enum Mode { kRaw = 0, kProba = 1, kLabel = 2 };  // codes shared with fil_predict()
  OutputFormat(int n_model_outputs, bool predict_proba, bool output_class, float threshold);
  void Apply(const float* raw, int64_t rows, float* out) const;
  int k;      // model outputs per row
  int mode;   // Mode
  int width;  // output values per row
  float threshold;
};

// One way of predicting. Both write native FIL's output__0 (rows x fmt.width) or the raw
// model outputs (rows x n_outputs). Thread-safe: Triton instances may call them at once.
class Predictor {
 public:
  virtual ~Predictor() = default;
  virtual const char* Name() const = 0;
  virtual void PredictRaw(const float* x, int64_t rows, float* out) const = 0;
  virtual void PredictFormatted(const float* x, int64_t rows, const OutputFormat& fmt, float* out) const = 0;
};

// Treelite GTIL through its C API, float32 in and out as native FIL on CPU (NaN takes each
// split's default branch, +-Inf compares like any number). Batches of at least
// kParallelMinRows rows use `threads` threads, smaller ones one.
class GTILPredictor : public Predictor {
 public:
  GTILPredictor(const TreeliteModel& model, int threads);
  ~GTILPredictor() override;
  const char* Name() const override { return "gtil"; }
  void PredictRaw(const float* x, int64_t rows, float* out) const override;
  void PredictFormatted(const float* x, int64_t rows, const OutputFormat& fmt, float* out) const override;
  int NumOutputs() const { return n_outputs_; }

 private:
  const TreeliteModel& model_;
  int n_outputs_;
  TreeliteGTILConfigHandle one_ = nullptr, all_ = nullptr;
};

// A tl2cgen-compiled library from the cache (fil_forest.compile_model writes it) with the
// batch entry point fil_predict(), which marks NaN missing and writes FIL's output format.
class CompiledPredictor : public Predictor {
 public:
  // Throws ModelLoadError when the library cannot be opened or was built for another shape.
  CompiledPredictor(const std::string& path, int n_features, int n_outputs, int threads);
  ~CompiledPredictor() override;
  const char* Name() const override { return "compiled"; }
  void PredictRaw(const float* x, int64_t rows, float* out) const override;
  void PredictFormatted(const float* x, int64_t rows, const OutputFormat& fmt, float* out) const override;
  const std::string& path() const { return path_; }

 private:
  void Run(const float* x, int64_t rows, int mode, int width, float threshold, float* out) const;
  using PredictFn = int64_t (*)(const float*, int64_t, int64_t, float*, int, float);
  std::string path_;
  void* lib_ = nullptr;
  PredictFn fn_ = nullptr;
  int n_features_, n_outputs_, threads_;
};

constexpr int64_t kParallelMinRows = 1024;  // fil_forest.PARALLEL_MIN_ROWS

// Rows with NaN, +-Inf, small integers and wide values (fil_forest.self_check's kinds).
std::vector<float> CheckRows(int n_features, int rows, uint64_t seed);

// Largest difference between GTIL and a compiled library on CheckRows(), raw and in FIL's
// format (labels compared away from the threshold / ties), as fil_forest.self_check.
double SelfCheck(const GTILPredictor& reference, const CompiledPredictor& candidate, int n_features,
                 const OutputFormat& fmt);

// The compile cache (fil_forest.cache_key / cached_library): the model file's sha256, or
// sha256("<file sha256>:<postprocessor>") when a post-processor was set, names the entry
// <cache>/<key[:40]>-tl2cgen<version>-w<wrapper>/libforest.so. Returns "" when absent.
std::string CacheKey(const std::string& model_path, const std::string& postprocessor);
std::string CachedLibrary(const std::string& cache_dir, const std::string& key);

std::string Sha256Hex(const std::string& bytes);
std::string FileSha256Hex(const std::string& path);

}  // namespace fil
