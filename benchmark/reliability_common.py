"""Shared pieces of the reliability suite (``python -m benchmark.reliability``).

* :class:`Category` counts cases: ``with cat.case("name") as note:`` runs one case; an
  exception inside fails it (its message is kept), ``note.detail`` records what was seen.
* :class:`Ledger` remembers every version whose publish reported success, with the sha256
  of each file, and :meth:`Ledger.verify` computes the versions lost at the end: a version
  is lost when any of its files is missing or differs from what was published.
* :class:`Rig` is what the categories run against: a real SeaweedFS S3, a real Triton on
  that S3 repository, the reference model and its own ``predict_proba``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "fraud-classifier"
N_FEATURES = 30
MAX_BATCH = 4096  # render_config's default, what every published version uses
ATOL = 1e-5  # float32 tolerance against the model's own predict_proba


class CaseFailed(AssertionError):
    """One case did not behave as required; the message says how."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise CaseFailed(message)


def short(text: object, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------
# counted cases
# ------------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    name: str
    ok: bool | None  # None: could not be decided here (skipped), with the reason in detail
    detail: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Note:
    detail: str = ""
    skipped: str | None = None  # set to a reason to mark the case undecidable, not failed


class Category:
    """A category of the summary table: its cases, failures and (when it publishes) versions lost."""

    def __init__(self, name: str, title: str, log: Callable[[str], None] | None = None):
        self.name, self.title = name, title
        self.cases: list[CaseResult] = []
        self.versions_lost: int | None = None
        self.facts: dict[str, Any] = {}
        self.seconds = 0.0
        self._log = log or (lambda _m: None)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def case(self, name: str) -> Iterator[Note]:
        note = Note()
        started = time.monotonic()
        ok: bool | None = True
        try:
            yield note
        except CaseFailed as exc:
            ok, note.detail = False, short(f"{exc} {('| ' + note.detail) if note.detail else ''}", 600)
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failed case, not a crash
            tb = traceback.format_exc(limit=3).strip().splitlines()
            ok, note.detail = False, short(f"unexpected {type(exc).__name__}: {exc} [{tb[-3] if len(tb) > 2 else ''}]", 600)
        if ok and note.skipped:
            ok, note.detail = None, short(f"skipped: {note.skipped}. {note.detail}", 600)
        self.add(name, ok, note.detail, time.monotonic() - started)

    def add(self, name: str, ok: bool | None, detail: str, seconds: float = 0.0) -> None:
        with self._lock:
            self.cases.append(CaseResult(name, ok, short(detail, 600), round(seconds, 3)))
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[ok]
        self._log(f"  [{mark}] {self.name}: {name}" + (f" — {short(detail, 160)}" if ok is not True else ""))

    @property
    def tried(self) -> int:
        return len(self.cases)

    @property
    def failures(self) -> int:
        return sum(1 for c in self.cases if c.ok is False)

    @property
    def skipped(self) -> int:
        return sum(1 for c in self.cases if c.ok is None)

    def failed_cases(self) -> list[CaseResult]:
        return [c for c in self.cases if c.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "tried": self.tried,
            "failures": self.failures,
            "skipped": self.skipped,
            "versions_lost": self.versions_lost,
            "seconds": round(self.seconds, 1),
            "facts": self.facts,
            "cases": [c.to_json() for c in self.cases],
        }


# ------------------------------------------------------------------------------------------
# the ledger of published versions
# ------------------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Ledger:
    """Every version whose publish reported success (number -> file name -> sha256), and the
    numbers of publishes that failed."""

    published: dict[int, dict[str, str]] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, version: int, files: dict[str, bytes]) -> None:
        with self._lock:
            if version in self.published:
                raise CaseFailed(f"version number {version} was reported twice by successful publishes")
            self.published[version] = {name: sha256(data) for name, data in files.items()}

    def record_failed(self, message: str) -> int | None:
        m = re.search(rf"{re.escape(MODEL_NAME)}/(\d+)", message)
        if m:
            with self._lock:
                self.failed.append(int(m.group(1)))
            return int(m.group(1))
        return None

    def publish(self, repo, files: dict[str, bytes], lineage: dict[str, Any], config_kwargs: dict[str, Any]) -> int:
        version = repo.publish(files, lineage, config_kwargs)
        self.record(version, files)
        return version

    def reused_numbers(self) -> list[int]:
        return sorted(set(self.published) & set(self.failed))

    def verify(self, repo) -> list[str]:
        """Problems with the published versions (empty: nothing lost). Reads every file back."""
        problems: list[str] = []
        for version, files in sorted(self.published.items()):
            prefix = repo._k(version) + "/"
            present = set(k[len(prefix):] for k in repo.store.list(prefix))
            missing = sorted({*files, "lineage.json"} - present)
            if missing:
                problems.append(f"{MODEL_NAME}/{version}: missing {', '.join(missing)}")
                continue
            for name, digest in files.items():
                blob = repo.store.get(prefix + name)
                if blob is None or sha256(blob.data) != digest:
                    problems.append(f"{MODEL_NAME}/{version}/{name}: content differs from what was published")
            lineage_blob = repo.store.get(prefix + "lineage.json")
            try:
                recorded = json.loads(lineage_blob.data)["files"] if lineage_blob else None
            except (ValueError, KeyError):
                recorded = None
            if recorded != files:
                problems.append(f"{MODEL_NAME}/{version}/lineage.json does not list the published files and hashes")
        for number in self.reused_numbers():
            problems.append(f"version number {number} failed once and was later reported published: reused")
        return problems

    def versions_lost(self, repo) -> tuple[int, list[str]]:
        problems = self.verify(repo)
        lost = {int(m.group(1)) for p in problems if (m := re.match(rf"{re.escape(MODEL_NAME)}/(\d+)", p))}
        return len(lost) + len(self.reused_numbers()), problems


