"""Unit tests of the promotion gate and the holdout bookkeeping (no flow, no server)."""

import numpy as np
import pytest

from fraudml.champion import (
    ComparisonRefused,
    check_unseen,
    judge,
    make_holdout,
    read_decisions,
    read_holdout,
    record_decision,
    row_keys,
    select_test_set,
    store_holdout,
)
from fraudml.data import generate_dataset
from fraudml.features import feature_matrix
from fraudml.repository import ModelRepository

RNG = np.random.default_rng(0)
Y = np.r_[np.ones(60, int), np.zeros(2940, int)]
GOOD = np.where(Y == 1, RNG.uniform(0.4, 1.0, Y.size), RNG.uniform(0.0, 0.6, Y.size))
WEAK = np.where(Y == 1, RNG.uniform(0.2, 1.0, Y.size), RNG.uniform(0.0, 0.9, Y.size))


def test_better_challenger_is_promoted_with_a_paired_interval():
    d = judge(Y, (WEAK, 0.5), (GOOD, 0.5), n_boot=100)
    assert d["promoted"] and d["ap_gain"] > 0.1
    low, high = d["ap_gain_95ci"]
    assert 0 < low <= d["ap_gain"] <= high


def test_worse_or_equal_challenger_is_not_promoted():
    assert not judge(Y, (GOOD, 0.5), (WEAK, 0.5), n_boot=50)["promoted"]
    same = judge(Y, (GOOD, 0.5), (GOOD, 0.5), margin=0.01, n_boot=50)
    assert not same["promoted"] and same["ap_gain"] == 0 and "below the margin" in same["reason"]


def test_recall_guard_compares_at_the_same_number_of_alerts():
    """Recall is compared at as many alerts as the challenger raises; a strict threshold alone is no loss."""
    rng = np.random.default_rng(1)
    top_frauds = np.r_[rng.uniform(0.95, 1.0, 20), rng.uniform(0.0, 0.5, 40)]
    champion = np.where(Y == 1, np.r_[top_frauds, np.zeros(Y.size - 60)], rng.uniform(0.0, 0.9, Y.size))
    challenger = np.where(Y == 1, rng.uniform(0.6, 0.9, Y.size), rng.uniform(0.0, 0.55, Y.size))
    challenger[60:75] = rng.uniform(0.95, 1.0, 15)  # its 15 most confident rows are legitimate
    d = judge(Y, (champion, 0.5), (challenger, 0.94), n_boot=50)
    assert d["ap_gain"] > 0.1
    assert not d["promoted"] and "recall at the run's threshold (15 alerts)" in d["reason"]
    assert d["champion"]["recall_at_same_alerts"] > d["challenger"]["recall"] == 0.0
    strict = judge(Y, (WEAK, 0.01), (GOOD, 0.99), n_boot=50)
    assert strict["promoted"], strict["reason"]


def test_holdout_rows_never_reach_training_and_seen_rows_are_refused(tmp_path):
    df = generate_dataset(3000, 0.03, seed=4)
    repo = ModelRepository(str(tmp_path / "repo"))
    train, holdout, stored = select_test_set(df, repo, by="time", test_size=0.2)
    assert not stored and holdout.df["Time"].min() >= train["Time"].max()
    store_holdout(repo, holdout)
    assert read_holdout(repo).fingerprint == holdout.fingerprint
    # a later run on the same data: the stored holdout is the test set, its rows leave training
    train2, holdout2, stored2 = select_test_set(df, repo, by="stratified")
    assert stored2 and holdout2.fingerprint == holdout.fingerprint and len(train2) == len(df) - len(holdout.df)
    assert not np.isin(row_keys(holdout.df), row_keys(feature_matrix(train2))).any()
    check_unseen(holdout, feature_matrix(train2), {"version": 1, "holdout": {"fingerprint": holdout.fingerprint}})
    with pytest.raises(ComparisonRefused, match="challenger trained on 600 of the 600 holdout rows"):
        check_unseen(holdout, feature_matrix(df), None)
    with pytest.raises(ComparisonRefused, match="served version 4 does not record"):
        check_unseen(holdout, feature_matrix(train2), {"version": 4})
    # storing it again is a no-op; a second, different holdout cannot replace the first one
    store_holdout(repo, holdout)
    with pytest.raises(ComparisonRefused, match="another run stored a different reference holdout"):
        store_holdout(repo, make_holdout(df.head(500), "other"))
    assert read_holdout(repo).fingerprint == holdout.fingerprint


def test_decisions_are_recorded_in_order(tmp_path):
    repo = ModelRepository(str(tmp_path / "repo"))
    record_decision(repo, "2", {"promoted": False, "reason": "b", "decided_at": "2026-01-02"})
    record_decision(repo, "1", {"promoted": True, "reason": "a", "decided_at": "2026-01-01"})
    assert [d["reason"] for d in read_decisions(repo)] == ["a", "b"]
