"""The real training flow, driven by the Metaflow Runner on a tiny dataset, read back with the client."""

import base64
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from fraudml.data import (
    FEATURES,
    DatasetError,
    dataset_fingerprint,
    generate_dataset,
    load_dataset,
    write_dataset,
)
from fraudml.features import split_train_test

pytestmark = pytest.mark.slow

FLOW = str(Path(__file__).resolve().parents[2] / "train" / "flow.py")
TINY = {"rows": 4000, "fraud_rate": 0.02, "seed": 5}


@pytest.fixture(scope="module")
def run(metaflow_local):
    """One tiny run: 4,000 synthetic rows generated in the flow, 2 families, 1 candidate, 2 folds."""
    from metaflow import Runner

    root, env = metaflow_local
    with Runner(FLOW, show_output=False, cwd=str(root), env=env) as runner:
        result = runner.run(
            rows=TINY["rows"], fraud_rate=TINY["fraud_rate"], seed=TINY["seed"],
            models="random_forest,xgboost", n_iter=1, cv_folds=2,
        )
        assert result.status == "successful", result.stdout + result.stderr
        return {"run": result.run, "stdout": result.stdout}


def test_flow_ran_its_dag_and_printed_the_comparison(run):
    """One train task per family; eval printed the comparison and the winner, end the client hint."""
    steps = {s.id: s for s in run["run"]}
    assert set(steps) == {"start", "preprocess", "train", "eval", "deploy", "end"}
    assert sorted(t.data.family for t in steps["train"]) == ["random_forest", "xgboost"]
    out = run["stdout"]
    assert "test AP" in out and "CV AP (selects)" in out and "random_forest" in out and "xgboost" in out
    assert "winner: " in out and "chosen by highest cross-validated average precision" in out
    assert "from metaflow import Run" in out


def test_artifacts_read_back_with_the_client(run):
    """The artifacts, read back; the test set is the newest 20 % of the rows by Time (out of time), raw."""
    data = run["run"].data
    df = generate_dataset(TINY["rows"], TINY["fraud_rate"], TINY["seed"])
    assert data.dataset_fingerprint == dataset_fingerprint(df)
    assert data.dataset_source.startswith("synthetic:rows=4000")
    assert set(data.metrics_by_family) == {"random_forest", "xgboost"}
    assert data.metrics == data.metrics_by_family[data.best_family]
    # chosen on cross-validated AP (training folds), not on the test set
    assert data.metrics["cv_average_precision"] == max(m["cv_average_precision"] for m in data.metrics_by_family.values())
    for m in data.metrics_by_family.values():
        low, high = m["intervals"]["average_precision"]
        assert low <= m["average_precision"] <= high and low < high
    assert data.metrics["average_precision"] > 10 * data.metrics["positive_rate"]
    assert data.threshold == data.metrics["threshold"] and 0 < data.threshold < 1
    assert data.metrics["threshold_source"] == "out_of_fold"
    assert data.model_type == "treelite_checkpoint" and data.model_filename == "checkpoint.tl"
    assert data.export_max_abs_diff <= 1e-5  # the checkpoint as served: test_end_to_end's raw-rows test
    assert data.model_version is None  # no --model-repo: nothing published
    train, test = split_train_test(df, 0.2, TINY["seed"], by="time")
    np.testing.assert_array_equal(data.test_index, test.index.to_numpy())
    np.testing.assert_array_equal(data.X_test, test[FEATURES].to_numpy(np.float32))
    assert data.metrics["n"] == len(test) and data.metrics["n_positive"] == int(test["Class"].sum())
    assert data.class_distribution["test"]["fraud"] == int(test["Class"].sum())
    assert test["Time"].min() >= train["Time"].max()  # every test row is newer than every training row


def test_lineage_ties_the_model_to_the_run(run):
    """lineage: run pathspec, data, parameters, metrics, threshold, raw input, code and libraries."""
    r = run["run"]
    lineage = r.data.lineage
    json.dumps(lineage)
    assert lineage["pathspec"] == r.pathspec
    assert lineage["task_pathspec"].startswith(r.pathspec + "/deploy/")
    assert lineage["dataset"]["fingerprint"] == r.data.dataset_fingerprint
    assert lineage["dataset"]["rows"] == TINY["rows"]
    assert lineage["parameters"]["models"] == "random_forest,xgboost"
    assert lineage["parameters"]["cv_folds"] == 2
    assert lineage["threshold"] == r.data.threshold
    assert lineage["family"] == r.data.best_family and lineage["best_params"] == r.data.best_params
    assert lineage["features"] == FEATURES and lineage["n_features"] == 30
    assert "feature_transform" not in lineage and lineage["input"].startswith("raw rows")
    assert lineage["code_version"]["flow_sha256"]
    assert {"scikit-learn", "treelite", "metaflow"} <= set(lineage["libraries"])


def _card_text(html: str) -> str:
    """The card's components, which the HTML carries as base64-encoded JSON."""
    return " ".join(
        base64.b64decode(blob).decode("utf-8", "replace")
        for blob in re.findall(r'window\.__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    )


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("preprocess", ["Class distribution", "fraud rate", "train", "test"]),
        ("eval", ["Model comparison", "Winner", "random_forest", "xgboost", "image/png", "Confusion matrix"]),
    ],
)
def test_cards_were_rendered(run, step, expected):
    """preprocess: class distribution; eval: comparison table, PR-curve plot, winner's confusion matrix."""
    from metaflow.cards import get_cards

    cards = get_cards(run["run"][step].task)
    assert len(cards) == 1
    text = _card_text(cards[0].get())
    for word in expected:
        assert word in text, f"{word!r} missing from the {step} card"


def test_load_dataset_from_s3(publisher_env, tmp_path):
    """--data s3://bucket/key: the same frame and fingerprint as the local file, from the real S3."""
    s3_server = publisher_env
    df = generate_dataset(1500, 0.02, seed=2)
    path = write_dataset(df, tmp_path / "cc.csv")
    s3_server.client().upload_file(str(path), "models", "datasets/cc.csv")
    back = load_dataset("s3://models/datasets/cc.csv")
    assert dataset_fingerprint(back) == dataset_fingerprint(df)
    with pytest.raises(DatasetError, match="S3 refused to read .*NoSuchKey"):
        load_dataset("s3://models/datasets/missing.csv")
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.env()["AWS_ENDPOINT_URL"]
