"""A Python-based Triton backend named ``fil``: the FIL configuration contract on Treelite.

Triton runs ``<backend-directory>/fil/model.py`` for every model whose config says
``backend: "fil"``, so the same ``config.pbtxt`` and model files serve here and under the
native FIL backend of the NGC image (DESIGN §2, §5).

Contract implemented:
* ``model_type``: ``treelite_checkpoint``, ``xgboost_json``, ``xgboost_ubj``, ``xgboost``
  (legacy binary), ``lightgbm``; the file is ``<version>/<FIL default name>`` or the
  config's ``default_model_filename``.
* ``input__0`` FP32 ``[n_features]`` -> ``output__0`` FP32: ``predict_proba`` true gives one
  probability per class (``[1-p, p]`` for a binary model); false with ``output_class``
  (or ``is_classifier``) gives the class label (``p > threshold``); false without it gives
  the model's score.
* Dynamic batching: all requests of one ``execute`` call are validated one by one,
  the valid ones concatenated, predicted once and split again. A bad request gets its own
  error response; the others in the batch are answered normally.
* Non-finite inputs (NaN, +-Inf) are rejected with an error naming the request row and
  feature. Native FIL would treat NaN as "missing" and follow each split's default branch;
  our feature pipeline never produces NaN, so a NaN here is a client bug worth reporting.

Speed: the model is served with Treelite GTIL (called through its C API) as soon as it is
loaded. Unless ``FIL_COMPILE=0``, a background thread compiles it with tl2cgen + gcc into
``FIL_CACHE_DIR`` (keyed by the model file's sha256), checks the library against GTIL, and
swaps it in; the next load of the same file finds it in the cache and starts compiled.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fil_forest as ff  # noqa: E402  (lives next to this file)

INPUT_NAME = "input__0"
OUTPUT_NAME = "output__0"
CLASSIFIER_KEYS = ("output_class", "is_classifier")
SELF_CHECK_ATOL = 1e-5


def _log(level: str, msg: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}")(f"[fil] {msg}")
    else:
        print(f"[fil] {level}: {msg}", file=sys.stderr, flush=True)


def _param(params: dict, key: str, default: str | None = None) -> str | None:
    value = params.get(key)
    if value is None:
        return default
    return str(value.get("string_value", default)).strip()


def _flag(params: dict, key: str, default: bool) -> bool:
    value = _param(params, key)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ff.ModelLoadError(f'parameter {key} must be "true" or "false", got {value!r}')


class TritonPythonModel:
    def initialize(self, args):
        started = time.monotonic()
        config = json.loads(args["model_config"])
        self.model_name = config.get("name", args.get("model_name", "?"))
        self.tag = f"{self.model_name}/{args['model_version']}"  # how log lines name this model version
        params = config.get("parameters", {}) or {}
        model_type = _param(params, "model_type")
        if model_type is None:
            raise ff.ModelLoadError('parameter "model_type" is missing from config.pbtxt')
        if model_type not in ff.FIL_MODEL_FILENAMES:
            raise ff.ModelLoadError(f"model_type {model_type!r} is not a FIL model_type; use one of {sorted(ff.FIL_MODEL_FILENAMES)}")
        classifier_key = next((k for k in CLASSIFIER_KEYS if k in params), "output_class")
        output_class = _flag(params, classifier_key, False)
        predict_proba = _flag(params, "predict_proba", False)
        threshold_text = _param(params, "threshold", "0.5")
        try:
            threshold = float(threshold_text)
        except ValueError:
            raise ff.ModelLoadError(f"parameter threshold must be a number, got {threshold_text!r}") from None

        filename = config.get("default_model_filename") or ff.FIL_MODEL_FILENAMES[model_type]
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.model_path = version_dir / filename
        model = ff.load_model(
            self.model_path, model_type, xgboost_allow_unknown_field=_flag(params, "xgboost_allow_unknown_field", False)
        )

        self.max_batch_size = int(config.get("max_batch_size", 0))
        if self.max_batch_size < 1:
            raise ff.ModelLoadError("max_batch_size must be >= 1: FIL models take a batch dimension")
        inputs = {t["name"]: t for t in config.get("input", [])}
        outputs = {t["name"]: t for t in config.get("output", [])}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ff.ModelLoadError(f"config.pbtxt must declare input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
        for tensor in (inputs[INPUT_NAME], outputs[OUTPUT_NAME]):
            if tensor.get("data_type") != "TYPE_FP32":
                raise ff.ModelLoadError(f"{tensor['name']} must be TYPE_FP32, config says {tensor.get('data_type')}")
        in_dims = [int(d) for d in inputs[INPUT_NAME].get("dims", [])]
        self.n_features = model.num_feature
        if in_dims != [self.n_features]:
            raise ff.ModelLoadError(f"{INPUT_NAME} dims are {in_dims} in config.pbtxt but {self.model_path.name} has {self.n_features} features")

        if int(model.get_header_accessor().get_field("num_target")[0]) != 1:
            raise ff.ModelLoadError(f"{self.model_path.name} is a multi-target model; FIL serves single-target models")
        self.gtil = ff.GTILPredictor(model, threads=os.cpu_count() or 1)
        self.format = ff.OutputFormat(
            n_model_outputs=self.gtil.n_outputs,
            predict_proba=predict_proba,
            output_class=output_class,
            threshold=threshold,
        )
        # A truncated or damaged checkpoint can parse and still fail on every row: predict a
        # few rows now, so that such a version is refused at load and the old one keeps serving.
        probe = np.linspace(-3.0, 3.0, 4 * self.n_features, dtype=np.float32).reshape(4, self.n_features)
        try:
            probe_out = self.format(self.gtil.predict(probe))
        except Exception as e:
            raise ff.ModelLoadError(f"{self.model_path.name} loads but cannot predict ({e}): the file is damaged") from None
        if not np.all(np.isfinite(probe_out)):
            raise ff.ModelLoadError(f"{self.model_path.name} predicts non-finite values: the file is damaged")
        out_dims = [int(d) for d in outputs[OUTPUT_NAME].get("dims", [])]
        if out_dims != [self.format.width]:
            raise ff.ModelLoadError(
                f"{OUTPUT_NAME} dims are {out_dims} in config.pbtxt but this model with "
                f"predict_proba={str(predict_proba).lower()} produces [{self.format.width}]"
            )

        self._predictor = self.gtil
        self._cancel = threading.Event()
        self._compiler: threading.Thread | None = None
        self.compiled = None
        cache_dir = Path(os.environ.get("FIL_CACHE_DIR") or Path(tempfile.gettempdir()) / f"fil-cache-{os.getuid()}")
        compile_enabled = os.environ.get("FIL_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")
        how = "GTIL"
        if compile_enabled:
            sha = ff.file_sha256(self.model_path)
            cached = ff.cached_library(cache_dir, sha)
            if cached is not None and self._try_swap(cached):
                how = f"compiled library from cache {cached}"
            else:
                how = "GTIL while compiling in the background"
                self._compiler = threading.Thread(
                    target=self._compile, args=(model, sha, cache_dir), name="fil-compile", daemon=True
                )
                self._compiler.start()
        _log(
            "info",
            f"{self.tag}: {model_type} {self.model_path.name}, "
            f"{model.num_tree} trees, {self.n_features} features, serving with {how} "
            f"(loaded in {time.monotonic() - started:.2f} s)",
        )

    # -- compiled model -------------------------------------------------------------------
    def _try_swap(self, libpath: Path) -> bool:
        try:
            compiled = ff.CompiledPredictor(
                libpath, n_features=self.n_features, n_outputs=self.gtil.n_outputs, threads=os.cpu_count() or 1
            )
            diff = ff.self_check(self.gtil, compiled, self.n_features, self.format)
        except Exception as e:  # a broken cache entry must not stop serving
            _log("warn", f"{self.tag}: cannot use compiled library {libpath}: {e}; staying on GTIL")
            return False
        if not diff <= SELF_CHECK_ATOL:
            _log("warn", f"{self.tag}: compiled library {libpath} differs from GTIL by {diff:.3g}; staying on GTIL")
            return False
        self.compiled = compiled
        self._predictor = compiled  # one attribute store: the next execute() uses it
        return True

    def _compile(self, model, sha: str, cache_dir: Path) -> None:
        try:
            libpath = ff.compile_model(
                model, sha, cache_dir, jobs=os.cpu_count() or 1, cancel=self._cancel, log=lambda m: _log("info", m)
            )
            if not self._cancel.is_set() and self._try_swap(libpath):
                _log("info", f"{self.tag}: now serving with compiled library {libpath}")
        except ff.CompileCancelled:
            pass
        except ff.CompilerMissing as e:
            _log("warn", f"{self.tag}: {e}; staying on GTIL")
        except Exception:
            _log("warn", f"{self.tag}: compiling the model failed; staying on GTIL:\n{traceback.format_exc()}")

    # -- serving --------------------------------------------------------------------------
    def _shape_problem(self, x) -> str | None:
        """Why this request's input tensor cannot be served (dtype, shape, size), or None.
        Triton checks the same against config.pbtxt before we see a request; kept as a guard."""
        if x.dtype != np.float32:
            return f"{INPUT_NAME} must be FP32, got {x.dtype}"
        if x.ndim != 2 or x.shape[1] != self.n_features:
            return f"{INPUT_NAME} must have shape [rows, {self.n_features}], got {list(x.shape)}"
        if x.shape[0] > self.max_batch_size:
            return f"{INPUT_NAME} has {x.shape[0]} rows, more than max_batch_size {self.max_batch_size}"
        return None

    def _finite_problem(self, x) -> str | None:
        """A message naming the first row and feature holding NaN/Inf, or None."""
        bad = ~np.isfinite(x)
        if not bad.any():
            return None
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        col = int(np.flatnonzero(bad[row])[0])
        what = "NaN" if np.isnan(x[row, col]) else f"{x[row, col]}"
        return (
            f"{INPUT_NAME} row {row} feature {col} is {what} ({int(bad.sum())} non-finite value(s) "
            f"in this request); the model takes {self.n_features} finite FP32 features per row"
        )

    @staticmethod
    def _error(message: str, invalid_input: bool = True):
        # INVALID_ARG -> HTTP 400 / gRPC INVALID_ARGUMENT, like Triton's own shape/dtype checks
        code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid_input else "INTERNAL", None)
        error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
        return pb_utils.InferenceResponse(error=error)

    def execute(self, requests):
        predictor = self._predictor  # one predictor per call, even if a swap happens meanwhile
        if len(requests) == 1:  # the common case under sequential load: no concatenation
            x = pb_utils.get_input_tensor_by_name(requests[0], INPUT_NAME).as_numpy()
            problem = self._shape_problem(x)
            if problem is None and not predictor.checks_finite:
                problem = self._finite_problem(x)
            if problem is not None:
                return [self._error(problem)]
            try:
                y = predictor.predict_formatted(x, self.format) if predictor.formats else self.format(predictor.predict(x))
            except ff.NonFiniteInput:
                return [self._error(self._finite_problem(x) or "input holds a non-finite value")]
            except Exception as e:
                return [self._error(f"prediction failed: {e}", invalid_input=False)]
            return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, y)])]

        xs = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        problems = [self._shape_problem(x) for x in xs]
        if not predictor.checks_finite:
            problems = [p or self._finite_problem(x) for p, x in zip(problems, xs, strict=True)]
        try:
            outputs = self._predict_many(predictor, xs, problems)
        except ff.NonFiniteInput:  # find the bad request(s) and answer the others
            problems = [p or self._finite_problem(x) for p, x in zip(problems, xs, strict=True)]
            try:
                outputs = self._predict_many(predictor, xs, problems)
            except Exception as e:
                outputs = [None] * len(xs)
                problems = [p or f"prediction failed: {e}" for p in problems]
        except Exception as e:
            outputs = [None] * len(xs)
            problems = [p or f"prediction failed: {e}" for p in problems]
        return [
            self._error(p, invalid_input=not p.startswith("prediction failed")) if p is not None else pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, y)])
            for p, y in zip(problems, outputs, strict=True)
        ]

    def _predict_many(self, predictor, xs, problems):
        """Concatenate the valid requests, predict once, split; None for the invalid ones."""
        valid = [x for x, p in zip(xs, problems, strict=True) if p is None]
        outputs = [None] * len(xs)
        if not valid:
            return outputs
        batch = np.concatenate(valid) if len(valid) > 1 else valid[0]
        y = predictor.predict_formatted(batch, self.format) if predictor.formats else self.format(predictor.predict(batch))
        start = 0
        for i, (x, p) in enumerate(zip(xs, problems, strict=True)):
            if p is None:
                outputs[i] = y[start : start + x.shape[0]]
                start += x.shape[0]
        return outputs

    def finalize(self):
        self._cancel.set()
        if self._compiler is not None:
            self._compiler.join(timeout=10)
        if self.compiled is not None:
            self.compiled.close()
