"""Declared-shape attacks (issue 13): inputs whose declared shape is huge, overflows int64,
is negative or zero, or exceeds ``max_batch_size``, with only four values of data.

Sent over HTTP JSON, HTTP binary (``Inference-Header-Content-Length``) and gRPC (a raw
``ModelInferRequest``, so that the client library cannot refuse to build it), to the
FastAPI baseline, and to a Triton started with the Kubernetes entrypoint's API
restrictions. Every case ends in a clear refusal (HTTP 4xx, gRPC INVALID_ARGUMENT) with a
server that still serves correct answers afterwards.

One exception is recorded, not hidden: tritonserver 2.51 (the bundled one) sizes an HTTP
JSON input from its declared shape and allocates it before checking anything
(``src/http_server.cc``, docs/security.md), so the largest shapes abort it
(``std::bad_alloc`` / ``std::length_error``, SIGABRT). Over HTTP JSON, and only there, such a
case passes when the launcher's supervisor restarts the server on the same ports and it is
ready again within ``RECOVERY_TIMEOUT_S`` (polled, never slept for); the signal and the
time from the crash to ready are recorded in ``cat.facts["crashed_and_restarted"]``.
A crash over HTTP binary or gRPC fails the case.

Triton answers some of these with 500 from its own parser ("Unable to parse 'shape'",
"Unable to parse 'data'"), as in the bad-input category; those are recorded in
``cat.facts["answered_500_by_triton_frontend"]``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.reliability_common import (
    MAX_BATCH,
    MODEL_NAME,
    N_FEATURES,
    Category,
    expect,
    http,
    short,
    wait_triton_ready,
    wait_until,
)
from benchmark.reliability_input import INFER, TRITON_FRONTEND_500, Reply, binary_body, post_raw

ROOT = Path(__file__).resolve().parents[1]
RECOVERY_TIMEOUT_S = 120.0
NO_ANSWER = "no answer"
PROTOCOLS = ("http-json", "http-binary", "grpc")
CRASH_TOLERATED = {"http-json"}  # the 2.51 front end path that allocates from the declared shape
I64_MAX, U64_MAX = 2**63 - 1, 2**64 - 1


@dataclass(frozen=True)
class ShapeAttack:
    name: str
    shape: tuple[int, ...]
    grpc_shape: tuple[int, ...] | None = None  # gRPC dims are int64: 2^64-1 cannot be sent
    values: int = 4  # how many FP32 values are actually sent


def shape_attacks(max_batch: int = MAX_BATCH) -> list[ShapeAttack]:
    n = N_FEATURES
    return [
        ShapeAttack("issue 13: [2^40, 30] with 4 values (120 TiB declared)", (2**40, n)),
        ShapeAttack("element count overflows int64: [2^63-1, 30]", (I64_MAX, n)),
        ShapeAttack("element count wraps to a negative int64: [2^62, 30]", (2**62, n)),
        ShapeAttack("element count wraps to zero: [4, 2^62]", (4, 2**62)),
        ShapeAttack("dimension 2^64-1 (-1, the wildcard, as int64)", (U64_MAX, n), grpc_shape=(-1, n)),
        ShapeAttack("negative batch dimension [-1, 30]", (-1, n)),
        ShapeAttack("negative feature dimension [2, -30]", (2, -n)),
        ShapeAttack("zero rows [0, 30] with 4 values", (0, n)),
        ShapeAttack("zero features [4, 0] with 4 values", (4, 0)),
        ShapeAttack(f"batch over max_batch_size [{max_batch + 1}, 30] with 4 values", (max_batch + 1, n)),
    ]


# Inference-Header-Content-Length values beyond int32/int64 on an otherwise correct binary
# request (Triton 26.06-26.08 parse it with std::stoi and abort on out_of_range).
HEADER_LENGTHS = {"Inference-Header-Content-Length 2^32 (beyond int32)": str(2**32),
                  "Inference-Header-Content-Length 10^20 (beyond int64)": "1" + "0" * 20,
                  "Inference-Header-Content-Length -1": "-1"}


def declares_oversized(shape: object) -> bool:
    """True for a shape whose FP32 byte size is beyond any machine's memory or beyond int64:
    what the 2.51 HTTP JSON front end may abort on (the fuzz category tolerates that crash)."""
    if not (isinstance(shape, list | tuple) and shape and all(type(d) is int for d in shape)):
        return False
    if any(d > I64_MAX for d in shape):
        return True
    return all(d > 0 for d in shape) and math.prod(shape) * 4 >= 2**38


# ------------------------------------------------------------------------------------------
# sending
# ------------------------------------------------------------------------------------------

def _values(attack: ShapeAttack) -> np.ndarray:
    return np.full(attack.values, 0.5, dtype=np.float32)


def send_http_json(http_url: str, attack: ShapeAttack, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": list(attack.shape),
                                   "data": _values(attack).tolist()}]}).encode()
    return _post(http_url, body, {"Content-Type": "application/json", **(headers or {})})


def send_http_binary(http_url: str, attack: ShapeAttack, headers: dict[str, str] | None = None,
                     header_length: str | None = None) -> Reply:
    body, head = binary_body(list(attack.shape), "FP32", _values(attack).tobytes())
    if header_length is not None:
        head["Inference-Header-Content-Length"] = header_length
    return _post(http_url, body, {**head, **(headers or {})})


def _post(http_url: str, body: bytes, headers: dict[str, str]) -> Reply:
    started = time.monotonic()
    try:
        return post_raw(http_url, INFER, body, headers, timeout=60)
    except OSError as exc:  # the connection dropped: the server died under the request
        return Reply(NO_ANSWER, f"{type(exc).__name__}: {exc}", time.monotonic() - started)


def send_grpc(grpc_url: str, attack: ShapeAttack, metadata: tuple[tuple[str, str], ...] = ()) -> Reply:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input__0", "FP32"
    tensor.shape.extend(attack.grpc_shape or attack.shape)
    request.raw_input_contents.append(_values(attack).tobytes())
    started = time.monotonic()
    with grpc.insecure_channel(grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60, metadata=metadata)
            return Reply(200, "", time.monotonic() - started)
        except grpc.RpcError as exc:
            return Reply(str(exc.code()), exc.details() or "", time.monotonic() - started)


def send(triton, protocol: str, attack: ShapeAttack) -> Reply:
    if protocol == "grpc":
        return send_grpc(triton.grpc_url, attack)
    if protocol == "http-binary":
        return send_http_binary(triton.http_url, attack)
    return send_http_json(triton.http_url, attack)


# ------------------------------------------------------------------------------------------
# judging
# ------------------------------------------------------------------------------------------

def judge(cat: Category, case: str, protocol: str, reply: Reply) -> str:
    """The reply must be a clear refusal; returns the case detail."""
    if protocol == "grpc":
        expect(reply.status == "StatusCode.INVALID_ARGUMENT", f"gRPC answered {reply.status}: {short(reply.message)}")
    else:
        expect(reply.status != 200, f"answered 200: {short(reply.body, 200)}")
        frontend_500 = reply.status == 500 and reply.message.startswith(TRITON_FRONTEND_500)
        expect(400 <= reply.status < 500 or frontend_500, f"HTTP {reply.status}: {short(reply.message)}")
        if frontend_500:
            cat.facts.setdefault("answered_500_by_triton_frontend", []).append(case)
    expect(reply.message.strip(), f"{reply.status} without an error message")
    return f"{reply.status} in {reply.seconds * 1e3:.0f} ms: {short(reply.message, 160)}"


def recovered(cat: Category, triton, case: str, events_before: int, sent_at: float) -> str:
    """After a request killed the server: the supervisor restarted it on the same ports and
    it is ready again within RECOVERY_TIMEOUT_S. Returns the case detail."""
    reason = wait_triton_ready(triton.http_url, timeout=RECOVERY_TIMEOUT_S)
    expect(reason is None, f"not serving again within {RECOVERY_TIMEOUT_S:.0f} s after the crash: {reason}")
    back_s = time.monotonic() - sent_at
    wait_until(lambda: any(e["event"] == "ready" for e in triton.supervisor_events()[events_before:]), 10)
    events = triton.supervisor_events()[events_before:]
    exits = [e for e in events if e["event"] == "exited"]
    ready = [e for e in events if e["event"] == "ready"]
    expect(exits and ready, f"the server did not answer but its supervisor recorded {events}")
    record = {"case": case, "how": exits[0]["how"], "crash_to_ready_s": ready[-1]["seconds_since_crash"],
              "request_to_ready_s": round(back_s, 2)}
    cat.facts.setdefault("crashed_and_restarted", []).append(record)
    return (f"tritonserver {record['how']} (2.51 allocates HTTP JSON inputs from the declared shape, "
            f"docs/security.md); restarted on the same ports, ready {record['crash_to_ready_s']} s after the "
            f"crash, {record['request_to_ready_s']} s after the request")


def triton_shape_attacks(cat: Category, triton, check_serving: Callable[[str], None],
                         max_batch: int = MAX_BATCH) -> None:
    """Every attack over every protocol, then the binary header lengths. ``check_serving(protocol)``
    raises CaseFailed unless a correct request over that protocol gets the right answer."""
    cases = [(f"{p}: {a.name}", p, lambda p=p, a=a: send(triton, p, a)) for a in shape_attacks(max_batch) for p in PROTOCOLS]
    good = ShapeAttack("correct request", (1, N_FEATURES), values=N_FEATURES)
    cases += [(f"http-binary: {name}", "http-binary",
               lambda v=v: send_http_binary(triton.http_url, good, header_length=v)) for name, v in HEADER_LENGTHS.items()]
    for case, protocol, send_it in cases:
        with cat.case(case) as note:
            events_before, pid_before = len(triton.supervisor_events()), triton.pid()
            sent_at = time.monotonic()
            reply = send_it()
            if reply.status == NO_ANSWER:
                expect(protocol in CRASH_TOLERATED, f"the server died under a {protocol} request: {reply.message}")
                note.detail = recovered(cat, triton, case, events_before, sent_at)
                expect(triton.pid() not in (None, pid_before), "the same process answers: it never died?")
            else:
                note.detail = judge(cat, case, protocol, reply)
            check_serving(protocol)


# ------------------------------------------------------------------------------------------
# the Kubernetes entrypoint's restrictions, on the real tritonserver
# ------------------------------------------------------------------------------------------

def entrypoint_restrictions(key: str) -> list[str]:
    """The API-restriction flags k8s/base/triton-entrypoint.sh gives tritonserver for ``key``
    (k8s/check.py runs the script with a stand-in tritonserver that prints its arguments)."""
    import importlib.util
    import sys

    check = sys.modules.get("k8s_check")
    if check is None:  # a script, not a package: load it by path (its dataclasses need sys.modules)
        spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "k8s" / "check.py")
        check = sys.modules["k8s_check"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(check)
    args = check.entrypoint_args({"MODEL_REPO": "s3://unused/prefix", "TRITON_API_KEY": key})
    flags = [a for a in args if a.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    expect(len(flags) == 2, f"the entrypoint sets no API restrictions: {args}")
    return flags


def new_api_key() -> str:
    return secrets.token_hex(16)


def restricted_shape_attacks(cat: Category, triton, key: str, header: str = "fraudml-api-key",
                             max_batch: int = MAX_BATCH) -> None:
    """Against a Triton started with ``entrypoint_restrictions(key)``: the HTTP attacks
    without the key (or with a wrong one) get 403 before their body is read and the server
    never dies; gRPC inference stays open and refuses the attacks; the gRPC admin API needs
    the key; with the key, a correct HTTP request is answered."""
    attack = shape_attacks(max_batch)[0]
    pid = triton.pid()
    for who, headers in (("no key", {}), ("a wrong key", {header: "0" * len(key)})):
        for protocol, sender in (("http-json", send_http_json), ("http-binary", send_http_binary)):
            with cat.case(f"k8s flags, {protocol} with {who}: {attack.name}") as note:
                reply = sender(triton.http_url, attack, headers)
                expect(reply.status == 403, f"expected 403, got {reply.status}: {short(reply.message)}")
                expect(triton.pid() == pid, "the server was restarted")
                note.detail = f"403: {short(reply.message, 120)}"
    for attack in shape_attacks(max_batch):
        with cat.case(f"k8s flags, grpc without a key: {attack.name}") as note:
            note.detail = judge(cat, attack.name, "grpc", send_grpc(triton.grpc_url, attack))
            expect(triton.pid() == pid, "the server was restarted")
    with cat.case("k8s flags, gRPC model unload without the key is refused") as note:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(triton.grpc_url)
        try:
            client.unload_model(MODEL_NAME)
            raise AssertionError("the model was unloaded without the key")
        except InferenceServerException as exc:
            note.detail = f"{exc.status()}: {short(exc.message(), 120)}"
        finally:
            client.close()
        expect("restricted" in note.detail, f"refused for another reason: {note.detail}")
        expect(triton.model_ready(MODEL_NAME), "the model is not ready any more")
    with cat.case("k8s flags, a correct HTTP request with the key is answered") as note:
        x = np.full((1, N_FEATURES), 0.5, dtype=np.float32)
        body = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, N_FEATURES],
                                       "data": x.reshape(-1).tolist()}]}).encode()
        status, data, _ = http("POST", triton.http_url + INFER, body, {"Content-Type": "application/json", header: key})
        expect(status == 200, f"HTTP {status}: {short(data)}")
        note.detail = f"200 from {MODEL_NAME}/{json.loads(data)['model_version']}"


# ------------------------------------------------------------------------------------------
# the FastAPI baseline
# ------------------------------------------------------------------------------------------

def fastapi_shape_attacks(cat: Category, fastapi_url: str, check_fastapi: Callable[[], None],
                          max_batch: int = MAX_BATCH) -> None:
    """The same bodies to the baseline (it has no declared shape: it must refuse the KServe
    body with 422, and 404 on Triton's path), and its own neighbours: rows of 4 values,
    more rows than allowed, a shape field."""
    row4 = [0.5] * 4
    cases: list[tuple[str, str, bytes, list[str]]] = []
    for attack in shape_attacks(max_batch):
        body = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": list(attack.shape),
                                       "data": [0.5] * attack.values}]}).encode()
        cases.append((f"fastapi: {attack.name} (the KServe body)", "/predict", body, ["rows", "missing"]))
    attack_body = cases[0][2]
    cases += [
        ("fastapi: the issue 13 body on Triton's infer path", INFER, attack_body, ["not found"]),
        ("fastapi: one row of 4 values", "/predict", json.dumps({"rows": [row4]}).encode(), ["4 features", "30"]),
        (f"fastapi: {max_batch + 1} rows of 4 values", "/predict",
         json.dumps({"rows": [row4] * (max_batch + 1)}).encode(), ["rows", str(max_batch)]),
        ("fastapi: a shape field [2^40, 30] beside one row", "/predict",
         json.dumps({"rows": [[0.5] * N_FEATURES], "shape": [2**40, N_FEATURES]}).encode(), ["shape", "not an accepted field"]),
    ]
    for name, path, body, words in cases:
        with cat.case(name) as note:
            status, data, _ = http("POST", fastapi_url + path, body, {"Content-Type": "application/json"}, timeout=60)
            message = data.decode(errors="replace")
            expect(400 <= status < 500, f"HTTP {status}: {short(message)}")
            missing = [w for w in words if w.lower() not in message.lower()]
            expect(not missing, f"the error does not name {missing}: {short(message)}")
            note.detail = f"{status}: {short(message, 140)}"
            check_fastapi()
