"""The servers a benchmark run measures: the ones it starts itself (Triton per ``fil`` backend,
the FastAPI baselines) or ones that are already running (``--triton-url``, ``--fastapi-url``).
Every contender ends up as an :class:`Endpoint`, so the sequential, locust and perf_analyzer
phases measure a started and an external server the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmark import model_source
from fraudml import triton_control
from serve.supervisor import Service, ServiceError, is_ready


class BenchmarkError(RuntimeError):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where one contender is measured."""

    host: str
    port: int
    protocol: str  # "http" | "grpc"
    server: str  # which server answers: "triton-native", "triton-python", "triton", "fastapi-..."

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class FastAPIServer:
    """``uvicorn benchmark.app:app`` with one worker, under the project's supervisor (no
    restarts: a baseline that dies must show in the results); its log is ``log``."""

    def __init__(self, name: str, port: int, env: dict[str, str], cpu: int | None, log: Path):
        self.name, self.port, self.log = name, port, log
        self.cmd = [*taskset(cpu), sys.executable, "-m", "uvicorn", "benchmark.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120"]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
        self.service = Service(log.parent, log.stem)

    def start(self) -> None:
        self.service.start(self.cmd, env=self.env, cwd=Path(__file__).resolve().parent.parent)

    def pid(self) -> int | None:
        return self.service.pid()

    def wait(self, timeout: float = 90) -> None:
        try:
            self.service.wait(lambda: is_ready([f"http://127.0.0.1:{self.port}/healthz"]), timeout, what=self.name)
        except ServiceError as e:
            raise BenchmarkError(str(e)) from None

    def stop(self) -> None:
        self.service.stop(timeout=10)


def fastapi_facts(server: FastAPIServer | None, library: Path | None) -> dict:
    """How the FastAPI baselines run: results.json's ``servers.fastapi``."""
    return {"command": shlex.join(server.cmd) if server else None, "workers": 1,
            "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "handler": "async def, model called inline (no thread-pool hop)",
            "treelite_runtime": "the fil backend's predictor, " + (f"tl2cgen-compiled library {library}" if library
                                                                  else "Treelite GTIL (C API)") + ", 1 thread"}


def start_triton(model: model_source.BenchModel, ports: list[int], state_dir: Path, fil: dict, backend: str):
    """The project's Triton launcher on the benchmark's copy of the model repository, with
    the ``fil`` backend ``backend`` ("native" or "python", FIL_BACKEND)."""
    from serve.triton import TritonServer

    server = TritonServer(
        str(model.triton_repo), http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
        state_dir=state_dir, load_models=(model.name,), model_control="explicit",
        env={**fil["env"], "FIL_BACKEND": backend}, fil_cache_dir=fil["env"].get("FIL_CACHE_DIR"),
    )
    server.start(timeout=120)
    return server


def prepare_fil_runtime(model: model_source.BenchModel, runtime: str, cache_dir: Path) -> dict:
    """Make Triton's ``fil`` backend start on ``runtime`` from its first request.

    ``compiled``: compile the model into the backends' cache before Triton starts (the
    backend then loads the cached library at once instead of serving GTIL while gcc runs
    beside it on the server CPU, which would change the runtime in the middle of the run).
    ``gtil``: FIL_COMPILE=0, Treelite GTIL only.
    """
    from serve.backends.fil import fil_forest as ff

    if runtime == "gtil":
        return {"runtime": "gtil", "env": {"FIL_COMPILE": "0"}, "library": None}
    started = time.monotonic()
    library = ff.compile_model(ff.load_model(model.model_file, model.model_type),
                               ff.file_sha256(model.model_file), cache_dir, jobs=os.cpu_count() or 1)
    return {"runtime": "compiled", "env": {"FIL_COMPILE": "1", "FIL_CACHE_DIR": str(cache_dir)},
            "library": library, "compile_or_cache_s": round(time.monotonic() - started, 2)}


