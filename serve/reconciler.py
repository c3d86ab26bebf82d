"""Keep the Triton beside it on the version config.pbtxt names: the sidecar of every Triton pod.

    python -m serve.reconciler run   [--triton-url URL] [--port 8003] [--interval 2]   # foreground (the sidecar)
    python -m serve.reconciler start --state-dir .state/reconciler                     # background (make serve)
    python -m serve.reconciler stop  --state-dir .state/reconciler

Every ``RECONCILER_INTERVAL_S`` seconds it reads ``config.pbtxt`` (its ETag identifies what was tried) and the
canary pointer from the model repository, asks its own Triton which version is READY and, when they differ, asks
Triton to load the desired version (``fraudml.triton_control``, with the API key) and confirms Triton serves it.
The load request carries the configuration (``config.pbtxt`` with that one version), so Triton reloads exactly
when the version differs, whatever the objects' modification times, and a canary pod can serve another version
than ``config.pbtxt`` names. A pod that starts in the middle of a publish, a Triton that restarted, a rollback
(the pointer move of ``python -m serve.models rollback``): each converges on the next round, with no Job to run.

A version Triton refuses keeps the previous one serving; it is tried again when config.pbtxt changes, or after a
back-off (5 s, doubling up to 10 min), never in a loop. The reconciler only reads the repository: it runs with
the read-only S3 identity.

Prometheus metrics ``fraudml_reconciler_*`` on ``RECONCILER_PORT`` (``/metrics``), each with its help text there:
desired and served version, converged, triton_up, canary, loads_total{result}, repository_errors_total,
last_converged_timestamp_seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from fraudml.repository import ModelRepository
from fraudml.rollout import vanished_during_copy
from fraudml.storage import StorageError
from fraudml.triton_control import TritonRefused, TritonUnavailable, load_model, ready_version
from fraudml.tritonconfig import parse_config, served_versions
from serve.ports import port_in_use
from serve.settings import command_line
from serve.supervisor import Service, ServiceError


def in_canary(pod: str, percent: int) -> bool:
    """Whether ``pod`` belongs to a canary's ``percent`` % share (stable for a pod name)."""
    return zlib.crc32(pod.encode()) % 100 < percent


def load_config_json(config_text: str, version: int) -> str:
    """config.pbtxt pinned to ``version``, as the JSON Triton's load request takes."""
    from google.protobuf import json_format

    config = parse_config(config_text)
    del config.version_policy.specific.versions[:]
    config.version_policy.specific.versions.append(version)
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"fraudml_reconciler_{name}", doc, registry=registry)

        self.desired = gauge("desired_version", "Version this pod should serve (config.pbtxt, or the canary)")
        self.served = gauge("served_version", "Highest version Triton reports READY (0: none)")
        self.converged = gauge("converged", "1 when Triton serves the desired version")
        self.triton_up = gauge("triton_up", "1 when the local Triton answered the last round")
        self.canary = gauge("canary", "1 when this pod serves a canary's share")
        self.last_converged = gauge("last_converged_timestamp_seconds", "When Triton last served the desired version")
        # result: ok; refused; unavailable (Triton did not answer, or a file vanished while it copied the
        # model folder because a publisher archived an old version: retried at the next round)
        self.loads = Counter("fraudml_reconciler_loads", "Load requests sent to Triton", ["result"], registry=registry)
        self.repository_errors = Counter("fraudml_reconciler_repository_errors",
                                         "Rounds that could not read the model repository", registry=registry)


