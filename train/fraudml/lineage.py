"""Lineage: the record (flow artifact ``lineage``, ``<version>/lineage.json``) that ties a model version to
the run, data and code that made it (DESIGN §4)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from fraudml.data import FEATURES

LINEAGE_SCHEMA = 1
_LIBRARIES = (
    "numpy", "pandas", "scikit-learn", "imbalanced-learn", "xgboost", "xgboost-cpu", "lightgbm",
    "treelite", "metaflow",
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:  # SubprocessError: a time-out or a non-zero exit (check=True)
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def code_version(flow_file: str | Path) -> dict:
    """What is known about the code: git commit/branch/dirty (when in a repository with
    commits), the flow file's sha256, and Metaflow's code package (remote runs)."""
    info: dict = {}
    flow_file = Path(flow_file).resolve()
    if commit := _git(["rev-parse", "HEAD"], flow_file.parent):
        info["git_commit"] = commit
        info["git_branch"] = _git(["rev-parse", "--abbrev-ref", "HEAD"], flow_file.parent)
        info["git_dirty"] = bool(_git(["status", "--porcelain", "--untracked-files=no"], flow_file.parent))
    info["flow_file"] = flow_file.name
    info["flow_sha256"] = hashlib.sha256(flow_file.read_bytes()).hexdigest()
    for env, key in (("METAFLOW_CODE_URL", "code_package_url"), ("METAFLOW_CODE_SHA", "code_package_sha")):
        if os.environ.get(env):
            info[key] = os.environ[env]
    return info


def installed_versions(names) -> dict[str, str]:
    """The installed version of each of ``names``, in that order (missing ones left out)."""
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def build_lineage(task_pathspec: str, flow_file: str | Path, **fields) -> dict:
    """The lineage record of one trained model, JSON-able.

    ``pathspec`` in the record is the *run* pathspec (``flow/run_id``), which ``metaflow.Run(...)``
    opens; ``task_pathspec`` names the task that built the record. ``fields``: ``dataset``,
    ``parameters``, ``family``, ``best_params``, ``model_type``, ``threshold``, ``metrics`` (the
    winner's test-set metrics, :func:`fraudml.metrics.evaluate`), ``extra`` (e.g. the other families' scores).
    """
    flow_name, run_id = task_pathspec.split("/")[:2]
    record = {
        "schema": LINEAGE_SCHEMA,
        "created_at": utc_now(),
        "flow": flow_name,
        "run_id": run_id,
        "pathspec": f"{flow_name}/{run_id}",
        "task_pathspec": task_pathspec,
        **fields,
        "n_features": len(FEATURES),
        "features": list(FEATURES),
        "decision": "fraud when P(fraud) >= threshold",
        "input": "raw rows: features in this order, float32, no transform (NaN = missing)",
        "code_version": code_version(flow_file),
        "libraries": {**installed_versions(_LIBRARIES), "python": platform.python_version()},  # that shape the model
    }
    # Fail here, not at publish time, if anything is not JSON-able.
    return json.loads(json.dumps(record, allow_nan=False))
