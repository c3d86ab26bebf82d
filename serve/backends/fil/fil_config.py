"""How native FIL reads ``config.pbtxt`` and shapes its answer: the configuration half of the
contract the local ``fil`` backend follows (``fil_forest.py`` has the prediction half).

Every rule names the source of the native FIL backend it mirrors, in the release pinned by
``NGC_TAG`` in ``docker/.env`` (``NATIVE_RELEASE``): ``triton-inference-server/fil_backend`` branch
``r<release>`` and the ``rapidsai/rapids-triton`` branch it builds with (``branch-25.06``
for r25.08, per its CMakeLists.txt). docs/fil_contract.md lists the rules and the remaining
differences. Pure Python, no Triton or Treelite import: model.py uses it, tests import it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The native FIL release this backend behaves like. tests/unit/test_tritonconfig.py checks
# it equals NGC_TAG in docker/.env, so moving the pin makes that test fail until the rules below
# were re-read for the new release. The switches that depend on it: classifier_key() and
# cpu_label_argmax().
NATIVE_RELEASE = "25.08"

# src/serialization.h, string_to_serialization(): the accepted model_type values.
MODEL_TYPES = ("xgboost", "xgboost_json", "xgboost_ubj", "lightgbm", "treelite_checkpoint")


class ConfigError(ValueError):
    """config.pbtxt is one native FIL refuses; the message carries native FIL's own words."""


def _at_least(release: str) -> bool:
    return tuple(int(p) for p in NATIVE_RELEASE.split(".")) >= tuple(int(p) for p in release.split("."))


def classifier_key() -> str:
    """The parameter saying "this model is a classifier".

    src/shared_state.h r25.08: ``get_config_param<bool>("output_class")``; ``is_classifier``
    is not read at all (an unknown key, ignored). From r25.09 (same file) the key is
    ``is_classifier``, and a literal ``output_class`` "true"/"false" still wins, with a warning.
    """
    return "is_classifier" if _at_least("25.09") else "output_class"


def cpu_label_argmax() -> bool:
    """Whether native FIL on CPU answers a class label for a model with more than one class
    output (sklearn forests: num_class 2; any multi-class model).

    src/tl_model.h r25.08: with ``output_class`` true and ``predict_proba`` false such a model
    gets Treelite's ``max_index`` post-processor, which Treelite 4.4.1's GTIL does not have
    (``Post-processor named 'max_index' not found``): every CPU request fails. r25.09
    (commit 7d3497b "Fix CPU test", same file) computes the arg-max itself instead.
    """
    return _at_least("25.09")


@dataclass(frozen=True)
class FilParameters:
    """The parameters native FIL reads, parsed as it parses them."""

    model_type: str
    predict_proba: bool
    output_class: bool  # FIL's classifier flag, read from classifier_key()
    threshold: float  # a float32 value; 0.5 when output_class is false (not read then)
    xgboost_allow_unknown_field: bool
    cpu_nthread: int  # <= 0: every core
    use_experimental_optimizations: bool


_MISSING = object()


class _Reader:
    """rapids-triton cpp/include/rapids_triton/model/shared_state.hpp, get_config_param():
    a missing key takes the default or, without one, fails with "Required parameter";
    a bool must be exactly "true" or "false" (even when it has a default); a number or
    string is read with ``std::istringstream >>`` and a failed read takes the default or,
    without one, fails with "Bad input for parameter"."""

    def __init__(self, parameters: Mapping[str, Any]):
        self._parameters = parameters or {}

    def _text(self, name: str) -> str | None:
        entry = self._parameters.get(name)
        if entry is None:
            return None
        return str(entry.get("string_value", "")) if isinstance(entry, Mapping) else str(entry)

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        text = self._text(name)
        if text is None:
            return self._default(name, default)
        if text in ("true", "false"):
            return text == "true"
        raise ConfigError(f"Expected 'true' or 'false' for parameter '{name}', got: '{text}'")

    def token(self, name: str, default: str) -> str:
        text = self._text(name)
        words = text.split() if text is not None else []
        return words[0] if words else default  # `istream >> std::string`: one word

    def number(self, name: str, kind: type, default: Any = _MISSING) -> Any:
        text = self._text(name)
        if text is None:
            return self._default(name, default)
        value = _istream_number(text, kind)
        if value is None and default is _MISSING:
            raise ConfigError(f"Bad input for parameter {name} (got {text!r})")
        return default if value is None else value

    @staticmethod
    def _default(name: str, default: Any) -> Any:
        if default is _MISSING:
            raise ConfigError(f"Required parameter {name} not found in config")
        return default