@dataclass
class Reconciler:
    """One Triton (``triton_url``) kept on what ``repo`` names for this pod."""

    repo: ModelRepository
    triton_url: str
    pod: str = field(default_factory=socket.gethostname)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    backoff_s: tuple[float, float] = (5.0, 600.0)
    confirm_s: float = 30.0
    _refused: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self):
        self.metrics = Metrics(self.registry)

    def desired(self) -> tuple[int, str, str] | None:
        """(version, config.pbtxt text, its ETag) this pod should serve; None before a publish."""
        blob = self.repo.read_config()
        versions = served_versions(blob.data.decode()) if blob else []
        if not versions:
            return None
        canary = self.repo.canary()
        chosen = bool(canary) and in_canary(self.pod, canary["percent"]) and canary["version"] != max(versions)
        self.metrics.canary.set(chosen)
        return (canary["version"] if chosen else max(versions)), blob.data.decode(), blob.tag

    def round(self) -> str:
        """One look and, when needed, one load. Returns what happened, for the log."""
        m = self.metrics
        try:
            want = self.desired()
        except (StorageError, OSError) as exc:
            m.repository_errors.inc()
            return f"cannot read the model repository: {exc}"
        try:
            served = ready_version(self.triton_url, self.repo.model_name)
        except (TritonUnavailable, TritonRefused) as exc:
            m.triton_up.set(0)
            return f"Triton does not answer: {exc}"
        m.triton_up.set(1)
        m.served.set(served or 0)
        if want is None:
            return "nothing published yet"
        version, config_text, etag = want
        m.desired.set(version)
        if served == version:
            return self._converged()
        m.converged.set(0)
        failures, retry_at = self._refused.get((etag, version), (0, 0.0))
        if time.monotonic() < retry_at:
            return f"waiting to retry version {version} (refused {failures}x)"
        try:
            load_model(self.triton_url, self.repo.model_name, config=load_config_json(config_text, version))
        except TritonRefused as exc:
            if vanished_during_copy(exc):  # a publisher archived an old version meanwhile: again next round
                m.loads.labels("unavailable").inc()
                return f"the load of version {version} met a file archived meanwhile; retrying: {exc}"
            m.loads.labels("refused").inc()
            delay = min(self.backoff_s[1], self.backoff_s[0] * 2**failures)
            self._refused[(etag, version)] = (failures + 1, time.monotonic() + delay)
            return f"Triton refused version {version}, still serves {served}; retry in {delay:.0f} s: {exc}"
        except TritonUnavailable as exc:
            m.loads.labels("unavailable").inc()
            return f"Triton did not answer the load of version {version}: {exc}"
        m.loads.labels("ok").inc()
        self._refused.pop((etag, version), None)
        deadline = time.monotonic() + self.confirm_s  # the previous version unloads after the switch
        while (served := ready_version(self.triton_url, self.repo.model_name)) != version:
            if time.monotonic() >= deadline:
                return f"asked Triton to load version {version}; it reports version {served}"
            time.sleep(0.1)
        m.served.set(served)
        return f"loaded version {version}; " + self._converged()

    def _converged(self) -> str:
        self.metrics.converged.set(1)
        self.metrics.last_converged.set(time.time())
        return "in sync"

    def run(self, interval_s: float, stop: threading.Event) -> None:
        last = None
        while not stop.is_set():
            what = self.round()
            if what != last:  # one line per change of state, not one per round
                print(f"[reconciler {time.strftime('%H:%M:%S')}] {what}", flush=True)
                last = what
            stop.wait(interval_s)


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.reconciler", __doc__)
    parser.add_argument("command", choices=["run", "start", "stop"])
    parser.add_argument("--model-repo", default=settings.model_repo, help="default: %(default)s (MODEL_REPO)")
    parser.add_argument("--triton-url", default=settings.triton.http_url, help="default: %(default)s")
    parser.add_argument("--port", type=int, default=settings.reconciler_port, help="metrics port (RECONCILER_PORT)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="metrics address (0.0.0.0 in a pod)")
    parser.add_argument("--interval", type=float, default=settings.reconciler_interval_s,
                        help="seconds between rounds (RECONCILER_INTERVAL_S)")
    parser.add_argument("--pod-name", default=os.environ.get("POD_NAME") or socket.gethostname(),
                        help="this pod's name: decides its canary share (POD_NAME)")
    parser.add_argument("--state-dir", default=str(settings.state_dir / "reconciler"), help="start/stop: pid, log")
    args = parser.parse_args(argv)
    if args.command == "run":
        repo = ModelRepository(args.model_repo, settings.model_name)
        reconciler = Reconciler(repo, args.triton_url, pod=args.pod_name)
        start_http_server(args.port, addr=args.metrics_host, registry=reconciler.registry)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        print(f"[reconciler] {args.triton_url} follows {args.model_repo}/{settings.model_name} as pod {args.pod_name}; "
              f"metrics on {args.metrics_host}:{args.port}", flush=True)
        reconciler.run(args.interval, stop)
        return 0
    service = Service(args.state_dir, "reconciler")  # reconciler.pid, reconciler.log (serve.supervisor)
    if args.command == "stop":
        print("reconciler stopped" if service.stop() else "reconciler was not running")
        return 0
    if service.is_running():
        print(f"reconciler already running (pid {service.pid()})")
        return 0
    metrics = [f"http://127.0.0.1:{args.port}/metrics"]
    if port_in_use(args.port):
        print(f"error: port {args.port} is already in use; choose another (--port / RECONCILER_PORT) or stop "
              "what listens there", file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "serve.reconciler", "run", "--model-repo", args.model_repo, "--triton-url",
           args.triton_url, "--port", str(args.port), "--interval", str(args.interval), "--pod-name", args.pod_name]
    try:
        service.launch(cmd, env=dict(os.environ), cwd=Path.cwd(), max_restarts=5, ready_urls=metrics, timeout=30)
    except ServiceError as e:
        print(f"error: the reconciler did not start: {e}", file=sys.stderr)
        return 1
    print(f"reconciler started (pid {service.pid()}): {args.triton_url} follows {args.model_repo}; "
          f"metrics {metrics[0]}, log {service.log_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
