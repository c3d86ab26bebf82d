"""The benchmark on a tiny run with real servers and clients, and on servers already running: no timing is
asserted, only the same probabilities from every contender, results.json's schema, the plots and the report."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from benchmark import report
from benchmark.run import INTERNAL_CONTENDERS, SCHEMA, Plan, run
from benchmark.servers import FastAPIServer
from serve.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One whole run: 10-tree reference model, N=60, one short load level, perf_analyzer at concurrency 1."""
    base = tmp_path_factory.mktemp("bench")
    plan = Plan(
        state_dir=base / "state", results_dir=base / "results", reference_model=True,
        reference_trees=10, reference_depth=4, n=60, warmup=5, distinct_rows=50,
        users=(2,), duration_s=2, concurrency=(1,), perf_measurement_ms=500, perf_max_trials=3,
        progress=False,
    )
    return run(plan)


def contenders_of(results: dict) -> set[str]:
    """Every contender of a run that starts its servers; triton-native only where the native backend builds."""
    return set(INTERNAL_CONTENDERS) - ({"triton-native"} & set(results["skipped"]))


def test_every_contender_answers_like_the_pipeline(tiny_run: Path):
    """Triton (both fil backends, HTTP and gRPC) and both FastAPI apps give the pipeline's probabilities."""
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results["contenders"]) == contenders_of(results)
    assert results["parity"]["ok"], results["parity"]
    rows = np.load(tiny_run / "rows.npy")
    answers = dict(np.load(tiny_run / "answers.npz"))
    pipeline = pickle.loads((tiny_run.parent.parent / "state" / "benchmark" / "model" / "pipeline.pkl").read_bytes())
    expected = pipeline.predict_proba(rows[: len(answers["triton-python"])])
    for name in contenders_of(results):  # assert_allclose also fails on a shape mismatch
        np.testing.assert_allclose(answers[name], expected, atol=1e-5, err_msg=name)
    for name, stats in results["contenders"].items():
        assert stats["model_versions_answered"] == [str(results["model"]["version"])], name


def test_results_json_has_its_schema(tiny_run: Path):
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["schema"] == SCHEMA
    assert {"machine", "model", "rows", "n", "pinning", "servers", "contenders", "load", "batching", "perf_analyzer",
            "analysis", "load_average"} <= set(results)
    assert {"cpu_model", "cpu_count", "python", "packages"} <= set(results["machine"])
    assert results["model"]["n_trees"] == 10 and results["model"]["n_features"] == 30
    assert results["n"] == 60
    for name, stats in results["contenders"].items():
        assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "n"} <= set(stats), name
        assert stats["n"] == 60
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    tritons = {c for c in contenders_of(results) if c in ("triton-native", "triton-python")}
    for target in tritons | {"fastapi-treelite", "fastapi-sklearn"}:
        locust = results["load"][target]["2"]
        assert {"users", "rps", "p50_ms", "p95_ms", "p99_ms", "requests", "failures"} <= set(locust), target
        assert locust["requests"] > 0
    for target in tritons:
        batching = results["load"][target]["2"]["batching"]
        assert batching["inference_count"] > 0 and batching["execution_count"] > 0, target
        assert batching["avg_batch_size"] >= 1
    assert results["batching"]["2"] == results["load"][results["analysis"]["headline"]]["2"]["batching"]
    keys = {"http", "grpc"} | ({"triton-python"} if "triton-native" in tritons else set())
    for key in keys:
        (level,) = results["perf_analyzer"][key]
        assert level["concurrency"] == 1
        assert "rps" in level or "error" in level, level
    for backend in (t.removeprefix("triton-") for t in tritons):
        assert results["servers"]["tritons"][backend]["fil_backend_kind"] == backend
    assert results["servers"]["fastapi"]["workers"] == 1
    assert results["servers"]["triton"]["instance_count"] >= 1
    assert {t["met"] for t in results["analysis"]["targets"]} <= {True, False, None}
    assert "sequential_p50" in results["analysis"]["decomposition"]


def test_pinning_is_recorded(tiny_run: Path):
    results = json.loads((tiny_run / "results.json").read_text())
    pins = results["pinning"]
    if len(os.sched_getaffinity(0)) < 2:
        assert pins["enabled"] is False
        return
    assert pins["enabled"] and pins["server_cpu"] != pins["client_cpu"]
    observed = pins["observed"]
    assert observed["client (this process)"] == [pins["client_cpu"]]
    for name in contenders_of(results) - {"triton-grpc"}:  # every server started here
        cpu_lists = [c for proc in observed[name].values() for c in proc["cpus"]]
        assert cpu_lists and all(c == [pins["server_cpu"]] for c in cpu_lists), (name, observed[name])


def test_plots_and_report_are_written(tiny_run: Path):
    for name in (report.BOX_PNG, report.LOAD_PNG):
        data = (tiny_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name
    text = (tiny_run / "report.md").read_text()
    for needle in ("| triton-python |", "| fastapi-sklearn |", "0.44", "5.15", "Targets", "Where the gap comes from"):
        assert needle in text, needle
    latest = tiny_run.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == tiny_run.resolve()
    # the report can be rebuilt from the folder alone
    (tiny_run / "report.md").unlink()
    assert report.write_report(tiny_run).is_file()


# -- servers that are already running (FastAPI's own answers and refusals: tests/reliability/rig.check_fastapi,
# test_bad_input.py) --


def test_running_servers_are_measured_and_the_report_says_so(tiny_run, tmp_path, triton_factory):
    """--triton-url/--fastapi-url: the same phases measure servers not started here, pin nothing, and say so."""
    repo = tiny_run.parent.parent / "state" / "benchmark" / "model" / "triton-repo"  # tiny_run's version 1
    fastapi = FastAPIServer("fastapi", free_port(), cpu=None, log=tmp_path / "uvicorn.log", env={
        "BENCH_RUNTIME": "treelite", "BENCH_MODEL_FILE": str(repo / "fraud-classifier" / "1" / "checkpoint.tl"),
        "BENCH_MODEL_VERSION": "1"})
    fastapi.start()
    try:
        fastapi.wait(60)
        triton = triton_factory(repo, load_models=["fraud-classifier"], fil_compile=False)
        plan = Plan(
            state_dir=tmp_path / "state", results_dir=tmp_path / "results", triton_url=triton.http_url,
            triton_grpc_url=triton.grpc_url, fastapi_urls=(f"http://127.0.0.1:{fastapi.port}",), n=40, warmup=5,
            distinct_rows=30, users=(2,), duration_s=2, concurrency=(1,), perf_measurement_ms=500, perf_max_trials=3,
            progress=False,
        )
        results = json.loads((run(plan) / "results.json").read_text())
    finally:
        fastapi.stop()
    assert set(results["contenders"]) == {"triton-http", "triton-grpc", "fastapi-treelite"}
    assert results["servers_started_by_benchmark"] is False and results["pinning"]["enabled"] is False
    assert results["parity"]["ok"], results["parity"]
    assert results["model"]["version"] == "1" and results["servers"]["triton"]["backend"] == "fil"
    assert results["load"]["triton-http"]["2"]["requests"] > 0
    assert results["perf_analyzer"]["server"] == "triton-http"
    assert triton.is_running()  # measured, not stopped
    text = (tmp_path / "results" / "latest" / "report.md").read_text()
    assert "were not started by this benchmark" in text and triton.http_url in text
