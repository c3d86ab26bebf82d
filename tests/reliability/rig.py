"""What the reliability cases run against: the reference model and the rig (S3, a supervised Triton,
the FastAPI baseline, the ledger of published versions) with the shared checks."""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import pytest
import requests

from fraudml.data import FEATURES, LABEL, generate_dataset
from fraudml.export import to_treelite
from fraudml.features import feature_matrix
from fraudml.models import build_pipeline
from fraudml.repository import ModelRepository
from fraudml.repository import _sha256 as sha256  # the digest lineage.json lists
from fraudml.rollout import load_and_confirm
from fraudml.triton_control import is_ready, repository_index
from fraudml.tritonconfig import DEFAULT_MAX_BATCH_SIZE, MODEL_NAME
from serve.client import ClientError, infer

N_FEATURES = len(FEATURES)
MAX_BATCH = DEFAULT_MAX_BATCH_SIZE  # what every published version serves
RECOVERY_TIMEOUT_S = 120.0  # a bound on waiting for a crashed Triton to serve again
ATOL = 1e-5  # float32 tolerance against the model's own predict_proba
# The plan: make test runs the quick cases with these defaults; `make reliability` sets 180 and 300.
SOAK_SECONDS = int(os.environ.get("RELIABILITY_SOAK_SECONDS", "20"))
FUZZ_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "50"))  # per fuzz target
CONFIG_KWARGS = {"model_type": "treelite_checkpoint", "threshold": 0.5, "n_features": N_FEATURES}


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (a bound, never a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class RefModel:
    """A small random forest whose ``predict_proba`` is the oracle for every answer."""

    pipeline: Any
    checkpoint: bytes
    x: np.ndarray  # raw rows (float32, (n, 30)) the client sends
    seed: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(np.asarray(x, dtype=np.float32)), dtype=np.float64)

    def assert_answers(self, y: np.ndarray | None, x: np.ndarray) -> None:
        """``y`` is the served answer to rows ``x``: predict_proba's (a NaN is a missing value and
        takes scikit-learn's branch, docs/fil_contract.md); for rows with +-Inf, which scikit-learn
        refuses, one finite [1-p, p] per row."""
        x = np.asarray(x, dtype=np.float32)
        assert y is not None and np.shape(y) == (len(x), 2), f"answer of shape {np.shape(y)} to {len(x)} rows"
        if np.isinf(x).any():
            assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1)), f"answer outside [0, 1]: {y.tolist()}"
            np.testing.assert_allclose(np.sum(y, axis=1), 1, atol=ATOL)
        else:
            np.testing.assert_allclose(y, self.predict_proba(x), atol=ATOL)

    def lineage(self, note: str) -> dict[str, Any]:
        return {"pathspec": None, "family": "random_forest", "threshold": 0.5,
                "reliability": {"note": note, "seed": self.seed}}


def train_reference(seed: int = 7, rows: int = 3000, n_trees: int = 20, max_depth: int = 6,
                    n_features: int = N_FEATURES) -> RefModel:
    df = generate_dataset(rows=rows, fraud_rate=0.03, seed=seed)
    x = feature_matrix(df)[:, :n_features]
    pipeline = build_pipeline("random_forest", seed=seed, n_jobs=1).set_params(
        clf__n_estimators=n_trees, clf__max_depth=max_depth, clf__max_samples=None).fit(x, df[LABEL].to_numpy())
    sample = np.ascontiguousarray(x[np.random.default_rng(seed + 1).permutation(len(x))[:256]])
    return RefModel(pipeline, to_treelite(pipeline).serialize_bytes(), sample, seed)


