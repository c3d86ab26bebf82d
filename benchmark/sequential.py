"""The reference method: one client, one row per request, one request after another.

Every request is timed with ``time.perf_counter_ns`` from just before it is sent to just
after its whole response is read; every latency is kept. The HTTP contenders share one
client (``http.client`` on a kept-alive connection, request bodies encoded before timing
starts), so the same client work is in every HTTP number; ``triton-grpc`` uses
``tritonclient.grpc``, Triton's own client, with its inputs built before timing starts.

Contenders are measured round-robin in blocks (block k of every contender, then block k+1):
a slow drift of the machine then spreads over all contenders instead of landing on one.
The client's garbage collector is paused inside a block and run between blocks.
"""

from __future__ import annotations

import gc
import http.client
import json
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


class SequentialError(RuntimeError):
    """A contender answered a benchmark request with an error."""


@dataclass
class Contender:
    """One thing to time: ``send(i)`` sends row ``i`` and returns the raw answer."""

    name: str
    client: str  # what sends the requests, for results.json
    send: Callable[[int], object]
    parse: Callable[[object], tuple[list[float], str]]  # answer -> (probabilities, model version)
    close: Callable[[], None]
    reconnects: Callable[[], int] = lambda: 0
    latencies_ns: list[int] = field(default_factory=list)
    answers: dict[int, list[float]] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)


class KeepAliveHttp:
    """POST pre-encoded bodies on one kept-alive connection; returns the response body."""

    def __init__(self, host: str, port: int, path: str, bodies: Sequence[bytes]):
        self.host, self.port, self.path, self.bodies = host, port, path, bodies
        self.headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        self.reconnects = 0
        self._connect()

    def _connect(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, i: int) -> bytes:
        body = self.bodies[i % len(self.bodies)]
        try:
            self.conn.request("POST", self.path, body, self.headers)
            response = self.conn.getresponse()
        except (ConnectionError, http.client.RemoteDisconnected):
            # the server closed an idle kept-alive connection: reconnect once, counted
            self.reconnects += 1
            self.conn.close()
            self._connect()
            self.conn.request("POST", self.path, body, self.headers)
            response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SequentialError(f"POST {self.path} -> HTTP {response.status}: {body[:300]!r}")
        return body


def one_row_requests(target: str, rows: np.ndarray, model: str) -> tuple[str, list[bytes]]:
    """The path and one JSON body per row of Triton's KServe v2 endpoint (``target`` "triton")
    or the FastAPI app's ``/predict`` ("fastapi"): what the sequential client and locust send."""
    if target == "fastapi":
        return "/predict", [json.dumps({"rows": [r.tolist()]}).encode() for r in rows]
    return f"/v2/models/{model}/infer", [json.dumps({"inputs": [{"name": "input__0", "shape": [1, len(r)],
                                                                 "datatype": "FP32", "data": r.tolist()}]}).encode()
                                         for r in rows]


def contender(name: str, endpoint, rows: np.ndarray, model: str) -> Contender:
    """The client of contender ``name`` at ``endpoint`` (host, port, protocol): Triton over
    gRPC or HTTP (KServe v2 JSON), or a FastAPI app (``POST /predict``)."""
    if endpoint.protocol == "grpc":
        return _grpc_contender(endpoint.host, endpoint.port, rows, model)
    target = "triton" if name.startswith("triton") else "fastapi"
    http = KeepAliveHttp(endpoint.host, endpoint.port, *one_row_requests(target, rows, model))

    def parse(body: bytes) -> tuple[list[float], str]:  # Triton's output__0, or the app's probabilities
        doc = json.loads(body)
        data = (next(o["data"] for o in doc["outputs"] if o["name"] == "output__0") if target == "triton"
                else doc["probabilities"][0])
        return [float(x) for x in data], str(doc.get("model_version"))

    what = "KServe v2 JSON body" if target == "triton" else "JSON body"
    return Contender(name, f"http.client keep-alive, {what} pre-encoded", http.send, parse,
                     lambda: http.conn.close(), lambda: http.reconnects)


def _grpc_contender(host: str, port: int, rows: np.ndarray, model: str) -> Contender:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{host}:{port}")
    inputs = []
    for row in rows:
        inputs.append([grpcclient.InferInput("input__0", [1, rows.shape[1]], "FP32")])
        inputs[-1][0].set_data_from_numpy(row[None, :])
    outputs = [grpcclient.InferRequestedOutput("output__0")]

    def send(i: int):
        return client.infer(model, inputs[i % len(inputs)], outputs=outputs)

    def parse(result) -> tuple[list[float], str]:
        return result.as_numpy("output__0")[0].astype(float).tolist(), str(result.get_response().model_version)

    return Contender("triton-grpc", "tritonclient.grpc InferenceServerClient.infer, inputs pre-built",
                     send, parse, client.close)


def summarize(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/mean/std/min/max in milliseconds."""
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        return {}
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "n": int(ms.size), "p50_ms": float(p50), "p90_ms": float(p90), "p95_ms": float(p95),
        "p99_ms": float(p99), "mean_ms": float(ms.mean()), "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min_ms": float(ms.min()), "max_ms": float(ms.max()),
    }


def run_sequential(contenders: Sequence[Contender], n: int, *, warmup: int, n_rows: int,
                   block: int = 250, progress=None) -> None:
    """Warm every contender up, then time ``n`` requests each, round-robin in blocks.

    The answers to the first ``n_rows`` requests (rows 0..n_rows-1) are kept per contender
    for the parity check. ``progress`` (a tqdm bar) is advanced by block.
    """
    for c in contenders:
        for i in range(warmup):
            c.send(i)
    for start in range(0, n, block):
        stop = min(n, start + block)
        for c in contenders:
            send, lat = c.send, c.latencies_ns
            kept = []
            gc.collect()
            gc.disable()
            try:
                for i in range(start, stop):
                    t0 = time.perf_counter_ns()
                    answer = send(i)
                    t1 = time.perf_counter_ns()
                    lat.append(t1 - t0)
                    if i < n_rows:
                        kept.append((i, answer))
            finally:
                gc.enable()
            for i, answer in kept:
                c.answers[i], version = c.parse(answer)
                c.versions.add(version)
            if progress is not None:
                progress.update(stop - start)
                progress.set_postfix_str(c.name, refresh=False)


def parity(contenders: Sequence[Contender], atol: float = 1e-5) -> dict[str, object]:
    """Largest difference of every contender's probabilities from the first contender's."""
    base = contenders[0]
    diffs = {}
    for c in contenders[1:]:
        common = sorted(set(base.answers) & set(c.answers))
        a = np.asarray([base.answers[i] for i in common], dtype=np.float64)
        b = np.asarray([c.answers[i] for i in common], dtype=np.float64)
        diffs[c.name] = (float("nan") if not common else float(np.max(np.abs(a - b))) if a.shape == b.shape
                         else float("inf"))
    return {"reference": base.name, "atol": atol, "rows_compared": len(base.answers), "max_abs_diff": diffs,
            "ok": all(d <= atol for d in diffs.values())}
