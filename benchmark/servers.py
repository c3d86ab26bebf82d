"""The servers a run measures, started here (Triton per ``fil`` backend, the FastAPI baselines) or
already running (``--triton-url``, ``--fastapi-url``), each as an :class:`Endpoint` that every phase
measures the same way; and the machine they share: its facts, and the servers' and clients' CPUs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil

from fraudml import triton_control
from fraudml.lineage import installed_versions
from serve.ports import free_ports
from serve.supervisor import Service, is_ready


class BenchmarkError(RuntimeError):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoint:
    """Where one contender is measured."""

    host: str
    port: int
    protocol: str  # "http" | "grpc"
    server: str  # which server answers: "triton-native", "triton-python", "triton", "fastapi-..."


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class FastAPIServer:
    """``uvicorn benchmark.app:app`` with one worker, under the project's supervisor (no
    restarts: a baseline that dies must show in the results); its log is ``log``."""

    def __init__(self, name: str, port: int, env: dict[str, str], cpu: int | None, log: Path):
        self.name, self.port = name, port
        self.cmd = [*taskset(cpu), sys.executable, "-m", "uvicorn", "benchmark.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120"]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
        self.service = Service(log.parent, log.stem)

    def start(self) -> None:
        self.service.launch(self.cmd, env=self.env, cwd=Path(__file__).resolve().parent.parent)

    def pid(self) -> int | None:
        return self.service.pid()

    def wait(self, timeout: float = 90) -> None:
        self.service.wait(lambda: is_ready([f"http://127.0.0.1:{self.port}/healthz"]), timeout, what=self.name)

    def stop(self) -> None:
        self.service.stop(timeout=10)


def prepare_fil_runtime(model, runtime: str, cache_dir: Path) -> dict:
    """Make Triton's ``fil`` backend serve ``runtime`` from its first request: ``gtil`` is FIL_COMPILE=0;
    ``compiled`` compiles into the backends' cache before Triton starts, so the backend loads the library at
    once instead of serving GTIL while gcc runs on the server CPU, changing the runtime mid-run."""
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


def triton_facts(base_url: str, model: str) -> dict:
    """What a Triton says about itself and the model (any Triton, started here or not)."""
    facts: dict = {"url": base_url}
    with contextlib.suppress(triton_control.TritonUnavailable, triton_control.TritonRefused):
        facts["server_version"] = triton_control.server_version(base_url)
        config = triton_control.model_config(base_url, model)
        groups = config.get("instance_group") or []
        facts |= {"instance_group": [{"kind": g.get("kind"), "count": g.get("count")} for g in groups],
                  "instance_count": sum(int(g.get("count") or 1) for g in groups) or 1,
                  **{k: config.get(k) for k in ("backend", "max_batch_size", "dynamic_batching")},
                  "n_features": int(next(iter(config.get("input") or []), {}).get("dims", [0])[-1])}
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


PACKAGES = ("fastapi", "uvicorn", "pydantic", "scikit-learn", "imbalanced-learn", "treelite", "tl2cgen",
            "numpy", "locust", "tritonclient", "nvidia-pytriton", "metaflow")


def machine_info() -> dict:
    """The machine and the packages: results.json's ``machine``."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                           if ln.startswith("model name")), "unknown"),
        "cpu_count": os.cpu_count(),
        "cpus_available": sorted(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": installed_versions(PACKAGES),
    }


def cpu_plan(pin: bool, external: bool = False) -> dict:
    """The servers' CPU and the clients' CPU (none when the servers were already running)."""
    cpus = sorted(os.sched_getaffinity(0))
    why = ("the servers were already running: not started, so not pinned, by this benchmark" if external
           else "disabled (--no-pin)" if not pin else f"only {len(cpus)} CPU available" if len(cpus) < 2 else None)
    if why:
        return {"enabled": False, "why": why, "server_cpu": None, "client_cpu": None}
    return {"enabled": True, "server_cpu": cpus[0], "client_cpu": cpus[1],
            "method": "servers: started with CPU affinity {server} (taskset -c for uvicorn, "
                      "inherited affinity for tritonserver and its Python backend stubs); "
                      "clients: this process (sequential) via os.sched_setaffinity, locust and "
                      "perf_analyzer via taskset -c {client}"}


@contextlib.contextmanager
def pinned(cpu: int | None):
    """This process (and the children it starts) on ``cpu`` inside the block; None: unchanged."""
    own = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def process_affinity(root_pid: int) -> dict:
    """CPU lists of a process, its threads and its descendants (what pinning really did)."""
    out = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(root_pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error, OSError):
                threads = {t.id: sorted(os.sched_getaffinity(t.id)) for t in proc.threads()}
                lists = sorted({tuple(v) for v in threads.values()})
                out[f"{proc.name()}[{proc.pid}]"] = {"threads": len(threads), "cpus": [list(c) for c in lists]}
    return out


