"""Trace a model version, or a saved Triton response, back to the Metaflow run that made it.

    python -m serve.lineage                      # the version config.pbtxt serves
    python -m serve.lineage --version 3
    python -m serve.lineage --response out.json  # a response saved by `serve.client --save`

Prints the run pathspec, its parameters, metrics and dataset fingerprint, then proves the link: the run is loaded
through the Metaflow client, and its dataset fingerprint and model checkpoint must equal what lineage.json records
for the published version.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fraudml.champion import describe_decision
from fraudml.repository import ModelRepository
from fraudml.storage import StorageError
from serve.settings import command_line


def lineage_line(lineage: dict[str, Any]) -> str:
    """``fraud-classifier/<version> -> FraudClassifierTreeSelection/<run id>``"""
    return f"{lineage['model_name']}/{lineage['version']} -> {lineage['pathspec']}"


def verify_run(lineage: dict[str, Any], repo: ModelRepository) -> list[tuple[str, bool, str]]:
    """Load the run named by ``lineage`` through the Metaflow client and compare it with
    lineage.json and the published model file: ``(what, passed, detail)`` per check."""
    from metaflow import Run, namespace

    namespace(None)  # the run may belong to another user or a production namespace
    try:
        run = Run(lineage["pathspec"])
    except Exception as exc:  # noqa: BLE001 - Metaflow raises several kinds; all mean "not found here"
        return [("run loads through the Metaflow client", False,
                 f"{type(exc).__name__}: {exc} (is METAFLOW_HOME/datastore the one that ran it?)")]
    fp = getattr(run.data, "dataset_fingerprint", None)
    want = lineage.get("dataset", {}).get("fingerprint")
    checks = [("run loads through the Metaflow client", True, f"{run.pathspec}, finished {run.finished_at}"),
              ("run finished successfully", bool(run.successful), ""),
              ("dataset fingerprint matches", fp == want and want is not None, f"{fp}")]
    model_file = next((n for n in lineage.get("files", {}) if n != "lineage.json"), None)
    if model_file is not None:
        published, ckpt = repo.read_file(lineage["version"], model_file), getattr(run.data, "model_checkpoint", None)
        checks.append(("published model file == the run's model_checkpoint artifact",
                       ckpt is not None and bytes(ckpt) == published,
                       "sha256:" + hashlib.sha256(published).hexdigest()[:16] + "…"))
    return checks


def _code_line(code: dict[str, Any]) -> str:
    if "git_commit" in code:
        dirty = " (with uncommitted changes)" if code.get("git_dirty") else ""
        return f"git {code['git_commit'][:12]} on {code.get('git_branch')}{dirty}"
    if "flow_sha256" in code:
        return f"{code.get('flow_file', 'flow')} sha256:{code['flow_sha256'][:16]}…"
    return "unknown"


def describe(lineage: dict[str, Any]) -> str:
    ds = lineage.get("dataset", {})
    lines = [
        lineage_line(lineage),
        f"  published   {lineage.get('published_at')} to {lineage.get('model_repository')}",
        f"  family      {lineage.get('family')}  threshold {lineage.get('threshold')}",
        f"  dataset     {ds.get('source')}  rows {ds.get('rows')}  {ds.get('fingerprint')}",
        f"  code        {_code_line(lineage.get('code_version') or {})}",
        f"  promotion   {describe_decision(lineage['promotion']) if lineage.get('promotion') else '(not recorded)'}",
        f"  holdout     {(lineage.get('holdout') or {}).get('fingerprint', '(none)')}",
        "  metrics     " + ", ".join(f"{k}={v:.4f}" for k, v in lineage.get("metrics", {}).items()
                                     if isinstance(v, int | float)),
        "  parameters  " + ", ".join(f"{k}={v}" for k, v in lineage.get("parameters", {}).items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.lineage", __doc__)
    parser.add_argument("--model-repo", default=settings.model_repo, help="default: %(default)s")
    parser.add_argument("--model-name", default=settings.model_name, help="default: %(default)s")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="a published version (default: the served one)")
    which.add_argument("--response", help="a JSON response saved by `python -m serve.client --save FILE`")
    parser.add_argument("--no-verify", action="store_true", help="do not load the run through Metaflow")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    version, name = args.version, args.model_name
    if args.response:
        saved = json.loads(Path(args.response).read_text())
        version, name = int(saved["model_version"]), saved["model_name"]
    try:
        repo = ModelRepository(args.model_repo, name)
        lineage = repo.read_lineage(version)
        checks = None if args.no_verify else verify_run(lineage, repo)
    except (StorageError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ok = checks is None or all(passed for _, passed, _ in checks)
    if args.json:
        out = {"lineage": lineage}
        if checks is not None:
            out["verification"] = {"ok": ok, "checks": [{"check": c, "ok": p, "detail": d} for c, p, d in checks]}
        print(json.dumps(out, indent=2, default=str))
    else:
        print(describe(lineage))
        for what, passed, detail in checks or ():
            print(f"  [{'ok' if passed else 'FAIL'}] {what}" + (f": {detail}" if detail else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
