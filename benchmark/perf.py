"""A ``perf_analyzer`` concurrency sweep over Triton HTTP and gRPC: the cross-check of locust.

The binary is the one in the ``tritonclient==2.51.0`` wheel (the release of the bundled
server; DESIGN §2). It needs ``libb64.so.0d`` and ``libcudart.so.12``, which the
``nvidia-pytriton`` wheel carries under hashed names: :func:`perf_analyzer_env` links them
under their plain names in a private folder of the state dir and puts it on
``LD_LIBRARY_PATH`` for perf_analyzer only.

Every concurrency level is its own bounded run. ``stable`` mode lets perf_analyzer repeat
windows of ``measurement_interval_ms`` until three agree within the stability percentage,
at most ``max_trials`` windows; a level that does not stabilise (a shared machine) is
measured once more with the same windows and no stability condition (the average of the last
windows) and marked so: a fixed ``request_count`` fallback hung on this perf_analyzer or
reported about request-count req/s whatever the server did. ``count`` mode measures a fixed
number of requests per level straight away.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.servers import taskset

if TYPE_CHECKING:
    from benchmark.run import Bench

LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer or one of its libraries cannot be found."""


@dataclass(frozen=True)
class Method:
    """How perf_analyzer measures each level (results.json's ``perf_analyzer.settings``)."""

    mode: str = "stable"  # or "count"
    measurement_interval_ms: int = 2000
    max_trials: int = 5
    stability_percentage: int = 20
    request_count: int = 5000


def find_perf_analyzer() -> Path:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.is_file():
        return candidate
    if found := shutil.which("perf_analyzer"):
        return Path(found)
    raise PerfAnalyzerMissing("perf_analyzer not found: it comes with tritonclient[all]==2.51.0 (make venv)")


def perf_analyzer_env(lib_dir: Path) -> dict[str, str]:
    """Environment for perf_analyzer: ``lib_dir`` with the two plain-named links first on
    ``LD_LIBRARY_PATH``."""
    from serve.triton import bundle_paths

    _, libs = bundle_paths()  # the nvidia-pytriton wheel's nvidia_pytriton.libs folder
    lib_dir.mkdir(parents=True, exist_ok=True)
    for plain, pattern in LIBS.items():
        matches = sorted(libs.glob(pattern))
        if not matches:
            raise PerfAnalyzerMissing(f"{pattern} not found in {libs}: reinstall nvidia-pytriton")
        (lib_dir / plain).unlink(missing_ok=True)
        (lib_dir / plain).symlink_to(matches[0])
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH")) if p)
    return env


def parse_csv(path: Path) -> dict:
    """First data row of perf_analyzer's ``-f`` CSV; latencies converted from us to ms."""
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))

    def num(key: str) -> float | None:
        try:
            return float(row[key]) if row.get(key) not in (None, "") else None
        except ValueError:
            return None

    def ms(*keys: str) -> float:
        return sum((num(k) or 0.0) / 1e3 for k in keys)

    compute = ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
    return {
        "concurrency": int(num("Concurrency") or 0), "rps": num("Inferences/Second"),
        "p50_ms": ms("p50 latency"), "p90_ms": ms("p90 latency"), "p95_ms": ms("p95 latency"),
        "p99_ms": ms("p99 latency"),
        # the CSV has no average column: the client's average is the sum of its parts
        "mean_ms": ms("Client Send", "Network+Server Send/Recv", "Server Queue", *compute, "Client Recv"),
        "server_queue_ms": ms("Server Queue"), "server_compute_ms": ms(*compute),
        "client_send_recv_ms": ms("Client Send", "Client Recv"),
    }