# ------------------------------------------------------------------------------------------
# the reference model
# ------------------------------------------------------------------------------------------


@dataclass
class RefModel:
    """A small random forest trained with the project's own pipeline and exported with its
    own exporter; ``predict_proba`` is the oracle every answer is compared with."""

    pipeline: Any
    checkpoint: bytes
    x: np.ndarray  # raw rows (float32, (n, 30)) the client sends
    seed: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(np.asarray(x, dtype=np.float32)), dtype=np.float64)

    def lineage(self, note: str) -> dict[str, Any]:
        return {
            "pathspec": None,
            "family": "random_forest",
            "threshold": 0.5,
            "reliability": {"note": note, "seed": self.seed},
        }


CONFIG_KWARGS = {"model_type": "treelite_checkpoint", "threshold": 0.5, "n_features": N_FEATURES}


def train_reference(seed: int = 7, rows: int = 3000, n_trees: int = 20, max_depth: int = 6,
                    n_features: int = N_FEATURES) -> RefModel:
    import tempfile

    from fraudml.data import LABEL, generate_dataset
    from fraudml.export import write_fil_model
    from fraudml.features import feature_matrix
    from fraudml.models import build_pipeline

    df = generate_dataset(rows=rows, fraud_rate=0.03, seed=seed)
    x = feature_matrix(df)[:, :n_features]
    pipeline = build_pipeline("random_forest", seed=seed, n_jobs=1)
    pipeline.set_params(clf__n_estimators=n_trees, clf__max_depth=max_depth, clf__max_samples=None)
    pipeline.fit(x, df[LABEL].to_numpy())
    with tempfile.TemporaryDirectory(prefix="reliability-export-") as tmp:
        checkpoint = Path(write_fil_model(pipeline, tmp)).read_bytes()
    rng = np.random.default_rng(seed + 1)
    sample = np.ascontiguousarray(x[rng.permutation(len(x))[:256]])
    return RefModel(pipeline, checkpoint, sample, seed)


# ------------------------------------------------------------------------------------------
# environment, HTTP helpers
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for the block (the publisher reads AWS_* from there)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers or {})


def not_ready_reason(http_url: str, model: str = MODEL_NAME, *, server: bool = False,
                     timeout: float = 5.0) -> str | None:
    """None when Triton is live and ``model`` is ready (and, with ``server``, the whole server
    answers /v2/health/ready), else what is wrong.

    Model-level readiness is what "keeps serving" means: Triton 2.51 (strict readiness)
    answers /v2/health/ready with 400 while an old version unloads after every load, and
    for good once any load of the model has failed, although the model keeps serving.
    """
    paths = ["/v2/health/live", f"/v2/models/{model}/ready"] + (["/v2/health/ready"] if server else [])
    for path in paths:
        try:
            status, body, _ = http("GET", http_url + path, timeout=timeout)
        except OSError as exc:
            return f"GET {path}: {type(exc).__name__}: {exc}"
        if status != 200:
            return f"GET {path} answered {status} {short(body, 120)}"
    return None


