"""Benchmark: Triton (per ``fil`` backend, HTTP and gRPC) against FastAPI + Uvicorn (sklearn,
Treelite): one model version, the same rows, one machine, one run.

  triton-native     the bundled Triton with the native `fil` backend (libtriton_fil.so), KServe v2 JSON over HTTP
  triton-python     the same Triton with the Python-based `fil` backend, over HTTP: the gap to
                    triton-native is what the Python backend stub costs
  triton-grpc       the triton-native server over gRPC (tritonclient.grpc)
  fastapi-sklearn   FastAPI + Uvicorn (1 worker), the pickled pipeline's predict_proba: the published baseline
  fastapi-treelite  FastAPI + Uvicorn (1 worker), the very model file Triton serves, predicted with
                    the fil backend's runtime: the fair baseline

Already-running servers (a Kubernetes Service, the compose stack) are measured the same way:
``--triton-url`` (contender triton-http; ``--triton-grpc-url`` adds triton-grpc) and
``--fastapi-url`` (repeatable; contender fastapi-<runtime>, from the app's ``/healthz``). Nothing
is started or pinned then; the rows come from ``--data`` or the synthetic generator.

Phases: (1) sequential, the published method: a warm-up, then N one-row requests one after another
per contender, every latency kept; (2) load: locust (headless, FastHttpUser) at each user count
against every HTTP contender, with Triton's batch statistics before and after; (3) a perf_analyzer
``--async`` concurrency sweep over Triton HTTP and gRPC (and triton-python) to cross-check locust.

With 2+ CPUs every server the benchmark starts runs on the first CPU and every client on the
second; results.json records the CPU lists each process actually had.

Model: by default the served version of --model-repo (an s3:// repo reads the local SeaweedFS
credentials from <state-dir>/s3/credentials.env unless the environment has them), with the sklearn
pipeline of the Metaflow run its lineage.json names. --reference-model trains the reference model
here instead (RandomForest, 100 trees, depth 10, 30 features).

Output: benchmark/results/<UTC time>/ (results.json, report.md, two PNGs, raw files) and the link
benchmark/results/latest; the report records the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dotenv import load_dotenv
from tqdm import tqdm

from benchmark import analysis, load, model_source, report, sequential, servers
from benchmark.servers import BenchmarkError, Endpoint
from fraudml.storage import StorageError
from fraudml.tritonconfig import MODEL_NAME
from serve.supervisor import ServiceError
from serve.triton import TritonError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# what a run that starts its own servers measures; triton-http is the contender of --triton-url
INTERNAL_CONTENDERS = ("triton-native", "triton-python", "triton-grpc", "fastapi-sklearn", "fastapi-treelite")
SCHEMA = "fraud-classifier-benchmark/2"


@dataclass
class Plan:
    """Every knob of one run (the CLI fills it; tests build it directly)."""

    state_dir: Path = Path(".state")
    results_dir: Path = RESULTS_DIR
    model_repo: str = "s3://models/triton"
    version: int | None = None
    reference_model: bool = False
    reference_trees: int = 100
    reference_depth: int = 10
    pipeline_artifact: str | None = None
    data: str | None = None
    quick: bool = False
    n: int = 10_000
    warmup: int = 500
    distinct_rows: int = 2_000
    contenders: tuple[str, ...] | None = None  # None: every contender the mode has
    triton_url: str | None = None  # already-running servers to measure instead of starting any
    triton_grpc_url: str | None = None
    fastapi_urls: tuple[str, ...] = ()
    model_name: str = MODEL_NAME  # the model an already-running Triton serves
    users: tuple[int, ...] = (1, 8, 32)
    duration_s: int = 20
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    perf_measurement_ms: int = 3000
    perf_max_trials: int = 6
    pin: bool = True
    progress: bool = True
    parity_atol: float = 1e-5
    triton_runtime: str = "compiled"  # what the fil backend serves: compiled (default) or gtil
    in_process_calls: int = 1_000
    command: str | None = None

    @property
    def external(self) -> bool:  # measure servers that are already running (none is started)
        return bool(self.triton_url or self.triton_grpc_url or self.fastapi_urls)

    @classmethod
    def quick_plan(cls, **overrides) -> Plan:
        # one load level: the sequential phase already measures one client at a time
        values = dict(quick=True, n=1_000, warmup=100, distinct_rows=1_000, users=(32,), duration_s=5,
                      # The quick run cross-checks the 32-user locust figure only, with short
                      # stable windows: perf_analyzer 2.51's --request-count mode hung on HTTP here.
                      concurrency=(32,), perf_measurement_ms=1000, perf_max_trials=3, in_process_calls=200)
        return cls(**(values | overrides))

    def bar(self, total: int, desc: str):
        """A tqdm progress bar, silent with --no-progress."""
        return tqdm(total=total, desc=desc, unit="req" if desc == "sequential" else "step", disable=not self.progress,
                    dynamic_ncols=True, mininterval=0.5, leave=desc == "benchmark")


@dataclass
class Bench:
    """What the measuring phases share."""

    plan: Plan
    endpoints: dict[str, Endpoint]  # where each contender answers
    rows: np.ndarray
    model_name: str  # the model's name on a Triton
    out: Path  # the results folder
    work: Path  # <state-dir>/benchmark
    client_cpu: int | None


def run(plan: Plan) -> Path:
    """Run the whole benchmark into ``<results_dir>/<UTC time>`` (``<UTC time>-failed`` on failure, ``latest`` kept)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = plan.results_dir / stamp
    try:
        return _run(plan, out, stamp)
    except BaseException:
        if out.is_dir():
            out.rename(out.with_name(f"{stamp}-failed"))
        raise


