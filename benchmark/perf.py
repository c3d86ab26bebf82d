"""A ``perf_analyzer`` concurrency sweep over Triton HTTP and gRPC: the cross-check of locust.

The binary is the one in the ``tritonclient==2.51.0`` wheel (the release of the bundled
server; DESIGN §2). It needs ``libb64.so.0d`` and ``libcudart.so.12``, which the
``nvidia-pytriton`` wheel carries under hashed names: :func:`perf_analyzer_env` links them
under their plain names in a private folder of the state dir and puts it on
``LD_LIBRARY_PATH`` for perf_analyzer only.

    python -m benchmark.perf --http-port 8000 --grpc-port 8001 --concurrency 1,8,32

Every concurrency level is its own bounded run. ``stable`` mode lets perf_analyzer repeat
windows of ``--measurement-interval`` ms until three agree within the stability percentage,
at most ``--max-trials`` windows; a level that does not stabilise (a shared machine) is
measured once more with the same windows and no stability condition (the average of the last
windows) and marked so: a fixed ``--request-count`` fallback hung on this perf_analyzer or
reported about request-count req/s whatever the server did. ``count`` mode measures a fixed
number of requests per level straight away.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from fraudml.tritonconfig import MODEL_NAME

LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class PerfAnalyzerMissing(RuntimeError):
    """perf_analyzer or one of its libraries cannot be found."""


def find_perf_analyzer() -> Path:
    candidate = Path(sys.executable).parent / "perf_analyzer"
    if candidate.is_file():
        return candidate
    found = shutil.which("perf_analyzer")
    if found:
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
        link = lib_dir / plain
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0])
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH")) if p)
    return env


def write_input_data(rows: np.ndarray, path: Path, limit: int = 1000) -> Path:
    """perf_analyzer's ``--input-data`` JSON: the benchmark's own rows, one per request."""
    data = [{"input__0": {"content": row.tolist(), "shape": [int(rows.shape[1])]}}
            for row in np.asarray(rows[:limit], dtype=np.float32)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_csv(path: Path) -> dict:
    """First data row of perf_analyzer's ``-f`` CSV; latencies converted from us to ms."""
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))
    us = lambda key: (_num(row.get(key)) or 0.0) / 1e3  # noqa: E731
    out = {
        "concurrency": int(_num(row.get("Concurrency")) or 0),
        "rps": _num(row.get("Inferences/Second")),
        "p50_ms": us("p50 latency"),
        "p90_ms": us("p90 latency"),
        "p95_ms": us("p95 latency"),
        "p99_ms": us("p99 latency"),
        # the CSV has no average column: the client's average is the sum of its parts
        "mean_ms": sum(us(k) for k in ("Client Send", "Network+Server Send/Recv", "Server Queue",
                                        "Server Compute Input", "Server Compute Infer",
                                        "Server Compute Output", "Client Recv")),
        "server_queue_ms": us("Server Queue"),
        "server_compute_ms": us("Server Compute Input") + us("Server Compute Infer") + us("Server Compute Output"),
        "client_send_recv_ms": us("Client Send") + us("Client Recv"),
    }
    return out