def triton_ready(http_url: str, model: str = MODEL_NAME, *, server: bool = False) -> bool:
    return not_ready_reason(http_url, model, server=server) is None


def wait_triton_ready(http_url: str, timeout: float = 20.0, *, server: bool = False) -> str | None:
    """Wait until Triton is ready; None, or the last reason it was not."""
    deadline = time.monotonic() + timeout
    while True:
        reason = not_ready_reason(http_url, server=server)
        if reason is None or time.monotonic() > deadline:
            return reason
        time.sleep(0.05)


def json_infer_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input__0", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()


def triton_json_infer(http_url: str, x: np.ndarray, model: str = MODEL_NAME, timeout: float = 10) -> tuple[np.ndarray, int]:
    status, body, _ = http("POST", f"{http_url}/v2/models/{model}/infer", json_infer_body(x),
                           {"Content-Type": "application/json"}, timeout=timeout)
    expect(status == 200, f"a correct request got HTTP {status}: {short(body)}")
    doc = json.loads(body)
    out = doc["outputs"][0]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"]), int(doc["model_version"])


class RequestLoop(threading.Thread):
    """Sequential one-row requests through ``serve.client.infer`` until stopped; bounded in
    count and time. Records each answer's version, each failure's message and when."""

    def __init__(self, url: str, row: np.ndarray, *, protocol: str = "http", max_requests: int = 200_000,
                 max_seconds: float = 300, timeout: float = 10.0, pause: float = 0.0):
        super().__init__(daemon=True, name=f"request-loop-{protocol}")
        self.url, self.row, self.protocol = url, row, protocol
        self.max_requests, self.max_seconds, self.timeout, self.pause = max_requests, max_seconds, timeout, pause
        self.answers: list[tuple[float, int]] = []  # (time, version that answered)
        self.failures: list[tuple[float, str]] = []  # (time, error message)
        self.max_latency = 0.0
        self._stop_event = threading.Event()

    @property
    def versions(self) -> list[int]:
        return [v for _, v in self.answers]

    def run(self) -> None:
        from serve.client import ClientError, infer

        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop_event.is_set() and n < self.max_requests and time.monotonic() < deadline:
            n += 1
            started = time.monotonic()
            try:
                answer = infer(self.row, url=self.url, protocol=self.protocol, model_name=MODEL_NAME, timeout=self.timeout)
                now = time.monotonic()
                self.max_latency = max(self.max_latency, now - started)
                self.answers.append((now, answer.model_version))
            except ClientError as exc:
                self.failures.append((time.monotonic(), str(exc)))
                time.sleep(0.05)  # do not spin while the server is away
            if self.pause:
                time.sleep(self.pause)

    def wait_for(self, predicate: Callable[[RequestLoop], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            if not self.is_alive():
                break
            time.sleep(0.02)
        raise CaseFailed(f"request loop: {what} did not happen within {timeout:.0f} s")

    def wait_requests(self, n: int = 20, timeout: float = 30) -> None:
        start = len(self.versions)
        self.wait_for(lambda lp: len(lp.versions) >= start + n, timeout, f"{n} more answers")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def distinct_versions(self) -> list[int]:
        return [v for i, v in enumerate(self.versions) if i == 0 or self.versions[i - 1] != v]


# ------------------------------------------------------------------------------------------
# the rig
# ------------------------------------------------------------------------------------------


@dataclass
class Rig:
    """What the categories run against. ``start_triton()`` (re)starts the same Triton."""

    work_dir: Path
    s3: Any  # serve.s3.SeaweedS3
    triton: Any  # serve.triton.TritonServer
    repo_uri: str
    model: RefModel
    ledger: Ledger
    log: Callable[[str], None] = print
    fastapi_url: str | None = None
    fastapi_pid: int | None = None
    quick: bool = False

    @property
    def env(self) -> dict[str, str]:
        return self.s3.env()

    def repo(self):
        from fraudml.repository import ModelRepository

        with environ(self.env):
            return ModelRepository(self.repo_uri, MODEL_NAME)

    def served_version(self) -> int | None:
        return self.repo().served_version()

    def check_serving(self, protocol: str = "http", *, version: int | None = None, rows: int = 8,
                      model: RefModel | None = None, server_ready: bool = False) -> int:
        """Triton is ready and a correct request gets the model's own predict_proba
        (``model``, default the reference model). Returns the version that answered."""
        from serve.client import ClientError, infer

        model = model or self.model
        reason = wait_triton_ready(self.triton.http_url, server=server_ready)
        expect(reason is None, f"Triton at {self.triton.http_url} is not ready after 20 s: {reason}")
        x = model.x[:rows]
        url = self.triton.grpc_url if protocol == "grpc" else self.triton.http_url
        try:
            answer = infer(x, url=url, protocol=protocol, model_name=MODEL_NAME, timeout=10)
        except ClientError as exc:
            raise CaseFailed(f"a correct {protocol} request failed afterwards: {exc}") from None
        if version is not None:
            expect(answer.model_version == version, f"answered by version {answer.model_version}, expected {version}")
        diff = float(np.max(np.abs(answer.probabilities - model.predict_proba(x)[:, 1])))
        expect(diff <= ATOL, f"v{answer.model_version}'s answer differs from predict_proba by {diff:.3g}")
        return answer.model_version

    def check_fastapi(self) -> None:
        expect(self.fastapi_url is not None, "no FastAPI baseline running")
        status, body, _ = http("GET", f"{self.fastapi_url}/healthz", timeout=5)
        expect(status == 200, f"FastAPI /healthz answered {status}")
        x = self.model.x[:8]
        status, body, _ = http("POST", f"{self.fastapi_url}/predict", json.dumps({"rows": x.tolist()}).encode(),
                               {"Content-Type": "application/json"}, timeout=10)
        expect(status == 200, f"a correct FastAPI request got {status}: {short(body)}")
        proba = np.asarray(json.loads(body)["probabilities"], dtype=np.float64)
        diff = float(np.max(np.abs(proba - self.model.predict_proba(x))))
        expect(diff <= ATOL, f"FastAPI answer differs from predict_proba by {diff:.3g}")

    def start_triton(self, timeout: float = 180) -> None:
        self.triton.start(timeout=timeout)

    def good_versions(self) -> list[int]:
        """Published versions holding the reference model's own bytes."""
        digest = sha256(self.model.checkpoint)
        return sorted(v for v, files in self.ledger.published.items() if files.get("checkpoint.tl") == digest)

    def heal(self) -> str | None:
        """Bring the rig back to serving the reference model after a category that left it
        broken (so one failure does not cascade into the next categories). Returns what had
        to be repaired, or None."""
        repaired = []
        if self.s3.pid() is None:
            self.s3.start(timeout=60)
            repaired.append("S3 restarted")
        repo = self.repo()
        good = self.good_versions()
        served = repo.served_version()
        if good and served not in good:
            repo.set_served_version(good[-1])
            repaired.append(f"config.pbtxt pointed back from v{served} to v{good[-1]}")
        if self.triton.pid() is None:
            self.triton.start(timeout=180)
            repaired.append("Triton restarted")
        try:
            if repaired:
                raise CaseFailed("reload")
            self.check_serving(version=repo.served_version())
        except CaseFailed:
            time.sleep(1.1)  # a config write in a new second, so that Triton sees the change
            if repo.served_version() in good:
                repo.set_served_version(repo.served_version())
            self.triton.load_model(MODEL_NAME)
            self.check_serving(version=repo.served_version())
            repaired.append("model reloaded")
        return "; ".join(repaired) or None


def publish_reference(rig_repo, ledger: Ledger, model: RefModel, note: str) -> int:
    return ledger.publish(rig_repo, {"checkpoint.tl": model.checkpoint}, model.lineage(note), dict(CONFIG_KWARGS))


def reap_orphans(marker: str) -> list[int]:
    """Terminate processes of ours left behind by a SIGKILLed server: those whose command
    line contains ``marker`` (a state folder of this run) and whose parent is gone (pid 1).
    Returns their pids."""
    import psutil

    from serve.ports import terminate

    reaped = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            args = proc.info["cmdline"] or []
            if marker in " ".join(args) and proc.info["ppid"] == 1 and proc.pid != os.getpid():
                terminate(proc.pid, timeout=5)  # a stub ignores SIGTERM; terminate() follows with SIGKILL
                reaped.append(proc.pid)
                # a stub's shared-memory region is its third argument; nobody else uses it now
                if len(args) > 2 and re.fullmatch(r"[\w.-]+", args[2]):
                    with contextlib.suppress(OSError):
                        os.unlink(f"/dev/shm/{args[2]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return reaped


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
