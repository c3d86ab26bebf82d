"""Reliability and security suite: bad input, faults, load and security, with counted cases.

    python -m benchmark.reliability [--quick] [--soak-seconds S] [--state-dir .state]
    make reliability

It starts its own SeaweedFS S3 and Triton (and the FastAPI baseline) on free loopback
ports under ``<state-dir>/reliability/``, trains a small reference model with the project's
own pipeline and exporter, publishes it through the project's publisher, and then runs:

| category | what |
| --- | --- |
| bad-input | malformed / mistyped / misshapen / non-finite / empty / oversized / 50 MB requests, unknown model and version, to Triton (HTTP JSON, HTTP binary, gRPC) and to the FastAPI baseline; after each, the server is ready and a correct request gets the model's own predict_proba |
| shape-attacks | declared shapes that are huge (issue 13: `[2^40, 30]` with 4 values), overflow int64, are negative or zero, or exceed max_batch_size with little data, over HTTP JSON, HTTP binary and gRPC, and to the FastAPI baseline: a clear 4xx / INVALID_ARGUMENT, or, for the HTTP JSON shapes that abort tritonserver 2.51, the launcher's supervisor serving again within 120 s; the same shapes against a Triton with the Kubernetes entrypoint's API restrictions: 403 without the key, no crash |
| fuzz | Hypothesis-generated request bodies (structure-aware: shapes, dtypes, values, JSON mutations) for Triton JSON, Triton binary and FastAPI; the example count is the case count |
| training-input | every malformed dataset through load_dataset + validate_dataset, a few through the real flow (fails in preprocess, no train task) |
| faults-s3 | S3 stopped (SIGTERM, SIGKILL) at several points of a publish: a clear PublishError within seconds, nothing half-written visible to Triton, the retry gets a new number |
| faults-model | corrupt and wrong model files published and rolled out: Triton refuses, the previous version keeps serving, the pointer goes back |
| faults-triton | tritonserver SIGKILLed under HTTP and gRPC client loops, and restarted in the middle of a publish |
| faults-deploy | two concurrent deploys from two processes: two distinct complete versions, and Triton serving what config.pbtxt names afterwards; config.pbtxt re-pointed twice within one second |
| load | a locust soak at 32 users on loopback: zero errors, Triton's RSS before/after |
| security | secret scan of the repository and its history, Dockerfiles and manifests; loopback-only sockets; S3 refuses anonymous and wrong-credential requests; dependency audit |

"Versions lost" is computed: every version whose publish reported success is read back
from S3 at the end of each fault category and compared by sha256 with what was published.

Results: ``benchmark/results/reliability-<timestamp>.json`` and ``.md``; the summary table
is printed at the end. Exit status 1 when any case failed or any version was lost.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPO_URI = "s3://models/reliability"
# The rig's Triton runs supervised, like `make serve`; the shape attacks and the fuzz crash
# tritonserver 2.51 on purpose, and faults-triton SIGKILLs it, more often than the launcher's
# default allows (5 in 10 minutes).
RIG_MAX_RESTARTS = 100

CATEGORIES = {
    "bad-input": "Bad input to Triton (HTTP JSON, HTTP binary, gRPC) and FastAPI",
    "shape-attacks": "Huge, overflowing, negative and zero declared shapes (issue 13)",
    "fuzz": "Hypothesis fuzz over request bodies",
    "training-input": "Malformed training datasets",
    "faults-s3": "S3 stopped in the middle of a publish",
    "faults-model": "Corrupt or wrong model file published",
    "faults-triton": "Triton killed / restarted under client load",
    "faults-deploy": "Concurrent deploys",
    "load": "Bounded soak at 32 users",
    "security": "Secrets, bindings, S3 authentication, dependencies",
}


@dataclass
class Plan:
    quick: bool = False
    soak_seconds: int = 180
    users: int = 32
    fuzz_examples: int = 300
    state_dir: Path = Path(".state")
    results_dir: Path = ROOT / "benchmark" / "results"
    only: tuple[str, ...] = tuple(CATEGORIES)
    pip_audit: bool = True
    fil_compile: bool = False  # GTIL only: deterministic; --fil-compile adds the background tl2cgen compile
    flow_cases: tuple[str, ...] = ("missing column V7", "NaN in V3")
    s3_points: tuple[str, ...] = ("after-first-file-put", "during-read-back", "before-config-swap",
                                  "sigkill-after-first-file-put")
    corrupt_kinds: tuple[str, ...] | None = None  # None: all
    kill_rounds: int = 2
    deploy_rounds: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick_plan(cls, **kw) -> Plan:
        return cls(quick=True, soak_seconds=30, fuzz_examples=100,
                   s3_points=("after-first-file-put", "sigkill-after-first-file-put"),
                   corrupt_kinds=("random bytes", "truncated checkpoint (first half)",
                                  "LightGBM model text under checkpoint.tl", "valid checkpoint with 29 features"),
                   kill_rounds=1, deploy_rounds=1, **kw)


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------
# the rig
# ------------------------------------------------------------------------------------------

def build_rig(work_dir: Path, s3, start_triton: Callable[[str, dict[str, str]], Any], *, fastapi: bool = True,
              log: Callable[[str], None] = log, quick: bool = False):
    """Train the reference model, publish it as v1 on ``s3`` (a started SeaweedS3), start
    Triton with ``start_triton(repo_uri, env)`` and the FastAPI baseline. Returns (rig, stop)."""
    from benchmark.reliability_common import Ledger, Rig, publish_reference, train_reference
    from benchmark.reliability_input import FastAPIProcess
    from serve.ports import free_port

    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model = train_reference()
    log(f"reference model trained in {time.monotonic() - started:.1f} s (random forest, 20 trees, depth 6)")
    rig = Rig(work_dir=work_dir, s3=s3, triton=None, repo_uri=REPO_URI, model=model, ledger=Ledger(), log=log, quick=quick)
    repo = rig.repo()
    if repo.served_version() is not None:  # a reused S3 state: start from what is there
        log(f"{REPO_URI} already serves v{repo.served_version()}")
    version = publish_reference(repo, rig.ledger, model, "reliability reference model")
    log(f"published {REPO_URI} fraud-classifier/{version}")
    rig.triton = start_triton(REPO_URI, s3.env())
    log(f"Triton ready: {rig.triton.http_url} / {rig.triton.grpc_url}")
    api = None
    if fastapi:
        model_dir = repo.download_version(version, work_dir / "fastapi-model")
        api = FastAPIProcess(model_dir / "checkpoint.tl", free_port(), work_dir / "uvicorn.log").start()
        rig.fastapi_url, rig.fastapi_pid = api.url, api.pid
        log(f"FastAPI baseline ready: {api.url}")

    def stop() -> None:
        if api is not None:
            api.stop()

    return rig, stop


# ------------------------------------------------------------------------------------------
# categories
# ------------------------------------------------------------------------------------------

def run_category(name: str, rig, plan: Plan, cat) -> None:
    from benchmark import (
        reliability_data,
        reliability_faults,
        reliability_input,
        reliability_load,
        reliability_security,
    )

    if name == "bad-input":
        reliability_input.triton_bad_input(rig, cat, quick=plan.quick)
        if rig.fastapi_url:
            reliability_input.fastapi_bad_input(rig, cat)
    elif name == "shape-attacks":
        shape_attacks(rig, cat)
    elif name == "fuzz":
        reliability_input.fuzz(rig, cat, plan.fuzz_examples)
    elif name == "training-input":
        files = reliability_data.validate_cases(cat, rig.work_dir / "datasets")
        reliability_data.flow_cases(cat, files, rig.work_dir / "datasets", list(plan.flow_cases))
    elif name.startswith("faults-"):
        try:
            if name == "faults-s3":
                reliability_faults.s3_stopped_mid_publish(rig, cat, list(plan.s3_points))
            elif name == "faults-model":
                reliability_faults.corrupt_versions(rig, cat, list(plan.corrupt_kinds) if plan.corrupt_kinds else None)
            elif name == "faults-triton":
                reliability_faults.triton_killed(rig, cat, rounds=plan.kill_rounds)
                reliability_faults.triton_restart_during_publish(rig, cat)
            elif name == "faults-deploy":
                reliability_faults.concurrent_deploys(rig, cat, rounds=plan.deploy_rounds)
                reliability_faults.same_second_repoint(rig, cat)
        finally:
            reliability_faults.ledger_check(rig, cat)
    elif name == "load":
        reliability_load.soak(rig, cat, plan.soak_seconds, users=plan.users)
    elif name == "security":
        reliability_security.secret_scan(cat, [rig.s3.state_dir])
        reliability_security.bindings(cat, {"weed (SeaweedFS S3)": rig.s3.pid(), "tritonserver": rig.triton.pid(),
                                            "uvicorn (FastAPI baseline)": rig.fastapi_pid})
        reliability_security.s3_auth(rig, cat)
        reliability_security.dependency_audit(cat, run_pip_audit=plan.pip_audit)
    else:
        raise ValueError(f"unknown category {name!r}")


def shape_attacks(rig, cat) -> None:
    """The shape-attacks category: the rig's (supervised) Triton, the FastAPI baseline, and a
    second Triton on the same repository with the Kubernetes entrypoint's API restrictions."""
    from benchmark import reliability_shapes as shapes
    from serve.ports import free_ports
    from serve.triton import TritonServer

    shapes.triton_shape_attacks(cat, rig.triton, lambda protocol: rig.check_serving(
        "grpc" if protocol == "grpc" else "http"))
    if rig.fastapi_url:
        shapes.fastapi_shape_attacks(cat, rig.fastapi_url, rig.check_fastapi)
    key = shapes.new_api_key()
    http_port, grpc_port, metrics_port = free_ports(3)
    restricted = TritonServer(rig.repo_uri, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                              state_dir=rig.triton.state_dir.parent / "triton-k8s-flags",
                              env={**rig.env, "FIL_COMPILE": "0"}, fil_cache_dir=rig.triton.fil_cache_dir,
                              supervise=True, extra_args=shapes.entrypoint_restrictions(key))
    try:
        restricted.start(timeout=180)
        shapes.restricted_shape_attacks(cat, restricted, key)
    finally:
        restricted.stop()


