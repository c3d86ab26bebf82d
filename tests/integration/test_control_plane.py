"""The production control plane on real servers (issue 10): who may change what is served, and every Triton
converging on it by itself.

* Two Tritons, each with its reconciler (``python -m serve.reconciler run``), on one SeaweedFS, read with the
  read-only identity: Triton's model-repository API needs the key, over HTTP and gRPC (inference stays open);
  a publish, a rollback, a corrupt version and a canary (abort, promote) each reach both within a bounded time,
  while a bounded request loop over both gets no error.
* What Triton downloads at a load stays bounded as versions accumulate (claims outside the model folder, old
  versions archived).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from fraudml.repository import ModelRepository
from fraudml.triton_control import load_model
from fraudml.tritonconfig import MODEL_NAME
from serve.ports import free_port
from serve.reconciler import in_canary
from serve.supervisor import Service
from tests.k8s import manifests as m
from tests.reliability.rig import CONFIG_KWARGS, RequestLoop

pytestmark = pytest.mark.slow

KEY_HEADER = "fraudml-api-key"


@pytest.fixture(scope="module")
def checkpoints() -> list[bytes]:
    """Treelite checkpoints of two forests that answer differently, as big as the reference model (about 3 MB)."""
    import treelite.sklearn
    from sklearn.ensemble import RandomForestClassifier

    out = []
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 30)).astype(np.float32)
    for seed in (0, 1):
        y = X[:, seed] + rng.normal(size=len(X)) > 0
        model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=seed, n_jobs=2).fit(X, y)
        out.append(treelite.sklearn.import_model(model).serialize_bytes())
    return out


def _publish(repo: ModelRepository, data: bytes, **kwargs) -> int:
    return repo.publish({"checkpoint.tl": data}, {"pathspec": "ControlPlaneTest/1"}, CONFIG_KWARGS, **kwargs)


def _check_the_api_key(triton, key: str, monkeypatch) -> None:
    """The model-repository API refuses loads without the right key on both protocols; inference stays open
    (the Fleet's request loops, over gRPC and HTTP, send no key)."""
    with httpclient.InferenceServerClient(triton.http_url.removeprefix("http://")) as http, \
            grpcclient.InferenceServerClient(triton.grpc_url) as grpc:
        for headers in ({}, {KEY_HEADER: "wrong"}):
            for client in (http, grpc):
                for call in (client.load_model, client.unload_model):
                    with pytest.raises(InferenceServerException, match="restricted") as refused:
                        call(MODEL_NAME, headers=headers)
                    assert client is grpc or refused.value.status() == "403"
        assert http.is_model_ready(MODEL_NAME)  # the refused unloads did nothing

        http.load_model(MODEL_NAME, headers={KEY_HEADER: key})
        grpc.load_model(MODEL_NAME, headers={f"triton-grpc-protocol-{KEY_HEADER}": key})
        monkeypatch.setenv("TRITON_API_KEY", key)
        load_model(triton.http_url, MODEL_NAME)  # what the roll-out, the reconciler and `serve.models load` call
        assert http.is_server_live() and grpc.is_model_ready(MODEL_NAME)


# -- two Tritons, two reconcilers, one S3 --------------------------------------------------------
class Fleet(contextlib.ExitStack):
    """Two Tritons with their reconcilers (``serve.reconciler start``, one inside a 50 % canary), a bounded request
    loop on each (gRPC, HTTP), and the convergence check: reconcilers and loops agree on the expected versions."""

    def __init__(self, tritons, uri: str, env: dict[str, str], state_dir: Path):
        super().__init__()
        self.tritons, self.uri, self.env, self.state_dir = tritons, uri, env, state_dir
        self.reconcilers: list[tuple[Service, int]] = []
        x = np.zeros((1, 30), dtype=np.float32)
        self.loops = [RequestLoop(t.grpc_url if p == "grpc" else t.http_url, x, protocol=p, max_seconds=600)
                      for t, p in zip(tritons, ("grpc", "http"), strict=True)]

    def wait(self, expected: list[int], *, converged: bool = True, refused: bool = False,
             timeout: float = 90.0) -> float:
        """Seconds until each Triton i serves expected[i] (reconciler metrics and real answers)."""
        started, marks = time.monotonic(), [len(lp.answers) for lp in self.loops]
        while True:
            states = [_metrics(f"http://127.0.0.1:{port}/metrics") for _, port in self.reconcilers]
            ok = all(m.get("fraudml_reconciler_served_version") == want
                     and m.get("fraudml_reconciler_converged") == float(converged)
                     and (not refused or m.get('fraudml_reconciler_loads_total{result="refused"}', 0) > 0)
                     for m, want in zip(states, expected, strict=True))
            answered = all(lp.versions[mark:][-1:] == [want] for lp, mark, want in zip(self.loops, marks, expected, strict=True))
            if ok and answered:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                logs = "\n".join(service.log_file.read_text()[-1500:] for service, _ in self.reconcilers)
                raise AssertionError(f"not converged on {expected} within {timeout:.0f} s: {states}\n{logs}")
            time.sleep(0.1)

    def __enter__(self) -> Fleet:
        try:  # whatever started is stopped, also when a later start fails
            for triton, pod in zip(self.tritons, _pod_names(), strict=True):
                port, service = free_port(), Service(self.state_dir / pod, "reconciler")
                self.callback(service.stop)
                subprocess.run([sys.executable, "-m", "serve.reconciler", "start", "--model-repo", self.uri,
                                "--triton-url", triton.http_url, "--port", str(port), "--interval", "0.5",
                                "--pod-name", pod, "--state-dir", str(service.state_dir)], env=self.env, check=True)
                self.reconcilers.append((service, port))
            for lp in self.loops:
                self.enter_context(lp)  # stopped first
        except BaseException:
            self.close()
            raise
        return self


def _pod_names() -> tuple[str, str]:
    """A pod name inside a 50 % canary and one outside it."""
    names = [f"triton-{i}" for i in range(100)]
    return next(n for n in names if in_canary(n, 50)), next(n for n in names if not in_canary(n, 50))


def test_two_tritons_converge_on_publish_rollback_corrupt_and_canary(
        publisher_env, triton_factory, checkpoints, tmp_path, monkeypatch):
    """Tritons and reconcilers read as the reader; the test publishes as the writer (``publisher_env``)."""
    uri = f"s3://models/fleet-{uuid.uuid4().hex[:8]}"
    repo = ModelRepository(uri, keep_versions=2)  # so that the rollbacks below restore archived versions
    assert _publish(repo, checkpoints[0]) == 1
    key = secrets.token_hex(16)
    reader = {**publisher_env.env(reader=True), "TRITON_API_KEY": key}  # what Triton and reconcilers hold
    tritons = [triton_factory(uri, env=reader, api_key=key, fil_compile=False,  # the k8s start script's metrics
                              extra_args=["--metrics-config=summary_latencies=true"]) for _ in range(2)]
    _check_the_api_key(tritons[0], key, monkeypatch)
    times: dict[str, float] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | reader
    with Fleet(tritons, uri, env, tmp_path) as fleet:
        times["start"] = fleet.wait([1, 1])
        assert _publish(repo, checkpoints[1]) == 2  # nobody asks any Triton to load
        times["publish"] = fleet.wait([2, 2])
        repo.set_served_version(1)  # a rollback is the pointer move
        times["rollback"] = fleet.wait([1, 1])
        assert _publish(repo, b"not a treelite checkpoint") == 3
        times["corrupt (refused, 1 kept)"] = fleet.wait([1, 1], converged=False, refused=True)
        repo.set_served_version(1)
        times["rollback after corrupt"] = fleet.wait([1, 1])
        assert _publish(repo, checkpoints[1], canary_percent=50) == 4
        assert repo.served_version() == 1 and repo.canary() == {"version": 4, "percent": 50}
        inside, outside = _pod_names()  # the share is the pod name's alone: 100 % takes every pod, 0 % none
        assert in_canary(outside, 100) and not in_canary(inside, 0)
        times["canary 50 %"] = fleet.wait([4, 1])
        repo.clear_canary()
        times["canary aborted"] = fleet.wait([1, 1])
        repo.set_canary(4, 50)
        fleet.wait([4, 1])
        repo.set_served_version(4)
        repo.clear_canary()
        times["canary promoted"] = fleet.wait([4, 4])
        assert [v.version for v in repo.list_versions() if v.archived] == [2]  # keep 2: 3, 4 and the served 1
        repo.set_served_version(2)  # copied back from the archive, then pointed at
        times["rollback to an archived version"] = fleet.wait([2, 2])
        urls = (tritons[0].metrics_url, f"http://127.0.0.1:{fleet.reconcilers[0][1]}/metrics")
        exposed = {re.split(r"[{ ]", series, maxsplit=1)[0] for url in urls for series in _metrics(url)}  # no labels
    failures = [f"{lp.url}: {message}" for lp in fleet.loops for _, message in lp.failures]
    requests = sum(len(lp.answers) + len(lp.failures) for lp in fleet.loops)
    print("\nconvergence of 2 Tritons (s): " + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
          + f"; {requests} requests, {len(failures)} failed")
    assert failures == [], failures[:3]
    assert requests > 100
    # what the alert rules, the Grafana dashboard and the HPA's adapter rule read exists
    assert m.metric_names(m.promql_expressions().values()) - exposed == set()


def _metrics(url: str) -> dict[str, float]:
    """Each series (``name{labels}``) on a /metrics page and its value; empty while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            lines = response.read().decode().splitlines()
    except OSError:  # a reconciler still starting
        return {}
    return {key: float(value) for key, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


# -- what a load downloads, as versions accumulate ----------------------------------------------
@pytest.mark.parametrize("versions", [2, int(os.environ.get("FRAUDML_MEASURE_VERSIONS", "12"))])
def test_a_load_downloads_only_the_newest_versions(publisher_env, triton_factory, checkpoints, tmp_path, versions):
    """Triton's copy of the model folder at a load holds at most 5 versions; the pre-archive layout grows with each."""
    uri = f"s3://models/versions-{uuid.uuid4().hex[:8]}"
    repo = ModelRepository(uri)
    for i in range(versions):
        _publish(repo, checkpoints[i % 2])
    figures = {}
    for layout in ("archived", "legacy"):
        if layout == "legacy":  # every archived version and claim back in the model folder, as before issue 10
            for key in repo.store.list(f"_archive/{MODEL_NAME}/"):
                repo.store.put(key.removeprefix("_archive/"), repo.store.get(key).data)
            for key in repo.store.list(f"_publish/{MODEL_NAME}/"):
                repo.store.put(f"{MODEL_NAME}/_publish/{key.rsplit('/', 1)[1]}", repo.store.get(key).data)
        mount = tmp_path / layout
        mount.mkdir()
        triton = triton_factory(uri, env={**publisher_env.env(reader=True), "TRITON_AWS_MOUNT_DIRECTORY": str(mount)},
                                fil_compile=False)
        (copy,) = list(mount.iterdir())  # the model folder as Triton downloaded it at start
        files = [p for p in copy.rglob("*") if p.is_file()]
        names = {p.name for p in copy.iterdir()}
        repo.touch_config()
        time.sleep(1.1)  # a later second: Triton sees the config changed and downloads it again
        started = time.monotonic()
        load_model(triton.http_url, MODEL_NAME)
        figures[layout] = (triton.startup_seconds, time.monotonic() - started, len(files),
                           sum(p.stat().st_size for p in files))
        triton.stop()
        if layout == "archived":
            assert names == {"config.pbtxt", *map(str, range(max(1, versions - 4), versions + 1))}, names
    print(f"\n{versions} versions published: " + "; ".join(
        f"{layout}: start {s:.2f} s, reload {r:.2f} s, {f} files / {b / 2**20:.1f} MiB downloaded"
        for layout, (s, r, f, b) in figures.items()))
    if versions > 5:
        assert figures["archived"][3] < figures["legacy"][3]

