/* One call per batch around tl2cgen's per-row predict(), output as native FIL writes it (fil_backend
   src/tl_model.h r25.08): mode 0 every output; 1 probabilities ([1-p, p] for one output); 2 a label
   (p > threshold for one output, else the arg-max). A NaN is marked missing (Entry.missing = -1): the
   split's default branch, as in GTIL. (A float32 widened to a double Entry has its low 29 mantissa bits
   zero, so it cannot alias -1; for a float Entry only a NaN has those bits.) Returns 0, or -1 when n_cols
   is not the model's feature count. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "header.h"

#define FIL_N_OUT (N_TARGET * MAX_N_CLASS)

int fil_num_outputs(void) { return FIL_N_OUT; }
int fil_num_features(void) { return get_num_feature(); }

int64_t fil_predict(const float* x, int64_t n_rows, int64_t n_cols, float* out, int mode, float threshold) {
  const int32_t nf = get_num_feature();
  if (n_cols != nf) return -1;
  const int k_out = FIL_N_OUT;
  const int width = mode == 0 ? k_out : mode == 1 ? (k_out == 1 ? 2 : k_out) : 1;
  union Entry row[nf];
  FIL_LEAF_T res[FIL_N_OUT];
  float p[FIL_N_OUT];
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n_cols;
    for (int32_t j = 0; j < nf; ++j) {
      if (isnan(xr[j])) row[j].missing = -1;
      else row[j].fvalue = xr[j];
    }
    memset(res, 0, sizeof(res));
    predict(row, 0, res);
    for (int k = 0; k < k_out; ++k) p[k] = (float)res[k];  /* native FIL's output is float */
    float* o = out + r * width;
    if (mode == 1 && k_out == 1) {
      o[1] = p[0];
      o[0] = 1.0f - p[0];
    } else if (mode == 2 && k_out == 1) {
      o[0] = p[0] > threshold ? 1.0f : 0.0f;
    } else if (mode == 2) {
      int best = 0;
      for (int k = 1; k < k_out; ++k) if (p[k] > p[best]) best = k;
      o[0] = (float)best;
    } else {
      for (int k = 0; k < k_out; ++k) o[k] = p[k];
    }
  }
  return 0;
}
