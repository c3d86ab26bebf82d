"""The verdicts report.py renders, from results.json's numbers: ratios, the issue's targets, the split of the
gap between model runtime and server, and the Python backend stub's cost. Only the published figures and the
targets are hard-coded: they are what the numbers are compared against."""

from __future__ import annotations

import math

# The published comparison (one client, sequential one-row requests over HTTP).
REFERENCE = {
    "triton": {"mean_ms": 0.44, "std_ms": 0.64, "label": "Triton + FIL (published)"},
    "fastapi": {"mean_ms": 5.15, "std_ms": 0.9, "label": "FastAPI + Uvicorn, pickled model (published)"},
    "ratio": 5.15 / 0.44,
}
# The targets (issue 12; the load ratio to fastapi-sklearn from the first benchmark issue).
TARGETS = {
    "p50_ms": 0.30,  # Triton HTTP, one row, sequential p50: at most
    "seq_vs_treelite": 2.0,
    "seq_vs_sklearn": 30.0,
    "perf_rps_at_32": 7_000.0,  # perf_analyzer, 32 concurrent, HTTP or gRPC
    "rps_vs_treelite": 3.0,  # locust, the same users
    "rps_vs_sklearn": 30.0,
}
# HTTP contenders on a Triton, in the order one of them is the headline: the native fil
# backend, an already-running Triton (--triton-url), the Python fil backend.
TRITON_HTTP = ("triton-native", "triton-http", "triton-python")
# every contender in the order tables and plots show them
ORDER = ("triton-native", "triton-http", "triton-python", "triton-grpc", "fastapi-treelite", "fastapi-sklearn")
PERF_KEYS = ("http", "grpc", "triton-python")  # results["perf_analyzer"]: the headline Triton, gRPC, Python backend


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _names(results: dict) -> list[str]:
    return [n for n in ORDER if n in results.get("contenders", {})]


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def _target(name: str, value, goal: float, unit: str = "x", note: str = "", lower: bool = False) -> dict:
    met = None if value is None else bool(value <= goal if lower else value >= goal)
    return {"name": name, "value": value, "goal": goal, "unit": unit, "met": met, "note": note, "lower": lower}


def headline(names) -> str | None:
    """The Triton HTTP contender the targets are about: the first of TRITON_HTTP measured."""
    return next((n for n in TRITON_HTTP if n in names), None)


def perf_top(results: dict, keys: tuple[str, ...] = ("http", "grpc")) -> tuple[float | None, str]:
    """perf_analyzer's best req/s at 32 concurrent (else its highest level) over ``keys``, and a note saying which."""
    pa = results.get("perf_analyzer") or {}
    levels = [(p, r) for p in keys for r in (pa.get(p) or []) if r.get("rps") is not None]
    top = 32 if 32 in (measured := {r["concurrency"] for _, r in levels}) else max(measured, default=None)
    if top is None:
        return None, ""
    protocol, r = max(((p, r) for p, r in levels if r["concurrency"] == top), key=lambda pr: pr[1]["rps"])
    note = f"{protocol.upper() if protocol in ('http', 'grpc') else protocol}, --async"
    return r["rps"], note + (f"; 32 not measured, shown at {top}" if top != 32 else "")


