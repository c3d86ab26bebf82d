"""Bad input to Triton's ``fil`` backend (HTTP JSON, HTTP binary, gRPC) and to the FastAPI
baseline: each gets a clear refusal naming the problem (HTTP 4xx, or Triton 2.51's own parser
500; gRPC INVALID_ARGUMENT / NOT_FOUND / UNAVAILABLE — never INTERNAL, which clients retry:
R4), and afterwards the server is ready and a correct request gets the model's own
predict_proba. NaN/+-Inf are not bad input: native FIL takes NaN as a missing value, so an
answer is right too — predict_proba's for NaN rows, a well-formed one for +-Inf rows, which
scikit-learn refuses (docs/fil_contract.md)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from tests.reliability.rig import MAX_BATCH, N_FEATURES
from tests.reliability.wire import (
    INFER,
    JSON,
    assert_refused,
    binary_body,
    grpc_infer,
    json_body,
    post,
)

pytestmark = [pytest.mark.reliability, pytest.mark.quick, pytest.mark.slow]

LARGE_BYTES = 50_000_000  # "a very large payload"
OVER = MAX_BATCH + 1
LARGE_ROWS = LARGE_BYTES // (4 * N_FEATURES) + 1
GRPC_REFUSALS = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "RESOURCE_EXHAUSTED")


def rows(n: int, cols: int = N_FEATURES, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(n + cols).normal(size=(n, cols)).astype(dtype)


def with_value(value: float) -> np.ndarray:
    x = rows(2)
    x[1, 3] = value
    return x


def large_json() -> bytes:
    n = LARGE_BYTES // (len(b"0.123456,") * N_FEATURES) + 1
    head = b'{"inputs":[{"name":"input__0","shape":[%d,%d],"datatype":"FP32","data":[' % (n, N_FEATURES)
    return head + b"0.123456," * (n * N_FEATURES - 1) + b"0.123456]}]}"


# Request builders, called only when the case runs (the 50 MB bodies are not kept around).
def J(shape=None, datatype="FP32", data=None, *, raw: bytes | Callable[[], bytes] | None = None, path=INFER,
      name="input__0"):
    return lambda: (path, (raw() if callable(raw) else raw) if raw is not None else json_body(shape, datatype, data, name))


def B(shape, datatype, x: np.ndarray | Callable[[], np.ndarray] | bytes, *, path=INFER, **kw):
    return lambda: (path, *binary_body(shape, datatype, (x() if callable(x) else x).tobytes()
                                       if not isinstance(x, bytes) else x, **kw))


def G(shape, datatype="FP32", x: np.ndarray | Callable[[], np.ndarray] | bytes | None = b"", **kw):
    def build():
        raw = x() if callable(x) else x
        return {"shape": shape, "datatype": datatype, **kw,
                "contents": [] if raw is None else [raw if isinstance(raw, bytes) else raw.tobytes()]}
    return build


def bad(name, words, rows=None, **builders) -> list:
    """One case per protocol (``json=``, ``binary=``, ``grpc=``: a request builder); ``words`` must
    all be in the error ("a|b": either); ``rows`` may be answered instead (NaN, +-Inf)."""
    protocols = {"json": "http-json", "binary": "http-binary", "grpc": "grpc"}
    return [pytest.param(protocols[kind], build, tuple(words), rows, id=f"{protocols[kind]}: {name}")
            for kind, build in builders.items()]


x2 = rows(2)
zeros = {n: (lambda n=n: np.zeros((n, N_FEATURES), np.float32)) for n in (OVER, LARGE_ROWS)}
TRITON_CASES = [
    bad("malformed JSON (truncated body)", ["parse|JSON"], json=J(raw=b'{"inputs": [{"name": "input__0", "shape": [1,')),
    bad("JSON that is not an object", ["inputs"], json=J(raw=b"[1, 2, 3]")),
    bad("no inputs field", ["inputs"], json=J(raw=b'{"outputs": []}')),
    bad("binary header longer than the body", ["header"], binary=B([2, 30], "FP32", x2, header_length=10**6)),
    bad("binary header that is not JSON", ["parse|JSON"], binary=lambda: (INFER, b"\xff\xfe" + x2.tobytes(), {
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"})),
    bad("declared data size differs from the shape", ["size|shape"], json=J([2, 30], data=[0.5] * 59),
        binary=B([2, 30], "FP32", x2.tobytes()[:100]), grpc=G([2, 30], "FP32", b"\0" * 100)),
    bad("no data for the input", ["data"], grpc=G([2, 30], x=None), json=J(raw=json.dumps(
        {"inputs": [{"name": "input__0", "shape": [1, 30], "datatype": "FP32"}]}).encode())),
    bad("wrong input name", ["input__1"], json=J([1, 30], name="input__1"),
        binary=B([2, 30], "FP32", x2, name="input__1"), grpc=G([2, 30], "FP32", x2, name="input__1")),
    bad("datatype FP64", ["FP64", "FP32"], json=J([2, 30], "FP64"),
        binary=B([2, 30], "FP64", x2.astype(np.float64)), grpc=G([2, 30], "FP64", x2.astype(np.float64))),
    bad("datatype INT32", ["INT32", "FP32"], json=J([2, 30], "INT32", [1] * 60),
        binary=B([2, 30], "INT32", x2.astype(np.int32)), grpc=G([2, 30], "INT32", x2.astype(np.int32))),
    bad("datatype BYTES", ["BYTES", "FP32"], json=J([2, 30], "BYTES", ["0.5"] * 60),
        grpc=G([2, 30], "BYTES", serialize_byte_tensor(np.array([[b"0.5"] * 30] * 2, dtype=np.object_)).item())),
    bad("unknown datatype FP33", ["datatype|invalid"], json=J([2, 30], "FP33"), grpc=G([2, 30], "FP33", x2)),
    bad("strings where FP32 numbers belong", ["number|double|data"], json=J([1, 30], data=["0.5"] * 30)),
    bad("29 features", ["input__0", "shape", "29"], json=J([2, 29]),
        binary=B([2, 29], "FP32", rows(2, 29)), grpc=G([2, 29], "FP32", rows(2, 29))),
    bad("31 features", ["input__0", "shape", "31"], json=J([2, 31]),
        binary=B([2, 31], "FP32", rows(2, 31)), grpc=G([2, 31], "FP32", rows(2, 31))),
    bad("1-D input (no batch dimension)", ["input__0", "shape"], json=J([30]),
        binary=B([30], "FP32", x2[0]), grpc=G([30], "FP32", x2[0])),
    bad("3-D input", ["input__0", "shape"], json=J([1, 2, 30]), binary=B([1, 2, 30], "FP32", x2),
        grpc=G([1, 2, 30], "FP32", x2)),
    bad("negative dimension", ["shape"], json=J([-1, 30], data=[0.5] * 30)),
    *(bad(f"{label} feature", words, json=J([2, 30], data=with_value(v).reshape(-1).tolist()),
          binary=B([2, 30], "FP32", with_value(v)), grpc=G([2, 30], "FP32", with_value(v)), rows=with_value(v))
      for label, v, words in (("NaN", np.nan, ["NaN", "row 1", "feature 3"]),
                              ("+Inf", np.inf, ["inf", "row 1", "feature 3"]),
                              ("-Inf", -np.inf, ["-inf", "row 1"]))),
    bad("number beyond float range (1e999)", ["number|big|inf"],
        json=J(raw=json_body([1, 30]).replace(b"[0.25,", b"[1e999,", 1))),
    bad("NaN given as a string", ["number|double"], json=J([1, 30], data=["NaN"] + [0.25] * 29)),
    bad("empty batch (0 rows)", ["input__0", "size|batch|shape"], json=J([0, 30], data=[]),
        binary=B([0, 30], "FP32", b""), grpc=G([0, 30], "FP32", b"")),
    bad(f"batch over max_batch_size ({OVER} rows)", ["batch", str(MAX_BATCH)], json=J([OVER, 30], data=[0.5] * OVER * 30),
        binary=B([OVER, 30], "FP32", zeros[OVER]), grpc=G([OVER, 30], "FP32", zeros[OVER])),
    bad("unknown model", ["no-such-model"], json=J([2, 30], path="/v2/models/no-such-model/infer"),
        binary=B([2, 30], "FP32", x2, path="/v2/models/no-such-model/infer"), grpc=G([2, 30], "FP32", x2, model="no-such-model")),
    bad("unknown version", ["version", "999"], json=J([2, 30], path=INFER.replace("/infer", "/versions/999/infer")),
        binary=B([2, 30], "FP32", x2, path=INFER.replace("/infer", "/versions/999/infer")),
        grpc=G([2, 30], "FP32", x2, version="999")),
    bad(f"very large payload (~{LARGE_BYTES // 10**6} MB)", ["batch", str(MAX_BATCH)], json=J(raw=large_json),
        binary=B([LARGE_ROWS, 30], "FP32", zeros[LARGE_ROWS]), grpc=G([LARGE_ROWS, 30], "FP32", zeros[LARGE_ROWS])),
]


def send(triton, protocol: str, build: Callable):
    if protocol == "grpc":
        return grpc_infer(triton.grpc_url, **build())
    path, body, *headers = build()
    return post(triton.http_url + path, body, headers[0] if headers else JSON)


@pytest.mark.parametrize(("protocol", "build", "words", "answerable"), [p for case in TRITON_CASES for p in case])
def test_triton_refuses_bad_input_clearly_and_keeps_serving(rig, protocol, build, words, answerable):
    reply = send(rig.triton, protocol, build)
    if answerable is not None and reply.answered:
        rig.model.assert_answers(reply.output, answerable)
    else:
        assert_refused(reply, protocol, words, grpc_codes=GRPC_REFUSALS)
    rig.check_serving("grpc" if protocol == "grpc" else "http", server_ready=True)


ROW = [0.25] * N_FEATURES


def fa(rows=None, **extra) -> bytes:
    return json.dumps({"rows": rows, **extra}, allow_nan=True).encode()


def large_rows_body() -> bytes:
    n = LARGE_BYTES // (len(b"0.123456, ") * N_FEATURES) + 1
    return b'{"rows": [' + b",".join([b"[" + b", ".join([b"0.123456"] * 30) + b"]"] * n) + b"]}"


# name: (body, words the error must name[, how it is sent when not as JSON to POST /predict])
FASTAPI_CASES = {
    "malformed JSON": (b'{"rows": [[0.1, ', ["JSON"]),
    "JSON that is not an object": (b"[1, 2]", ["body|object|dictionary"]),
    "no rows field": (b"{}", ["rows", "missing"]),
    "rows is null": (fa(None), ["rows", "list"]),
    "unexpected extra field": (fa([ROW], model="x"), ["model", "not an accepted field"]),
    "strings for features": (fa([["0.5"] * 30]), ["rows[0][0]", "number"]),
    "booleans for features": (fa([[True] * 30]), ["rows[0][0]", "number"]),
    "nulls for features": (fa([[None] * 30]), ["rows[0][0]", "number"]),
    "29 features": (fa([[0.25] * 29]), ["29", "30"]),
    "31 features": (fa([[0.25] * 31]), ["31", "30"]),
    "1-D rows": (fa(ROW), ["rows[0]", "list"]),
    "3-D rows": (fa([[ROW]]), ["rows[0][0]", "number"]),
    "NaN feature": (fa([[float("nan")] + ROW[1:]]), ["rows[0][0]", "NaN"]),
    "Infinity feature": (fa([ROW[:-1] + [float("inf")]]), ["rows[0][29]", "Infinity"]),
    "-Infinity feature": (fa([[float("-inf")] + ROW[1:]]), ["rows[0][0]", "Infinity"]),
    "number beyond float range (1e999)": (b'{"rows": [[1e999' + b", 0.25" * 29 + b"]]}", ["rows[0][0]", "inf"]),
    "empty batch (0 rows)": (fa([]), ["rows", "0"]),
    f"batch over the row limit ({OVER} rows)": (fa([ROW] * OVER), ["rows", str(MAX_BATCH)]),
    f"very large payload (~{LARGE_BYTES // 10**6} MB)": (large_rows_body, ["rows", str(MAX_BATCH)]),
    "text/plain body": (fa([ROW]), ["body|object|dictionary"], {"content_type": "text/plain"}),
    "unknown path": (fa([ROW]), ["not found"], {"path": "/predict/v2"}),
    "wrong method (GET /predict)": (None, ["method not allowed"], {"method": "GET"}),
}


@pytest.mark.parametrize("name", FASTAPI_CASES)
def test_fastapi_refuses_bad_input_clearly_and_keeps_serving(rig, fastapi_url, name):
    body, words, *how = FASTAPI_CASES[name]
    how = {"method": "POST", "path": "/predict", "content_type": "application/json", **(how[0] if how else {})}
    reply = post(fastapi_url + how["path"], body() if callable(body) else body, {"Content-Type": how["content_type"]},
                 method=how["method"])
    assert_refused(reply, "fastapi", tuple(words))
    rig.check_fastapi()
