"""A bounded soak on loopback: locust (headless, FastHttpUser, ``benchmark/locustfile.py``)
with N users sending one-row JSON requests to Triton's ``/v2/models/fraud-classifier/infer``
for S seconds. Zero failed requests expected; Triton's memory (tritonserver and its Python
backend stubs) is sampled before, during and after, and its growth reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.reliability_common import MODEL_NAME, Category, Rig, expect, short, triton_json_infer

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "benchmark" / "locustfile.py"


def tree_rss(pid: int) -> tuple[int, dict[int, tuple[str, int]]]:
    """Resident memory (bytes) of ``pid`` and all its children, and per process."""
    import psutil

    per: dict[int, tuple[str, int]] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            per[proc.pid] = (proc.name(), proc.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return sum(rss for _, rss in per.values()), per


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 2.0):
        super().__init__(daemon=True, name="rss-sampler")
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append((round(time.monotonic() - self._t0, 1), tree_rss(self.pid)[0]))
            except Exception:  # noqa: BLE001 - a process vanished between listing and reading
                pass
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _mb(n: float) -> float:
    return round(n / 2**20, 1)


def soak(rig: Rig, cat: Category, seconds: int, users: int = 32, out_dir: Path | None = None) -> None:
    out_dir = out_dir or rig.work_dir / "soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_file = out_dir / "rows.npy"
    np.save(rows_file, rig.model.x)
    latencies = out_dir / "latencies.npy"
    pid = rig.triton.pid()
    with cat.case("Triton is up before the soak") as note:
        expect(pid is not None, "Triton is not running")
        served = rig.check_serving()
        note.detail = f"serving v{served}, pid {pid}"
    if pid is None:
        return
    # warm up (first requests allocate buffers), then take the baseline
    for _ in range(200):
        triton_json_infer(rig.triton.http_url, rig.model.x[:1])
    time.sleep(1.0)
    before, before_per = tree_rss(pid)
    sampler = RssSampler(pid)
    sampler.start()
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{seconds}s", "--host", rig.triton.http_url, "--only-summary", "--stop-timeout", "2",
           "--loglevel", "WARNING", "--exit-code-on-error", "0", "--csv", str(out_dir / "locust")]
    env = {**os.environ, "BENCH_TARGET": "triton", "BENCH_ROWS_FILE": str(rows_file),
           "BENCH_LATENCY_OUT": str(latencies), "BENCH_MODEL_NAME": MODEL_NAME}
    started = time.monotonic()
    summary: dict[str, Any] = {}
    with cat.case(f"soak: {users} users for {seconds} s, zero failed requests") as note:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120)
        finally:
            sampler.stop()
        (out_dir / "locust.log").write_text(proc.stdout + proc.stderr)
        expect(proc.returncode == 0, f"locust exited with {proc.returncode}: {short(proc.stderr or proc.stdout, 400)}")
        summary_file = Path(f"{latencies}.summary.json")
        expect(summary_file.is_file(), f"locust wrote no summary; see {out_dir / 'locust.log'}")
        summary = json.loads(summary_file.read_text())
        requests, failures = summary["requests"], summary["failures"]
        rps = requests / summary["elapsed_s"] if summary["elapsed_s"] else 0.0
        note.detail = f"{requests:,} requests, {failures} failed, {rps:,.0f} req/s"
        expect(requests > 0, "locust sent no request")
        expect(failures == 0, f"{failures} of {requests} requests failed, e.g. {summary.get('failure_examples', [])[:2]}")
    took = time.monotonic() - started
    time.sleep(2.0)
    same_process = rig.triton.pid() == pid
    after, after_per = tree_rss(pid) if same_process else (0, {})
    with cat.case("the same Triton process survived the soak and still answers correctly") as note:
        expect(same_process, f"tritonserver pid changed from {pid} to {rig.triton.pid()}")
        served = rig.check_serving()
        note.detail = f"pid {pid}, serving v{served}"

    ms = np.load(latencies) if latencies.is_file() else np.empty(0)
    samples = sampler.samples
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    slope = None
    if len(half) >= 3:
        t, rss = np.array([s[0] for s in half]), np.array([s[1] for s in half], dtype=float)
        slope = float(np.polyfit(t, rss, 1)[0]) * 60  # bytes per minute, second half of the soak
    cat.facts["soak"] = {
        "users": users,
        "seconds": seconds,
        "wall_s": round(took, 1),
        "requests": summary.get("requests"),
        "failures": summary.get("failures"),
        "rps": round(summary["requests"] / summary["elapsed_s"], 1) if summary.get("elapsed_s") else None,
        "p50_ms": round(float(np.percentile(ms, 50)), 3) if ms.size else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 3) if ms.size else None,
        "rss_before_mb": _mb(before),
        "rss_after_mb": _mb(after) if after else None,
        "rss_growth_mb": _mb(after - before) if after else None,
        "rss_growth_pct": round(100 * (after - before) / before, 1) if after and before else None,
        "rss_peak_mb": _mb(max((s[1] for s in samples), default=0)),
        "rss_slope_mb_per_min_second_half": round(slope / 2**20, 2) if slope is not None else None,
        "rss_samples_mb": [(t, _mb(v)) for t, v in samples[:: max(1, len(samples) // 60)]],
        "processes_before": {str(p): [n, _mb(r)] for p, (n, r) in before_per.items()},
        "processes_after": {str(p): [n, _mb(r)] for p, (n, r) in after_per.items()},
        "client_cpu_saturated": "CPU usage" in (out_dir / "locust.log").read_text() if (out_dir / "locust.log").is_file() else None,
    }
    latencies.unlink(missing_ok=True)
    cat._log(f"  soak: {cat.facts['soak']['requests']} requests, {cat.facts['soak']['failures']} failed, "
             f"RSS {cat.facts['soak']['rss_before_mb']} -> {cat.facts['soak']['rss_after_mb']} MB")
