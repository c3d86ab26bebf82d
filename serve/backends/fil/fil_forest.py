"""Load a model file, predict with Treelite GTIL or a tl2cgen-compiled library, and shape the output
as native FIL does (fil_backend r25.08 src/tl_utils.h, src/tl_model.h; docs/fil_contract.md).
No Triton or sibling imports (fil_batch.c, the compiled library's C entry point, lies beside it):
benchmark/app.py and the native backend's fil_compile.py load it alone.
"""

from __future__ import annotations

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
FIL_MODEL_FILENAMES = {"treelite_checkpoint": "checkpoint.tl", "xgboost_json": "xgboost.json",
                       "xgboost_ubj": "xgboost.ubj", "xgboost": "xgboost.model", "lightgbm": "model.txt"}

# The batch entry point fil_predict() compiled with each model. Bump WRAPPER_VERSION when it or the
# compile flags change: old cache entries are ignored.
WRAPPER_SOURCE = Path(__file__).with_name("fil_batch.c")
WRAPPER_VERSION = 4
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
    """``path`` read with the Treelite loader native FIL uses for ``model_type`` (fil_backend
    src/tl_utils.h ``load_tl_base_model``; ``xgboost_allow_unknown_field``: JSON and UBJSON)."""
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (model_type {model_type!r} reads {path.name})")
    fe, allow = treelite.frontend, xgboost_allow_unknown_field
    loaders = {"treelite_checkpoint": treelite.Model.deserialize, "lightgbm": fe.load_lightgbm_model,
               "xgboost": fe.load_xgboost_model_legacy_binary,
               "xgboost_json": lambda p: fe.load_xgboost_model(p, format_choice="json", allow_unknown_field=allow),
               "xgboost_ubj": lambda p: fe.load_xgboost_model(p, format_choice="ubjson", allow_unknown_field=allow)}
    try:
        return loaders[model_type](path)  # callers checked model_type
    except treelite.TreeliteError as e:
        hint = ""
        if model_type == "xgboost" and path.read_bytes()[:1] in (b"{", b"["):
            # XGBoost >= 2.1 writes UBJSON from save_model("xgboost.model"); the legacy
            # binary format needs save_model("<name>.deprecated") or save_raw("deprecated")
            hint = ("; the file is JSON/UBJSON, not XGBoost's legacy binary format (XGBoost >= 2.1 "
                    "save_model('xgboost.model') writes UBJSON): use model_type xgboost_ubj/xgboost_json "
                    "with xgboost.ubj/xgboost.json")
        raise ModelLoadError(f"cannot read {path} as model_type {model_type!r}: {e}{hint}") from e


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def library_key(path: Path, postprocessor: str | None) -> str:
    """The compile-cache key (as forest.cc CacheKey): the file's sha256, or sha256("<that>:<postprocessor>")
    when native FIL sets a post-processor, which the library bakes in."""
    key = file_sha256(path)
    return hashlib.sha256(f"{key}:{postprocessor}".encode()).hexdigest() if postprocessor is not None else key


# -- what native FIL does to the model and its output -------------------------------------------
def apply_native_postprocessor(model: treelite.Model, *, predict_proba: bool) -> str | None:
    """Set the post-processor native FIL sets and return its name (None: the model's own is kept).
    fil_backend src/tl_model.h r25.08 TreeliteModel(): with ``predict_proba`` a multi-class model
    gets ``softmax`` when leaves hold one value (so LightGBM ``multiclassova`` answers a softmax) and
    ``identity_multiclass`` when they hold class vectors (sklearn forests)."""
    header = model.get_header_accessor()
    if not predict_proba or int(header.get_field("task_type")[0]) != 2:  # treelite::TaskType::kMultiClf
        return None
    wanted = "softmax" if int(header.get_field("leaf_vector_shape")[1]) == 1 else "identity_multiclass"
    if header.get_field("postprocessor") == wanted:
        return None
    header.set_field("postprocessor", wanted)
    return wanted