def run_perf_analyzer(*, protocol: str, port: int, concurrency: int, input_data: Path,
                      out_dir: Path, env: dict[str, str], taskset: list[str], mode: str = "stable",
                      measurement_ms: int = 2000, max_trials: int = 5, stability: int = 20,
                      request_count: int = 5000, model: str = MODEL_NAME,
                      timeout_s: float | None = None, host: str = "127.0.0.1", tag: str = "") -> dict:
    """One perf_analyzer run at one concurrency; returns the parsed CSV row or the error.

    ``--async``: the requests in flight are kept by one client thread, not one thread each
    (32 sync threads on one client core measure the client's scheduling)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"perf_{tag}{protocol}_c{concurrency}"
    csv_path = out_dir / f"{name}.csv"
    base = [*taskset, str(find_perf_analyzer()), "-m", model, "-u", f"{host}:{port}", "--async",
            "-i", protocol, "-b", "1", "--concurrency-range", f"{concurrency}:{concurrency}",
            "--input-data", str(input_data), "-f", str(csv_path)]
    windows = ["-p", str(measurement_ms), "--max-trials", str(max_trials)]
    # A healthy run needs its windows plus start-up; perf_analyzer 2.51 can hang on HTTP at high
    # concurrency, so a hung attempt costs a few windows' worth, not minutes (quick run: 32 s).
    timeout_s = timeout_s or 20 + 4 * max_trials * measurement_ms / 1000
    if mode == "stable":
        attempts = [("stable windows", [*windows, "-s", str(stability)]),
                    ("windows averaged without stabilising", [*windows, "-s", "100"])]
    else:
        attempts = [(f"fixed request count ({request_count})", ["--request-count", str(request_count)])]
    logs, error = [], None
    for method, extra in attempts:
        csv_path.unlink(missing_ok=True)
        try:
            proc = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            error = f"{method}: timed out after {timeout_s:.0f} s"
            logs.append(error)
            continue
        logs.append(f"--- {method}\n{proc.stdout}{proc.stderr}")
        if proc.returncode == 0 and csv_path.is_file():
            (out_dir / f"{name}.log").write_text("\n".join(logs))
            result = parse_csv(csv_path)
            result["method"] = method if len(logs) == 1 else f"{method}, after {attempts[0][0]} did not stabilise"
            return result
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:]
        error = f"{method}: exit {proc.returncode}: {' | '.join(tail)[:300]}"
    (out_dir / f"{name}.log").write_text("\n".join(logs))
    return {"concurrency": concurrency, "error": error}


def sweep(*, http_port: int | None, grpc_port: int | None, concurrencies: list[int], rows: np.ndarray,
          work_dir: Path, lib_dir: Path, taskset: list[str], mode: str = "stable", measurement_ms: int = 2000,
          max_trials: int = 5, stability: int = 20, request_count: int = 5000, progress=None,
          model: str = MODEL_NAME, host: str = "127.0.0.1", tag: str = "") -> dict:
    """Both protocols at every concurrency; ``{"http": [...], "grpc": [...], "settings": {...}}``.
    ``tag`` prefixes the files written (several servers in one run)."""
    env = perf_analyzer_env(lib_dir)
    input_data = write_input_data(rows, work_dir / "perf_input.json")
    out: dict = {"settings": {"binary": str(find_perf_analyzer()), "mode": mode,
                              "measurement_interval_ms": measurement_ms, "max_trials": max_trials,
                              "stability_percentage": stability, "request_count": request_count, "batch_size": 1,
                              "client": "async (--async), closed loop (concurrency = requests in flight)",
                              "input_data": f"{min(len(rows), 1000)} benchmark rows"}}
    for protocol, port in (("http", http_port), ("grpc", grpc_port)):
        if port is None:
            continue
        out[protocol] = []
        for c in concurrencies:
            if progress is not None:
                progress.set_postfix_str(f"perf_analyzer {protocol} c={c}", refresh=True)
            out[protocol].append(run_perf_analyzer(
                protocol=protocol, port=port, concurrency=c, input_data=input_data, out_dir=work_dir,
                env=env, taskset=taskset, mode=mode, measurement_ms=measurement_ms, max_trials=max_trials,
                stability=stability, request_count=request_count, model=model, host=host, tag=tag))
            if progress is not None:
                progress.update(1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--concurrency", default="1,2,4,8,16,32", help="comma-separated (default: %(default)s)")
    p.add_argument("--measurement-interval", type=int, default=2000, help="ms per window (default: %(default)s)")
    p.add_argument("--max-trials", type=int, default=5, help="windows per level at most (default: %(default)s)")
    p.add_argument("--mode", choices=("stable", "count"), default="stable",
                   help="stable windows (averaged unstabilised if a level does not stabilise) or a fixed count")
    p.add_argument("--request-count", type=int, default=5000, help="requests per level in count mode")
    p.add_argument("--state-dir", default=".state", help="perf_analyzer's library links go here")
    p.add_argument("--rows", type=int, default=1000, help="zero rows of 30 features if no --rows-file")
    p.add_argument("--rows-file", help=".npy of float32 rows (n, 30)")
    p.add_argument("--cpu", default=None, help="pin perf_analyzer to these CPUs (taskset -c)")
    args = p.parse_args(argv)
    rows = np.load(args.rows_file) if args.rows_file else np.zeros((args.rows, 30), np.float32)
    work = Path(args.state_dir) / "benchmark" / "perf-cli"
    result = sweep(http_port=args.http_port, grpc_port=args.grpc_port,
                   concurrencies=[int(c) for c in args.concurrency.split(",")], rows=rows,
                   work_dir=work, lib_dir=Path(args.state_dir) / "benchmark" / "lib",
                   taskset=["taskset", "-c", args.cpu] if args.cpu else [],
                   mode=args.mode, measurement_ms=args.measurement_interval, max_trials=args.max_trials,
                   request_count=args.request_count)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