SERVED_WITH = {  # predictor_state -> what the report says
    "compiled": "compiled library",
    "gtil": "Treelite GTIL (compiling, or FIL_COMPILE=0)",
    "gtil (final)": "Treelite GTIL for good (compilation failed or was refused)",
}


def triton_serving_line(server, timeout: float, want_compiled: bool) -> str | None:
    """What the fil backend serves the server's model with, from its ``fil_compiled`` gauge
    (``TritonServer.predictor_state``), e.g. "fraud-classifier/1: compiled library"; with
    ``want_compiled``, wait (bounded) until it serves the compiled library. None without the gauge."""
    from serve.triton import TritonError

    name = server.load_models[0]
    if want_compiled:
        with contextlib.suppress(TritonError):  # the answer below says what it serves instead
            server.wait_compiled(name, timeout=timeout)
    state = server.predictor_state(name)
    if not state:
        return None
    version, how = list(state.items())[-1]
    return f"{name}/{version}: {SERVED_WITH[how]}"


def triton_facts(base_url: str, model: str, ready_s: float | None = None) -> dict:
    """What a Triton says about itself and the model (any Triton, started here or not)."""
    facts: dict = {"url": base_url}
    if ready_s is not None:
        facts["start_to_ready_s"] = round(ready_s, 2)
    with contextlib.suppress(triton_control.TritonUnavailable, triton_control.TritonRefused):
        facts["server_version"] = triton_control.server_version(base_url)
        config = triton_control.model_config(base_url, model)
        groups = config.get("instance_group") or []
        facts["instance_group"] = [{"kind": g.get("kind"), "count": g.get("count")} for g in groups]
        facts["instance_count"] = sum(int(g.get("count") or 1) for g in groups) or 1
        facts["backend"] = config.get("backend")
        facts["max_batch_size"] = config.get("max_batch_size")
        facts["dynamic_batching"] = config.get("dynamic_batching")
        facts["n_features"] = int(next(iter(config.get("input") or []), {}).get("dims", [0])[-1])
    return facts


def _host_port(url: str, default_port: int, what: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise BenchmarkError(f"{what} {url!r} is not a URL like http://host:port")
    return parts.hostname, parts.port or default_port


def external_endpoints(triton_url: str | None, triton_grpc_url: str | None, fastapi_urls: tuple[str, ...],
                       model: str) -> tuple[dict[str, Endpoint], dict]:
    """The contenders of already-running servers, checked reachable, and what they say about
    themselves: Triton's version and model config, each FastAPI app's runtime (its /healthz)."""
    endpoints: dict[str, Endpoint] = {}
    facts: dict = {}
    if triton_url:
        host, port = _host_port(triton_url, 8000, "--triton-url")
        base = f"http://{host}:{port}"
        if not triton_control.is_ready(base, model, timeout=10):
            raise BenchmarkError(f"Triton at {base} does not serve model {model!r} (not ready or not reachable); "
                                 "check --triton-url and --model-name")
        endpoints["triton-http"] = Endpoint(host, port, "http", "triton")
        facts["triton"] = triton_facts(base, model)
    if triton_grpc_url:
        host, port = _host_port(triton_grpc_url, 8001, "--triton-grpc-url")
        endpoints["triton-grpc"] = Endpoint(host, port, "grpc", "triton")
    for url in fastapi_urls:
        host, port = _host_port(url, 80, "--fastapi-url")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5.0) as r:
                health = json.loads(r.read())
        except (OSError, ValueError) as e:
            raise BenchmarkError(f"FastAPI app at {url} did not answer /healthz: {e}") from None
        name = f"fastapi-{health.get('runtime', 'unknown')}"
        if name in endpoints:
            raise BenchmarkError(f"two --fastapi-url servers both run {health.get('runtime')!r}")
        endpoints[name] = Endpoint(host, port, "http", name)
        facts[name] = {"url": f"http://{host}:{port}", **health}
    return endpoints, facts
