"""A bounded soak on loopback: locust (headless, ``benchmark/locustfile.py``, run as the benchmark
runs it) with 32 users sending one-row JSON requests to Triton for ``RELIABILITY_SOAK_SECONDS``. No
request may fail and the same Triton process must still answer correctly; the request count, rate,
latency and Triton's memory (tritonserver and its backend processes) before, at peak and after are figures."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from benchmark.load import run_locust
from fraudml.tritonconfig import MODEL_NAME
from serve.client import infer
from tests.reliability.rig import SOAK_SECONDS

pytestmark = pytest.mark.quick

USERS = 32


def tree_rss_mb(pid: int) -> float:
    tree = {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}  # gone by the next line: skipped
    rss = sum(p.info["memory_info"].rss for p in psutil.process_iter(["memory_info"]) if p.pid in tree)
    return round(rss / 2**20, 1)


def test_bounded_soak_has_no_failed_request(rig, tmp_path, record_property):
    pid = rig.triton.pid()
    for _ in range(200):  # warm up (first requests allocate buffers), then take the baseline
        infer(rig.model.x[:1], url=rig.triton.http_url, model_name=MODEL_NAME)
    before = tree_rss_mb(pid)
    samples: list[float] = []
    np.save(tmp_path / "rows.npy", rig.model.x)
    with ThreadPoolExecutor(1) as pool:
        soak = pool.submit(run_locust, target="triton", host=rig.triton.http_url, users=USERS, duration_s=SOAK_SECONDS,
                           rows_file=tmp_path / "rows.npy", out_dir=tmp_path, name="soak", taskset=[])
        while not soak.done() and rig.triton.pid() == pid:
            samples.append(tree_rss_mb(pid))
            time.sleep(2)
        load = soak.result()
    after = tree_rss_mb(pid) if rig.triton.pid() == pid else None
    assert load["requests"] > 0, "locust sent no request"
    p50, p99 = load.get("p50_ms", np.nan), load.get("p99_ms", np.nan)  # none when every request failed
    record_property("soak", f"{load['requests']:,} requests in {SOAK_SECONDS} s at {USERS} users ({load['rps']:,.0f} "
                            f"req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms), {load['failures']} failed; Triton RSS "
                            f"{before} -> {after} MB (peak {max(samples, default=before)} MB)")
    assert load["failures"] == 0, f"{load['failures']} requests failed, e.g. {load['failure_examples'][:2]}"
    assert rig.triton.pid() == pid, "tritonserver was restarted during the soak"
    rig.check_serving()