class OutputFormat:
    """The forest's rows x k outputs as native FIL's ``output__0`` (fil_backend src/tl_model.h r25.08
    ``TreeliteModel::predict``; k the model's ``num_class``): ``predict_proba``: ``[1-p, p]`` if k == 1
    (regressors too), else the k outputs; a label: ``p > threshold`` in float32 if k == 1, else the
    arg-max (GPU r25.08, CPU from r25.09; refused in model.py on CPU r25.08); else the k outputs."""

    RAW, PROBA, LABEL = 0, 1, 2  # mode codes shared with the compiled library's fil_predict()

    def __init__(self, *, n_model_outputs: int, predict_proba: bool, output_class: bool, threshold: float):
        k = self.n_model_outputs = int(n_model_outputs)
        self.threshold = float(np.float32(threshold))
        self.mode = self.PROBA if predict_proba else self.LABEL if output_class else self.RAW
        self.width = {self.PROBA: max(2, k), self.LABEL: 1, self.RAW: k}[self.mode]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.float32, copy=False)
        if self.mode == self.PROBA and self.n_model_outputs == 1:
            return np.hstack([np.float32(1.0) - raw, raw])
        if self.mode == self.LABEL:
            labels = raw > np.float32(self.threshold) if self.n_model_outputs == 1 else np.argmax(raw, axis=1)[:, None]
            return labels.astype(np.float32)
        return raw


# -- predictors -------------------------------------------------------------------------------
_GTIL_PREDICT = _TREELITE_LIB.TreeliteGTILPredict
_GTIL_PREDICT.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_void_p,
                          ctypes.c_void_p]  # returns int, ctypes' default restype


class GTILPredictor:
    """Treelite GTIL through its C API (``treelite.gtil.predict`` spends ~60 us per call on set-up),
    float32 in and out as native FIL on CPU calls it (fil_backend src/tl_model.h r25.08). NaN takes
    each split's default branch, +-Inf is compared like any number (Treelite src/gtil/predict.cc)."""

    def __init__(self, model: treelite.Model, *, threads: int = 0):
        header = model.get_header_accessor()
        self.model, self.n_features = model, model.num_feature
        # numbers per row: targets x the largest class count
        self.n_outputs = int(header.get_field("num_target")[0]) * int(max(header.get_field("num_class")))
        self._cfg_one = GTILConfig(predict_type="default", nthread=1)
        self._cfg_all = GTILConfig(predict_type="default", nthread=threads if threads > 0 else -1)

    def predict(self, x: np.ndarray, fmt: OutputFormat | None = None) -> np.ndarray:
        """float32 (rows, n_features) -> float32 (rows, n_outputs), or ``output__0`` when given ``fmt``."""
        n = x.shape[0]
        x = np.ascontiguousarray(x, dtype=np.float32)  # no copy for a C-ordered request
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        cfg = self._cfg_all if n >= PARALLEL_MIN_ROWS else self._cfg_one
        if _GTIL_PREDICT(self.model.handle, x.ctypes.data, b"float32", n, out.ctypes.data, cfg.handle) != 0:
            raise RuntimeError(f"Treelite GTIL failed: {_TREELITE_LIB.TreeliteGetLastError().decode()}")
        return out if fmt is None else fmt(out)

    def close(self) -> None:
        pass


class CompiledPredictor:
    """A tl2cgen-compiled library with our batch entry point ``fil_predict`` (NaN: the default branch,
    as GTIL; FIL's output format): one ctypes call per request."""

    def __init__(self, libpath: Path, *, n_features: int, n_outputs: int, threads: int = 1):
        self.libpath = Path(libpath)
        self._lib = ctypes.CDLL(str(self.libpath))
        built_for = (self._lib.fil_num_features(), self._lib.fil_num_outputs())  # ctypes' default restype: int
        if built_for != (n_features, n_outputs):
            raise ModelLoadError(f"{libpath} was built for {built_for[0]} features / {built_for[1]} outputs, "
                                 f"the model has {n_features} / {n_outputs}")
        self._fn = self._lib.fil_predict
        self._fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int,
                             ctypes.c_float]
        self._fn.restype = ctypes.c_int64
        self.n_features, self.n_outputs, self._threads = n_features, n_outputs, threads
        # ctypes drops the GIL during the call, so row blocks of a large batch run on separate cores
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fil-predict") if threads > 1 else None

    def predict(self, x: np.ndarray, fmt: OutputFormat | None = None) -> np.ndarray:
        """As GTILPredictor.predict; the library itself writes the ``fmt`` format."""
        mode, width, threshold = (OutputFormat.RAW, self.n_outputs, 0.0) if fmt is None else (
            fmt.mode, fmt.width, fmt.threshold)
        n = x.shape[0]
        x = np.ascontiguousarray(x, dtype=np.float32)  # no copy for a C-ordered request
        out = np.empty((n, width), dtype=np.float32)

        def rows(a: int, b: int) -> int:
            return self._fn(x[a:b].ctypes.data, int(b - a), self.n_features, out[a:b].ctypes.data, mode, threshold)

        parts = self._threads if n >= PARALLEL_MIN_ROWS and self._pool is not None else 1
        bounds = np.linspace(0, n, parts + 1, dtype=np.int64)
        rc = min(self._pool.map(rows, bounds[:-1], bounds[1:])) if parts > 1 else rows(0, n)
        if rc != 0:
            raise RuntimeError(f"compiled model {self.libpath} rejected the batch (code {rc})")
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


