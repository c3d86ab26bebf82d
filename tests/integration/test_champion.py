"""Champion/challenger through real flow runs (Metaflow Runner) on a local model repository."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fraudml.champion import read_decisions, read_holdout, row_keys
from fraudml.data import dataset_fingerprint, generate_dataset, write_dataset
from fraudml.features import split_train_test
from fraudml.repository import ModelRepository, publish_model_version

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FLOW = str(ROOT / "train" / "flow.py")
FAST = {"models": "random_forest", "n_iter": 1, "cv_folds": 2}


@pytest.fixture(scope="module")
def rig(metaflow_local):
    """Datasets and a private Metaflow datastore; the repository is a local folder."""
    work, env = metaflow_local
    full = generate_dataset(6000, 0.03, seed=11)
    older, newest = split_train_test(full, 0.2, by="time")  # newest 20 %: the holdout
    shuffled = full.copy()
    rng = np.random.default_rng(0)
    shuffled.loc[older.index, "Class"] = rng.permutation(shuffled.loc[older.index, "Class"].to_numpy())
    paths = {name: write_dataset(df, work / f"{name}.csv")
             for name, df in (("full", full), ("holdout", newest), ("shuffled", shuffled))}
    return {"work": work, "paths": paths, "repo": str(work / "repo"), "env": env, "holdout": newest}


def _flow(rig, data: str, **params):
    from metaflow import Runner

    with Runner(FLOW, show_output=False, cwd=str(rig["work"]), env=rig["env"]) as runner:
        result = runner.run(data=str(rig["paths"][data]), model_repo=rig["repo"], **FAST, **params)
        return result.run if result.status == "successful" else None, result.stdout + result.stderr


def test_champion_challenger_sequence(rig):
    """v1 (fixes the holdout), a better v2, a worse run not promoted, a forced v3; listed and traced; then refused."""
    repo = ModelRepository(rig["repo"])

    run, out = _flow(rig, "shuffled", holdout=str(rig["paths"]["holdout"]))
    assert run is not None, out
    assert run.data.promotion["promoted"] and run.data.promotion["champion"] is None
    assert "first version" in run.data.promotion["reason"]
    assert run.data.model_version == 1 and repo.served_version() == 1
    stored = read_holdout(repo)
    assert stored.fingerprint == dataset_fingerprint(rig["holdout"])
    assert repo.read_lineage(1)["holdout"]["fingerprint"] == stored.fingerprint

    run, out = _flow(rig, "full")
    assert run is not None, out
    decision = run.data.promotion
    assert decision["promoted"] and not decision["forced"] and decision["champion_version"] == 1
    assert decision["ap_gain"] >= decision["margin"]
    low, high = decision["ap_gain_95ci"]
    assert low <= decision["ap_gain"] <= high
    assert run.data.model_version == 2 and repo.served_version() == 2
    # the holdout was the test set and none of its rows reached training
    assert not np.isin(row_keys(stored.df), row_keys(run.data.X_train)).any()
    np.testing.assert_array_equal(run.data.y_test, stored.df["Class"].to_numpy())

    run, out = _flow(rig, "shuffled")
    assert run is not None, out  # not promoted is a successful run
    decision = run.data.promotion
    assert not decision["promoted"] and not decision["forced"]
    assert "below the margin" in decision["reason"]
    assert decision["challenger"]["average_precision"] < decision["champion"]["average_precision"]
    assert run.data.model_version is None and repo.served_version() == 2

    run, out = _flow(rig, "shuffled", force_publish=True)
    assert run is not None, out
    assert run.data.promotion["forced"] and "--force-publish" in run.data.promotion["reason"]
    assert repo.served_version() == 3
    assert repo.read_lineage(3)["promotion"]["forced"]

    decisions = read_decisions(repo)
    assert [d["promoted"] for d in decisions] == [True, True, False, True]
    assert [d["published_version"] for d in decisions] == [1, 2, None, 3]

    listing = subprocess.run([sys.executable, "-m", "serve.models", "list", "--model-repo", rig["repo"]],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "first version" in listing.stdout and "forced" in listing.stdout
    assert "runs not promoted" in listing.stdout and "below the margin" in listing.stdout

    lineage = subprocess.run([sys.executable, "-m", "serve.lineage", "--model-repo", rig["repo"], "--version", "2",
                              "--no-verify"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert lineage.returncode == 0, lineage.stderr
    assert "promotion   promoted: average precision +" in lineage.stdout
    assert stored.fingerprint in lineage.stdout

    # a served version without a holdout record (it may have seen the holdout) cannot be judged on it
    served = repo.read_lineage()
    files = {n: repo.read_file(served["version"], n) for n in served["files"] if n != "lineage.json"}
    legacy = {k: v for k, v in served.items() if k not in ("holdout", "promotion", "version", "files", "triton_config")}
    version = publish_model_version(rig["repo"], files, legacy, served["triton_config"])
    run, out = _flow(rig, "full")
    assert run is None
    assert f"the served version {version} does not record that it was kept away from the reference holdout" in out
    assert repo.served_version() == version
    assert read_decisions(repo)[-1]["published_version"] == 3  # nothing recorded for it
