"""Plots and report.md from a results folder (results.json + sequential_latencies_ns.npz).

    python -m benchmark.report [benchmark/results/latest]

Every verdict, ratio and split is computed from the measured numbers by benchmark/analysis.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from benchmark.analysis import ORDER, PERF_KEYS, REFERENCE, _get, _names, analyze

PERF_LABELS = {"http": "{server}, HTTP", "grpc": "triton-grpc, gRPC", "triton-python": "triton-python, HTTP"}
FIL_KIND = {"native": "native `fil` backend, libtriton_fil.so", "python": "Python-based `fil` backend"}
BOX_PNG = "sequential_latency_boxplot.png"
LOAD_PNG = "throughput_p99_vs_users.png"


def _f(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def _target_value(t: dict) -> str:
    return _f(t["value"], {"x": 2, "ms": 3}.get(t["unit"], 0), {"x": "x", "ms": " ms"}.get(t["unit"], ""))


def _by_users(runs: dict) -> list[tuple[str, dict]]:
    return sorted(runs.items(), key=lambda kv: int(kv[0]))


def _fmt_load(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"


def summary_text(results: dict) -> str:
    """A short plain-text summary for the terminal."""
    analysis = results.get("analysis") or analyze(results)
    top = analysis.get("load_top_users")
    return "\n".join([
        "sequential, one row per request:",
        *[f"  {name:<17} p50 {s['p50_ms']:7.3f} ms   p99 {s['p99_ms']:7.3f} ms   mean {s['mean_ms']:7.3f} ms "
          f"(std {s['std_ms']:.3f})" for name in _names(results) if (s := results["contenders"][name])],
        *([f"load, {top} users (locust):"] if top is not None else []),
        *[f"  {target:<17} {_f(r.get('rps'), 0):>8} req/s   p99 {_f(r.get('p99_ms'), 2)} ms   "
          f"failures {r.get('failures')}" for target in ORDER if (r := _get(results, "load", target, str(top)))],
        "targets:",
        *[f"  [{'MET ' if t['met'] else ('MISS' if t['met'] is False else ' -- ')}] {t['name']}: {_target_value(t)}"
          for t in analysis["targets"]],
    ])


def render_markdown(results: dict) -> str:
    a = results.get("analysis") or analyze(results)
    warnings = _warnings(results)
    return "\n".join([
        f"# Benchmark: Triton vs FastAPI + Uvicorn ({results.get('created_utc')})", "",
        *(["> **Read with care:**", *[f"> - {w}" for w in warnings], ""] if warnings else []),
        *_setup_section(results),
        *_sequential_section(results, a),
        *_in_process_section(results),
        *_load_section(results, a.get("headline")),
        *_perf_section(results),
        *_targets_section(results, a),
        *_stub_section(a.get("stub_cost")),
        *_reproduce_section(results.get("command")),
    ])


def _warnings(results: dict) -> list[str]:
    before = _get(results, "load_average", "before", default=[0])[0]
    cores = _get(results, "machine", "cpu_count") or 1
    urls = ", ".join(f"{k} {v.get('url')}" for k, v in results.get("servers", {}).items()
                     if isinstance(v, dict) and v.get("url"))
    pins, parity = results.get("pinning", {}), results.get("parity", {})
    return [warning for when, warning in [
        (before > 0.25 * cores, f"the machine was not quiet: 1-minute load average {before:.2f} on {cores} cores "
                                "before the run; other work competed with client and servers"),
        (results.get("servers_started_by_benchmark") is False,
         f"the servers were already running and were not started by this benchmark ({urls}): their build, "
         "configuration, CPU placement and any other load on them are theirs; the benchmark measured them with "
         "the same methods, pinned nothing and read no model files"),
        (results.get("quick"), f"quick mode: N={results.get('n')} and short load runs; tails (p99) and "
                               "throughput are indicative only — `make benchmark` for the full run"),
        (not pins.get("enabled"), f"no CPU pinning ({pins.get('why')})"),
        (parity and not parity.get("ok"), f"parity check FAILED: {parity.get('max_abs_diff')}"),
    ] if when] + [f"{name} skipped: {why}" for name, why in (results.get("skipped") or {}).items()]


def _setup_section(results: dict) -> list[str]:
    m, pins, servers = results.get("machine", {}), results.get("pinning", {}), results.get("servers", {})
    triton, fastapi = servers.get("triton", {}), servers.get("fastapi", {})
    tritons = (servers.get("tritons") or {"": triton}) if triton else {}
    pinning = (f"servers on CPU {pins.get('server_cpu')}, clients on CPU {pins.get('client_cpu')} "
               f"({pins.get('method', '').format(server=pins.get('server_cpu'), client=pins.get('client_cpu'))})."
               if pins.get("enabled") else f"none ({pins.get('why')}).")
    phases = ", ".join(f"{k} {v} s" for k, v in (results.get("phase_seconds") or {}).items())
    return [
        "## Set-up", "",
        f"- Machine: {m.get('cpu_model')}, {m.get('cpu_count')} CPUs, {m.get('memory_gib')} GiB, "
        f"Python {m.get('python')}, {m.get('platform')}.",
        *_model_lines(results),
        f"- Rows: {_get(results, 'rows', 'origin')}; {_get(results, 'rows', 'order')}.",
        *[_triton_line(t) for t in tritons.values()],
        f"- FastAPI + Uvicorn: {fastapi.get('workers')} worker, event loop {fastapi.get('loop')}, HTTP "
        f"parser {fastapi.get('http')}, handler {fastapi.get('handler')}; pydantic validates every row.",
        f"- Pinning: {pinning}",
        f"- Load average (1, 5, 15 min): before {_fmt_load(_get(results, 'load_average', 'before'))}, "
        f"after {_fmt_load(_get(results, 'load_average', 'after'))}. Whole run: {results.get('duration_s')} s "
        f"({phases}).",
        "",
    ]


def _model_lines(results: dict) -> list[str]:
    model = results.get("model", {})
    if results.get("servers_started_by_benchmark") is False:
        return [f"- Model: `{model.get('name')}` version {model.get('version')} as the running servers answered it "
                f"({model.get('n_features')} features, max_batch_size {model.get('max_batch_size')}); its files "
                "were not read."]
    run = f"`{model.get('pathspec')}`." if model.get("pathspec") else "none (not made by the flow)."
    return [f"- Model: `{model.get('name')}` version {model.get('version')} ({model.get('family')}, "
            f"{model.get('n_trees')} trees, max depth {model.get('max_depth')}, up to {model.get('max_leaves')} "
            f"leaves per tree, {model.get('n_features')} features), `{model.get('model_type')}` from "
            f"`{model.get('source_repo')}`; Metaflow run: {run}",
            f"- sklearn pipeline (fastapi-sklearn): {model.get('sklearn_pipeline')}."]


def _triton_line(t: dict) -> str:
    where = (f"ready {t.get('start_to_ready_s')} s after start." if t.get("start_to_ready_s") is not None
             else f"at {t.get('url')}.")
    batching = t.get("dynamic_batching")
    batching = (f"dynamic batching on (max queue delay {batching.get('max_queue_delay_microseconds', 0)} µs)"
                if batching else "dynamic batching off")
    return (f"- Triton {t.get('server_version', '?')} ({FIL_KIND.get(t.get('fil_backend_kind'), 'already running')}): "
            f"backend `{t.get('backend')}`, {t.get('instance_count', '?')} model instance(s) "
            f"{t.get('instance_group')}, {batching}, "
            f"max_batch_size {t.get('max_batch_size')}, FIL_COMPILE={t.get('fil_compile', '?')}; {where}")


def _sequential_section(results: dict, a: dict) -> list[str]:
    sp = a.get("speedup_vs_reference", {})
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")
    lines = [
        "## Sequential: the published method", "",
        f"{results.get('warmup')} warm-up requests, then N={results.get('n')} one-row requests per contender, "
        "one after another, each timed with `time.perf_counter_ns` from send to the last byte of the answer; "
        "contenders interleaved in blocks of 250. HTTP contenders share one client (`http.client`, kept-alive "
        "connection, bodies encoded before timing); triton-grpc uses `tritonclient.grpc`.", "",
        "| contender | p50 ms | p90 ms | p99 ms | mean ms | std ms | min ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {n} | " + " | ".join(_f(results["contenders"][n].get(k), 3) for k in keys) + " |"
          for n in _names(results)],
        *[f"| *{ref['label']}* | | | | *{ref['mean_ms']:.2f}* | *{ref['std_ms']:.2f}* | | |"
          for ref in (REFERENCE["triton"], REFERENCE["fastapi"])], "",
        f"![sequential latencies]({BOX_PNG})", "",
        f"Published: FastAPI/Triton mean ratio {sp.get('published_mean_ratio')}x. Measured here: "
        f"mean ratio {_f(sp.get('measured_mean_ratio'), 1)}x, p50 ratio {_f(sp.get('measured_p50_ratio'), 1)}x "
        f"(fastapi-sklearn / {a.get('headline', 'triton-http')}).",
    ]
    parity = results.get("parity", {})
    if parity:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in parity.get("max_abs_diff", {}).items())
        lines += ["", f"Same answers: the first {parity.get('rows_compared')} rows' probabilities of every contender "
                  f"against {parity.get('reference')}: largest difference {diffs} "
                  f"({'within' if parity.get('ok') else 'OUTSIDE'} {parity.get('atol')})."]
    return [*lines, ""]


def _in_process_section(results: dict) -> list[str]:
    in_process = results.get("in_process") or {}
    if not in_process:
        return []
    served_with = _get(results, "servers", "triton", "fil_backend") or _get(results, "fil_runtime", "runtime")
    return ["### The model runtime alone", "",
            "One row per call in this process, no server, no network (pinned to the client CPU before any "
            "server started):", "", "| runtime | calls | p50 µs | mean µs |", "| --- | ---: | ---: | ---: |",
            *[f"| {r['what']} | {r['calls']} | {_f(r['p50_us'], 1)} | {_f(r['mean_us'], 1)} |"
              for r in in_process.values()],
            "", f"Triton's `fil` backend served with: {served_with}. "
            f"fastapi-treelite runs {_get(results, 'servers', 'fastapi', 'treelite_runtime')}: the same runtime, "
            "so the difference between fastapi-treelite and Triton is the server.", ""]


def _load_section(results: dict, headline: str | None) -> list[str]:
    load = results.get("load") or {}
    if not load:
        return []
    ls = results.get("load_settings", {})
    lines = ["## Under load (locust)", "",
             f"{ls.get('tool')}, {ls.get('duration_s')} s per run, users spawned at once, "
             f"{ls.get('processes')} locust process pinned to the client CPU; {ls.get('measured_by')}.", "",
             "| target | users | req/s | p50 ms | p95 ms | p99 ms | requests | failures | client CPU saturated |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
             *[f"| {target} | {u} | {_f(r.get('rps'), 0)} | {_f(r.get('p50_ms'), 2)} | "
               f"{_f(r.get('p95_ms'), 2)} | {_f(r.get('p99_ms'), 2)} | {r.get('requests')} | "
               f"{r.get('failures')} | {'yes' if r.get('client_cpu_saturated') else 'no'} |"
               for target in ORDER for u, r in _by_users(load.get(target) or {})]]
    batching = results.get("batching") or {}
    if batching:
        lines += ["", f"Triton's dynamic batching during the {headline} runs (from `/v2/models/<model>/stats`, "
                  "after minus before):", "",
                  "| users | requests | executions | average batch | largest batch | avg queue µs | avg compute µs |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                  *[f"| {u} | {b.get('inference_count')} | {b.get('execution_count')} | "
                    f"{_f(b.get('avg_batch_size'), 2)} | {b.get('max_batch_size_seen')} | "
                    f"{_f(b.get('avg_queue_us'), 1)} | {_f(b.get('avg_compute_infer_us'), 1)} |"
                    for u, b in _by_users(batching)]]
    return [*lines, "", f"![throughput and p99]({LOAD_PNG})", ""]


def _perf_section(results: dict) -> list[str]:
    pa = results.get("perf_analyzer") or {}
    if pa.get("error"):
        return ["## perf_analyzer cross-check", "", f"Not run: {pa['error']}", ""]
    if not any(pa.get(k) for k in PERF_KEYS):
        return []
    st = pa.get("settings", {})
    how = (f"stable windows of {st.get('measurement_interval_ms')} ms (at most {st.get('max_trials')}, "
           f"within {st.get('stability_percentage')} %), else the same windows averaged without stabilising")
    return ["## perf_analyzer cross-check", "",
            f"`perf_analyzer` from tritonclient {_get(results, 'machine', 'packages', 'tritonclient')}, "
            f"{st.get('client')}, batch 1, {how}, input: {st.get('input_data')}.", "",
            "| server, protocol | concurrency | req/s | p50 ms | p99 ms | server queue ms | server compute ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[_perf_row(PERF_LABELS[key].format(server=pa.get("server") or "triton"), r)
              for key in PERF_KEYS for r in pa.get(key) or []], ""]


def _perf_row(label: str, r: dict) -> str:
    if "error" in r:
        return f"| {label} | {r['concurrency']} | failed: {r['error'][:80]} | | | | |"
    flag = " (did not stabilise)" if "did not stabilise" in r.get("method", "") else ""
    return (f"| {label} | {r['concurrency']} | {_f(r.get('rps'), 0)}{flag} | {_f(r.get('p50_ms'), 3)} | "
            f"{_f(r.get('p99_ms'), 3)} | {_f(r.get('server_queue_ms'), 3)} | {_f(r.get('server_compute_ms'), 3)} |")


def _targets_section(results: dict, a: dict) -> list[str]:
    lines = ["## Targets (from the issue)", "", "| target | goal | measured | verdict | note |",
             "| --- | ---: | ---: | --- | --- |"]
    for t in a.get("targets", []):
        unit = t["unit"]
        goal = (f"{t['goal']} {unit}" if unit == "failures" else f"≤ {t['goal']} {unit}" if t.get("lower")
                else f"≥ {t['goal']:,.0f} {unit}" if unit == "req/s" else f"≥ {t['goal']}x")
        verdict = "not measured" if t["met"] is None else ("**met**" if t["met"] else "**missed**")
        lines.append(f"| {t['name']} | {goal} | {_target_value(t)} | {verdict} | {t.get('note') or ''} |")
    return [*lines, "", "## Where the gap comes from", "", *decomposition_text(a, results), ""]


def _stub_section(stub: dict | None) -> list[str]:
    if not stub:
        return []
    text = (f"The same Triton binary, model file and runtime behind the native `fil` backend (triton-native) and "
            f"the Python-based one (triton-python): one row takes {_f(stub['p50_ms'], 3)} ms more at p50 through "
            f"the Python stub ({_f(stub['p50_ratio'], 2)}x)")
    if stub.get("rps_ratio_locust"):
        text += (f"; under load ({stub['users']} users, locust) the native backend serves "
                 f"{_f(stub['rps_ratio_locust'], 2)}x the requests per second")
    if stub.get("perf_rps_native") and stub.get("perf_rps_python"):
        text += f"; perf_analyzer over HTTP: {_f(stub['perf_rps_native'], 0)} against {_f(stub['perf_rps_python'], 0)} req/s"
    return ["## What the Python backend stub costs", "", text + ".", ""]


def _reproduce_section(command: str | None) -> list[str]:
    return ["## Reproduce", "", "```", command or "python -m benchmark.run",
            "make benchmark          # python -m benchmark.run --state-dir .state",
            "make benchmark-quick    # the short run of make demo",
            "python -m benchmark.run --triton-url http://HOST:8000 [--fastapi-url http://HOST:8080]  # running servers",
            "```",
            "Raw data beside this report: `results.json`, `sequential_latencies_ns.npz`, `rows.npy` (the rows sent), "
            "`answers.npz` (each contender's probabilities for them), `locust/`, "
            "`perf_analyzer/`.", ""]


def _share(value) -> str:
    return _f(100 * value, 0) if value is not None else "–"


def decomposition_text(a: dict, results: dict) -> list[str]:
    d = a.get("decomposition", {})
    h = a.get("headline") or "triton-http"
    s, t = d.get("sequential_p50"), d.get("throughput")
    if not s:
        out = [f"The sequential split needs fastapi-sklearn, fastapi-treelite and {h} in one run; "
               "one of them is missing."]
    else:
        out = [f"**One request at a time (p50).** fastapi-sklearn takes {_f(s['gap_ms'], 3)} ms longer than "
               f"{h}. Swapping sklearn's `predict_proba` for the Treelite runtime Triton uses, behind the "
               f"same FastAPI app (fastapi-sklearn → fastapi-treelite), accounts for {_f(s['runtime_ms'], 3)} ms of it "
               f"({_share(s['runtime_share'])} %): that is the model runtime. Swapping FastAPI + Uvicorn for Triton "
               f"with the same Treelite model (fastapi-treelite → {h}) accounts for {_f(s['server_ms'], 3)} ms "
               f"({_share(s['server_share'])} %): that is the server."]
        ip = results.get("in_process") or {}
        fast = ip.get("compiled") or ip.get("gtil")
        if ip.get("sklearn") and fast:
            alone = (ip["sklearn"]["p50_us"] - fast["p50_us"]) / 1e3
            out += ["", f"Cross-check in process, without any server: sklearn takes {_f(ip['sklearn']['p50_us'] / 1e3, 3)} "
                    f"ms per row and the Treelite runtime {_f(fast['p50_us'], 1)} µs, a difference of {_f(alone, 3)} ms "
                    f"against the {_f(s['runtime_ms'], 3)} ms measured through FastAPI."]
    if t:
        batch = t.get("avg_batch_size")
        out += ["", f"**Under load ({t['users']} users).** {h} serves {_f(t['total_ratio'], 1)}x the requests "
                f"per second of fastapi-sklearn. Of that factor, {_f(t['runtime_ratio'], 1)}x comes from the model "
                f"runtime (fastapi-treelite / fastapi-sklearn) and {_f(t['server_ratio'], 1)}x from the server "
                f"({h} / fastapi-treelite: native HTTP front end plus dynamic batching"
                + (f", average batch {batch:.2f} requests per model execution" if batch else "")
                + f"); on a log scale that is {_share(t['runtime_share_log'] or 0)} % runtime and "
                f"{_share(t['server_share_log'] or 0)} % server."]
    return out


# -- the two plots: sequential latencies (box plot), throughput and p99 by users --

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
        patch.set(facecolor=COLORS.get(name, "#999999"), alpha=0.7)
    for ref, style in ((REFERENCE["triton"], ":"), (REFERENCE["fastapi"], "--")):
        ax.axhline(ref["mean_ms"], color="grey", linestyle=style, linewidth=1,
                   label=f"{ref['label']}: mean {ref['mean_ms']} ms")
    ax.legend(fontsize=7, loc="upper left")
    ax.set(yscale="log", ylabel="latency per request (ms, log scale)")
    _plain_ticks(ax.yaxis)
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
    # (label, line style, colour, alpha, [(users or concurrency, its numbers)]): locust runs, then perf_analyzer's
    series = [(f"{t} (locust)", "o-", COLORS.get(t), 1, [(int(u), r) for u, r in _by_users(runs)])
              for t in ORDER if (runs := _get(results, "load", t))]
    server = _get(results, "perf_analyzer", "server") or "triton"
    series += [(f"{PERF_LABELS[key].format(server=server)} (perf_analyzer)", "s--", COLORS[f"perf_analyzer {key}"], 0.7,
                [(r["concurrency"], r) for r in runs]) for key in PERF_KEYS
               if (runs := [r for r in (_get(results, "perf_analyzer", key) or []) if "error" not in r])]
    for label, style, color, alpha, points in series:
        for metric, ax in (("rps", ax_rps), ("p99_ms", ax_p99)):
            ax.plot([x for x, _ in points], [r.get(metric) or np.nan for _, r in points], style, color=color,
                    alpha=alpha, label=label)
    ticks = sorted({x for *_, points in series for x, _ in points})
    for ax, ylabel, title in ((ax_rps, "requests per second (log)", "Throughput"),
                              (ax_p99, "p99 latency, ms (log)", "p99 latency under load")):
        ax.set_xscale("log", base=2)
        ax.set(yscale="log", xlabel="concurrent users / requests in flight", ylabel=ylabel)
        if ticks:
            ax.set_xticks(ticks)
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_title(title, fontsize=10)
        ax.grid(which="both", alpha=0.3)
    ax_rps.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)  # a Figure without pyplot: no GUI backend, nothing to close


def write_report(out_dir: Path) -> Path:
    """(Re)write the PNGs and report.md of a results folder; returns report.md's path."""
    results = json.loads((out_dir / "results.json").read_text())
    npz = out_dir / "sequential_latencies_ns.npz"
    if npz.is_file() and (latencies := dict(np.load(npz))):
        plot_boxplot(results, latencies, out_dir / BOX_PNG)
    if results.get("load") or _get(results, "perf_analyzer", "http"):
        plot_load(results, out_dir / LOAD_PNG)
    path = out_dir / "report.md"
    path.write_text(render_markdown(results))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="?", default=str(Path(__file__).resolve().parent / "results" / "latest"),
                   help="a results folder (default: benchmark/results/latest)")
    print(write_report(Path(p.parse_args(argv).results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
