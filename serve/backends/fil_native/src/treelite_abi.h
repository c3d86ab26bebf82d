// The few functions of Treelite's C API (libtreelite.so in the treelite 4.4.1 wheel) this
// backend calls, declared from Treelite's documented C API (include/treelite/c_api.h) and
// the calls its own Python package makes. Every function returns 0 on success and -1 on
// failure, with the reason in TreeliteGetLastError().
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

typedef void* TreeliteModelHandle;
typedef void* TreeliteGTILConfigHandle;

// One 1-D array exchanged with the header-field accessors (Treelite's PyBufferFrame).
struct TreeliteBufferFrame {
  void* buf;
  char* format;
  size_t itemsize;
  size_t nitem;
};

const char* TreeliteGetLastError(void);

// Loaders; config_json is a JSON object (e.g. {"allow_unknown_field": true}).
int TreeliteDeserializeModelFromFile(const char* filename, TreeliteModelHandle* out);
int TreeliteLoadXGBoostModelJSON(const char* filename, const char* config_json, TreeliteModelHandle* out);
int TreeliteLoadXGBoostModelUBJSON(const char* filename, const char* config_json, TreeliteModelHandle* out);
int TreeliteLoadXGBoostModelLegacyBinary(const char* filename, const char* config_json, TreeliteModelHandle* out);
int TreeliteLoadLightGBMModel(const char* filename, const char* config_json, TreeliteModelHandle* out);
int TreeliteFreeModel(TreeliteModelHandle handle);

int TreeliteQueryNumTree(TreeliteModelHandle handle, size_t* out);
int TreeliteQueryNumFeature(TreeliteModelHandle handle, size_t* out);
// Header fields by name ("num_target", "num_class", "task_type", "leaf_vector_shape",
// "postprocessor", ...). A read frame points into the model; a written one is copied.
int TreeliteGetHeaderField(TreeliteModelHandle handle, const char* name, TreeliteBufferFrame* out_frame);
int TreeliteSetHeaderField(TreeliteModelHandle handle, const char* name, TreeliteBufferFrame frame);

// GTIL: config_json e.g. {"predict_type": "default", "nthread": 1}. Predict reads
// num_row x num_feature values of input_type ("float32" or "float64") and writes the shape
// GetOutputShape reports (num_row x num_target x max num_class for "default"), same type.
int TreeliteGTILParseConfig(const char* config_json, TreeliteGTILConfigHandle* out);
int TreeliteGTILDeleteConfig(TreeliteGTILConfigHandle handle);
int TreeliteGTILGetOutputShape(TreeliteModelHandle model, uint64_t num_row, TreeliteGTILConfigHandle config,
                               const uint64_t** out, uint64_t* out_ndim);
int TreeliteGTILPredict(TreeliteModelHandle model, const void* input, const char* input_type, uint64_t num_row,
                        void* output, TreeliteGTILConfigHandle config);

}  // extern "C"
