"""Declared-shape attacks (issue 13, docs/security.md R8) with four values of data over HTTP JSON,
HTTP binary and gRPC, to the FastAPI baseline, and to a Triton with the Kubernetes start script's API
restrictions: each ends in a clear refusal with the server still serving correct answers. One
exception, recorded: tritonserver 2.51 sizes an HTTP JSON input from its declared shape before
checking anything, so the largest shapes abort it; over HTTP JSON only, such a case passes when the
supervisor has it ready again on the same ports (the signal and crash-to-ready time are figures)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fraudml.triton_control import is_ready
from fraudml.tritonconfig import MODEL_NAME
from tests.k8s import manifests as m
from tests.reliability import wire
from tests.reliability.rig import MAX_BATCH, N_FEATURES, assert_recovered_from_crash, wait_until

pytestmark = pytest.mark.quick

API_KEY_HEADER = "fraudml-api-key"

ATTACKS = {  # name: declared shape (over gRPC as int64: 2^64-1 is -1)
    "issue 13: [2^40, 30] with 4 values (120 TiB declared)": (2**40, N_FEATURES),
    "element count overflows int64: [2^63-1, 30]": (2**63 - 1, N_FEATURES),
    "element count wraps to a negative int64: [2^62, 30]": (2**62, N_FEATURES),
    "element count wraps to zero: [4, 2^62]": (4, 2**62),
    "dimension 2^64-1 (-1, the wildcard, as int64)": (2**64 - 1, N_FEATURES),
    "negative batch dimension [-1, 30]": (-1, N_FEATURES),
    "negative feature dimension [2, -30]": (2, -N_FEATURES),
    "zero rows [0, 30] with 4 values": (0, N_FEATURES),
    "zero features [4, 0] with 4 values": (4, 0),
    f"batch over max_batch_size [{MAX_BATCH + 1}, 30] with 4 values": (MAX_BATCH + 1, N_FEATURES),
}
FOUR = np.full(4, 0.5, dtype=np.float32)
# On an otherwise correct binary request (Triton 26.06-26.08 parse it with std::stoi and abort).
HEADER_LENGTHS = {"Inference-Header-Content-Length 2^32 (beyond int32)": str(2**32),
                  "Inference-Header-Content-Length 10^20 (beyond int64)": "1" + "0" * 20,
                  "Inference-Header-Content-Length -1": "-1"}


@pytest.mark.parametrize("protocol", ["http-json", "http-binary", "grpc"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_triton_refuses_declared_shape(rig, attack, protocol, record_property):
    triton = rig.triton
    events_before, pid_before, sent_at = len(triton.supervisor_events()), triton.pid(), time.monotonic()
    reply = wire.infer(triton, protocol, ATTACKS[attack], data=FOUR, timeout=60)
    if reply.status == wire.NO_ANSWER and protocol == "http-json":  # 2.51 only: recovered, or fails here
        record_property("crashed and restarted", assert_recovered_from_crash(triton, events_before, pid_before, sent_at))
    else:
        wire.assert_refused(reply, protocol)
    rig.check_serving("grpc" if protocol == "grpc" else "http")


@pytest.mark.parametrize("name", HEADER_LENGTHS)
def test_triton_refuses_binary_header_length(rig, name):
    reply = wire.infer(rig.triton, "http-binary", [1, N_FEATURES], data=rig.model.x[:1], header_length=HEADER_LENGTHS[name])
    wire.assert_refused(reply, "http-binary")
    rig.check_serving()


# the FastAPI baseline has no declared shape: it must refuse the KServe body (422) and its own neighbours
ROW4 = [0.5] * 4
FASTAPI_CASES = {
    **{f"{name} (the KServe body)": ("/predict", wire.json_body(list(shape), data=FOUR.tolist()), ["rows", "missing"])
       for name, shape in ATTACKS.items()},
    "the issue 13 body on Triton's infer path": (wire.INFER, wire.json_body([2**40, N_FEATURES], data=FOUR.tolist()), ["not found"]),
    "one row of 4 values": ("/predict", json.dumps({"rows": [ROW4]}).encode(), ["4 features", "30"]),
    f"{MAX_BATCH + 1} rows of 4 values": ("/predict", json.dumps({"rows": [ROW4] * (MAX_BATCH + 1)}).encode(),
                                          ["rows", str(MAX_BATCH)]),
    "a shape field [2^40, 30] beside one row": ("/predict", json.dumps(
        {"rows": [[0.5] * N_FEATURES], "shape": [2**40, N_FEATURES]}).encode(), ["shape", "not an accepted field"]),
}


@pytest.mark.parametrize("name", FASTAPI_CASES)
def test_fastapi_refuses_the_same_shapes(rig, fastapi_url, name):
    path, body, words = FASTAPI_CASES[name]
    reply = wire.post(fastapi_url + path, body, timeout=60)
    wire.assert_refused(reply, "fastapi", tuple(words))
    rig.check_fastapi()


# -- the launcher's supervisor (issue 13's local defence) -----------------------------------


def test_supervisor_restarts_a_crashed_server_on_the_same_ports(rig):
    triton = rig.triton
    before, pid = len(triton.supervisor_events()), triton.pid()
    os.kill(pid, signal.SIGABRT)
    assert_recovered_from_crash(triton, before, pid, time.monotonic())
    rig.check_serving()
    rig.check_serving("grpc")
    exited = [e for e in triton.supervisor_events()[before:] if e["event"] == "exited"]
    assert exited[0]["pid"] == pid and exited[0]["how"] == "killed by SIGABRT"
    assert f"tritonserver (pid {pid}) died: killed by SIGABRT" in triton.log_file.read_text()


def processes_of(state_dir: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(str(state_dir) in a for a in p.info["cmdline"] or [])]


def test_restarts_are_bounded_and_stop_leaves_no_process(rig, triton_factory):
    srv = triton_factory(rig.repo_uri, env=rig.s3.env(), fil_compile=False, timeout=180, supervise=True,
                         max_restarts=1)
    assert srv.supervisor_pid() and processes_of(srv.state_dir)
    before, first = len(srv.supervisor_events()), srv.pid()
    os.kill(first, signal.SIGKILL)
    assert_recovered_from_crash(srv, before, first, time.monotonic())
    os.kill(srv.pid(), signal.SIGKILL)  # the second crash within the window: it gives up
    assert wait_until(lambda: not srv.is_running(), 60), "the supervisor did not give up"
    assert [e["event"] for e in srv.supervisor_events()][-2:] == ["gave-up", "stopped"]
    assert wait_until(lambda: not processes_of(srv.state_dir), 10), f"left behind: {processes_of(srv.state_dir)}"

    srv.start(timeout=180)  # started again, then stopped: the supervisor, the server (and a Python stub) go
    assert len(processes_of(srv.state_dir)) >= 2
    assert srv.stop()
    assert not processes_of(srv.state_dir) and not srv.is_running()


# -- the Kubernetes start script's API restrictions, on the real tritonserver ---------------


@pytest.fixture(scope="module")
def restricted(_rig, triton_factory):
    """A second Triton on the rig's repository with the API-restriction flags that
    k8s/base/triton-entrypoint.sh gives tritonserver."""
    key = secrets.token_hex(16)
    args = m.entrypoint(MODEL_REPO="s3://unused/prefix", TRITON_API_KEY=key).stdout.splitlines()
    flags = [a for a in args if a.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    assert len(flags) == 2, f"the entrypoint sets no API restrictions: {args}"
    server = triton_factory(_rig.repo_uri, env=_rig.s3.env(), fil_compile=False, timeout=180, supervise=True,
                            extra_args=flags)
    yield server, key, server.pid()
    server.stop()


@pytest.mark.parametrize("protocol", ["http-json", "http-binary"])
@pytest.mark.parametrize("who", ["no key", "a wrong key"])
def test_restricted_http_refuses_the_attack_before_parsing_it(restricted, who, protocol):
    server, key, pid = restricted
    headers = {} if who == "no key" else {API_KEY_HEADER: "0" * len(key)}
    reply = wire.infer(server, protocol, [2**40, N_FEATURES], data=FOUR, headers=headers, timeout=60)
    assert reply.status == 403, f"expected 403, got {reply.status}: {reply.message}"
    assert server.pid() == pid, "the server was restarted"


@pytest.mark.parametrize("attack", ATTACKS)
def test_restricted_grpc_stays_open_and_refuses_the_attack(restricted, attack):
    server, _, pid = restricted
    wire.assert_refused(wire.infer(server, "grpc", ATTACKS[attack], data=FOUR, timeout=60), "grpc")
    assert server.pid() == pid, "the server was restarted"


def test_restricted_server_answers_http_with_the_key_and_guards_grpc_unload(restricted):
    server, key, _ = restricted
    reply = wire.infer(server, "http-json", [1, N_FEATURES], data=[0.25] * N_FEATURES, headers={API_KEY_HEADER: key})
    assert reply.status == 200, reply.message
    with grpcclient.InferenceServerClient(server.grpc_url) as client, \
            pytest.raises(InferenceServerException, match="restricted"):
        client.unload_model(MODEL_NAME)
    assert is_ready(server.http_url, MODEL_NAME)
