"""Tree-ensemble prediction for the local ``fil`` backend: load a model file, predict with
Treelite GTIL or with a tl2cgen-compiled library, and shape the output as FIL does.

Kept free of ``triton_python_backend_utils`` so it can be tested and benchmarked in process.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import treelite
from treelite.core import _LIB as _TREELITE_LIB
from treelite.gtil.gtil import GTILConfig

# FIL's own contract (fil_backend docs/model_config.md): model_type -> default file name.
# tests/unit/test_tritonconfig.py checks it equals fraudml.tritonconfig.MODEL_FILENAMES.
FIL_MODEL_FILENAMES = {
    "treelite_checkpoint": "checkpoint.tl",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "xgboost": "xgboost.model",
    "lightgbm": "model.txt",
}

# Bump when the generated wrapper or the compile flags change: old cache entries are ignored.
WRAPPER_VERSION = 3
LIB_NAME = "libforest.so"  # never "model.so": the Python backend would import it as the model
# Measured on the project machines (100 trees of depth 10, 30 features): -O1 with quantized
# thresholds builds in 9 s on idle cores (tl2cgen's default -O3 without quantizing: 50 s)
# and predicts a row in 10 us (16 us); -O2/-Os were no faster.
TL2CGEN_PARAMS = {"quantize": 1}
CC_FLAGS = ["-O1", "-fPIC", "-std=c99"]
# GTIL/compiled batches at least this large use every thread; smaller ones run on one.
PARALLEL_MIN_ROWS = 1024


class ModelLoadError(ValueError):
    """The model file or its configuration cannot be served; the message says why."""


def load_model(path: Path, model_type: str, *, xgboost_allow_unknown_field: bool = False) -> treelite.Model:
    """Load ``path`` written in FIL ``model_type`` into a Treelite model."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (model_type {model_type!r} reads {path.name})")
    fe = treelite.frontend
    try:
        if model_type == "treelite_checkpoint":
            return treelite.Model.deserialize(str(path))
        if model_type == "xgboost_json":
            return fe.load_xgboost_model(str(path), format_choice="json", allow_unknown_field=xgboost_allow_unknown_field)
        if model_type == "xgboost_ubj":
            return fe.load_xgboost_model(str(path), format_choice="ubjson")
        if model_type == "xgboost":
            return fe.load_xgboost_model_legacy_binary(str(path))
        if model_type == "lightgbm":
            return fe.load_lightgbm_model(str(path))
    except treelite.TreeliteError as e:
        raise ModelLoadError(f"cannot read {path} as model_type {model_type!r}: {e}") from e
    raise ModelLoadError(f"model_type {model_type!r} is not a FIL model_type; use one of {sorted(FIL_MODEL_FILENAMES)}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_outputs(model: treelite.Model) -> int:
    """Numbers per row the forest produces: targets x the largest class count."""
    header = model.get_header_accessor()
    return int(header.get_field("num_target")[0]) * int(max(header.get_field("num_class")))


# -- output shaping ---------------------------------------------------------------------------
class OutputFormat:
    """Turns the forest's raw output (rows x classes, post-processed) into FIL's ``output__0``.

    * ``predict_proba``: one probability per class; a single-output binary model ``p``
      becomes ``[1-p, p]``.
    * classifier without ``predict_proba``: the class label (``p > threshold`` for binary,
      argmax otherwise) as float32.
    * not a classifier: the model's score (positive-class probability of a binary classifier).
    """

    # mode codes shared with the compiled library's fil_predict()
    RAW, PROBA, LABEL, SCORE = 0, 1, 2, 3

    def __init__(self, *, n_model_outputs: int, predict_proba: bool, output_class: bool, threshold: float):
        k = n_model_outputs
        self.threshold = float(threshold)
        self.mode = self.PROBA if predict_proba else self.LABEL if output_class else self.SCORE
        if predict_proba:
            if not output_class:
                raise ModelLoadError("predict_proba is true but output_class is false: only a classifier has class probabilities")
            self.width = 2 if k == 1 else k
            self._fn = _proba_from_one if k == 1 else _as_f32
        elif output_class:
            self.width = 1
            if k <= 2:
                col = k - 1
                self._fn = lambda raw: (raw[:, col : col + 1] > threshold).astype(np.float32)
            else:
                self._fn = lambda raw: np.argmax(raw, axis=1).astype(np.float32)[:, None]
        else:
            if k > 2:
                raise ModelLoadError(f"the model has {k} classes: set output_class true (a label) or predict_proba true")
            self.width = 1
            col = k - 1
            self._fn = lambda raw: raw[:, col : col + 1].astype(np.float32)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return self._fn(raw)


def _proba_from_one(raw: np.ndarray) -> np.ndarray:
    out = np.empty((raw.shape[0], 2), dtype=np.float32)
    out[:, 1] = raw[:, 0]
    np.subtract(1.0, out[:, 1], out=out[:, 0])
    return out


def _as_f32(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32)


# -- predictors -------------------------------------------------------------------------------
_GTIL_PREDICT = _TREELITE_LIB.TreeliteGTILPredict
_GTIL_PREDICT.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_uint64,
    ctypes.c_void_p,
    ctypes.c_void_p,
]
_GTIL_PREDICT.restype = ctypes.c_int