def start_servers(model, rows: np.ndarray, fil: dict, contenders: list[str], pins: dict, work: Path,
                  skipped: dict, stack: contextlib.ExitStack) -> tuple[dict[str, Endpoint], dict, dict]:
    """Start the FastAPI apps and a Triton per ``fil`` backend the contenders need, pinned to the server CPU,
    each stopped by ``stack``; return the contenders' endpoints, the servers' facts and the servers by contender."""
    ports, own = free_ports(8), {}
    with pinned(pins["server_cpu"]):  # the servers inherit it
        for name in [c for c in contenders if c.startswith("fastapi-")]:
            # what benchmark.app reads; it ignores empty values, so a BENCH_* of this process's environment
            # does not leak in. BENCH_COMPILED_LIB is the library Triton's fil backend loads.
            env = {"BENCH_MODEL_NAME": model.name, "BENCH_MODEL_VERSION": str(model.version),
                   "BENCH_N_FEATURES": str(rows.shape[1]), "BENCH_MAX_ROWS": str(model.max_batch_size),
                   "BENCH_RUNTIME": name.split("-", 1)[1], "BENCH_MODEL_FILE": str(model.model_file.resolve()),
                   "BENCH_MODEL_TYPE": model.model_type, "BENCH_COMPILED_LIB": str(fil["library"] or ""),
                   "BENCH_PIPELINE_FILE": str(model.pipeline_file.resolve()) if model.pipeline_file else ""}
            own[name] = FastAPIServer(name, ports[6] if name == "fastapi-treelite" else ports[7], env,
                                      pins["server_cpu"], work / f"uvicorn-{name}.log")
            own[name].start()
            stack.callback(_stop_quietly, own[name])
        facts: dict = {"tritons": _start_tritons(model, fil, contenders, ports, work, skipped, own, stack)}
        for name in [c for c in contenders if c.startswith("fastapi-")]:
            own[name].wait()
    lead = "native" if "triton-native" in own else "python"  # the headline Triton, and the one gRPC goes to
    endpoints = {name: Endpoint("127.0.0.1", server.port if name.startswith("fastapi-") else server.http_port,
                                "http", name) for name, server in own.items()}
    if "triton-grpc" in contenders and f"triton-{lead}" in own:
        endpoints["triton-grpc"] = Endpoint("127.0.0.1", own[f"triton-{lead}"].grpc_port, "grpc", f"triton-{lead}")
    if facts["tritons"]:
        facts["triton"] = facts["tritons"][lead]
    library, first = fil["library"], next((s for n, s in own.items() if n.startswith("fastapi-")), None)
    facts["fastapi"] = {  # how the FastAPI baselines run
        "command": shlex.join(first.cmd) if first else None, "workers": 1,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "handler": "async def, model called inline (no thread-pool hop)",
        "treelite_runtime": "the fil backend's predictor, " + (f"tl2cgen-compiled library {library}" if library
                                                              else "Treelite GTIL (C API)") + ", 1 thread"}
    return endpoints, facts, own


def _stop_quietly(server) -> None:
    """A server that will not stop cleanly must not fail (or hide the error of) a run that measured."""
    with contextlib.suppress(Exception):
        server.stop()


def _start_tritons(model, fil: dict, contenders: list[str], ports: list[int], work: Path, skipped: dict,
                   own: dict, stack: contextlib.ExitStack) -> dict:
    """A Triton per ``fil`` backend the contenders need, into ``own``; their facts by backend.
    Where the native backend cannot serve, triton-native is skipped (and gRPC goes to the
    Python backend's Triton)."""
    from serve.triton import TritonError, TritonServer

    wanted = {"native": {"triton-native", "triton-grpc"}, "python": {"triton-python"}}
    backends = [backend for backend, names in wanted.items() if names & set(contenders)]
    compiled, facts = fil["runtime"] == "compiled", {}
    for i, backend in enumerate(backends):  # grows by "python" when gRPC needs it as a stand-in
        try:
            triton = TritonServer(  # the project's launcher on the benchmark's copy of the repository
                str(model.triton_repo), http_port=ports[3 * i], grpc_port=ports[3 * i + 1],
                metrics_port=ports[3 * i + 2], state_dir=work / f"triton-{backend}",
                load_models=(model.name,), env={**fil["env"], "FIL_BACKEND": backend},
                fil_cache_dir=fil["env"].get("FIL_CACHE_DIR"))
            stack.callback(_stop_quietly, triton)
            triton.start(timeout=120)
        except TritonError as e:
            if backend != "native":
                raise
            skipped["triton-native"] = f"the native fil backend cannot serve here: {str(e).splitlines()[0]}"
            backends += ["python"] if "triton-grpc" in contenders and "python" not in backends else []
            continue
        own[f"triton-{backend}"] = triton
        if compiled:
            with contextlib.suppress(TritonError):  # the predictor state below says what it serves instead
                triton.wait_compiled(model.name, timeout=180)
        version, how = list(triton.predictor_state(model.name).items() or [(None, None)])[-1]
        serving = how and f"{model.name}/{version}: {SERVED_WITH[how]}"
        facts[backend] = {"start_to_ready_s": round(triton.startup_seconds, 2), **triton_facts(triton.http_url, model.name),
                          "fil_backend_kind": backend, "fil_backend": serving, "fil_compile": fil["env"]["FIL_COMPILE"]}
        if compiled and how != "compiled":
            raise BenchmarkError(f"Triton's {backend} fil backend is not serving the compiled library ({serving}); "
                                 f"see {triton.log_file}, or run with --triton-runtime gtil")
    return facts
