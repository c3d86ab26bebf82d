"""Hypothesis-generated request bodies for Triton JSON, Triton binary and the FastAPI baseline; the
property each must keep: docs/security.md (fuzz). Deterministic (``derandomize``), no example database,
shrinking on: a failure is reported as the smallest body that breaks the property.
A dropped connection is tolerated only for HTTP JSON with a declared shape beyond memory or
int64 (R8: 2.51 aborts), when the supervisor has Triton ready again; it is counted."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import triton_to_np_dtype

from tests.reliability import wire
from tests.reliability.rig import FUZZ_EXAMPLES, MAX_BATCH, N_FEATURES, assert_recovered_from_crash

pytestmark = pytest.mark.quick

VALID, INVALID, EITHER = "valid", "invalid", "either"
FUZZ = settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=list(HealthCheck))

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=32)
weird = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf")]), st.integers(-2**63, 2**64),
                  st.text(max_size=4), st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2),
                  st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def weird_values(size: int) -> st.SearchStrategy[list]:
    """``size`` values, one at least not what a JSON-number parser takes as finite (NaN/Inf, strings, bools...)."""
    return st.lists(st.one_of(finite, weird), min_size=size, max_size=size).filter(lambda vs: any(
        isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v))
        for v in vs))


def declares_oversized(shape: object) -> bool:
    """A shape whose FP32 size is beyond any memory or int64: what 2.51's HTTP JSON front end
    aborts on (the fuzz category tolerates that crash, and only that one)."""
    return (isinstance(shape, list | tuple) and bool(shape) and all(type(d) is int for d in shape)
            and (any(d >= 2**63 for d in shape) or (all(d > 0 for d in shape) and math.prod(shape) * 4 >= 2**38)))


@st.composite
def mutated(draw, doc: dict, expected: str) -> tuple[bytes, str]:
    """``doc`` as JSON, maybe mutated byte-wise, and what it now expects (EITHER once mutated:
    a mutation may leave valid JSON)."""
    text = json.dumps(doc, allow_nan=True).encode()
    kind = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "insert", "prefix"]))
    at = draw(st.integers(0, len(text) - 1))
    return {
        "none": lambda: (text, expected),
        "truncate": lambda: (text[:at], EITHER),
        "flip": lambda: (text[:at] + bytes([draw(st.integers(0, 255))]) + text[at + 1:], EITHER),
        "insert": lambda: (text[:at] + draw(st.sampled_from([b"{", b"]", b",", b'"', b"\x00", b"NaN", b"\xff"]))
                           + text[at:], EITHER),
        "prefix": lambda: (draw(st.sampled_from([b"\xef\xbb\xbf", b" ", b"x"])) + text, EITHER),
    }[kind]()


@st.composite
def shapes(draw) -> tuple[str, Any, int]:
    """(kind, declared shape, how many values to send)."""
    kind = draw(st.sampled_from(["ok"] * 6 + ["zero-rows", "cols", "rank", "neg", "empty-shape", "not-list", "huge-rows"]))
    n = draw(st.integers(1, 5))
    shape = {
        "ok": lambda: [n, N_FEATURES],
        "zero-rows": lambda: [0, N_FEATURES],
        "cols": lambda: [n, draw(st.integers(0, 40).filter(lambda c: c != N_FEATURES))],
        "rank": lambda: draw(st.lists(st.integers(0, 31), min_size=1, max_size=4).filter(lambda s: len(s) != 2)),
        "neg": lambda: [draw(st.integers(-3, -1)), N_FEATURES],
        "empty-shape": lambda: [],
        "not-list": lambda: draw(weird),
        # Just over the limit, or beyond any memory; not the band between, where 2.51 allocates
        # and zeroes the declared size (12 GB for [10^8, 30]: this machine's memory, not Triton, is tested).
        "huge-rows": lambda: [draw(st.one_of(st.integers(MAX_BATCH + 1, MAX_BATCH + 64), st.integers(2**38, 2**44))),
                              N_FEATURES],
    }[kind]()
    sized = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    count = int(np.prod(shape)) if sized else 0
    return kind, shape, count if count <= 6 * 40 else draw(st.integers(0, 60))


@st.composite
def triton_json(draw) -> tuple[bytes, str, dict]:
    name = draw(st.sampled_from(["input__0"] * 8 + ["input__1", "", "INPUT__0"]))
    dtype = draw(st.sampled_from(["FP32"] * 8 + ["FP64", "FP16", "INT32", "INT64", "BYTES", "BOOL", "UINT8", "fp32", "FP33", ""]))
    shape_kind, shape, count = draw(shapes())
    data_kind = draw(st.sampled_from(["finite"] * 6 + ["ints", "weird", "nested", "short", "long", "not-list", "missing"]))
    flat = draw(st.lists(finite, min_size=count, max_size=count))
    width = shape[1] if shape_kind == "ok" else draw(st.integers(1, 5))
    data = {
        "finite": lambda: flat,
        "ints": lambda: draw(st.lists(st.integers(-1000, 1000), min_size=count, max_size=count)),
        "weird": lambda: draw(weird_values(max(count, 1))),
        "nested": lambda: [flat[i:i + width] for i in range(0, count, width)],
        "short": lambda: flat[:-1],
        "long": lambda: flat + [draw(finite)],
        "not-list": lambda: draw(weird),
        "missing": lambda: None,
    }[data_kind]()
    tensor = {"name": name, "shape": shape, "datatype": dtype, **({} if data_kind == "missing" else {"data": data})}
    doc: dict[str, Any] = {"inputs": [tensor]}
    outputs = draw(st.sampled_from([None] * 6 + ["output__0", "output__9", "binary"]))
    if outputs:
        doc["outputs"] = [{"name": "output__0", "parameters": {"binary_data": False}} if outputs == "binary"
                          else {"name": outputs}]
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8))
    clean = name == "input__0" and dtype == "FP32" and shape_kind == "ok" and outputs != "output__9"
    # KServe allows nested and integral JSON numbers
    body, expected = draw(mutated(doc, {"finite": VALID, "ints": EITHER, "nested": EITHER}.get(data_kind, INVALID)
                                  if clean else INVALID))
    return body, expected, {"shape": shape}


@st.composite
def triton_binary(draw) -> tuple[bytes, str, dict]:
    dtype = draw(st.sampled_from(["FP32"] * 8 + ["FP64", "INT32", "INT8", "BOOL"]))
    shape_kind, shape, n = draw(shapes())
    if not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
        shape, shape_kind, n = [1, N_FEATURES], "ok", N_FEATURES
    values = draw(st.sampled_from(["finite", "finite", "finite", "nan", "inf", "random-bytes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arr = rng.normal(size=n).astype(triton_to_np_dtype(dtype))
    if values in ("nan", "inf") and n and dtype in ("FP32", "FP64"):
        arr[rng.integers(0, n)] = np.nan if values == "nan" else np.inf
    raw = rng.bytes(arr.nbytes) if values == "random-bytes" else arr.tobytes()
    size_delta = draw(st.sampled_from([0] * 6 + [-1, 1, -4, 4]))
    header_delta = draw(st.sampled_from([0] * 7 + [-1, 1, 10**6]))
    body, headers = wire.binary_body(shape, dtype, raw, declared_size=max(0, len(raw) + size_delta))
    length = "Inference-Header-Content-Length"
    headers[length] = str(max(0, int(headers[length]) + header_delta))
    finite_values = dtype == "FP32" and len(raw) % 4 == 0 and bool(np.all(np.isfinite(np.frombuffer(raw, np.float32))))
    clean = dtype == "FP32" and shape_kind == "ok" and size_delta == 0 and header_delta == 0
    # NaN/+-Inf: refused naming them, or answered as native FIL does (a missing value)
    expected = (VALID if finite_values else EITHER) if clean else INVALID
    return body, expected, {"shape": shape, "headers": headers, "raw": raw}


@st.composite
def fastapi_json(draw) -> tuple[bytes, str, dict]:
    kind = draw(st.sampled_from(["ok"] * 6 + ["ragged", "weird", "empty", "not-list", "flat", "deep", "extra", "missing"]))
    row = st.lists(finite, min_size=N_FEATURES, max_size=N_FEATURES)
    rows = {
        "ok": lambda: draw(st.lists(row, min_size=1, max_size=5)),
        "ragged": lambda: draw(st.lists(st.lists(finite, max_size=40), min_size=1, max_size=4).filter(
            lambda rs: any(len(r) != N_FEATURES for r in rs))),
        "weird": lambda: [draw(weird_values(N_FEATURES))],
        "empty": lambda: [],
        "not-list": lambda: draw(weird),
        "flat": lambda: draw(row),
        "deep": lambda: [[draw(st.lists(finite, min_size=1, max_size=3))] * N_FEATURES],
        "extra": lambda: draw(st.lists(row, min_size=1, max_size=2)),
        "missing": lambda: None,
    }[kind]()
    doc: dict[str, Any] = {} if kind == "missing" else {"rows": rows}
    if kind == "extra":
        doc[draw(st.sampled_from(["model", "version", "x"]))] = draw(weird)
    return (*draw(mutated(doc, VALID if kind == "ok" else INVALID)), {})


def check_one(rig, target: str, body: bytes, expected: str, info: dict) -> str:
    """Send one body and check the property; returns how it was answered (for the figures)."""
    triton = rig.triton
    events_before, pid_before, sent_at = len(triton.supervisor_events()), triton.pid(), time.monotonic()
    url = f"{rig.fastapi_url}/predict" if target == "fastapi" else triton.http_url + wire.INFER
    reply = wire.post(url, body, info.get("headers", wire.JSON), timeout=30)
    if reply.status == wire.NO_ANSWER:
        assert target == "triton-json" and declares_oversized(info["shape"]), \
            f"no answer to a body declaring shape {info.get('shape')!r}: {reply.message}"
        assert_recovered_from_crash(triton, events_before, pid_before, sent_at)
        return "aborted 2.51, restarted"
    if reply.status == 200:
        assert expected != INVALID, "answered 200 to an invalid body"
        try:  # the rows the answer must be about, read from what was sent
            doc = None if target == "triton-binary" else json.loads(body)
            x = (np.frombuffer(info["raw"], np.float32).reshape(info["shape"]) if doc is None
                 else np.asarray(doc["rows"], np.float32) if target == "fastapi"
                 else np.asarray(doc["inputs"][0]["data"], np.float32).reshape(doc["inputs"][0]["shape"]))
        except (ValueError, KeyError, TypeError, IndexError):
            x = None
        assert x is not None and x.ndim == 2 and x.shape[1] == N_FEATURES, "answered 200, but the body holds no (n, 30) rows"
        y = np.asarray(json.loads(reply.body)["probabilities"]) if target == "fastapi" else reply.output
        rig.model.assert_answers(y, x)
        return "200"
    assert expected != VALID, f"a valid body got {reply.status}: {reply.message}"
    wire.assert_refused(reply, "fastapi" if target == "fastapi" else "http")
    return f"{reply.status // 100}xx" if reply.status < 500 else "Triton parser 500"


STRATEGIES = {"triton-json": triton_json, "triton-binary": triton_binary, "fastapi": fastapi_json}


@pytest.mark.parametrize("target", STRATEGIES)
def test_fuzzed_request_bodies(rig, fastapi_url, target, record_property):
    answered: Counter[str] = Counter()

    @FUZZ
    @given(STRATEGIES[target]())
    def body_gets_a_clear_answer(example):
        answered[check_one(rig, target, *example)] += 1
        (rig.check_fastapi if target == "fastapi" else rig.check_serving)()

    body_gets_a_clear_answer()
    record_property("examples", f"{sum(answered.values())}: " + ", ".join(f"{n} {k}" for k, n in sorted(answered.items())))