def run_perf_analyzer(*, protocol: str, host: str, port: int, concurrency: int, input_data: Path, out_dir: Path,
                      env: dict[str, str], taskset: list[str], method: Method, model: str, tag: str = "") -> dict:
    """One perf_analyzer run at one concurrency; returns the parsed CSV row or the error.

    ``--async``: the requests in flight are kept by one client thread, not one thread each
    (32 sync threads on one client core measure the client's scheduling)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"perf_{tag}{protocol}_c{concurrency}"
    csv_path = out_dir / f"{name}.csv"
    base = [*taskset, str(find_perf_analyzer()), "-m", model, "-u", f"{host}:{port}", "--async",
            "-i", protocol, "-b", "1", "--concurrency-range", f"{concurrency}:{concurrency}",
            "--input-data", str(input_data), "-f", str(csv_path)]
    windows = ["-p", str(method.measurement_interval_ms), "--max-trials", str(method.max_trials)]
    # A healthy run needs its windows plus start-up; perf_analyzer 2.51 can hang on HTTP at high
    # concurrency, so a hung attempt costs a few windows' worth, not minutes (quick run: 32 s).
    timeout_s = 20 + 4 * method.max_trials * method.measurement_interval_ms / 1000
    if method.mode == "stable":
        attempts = [("stable windows", [*windows, "-s", str(method.stability_percentage)]),
                    ("windows averaged without stabilising", [*windows, "-s", "100"])]
    else:
        attempts = [(f"fixed request count ({method.request_count})", ["--request-count", str(method.request_count)])]
    logs, error = [], None
    for how, extra in attempts:
        csv_path.unlink(missing_ok=True)
        try:
            proc = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            error = f"{how}: timed out after {timeout_s:.0f} s"
            logs.append(error)
            continue
        logs.append(f"--- {how}\n{proc.stdout}{proc.stderr}")
        if proc.returncode == 0 and csv_path.is_file():
            (out_dir / f"{name}.log").write_text("\n".join(logs))
            return {**parse_csv(csv_path),
                    "method": how if len(logs) == 1 else f"{how}, after {attempts[0][0]} did not stabilise"}
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:]
        error = f"{how}: exit {proc.returncode}: {' | '.join(tail)[:300]}"
    (out_dir / f"{name}.log").write_text("\n".join(logs))
    return {"concurrency": concurrency, "error": error}


def sweep(*, ports: dict[str, int], concurrencies: list[int], rows: np.ndarray, work_dir: Path, lib_dir: Path,
          taskset: list[str], method: Method, host: str, model: str, tag: str, progress) -> dict:
    """Every protocol of ``ports`` ({"http": port, "grpc": port}) at every concurrency;
    ``{"settings": {...}, "http": [...], "grpc": [...]}``. ``tag`` prefixes the files written
    (several servers in one run)."""
    env = perf_analyzer_env(lib_dir)
    input_data = work_dir / "perf_input.json"  # the benchmark's own rows, one per request
    input_data.parent.mkdir(parents=True, exist_ok=True)
    input_data.write_text(json.dumps({"data": [{"input__0": {"content": row.tolist(), "shape": [int(rows.shape[1])]}}
                                               for row in np.asarray(rows[:1000], dtype=np.float32)]}))
    out: dict = {"settings": {"binary": str(find_perf_analyzer()), **asdict(method), "batch_size": 1,
                              "client": "async (--async), closed loop (concurrency = requests in flight)",
                              "input_data": f"{min(len(rows), 1000)} benchmark rows"}}
    for protocol, port in ports.items():
        out[protocol] = []
        for c in concurrencies:
            progress.set_postfix_str(f"perf_analyzer {protocol} c={c}", refresh=True)
            out[protocol].append(run_perf_analyzer(
                protocol=protocol, host=host, port=port, concurrency=c, input_data=input_data, out_dir=work_dir,
                env=env, taskset=taskset, method=method, model=model, tag=tag))
            progress.update(1)
    return out


def phase(bench: Bench, contenders: list[str], headline: str | None) -> dict:
    """perf_analyzer at every concurrency: the headline Triton over HTTP, triton-grpc, and
    triton-python over HTTP; ``{"settings", "server", "http", "grpc", "triton-python"}``."""
    plan = bench.plan
    runs = [("http", headline)] if headline is not None else []  # (key in the result, contender)
    if "triton-grpc" in contenders:
        runs.append(("grpc", "triton-grpc"))
    if "triton-python" in contenders and headline != "triton-python":
        runs.append(("triton-python", "triton-python"))
    if not plan.concurrency or not runs:
        return {}
    result: dict = {"server": headline}
    method = Method(plan.perf_mode, plan.perf_measurement_ms, plan.perf_max_trials,
                    request_count=plan.perf_request_count)
    try:
        with bench.progress(len(plan.concurrency) * len(runs), "perf_analyzer") as bar:
            for key, name in runs:
                ep = bench.endpoints[name]
                measured = sweep(
                    ports={ep.protocol: ep.port}, host=ep.host, tag="" if key in ("http", "grpc") else f"{key}_",
                    concurrencies=list(plan.concurrency), rows=bench.rows, work_dir=bench.out / "perf_analyzer",
                    lib_dir=bench.work / "lib", taskset=taskset(bench.client_cpu), method=method,
                    model=bench.model_name, progress=bar)
                result["settings"], result[key] = measured["settings"], measured[ep.protocol]
    except PerfAnalyzerMissing as exc:
        return {"error": str(exc)}
    return result
