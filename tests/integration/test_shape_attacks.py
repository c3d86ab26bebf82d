"""Declared-shape attacks (issue 13) against a real, supervised tritonserver and the FastAPI
baseline; the launcher's supervisor restarts a crashed server, boundedly, and ``stop``
leaves no process behind; the Kubernetes entrypoint's API restrictions keep untrusted
callers away from the HTTP JSON parser. Readiness is polled, never slept for; no timing is
asserted beyond the recovery bound of ``benchmark.reliability_shapes``."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import psutil
import pytest
import treelite.sklearn
import tritonclient.grpc as grpcclient

from benchmark import reliability_shapes as shapes
from benchmark.reliability_common import (
    CaseFailed,
    Category,
    http,
    json_infer_body,
    wait_triton_ready,
    wait_until,
)
from benchmark.reliability_input import FastAPIProcess
from fraudml.tritonconfig import MODEL_NAME, render_config

pytestmark = pytest.mark.slow

N_FEATURES = 30
MAX_BATCH = 64


@pytest.fixture(scope="module")
def forest():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(13)
    X = rng.normal(size=(600, N_FEATURES)).astype(np.float32)
    return RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1).fit(X, X[:, 0] > 0)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, forest):
    root = tmp_path_factory.mktemp("shape-attack-repo")
    (root / MODEL_NAME / "1").mkdir(parents=True)
    treelite.sklearn.import_model(forest).serialize(str(root / MODEL_NAME / "1" / "checkpoint.tl"))
    (root / MODEL_NAME / "config.pbtxt").write_text(render_config(max_batch_size=MAX_BATCH, versions=[1]))
    return root


@pytest.fixture(scope="module")
def server(triton_factory, repo):
    return triton_factory(repo, fil_compile=False, supervise=True, max_restarts=50)


def checker(server, forest):
    x = np.random.default_rng(0).normal(size=(3, N_FEATURES)).astype(np.float32)

    def check_serving(protocol: str) -> None:
        if protocol == "grpc":
            client = grpcclient.InferenceServerClient(server.grpc_url)
            tensor = grpcclient.InferInput("input__0", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            got = client.infer(MODEL_NAME, [tensor]).as_numpy("output__0")
            client.close()
        else:
            status, body, _ = http("POST", f"{server.http_url}/v2/models/{MODEL_NAME}/infer", json_infer_body(x),
                                   {"Content-Type": "application/json"})
            if status != 200:
                raise CaseFailed(f"a correct request afterwards got {status}: {body[:200]!r}")
            out = json.loads(body)["outputs"][0]
            got = np.asarray(out["data"]).reshape(out["shape"])
        if not np.allclose(got, forest.predict_proba(x), atol=1e-5):
            raise CaseFailed("a correct request afterwards got a wrong answer")

    return check_serving


def assert_no_failure(cat: Category) -> None:
    failed = cat.failed_cases()
    assert not failed, "\n".join(f"{c.name}: {c.detail}" for c in failed)


def test_shape_attacks_are_refused_and_triton_keeps_serving(server, forest):
    """Each attack over HTTP JSON, HTTP binary and gRPC: a clear refusal, or (2.51 HTTP JSON
    only) a crash after which the supervisor has the server serving again in bounded time."""
    cat = Category("shape-attacks", "shape attacks", log=print)
    shapes.triton_shape_attacks(cat, server, checker(server, forest), max_batch=MAX_BATCH)
    assert cat.tried == len(shapes.shape_attacks(MAX_BATCH)) * 3 + len(shapes.HEADER_LENGTHS)
    for record in cat.facts.get("crashed_and_restarted", []):
        print(record)
        assert record["how"].startswith(("killed by", "exit code"))
    assert_no_failure(cat)


def test_the_supervisor_restarts_a_crashed_server_on_the_same_ports(server, forest):
    before, pid = len(server.supervisor_events()), server.pid()
    os.kill(pid, signal.SIGABRT)
    assert wait_until(lambda: server.pid() not in (None, pid), 60), "no new tritonserver"
    assert wait_triton_ready(server.http_url, timeout=shapes.RECOVERY_TIMEOUT_S) is None
    checker(server, forest)("http")
    checker(server, forest)("grpc")
    assert wait_until(lambda: any(e["event"] == "ready" for e in server.supervisor_events()[before:]), 10)
    exited = [e for e in server.supervisor_events()[before:] if e["event"] == "exited"]
    assert exited[0]["pid"] == pid and exited[0]["how"] == "killed by SIGABRT"
    assert f"tritonserver (pid {pid}) died: killed by SIGABRT" in server.log_file.read_text()


def _ours(state_dir) -> list[int]:
    mine = str(state_dir)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(mine in part for part in proc.info["cmdline"] or []):
                found.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_restarts_are_bounded_and_stop_leaves_no_process(triton_factory, repo):
    srv = triton_factory(repo, fil_compile=False, supervise=True, max_restarts=1)
    assert srv.supervisor_pid() and _ours(srv.state_dir)
    first = srv.pid()
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: srv.pid() not in (None, first), 60)
    assert wait_triton_ready(srv.http_url, timeout=shapes.RECOVERY_TIMEOUT_S) is None
    os.kill(srv.pid(), signal.SIGKILL)  # the second crash within the window: it gives up
    assert wait_until(lambda: not srv.is_running(), 60), "the supervisor did not give up"
    assert [e["event"] for e in srv.supervisor_events()][-2:] == ["gave-up", "stopped"]
    assert wait_until(lambda: not _ours(srv.state_dir), 10), f"left behind: {_ours(srv.state_dir)}"

    srv.start()  # started again, then stopped: the supervisor, the server (and a Python backend's stub) go
    assert len(_ours(srv.state_dir)) >= 2
    assert srv.stop()
    assert not _ours(srv.state_dir) and not srv.is_running()


def test_kubernetes_restrictions_keep_untrusted_callers_from_the_json_parser(triton_factory, repo):
    key = shapes.new_api_key()
    flags = shapes.entrypoint_restrictions(key)
    srv = triton_factory(repo, fil_compile=False, supervise=True, extra_args=flags)
    cat = Category("shape-attacks", "k8s restrictions", log=print)
    shapes.restricted_shape_attacks(cat, srv, key, max_batch=MAX_BATCH)
    assert not [e for e in srv.supervisor_events() if e["event"] == "exited"]
    assert_no_failure(cat)
    srv.stop()


def test_fastapi_baseline_refuses_the_same_shapes(tmp_path, repo, free_port):
    api = FastAPIProcess(repo / MODEL_NAME / "1" / "checkpoint.tl", free_port(), tmp_path / "uvicorn.log",
                         max_rows=MAX_BATCH).start()
    try:
        def check_fastapi() -> None:
            status, _, _ = http("POST", f"{api.url}/predict", b'{"rows": [[' + b",".join([b"0.5"] * 30) + b"]]}",
                                {"Content-Type": "application/json"})
            if status != 200 or api.pid is None:
                raise CaseFailed(f"the baseline answers {status} to a correct request afterwards")

        cat = Category("shape-attacks", "fastapi", log=print)
        shapes.fastapi_shape_attacks(cat, api.url, check_fastapi, max_batch=MAX_BATCH)
        assert_no_failure(cat)
    finally:
        api.stop()
