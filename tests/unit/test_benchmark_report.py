"""The benchmark's verdicts and decomposition are computed from the measured numbers."""

from __future__ import annotations

import pytest

from benchmark import report


def _results(seq: dict[str, float], rps: dict[str, float], users: int = 32, failures: int = 0) -> dict:
    return {
        "n": 1000,
        "contenders": {name: {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "std_ms": 0.1,
                              "min_ms": p50, "max_ms": p50, "n": 1000} for name, p50 in seq.items()},
        "load": {name: {str(users): {"users": users, "rps": r, "failures": failures, "requests": 100}}
                 for name, r in rps.items()},
        "batching": {str(users): {"avg_batch_size": 4.0}},
    }


def test_targets_met_and_missed_follow_the_numbers():
    results = _results({"triton-http": 0.25, "fastapi-treelite": 0.5, "fastapi-sklearn": 4.0},
                       {"triton-http": 9000.0, "fastapi-treelite": 2500.0, "fastapi-sklearn": 250.0})
    results["perf_analyzer"] = {"server": "triton-http", "http": [{"concurrency": 32, "rps": 6500.0}],
                                "grpc": [{"concurrency": 32, "rps": 7200.0}]}
    verdicts = {t["name"]: t for t in report.analyze(results)["targets"]}
    assert verdicts["sequential p50: triton-http"]["met"] is True  # 0.25 ms <= 0.30 ms
    assert verdicts["sequential p50: triton-http vs fastapi-sklearn"]["value"] == pytest.approx(16.0)
    assert verdicts["sequential p50: triton-http vs fastapi-sklearn"]["met"] is False  # 16x < 30x
    assert verdicts["sequential p50: triton-http vs fastapi-treelite"]["met"] is True  # 2.0x >= 2x
    perf = verdicts["req/s at 32 concurrent: triton-http (perf_analyzer)"]
    assert perf["value"] == 7200.0 and perf["met"] is True and "GRPC" in perf["note"]  # the better protocol
    assert verdicts["req/s at 32 users: triton-http vs fastapi-sklearn"]["met"] is True  # 36x
    assert verdicts["req/s at 32 users: triton-http vs fastapi-treelite"]["met"] is True  # 3.6x
    assert verdicts["zero errors under load"]["met"] is True


def test_native_backend_is_the_headline_and_the_stub_cost_is_reported():
    """With both fil backends measured, the targets are about triton-native; the report shows the stub's cost."""
    results = _results({"triton-native": 0.25, "triton-python": 0.55, "fastapi-treelite": 0.6},
                       {"triton-native": 8000.0, "triton-python": 4000.0, "fastapi-treelite": 2000.0})
    a = report.analyze(results)
    assert a["headline"] == "triton-native"
    assert {t["name"] for t in a["targets"]} >= {"sequential p50: triton-native",
                                                 "req/s at 32 users: triton-native vs fastapi-treelite"}
    assert a["stub_cost"]["p50_ms"] == pytest.approx(0.30)
    assert a["stub_cost"]["rps_ratio_locust"] == pytest.approx(2.0)
    markdown = report.render_markdown({**results, "analysis": a})
    assert "What the Python backend stub costs" in markdown and "0.300 ms" in markdown


def test_decomposition_splits_the_gap_into_runtime_and_server():
    results = _results({"triton-http": 0.4, "fastapi-treelite": 0.6, "fastapi-sklearn": 4.4},
                       {"triton-http": 8000.0, "fastapi-treelite": 2000.0, "fastapi-sklearn": 200.0})
    d = report.analyze(results)["decomposition"]
    seq = d["sequential_p50"]
    assert seq["gap_ms"] == pytest.approx(4.0)
    assert seq["runtime_ms"] == pytest.approx(3.8) and seq["server_ms"] == pytest.approx(0.2)
    assert seq["runtime_share"] + seq["server_share"] == pytest.approx(1.0)
    tp = d["throughput"]
    assert tp["total_ratio"] == pytest.approx(40.0)
    assert tp["runtime_ratio"] == pytest.approx(10.0) and tp["server_ratio"] == pytest.approx(4.0)
    assert tp["runtime_share_log"] + tp["server_share_log"] == pytest.approx(1.0)
    text = "\n".join(report.decomposition_text(report.analyze(results), results))
    assert "3.800 ms" in text and "95 %" in text


def test_missing_contenders_and_user_counts_are_reported_not_invented():
    results = _results({"triton-http": 0.4, "fastapi-treelite": 0.6}, {"triton-http": 5000.0}, users=8,
                       failures=3)
    a = report.analyze(results)
    verdicts = {t["name"]: t for t in a["targets"]}
    assert verdicts["sequential p50: triton-http"]["met"] is False  # 0.4 ms > 0.30 ms
    assert verdicts["req/s at 32 concurrent: triton-http (perf_analyzer)"]["met"] is None  # not measured
    assert verdicts["sequential p50: triton-http vs fastapi-sklearn"]["met"] is None
    assert verdicts["req/s at 8 users: triton-http vs fastapi-treelite"]["note"].startswith("32 users not measured")
    assert verdicts["zero errors under load"]["met"] is False
    assert "sequential_p50" not in a["decomposition"]
    markdown = report.render_markdown({**results, "analysis": a})
    assert "not measured" in markdown and "**missed**" in markdown
