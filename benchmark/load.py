"""Concurrent load: locust (headless) at each user count, with Triton's batch statistics around it, and a
``perf_analyzer`` concurrency sweep over Triton HTTP and gRPC to cross-check it.

perf_analyzer is the one in the ``tritonclient==2.51.0`` wheel (the release of the bundled
server; DESIGN §2). It needs ``libb64.so.0d`` and ``libcudart.so.12``, which the
``nvidia-pytriton`` wheel carries under hashed names: :func:`perf_analyzer_env` links them
under their plain names in a private folder of the state dir and puts it on
``LD_LIBRARY_PATH`` for perf_analyzer only.

Every concurrency level is its own bounded run: perf_analyzer repeats windows of
``measurement_interval_ms`` until three agree within the stability percentage, at most
``max_trials`` windows; a level that does not stabilise (a shared machine) is measured once
more with the same windows and no stability condition (the average of the last windows) and
marked so: a fixed ``--request-count`` fallback hung on this perf_analyzer or reported about
request-count req/s whatever the server did.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.analysis import ORDER
from benchmark.servers import BenchmarkError, taskset
from fraudml.triton_control import inference_statistics
from fraudml.tritonconfig import MODEL_NAME
from serve.triton import bundle_paths

if TYPE_CHECKING:
    from benchmark.run import Bench

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def batching_delta(before: dict, after: dict) -> dict:
    """Between two snapshots of Triton's inference statistics of one model: requests, executions, average batch
    size, executions per batch size."""

    def counters(doc: dict) -> dict[str, int]:  # a snapshot's cumulative counters, flat: "queue ns", "batch 4", ...
        s = (doc.get("model_stats") or [{}])[0]
        return {"inference_count": int(s.get("inference_count", 0)), "execution_count": int(s.get("execution_count", 0)),
                **{f"{k} {f}": int(v.get(f, 0)) for k, v in (s.get("inference_stats") or {}).items() for f in ("count", "ns")},
                **{f"batch {b['batch_size']}": int((b.get("compute_infer") or {}).get("count", 0))
                   for b in s.get("batch_stats") or []}}

    old = counters(before)
    d = {k: v - old.get(k, 0) for k, v in counters(after).items()}  # after minus before
    sizes = sorted(int(k.split()[1]) for k, v in d.items() if k.startswith("batch ") and v > 0)
    inferences, executions, success = d["inference_count"], d["execution_count"], d.get("success count")
    return {"inference_count": inferences, "execution_count": executions,
            "avg_batch_size": round(inferences / executions, 3) if executions else None,
            "max_batch_size_seen": max(sizes, default=None),
            "batch_size_histogram": {str(k): d[f"batch {k}"] for k in sizes}, "failed_requests": d.get("fail count", 0),
            **{f"avg_{k}_us": round(d.get(f"{k} ns", 0) / success / 1e3, 2) for k in
               ("queue", "compute_input", "compute_infer", "compute_output") if success}}


def run_locust(*, target: str, host: str, users: int, duration_s: int, rows_file: Path,
               out_dir: Path, name: str, taskset: list[str], model: str = MODEL_NAME) -> dict:
    """One headless locust run: req/s, percentiles (ms) and failures from the locustfile's own bookkeeping
    (req/s = requests / seconds from test start to stop); its summary and locust's CSV stay beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix, summary_file = out_dir / name, out_dir / f"{name}_summary.json"
    cmd = [*taskset, sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--host", host,
           "--csv", str(prefix), "--only-summary", "--stop-timeout", "2",
           "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    env = {**os.environ, "BENCH_TARGET": target, "BENCH_ROWS_FILE": str(rows_file),
           "BENCH_SUMMARY_OUT": str(summary_file), "BENCH_MODEL_NAME": model}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=duration_s + 180)  # starting locust on a busy pinned core can take a minute
    (out_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise BenchmarkError(f"locust exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}")
    if not summary_file.is_file():
        raise BenchmarkError(f"locust wrote no summary ({summary_file}); see {out_dir / f'{name}.log'}")
    summary = json.loads(summary_file.read_text())
    elapsed = summary["elapsed_s"]
    return {"users": users, "duration_s": duration_s, **summary, "elapsed_s": round(elapsed, 3),
            "rps": summary["requests"] / elapsed if elapsed > 0 else None,
            "client_cpu_saturated": "CPU usage above" in (proc.stderr + proc.stdout)}  # locust's warning


def phase(bench: Bench, contenders: list[str], headline: str | None) -> dict:
    """locust at every user count against every HTTP contender: the results' ``load`` (by target and users),
    ``batching`` (the headline Triton's, by users) and ``load_settings``."""
    plan = bench.plan
    targets = [t for t in ORDER if t in contenders and bench.endpoints[t].protocol == "http"]
    load, batching = {}, {}
    if plan.users and plan.duration_s > 0 and targets:
        with bench.plan.bar(len(plan.users) * len(targets), "load") as bar:
            for users, target in itertools.product(plan.users, targets):
                bar.set_postfix_str(f"{target} u={users}", refresh=True)
                ep, is_triton = bench.endpoints[target], target.startswith("triton")
                url = f"http://{ep.host}:{ep.port}"
                before = inference_statistics(url, bench.model_name) if is_triton else None
                result = load.setdefault(target, {})[str(users)] = run_locust(
                    target="triton" if is_triton else "fastapi", host=url, users=users,
                    duration_s=plan.duration_s, rows_file=bench.out / "rows.npy", out_dir=bench.out / "locust",
                    name=f"{target}_u{users}", taskset=taskset(bench.client_cpu), model=bench.model_name)
                if is_triton:  # its batching statistics, after minus before
                    result["batching"] = batching_delta(before, inference_statistics(url, bench.model_name))
                if target == headline:
                    batching[str(users)] = result["batching"]
                bar.update(1)
    settings = {"tool": "locust (headless, FastHttpUser, no wait time: closed loop)", "users": list(plan.users),
                "spawn_rate": "all users at once", "duration_s": plan.duration_s, "processes": 1,
                "measured_by": "the locustfile times and counts every request itself (locust's "
                               "percentiles round to whole milliseconds); req/s = requests / "
                               "seconds from test start to stop"}
    return {"load": load, "batching": batching, "load_settings": settings}


# -- perf_analyzer, the cross-check --

LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}
STABILITY_PERCENTAGE = 20


