// How native FIL reads config.pbtxt: the C++ twin of serve/backends/fil/fil_config.py.
// Same rules, same order, same messages; the rules and the fil_backend sources they come
// from are listed in docs/fil_contract.md and cited in fil_config.py.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fil {

// config.pbtxt is one native FIL refuses; the message carries native FIL's own words.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The native FIL release this backend behaves like: fil_config.NATIVE_RELEASE, passed in
// by the Makefile (FIL_NATIVE_RELEASE) so that both backends move together.
const char* NativeRelease();
bool AtLeast(const char* release);
// "output_class" up to 25.08, "is_classifier" from 25.09 (fil_config.classifier_key).
const char* ClassifierKey();
// Whether native FIL on CPU answers an arg-max label for a model with several class
// outputs (from 25.09); 25.08 asks Treelite for 'max_index' and fails (fil_config.cpu_label_argmax).
bool CpuLabelArgmax();

extern const std::vector<std::string> kModelTypes;  // fil_config.MODEL_TYPES

struct Parameters {
  std::string model_type;
  bool predict_proba = false;
  bool output_class = false;  // FIL's classifier flag, read from ClassifierKey()
  float threshold = 0.5f;     // not read when output_class is false
  bool xgboost_allow_unknown_field = false;
  int cpu_nthread = -1;  // <= 0: every core
  bool use_experimental_optimizations = false;
};

// Parse config.pbtxt's "parameters" (Triton's JSON: key -> {"string_value": ...}) as
// src/shared_state.h RapidsSharedState::load() does. Throws ConfigError.
Parameters ReadParameters(const nlohmann::json& parameters);

// Per-row shape native FIL answers for one output entry: its reshape (or dims) with every
// 1 removed, so dims [1] answers [rows] (rapids-triton squeeze_output).
std::vector<int64_t> ResponseDims(const nlohmann::json& output);

// A config integer: Triton's JSON writes int64 fields (dims) as strings, int32 as numbers.
int64_t JsonInt(const nlohmann::json& value);

// Python's repr() of a str, so messages read exactly as the Python backend's.
std::string PyRepr(const std::string& text);
// "[a, b]" like a Python list of ints.
std::string PyList(const std::vector<int64_t>& values);

}  // namespace fil