@dataclass
class Rig:
    s3: Any  # serve.s3.SeaweedS3
    triton: Any  # serve.triton.TritonServer (supervised)
    model: RefModel
    # The ledger: every version whose publish reported success (number -> file name -> sha256) and the
    # numbers failed publishes retired; "versions lost" is computed from it, never assumed.
    published: dict[int, dict[str, str]] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    fastapi_url: str | None = None
    fastapi_pid: int | None = None
    repo_uri: str = "s3://models/reliability"

    def repo(self):
        with mock.patch.dict("os.environ", self.s3.env()):  # the store reads AWS_* once, when made
            return ModelRepository(self.repo_uri, MODEL_NAME)

    def publish(self, note: str, repo=None, checkpoint: bytes | None = None) -> int:
        """Publish ``checkpoint`` (default: the reference model's) and record it in the ledger."""
        files = {"checkpoint.tl": self.model.checkpoint if checkpoint is None else checkpoint}
        version = (repo or self.repo()).publish(files, self.model.lineage(note), dict(CONFIG_KWARGS))
        self.record(version, files)
        return version

    def record(self, version: int, files: dict[str, bytes]) -> None:
        assert version not in self.published, f"version {version} was reported twice by successful publishes"
        self.published[version] = {name: sha256(data) for name, data in files.items()}

    def check_serving(self, protocol: str = "http", *, version: int | None = None, model: RefModel | None = None,
                      server_ready: bool = False) -> int:
        """Triton is ready (with ``server_ready``: the whole server too) and a correct request gets
        ``model``'s own predict_proba; returns the version that answered."""
        url = self.triton.http_url
        assert wait_until(lambda: is_ready(url, MODEL_NAME) and (not server_ready or is_ready(url)), 30), \
            f"Triton at {url} is not {'server-' if server_ready else 'model-'}ready within 30 s"
        model = model or self.model
        x = model.x[:8]
        answer = infer(x, url=self.triton.grpc_url if protocol == "grpc" else url, protocol=protocol,
                       model_name=MODEL_NAME, timeout=10)  # a ClientError fails the case with Triton's message
        assert version is None or answer.model_version == version, \
            f"answered by version {answer.model_version}, expected {version}"
        np.testing.assert_allclose(answer.probabilities, model.predict_proba(x)[:, 1], atol=ATOL,
                                   err_msg=f"v{answer.model_version} differs from predict_proba")
        return answer.model_version

    def check_fastapi(self) -> None:
        x = self.model.x[:8]
        reply = requests.post(f"{self.fastapi_url}/predict", json={"rows": x.tolist()}, timeout=120)
        assert reply.status_code == 200, f"a correct FastAPI request got {reply.status_code}: {reply.text}"
        np.testing.assert_allclose(reply.json()["probabilities"], self.model.predict_proba(x), atol=ATOL)

    def heal(self) -> None:
        """Back to serving the reference model: a case that failed half-way does not fail the next ones."""
        if self.s3.pid() is None:
            self.s3.start(timeout=60)
        repo = self.repo()
        good = sorted(v for v, files in self.published.items()  # the reference model's own bytes
                      if files.get("checkpoint.tl") == sha256(self.model.checkpoint))
        if good and repo.served_version() not in good:
            repo.set_served_version(good[-1])
        self.triton.start(timeout=180)  # attaches (and waits) when the supervisor has it running
        try:
            self.check_serving(version=repo.served_version())
        except (AssertionError, ClientError):
            time.sleep(1.1)  # a config write in a later second than the one Triton last loaded
            repo.touch_config()
            load_and_confirm(self.triton.http_url, repo)
            self.check_serving(version=repo.served_version())