class GTILPredictor:
    """Treelite's General Tree Inference Library, called straight through its C API (the
    Python ``treelite.gtil.predict`` wrapper spends ~60 us per call on set-up)."""

    name = "gtil"
    checks_finite = False  # GTIL takes NaN as "missing": callers must check first
    formats = False  # callers apply OutputFormat

    def __init__(self, model: treelite.Model, *, threads: int = 0):
        self.model = model
        self.n_features = model.num_feature
        self.n_outputs = model_outputs(model)
        self._in_dtype = np.dtype(model.input_type)
        self._in_type = model.input_type.encode()
        self._out_dtype = np.dtype(model.output_type)
        self._cfg_one = GTILConfig(predict_type="default", nthread=1)
        self._cfg_all = GTILConfig(predict_type="default", nthread=threads if threads > 0 else -1)
        self._handle = model.handle

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``x``: float32 (rows, n_features), C order. Returns (rows, n_outputs)."""
        n = x.shape[0]
        x = np.ascontiguousarray(x, dtype=self._in_dtype)  # no copy for a C-ordered request
        out = np.empty((n, self.n_outputs), dtype=self._out_dtype)
        cfg = self._cfg_all if n >= PARALLEL_MIN_ROWS else self._cfg_one
        rc = _GTIL_PREDICT(self._handle, x.ctypes.data, self._in_type, n, out.ctypes.data, cfg.handle)
        if rc != 0:
            raise RuntimeError(f"Treelite GTIL failed: {treelite.core._LIB.TreeliteGetLastError().decode()}")
        return out


class NonFiniteInput(ValueError):
    """Row ``row`` of a batch holds NaN or Inf."""

    def __init__(self, row: int):
        super().__init__(f"row {row} holds a non-finite value")
        self.row = row


class CompiledPredictor:
    """A tl2cgen-compiled model library with our batch entry point ``fil_predict``, which
    also checks for NaN/Inf and writes FIL's output format, so serving one request is one
    ctypes call into a reused output buffer."""

    name = "compiled"
    checks_finite = True  # predict() raises NonFiniteInput itself
    formats = True  # predict_formatted() exists

    def __init__(self, libpath: Path, *, n_features: int, n_outputs: int, threads: int = 1):
        self.libpath = Path(libpath)
        lib = ctypes.CDLL(str(self.libpath))
        lib.fil_num_outputs.restype = ctypes.c_int
        lib.fil_num_features.restype = ctypes.c_int
        if lib.fil_num_outputs() != n_outputs or lib.fil_num_features() != n_features:
            raise ModelLoadError(
                f"{libpath} was built for {lib.fil_num_features()} features / {lib.fil_num_outputs()} outputs, "
                f"the model has {n_features} / {n_outputs}"
            )
        fn = lib.fil_predict
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double]
        fn.restype = ctypes.c_int64
        self._lib = lib
        self._fn = fn
        self.n_features = n_features
        self.n_outputs = n_outputs
        self._threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._one_row: dict[int, tuple[np.ndarray, int]] = {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Every model output: float32 (rows, n_outputs), like GTILPredictor.predict.

        Raises:
            NonFiniteInput: a row holds NaN/Inf (checked in C while the rows are read).
        """
        return self._run(x, OutputFormat.RAW, self.n_outputs, 0.0, reuse=False)

    def predict_formatted(self, x: np.ndarray, fmt: OutputFormat) -> np.ndarray:
        """``output__0`` directly. A one-row answer lives in a buffer reused by the next
        one-row call: hand it to Triton (which copies it) before predicting again."""
        return self._run(x, fmt.mode, fmt.width, fmt.threshold, reuse=True)

    def _run(self, x: np.ndarray, mode: int, width: int, threshold: float, *, reuse: bool) -> np.ndarray:
        n = x.shape[0]
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if n == 1 and reuse:
            buffer = self._one_row.get(width)
            if buffer is None:
                array = np.empty((1, width), dtype=np.float32)
                buffer = self._one_row[width] = (array, array.ctypes.data)
            out, out_ptr = buffer
            rc = self._fn(x.ctypes.data, 1, self.n_features, out_ptr, mode, threshold)
        elif n >= PARALLEL_MIN_ROWS and self._threads > 1:
            out = np.empty((n, width), dtype=np.float32)
            # ctypes drops the GIL during the call, so row blocks run on separate cores
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="fil-predict")
            bounds = np.linspace(0, n, self._threads + 1, dtype=np.int64)
            futures = [
                (a, self._pool.submit(self._fn, x[a:b].ctypes.data, int(b - a), self.n_features, out[a:b].ctypes.data, mode, threshold))
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
            codes = [(a, f.result()) for a, f in futures]
            bad = [a + rc - 1 for a, rc in codes if rc > 0]
            if bad:
                raise NonFiniteInput(min(bad))
            rc = min(rc for _, rc in codes)
        else:
            out = np.empty((n, width), dtype=np.float32)
            rc = self._fn(x.ctypes.data, n, self.n_features, out.ctypes.data, mode, threshold)
        if rc > 0:
            raise NonFiniteInput(rc - 1)
        if rc != 0:
            raise RuntimeError(f"compiled model {self.libpath} rejected the batch (code {rc})")
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


# -- compilation ------------------------------------------------------------------------------
_WRAPPER_C = r"""
/* Batch entry point around tl2cgen's per-row predict(): one call per batch from Python,
   output written in FIL's format. mode 0: every model output; 1: probabilities ([1-p, p]
   for a single-output binary model); 2: class label (p > threshold, argmax for >2
   classes); 3: the positive-class score.
   Returns 0, or 1 + the index of the first row holding a NaN/Inf (nothing is predicted
   for it or later rows), or -1 when n_cols is not the model's feature count. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "header.h"

#define FIL_N_OUT (N_TARGET * MAX_N_CLASS)

int fil_num_outputs(void) { return FIL_N_OUT; }
int fil_num_features(void) { return get_num_feature(); }

int64_t fil_predict(const float* x, int64_t n_rows, int64_t n_cols, float* out, int mode, double threshold) {
  const int32_t nf = get_num_feature();
  if (n_cols != nf) return -1;
  const int k_out = FIL_N_OUT;
  const int width = mode == 0 ? k_out : mode == 1 ? (k_out == 1 ? 2 : k_out) : 1;
  const FIL_LEAF_T thr = (FIL_LEAF_T)threshold;
  union Entry row[nf];
  FIL_LEAF_T res[FIL_N_OUT];
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * n_cols;
    for (int32_t j = 0; j < nf; ++j) {
      if (!isfinite(xr[j])) return r + 1;
      row[j].fvalue = xr[j];
    }
    memset(res, 0, sizeof(res));
    predict(row, 0, res);
    float* o = out + r * width;
    if (mode == 1 && k_out == 1) {
      o[1] = (float)res[0];
      o[0] = 1.0f - o[1];
    } else if (mode == 2) {
      if (k_out <= 2) {
        o[0] = res[k_out - 1] > thr ? 1.0f : 0.0f;
      } else {
        int best = 0;
        for (int k = 1; k < k_out; ++k) if (res[k] > res[best]) best = k;
        o[0] = (float)best;
      }
    } else if (mode == 3) {
      o[0] = (float)res[k_out - 1];
    } else {
      for (int k = 0; k < k_out; ++k) o[k] = (float)res[k];
    }
  }
  return 0;
}
"""


def cache_key(model_sha256: str) -> str:
    import tl2cgen

    return f"{model_sha256[:40]}-tl2cgen{tl2cgen.__version__}-w{WRAPPER_VERSION}"


def cached_library(cache_dir: Path, model_sha256: str) -> Path | None:
    lib = Path(cache_dir) / cache_key(model_sha256) / LIB_NAME
    return lib if lib.is_file() else None


class CompileCancelled(RuntimeError):
    pass


class CompilerMissing(RuntimeError):
    pass


def compile_model(
    model: treelite.Model,
    model_sha256: str,
    cache_dir: Path,
    *,
    jobs: int = 2,
    cancel: threading.Event | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> Path:
    """Compile ``model`` with tl2cgen + gcc into ``<cache_dir>/<key>/libforest.so`` (or find it).

    The key is the model file's sha256 plus the tl2cgen and wrapper versions. Builds run in a
    temporary folder renamed into place, under a lock file, so concurrent servers compiling
    the same model wait for one build and never see a half-written library.
    """
    import tl2cgen

    cache_dir = Path(cache_dir)
    key = cache_key(model_sha256)
    final_dir = cache_dir / key
    if (final_dir / LIB_NAME).is_file():
        return final_dir / LIB_NAME
    if shutil.which("gcc") is None:
        raise CompilerMissing("gcc is not installed: the model is served with Treelite GTIL (install gcc to compile it)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final_dir / LIB_NAME).is_file():
            return final_dir / LIB_NAME
        build = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=cache_dir))
        try:
            started = time.monotonic()
            tl2cgen.generate_c_code(model, build, {**TL2CGEN_PARAMS, "parallel_comp": max(2, jobs)})
            header = (build / "header.h").read_text()
            leaf_t = "float" if "float* result" in header.split("void predict(", 1)[1].split(")", 1)[0] else "double"
            (build / "fil_batch.c").write_text(_WRAPPER_C)
            recipe = json.loads((build / "recipe.json").read_text())
            sources = [s["name"] for s in recipe["sources"]] + ["fil_batch"]
            _run_parallel(
                [["gcc", "-c", *CC_FLAGS, f"-DFIL_LEAF_T={leaf_t}", "-o", f"{s}.o", f"{s}.c"] for s in sources],
                cwd=build,
                jobs=jobs,
                cancel=cancel,
            )
            _run_parallel(
                [["gcc", "-shared", "-Wl,-Bsymbolic", "-o", LIB_NAME, *(f"{s}.o" for s in sources), "-lm"]],
                cwd=build,
                jobs=1,
                cancel=cancel,
            )
            for leftover in build.iterdir():
                if leftover.name != LIB_NAME:
                    leftover.unlink()
            os.rename(build, final_dir)
            log(f"compiled {key} in {time.monotonic() - started:.1f} s")
        finally:
            if build.exists():
                shutil.rmtree(build, ignore_errors=True)
    return final_dir / LIB_NAME


_NICE = ["nice", "-n", "10"] if shutil.which("nice") else []


def _run_parallel(commands: list[list[str]], *, cwd: Path, jobs: int, cancel: threading.Event | None) -> None:
    """Run ``commands`` at low CPU priority, ``jobs`` at a time; kill them all on ``cancel``."""
    pending = list(commands)
    running: list[tuple[subprocess.Popen, list[str]]] = []
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                cmd = pending.pop(0)
                proc = subprocess.Popen(
                    _NICE + cmd,  # serving requests comes first
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                running.append((proc, cmd))
            time.sleep(0.02)
            if cancel is not None and cancel.is_set():
                raise CompileCancelled("compilation cancelled (model unloading)")
            for proc, cmd in list(running):
                if proc.poll() is None:
                    continue
                running.remove((proc, cmd))
                if proc.returncode != 0:
                    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                    raise RuntimeError(f"{' '.join(cmd)} failed with code {proc.returncode}: {err}")
    finally:
        for proc, _ in running:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        for proc, _ in running:
            if proc.stderr:
                proc.stderr.close()


def self_check(
    reference: GTILPredictor, candidate: CompiledPredictor, n_features: int, fmt: OutputFormat | None = None, *, rows: int = 512, seed: int = 0
) -> float:
    """Largest absolute difference between GTIL and a compiled library on random rows, raw
    and (with ``fmt``) in FIL's output format; a library is only used when this is ~0."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n_features)) * 3).astype(np.float32)
    x[0] = 0.0
    ref_raw = np.asarray(reference.predict(x), dtype=np.float64)
    diff = float(np.max(np.abs(ref_raw - candidate.predict(x))))
    if fmt is not None:
        want = fmt(reference.predict(x)).astype(np.float64)
        got = np.vstack([candidate.predict_formatted(x[:-1], fmt), candidate.predict_formatted(x[-1:], fmt)])
        if fmt.mode == OutputFormat.LABEL and ref_raw.shape[1] <= 2:
            keep = np.abs(ref_raw[:, -1] - fmt.threshold) > 1e-6  # labels are exact away from the threshold
            want, got = want[keep], got[keep]
        diff = max(diff, float(np.max(np.abs(want - got), initial=0.0)))
    return diff