def run(plan: Plan) -> tuple[Path, Path, int]:
    from benchmark.reliability_common import Category
    from serve.ports import free_port, free_ports
    from serve.s3 import SeaweedS3
    from serve.triton import TritonServer

    base = (plan.state_dir / "reliability").absolute()
    if base.exists():  # ours: stop what a previous (interrupted) run left, then start clean
        for name in ("triton", "triton-k8s-flags"):
            with contextlib.suppress(Exception):
                TritonServer("unused", state_dir=base / name).stop()
        with contextlib.suppress(Exception):
            SeaweedS3(base / "s3").stop()
        shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started_at = dt.datetime.now()
    t0 = time.monotonic()
    categories: list[Category] = []
    s3 = SeaweedS3(base / "s3", port=free_port(), bucket="models")
    triton = None
    stop_rig = None
    try:
        s3.start(timeout=90)
        log(f"SeaweedFS S3 ready: {s3.endpoint_url} (state {s3.state_dir})")

        def start_triton(repo_uri: str, env: dict[str, str]):
            nonlocal triton
            http_port, grpc_port, metrics_port = free_ports(3)
            triton = TritonServer(repo_uri, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                  state_dir=base / "triton", env={**env, "FIL_COMPILE": "1" if plan.fil_compile else "0"},
                                  fil_cache_dir=base / "fil-cache", supervise=True, max_restarts=RIG_MAX_RESTARTS)
            return triton.start(timeout=180)

        rig, stop_rig = build_rig(base / "work", s3, start_triton, quick=plan.quick)
        for name in [c for c in CATEGORIES if c in plan.only]:
            cat = Category(name, CATEGORIES[name], log=log)
            categories.append(cat)
            log(f"\n== {name}: {CATEGORIES[name]}")
            started = time.monotonic()
            try:
                if name.startswith("faults-") or name in ("load", "security"):
                    repaired = rig.heal()
                    if repaired:
                        cat.facts["rig_repaired_before_this_category"] = repaired
                        log(f"  (rig repaired after the previous category: {repaired})")
                run_category(name, rig, plan, cat)
            except Exception as exc:  # noqa: BLE001 - a broken category is reported, the others still run
                cat.add(f"{name} could not run to its end", False, f"{type(exc).__name__}: {exc}")
            cat.seconds = time.monotonic() - started
            log(f"== {name}: {cat.tried} cases, {cat.failures} failures, {cat.skipped} skipped "
                f"in {cat.seconds:.0f} s")
    finally:
        if stop_rig is not None:
            stop_rig()
        if triton is not None:
            triton.stop()
        s3.stop()
        from benchmark.reliability_common import reap_orphans

        orphans = reap_orphans(str(base / "triton" / "server"))
        if orphans:
            log(f"stopped {len(orphans)} Python backend stub(s) orphaned by the SIGKILL cases: pids {orphans}")
            for cat in categories:
                if cat.name == "faults-triton":
                    cat.facts["orphaned_stubs_still_running_at_the_end"] = len(orphans)
    seconds = time.monotonic() - t0
    json_path, md_path = write_results(plan, categories, started_at, seconds)
    table = summary_table(categories)
    log("\n" + table)
    log(f"\nresults: {json_path}\n         {md_path}")
    bad = sum(c.failures for c in categories) + sum(c.versions_lost or 0 for c in categories)
    return json_path, md_path, 1 if bad else 0


