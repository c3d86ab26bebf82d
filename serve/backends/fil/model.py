"""A Python-based Triton backend named ``fil``: native FIL's contract on Treelite.

Triton runs ``<backend-directory>/fil/model.py`` for every ``backend: "fil"`` model, so one config.pbtxt
and model file serve here as under native FIL on CPU in the pinned NGC image (DESIGN §2, §5;
docs/fil_contract.md lists the rules, the configs refused at load and the remaining differences).
Serves with Treelite GTIL at once, then with a tl2cgen-compiled library once a background thread has
built and self-checked it (gauge ``fil_compiled``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fil_config as fc  # noqa: E402  (lives next to this file)
import fil_forest as ff  # noqa: E402

INPUT_NAME, OUTPUT_NAME = "input__0", "output__0"
SELF_CHECK_ATOL = 1e-5
COMPILED_METRIC = "fil_compiled"  # the native backend publishes the same gauge (backend.cc)
COMPILED_HELP = ("What the fil backend serves a model version with: 1 the compiled library, 0 Treelite GTIL "
                 "(compiling, or compilation off), -1 GTIL for good (compilation failed or was refused)")


def _log(level: str, msg: str) -> None:
    getattr(pb_utils.Logger, f"log_{level}")(f"[fil] {msg}")


def _response_dims(config: dict, n_features: int, fmt: ff.OutputFormat, params: fc.FilParameters,
                   file: str) -> tuple[int, ...]:
    """Refuse tensors native FIL cannot serve for this model (docs/fil_contract.md, remaining
    differences 1); return the answers' per-row shape."""
    if int(config.get("max_batch_size", 0)) < 1:
        raise ff.ModelLoadError("max_batch_size must be >= 1: FIL models take a batch dimension")
    inputs = {t["name"]: t for t in config.get("input", [])}
    outputs = {t["name"]: t for t in config.get("output", [])}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ff.ModelLoadError(f"config.pbtxt must declare input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
    for tensor in (inputs[INPUT_NAME], outputs[OUTPUT_NAME]):
        if tensor.get("data_type") != "TYPE_FP32":
            raise ff.ModelLoadError(f"{tensor['name']} must be TYPE_FP32, config says {tensor.get('data_type')}")
    in_dims = [int(d) for d in inputs[INPUT_NAME].get("dims", [])]
    if in_dims != [n_features]:
        # native FIL would read rows of the model's width out of a narrower/wider buffer
        raise ff.ModelLoadError(f"{INPUT_NAME} dims are {in_dims} in config.pbtxt but {file} has {n_features} features")
    out_dims = [int(d) for d in outputs[OUTPUT_NAME].get("dims", [])]
    if np.prod(out_dims) != fmt.width:
        raise ff.ModelLoadError(
            f"{OUTPUT_NAME} dims are {out_dims} in config.pbtxt but this model writes {fmt.width} values per row "
            f"(predict_proba={str(params.predict_proba).lower()}, "
            f"{fc.classifier_key()}={str(params.output_class).lower()}, {fmt.n_model_outputs} model output(s)); "
            f"declare dims: [ {fmt.width} ] (native FIL would answer wrong values or overrun its buffer)")
    return fc.response_dims(outputs[OUTPUT_NAME])


class TritonPythonModel:
    def initialize(self, args):
        started = time.monotonic()
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.tag = f"{self.model_name}/{args['model_version']}"  # how log lines name this model version
        try:
            params = fc.read_parameters(config.get("parameters", {}))
        except fc.ConfigError as e:
            raise ff.ModelLoadError(f"config.pbtxt: {e}") from None
        # rapids-triton model_instance_state.hpp: <model dir>/<version>/<default_model_filename>;
        # fil_backend src/model.h model_file() adds FIL's default name when that is a directory
        path = Path(args["model_repository"], str(args["model_version"]), config.get("default_model_filename") or "")
        self.model_path = path / ff.FIL_MODEL_FILENAMES[params.model_type] if path.is_dir() else path
        model = ff.load_model(self.model_path, params.model_type,
                              xgboost_allow_unknown_field=params.xgboost_allow_unknown_field)
        if int(model.get_header_accessor().get_field("num_target")[0]) != 1:
            # src/tl_utils.h tl_get_num_classes(): "Multi-target model not supported"
            raise ff.ModelLoadError(f"{self.model_path.name} is a multi-target model; FIL serves single-target models")
        postprocessor = ff.apply_native_postprocessor(model, predict_proba=params.predict_proba)
        self._threads = params.cpu_nthread if params.cpu_nthread > 0 else (os.cpu_count() or 1)  # src/shared_state.h
        self.gtil = ff.GTILPredictor(model, threads=self._threads)
        self.n_features, k = self.gtil.n_features, self.gtil.n_outputs
        gpu = str(args.get("model_instance_kind", "CPU")).upper() == "GPU"
        if params.output_class and not params.predict_proba and k > 1 and not (gpu or fc.cpu_label_argmax()):
            raise ff.ModelLoadError(
                f"{self.model_path.name} has {k} class outputs, so a label output (output_class true, "
                f"predict_proba false) makes native FIL {fc.NATIVE_RELEASE} on CPU ask Treelite for a "
                "'max_index' post-processor it does not have, and every request fails (fil_backend "
                "src/tl_model.h; fixed in 25.09). On GPU it is the arg-max, threshold ignored. "
                "Serve predict_proba true and take the arg-max or apply the threshold in the client.")
        self.format = ff.OutputFormat(n_model_outputs=k, predict_proba=params.predict_proba,
                                      output_class=params.output_class, threshold=params.threshold)
        self.response_dims = _response_dims(config, self.n_features, self.format, params, self.model_path.name)

        # A truncated or damaged checkpoint can parse and still fail on every row: predict a
        # few rows now, so that such a version is refused at load and the old one keeps serving.
        probe = np.linspace(-3.0, 3.0, 4 * self.n_features, dtype=np.float32).reshape(4, self.n_features)
        try:
            probe_out = self.gtil.predict(probe, self.format)
        except Exception as e:
            raise ff.ModelLoadError(f"{self.model_path.name} loads but cannot predict ({e}): "
                                    "the file is damaged") from None
        if not np.all(np.isfinite(probe_out)):
            raise ff.ModelLoadError(f"{self.model_path.name} predicts non-finite values: the file is damaged")

        self._predictor, self._cancel, self._compiler = self.gtil, threading.Event(), None
        cache_dir = Path(os.environ.get("FIL_CACHE_DIR") or Path(tempfile.gettempdir()) / f"fil-cache-{os.getuid()}")
        self._compiled_family, self._compiled_gauge = self._new_gauge(args)  # 0 until set
        how = "GTIL"
        if os.environ.get("FIL_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off"):
            key = ff.library_key(self.model_path, postprocessor)
            if (cached := ff.cached_library(cache_dir, key)) is not None and self._try_swap(cached):
                how = f"compiled library from cache {cached}"
                self._publish(1)
            else:
                how = "GTIL while compiling in the background"
                self._compiler = threading.Thread(target=self._compile, args=(model, key, cache_dir),
                                                  name="fil-compile", daemon=True)
                self._compiler.start()
        _log("info", f"{self.tag}: {params.model_type} {self.model_path.name}, {model.num_tree} trees, "
                     f"{self.n_features} features, {k} output(s), serving with {how} "
                     f"(loaded in {time.monotonic() - started:.2f} s)")

    # -- compiled model -------------------------------------------------------------------
    def _new_gauge(self, args):
        """This stub's fil_compiled series; a ``pid`` label, since Triton counts references per family
        object and each stub has its own (a reload of a version runs beside the old stub)."""
        try:
            gauge = pb_utils.MetricFamily.GAUGE
            family = pb_utils.MetricFamily(name=COMPILED_METRIC, description=COMPILED_HELP, kind=gauge)
            labels = {"model": self.model_name, "version": str(args["model_version"]), "pid": str(os.getpid())}
            return family, family.Metric(labels=labels)
        except Exception as e:  # metrics report; they never fail a load
            _log("warn", f"{self.tag}: no {COMPILED_METRIC} metric: {e}")
            return None, None

    def _publish(self, value: int) -> None:
        if self._compiled_gauge is not None:
            self._compiled_gauge.set(value)

    def _try_swap(self, libpath: Path) -> bool:
        try:
            compiled = ff.CompiledPredictor(libpath, n_features=self.n_features, n_outputs=self.gtil.n_outputs,
                                            threads=self._threads)
            if not (diff := ff.self_check(self.gtil, compiled, self.format)) <= SELF_CHECK_ATOL:
                raise ValueError(f"it differs from GTIL by {diff:.3g}")
        except Exception as e:  # a broken cache entry must not stop serving
            _log("warn", f"{self.tag}: cannot use compiled library {libpath}: {e}; staying on GTIL")
            return False
        self._predictor = compiled  # one attribute store: the next execute() uses it
        return True

    def _compile(self, model, key: str, cache_dir: Path) -> None:
        try:
            libpath = ff.compile_model(model, key, cache_dir, jobs=os.cpu_count() or 1, cancel=self._cancel,
                                       log=lambda m: _log("info", m))
            if self._cancel.is_set():
                return
            swapped = self._try_swap(libpath)  # logs why not
        except ff.CompileCancelled:
            return
        except Exception as e:  # no gcc, or a failed build: the message says which
            _log("warn", f"{self.tag}: compiling the model failed ({e}); staying on GTIL")
            swapped = False
        if swapped:
            _log("info", f"{self.tag}: now serving with compiled library {libpath}")
        self._publish(1 if swapped else -1)

    # -- serving --------------------------------------------------------------------------
    def execute(self, requests):
        """Predict a dynamic batch's requests at once; Triton has checked their dtype and shape."""
        predictor = self._predictor  # one predictor per call, even if a swap happens meanwhile
        xs = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        try:
            y = predictor.predict(xs[0] if len(xs) == 1 else np.concatenate(xs), self.format)
        except Exception as e:
            error = pb_utils.TritonError(f"prediction failed: {e}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        parts = np.split(y, np.cumsum([len(x) for x in xs[:-1]]))
        tensors = [pb_utils.Tensor(OUTPUT_NAME, part.reshape(len(part), *self.response_dims)) for part in parts]
        return [pb_utils.InferenceResponse(output_tensors=[tensor]) for tensor in tensors]

    def finalize(self):
        self._cancel.set()
        if self._compiler is not None:
            self._compiler.join(timeout=10)
        self._predictor.close()
        # the family deletes its series; a stub that exits without this leaves it on /metrics
        self._compiled_gauge = self._compiled_family = None