_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d*)?")
_INT = re.compile(r"\s*([+-]?\d+)")
_FLT_MAX = 3.4028234663852886e38


def _istream_number(text: str, kind: type) -> float | int | None:
    """What ``std::istringstream(text) >> value`` reads (a leading number; trailing text is
    left unread), or None where the stream fails (no number, "nan"/"inf", overflow)."""
    if kind is float:
        match = _FLOAT.match(text)
        if match is None or (match.group(2) is not None and not match.group(2).lstrip("eE+-")):
            return None
        value = float(match.group(1) + (match.group(2) or ""))
        if abs(value) > _FLT_MAX:
            return None
        return struct.unpack("f", struct.pack("f", value))[0]  # a C++ float
    match = _INT.match(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if -(2**31) <= value < 2**31 else None


def read_parameters(parameters: Mapping[str, Any]) -> FilParameters:
    """Parse config.pbtxt's ``parameters`` (Triton's JSON form: key -> {"string_value": ...})
    in the order and with the defaults of src/shared_state.h ``RapidsSharedState::load()``.

    Keys native FIL does not read are ignored, as there. The GPU-only keys (``algo``,
    ``storage_type``, ``blocks_per_sm``, ``threads_per_tree``, ``transfer_threshold``) are
    read with defaults that absorb any bad value, so they can never fail a load.

    Raises:
        ConfigError: where native FIL's load fails, with its message.
    """
    read = _Reader(parameters)
    predict_proba = read.boolean("predict_proba", False)
    # src/serialization.h string_to_serialization(); the default is "xgboost"
    model_type = read.token("model_type", "xgboost")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{model_type} not recognized as a valid serialization format. "
                          f"(model_type must be one of {', '.join(MODEL_TYPES)})")
    xgboost_allow_unknown_field = read.boolean("xgboost_allow_unknown_field", False)
    if _at_least("25.09"):
        deprecated = read._text("output_class")
        output_class = deprecated == "true" if deprecated in ("true", "false") else read.boolean("is_classifier")
    else:
        try:
            output_class = read.boolean("output_class")
        except ConfigError as e:
            if read._text("output_class") is None and read._text("is_classifier") is not None:
                raise ConfigError(f"{e} (is_classifier is read from FIL 25.09 on; {NATIVE_RELEASE} reads output_class)") from None
            raise
    # threshold is required only for a classifier; otherwise native FIL sets 0.5 unread
    threshold = read.number("threshold", float) if output_class else 0.5
    cpu_nthread = read.number("cpu_nthread", int, -1)
    use_experimental_optimizations = read.boolean("use_experimental_optimizations", False)
    return FilParameters(model_type, predict_proba, output_class, threshold, xgboost_allow_unknown_field,
                         cpu_nthread, use_experimental_optimizations)


def response_dims(output: Mapping[str, Any]) -> tuple[int, ...]:
    """The per-row shape native FIL answers for one output entry of the config.

    fil_backend src/shared_state.h constructs rapids-triton's SharedModelState with
    ``squeeze_output`` true; rapids-triton shared_state.hpp then takes ``reshape.shape``
    (or ``dims``) and erases every 1: ``dims: [ 1 ]`` answers shape ``[N]``, ``dims: [ 2 ]``
    answers ``[N, 2]``.
    """
    dims = output["reshape"].get("shape", []) if "reshape" in output else output.get("dims", [])
    return tuple(int(d) for d in dims if int(d) != 1)
