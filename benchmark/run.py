"""Benchmark: Triton (HTTP, gRPC) against FastAPI + Uvicorn (sklearn, Treelite), one model.

    python -m benchmark.run [--quick] [--n N] [--users 1,8,32] [--duration S]
                            [--state-dir .state] [--model-repo URI] [--version V]
                            [--reference-model]

Contenders, all serving the same model version to the same rows on the same machine in
one run:

  triton-http       the bundled Triton, KServe v2 JSON over HTTP, local `fil` backend
  triton-grpc       the same server over gRPC (tritonclient.grpc)
  fastapi-sklearn   FastAPI + Uvicorn (1 worker), the pickled pipeline's predict_proba:
                    the baseline of the published comparison
  fastapi-treelite  FastAPI + Uvicorn (1 worker), the very model file Triton serves,
                    predicted with Treelite GTIL: the fair baseline

Phases: (1) sequential, the published method: a warm-up, then N one-row requests one
after another per contender, every latency kept; (2) load: locust, headless, FastHttpUser,
at each user count, against triton-http and both FastAPI apps, with Triton's batch
statistics read before and after; (3) a perf_analyzer concurrency sweep over Triton HTTP
and gRPC as a cross-check of locust.

On a machine with 2+ CPUs every server runs on the first CPU and every client (this
process's sequential client, locust, perf_analyzer) on the second, the same for every
contender; results.json records the CPU lists each process actually had.

Model: by default the served version of the model repository (--model-repo; an s3:// repo
reads the local SeaweedFS credentials from <state-dir>/s3/credentials.env when they are not
in the environment), with its sklearn pipeline from the Metaflow run named in its
lineage.json. --reference-model trains the reference model here instead (RandomForest,
100 trees, depth 10, 30 features) and publishes it into a private local repository.

Output: benchmark/results/<UTC time>/ (results.json, report.md, two PNGs, raw files) and
the link benchmark/results/latest. Numbers are only as quiet as the machine: the report
records the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark import load as load_phase
from benchmark import model_source, perf, report, sequential

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_CONTENDERS = ("triton-http", "triton-grpc", "fastapi-sklearn", "fastapi-treelite")
LOAD_TARGETS = ("triton-http", "fastapi-treelite", "fastapi-sklearn")
SCHEMA = "fraud-classifier-benchmark/1"
PACKAGES = ("fastapi", "uvicorn", "pydantic", "scikit-learn", "imbalanced-learn", "treelite", "tl2cgen",
            "numpy", "locust", "tritonclient", "nvidia-pytriton", "metaflow")


class BenchmarkError(RuntimeError):
    """The benchmark cannot run; the message says why and what to do."""


@dataclass
class Plan:
    """Every knob of one run (the CLI fills it; tests build it directly)."""

    state_dir: Path = Path(".state")
    results_dir: Path = RESULTS_DIR
    model_repo: str = "s3://models/triton"
    version: int | None = None
    reference_model: bool = False
    reference_trees: int = 100
    reference_depth: int = 10
    pipeline_artifact: str | None = None
    data: str | None = None
    quick: bool = False
    n: int = 10_000
    warmup: int = 500
    distinct_rows: int = 2_000
    contenders: tuple[str, ...] = ALL_CONTENDERS
    users: tuple[int, ...] = (1, 8, 32)
    duration_s: int = 20
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    perf_mode: str = "stable"
    perf_measurement_ms: int = 3000
    perf_max_trials: int = 6
    perf_request_count: int = 10_000
    pin: bool = True
    progress: bool = True
    parity_atol: float = 1e-5
    triton_runtime: str = "compiled"  # what the fil backend serves: compiled (default) or gtil
    in_process_calls: int = 1_000
    command: str | None = None

    @classmethod
    def quick_plan(cls, **overrides) -> Plan:
        values = dict(quick=True, n=1_000, warmup=100, distinct_rows=1_000, users=(1, 32), duration_s=5,
                      # The quick run cross-checks the 32-user locust figure only, with short
                      # stable windows: perf_analyzer 2.51's --request-count mode hung on HTTP here.
                      concurrency=(32,), perf_mode="stable", perf_measurement_ms=1000, perf_max_trials=3,
                      perf_request_count=3000,
                      in_process_calls=200)
        values.update(overrides)
        return cls(**values)


# ------------------------------------------------------------------------------------
# machine, pinning
# ------------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gib = round(mem_kib / 2**20, 1)
    versions = {}
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_available": sorted(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def cpu_plan(pin: bool) -> dict:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        why = "disabled (--no-pin)" if not pin else f"only {len(cpus)} CPU available"
        return {"enabled": False, "why": why, "server_cpu": None, "client_cpu": None}
    return {"enabled": True, "server_cpu": cpus[0], "client_cpu": cpus[1],
            "method": "servers: started with CPU affinity {server} (taskset -c for uvicorn, "
                      "inherited affinity for tritonserver and its Python backend stubs); "
                      "clients: this process (sequential) via os.sched_setaffinity, locust and "
                      "perf_analyzer via taskset -c {client}"}


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def process_affinity(root_pid: int) -> dict:
    """CPU lists of a process, its threads and its descendants (what pinning really did)."""
    import psutil

    out = {}
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        try:
            threads = {
                t.id: sorted(os.sched_getaffinity(t.id)) for t in proc.threads()
            }
            lists = sorted({tuple(v) for v in threads.values()})
            out[f"{proc.name()}[{proc.pid}]"] = {"threads": len(threads),
                                                 "cpus": [list(c) for c in lists]}
        except (psutil.Error, OSError):
            continue
    return out


# ------------------------------------------------------------------------------------
# servers
# ------------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-1500:] if log and log.is_file() else ""
            raise BenchmarkError(f"{url}: the server exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchmarkError(f"{url} not ready after {timeout:.0f} s")


class FastAPIServer:
    """``uvicorn benchmark.app:app`` with one worker, as a child process."""

    def __init__(self, name: str, port: int, env: dict[str, str], cpu: int | None, log: Path):
        self.name, self.port, self.log = name, port, log
        self.cmd = [*taskset(cpu), sys.executable, "-m", "uvicorn", "benchmark.app:app",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "120"]
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                         cwd=Path(__file__).resolve().parent.parent)

    def wait(self, timeout: float = 90) -> None:
        wait_http_ok(f"http://127.0.0.1:{self.port}/healthz", timeout, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            from serve.ports import terminate

            terminate(self.proc.pid, timeout=10, popen=self.proc)
        self.proc = None


def uvicorn_implementation() -> dict:
    import importlib.util

    return {
        "workers": 1,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "handler": "async def, model called inline (no thread-pool hop)",
    }


def start_triton(model: model_source.BenchModel, ports: list[int], work_dir: Path, fil: dict):
    """The project's Triton launcher on the benchmark's copy of the model repository."""
    from serve.triton import TritonServer

    server = TritonServer(
        str(model.triton_repo), http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
        state_dir=work_dir / "triton", load_models=(model.name,), model_control="explicit",
        env=fil["env"], fil_cache_dir=fil["env"].get("FIL_CACHE_DIR"),
    )
    server.start(timeout=120)
    return server


def prepare_fil_runtime(model: model_source.BenchModel, runtime: str, cache_dir: Path) -> dict:
    """Make Triton's ``fil`` backend start on ``runtime`` from its first request.

    ``compiled``: compile the model into the backend's cache before Triton starts (the
    backend then loads the cached library at once instead of serving GTIL while gcc runs
    beside it on the server CPU, which would change the runtime in the middle of the run).
    ``gtil``: FIL_COMPILE=0, Treelite GTIL only.
    """
    from benchmark.app import fil_forest

    if runtime == "gtil":
        return {"runtime": "gtil", "env": {"FIL_COMPILE": "0"}, "library": None}
    ff = fil_forest()
    started = time.monotonic()
    library = ff.compile_model(ff.load_model(model.model_file, model.model_type),
                               ff.file_sha256(model.model_file), cache_dir, jobs=os.cpu_count() or 1)
    return {"runtime": "compiled", "env": {"FIL_COMPILE": "1", "FIL_CACHE_DIR": str(cache_dir)},
            "library": library, "compile_or_cache_s": round(time.monotonic() - started, 2)}


def triton_serving_line(log_file: Path, timeout: float, want_compiled: bool) -> str | None:
    """The fil backend's 'serving with ...' log line; with ``want_compiled``, wait (bounded)
    until it serves the compiled library."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_file.read_text(errors="replace") if log_file.is_file() else ""
        lines = [ln for ln in text.splitlines() if "[fil]" in ln and "serving with" in ln]
        line = lines[-1] if lines else None
        if not want_compiled or (line and "compiled library" in line) or time.monotonic() > deadline:
            return line[line.index("[fil]"):].rstrip('"') if line else None
        time.sleep(0.2)