class RequestLoop(threading.Thread):
    """One-row requests through ``serve.client.infer``, back to back while the ``with`` block runs
    (``max_seconds`` at most); records each answer's version and each failure's message, with when."""

    def __init__(self, url: str, row: np.ndarray, *, protocol: str = "http", timeout: float = 10.0,
                 max_seconds: float = 300.0):
        super().__init__(daemon=True, name=f"request-loop-{protocol}")
        self.protocol, self.done, self.max_seconds = protocol, threading.Event(), max_seconds
        self.send = functools.partial(infer, row, url=url, protocol=protocol, model_name=MODEL_NAME, timeout=timeout)
        self.answers: list[tuple[float, int]] = []  # (time, version that answered)
        self.failures: list[tuple[float, str]] = []

    @property
    def versions(self) -> list[int]:
        return [v for _, v in self.answers]

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                answer = self.send()
                self.answers.append((time.monotonic(), answer.model_version))
            except ClientError as exc:
                self.failures.append((time.monotonic(), str(exc)))
                time.sleep(0.05)  # do not spin while the server is away

    def wait_for(self, predicate: Callable[[RequestLoop], bool], what: str, timeout: float = 60) -> None:
        assert wait_until(lambda: predicate(self) or not self.is_alive(), timeout, 0.02) and predicate(self), \
            f"{self.protocol} request loop: {what} did not happen within {timeout:.0f} s"

    def wait_answers(self, n: int = 10) -> None:
        start = len(self.answers)
        self.wait_for(lambda lp: len(lp.answers) >= start + n, f"{n} more answers")

    def __enter__(self) -> RequestLoop:
        self.start()
        self.wait_answers()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(timeout=30)


VERSION_FILE = re.compile(rf"^{re.escape(MODEL_NAME)}/\d+/")


class FaultyStore:
    """Wraps a model-repository store and runs ``fault()`` once, at ``point`` of a publish
    (DESIGN §3 order: claim, upload, read back, swap the config)."""

    def __init__(self, inner, point: str, fault: Callable[[], None]):
        self.inner, self.point, self.fault = inner, point, fault
        self.fired_at: float | None = None
        self.uploaded = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _reached(self, point: str) -> None:
        if self.point.endswith(point) and self.fired_at is None:
            self.fired_at = time.monotonic()
            self.fault()

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        if VERSION_FILE.match(key):
            self.uploaded = True
            self._reached("after-first-file-put")

    def get(self, key: str):
        if self.uploaded and VERSION_FILE.match(key):
            self._reached("during-read-back")
        return self.inner.get(key)

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        if key.endswith("/config.pbtxt"):
            self._reached("before-config-swap")
        return self.inner.replace(key, data, tag)


def served_by_triton(triton) -> set[int]:
    return {int(m["version"]) for m in repository_index(triton.http_url)
            if m.get("name") == MODEL_NAME and m.get("state") == "READY" and m.get("version")}


def assert_recovered_from_crash(triton, events_before: int, pid_before: int, sent_at: float) -> str:
    """The server died under the request: its supervisor restarted it on the same ports and it
    is ready again within RECOVERY_TIMEOUT_S. Returns the figure to record."""
    assert wait_until(lambda: is_ready(triton.http_url, MODEL_NAME), RECOVERY_TIMEOUT_S), \
        f"not serving again within {RECOVERY_TIMEOUT_S:.0f} s after the crash"
    back_s = time.monotonic() - sent_at
    wait_until(lambda: any(e["event"] == "ready" for e in triton.supervisor_events()[events_before:]), 10)
    events = triton.supervisor_events()[events_before:]
    exits, ready = [e for e in events if e["event"] == "exited"], [e for e in events if e["event"] == "ready"]
    assert exits and ready, f"no answer, but the supervisor recorded {events}"
    assert triton.pid() not in (None, pid_before), "the same process answers: it never died?"
    return (f"tritonserver {exits[0]['how']}; ready again {ready[-1]['seconds_since_crash']} s after the crash, "
            f"{back_s:.2f} s after the request")


@pytest.mark.quick
def test_no_version_lost(rig: Rig, record_property) -> None:
    """Versions lost: every version whose publish reported success is intact in S3, no retired
    number was reused (each faults module imports this case as its own: its category's count)."""
    repo = rig.repo()
    problems = {n: "failed once and was later reported published" for n in set(rig.published) & set(rig.failed)}
    for version, files in rig.published.items():
        differ = [name for name, digest in files.items()
                  if (data := repo.read_file(version, name)) is None or sha256(data) != digest]
        lineage = repo.read_file(version, "lineage.json")
        if differ:
            problems[version] = f"{differ} missing or differing from what was published"
        elif lineage is None or json.loads(lineage).get("files") != files:
            problems[version] = "lineage.json does not list the published files and hashes"
    record_property("versions_lost", len(problems))
    assert not problems, problems
