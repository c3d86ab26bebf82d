"""Bad input to Triton (HTTP JSON, HTTP binary, gRPC) and to the FastAPI baseline gets a clear refusal
naming the problem (gRPC never INTERNAL, which clients retry: R4), and the server keeps serving the
model's own predict_proba. NaN/+-Inf are not bad input: native FIL takes NaN as a missing value, so
an answer is right too (docs/fil_contract.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from tests.reliability import wire
from tests.reliability.rig import MAX_BATCH, N_FEATURES

pytestmark = pytest.mark.quick

LARGE_BYTES = 50_000_000  # "a very large payload"
OVER = MAX_BATCH + 1
LARGE_ROWS = LARGE_BYTES // (4 * N_FEATURES) + 1
JSON_ROWS = LARGE_BYTES // (len("0.123456, ") * N_FEATURES) + 1  # as many in JSON
GRPC_REFUSALS = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED")
EVERY_PROTOCOL = ("http-json", "http-binary", "grpc")


def rows(n: int, cols: int = N_FEATURES) -> np.ndarray:
    return np.random.default_rng(n + cols).normal(size=(n, cols)).astype(np.float32)


def with_value(value: float) -> np.ndarray:
    x = rows(2)
    x[1, 3] = value
    return x


def bad(case, words, shape=None, data=None, datatype="FP32", *, over=EVERY_PROTOCOL, answerable=None, **kw) -> list:
    """One case per protocol of ``over``: ``data`` (or a function making it, called only when the case
    runs: the 50 MB ones are not kept around) as :func:`wire.infer` sends it, or a ``body`` (the same) posted
    as it is; ``words`` must all be in the error ("a|b": either); rows ``answerable`` may be answered instead."""
    request = kw if "body" in kw else {"shape": shape, "datatype": datatype, "data": data, **kw}
    return [pytest.param(p, request, tuple(words), answerable, id=f"{p}: {case}") for p in over]


x2 = rows(2)
TRITON_CASES = [
    bad("malformed JSON (truncated body)", ["parse|JSON"], over=["http-json"],
        body=b'{"inputs": [{"name": "input__0", "shape": [1,'),
    bad("JSON that is not an object", ["inputs"], over=["http-json"], body=b"[1, 2, 3]"),
    bad("no inputs field", ["inputs"], over=["http-json"], body=b'{"outputs": []}'),
    bad("binary header longer than the body", ["header"], [2, 30], x2, over=["http-binary"], header_length=10**6),
    bad("binary header that is not JSON", ["parse|JSON"], over=["http-binary"], body=b"\xff\xfe" + x2.tobytes(),
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"}),
    bad("declared data size differs from the shape", ["size|shape"], [2, 30], x2.reshape(-1)[:25]),
    bad("no data for the input", ["data"], [2, 30], None, over=["http-json", "grpc"]),
    bad("wrong input name", ["input__1"], [2, 30], x2, name="input__1"),
    bad("datatype FP64", ["FP64", "FP32"], [2, 30], x2.astype(np.float64), "FP64"),
    bad("datatype INT32", ["INT32", "FP32"], [2, 30], x2.astype(np.int32), "INT32"),
    bad("datatype BYTES", ["BYTES", "FP32"], [2, 30], ["0.5"] * 60, "BYTES", over=["http-json"]),
    bad("datatype BYTES", ["BYTES", "FP32"], [2, 30],
        serialize_byte_tensor(np.array([[b"0.5"] * 30] * 2, np.object_)).item(), "BYTES", over=["grpc"]),
    bad("unknown datatype FP33", ["datatype|invalid"], [2, 30], x2, "FP33", over=["http-json", "grpc"]),
    bad("strings where FP32 numbers belong", ["number|double|data"], [1, 30], ["0.5"] * 30, over=["http-json"]),
    *(bad(f"{n} features", ["input__0", "shape", str(n)], [2, n], rows(2, n)) for n in (29, 31)),
    bad("1-D input (no batch dimension)", ["input__0", "shape"], [30], x2[0]),
    bad("3-D input", ["input__0", "shape"], [1, 2, 30], x2),
    bad("negative dimension", ["shape"], [-1, 30], x2[0], over=["http-json"]),
    *(bad(f"{label} feature", words, [2, 30], with_value(v), answerable=with_value(v))
      for label, v, words in (("NaN", np.nan, ["NaN", "row 1", "feature 3"]),
                              ("+Inf", np.inf, ["inf", "row 1", "feature 3"]),
                              ("-Inf", -np.inf, ["-inf", "row 1"]))),
    bad("number beyond float range (1e999)", ["number|big|inf"], over=["http-json"],
        body=wire.json_body([1, 30], data=[0.25] * 30).replace(b"[0.25,", b"[1e999,", 1)),
    bad("NaN given as a string", ["number|double"], [1, 30], ["NaN"] + [0.25] * 29, over=["http-json"]),
    bad("empty batch (0 rows)", ["input__0", "size|batch|shape"], [0, 30], rows(0)),
    bad(f"batch over max_batch_size ({OVER} rows)", ["batch", str(MAX_BATCH)], [OVER, 30], rows(OVER)),
    bad("unknown model", ["no-such-model"], [2, 30], x2, model="no-such-model"),
    bad("unknown version", ["version", "999"], [2, 30], x2, version="999"),
    bad(f"very large payload (~{LARGE_BYTES // 10**6} MB)", ["batch", str(MAX_BATCH)], over=["http-json"],
        body=lambda: wire.json_body([JSON_ROWS, N_FEATURES], data=[0.123456] * (JSON_ROWS * N_FEATURES))),
    bad(f"very large payload (~{LARGE_BYTES // 10**6} MB)", ["batch", str(MAX_BATCH)], [LARGE_ROWS, 30],
        lambda: np.zeros((LARGE_ROWS, N_FEATURES), np.float32), over=["http-binary", "grpc"]),
]


@pytest.mark.parametrize(("protocol", "request_", "words", "answerable"), [p for case in TRITON_CASES for p in case])
def test_triton_refuses_bad_input_clearly_and_keeps_serving(rig, protocol, request_, words, answerable):
    sent = {key: value() if callable(value) else value for key, value in request_.items()}
    reply = (wire.post(rig.triton.http_url + wire.INFER, **sent) if "body" in sent
             else wire.infer(rig.triton, protocol, **sent))
    if answerable is not None and reply.answered:
        rig.model.assert_answers(reply.output, answerable)
    else:
        wire.assert_refused(reply, protocol, words, grpc_codes=GRPC_REFUSALS)
    rig.check_serving("grpc" if protocol == "grpc" else "http", server_ready=True)


ROW = [0.25] * N_FEATURES


def fa(rows=None, **extra) -> bytes:
    return json.dumps({"rows": rows, **extra}, allow_nan=True).encode()


# name: (body, words the error must name[, how it is sent when not as JSON to POST /predict: path, wire.post's keywords])
FASTAPI_CASES = {
    "malformed JSON": (b'{"rows": [[0.1, ', ["JSON"]),
    "JSON that is not an object": (b"[1, 2]", ["body|object|dictionary"]),
    "no rows field": (b"{}", ["rows", "missing"]),
    "rows is null": (fa(None), ["rows", "list"]),
    "unexpected extra field": (fa([ROW], model="x"), ["model", "not an accepted field"]),
    **{f"{kind} for features": (fa([[value] * 30]), ["rows[0][0]", "number"])
       for kind, value in (("strings", "0.5"), ("booleans", True), ("nulls", None))},
    **{f"{n} features": (fa([[0.25] * n]), [str(n), "30"]) for n in (29, 31)},
    "1-D rows": (fa(ROW), ["rows[0]", "list"]),
    "3-D rows": (fa([[ROW]]), ["rows[0][0]", "number"]),
    "NaN feature": (fa([[float("nan")] + ROW[1:]]), ["rows[0][0]", "NaN"]),
    "Infinity feature": (fa([ROW[:-1] + [float("inf")]]), ["rows[0][29]", "Infinity"]),
    "-Infinity feature": (fa([[float("-inf")] + ROW[1:]]), ["rows[0][0]", "Infinity"]),
    "number beyond float range (1e999)": (b'{"rows": [[1e999' + b", 0.25" * 29 + b"]]}", ["rows[0][0]", "inf"]),
    "empty batch (0 rows)": (fa([]), ["rows", "0"]),
    f"batch over the row limit ({OVER} rows)": (fa([ROW] * OVER), ["rows", str(MAX_BATCH)]),
    f"very large payload (~{LARGE_BYTES // 10**6} MB)": (lambda: fa([[0.123456] * N_FEATURES] * JSON_ROWS),
                                                     ["rows", str(MAX_BATCH)]),
    "text/plain body": (fa([ROW]), ["body|object|dictionary"], {"headers": {"Content-Type": "text/plain"}}),
    "unknown path": (fa([ROW]), ["not found"], {"path": "/predict/v2"}),
    "wrong method (GET /predict)": (None, ["method not allowed"], {"method": "GET"}),
}


@pytest.mark.parametrize("name", FASTAPI_CASES)
def test_fastapi_refuses_bad_input_clearly_and_keeps_serving(rig, fastapi_url, name):
    body, words, *how = FASTAPI_CASES[name]
    how = {"path": "/predict", **(how[0] if how else {})}
    reply = wire.post(fastapi_url + how.pop("path"), body() if callable(body) else body, **how)
    wire.assert_refused(reply, "fastapi", tuple(words))
    rig.check_fastapi()
