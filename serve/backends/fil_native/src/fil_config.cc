// See fil_config.h. Each rule mirrors the function of the same name in fil_config.py.
#include "fil_config.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>

#ifndef FIL_NATIVE_RELEASE
#error "FIL_NATIVE_RELEASE must be defined (the Makefile reads it from fil_config.py)"
#endif

namespace fil {

const std::vector<std::string> kModelTypes = {"xgboost", "xgboost_json", "xgboost_ubj", "lightgbm",
                                              "treelite_checkpoint"};

const char* NativeRelease() { return FIL_NATIVE_RELEASE; }

static std::pair<int, int> ParseRelease(const char* text) {
  int major = 0, minor = 0;
  std::sscanf(text, "%d.%d", &major, &minor);
  return {major, minor};
}

bool AtLeast(const char* release) { return ParseRelease(NativeRelease()) >= ParseRelease(release); }

const char* ClassifierKey() { return AtLeast("25.09") ? "is_classifier" : "output_class"; }

bool CpuLabelArgmax() { return AtLeast("25.09"); }

namespace {

// rapids-triton shared_state.hpp get_config_param(): a missing key takes the default or
// fails with "Required parameter"; a bool must be exactly "true"/"false"; a number is read
// with `istringstream >>` and a failed read takes the default or fails with "Bad input".
class Reader {
 public:
  explicit Reader(const nlohmann::json& parameters) : parameters_(parameters) {}

  std::optional<std::string> Text(const std::string& name) const {
    if (!parameters_.is_object() || !parameters_.contains(name)) return std::nullopt;
    const auto& entry = parameters_.at(name);
    if (entry.is_null()) return std::nullopt;
    if (entry.is_object()) {
      auto value = entry.value("string_value", nlohmann::json(""));
      return value.is_string() ? value.get<std::string>() : value.dump();
    }
    return entry.is_string() ? entry.get<std::string>() : entry.dump();
  }

  bool Boolean(const std::string& name, std::optional<bool> fallback = std::nullopt) const {
    auto text = Text(name);
    if (!text) return Default(name, fallback);
    if (*text == "true") return true;
    if (*text == "false") return false;
    throw ConfigError("Expected 'true' or 'false' for parameter '" + name + "', got: '" + *text + "'");
  }

  std::string Token(const std::string& name, const std::string& fallback) const {
    auto text = Text(name);
    if (!text) return fallback;
    std::istringstream words(*text);  // `istream >> std::string`: one word
    std::string word;
    return (words >> word) ? word : fallback;
  }

  float Float(const std::string& name, std::optional<float> fallback = std::nullopt) const {
    auto text = Text(name);
    if (!text) return Default(name, fallback);
    auto value = IstreamFloat(*text);
    if (!value) {
      if (!fallback) throw ConfigError("Bad input for parameter " + name + " (got " + PyRepr(*text) + ")");
      return *fallback;
    }
    return *value;
  }

  int Int(const std::string& name, int fallback) const {
    auto text = Text(name);
    if (!text) return fallback;
    auto value = IstreamInt(*text);
    return value ? *value : fallback;
  }

 private:
  template <typename T>
  static T Default(const std::string& name, std::optional<T> fallback) {
    if (!fallback) throw ConfigError("Required parameter " + name + " not found in config");
    return *fallback;
  }

  // What `std::istringstream(text) >> float` reads, as fil_config._istream_number: leading
  // spaces, [+-], digits with an optional fraction (or a fraction alone), an optional
  // exponent that must have digits; the rest is left unread. nan/inf/overflow fail.
  static std::optional<float> IstreamFloat(const std::string& text) {
    size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    size_t int_digits = 0, frac_digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++int_digits;
    if (i < text.size() && text[i] == '.') {
      ++i;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++frac_digits;
    }
    if (int_digits == 0 && frac_digits == 0) return std::nullopt;
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
      size_t j = i + 1;
      if (j < text.size() && (text[j] == '+' || text[j] == '-')) ++j;
      size_t exp_digits = 0;
      while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j, ++exp_digits;
      if (exp_digits == 0) return std::nullopt;
      i = j;
    }
    double value = std::strtod(text.substr(start, i - start).c_str(), nullptr);
    if (!std::isfinite(value) || std::fabs(value) > std::numeric_limits<float>::max()) return std::nullopt;
    return static_cast<float>(value);
  }

  static std::optional<int> IstreamInt(const std::string& text) {
    size_t i = 0;
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    size_t digits = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++digits;
    if (digits == 0 || digits > 12) return std::nullopt;
    long long value = std::strtoll(text.substr(start, i - start).c_str(), nullptr, 10);
    if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) return std::nullopt;
    return static_cast<int>(value);
  }

  const nlohmann::json& parameters_;
};

}  // namespace

Parameters ReadParameters(const nlohmann::json& parameters) {
  Reader read(parameters);
  Parameters p;
  p.predict_proba = read.Boolean("predict_proba", false);
  p.model_type = read.Token("model_type", "xgboost");  // src/serialization.h: default "xgboost"
  bool known = false;
  for (const auto& t : kModelTypes) known = known || t == p.model_type;
  if (!known) {
    std::string all;
    for (const auto& t : kModelTypes) all += (all.empty() ? "" : ", ") + t;
    throw ConfigError(p.model_type + " not recognized as a valid serialization format. (model_type must be one of " +
                      all + ")");
  }
  p.xgboost_allow_unknown_field = read.Boolean("xgboost_allow_unknown_field", false);
  if (AtLeast("25.09")) {
    auto deprecated = read.Text("output_class");
    p.output_class = (deprecated && (*deprecated == "true" || *deprecated == "false")) ? *deprecated == "true"
                                                                                       : read.Boolean("is_classifier");
  } else {
    try {
      p.output_class = read.Boolean("output_class");
    } catch (const ConfigError& e) {
      if (!read.Text("output_class") && read.Text("is_classifier")) {
        throw ConfigError(std::string(e.what()) + " (is_classifier is read from FIL 25.09 on; " + NativeRelease() +
                          " reads output_class)");
      }
      throw;
    }
  }
  // threshold is required only for a classifier; otherwise native FIL sets 0.5 unread
  p.threshold = p.output_class ? read.Float("threshold") : 0.5f;
  p.cpu_nthread = read.Int("cpu_nthread", -1);
  p.use_experimental_optimizations = read.Boolean("use_experimental_optimizations", false);
  return p;
}

int64_t JsonInt(const nlohmann::json& value) {
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number()) return static_cast<int64_t>(value.get<double>());
  if (value.is_string()) return std::stoll(value.get<std::string>());
  throw ConfigError("expected an integer in the model config, got " + value.dump());
}

std::vector<int64_t> ResponseDims(const nlohmann::json& output) {
  nlohmann::json dims = nlohmann::json::array();
  if (output.contains("reshape")) {
    dims = output["reshape"].value("shape", nlohmann::json::array());
  } else {
    dims = output.value("dims", nlohmann::json::array());
  }
  std::vector<int64_t> out;
  for (const auto& d : dims) {
    int64_t v = JsonInt(d);
    if (v != 1) out.push_back(v);
  }
  return out;
}

std::string PyRepr(const std::string& text) {
  bool has_single = text.find('\'') != std::string::npos, has_double = text.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : text) {
    if (c == '\\' || c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

std::string PyList(const std::vector<int64_t>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out + "]";
}

}  // namespace fil