def perf_analyzer_env(lib_dir: Path) -> dict[str, str]:
    """Environment for perf_analyzer: ``lib_dir`` with the two plain-named links first on ``LD_LIBRARY_PATH``."""
    _, libs = bundle_paths()  # the nvidia-pytriton wheel's nvidia_pytriton.libs folder
    lib_dir.mkdir(parents=True, exist_ok=True)
    for plain, pattern in LIBS.items():
        matches = sorted(libs.glob(pattern))
        if not matches:
            raise BenchmarkError(f"{pattern} not found in {libs}: reinstall nvidia-pytriton")
        (lib_dir / plain).unlink(missing_ok=True)
        (lib_dir / plain).symlink_to(matches[0])
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, (str(lib_dir),
                                                                           os.environ.get("LD_LIBRARY_PATH"))))}


def parse_csv(path: Path) -> dict:
    """What the report shows of perf_analyzer's ``-f`` CSV (kept beside it: every column), latencies in ms."""
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))

    def ms(*keys: str) -> float:
        return sum(float(row.get(k) or 0) / 1e3 for k in keys)

    return {"concurrency": int(row["Concurrency"]), "rps": float(row["Inferences/Second"]),
            "p50_ms": ms("p50 latency"), "p99_ms": ms("p99 latency"), "server_queue_ms": ms("Server Queue"),
            "server_compute_ms": ms("Server Compute Input", "Server Compute Infer", "Server Compute Output")}


