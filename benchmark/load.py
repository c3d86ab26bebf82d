"""Concurrent load with locust (headless, CSV) and Triton's batch statistics around it."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.servers import taskset
from fraudml.triton_control import inference_statistics
from fraudml.tritonconfig import MODEL_NAME

if TYPE_CHECKING:
    from benchmark.run import Bench

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CPU_WARNING = "CPU usage above"
LOAD_TARGETS = ("triton-native", "triton-http", "triton-python", "fastapi-treelite", "fastapi-sklearn")


class LoadError(RuntimeError):
    """A locust run failed; the message has the end of its output."""


def triton_model_stats(http_port: int, model: str = MODEL_NAME, host: str = "127.0.0.1") -> dict:
    """The model's entry of Triton's inference statistics (cumulative counters)."""
    doc = inference_statistics(f"http://{host}:{http_port}", model)
    return (doc.get("model_stats") or [{}])[0]


def batching_delta(before: dict, after: dict) -> dict:
    """Between two stats snapshots: requests, executions, average batch size, executions per batch size."""

    def sizes(s: dict) -> dict[int, int]:
        return {int(b["batch_size"]): int(b.get("compute_infer", {}).get("count", 0))
                for b in s.get("batch_stats", []) or []}

    def stat(key: str, field: str = "count") -> int:  # after minus before
        a, b = ((s.get("inference_stats", {}).get(key) or {}).get(field, 0) for s in (after, before))
        return int(a) - int(b)

    inferences = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    b0, b1 = sizes(before), sizes(after)
    hist = {k: b1[k] - b0.get(k, 0) for k in sorted(b1) if b1[k] - b0.get(k, 0) > 0}
    out = {
        "inference_count": inferences,
        "execution_count": executions,
        "avg_batch_size": round(inferences / executions, 3) if executions else None,
        "max_batch_size_seen": max(hist) if hist else None,
        "batch_size_histogram": {str(k): v for k, v in hist.items()},
        "failed_requests": stat("fail"),
    }
    if success := stat("success"):
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            out[f"avg_{key}_us"] = round(stat(key, "ns") / success / 1e3, 2)
    return out


def run_locust(*, target: str, host: str, users: int, duration_s: int, rows_file: Path,
               out_dir: Path, name: str, taskset: list[str], model: str = MODEL_NAME) -> dict:
    """One headless locust run: req/s, percentiles (ms) and failures from the locustfile's own bookkeeping
    (req/s = requests / seconds from test start to stop); locust's CSV stays beside them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / name
    latencies = Path(f"{prefix}_latencies.npy")
    cmd = [*taskset, sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--host", host,
           "--csv", str(prefix), "--only-summary", "--stop-timeout", "2",
           "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    env = {**os.environ, "BENCH_TARGET": target, "BENCH_ROWS_FILE": str(rows_file),
           "BENCH_LATENCY_OUT": str(latencies), "BENCH_MODEL_NAME": model}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=duration_s + 180)  # starting locust on a busy pinned core can take a minute
    (out_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LoadError(f"locust exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}")
    csv_rps = None
    with contextlib.suppress(FileNotFoundError, StopIteration, KeyError, ValueError):
        with open(f"{prefix}_stats.csv", newline="") as fh:
            csv_rps = float(next(r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated")["Requests/s"])
    summary_file = Path(f"{latencies}.summary.json")
    if not summary_file.is_file():
        raise LoadError(f"locust wrote no summary ({summary_file}); see {out_dir / f'{name}.log'}")
    summary = json.loads(summary_file.read_text())
    requests, elapsed = summary["requests"], summary["elapsed_s"]
    result = {
        "users": users, "duration_s": duration_s, "elapsed_s": round(elapsed, 3),
        "requests": requests, "failures": summary["failures"], "rps": requests / elapsed if elapsed > 0 else None,
        "failure_examples": summary.get("failure_examples", []), "locust_csv_rps": csv_rps,
        "client_cpu_saturated": CPU_WARNING in (proc.stderr + proc.stdout),
    }
    ms = np.load(latencies) if latencies.is_file() else np.empty(0)
    if ms.size:
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        result.update(p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99), mean_ms=float(ms.mean()))
    latencies.unlink(missing_ok=True)  # large; the summary is what is kept
    summary_file.unlink()
    return result


def phase(bench: Bench, contenders: list[str], headline: str | None) -> dict:
    """locust at every user count against every HTTP contender: the results' ``load`` (by target and users),
    ``batching`` (the headline Triton's, by users) and ``load_settings``."""
    plan = bench.plan
    targets = [t for t in LOAD_TARGETS if t in contenders]
    load, batching = {}, {}
    if plan.users and plan.duration_s > 0 and targets:
        with bench.progress(len(plan.users) * len(targets), "load") as bar:
            for users, target in itertools.product(plan.users, targets):
                bar.set_postfix_str(f"{target} u={users}", refresh=True)
                ep, is_triton = bench.endpoints[target], target.startswith("triton")
                before = triton_model_stats(ep.port, bench.model_name, ep.host) if is_triton else None
                result = load.setdefault(target, {})[str(users)] = run_locust(
                    target="triton" if is_triton else "fastapi", host=ep.base_url, users=users,
                    duration_s=plan.duration_s, rows_file=bench.out / "rows.npy", out_dir=bench.out / "locust",
                    name=f"{target}_u{users}", taskset=taskset(bench.client_cpu), model=bench.model_name)
                if is_triton:  # its batching statistics, after minus before
                    result["batching"] = batching_delta(before, triton_model_stats(ep.port, bench.model_name, ep.host))
                if target == headline:
                    batching[str(users)] = result["batching"]
                bar.update(1)
    settings = {"tool": "locust (headless, FastHttpUser, no wait time: closed loop)", "users": list(plan.users),
                "spawn_rate": "all users at once", "duration_s": plan.duration_s, "processes": 1,
                "measured_by": "the locustfile times and counts every request itself (locust 2.18's "
                               "FastHttpUser reports whole milliseconds); req/s = requests / "
                               "seconds from test start to stop"}
    return {"load": load, "batching": batching, "load_settings": settings}