def in_process_runtimes(model: model_source.BenchModel, rows: np.ndarray, library: Path | None,
                        calls: int) -> dict:
    """Per-row predict time of each runtime in this process (no server, no network): what
    the model runtime alone costs, for the decomposition."""
    import pickle

    import treelite.gtil

    from benchmark.app import fil_forest, sklearn_single_thread

    ff = fil_forest()
    tl = ff.load_model(model.model_file, model.model_type)
    gtil = ff.GTILPredictor(tl, threads=1)
    runtimes: dict[str, tuple[str, callable]] = {}
    if model.pipeline_file is not None:
        with open(model.pipeline_file, "rb") as fh:
            pipeline = sklearn_single_thread(pickle.load(fh))
        runtimes["sklearn"] = ("sklearn predict_proba, n_jobs=1 (fastapi-sklearn)", pipeline.predict_proba)
    runtimes["gtil"] = ("Treelite GTIL via its C API, 1 thread (fil backend with FIL_COMPILE=0)", gtil.predict)
    if library is not None:
        compiled = ff.CompiledPredictor(library, n_features=gtil.n_features, n_outputs=gtil.n_outputs, threads=1)
        runtimes["compiled"] = ("tl2cgen-compiled library, 1 thread (fil backend default)", compiled.predict)
    runtimes["gtil_python"] = ("treelite.gtil.predict, the public Python wrapper, nthread=1",
                               lambda x: treelite.gtil.predict(tl, x, nthread=1))
    out = {}
    one_rows = [r[None, :] for r in rows]
    for key, (what, fn) in runtimes.items():
        n = max(20, calls // 5) if key == "sklearn" else calls
        for i in range(min(20, n)):
            fn(one_rows[i % len(one_rows)])
        lat = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            fn(one_rows[i % len(one_rows)])
            lat.append(time.perf_counter_ns() - t0)
        us = np.asarray(lat, dtype=np.float64) / 1e3
        out[key] = {"what": what, "calls": n, "p50_us": float(np.median(us)), "mean_us": float(us.mean())}
    return out


def _triton_pid(server) -> int | None:
    pid = getattr(server, "pid", None)
    if callable(pid):
        with contextlib.suppress(Exception):
            pid = pid()
    if isinstance(pid, int):
        return pid
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "tritonserver" in child.name():
                return child.pid
    return None


# ------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------


def _progress(plan: Plan, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req" if desc == "sequential" else "step",
                disable=not plan.progress, dynamic_ncols=True, mininterval=0.5,
                leave=desc == "benchmark")


class Phases:
    """The top-level progress bar, and how long each phase took (kept in results.json)."""

    def __init__(self, bar):
        self.bar, self.seconds, self._name, self._t0 = bar, {}, None, 0.0

    def start(self, name: str) -> None:
        self._name, self._t0 = name, time.monotonic()
        self.bar.set_postfix_str(name, refresh=True)

    def done(self) -> None:
        self.seconds[self._name] = round(time.monotonic() - self._t0, 1)
        self.bar.update(1)


def run(plan: Plan) -> Path:
    """Run the whole benchmark; returns the results folder (``<results_dir>/<UTC time>``).

    A run that fails leaves what it wrote in ``<UTC time>-failed`` and does not move ``latest``.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = plan.results_dir / stamp
    try:
        return _run(plan, out, stamp)
    except BaseException:
        if out.is_dir():
            out.rename(out.with_name(f"{stamp}-failed"))
        raise


def _run(plan: Plan, out: Path, stamp: str) -> Path:
    from tqdm import tqdm

    from serve.ports import free_ports

    tqdm.monitor_interval = 0  # no monitor thread beside the timed client
    started = time.monotonic()
    work = plan.state_dir / "benchmark"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "schema": SCHEMA,
        "created_utc": stamp,
        "command": plan.command,
        "quick": plan.quick,
        "machine": machine_info(),
        "load_average": {"before": list(os.getloadavg())},
    }
    bar = _progress(plan, 7, "benchmark")
    phases = Phases(bar)

    # -- model -------------------------------------------------------------------------
    phases.start("model")
    if plan.reference_model:
        model = model_source.reference_model(work / "model", plan.reference_trees, plan.reference_depth)
    else:
        if plan.model_repo.startswith("s3://"):
            model_source.load_env_file(plan.state_dir / "s3" / "credentials.env")
        model = model_source.from_repository(plan.model_repo, work / "model", plan.version,
                                             plan.pipeline_artifact)
    rows, rows_origin = model_source.benchmark_rows(model, plan.distinct_rows, data=plan.data)
    rows_file = work / "rows.npy"
    np.save(rows_file, rows)
    results["model"] = model.to_json()
    results["rows"] = {"distinct": int(len(rows)), "n_features": int(rows.shape[1]), "origin": rows_origin,
                       "order": "request i sends row i mod distinct, identical for every contender"}
    contenders = [c for c in plan.contenders if c in ALL_CONTENDERS]
    skipped = {}
    if "fastapi-sklearn" in contenders and model.pipeline_file is None:
        contenders.remove("fastapi-sklearn")
        skipped["fastapi-sklearn"] = model.pipeline_note
    results["skipped"] = skipped
    out.mkdir(parents=True, exist_ok=True)
    phases.done()

    # -- runtimes ------------------------------------------------------------------------
    pins = cpu_plan(plan.pin)
    results["pinning"] = pins
    own_affinity = os.sched_getaffinity(0)
    phases.start("runtimes")
    fil = prepare_fil_runtime(model, plan.triton_runtime, (plan.state_dir / "fil-cache").absolute())
    results["fil_runtime"] = {k: v for k, v in fil.items() if k != "env"}
    if pins["enabled"]:
        os.sched_setaffinity(0, {pins["client_cpu"]})
    try:
        results["in_process"] = in_process_runtimes(model, rows, fil["library"], plan.in_process_calls)
    finally:
        os.sched_setaffinity(0, own_affinity)
    phases.done()

    # -- servers -----------------------------------------------------------------------
    ports = free_ports(5)
    triton = None
    apis: dict[str, FastAPIServer] = {}
    try:
        phases.start("servers")
        if pins["enabled"]:
            os.sched_setaffinity(0, {pins["server_cpu"]})  # children inherit it
        base_env = {"BENCH_MODEL_NAME": model.name, "BENCH_MODEL_VERSION": str(model.version),
                    "BENCH_N_FEATURES": str(rows.shape[1]), "BENCH_MAX_ROWS": str(model.max_batch_size)}
        for name in contenders:
            if not name.startswith("fastapi-"):
                continue
            runtime = name.split("-", 1)[1]
            env = {**base_env, "BENCH_RUNTIME": runtime}
            if runtime == "treelite":
                env |= {"BENCH_MODEL_FILE": str(model.model_file.resolve()), "BENCH_MODEL_TYPE": model.model_type}
                if fil["library"] is not None:  # the same library Triton's fil backend loads
                    env["BENCH_COMPILED_LIB"] = str(fil["library"])
            else:
                env |= {"BENCH_PIPELINE_FILE": str(model.pipeline_file.resolve())}
            port = ports[3] if runtime == "treelite" else ports[4]
            apis[name] = FastAPIServer(name, port, env, pins["server_cpu"], work / f"uvicorn-{name}.log")
            apis[name].start()
        t0 = time.monotonic()
        if any(c.startswith("triton") for c in contenders):
            triton = start_triton(model, ports[:3], work, fil)
        triton_ready_s = time.monotonic() - t0
        serving = triton_serving_line(Path(triton.log_file), 180, fil["runtime"] == "compiled") if triton else None
        for server in apis.values():
            server.wait()
        if pins["enabled"]:
            os.sched_setaffinity(0, {pins["client_cpu"]})
        else:
            os.sched_setaffinity(0, own_affinity)
        pins["observed"] = {"client (this process)": sorted(os.sched_getaffinity(0))}
        for name, server in apis.items():
            pins["observed"][name] = process_affinity(server.proc.pid)
        servers: dict = {"fastapi": {"command": shlex.join(next(iter(apis.values())).cmd) if apis else None,
                                     **uvicorn_implementation()}}
        if triton is not None:
            pid = _triton_pid(triton)
            if pid:
                pins["observed"]["triton"] = process_affinity(pid)
            servers["triton"] = triton_facts(ports[0], model.name, triton_ready_s)
            servers["triton"]["fil_backend"] = serving
            servers["triton"]["fil_compile"] = fil["env"]["FIL_COMPILE"]
            if fil["runtime"] == "compiled" and (not serving or "compiled library" not in serving):
                raise BenchmarkError(f"Triton's fil backend is not serving the compiled library ({serving}); "
                                     f"see {triton.log_file}, or run with --triton-runtime gtil")
        servers["fastapi"]["treelite_runtime"] = (
            f"the fil backend's predictor, {'tl2cgen-compiled library ' + str(fil['library']) if fil['library'] else 'Treelite GTIL (C API)'}, 1 thread")
        results["servers"] = servers
        phases.done()

        # -- sequential ------------------------------------------------------------------
        phases.start("sequential")
        timed = []
        for name in contenders:
            if name == "triton-http":
                timed.append(sequential.triton_http_contender(ports[0], rows, model.name))
            elif name == "triton-grpc":
                timed.append(sequential.triton_grpc_contender(ports[1], rows, model.name))
            else:
                timed.append(sequential.fastapi_contender(name, apis[name].port, rows))
        with _progress(plan, plan.n * len(timed), "sequential") as seq_bar:
            sequential.run_sequential(timed, plan.n, warmup=plan.warmup, n_rows=len(rows), progress=seq_bar)
        for c in timed:
            c.close()
        results["n"] = plan.n
        results["warmup"] = plan.warmup
        results["contenders"] = {
            c.name: {**sequential.summarize(c.latencies_ns), "model_versions_answered": sorted(c.versions),
                     "client": CLIENTS[c.name], "reconnects": c.reconnects()}
            for c in timed
        }
        results["parity"] = sequential.parity(timed, plan.parity_atol)
        np.save(out / "rows.npy", rows)
        np.savez_compressed(out / "answers.npz", **{
            c.name: np.asarray([c.answers[i] for i in sorted(c.answers)], dtype=np.float64) for c in timed})
        np.savez_compressed(out / "sequential_latencies_ns.npz",
                            **{c.name: np.asarray(c.latencies_ns, dtype=np.int64) for c in timed})
        phases.done()

        # -- load --------------------------------------------------------------------------
        phases.start("load")
        results["load"], results["batching"] = {}, {}
        targets = [t for t in LOAD_TARGETS if t in contenders]
        if plan.users and plan.duration_s > 0 and targets:
            with _progress(plan, len(plan.users) * len(targets), "load") as load_bar:
                for users in plan.users:
                    for target in targets:
                        load_bar.set_postfix_str(f"{target} u={users}", refresh=True)
                        port = ports[0] if target == "triton-http" else apis[target].port
                        before = load_phase.triton_model_stats(ports[0], model.name) if target == "triton-http" else None
                        result = load_phase.run_locust(
                            target="triton" if target == "triton-http" else "fastapi",
                            host=f"http://127.0.0.1:{port}", users=users, duration_s=plan.duration_s,
                            rows_file=rows_file, out_dir=out / "locust", name=f"{target}_u{users}",
                            taskset=taskset(pins["client_cpu"]), model=model.name)
                        results["load"].setdefault(target, {})[str(users)] = result
                        if before is not None:
                            after = load_phase.triton_model_stats(ports[0], model.name)
                            results["batching"][str(users)] = load_phase.batching_delta(before, after)
                        load_bar.update(1)
        results["load_settings"] = {"tool": "locust (headless, FastHttpUser, no wait time: closed loop)",
                                    "users": list(plan.users), "spawn_rate": "all users at once",
                                    "duration_s": plan.duration_s, "processes": 1,
                                    "measured_by": "the locustfile times and counts every request itself (locust 2.18's "
                                                   "FastHttpUser reports whole milliseconds); req/s = requests / "
                                                   "seconds from test start to stop"}
        phases.done()

        # -- perf_analyzer -------------------------------------------------------------------
        phases.start("perf_analyzer")
        results["perf_analyzer"] = {}
        if plan.concurrency and triton is not None:
            http_port = ports[0] if "triton-http" in contenders else None
            grpc_port = ports[1] if "triton-grpc" in contenders else None
            n_runs = len(plan.concurrency) * ((http_port is not None) + (grpc_port is not None))
            try:
                with _progress(plan, n_runs, "perf_analyzer") as perf_bar:
                    results["perf_analyzer"] = perf.sweep(
                        http_port=http_port, grpc_port=grpc_port, concurrencies=list(plan.concurrency),
                        rows=rows, work_dir=out / "perf_analyzer", lib_dir=work / "lib",
                        taskset=taskset(pins["client_cpu"]), mode=plan.perf_mode,
                        measurement_ms=plan.perf_measurement_ms, max_trials=plan.perf_max_trials,
                        request_count=plan.perf_request_count, progress=perf_bar, model=model.name)
            except perf.PerfAnalyzerMissing as exc:
                results["perf_analyzer"] = {"error": str(exc)}
        if triton is not None:
            results["servers"]["triton"]["stats_after"] = _batch_summary(load_phase.triton_model_stats(ports[0], model.name))
        phases.done()
    finally:
        os.sched_setaffinity(0, own_affinity)
        for server in apis.values():
            server.stop()
        if triton is not None:
            with contextlib.suppress(Exception):
                triton.stop()

    # -- results, report -------------------------------------------------------------------
    phases.start("report")
    results["load_average"]["after"] = list(os.getloadavg())
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["phase_seconds"] = phases.seconds
    results["analysis"] = report.analyze(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    report.write_report(out)
    latest = plan.results_dir / "latest"
    with contextlib.suppress(FileNotFoundError):
        latest.unlink()
    latest.symlink_to(out.name)
    phases.done()
    bar.close()
    return out


CLIENTS = {
    "triton-http": "http.client keep-alive, KServe v2 JSON body pre-encoded",
    "triton-grpc": "tritonclient.grpc InferenceServerClient.infer, inputs pre-built",
    "fastapi-sklearn": "http.client keep-alive, JSON body pre-encoded",
    "fastapi-treelite": "http.client keep-alive, JSON body pre-encoded",
}


def triton_facts(http_port: int, model: str, ready_s: float) -> dict:
    base = f"http://127.0.0.1:{http_port}"
    facts: dict = {"start_to_ready_s": round(ready_s, 2)}
    with contextlib.suppress(OSError, ValueError):
        meta = _get_json(base + "/v2")
        facts["server_version"] = meta.get("version")
    with contextlib.suppress(OSError, ValueError):
        config = _get_json(f"{base}/v2/models/{model}/config")
        groups = config.get("instance_group") or []
        facts["instance_group"] = [{"kind": g.get("kind"), "count": g.get("count")} for g in groups]
        facts["instance_count"] = sum(int(g.get("count") or 1) for g in groups) or 1
        facts["backend"] = config.get("backend")
        facts["max_batch_size"] = config.get("max_batch_size")
        facts["dynamic_batching"] = config.get("dynamic_batching")
    return facts


def _batch_summary(stats: dict) -> dict:
    return {"inference_count": stats.get("inference_count"), "execution_count": stats.get("execution_count")}


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value)}")


# ------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in ALL_CONTENDERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown contender(s) {unknown}; choose from {', '.join(ALL_CONTENDERS)}")
    return names


def parse_args(argv: list[str] | None = None) -> Plan:
    defaults, quick = Plan(), Plan.quick_plan()
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"the demo's short run (N={quick.n}, users {','.join(map(str, quick.users))} for "
                        f"{quick.duration_s} s, perf_analyzer at {','.join(map(str, quick.concurrency))}); "
                        "about 2 minutes including server start-ups")
    p.add_argument("--n", type=int, help=f"sequential requests per contender (default {defaults.n}, quick {quick.n})")
    p.add_argument("--warmup", type=int, help=f"untimed requests per contender first (default {defaults.warmup})")
    p.add_argument("--users", type=_ints, help="locust user counts, e.g. 1,8,32 (default 1,8,32; quick 1,32)")
    p.add_argument("--duration", type=int, help=f"seconds per locust run (default {defaults.duration_s}; "
                                                f"quick {quick.duration_s}); 0 skips the load phase")
    p.add_argument("--concurrency", type=_ints, help="perf_analyzer concurrency levels (default 1,2,4,8,16,32; "
                                                     "quick 32)")
    p.add_argument("--no-load", action="store_true", help="skip the locust phase")
    p.add_argument("--no-perf", action="store_true", help="skip the perf_analyzer phase")
    p.add_argument("--contenders", type=_names, help=f"subset of {','.join(ALL_CONTENDERS)} (default: all)")
    p.add_argument("--state-dir", default=".state", help="servers' state, model copy, logs (default: %(default)s)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where <UTC time>/ and latest go "
                                                                   "(default: benchmark/results)")
    p.add_argument("--model-repo", default=os.environ.get("MODEL_REPO", defaults.model_repo),
                   help="model repository: s3://bucket/prefix or a folder (default: %(default)s, env MODEL_REPO)")
    p.add_argument("--version", type=int, help="model version to benchmark (default: the served one)")
    p.add_argument("--pipeline-artifact", help="name of the sklearn pipeline artifact in the Metaflow run "
                                               "(default: the first of best_pipeline, pipeline, best_model, model)")
    p.add_argument("--data", help="take rows from this dataset (CSV path or s3:// URL) instead of the training "
                                  "run's test set (or, without one, fresh synthetic rows)")
    p.add_argument("--reference-model", action="store_true",
                   help="train the reference model here (RandomForest, 100 trees, depth 10) instead of "
                        "reading the model repository")
    p.add_argument("--reference-trees", type=int, default=defaults.reference_trees, help=argparse.SUPPRESS)
    p.add_argument("--reference-depth", type=int, default=defaults.reference_depth, help=argparse.SUPPRESS)
    p.add_argument("--triton-runtime", choices=("compiled", "gtil"), default="compiled",
                   help="what Triton's fil backend (and fastapi-treelite) predict with: the tl2cgen-compiled "
                        "model, compiled into <state-dir>/fil-cache before Triton starts (default, what "
                        "`make serve` serves), or Treelite GTIL (FIL_COMPILE=0)")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and clients to separate CPUs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    plan = Plan.quick_plan() if args.quick else Plan()
    plan.command = "python -m benchmark.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    plan.state_dir = Path(args.state_dir)
    plan.results_dir = Path(args.results_dir)
    plan.model_repo = args.model_repo
    plan.version = args.version
    plan.pipeline_artifact = args.pipeline_artifact
    plan.data = args.data
    plan.reference_model = args.reference_model
    plan.reference_trees, plan.reference_depth = args.reference_trees, args.reference_depth
    plan.pin = not args.no_pin
    plan.triton_runtime = args.triton_runtime
    plan.progress = not args.no_progress
    if args.n is not None:
        plan.n = args.n
    if args.warmup is not None:
        plan.warmup = args.warmup
    if args.users is not None:
        plan.users = args.users
    if args.duration is not None:
        plan.duration_s = args.duration
    if args.concurrency is not None:
        plan.concurrency = args.concurrency
    if args.no_load:
        plan.users = ()
    if args.no_perf:
        plan.concurrency = ()
    if args.contenders:
        plan.contenders = args.contenders
    if plan.n < 1:
        p.error("--n must be >= 1")
    return plan


def main(argv: list[str] | None = None) -> int:
    from fraudml.storage import StorageError
    from serve.triton import TritonError

    plan = parse_args(argv)
    try:
        out = run(plan)
    except (BenchmarkError, model_source.ModelSourceError, LookupError, StorageError, TritonError,
            load_phase.LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary_text(json.loads((out / "results.json").read_text())))
    print(f"\nresults: {out}  (also {plan.results_dir / 'latest'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
