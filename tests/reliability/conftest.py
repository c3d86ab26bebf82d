"""The reliability suite's fixtures (``rig``: the reference model as v1 on the shared S3 and a supervised
Triton serving it, healed before every case so that one failure does not cascade; ``fastapi_url``) and
its summary: a table per category (the module: ``test_faults_s3.py`` -> ``faults-s3``) of cases, failures,
skipped and versions lost (``record_property("versions_lost", n)``; other properties are figures),
printed and saved to ``.state/reliability/summary.md``."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess

import pytest

from benchmark.servers import FastAPIServer
from serve.ports import free_port
from tests.reliability.rig import FUZZ_EXAMPLES, MAX_BATCH, SOAK_SECONDS, Rig, train_reference

CATEGORIES = ("bad-input", "shape-attacks", "fuzz", "training-input", "faults-s3", "faults-model",
              "faults-triton", "faults-deploy", "load", "security")


@pytest.fixture(scope="session")
def _rig(s3_server, triton_factory) -> Rig:
    # The shared S3, which faults-s3 stops and kills: the suite's cases run after every other test.
    rig = Rig(s3_server, None, train_reference())
    rig.publish("reliability reference model")
    # Supervised, like `make serve`: shape attacks abort tritonserver 2.51 on purpose and
    # faults-triton kills it, more often than the launcher's default allows. GTIL only (no
    # background compile), so that every load behaves the same way in every run.
    rig.triton = triton_factory(rig.repo_uri, env=rig.s3.env(), fil_compile=False, timeout=180, supervise=True,
                                max_restarts=100)
    return rig


@pytest.fixture
def rig(_rig) -> Rig:
    _rig.heal()
    return _rig


@pytest.fixture(scope="session")
def fastapi_url(_rig, tmp_path_factory) -> str:
    """``uvicorn benchmark.app:app`` on a free port, serving the reference model's checkpoint with Treelite."""
    work = tmp_path_factory.mktemp("fastapi")
    (work / "checkpoint.tl").write_bytes(_rig.model.checkpoint)
    port = free_port()
    server = FastAPIServer("fastapi", port, cpu=None, log=work / "uvicorn.log", env={
        "BENCH_RUNTIME": "treelite", "BENCH_MODEL_FILE": str(work / "checkpoint.tl"), "BENCH_MAX_ROWS": str(MAX_BATCH)})
    server.start()
    try:
        server.wait(90)
        _rig.fastapi_url, _rig.fastapi_pid = f"http://127.0.0.1:{port}", server.pid()
        yield _rig.fastapi_url
    finally:
        server.stop()


# -- order and summary --------------------------------------------------------------------


def category(nodeid: str) -> str | None:
    module = re.match(r"tests/reliability/test_(\w+)\.py::", nodeid)
    return module and module.group(1).replace("_", "-")


def order(name: str) -> int:
    return CATEGORIES.index(name) if name in CATEGORIES else len(CATEGORIES)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items) -> None:
    """Every test of a category module is a case, marked ``reliability`` and ``slow`` (``quick`` is the
    module's or the case's own). The cases run after the other tests, by category in the order of CATEGORIES:
    input first, faults (which leave Triton 2.51's strict server readiness false after a refused load, R1) after;
    in each faults module the versions-lost case (test_no_version_lost, imported from rig) last."""
    for item in items:
        if category(item.nodeid):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)

    def rank(item) -> tuple[int, bool]:  # stable; a faults module's ledger case after its faults, which it checks
        name = category(item.nodeid)
        return (order(name), item.originalname == "test_no_version_lost") if name else (-1, False)

    items.sort(key=rank)


RANK = ("passed", "skipped", "failed")  # a case's outcome is its worst phase's


def pytest_terminal_summary(terminalreporter, config) -> None:
    reports = [r for rs in terminalreporter.stats.values() for r in rs  # every phase of every case
               if isinstance(r, pytest.TestReport) and category(r.nodeid)]
    if not reports:
        return
    outcomes, properties, why_failed = {}, {}, {}  # by node id
    for report in reports:
        outcomes[report.nodeid] = max(outcomes.get(report.nodeid, "passed"), report.outcome, key=RANK.index)
        properties[report.nodeid] = report.user_properties or properties.get(report.nodeid, [])
        if report.failed:
            message = getattr(getattr(report.longrepr, "reprcrash", None), "message", report.longrepr)
            why_failed.setdefault(report.nodeid, " ".join(str(message).split())[:300])
    cases = sorted(outcomes, key=lambda nodeid: order(category(nodeid)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=config.rootpath, capture_output=True,
                            text=True)
    out = [f"# Reliability run {dt.datetime.now():%Y-%m-%d %H:%M}",
           "", f"`pytest -m \"{config.option.markexpr}\"`, soak {SOAK_SECONDS} s, {FUZZ_EXAMPLES} fuzz examples per "
           f"target, commit {commit.stdout.strip()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}.",
           "", "| category | cases | failures | skipped | versions lost |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in [*dict.fromkeys(map(category, cases)), None]:  # the categories, then the total (None)
        ids = [n for n in cases if name in (None, category(n))]
        lost = [int(value) for n in ids for key, value in properties[n] if key == "versions_lost"]
        values = [name or "total", len(ids), *(sum(outcomes[n] == o for n in ids) for o in ("failed", "skipped")),
                  sum(lost) if lost else "-"]  # "-": not measured
        out.append("| " + " | ".join(f"{v}" if name else f"**{v}**" for v in values) + " |")
    figures = [f"- `{nodeid.split('::', 1)[1]}` {key}: {value}" for nodeid, props in properties.items()
               for key, value in props if key != "versions_lost"]
    failed = [f"- `{nodeid}`: {why}" for nodeid, why in why_failed.items()]
    text = "\n".join(out + (["", "Figures:", ""] + figures if figures else [])
                     + (["", "Failed:", ""] + failed if failed else [])) + "\n"
    path = config.rootpath / ".state" / "reliability" / "summary.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    terminalreporter.write_sep("=", "reliability summary")
    terminalreporter.write_line(text.rstrip())
    terminalreporter.write_line(f"(saved to {path.relative_to(config.rootpath)})")
