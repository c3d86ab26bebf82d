"""A bounded soak on loopback: locust (headless, ``benchmark/locustfile.py``) with 32 users
sending one-row JSON requests to Triton for ``RELIABILITY_SOAK_SECONDS``. No request may fail
and the same Triton process must still answer correctly; the request count, rate, latency and
Triton's memory (tritonserver and its backend processes) before, at peak and after are figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from fraudml.tritonconfig import MODEL_NAME
from serve.client import infer
from tests.reliability.rig import SOAK_SECONDS

pytestmark = [pytest.mark.reliability, pytest.mark.quick, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
USERS = 32


def tree_rss_mb(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


def test_bounded_soak_has_no_failed_request(rig, tmp_path, record_property):
    pid = rig.triton.pid()
    for _ in range(200):  # warm up (first requests allocate buffers), then take the baseline
        infer(rig.model.x[:1], url=rig.triton.http_url, model_name=MODEL_NAME)
    before = tree_rss_mb(pid)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2.0):
            try:
                samples.append(tree_rss_mb(pid))
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    np.save(tmp_path / "rows.npy", rig.model.x)
    latencies = tmp_path / "latencies.npy"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmark" / "locustfile.py"), "--headless",
             "-u", str(USERS), "-r", str(USERS), "-t", f"{SOAK_SECONDS}s", "--host", rig.triton.http_url,
             "--only-summary", "--stop-timeout", "2", "--loglevel", "WARNING", "--exit-code-on-error", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=SOAK_SECONDS + 120,
            env={**os.environ, "BENCH_TARGET": "triton", "BENCH_ROWS_FILE": str(tmp_path / "rows.npy"),
                 "BENCH_LATENCY_OUT": str(latencies), "BENCH_MODEL_NAME": MODEL_NAME})
    finally:
        done.set()
        sampler.join(10)
    assert proc.returncode == 0, f"locust exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
    summary = json.loads(Path(f"{latencies}.summary.json").read_text())
    ms = np.load(latencies)
    after = tree_rss_mb(pid) if rig.triton.pid() == pid else None
    record_property("soak", f"{summary['requests']:,} requests in {SOAK_SECONDS} s at {USERS} users "
                            f"({summary['requests'] / summary['elapsed_s']:,.0f} req/s, p50 {np.percentile(ms, 50):.1f} ms, "
                            f"p99 {np.percentile(ms, 99):.1f} ms), {summary['failures']} failed; Triton RSS "
                            f"{before} -> {after} MB (peak {max(samples, default=before)} MB)")
    assert summary["requests"] > 0, "locust sent no request"
    assert summary["failures"] == 0, f"{summary['failures']} requests failed, e.g. {summary.get('failure_examples', [])[:2]}"
    assert rig.triton.pid() == pid, "tritonserver was restarted during the soak"
    rig.check_serving()