# ------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------

def summary_rows(categories) -> list[list[str]]:
    rows = []
    for c in categories:
        rows.append([c.name, str(c.tried), str(c.failures), str(c.skipped),
                     "-" if c.versions_lost is None else str(c.versions_lost)])
    lost = [c.versions_lost for c in categories if c.versions_lost is not None]
    rows.append(["total", str(sum(c.tried for c in categories)), str(sum(c.failures for c in categories)),
                 str(sum(c.skipped for c in categories)), str(max(lost)) if lost else "-"])
    return rows


def summary_table(categories) -> str:
    headers = ["category", "cases tried", "failures", "skipped", "versions lost"]
    rows = summary_rows(categories)
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(len(headers))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        if r[0] == "total":
            out.append("-" * len(line))
        out.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def _machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "git_commit": commit, "git_dirty": dirty}


def write_results(plan: Plan, categories, started_at: dt.datetime, seconds: float) -> tuple[Path, Path]:
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    json_path = plan.results_dir / f"reliability-{stamp}.json"
    md_path = plan.results_dir / f"reliability-{stamp}.md"
    doc = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "plan": {"quick": plan.quick, "soak_seconds": plan.soak_seconds, "users": plan.users, "fil_compile": plan.fil_compile,
                 "fuzz_examples_per_target": plan.fuzz_examples, "only": list(plan.only), "pip_audit": plan.pip_audit},
        "machine": _machine(),
        "summary": [dict(zip(["category", "tried", "failures", "skipped", "versions_lost"], r, strict=True))
                    for r in summary_rows(categories)],
        "categories": [c.to_json() for c in categories],
    }
    json_path.write_text(json.dumps(doc, indent=2, default=str))
    md_path.write_text(markdown(doc, categories))
    return json_path, md_path


