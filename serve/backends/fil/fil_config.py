"""How native FIL reads ``config.pbtxt`` and shapes its answer (``fil_forest.py``: the prediction half).

Each rule names the source it mirrors in release ``NATIVE_RELEASE``: ``triton-inference-server/fil_backend``
branch ``r<release>`` and the ``rapidsai/rapids-triton`` branch it builds with (``branch-25.06`` for r25.08).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The native FIL release this backend behaves like; tests/unit/test_tritonconfig.py fails when the
# NGC pin moves, until the rules below (switches: classifier_key(), cpu_label_argmax()) are re-read.
NATIVE_RELEASE = "25.08"

# src/serialization.h, string_to_serialization(): the accepted model_type values.
MODEL_TYPES = ("xgboost", "xgboost_json", "xgboost_ubj", "lightgbm", "treelite_checkpoint")


class ConfigError(ValueError):
    """config.pbtxt is one native FIL refuses; the message carries native FIL's own words."""


def _at_least(release: str) -> bool:
    return tuple(int(p) for p in NATIVE_RELEASE.split(".")) >= tuple(int(p) for p in release.split("."))


def classifier_key() -> str:
    """The classifier flag's key: ``output_class`` in src/shared_state.h r25.08 (``is_classifier`` is
    unknown there); ``is_classifier`` from r25.09, where a literal ``output_class`` still wins."""
    return "is_classifier" if _at_least("25.09") else "output_class"


def cpu_label_argmax() -> bool:
    """Whether native FIL on CPU answers a label for a model with several class outputs: src/tl_model.h
    r25.08 asks Treelite 4.4.1 for a ``max_index`` post-processor it lacks, so every CPU request fails;
    r25.09 (commit 7d3497b "Fix CPU test") computes the arg-max itself."""
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


_MISSING = object()


def _get(text: Mapping[str, str], name: str, kind: type, default: Any = _MISSING) -> Any:
    """rapids-triton model/shared_state.hpp get_config_param(): a missing key takes the default, else
    "Required parameter"; a bool is exactly "true" or "false" (default or not); a number is read with
    ``std::istringstream >>``, and a failed read takes the default, else "Bad input for parameter"."""
    raw = text.get(name)
    if kind is bool and raw not in (None, "true", "false"):
        raise ConfigError(f"Expected 'true' or 'false' for parameter '{name}', got: '{raw}'")
    value = None if raw is None else raw == "true" if kind is bool else _istream_number(raw, kind)
    if value is None and default is _MISSING:
        raise ConfigError(f"Required parameter {name} not found in config" if raw is None
                          else f"Bad input for parameter {name} (got {raw!r})")
    return default if value is None else value


_NUMBER = {float: re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d*)?"), int: re.compile(r"\s*[+-]?\d+")}
_FLT_MAX = 3.4028234663852886e38


def _istream_number(text: str, kind: type) -> float | int | None:
    """What ``std::istringstream(text) >> value`` reads, or None where it fails ("nan", "1e", overflow)."""
    match = _NUMBER[kind].match(text)
    if match is None or match.group().endswith(("e", "E", "+", "-")):  # an exponent without digits
        return None
    value = kind(match.group())
    if kind is int:
        return value if -(2**31) <= value < 2**31 else None
    return struct.unpack("f", struct.pack("f", value))[0] if abs(value) <= _FLT_MAX else None  # a C++ float


def read_parameters(parameters: Mapping[str, Any]) -> FilParameters:
    """config.pbtxt's ``parameters`` read in the order and with the defaults of src/shared_state.h
    ``RapidsSharedState::load()`` (ConfigError: native FIL's message). Unread keys are ignored; GPU-only
    keys (``algo``, ``storage_type``, ...) never fail a load there (defaults absorb bad values): not read."""
    text = {name: str(entry.get("string_value", "")) for name, entry in parameters.items()}  # Triton's JSON form
    predict_proba = _get(text, "predict_proba", bool, False)
    # `istream >> std::string` reads one word; default and types: src/serialization.h string_to_serialization()
    model_type = (text.get("model_type", "").split() or ["xgboost"])[0]
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{model_type} not recognized as a valid serialization format. "
                          f"(model_type must be one of {', '.join(MODEL_TYPES)})")
    xgboost_allow_unknown_field = _get(text, "xgboost_allow_unknown_field", bool, False)
    if _at_least("25.09"):
        deprecated = text.get("output_class")
        output_class = deprecated == "true" if deprecated in ("true", "false") else _get(text, "is_classifier", bool)
    elif "output_class" not in text and "is_classifier" in text:
        raise ConfigError(f"Required parameter output_class not found in config (is_classifier is read from "
                          f"FIL 25.09 on; {NATIVE_RELEASE} reads output_class)")
    else:
        output_class = _get(text, "output_class", bool)
    # threshold is required only for a classifier; otherwise native FIL sets 0.5 unread
    threshold = _get(text, "threshold", float) if output_class else 0.5
    cpu_nthread = _get(text, "cpu_nthread", int, -1)
    # read so that a bad bool fails as there; the local backend always serves Treelite's semantics
    _get(text, "use_experimental_optimizations", bool, False)
    return FilParameters(model_type, predict_proba, output_class, threshold, xgboost_allow_unknown_field, cpu_nthread)


def response_dims(output: Mapping[str, Any]) -> tuple[int, ...]:
    """Native FIL's per-row answer shape for an output: src/shared_state.h sets rapids-triton's
    ``squeeze_output``, which erases every 1 of ``reshape.shape`` or ``dims`` (``[ 1 ]`` answers ``[N]``)."""
    dims = output["reshape"].get("shape", []) if "reshape" in output else output.get("dims", [])
    return tuple(int(d) for d in dims if int(d) != 1)