def analyze(results: dict) -> dict:
    """Ratios, target verdicts and the runtime/server split, from results.json's numbers."""
    seq, load = results.get("contenders", {}), results.get("load", {})
    p50 = {name: s.get("p50_ms") for name, s in seq.items()}
    h = headline(seq) or "triton-http"
    perf_rps, perf_note = perf_top(results)
    top = 32 if 32 in (users := {int(u) for runs in load.values() for u in runs}) else max(users, default=None)
    note = "" if top == 32 or top is None else f"32 users not measured; shown at {top} users"

    def rps(target):
        return _get(load, target, str(top), "rps") if top is not None else None

    targets = [
        _target(f"sequential p50: {h}", p50.get(h), TARGETS["p50_ms"], "ms", lower=True),
        _target(f"sequential p50: {h} vs fastapi-treelite", _ratio(p50.get("fastapi-treelite"), p50.get(h)),
                TARGETS["seq_vs_treelite"]),
        _target(f"sequential p50: {h} vs fastapi-sklearn", _ratio(p50.get("fastapi-sklearn"), p50.get(h)),
                TARGETS["seq_vs_sklearn"]),
        _target(f"req/s at 32 concurrent: {_get(results, 'perf_analyzer', 'server') or h} (perf_analyzer)",
                perf_rps, TARGETS["perf_rps_at_32"], "req/s", perf_note),
        _target(f"req/s at {top or 32} users: {h} vs fastapi-treelite", _ratio(rps(h), rps("fastapi-treelite")),
                TARGETS["rps_vs_treelite"], "x", note),
        _target(f"req/s at {top or 32} users: {h} vs fastapi-sklearn", _ratio(rps(h), rps("fastapi-sklearn")),
                TARGETS["rps_vs_sklearn"], "x", note),
    ]
    failures = {f"{t} u={u}": r.get("failures", 0) for t, runs in load.items() for u, r in runs.items()}
    if failures:
        targets.append(_target("zero errors under load", sum(failures.values()), 0, "failures",
                               ", ".join(f"{k}: {v}" for k, v in failures.items() if v), lower=True))
    stub = None
    if "triton-native" in p50 and "triton-python" in p50:  # what the Python backend stub costs
        stub = {"p50_ms": p50["triton-python"] - p50["triton-native"],
                "p50_ratio": _ratio(p50["triton-python"], p50["triton-native"]),
                "rps_ratio_locust": _ratio(rps("triton-native"), rps("triton-python")), "users": top,
                "perf_rps_native": perf_top(results, ("http",))[0],  # HTTP against HTTP
                "perf_rps_python": perf_top(results, ("triton-python",))[0]}
    return {
        "headline": h,
        "stub_cost": stub,
        "speedup_vs_reference": {
            "published_mean_ratio": round(REFERENCE["ratio"], 2),
            "measured_mean_ratio": _ratio(_get(seq, "fastapi-sklearn", "mean_ms"), _get(seq, h, "mean_ms")),
            "measured_p50_ratio": _ratio(p50.get("fastapi-sklearn"), p50.get(h)),
        },
        "targets": targets,
        "decomposition": decompose(results, top, h),
        "load_top_users": top,
    }


def decompose(results: dict, top: int | None, h: str = "triton-http") -> dict:
    """Split the gap between fastapi-sklearn and the headline Triton ``h`` into model runtime and server.

    Sequential (additive, p50): runtime = sklearn - treelite (both behind FastAPI), server = treelite behind
    FastAPI - Triton (same model). Throughput (multiplicative): triton/sklearn = (treelite/sklearn) x
    (triton/treelite); shares in log space."""
    out: dict = {}
    sk, tl, tr = (_get(results, "contenders", n, "p50_ms") for n in ("fastapi-sklearn", "fastapi-treelite", h))
    if None not in (sk, tl, tr):
        gap = sk - tr
        out["sequential_p50"] = {
            "gap_ms": gap, "runtime_ms": sk - tl, "server_ms": tl - tr,
            "runtime_share": (sk - tl) / gap if gap else None, "server_share": (tl - tr) / gap if gap else None,
        }
    r = {t: _get(results, "load", t, str(top), "rps") for t in ("fastapi-sklearn", "fastapi-treelite", h)}
    if top is not None and None not in r.values() and min(r.values()) > 0:
        total, runtime = r[h] / r["fastapi-sklearn"], r["fastapi-treelite"] / r["fastapi-sklearn"]
        server = r[h] / r["fastapi-treelite"]
        log_total = math.log(total) if total > 0 and total != 1 else None
        out["throughput"] = {
            "users": top, "total_ratio": total, "runtime_ratio": runtime, "server_ratio": server,
            "runtime_share_log": math.log(runtime) / log_total if log_total else None,
            "server_share_log": math.log(server) / log_total if log_total else None,
            "avg_batch_size": _get(results, "batching", str(top), "avg_batch_size"),
        }
    return out
