"""Operate the model repository: list versions, roll back, ask Triton to load.

    python -m serve.models list      [--model-repo URI]
    python -m serve.models rollback  --version N [--triton-url URL ... | --triton-url none]
    python -m serve.models load      [--triton-url URL ...]
    python -m serve.models canary    --version N --percent P | --promote | --abort

Rolling back moves config.pbtxt's version pointer to an earlier complete version (copied back from the archive if
it was archived) and asks each Triton to load it: no restart, requests in flight finish on the old version.
Where a reconciler runs beside each Triton (Kubernetes, `make serve`), the pointer move alone is enough:
`--triton-url none`.

A canary lets a share of the Triton pods serve another version (the reconcilers decide by pod name); `--promote`
makes it the served version, `--abort` sends every pod back to config.pbtxt's.
"""

from __future__ import annotations

import argparse
import json
import sys

from fraudml.champion import describe_decision, read_decisions
from fraudml.repository import ModelRepository, PublishError
from fraudml.rollout import RolloutError, roll_out
from fraudml.storage import StorageError
from serve.settings import Settings, command_line


def cmd_list(repo: ModelRepository, args, settings: Settings) -> int:
    versions = repo.list_versions()
    if args.json:
        print(json.dumps([v.__dict__ for v in versions], indent=2, default=str))
        return 0
    if not versions:
        print(f"{args.model_repo}: no versions of {args.model_name} yet")
        return 0
    canary = repo.canary()
    print(f"{'':2}{'version':>7}  {'status':<20} {'run':<46} {'AP':>6}  promotion")
    for v in versions:
        ap, promotion = "", ""
        run = v.claim.get("run") or ""
        if v.status == "complete":
            lineage = repo.read_lineage(v.version)
            ap = f"{lineage.get('metrics', {}).get('average_precision', float('nan')):.3f}"
            promotion = describe_decision(lineage["promotion"]) if lineage.get("promotion") else "(not recorded)"
        mark = "*" if v.served else "c" if canary and canary["version"] == v.version else " "
        status = v.status + (" (archived)" if v.archived else "")
        print(f"{mark:2}{v.version:>7}  {status:<20} {run:<46} {ap:>6}  {promotion}")
    print("(* = named by config.pbtxt, the version Triton serves; AP = the run's test set; archived: "
          "kept outside the folder Triton downloads, restored by a rollback)")
    if canary:
        print(f"canary: version {canary['version']} on {canary['percent']} % of the pods "
              "(python -m serve.models canary --promote | --abort)")
    rejected = [d for d in read_decisions(repo) if not d.get("promoted")]
    if rejected:
        print("runs not promoted (kept the served version):")
        for d in rejected:
            print(f"  {d.get('run')}  {d.get('decided_at')}  {describe_decision(d)}")
    return 0


def cmd_roll_out(repo: ModelRepository, args, settings: Settings) -> int:
    """rollback: move config.pbtxt's pointer to ``--version`` first; both: each Triton loads the served version."""
    previous = None
    if args.command == "rollback":
        previous = repo.set_served_version(args.version)
        print(f"config.pbtxt: {args.model_name} {previous} -> {args.version}")
    urls = [u for u in args.triton_url or [settings.triton.http_url] if u.lower() != "none"]
    roll_out(repo, urls, previous)
    for url in urls:
        print(f"{url}: loaded {args.model_name}/{repo.served_version()}")
    return 0


def cmd_canary(repo: ModelRepository, args, settings: Settings) -> int:
    canary = repo.canary()
    if args.promote or args.abort:
        if canary is None:
            print("no canary is running")
            return 1
        if args.promote:
            previous = repo.set_served_version(canary["version"])
            print(f"config.pbtxt: {args.model_name} {previous} -> {canary['version']} (promoted)")
        repo.clear_canary()
        print(f"canary of version {canary['version']} ended; every pod follows config.pbtxt "
              f"(version {repo.served_version()})")
        return 0
    if args.version is None or args.percent is None:
        print("error: give --version and --percent, or --promote / --abort", file=sys.stderr)
        return 2
    repo.set_canary(args.version, args.percent)
    print(f"canary: version {args.version} on {args.percent} % of the pods; "
          f"the others serve version {repo.served_version()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.models", __doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-repo", default=settings.model_repo,
                        help="s3://bucket/prefix or a folder (default: %(default)s, env MODEL_REPO)")
    common.add_argument("--model-name", default=settings.model_name, help="default: %(default)s")
    triton = argparse.ArgumentParser(add_help=False)
    triton.add_argument("--triton-url", action="append", default=None,
                        help=f"Triton HTTP URL to load on; repeat for several (default: {settings.triton.http_url}); "
                             "pass --triton-url none to only move the pointer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", parents=[common], help="list versions, their status and which one is served")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("rollback", parents=[common, triton], help="serve an earlier (or later) complete version")
    p.add_argument("--version", type=int, required=True, help="the version to serve")
    p = sub.add_parser("load", parents=[common, triton], help="ask Triton to load what config.pbtxt names")
    p = sub.add_parser("canary", parents=[common], help="serve a version on a share of the pods; promote or abort it")
    p.add_argument("--version", type=int, help="the version the canary pods serve")
    p.add_argument("--percent", type=int, help="share of the pods, 1..100 (chosen by pod name)")
    p.add_argument("--promote", action="store_true", help="serve the canary version everywhere")
    p.add_argument("--abort", action="store_true", help="end the canary: every pod back to config.pbtxt's version")
    args = parser.parse_args(argv)
    try:
        command = {"list": cmd_list, "rollback": cmd_roll_out, "load": cmd_roll_out, "canary": cmd_canary}
        return command[args.command](ModelRepository(args.model_repo, args.model_name), args, settings)
    except (StorageError, PublishError, RolloutError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