def markdown(doc: dict[str, Any], categories) -> str:
    plan, machine = doc["plan"], doc["machine"]
    out = [
        "# Reliability and security run",
        "",
        f"{doc['started_at']}, {doc['seconds'] / 60:.1f} min, {'quick' if plan['quick'] else 'full'} plan "
        f"(soak {plan['soak_seconds']} s at {plan['users']} users, {plan['fuzz_examples_per_target']} fuzz examples per target, "
        f"local fil backend {'with background compile' if plan['fil_compile'] else 'on Treelite GTIL only'}), "
        f"commit {machine['git_commit']}{' (uncommitted changes)' if machine['git_dirty'] else ''}, "
        f"{machine['cpus']} CPUs, load average at the end {machine['loadavg_at_end']}.",
        "",
        "| category | cases tried | failures | skipped | versions lost |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    out += [f"| {' | '.join(r)} |" for r in summary_rows(categories)]
    out += ["", "Versions lost: every version whose publish reported success, read back from S3 and compared "
            "by sha256 with what was published (and no version number used twice).", ""]
    for c in categories:
        out += [f"## {c.name}: {c.title}", "", f"{c.tried} cases, {c.failures} failures, {c.skipped} skipped, "
                f"{c.seconds:.0f} s" + ("" if c.versions_lost is None else f", versions lost {c.versions_lost}"), ""]
        failed = c.failed_cases()
        if failed:
            out += ["Failures:", ""] + [f"- **{f.name}**: {f.detail}" for f in failed] + [""]
        facts = _fact_lines(c)
        if facts:
            out += facts + [""]
        listed = [x for x in c.cases if not x.name.startswith("fuzz ") or x.ok is False]
        if listed:
            out += ["| case | result | detail |", "| --- | --- | --- |"]
            for x in listed:
                mark = {True: "ok", False: "**FAIL**", None: "skipped"}[x.ok]
                out.append(f"| {x.name.replace('|', '/')} | {mark} | {x.detail.replace('|', '/')} |")
            out.append("")
    return "\n".join(out) + "\n"


def _fact_lines(c) -> list[str]:
    out = []
    for key, value in c.facts.items():
        if key.startswith("fuzz_"):
            out.append(f"- {key[5:]}: {value['examples']} examples (seed {value['seed']}): {value['answered_200']} answered 200, "
                       f"{value['answered_4xx']} 4xx, {value['answered_5xx']} 5xx, {value.get('crashed_and_restarted', 0)} "
                       f"aborted Triton 2.51 and it was restarted, {value['failures']} broke the property, {value['seconds']} s")
        elif key == "crashed_and_restarted":
            for r in value:
                out.append(f"- {r['case']}: tritonserver {r['how']}; ready again {r['crash_to_ready_s']} s after the crash, "
                           f"{r['request_to_ready_s']} s after the request")
        elif key == "soak":
            out.append(f"- soak: {value['requests']:,} requests, {value['failures']} failed, {value['rps']} req/s, "
                       f"p50 {value['p50_ms']} ms, p99 {value['p99_ms']} ms; Triton RSS {value['rss_before_mb']} -> "
                       f"{value['rss_after_mb']} MB (growth {value['rss_growth_mb']} MB, {value['rss_growth_pct']} %, "
                       f"peak {value['rss_peak_mb']} MB, second-half slope {value['rss_slope_mb_per_min_second_half']} MB/min); "
                       f"locust client CPU-saturated: {value['client_cpu_saturated']}")
        elif key == "pip_audit":
            for r in value.values():
                out.append(f"- `{r['command']}`: {len(r['audited'])} packages audited, {len(r['skipped'])} could not be "
                           f"audited here, {len(r['vulnerabilities'])} known vulnerabilities")
        elif key == "client_errors_answered_5xx":
            if value:
                out.append(f"- client errors our backend answers with HTTP 500 / gRPC INTERNAL ({len(value)}): "
                           + ", ".join(value))
        else:
            out.append(f"- {key}: {json.dumps(value, default=str)}")
    return out


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m benchmark.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 30 s soak, 100 fuzz examples per target")
    parser.add_argument("--soak-seconds", type=int, help="soak duration (default 180; --quick 30)")
    parser.add_argument("--users", type=int, default=32, help="locust users in the soak (default 32)")
    parser.add_argument("--fuzz-examples", type=int, help="Hypothesis examples per fuzz target (default 300; --quick 100)")
    parser.add_argument("--state-dir", default=".state", help="servers' state goes to <state-dir>/reliability (default .state)")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmark" / "results"))
    parser.add_argument("--only", help=f"comma-separated categories: {', '.join(CATEGORIES)}")
    parser.add_argument("--no-pip-audit", action="store_true", help="skip pip-audit (it needs the package registry)")
    parser.add_argument("--fil-compile", action="store_true",
                        help="let the local fil backend compile models in the background (default: Treelite GTIL "
                             "only, which makes every load deterministic)")
    args = parser.parse_args(argv)
    only = tuple(CATEGORIES)
    if args.only:
        only = tuple(x.strip() for x in args.only.split(",") if x.strip())
        unknown = [x for x in only if x not in CATEGORIES]
        if unknown:
            parser.error(f"unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    common = {"state_dir": Path(args.state_dir), "results_dir": Path(args.results_dir), "only": only,
              "pip_audit": not args.no_pip_audit, "users": args.users, "fil_compile": args.fil_compile}
    plan = Plan.quick_plan(**common) if args.quick else Plan(**common)
    if args.soak_seconds is not None:
        plan.soak_seconds = args.soak_seconds
    if args.fuzz_examples is not None:
        plan.fuzz_examples = args.fuzz_examples
    if plan.soak_seconds < 1 or plan.soak_seconds > 3600 or plan.users < 1 or plan.users > 256:
        parser.error("--soak-seconds must be in 1..3600 and --users in 1..256 (the soak is bounded)")
    return plan


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    try:
        _json, _md, code = run(plan)
    except KeyboardInterrupt:
        log("interrupted; servers stopped")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
