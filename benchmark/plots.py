"""The report's two plots: sequential latencies (box plot) and throughput and p99 by users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from benchmark.analysis import ORDER, PERF_KEYS, REFERENCE, _get, _names

COLORS = {"triton-native": "#76b900", "triton-http": "#76b900", "triton-python": "#b5a300",
          "triton-grpc": "#3d7a00", "fastapi-treelite": "#009688", "fastapi-sklearn": "#e76f51",
          "perf_analyzer http": "#76b900", "perf_analyzer grpc": "#3d7a00",
          "perf_analyzer triton-python": "#b5a300"}


def _plain_ticks(axis) -> None:
    """Log-scale axis labelled 0.5, 1, 10, 1,000 rather than 10^-1."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def plot_boxplot(results: dict, latencies: dict[str, np.ndarray], path: Path) -> None:
    names = [n for n in _names(results) if n in latencies]
    data = [np.asarray(latencies[n], dtype=np.float64) / 1e6 for n in names]
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.subplots()
    box = ax.boxplot(data, tick_labels=names, whis=(1, 99), showmeans=True, patch_artist=True,
                     flierprops={"marker": ".", "markersize": 2, "alpha": 0.3},
                     meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"})
    for patch, name in zip(box["boxes"], names, strict=True):
        patch.set_facecolor(COLORS.get(name, "#999999"))
        patch.set_alpha(0.7)
    for ref, style in ((REFERENCE["triton"], ":"), (REFERENCE["fastapi"], "--")):
        ax.axhline(ref["mean_ms"], color="grey", linestyle=style, linewidth=1,
                   label=f"{ref['label']}: mean {ref['mean_ms']} ms")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_yscale("log")
    _plain_ticks(ax.yaxis)
    ax.set_ylabel("latency per request (ms, log scale)")
    ax.set_title(f"One-row requests, sequential client, N={results.get('n')} per contender\n"
                 f"box: p25-p75, line: median, triangle: mean, whiskers: p1-p99 "
                 f"({_get(results, 'machine', 'cpu_model', default='')})", fontsize=9)
    for x, d in enumerate(data, start=1):
        ax.annotate(f"p50 {np.median(d):.3f} ms", (x + 0.25, np.median(d)), xytext=(4, 0),
                    textcoords="offset points", fontsize=7, va="center")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)  # a Figure without pyplot: no GUI backend, nothing to close


def plot_load(results: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 4.5), dpi=120)
    ax_rps, ax_p99 = fig.subplots(1, 2)
    axes = {"rps": ax_rps, "p99_ms": ax_p99}
    for target in ORDER:
        runs = _get(results, "load", target)
        if not runs:
            continue
        users = sorted(int(u) for u in runs)
        for metric, ax in axes.items():
            ax.plot(users, [runs[str(u)].get(metric) or np.nan for u in users], "o-", color=COLORS.get(target),
                    label=f"{target} (locust)")
    server = _get(results, "perf_analyzer", "server") or "triton"
    labels = {"http": f"{server} HTTP", "grpc": "triton-grpc", "triton-python": "triton-python HTTP"}
    for key in PERF_KEYS:
        runs = [r for r in (_get(results, "perf_analyzer", key) or []) if "error" not in r]
        if not runs:
            continue
        for metric, ax in axes.items():
            ax.plot([r["concurrency"] for r in runs], [r[metric] for r in runs], "s--",
                    color=COLORS[f"perf_analyzer {key}"], alpha=0.7, label=f"{labels[key]} (perf_analyzer)")
    ticks = sorted({int(u) for runs in (results.get("load") or {}).values() for u in runs}
                   | {r["concurrency"] for p in PERF_KEYS
                      for r in (_get(results, "perf_analyzer", p) or []) if "concurrency" in r})
    for ax in (ax_rps, ax_p99):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ticks:
            ax.set_xticks(ticks)
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("concurrent users / requests in flight")
        ax.grid(which="both", alpha=0.3)
    ax_rps.set_ylabel("requests per second (log)")
    ax_rps.set_title("Throughput", fontsize=10)
    ax_p99.set_ylabel("p99 latency, ms (log)")
    ax_p99.set_title("p99 latency under load", fontsize=10)
    ax_rps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)  # a Figure without pyplot: no GUI backend, nothing to close