def _run(plan: Plan, out: Path, stamp: str) -> Path:
    tqdm.monitor_interval = 0  # no monitor thread beside the timed client
    started = time.monotonic()
    work = plan.state_dir / "benchmark"
    work.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    results: dict = {"schema": SCHEMA, "created_utc": stamp, "command": plan.command, "quick": plan.quick,
                     "machine": servers.machine_info(), "load_average": {"before": list(os.getloadavg())},
                     "servers_started_by_benchmark": not plan.external, "skipped": skipped}
    bar, seconds = plan.bar(7, "benchmark"), {}

    @contextlib.contextmanager
    def phases(name: str):  # the top-level progress bar and each phase's seconds (results.json)
        t0 = time.monotonic()
        bar.set_postfix_str(name, refresh=True)
        yield
        seconds[name] = round(time.monotonic() - t0, 1)
        bar.update(1)

    with phases("model"):
        model, endpoints, server_facts = None, {}, {}
        if plan.external:
            endpoints, server_facts = servers.external_endpoints(plan.triton_url, plan.triton_grpc_url,
                                                                 plan.fastapi_urls, plan.model_name)
            triton = server_facts.get("triton", {})  # what the running servers say of their model
            results["model"] = {"name": plan.model_name, "source_repo": "not read: the servers were already running",
                                "n_features": triton.get("n_features") or 30, "max_batch_size": triton.get("max_batch_size")}
            contenders = [c for c in analysis.ORDER if c in endpoints and c in (plan.contenders or analysis.ORDER)]
        else:
            model = _own_model(plan, work)
            results["model"] = model.to_json()
            contenders = [c for c in (plan.contenders or INTERNAL_CONTENDERS) if c in INTERNAL_CONTENDERS]
            if "fastapi-sklearn" in contenders and model.pipeline_file is None:
                contenders.remove("fastapi-sklearn")
                skipped["fastapi-sklearn"] = model.pipeline_note
        rows, rows_origin = model_source.benchmark_rows(plan.distinct_rows, model, data=plan.data)
        if rows.shape[1] != results["model"]["n_features"]:
            raise BenchmarkError(f"the rows have {rows.shape[1]} features, {results['model']['name']} takes "
                                 f"{results['model']['n_features']}: pass --data with the model's features")
        results["rows"] = {"distinct": int(len(rows)), "n_features": int(rows.shape[1]), "origin": rows_origin,
                           "order": "request i sends row i mod distinct, identical for every contender"}
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "rows.npy", rows)

    pins = results["pinning"] = servers.cpu_plan(plan.pin, plan.external)
    with phases("runtimes"):
        fil = {"runtime": None, "env": {}, "library": None}
        if model is not None:
            fil = servers.prepare_fil_runtime(model, plan.triton_runtime, (plan.state_dir / "fil-cache").absolute())
            results["fil_runtime"] = {k: v for k, v in fil.items() if k != "env"}
            with servers.pinned(pins["client_cpu"]):
                results["in_process"] = sequential.in_process_runtimes(model, rows, fil["library"],
                                                                       plan.in_process_calls)

    # this process is a client from here on; the stack stops every server started here, also after a failure
    with servers.pinned(pins["client_cpu"]), contextlib.ExitStack() as stack:
        with phases("servers"):
            if not plan.external:
                # own: contender -> the server started here for it
                endpoints, server_facts, own = servers.start_servers(model, rows, fil, contenders, pins, work,
                                                                     skipped, stack)
                contenders = [c for c in contenders if c in endpoints]
                pins["observed"] = {"client (this process)": sorted(os.sched_getaffinity(0)), **{
                    name: servers.process_affinity(pid) for name, server in own.items() if (pid := server.pid())}}
            results["servers"] = server_facts
            if not contenders:
                raise BenchmarkError("no contender is left to measure: "
                                     + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        bench = Bench(plan, endpoints, rows, plan.model_name if model is None else model.name, out, work,
                      pins["client_cpu"])
        headline = analysis.headline(contenders)
        with phases("sequential"):
            results.update(sequential.phase(bench, contenders))
            if plan.external:
                results["model"]["version"] = ",".join(sorted(
                    {v for c in results["contenders"].values() for v in c["model_versions_answered"]}))
        with phases("load"):
            results.update(load.phase(bench, contenders, headline))
        with phases("perf_analyzer"):
            results["perf_analyzer"] = load.perf_phase(bench, contenders, headline)

    with phases("report"):
        results["load_average"]["after"] = list(os.getloadavg())
        results["duration_s"] = round(time.monotonic() - started, 1)
        results["phase_seconds"] = seconds
        results["analysis"] = analysis.analyze(results)
        (out / "results.json").write_text(json.dumps(  # numpy scalars and the compiled library's Path as JSON
            results, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
        report.write_report(out)
        latest = plan.results_dir / "latest"
        latest.unlink(missing_ok=True)
        latest.symlink_to(out.name)
    bar.close()
    return out


def _own_model(plan: Plan, work: Path) -> model_source.BenchModel:
    """The reference model trained here, or one version of the model repository."""
    if plan.reference_model:
        return model_source.reference_model(work / "model", plan.reference_trees, plan.reference_depth)
    if plan.model_repo.startswith("s3://"):  # the local SeaweedFS's, unless the environment has its own
        load_dotenv(plan.state_dir / "s3" / "credentials.env", override=False)
    return model_source.from_repository(plan.model_repo, work / "model", plan.version, plan.pipeline_artifact)


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(x) if x.strip().isdigit() else 0 for x in text.split(",") if x.strip())
    if not all(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers >= 1")
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names or not set(names) <= set(analysis.ORDER):
        raise argparse.ArgumentTypeError(f"{text!r}: choose contenders from {', '.join(analysis.ORDER)}")
    return names


def parse_args(argv: list[str] | None = None) -> Plan:
    defaults, quick = Plan(), Plan.quick_plan()
    p = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--quick", action="store_true", help=f"the demo's short run (N={quick.n}, users {quick.users[0]} for "
        f"{quick.duration_s} s, perf_analyzer at {quick.concurrency[0]}); about 2 minutes including server start-ups")
    # without a value these fall back to the Plan's (or the quick Plan's) defaults
    add("--n", type=int, help=f"sequential requests per contender (default {defaults.n}, quick {quick.n})")
    add("--warmup", type=int, help=f"untimed requests per contender first (default {defaults.warmup})")
    add("--users", type=_ints, help="locust user counts, e.g. 1,8,32 (default 1,8,32; quick 32)")
    add("--duration", type=int, dest="duration_s", metavar="DURATION", help=f"seconds per locust run (default "
        f"{defaults.duration_s}; quick {quick.duration_s}); 0 skips the load phase")
    add("--concurrency", type=_ints, help="perf_analyzer concurrency levels (default 1,2,4,8,16,32; quick 32)")
    add("--no-load", action="store_const", const=(), dest="users", help="skip the locust phase")
    add("--no-perf", action="store_const", const=(), dest="concurrency", help="skip the perf_analyzer phase")
    add("--contenders", type=_names, help=f"subset of {','.join(analysis.ORDER)} (default: every one of the "
        "mode: triton-http only with --triton-url)")
    add("--triton-url", help="measure this already-running Triton (http://host:port) instead of starting one; "
        "nothing is started or pinned")
    add("--triton-grpc-url", help="its gRPC endpoint (host:port), for the triton-grpc contender")
    add("--fastapi-url", action="append", default=[], dest="fastapi_urls", metavar="FASTAPI_URL",
        help="an already-running benchmark.app (http://host:port; repeatable): contender fastapi-<its runtime>")
    add("--model-name", default=os.environ.get("MODEL_NAME", defaults.model_name),
        help="the model an already-running Triton serves (default: %(default)s)")
    add("--state-dir", type=Path, default=".state", help="servers' state, model copy, logs (default: %(default)s)")
    add("--results-dir", type=Path, default=str(RESULTS_DIR),
        help="where <UTC time>/ and latest go (default: benchmark/results)")
    add("--model-repo", default=os.environ.get("MODEL_REPO", defaults.model_repo),
        help="model repository: s3://bucket/prefix or a folder (default: %(default)s, env MODEL_REPO)")
    add("--version", type=int, help="model version to benchmark (default: the served one)")
    add("--pipeline-artifact", help="name of the sklearn pipeline artifact in the Metaflow run (default: the "
        f"first of {', '.join(model_source.PIPELINE_ARTIFACTS)})")
    add("--data", help="take rows from this dataset (CSV path or s3:// URL) instead of the training run's test "
        "set (or, without one, fresh synthetic rows)")
    add("--reference-model", action="store_true", help="train the reference model here (RandomForest, 100 "
        "trees, depth 10) instead of reading the model repository")
    add("--reference-trees", type=int, default=defaults.reference_trees, help=argparse.SUPPRESS)
    add("--reference-depth", type=int, default=defaults.reference_depth, help=argparse.SUPPRESS)
    add("--triton-runtime", choices=("compiled", "gtil"), default="compiled", help="what Triton's fil backend "
        "(and fastapi-treelite) predict with: the tl2cgen-compiled model, compiled into <state-dir>/fil-cache "
        "before Triton starts (default, what `make serve` serves), or Treelite GTIL (FIL_COMPILE=0)")
    add("--no-pin", action="store_false", dest="pin", help="do not pin servers and clients to separate CPUs")
    add("--no-progress", action="store_false", dest="progress", help="no progress bars")
    args = vars(p.parse_args(argv))
    plan = (Plan.quick_plan if args.pop("quick") else Plan)(
        command="python -m benchmark.run " + shlex.join(sys.argv[1:] if argv is None else argv),
        **{k: tuple(v) if k == "fastapi_urls" else v for k, v in args.items() if v is not None})
    if not plan.external and "triton-http" in (plan.contenders or ()):
        p.error("triton-http is the contender of --triton-url; a run that starts its servers has "
                "triton-native and triton-python")
    if plan.n < 1:
        p.error("--n must be >= 1")
    return plan


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    try:
        out = run(plan)
    except (BenchmarkError, LookupError, StorageError, TritonError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.summary_text(json.loads((out / "results.json").read_text())))
    print(f"\nresults: {out}  (also {plan.results_dir / 'latest'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
