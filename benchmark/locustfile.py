"""Locust load: each user sends one-row requests back to back (closed loop, no wait).

    BENCH_TARGET=triton BENCH_ROWS_FILE=rows.npy \\
        locust -f benchmark/locustfile.py --headless -u 32 -r 32 -t 20s \\
               --host http://127.0.0.1:8000 --csv out/triton_u32

Environment:

| variable | default | meaning |
| --- | --- | --- |
| ``BENCH_TARGET`` | ``triton`` | ``triton``: POST ``/v2/models/<model>/infer`` (KServe v2 JSON); ``fastapi``: POST ``/predict`` |
| ``BENCH_MODEL_NAME`` | ``fraud-classifier`` | Triton model name |
| ``BENCH_ROWS_FILE`` | – | ``.npy`` of float32 rows (n, 30); without it, rows of zeros |
| ``BENCH_SUMMARY_OUT`` | – | where to write the run's summary (JSON) at test stop |
| ``TRITON_API_KEY`` | – | sent as the ``fraudml-api-key`` header (Triton on Kubernetes restricts HTTP inference to it) |

Locust's percentiles round anything under 100 ms to a whole millisecond
(``locust.stats.bucket_response_time``) and the CSV of a short headless run can miss the last
requests, so the task times (``time.perf_counter``) and counts every request itself; at test stop
it writes ``BENCH_SUMMARY_OUT``: requests, failures, seconds from test start to stop, the successful
requests' latency summary (``benchmark.sequential.summarize``: percentiles, mean, ... in ms) and a few failure
messages.
"""

import functools
import json
import os
import random
import time

import numpy as np
from locust import FastHttpUser, constant, events, task

from benchmark.sequential import one_row_requests, summarize
from fraudml.tritonconfig import MODEL_NAME

HEADERS = {"Content-Type": "application/json"}
if os.environ.get("TRITON_API_KEY"):
    HEADERS["fraudml-api-key"] = os.environ["TRITON_API_KEY"]

_latencies_ms: list[float] = []
_failures: list[str] = []
_counts = {"requests": 0, "started": 0.0}  # every request that is not in _latencies_ms failed


@functools.cache
def _requests() -> tuple[str, list[bytes]]:
    path = os.environ.get("BENCH_ROWS_FILE")
    rows = np.load(path) if path else np.zeros((1, 30), dtype=np.float32)
    return one_row_requests(os.environ.get("BENCH_TARGET", "triton").strip().lower(),
                            np.asarray(rows, dtype=np.float32), os.environ.get("BENCH_MODEL_NAME", MODEL_NAME))


@events.test_start.add_listener
def _on_start(environment, **_kwargs):
    _requests()
    _latencies_ms.clear()
    _failures.clear()
    _counts.update(requests=0, started=time.perf_counter())


@events.test_stop.add_listener
def _on_stop(environment, **_kwargs):
    if out := os.environ.get("BENCH_SUMMARY_OUT"):
        latency = summarize(1e6 * np.asarray(_latencies_ms)) if _latencies_ms else {}  # none when every request failed
        with open(out, "w") as fh:
            json.dump({"requests": _counts["requests"], "failures": _counts["requests"] - len(_latencies_ms),
                       "failure_examples": _failures, "elapsed_s": time.perf_counter() - _counts["started"], **latency}, fh)


class OneRowUser(FastHttpUser):
    """Sends one row per request, the next as soon as the answer is in."""

    wait_time = constant(0)

    def on_start(self):
        self.path, self.bodies = _requests()
        self.i = random.randrange(len(self.bodies))

    @task
    def infer(self):
        self.i = (self.i + 1) % len(self.bodies)
        t0 = time.perf_counter()
        response = self.client.post(self.path, data=self.bodies[self.i], headers=HEADERS, name=self.path)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        _counts["requests"] += 1
        if response.status_code == 200:
            _latencies_ms.append(elapsed_ms)
        elif len(_failures) < 5:  # a few examples for the summary
            _failures.append(str(response.error or f"HTTP {response.status_code}: {response.text}")[:200])
