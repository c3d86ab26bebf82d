"""The reference method: one client, one row per request, one request after another.

Every request is timed with ``time.perf_counter_ns`` from just before it is sent to just after its
whole response is read; every latency is kept. The HTTP contenders share one client (``http.client``
on a kept-alive connection, bodies encoded before timing), so the same client work is in every HTTP
number; ``triton-grpc`` uses ``tritonclient.grpc`` with its inputs built before timing. Contenders
take turns in blocks, so a slow drift of the machine spreads over all of them; the garbage collector
is paused inside a block. :func:`in_process_runtimes` times each model runtime without any server.
"""

from __future__ import annotations

import gc
import http.client
import itertools
import json
import pickle
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.servers import BenchmarkError

if TYPE_CHECKING:
    from benchmark.model_source import BenchModel
    from benchmark.run import Bench


@dataclass
class Contender:
    """One thing to time: ``send(i)`` sends row ``i`` and returns the raw answer."""

    name: str
    client: str  # what sends the requests, for results.json
    send: Callable[[int], object]
    parse: Callable[[object], tuple[list[float], str]]  # answer -> (probabilities, model version)
    close: Callable[[], None]
    reconnects: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    answers: dict[int, list[float]] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)


def one_row_requests(target: str, rows: np.ndarray, model: str) -> tuple[str, list[bytes]]:
    """The path and a JSON body per row for Triton's KServe v2 endpoint (``target`` "triton") or the app's
    ``/predict`` ("fastapi"): what the sequential client and locust send."""
    if target == "fastapi":
        return "/predict", [json.dumps({"rows": [r.tolist()]}).encode() for r in rows]
    return f"/v2/models/{model}/infer", [json.dumps({"inputs": [{"name": "input__0", "shape": [1, len(r)],
                                                                 "datatype": "FP32", "data": r.tolist()}]}).encode()
                                         for r in rows]


def contender(name: str, endpoint, rows: np.ndarray, model: str) -> Contender:
    """The client of contender ``name`` at ``endpoint``: Triton over gRPC, or pre-encoded bodies POSTed on one
    kept-alive ``http.client`` connection (it sets TCP_NODELAY) to Triton or a FastAPI app."""
    if endpoint.protocol == "grpc":
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"{endpoint.host}:{endpoint.port}")
        inputs = [[grpcclient.InferInput("input__0", [1, rows.shape[1]], "FP32").set_data_from_numpy(row[None, :])]
                  for row in rows]
        outputs = [grpcclient.InferRequestedOutput("output__0")]
        return Contender("triton-grpc", "tritonclient.grpc InferenceServerClient.infer, inputs pre-built",
                         lambda i: client.infer(model, inputs[i % len(inputs)], outputs=outputs),
                         lambda r: (r.as_numpy("output__0")[0].astype(float).tolist(),
                                    str(r.get_response().model_version)), client.close)
    target = "triton" if name.startswith("triton") else "fastapi"
    path, bodies = one_row_requests(target, rows, model)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=30)
    conn.connect()

    def send(i: int) -> bytes:
        body = bodies[i % len(bodies)]
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
        except ConnectionError:  # http.client.RemoteDisconnected is one
            # the server closed an idle kept-alive connection: reconnect (the next request does) once, counted
            c.reconnects += 1
            conn.close()
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchmarkError(f"POST {path} -> HTTP {response.status}: {body[:300]!r}")
        return body

    def parse(body: bytes) -> tuple[list[float], str]:  # Triton's output__0, or the app's probabilities
        doc = json.loads(body)
        data = (next(o["data"] for o in doc["outputs"] if o["name"] == "output__0") if target == "triton"
                else doc["probabilities"][0])
        return [float(x) for x in data], str(doc.get("model_version"))

    what = "KServe v2 JSON body" if target == "triton" else "JSON body"
    c = Contender(name, f"http.client keep-alive, {what} pre-encoded", send, parse, conn.close)
    return c