# -- compilation ------------------------------------------------------------------------------
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


def compile_model(model: treelite.Model, model_sha256: str, cache_dir: Path, *, jobs: int = 2,
                  cancel: threading.Event | None = None, log: Callable[[str], None] = lambda msg: None) -> Path:
    """Compile ``model`` with tl2cgen + gcc into ``<cache_dir>/<cache_key>/libforest.so`` (or find it).
    Built in a temporary folder under a lock file and renamed into place: concurrent servers
    compiling the same model wait for one build and never see a half-written library."""
    import tl2cgen

    cache_dir, key = Path(cache_dir), cache_key(model_sha256)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cached := cached_library(cache_dir, model_sha256)) is not None:
            return cached
        if shutil.which("gcc") is None:
            raise CompilerMissing("gcc is not installed: the model is served with Treelite GTIL "
                                  "(install gcc to compile it)")
        with tempfile.TemporaryDirectory(prefix=f"{key}.build-", dir=cache_dir) as tmp:
            build, started = Path(tmp), time.monotonic()
            tl2cgen.generate_c_code(model, build, {**TL2CGEN_PARAMS, "parallel_comp": max(2, jobs)})
            header = (build / "header.h").read_text()
            leaf_t = "float" if "float* result" in header.split("void predict(", 1)[1].split(")", 1)[0] else "double"
            shutil.copy(WRAPPER_SOURCE, build)
            recipe = json.loads((build / "recipe.json").read_text())
            sources = [s["name"] for s in recipe["sources"]] + [WRAPPER_SOURCE.stem]
            # tl2cgen wrote max(2, jobs) translation units: one gcc each, all at once
            _run_all([["gcc", "-c", *CC_FLAGS, f"-DFIL_LEAF_T={leaf_t}", "-o", f"{s}.o", f"{s}.c"] for s in sources],
                     cwd=build, cancel=cancel)
            _run_all([["gcc", "-shared", "-Wl,-Bsymbolic", "-o", LIB_NAME, *(f"{s}.o" for s in sources), "-lm"]],
                     cwd=build, cancel=cancel)
            (cache_dir / key).mkdir(exist_ok=True)
            os.rename(build / LIB_NAME, cache_dir / key / LIB_NAME)
            log(f"compiled {key} in {time.monotonic() - started:.1f} s")
    return cache_dir / key / LIB_NAME


def _run_all(commands: list[list[str]], *, cwd: Path, cancel: threading.Event | None) -> None:
    """Run ``commands`` side by side at low CPU priority (serving requests comes first); kill them on ``cancel``."""
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    procs = [subprocess.Popen(nice + cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for cmd in commands]
    try:
        while any(proc.poll() is None for proc in procs):
            time.sleep(0.02)
            if cancel is not None and cancel.is_set():
                raise CompileCancelled("compilation cancelled (model unloading)")
        for proc in procs:
            if proc.returncode != 0:
                err = proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{' '.join(proc.args)} failed with code {proc.returncode}: {err}")
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()


def self_check(reference: GTILPredictor, candidate: CompiledPredictor, fmt: OutputFormat) -> float:
    """Largest absolute difference between GTIL and a compiled library on 512 rows with every branch kind
    (wide values, small integers as category ids, NaN, +-Inf, 0s, all NaN), raw and in FIL's output format
    (a one-row call included); a library is only used when this is ~0."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((512, reference.n_features)) * 3).astype(np.float32)
    ints = rng.random(x.shape) < 0.3
    x[ints] = rng.integers(-1, 12, size=int(ints.sum()))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    x[0], x[1] = 0.0, np.nan
    raw = reference.predict(x)
    diff = np.max(np.abs(raw.astype(np.float64) - candidate.predict(x)))
    want = fmt(raw).astype(np.float64)
    got = np.vstack([candidate.predict(x[:-1], fmt), candidate.predict(x[-1:], fmt)])
    if fmt.mode == OutputFormat.LABEL:  # labels are exact away from the threshold / a tie
        top = np.sort(raw.astype(np.float64), axis=1)
        margin = np.abs(top[:, 0] - fmt.threshold) if raw.shape[1] == 1 else top[:, -1] - top[:, -2]
        want, got = want[margin > 1e-6], got[margin > 1e-6]
    return float(max(diff, np.max(np.abs(want - got), initial=0.0)))