def run_perf_analyzer(bench: Bench, endpoint, concurrency: int, input_data: Path, binary: str,
                      env: dict[str, str], tag: str) -> dict:
    """One perf_analyzer run at one concurrency; returns the parsed CSV row or the error.

    ``--async``: no thread blocks on its request (32 sync threads on one client core measure the client's
    scheduling); 2.51's HTTP client still polls with one transfer thread per request in flight."""
    out_dir, plan = bench.out / "perf_analyzer", bench.plan
    name = f"perf_{tag}{endpoint.protocol}_c{concurrency}"
    csv_path = out_dir / f"{name}.csv"
    base = [*taskset(bench.client_cpu), binary, "-m", bench.model_name,
            "-u", f"{endpoint.host}:{endpoint.port}", "--async", "-i", endpoint.protocol, "-b", "1",
            "--concurrency-range", f"{concurrency}:{concurrency}", "--input-data", str(input_data), "-f", str(csv_path),
            "-p", str(plan.perf_measurement_ms), "--max-trials", str(plan.perf_max_trials)]
    # A healthy run needs its windows plus start-up; perf_analyzer 2.51 can hang on HTTP at high
    # concurrency, so a hung attempt costs a few windows' worth, not minutes (quick run: 32 s).
    timeout_s = 20 + 4 * plan.perf_max_trials * plan.perf_measurement_ms / 1000
    attempts = [("stable windows", str(STABILITY_PERCENTAGE)), ("windows averaged without stabilising", "100")]
    logs, error = [], None
    for how, stability in attempts:
        csv_path.unlink(missing_ok=True)
        try:
            proc = subprocess.run([*base, "-s", stability], env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # Not retried: at ~10k req/s on one core, 2.51 erases its request records one by one slower than
            # they arrive and never ends a window; another attempt hangs the same way.
            error = f"{how}: timed out after {timeout_s:.0f} s (perf_analyzer fell behind), not retried"
            logs.append(error)
            break
        logs.append(f"--- {how}\n{proc.stdout}{proc.stderr}")
        if proc.returncode == 0 and csv_path.is_file():
            (out_dir / f"{name}.log").write_text("\n".join(logs))
            return {**parse_csv(csv_path),
                    "method": how if len(logs) == 1 else f"{how}, after {attempts[0][0]} did not stabilise"}
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:]
        error = f"{how}: exit {proc.returncode}: {' | '.join(tail)[:300]}"
    (out_dir / f"{name}.log").write_text("\n".join(logs))
    return {"concurrency": concurrency, "error": error}


def perf_phase(bench: Bench, contenders: list[str], headline: str | None) -> dict:
    """perf_analyzer at every concurrency: the headline Triton over HTTP, triton-grpc, and
    triton-python over HTTP; ``{"settings", "server", "http", "grpc", "triton-python"}``."""
    plan = bench.plan
    candidates = (("http", headline), ("grpc", "triton-grpc"), ("triton-python", "triton-python"))
    runs = [(key, name) for key, name in candidates  # (key in the result, contender)
            if name in contenders and (key == "http" or name != headline)]
    if not plan.concurrency or not runs:
        return {}
    # the venv's perf_analyzer, else the one on PATH
    binary = shutil.which("perf_analyzer", path=os.pathsep.join((str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", ""))))
    if binary is None:
        return {"error": "perf_analyzer not found: it comes with tritonclient[all]==2.51.0 (make venv)"}
    try:
        env = perf_analyzer_env(bench.work / "lib")
    except BenchmarkError as exc:  # one of its libraries cannot be found
        return {"error": str(exc)}
    input_data = bench.out / "perf_analyzer" / "perf_input.json"  # the benchmark's own rows, one per request
    input_data.parent.mkdir(parents=True, exist_ok=True)
    input_data.write_text(json.dumps({"data": [{"input__0": {"content": row.tolist(), "shape": [len(row)]}}
                                               for row in np.asarray(bench.rows[:1000], dtype=np.float32)]}))
    result: dict = {"server": headline, "settings": {
        "binary": binary, "measurement_interval_ms": plan.perf_measurement_ms,
        "max_trials": plan.perf_max_trials, "stability_percentage": STABILITY_PERCENTAGE, "batch_size": 1,
        "client": "async (--async), closed loop (concurrency = requests in flight)",
        "input_data": f"{min(len(bench.rows), 1000)} benchmark rows"}}
    with bench.plan.bar(len(plan.concurrency) * len(runs), "perf_analyzer") as bar:
        for (key, name), c in itertools.product(runs, plan.concurrency):
            bar.set_postfix_str(f"perf_analyzer {key} c={c}", refresh=True)
            result.setdefault(key, []).append(run_perf_analyzer(bench, bench.endpoints[name], c, input_data, binary, env,
                                                                "" if key in ("http", "grpc") else f"{key}_"))
            bar.update(1)
    return result