def summarize(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/mean/std/min/max in milliseconds."""
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    return {"n": int(ms.size), **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 95, 99)},
            "mean_ms": float(ms.mean()), "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def run_sequential(contenders: Sequence[Contender], n: int, *, warmup: int, n_rows: int, progress,
                   block: int = 250) -> None:
    """Warm every contender up, then time ``n`` requests each, round-robin in blocks; the answers to the
    first ``n_rows`` requests (rows 0..n_rows-1) are kept for the parity check; ``progress`` (tqdm) counts."""
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
            progress.update(stop - start)
            progress.set_postfix_str(c.name, refresh=False)


def parity(answers: dict[str, np.ndarray], atol: float = 1e-5) -> dict[str, object]:
    """Largest difference of every contender's probabilities (of the same rows) from the first contender's."""
    (reference, base), *others = answers.items()
    diffs = {name: float(np.max(np.abs(a - base))) if a.shape == base.shape else float("inf") for name, a in others}
    return {"reference": reference, "atol": atol, "rows_compared": len(base), "max_abs_diff": diffs,
            "ok": all(d <= atol for d in diffs.values())}


def in_process_runtimes(model: BenchModel, rows: np.ndarray, library: Path | None, calls: int) -> dict:
    """Per-row predict time of each runtime in this process, no server: what the runtime alone costs."""
    import treelite.gtil

    from benchmark.app import sklearn_single_thread
    from serve.backends.fil import fil_forest as ff

    tl = ff.load_model(model.model_file, model.model_type)
    gtil = ff.GTILPredictor(tl, threads=1)
    runtimes = {}
    if model.pipeline_file is not None:
        pipeline = sklearn_single_thread(pickle.loads(model.pipeline_file.read_bytes()))
        runtimes["sklearn"] = ("sklearn predict_proba, n_jobs=1 (fastapi-sklearn)", pipeline.predict_proba)
    runtimes["gtil"] = ("Treelite GTIL via its C API, 1 thread (fil backend with FIL_COMPILE=0)", gtil.predict)
    if library is not None:
        compiled = ff.CompiledPredictor(library, n_features=gtil.n_features, n_outputs=gtil.n_outputs, threads=1)
        runtimes["compiled"] = ("tl2cgen-compiled library, 1 thread (fil backend default)", compiled.predict)
    runtimes["gtil_python"] = ("treelite.gtil.predict, the public Python wrapper, nthread=1",
                               lambda x: treelite.gtil.predict(tl, x, nthread=1))
    out, one_rows = {}, [r[None, :] for r in rows]
    for key, (what, fn) in runtimes.items():
        n = max(20, calls // 5) if key == "sklearn" else calls
        # one timing per call, the first 20 untimed (timeit pauses the garbage collector while it times);
        # every runtime is timed on the same rows, from the first
        it = itertools.cycle(one_rows)
        us = 1e6 * np.asarray(timeit.repeat(lambda fn=fn, it=it: fn(next(it)), number=1, repeat=20 + n)[20:])
        out[key] = {"what": what, "calls": n, "p50_us": float(np.median(us)), "mean_us": float(us.mean())}
    return out


def phase(bench: Bench, contenders: list[str]) -> dict:
    """The published method; the results' ``n``, ``warmup``, ``contenders`` and ``parity``, and the raw files."""
    plan, rows = bench.plan, bench.rows
    timed = [contender(name, bench.endpoints[name], rows, bench.model_name) for name in contenders]
    with bench.plan.bar(plan.n * len(timed), "sequential") as bar:
        run_sequential(timed, plan.n, warmup=plan.warmup, n_rows=len(rows), progress=bar)
    for c in timed:
        c.close()
    answers = {c.name: np.asarray([c.answers[i] for i in sorted(c.answers)], dtype=np.float64) for c in timed}
    np.savez_compressed(bench.out / "answers.npz", **answers)
    np.savez_compressed(bench.out / "sequential_latencies_ns.npz",
                        **{c.name: np.asarray(c.latencies_ns, dtype=np.int64) for c in timed})
    return {"n": plan.n, "warmup": plan.warmup,
            "contenders": {c.name: {**summarize(c.latencies_ns),
                                    "model_versions_answered": sorted(c.versions), "client": c.client,
                                    "reconnects": c.reconnects, "server": bench.endpoints[c.name].server}
                           for c in timed},
            "parity": parity(answers, plan.parity_atol)}
