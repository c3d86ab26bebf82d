// One loaded model version: the C++ twin of TritonPythonModel.initialize() in
// serve/backends/fil/model.py. Reads config.pbtxt as native FIL does, loads the model file,
// refuses at load what native FIL refuses or cannot serve (same messages), serves with GTIL
// at once and swaps in the compiled library (from the cache, or compiled in the background).
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "compile_job.h"
#include "fil_config.h"
#include "forest.h"

namespace fil {

// Where the model lives and how the server around it is set up.
struct ModelSource {
  std::string name;
  uint64_t version = 0;
  std::string repository;      // the model's folder (Triton gives a local copy for S3)
  std::string backend_dir;     // where libtriton_fil.so and fil_compile.py are installed
  nlohmann::json config;       // the model config, as Triton's JSON
};

using LogFn = void (*)(int level, const std::string& message);  // 0 info, 1 warn, 2 error
// Receives the fil_compiled value (docs/fil_contract.md): 1 compiled library, 0 GTIL while
// compiling or with compilation off, -1 GTIL for good (compilation failed or was refused).
using PublishFn = std::function<void(double)>;

class ModelState {
 public:
  // Throws ConfigError / ModelLoadError with the reason the version cannot be served.
  ModelState(const ModelSource& source, LogFn log, PublishFn publish);
  ~ModelState();  // cancels a running compilation first, so `publish` is not called after it

  // The predictor to use for one execute() call (GTIL, or the compiled library once swapped in).
  const Predictor* Current() const { return current_.load(std::memory_order_acquire); }

  const std::string& tag() const { return tag_; }  // "<name>/<version>", as log lines name it
  int n_features() const { return n_features_; }
  int64_t max_batch_size() const { return max_batch_size_; }
  const OutputFormat& format() const { return *format_; }
  // output__0's shape per row as native FIL answers it (dims with every 1 removed)
  const std::vector<int64_t>& response_dims() const { return response_dims_; }

 private:
  void StartCompiled(const ModelSource& source, const Parameters& params, const std::string& postprocessor,
                     std::string* how);
  bool TrySwap(const std::string& library);
  void Log(int level, const std::string& message) const { log_(level, "[fil] " + tag_ + ": " + message); }

  LogFn log_;
  PublishFn publish_;
  std::string tag_;
  int n_features_ = 0;
  int threads_ = 1;
  int64_t max_batch_size_ = 0;
  std::vector<int64_t> response_dims_;
  std::unique_ptr<TreeliteModel> model_;
  std::unique_ptr<GTILPredictor> gtil_;
  std::unique_ptr<OutputFormat> format_;
  std::mutex swap_mutex_;
  std::unique_ptr<CompiledPredictor> compiled_;  // kept until the model unloads
  std::atomic<const Predictor*> current_{nullptr};
  std::unique_ptr<CompileJob> job_;
};

}  // namespace fil
