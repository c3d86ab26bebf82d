"""Behavioural tests of the model families: resampling stays in training, thresholds, minimum quality."""

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE
from sklearn.metrics import average_precision_score

from fraudml.data import FEATURES
from fraudml.metrics import choose_threshold
from fraudml.models import (
    DEFAULT_FAMILIES,
    FAMILIES,
    build_pipeline,
    oversampling_target,
    parse_families,
    pick_best,
    predict_proba,
    score_family,
    train_family,
)
from tests.model.conftest import TRAIN_KWARGS


def test_oversampling_adds_synthetic_frauds_to_training_only(split):
    """Raise frauds to 10 % of legitimate rows, but keep them all if there are more already."""
    assert oversampling_target(np.array([0] * 1000 + [1] * 5)) == {1: 100}
    assert oversampling_target(np.array([0] * 100 + [1] * 40)) == {1: 40}
    pipeline = build_pipeline("xgboost", seed=0).set_params(clf__n_estimators=5)
    X_res, y_res = pipeline.named_steps["smote"].fit_resample(split.X_train, split.y_train)
    n_legit = int((split.y_train == 0).sum())
    assert int((y_res == 0).sum()) == n_legit
    assert int(y_res.sum()) == round(0.1 * n_legit) > int(split.y_train.sum())


def test_cross_validation_never_resamples_the_validation_fold(split, monkeypatch):
    """Only training folds (2/3 of the rows, search and out-of-fold) and the final refit are resampled:
    SMOTE runs in fit only, never when the validation folds are scored."""
    resample_spy: list[int] = []  # the rows every SMOTE.fit_resample call receives
    original = SMOTE.fit_resample

    def spy(self, X, y, **kwargs):
        resample_spy.append(len(y))
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(SMOTE, "fit_resample", spy)
    n = len(split.y_train)
    train_family("lightgbm", split.X_train, split.y_train, seed=0, cv_folds=3, n_iter=1)
    assert len(resample_spy) == 3 + 1 + 3
    assert sorted(resample_spy)[-1] == n
    for rows in sorted(resample_spy)[:-1]:
        assert abs(rows - 2 * n / 3) <= 1, "a fold other than a training fold was resampled"


def test_scoring_the_winner_leaves_the_test_set_untouched(trained, split):
    """Scoring leaves the test rows untouched; the CV-chosen family beats a constant score, AP in its interval."""
    before = split.X_test.copy(), split.y_test.copy()
    best = pick_best({f: t.cv_average_precision for f, t in trained.items()})
    metrics, proba = score_family(trained[best], split.X_test, split.y_test, split.y_train, n_boot=200)
    np.testing.assert_array_equal(split.X_test, before[0])
    np.testing.assert_array_equal(split.y_test, before[1])
    assert metrics["n"] == len(split.y_test) and metrics["n_positive"] == int(split.y_test.sum())
    assert proba.shape == split.y_test.shape
    assert metrics["average_precision"] > 0.3 > 20 * split.y_test.mean()
    low, high = metrics["intervals"]["average_precision"]
    assert low < metrics["average_precision"] < high


def test_threshold_comes_from_out_of_fold_scores(trained, split):
    """The threshold comes from out-of-fold training scores; a high precision target moves it up (or keeps it)."""
    t = trained["xgboost"]
    for rule in ("best_f1", "precision_target"):
        metrics, _ = score_family(t, split.X_test, split.y_test, split.y_train, rule=rule, precision_target=0.8)
        assert metrics["threshold_source"] == "out_of_fold"
        assert metrics["threshold"] == choose_threshold(split.y_train, t.oof_proba, rule, 0.8)
    oof = trained["random_forest"].oof_proba
    assert choose_threshold(split.y_train, oof, "precision_target", 0.99) >= choose_threshold(split.y_train, oof, "best_f1")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_beats_a_constant_predictor_by_far(trained, split, family):
    """AP far above a constant score's (the fraud rate) but below 1, on the test set and out-of-fold scores."""
    ap = average_precision_score(split.y_test, predict_proba(trained[family].pipeline, split.X_test))
    base_rate = split.y_test.mean()
    assert average_precision_score(split.y_test, np.full(len(split.y_test), 0.5)) == pytest.approx(base_rate)
    assert 20 * base_rate < ap < 0.999
    t = trained[family]
    assert t.family == family and all(not k.startswith("clf__") for k in t.best_params)
    assert 0 < t.cv_average_precision <= 1 and t.cv_average_precision_std >= 0
    oof = t.oof_proba
    assert oof.shape == split.y_train.shape and ((oof >= 0) & (oof <= 1)).all()
    assert average_precision_score(split.y_train, oof) > 10 * split.y_train.mean()


def test_moving_along_the_fraud_direction_raises_the_score(trained, split):
    """Direction: pushing legitimate rows towards the fraud pattern (V14, V12, V10, V17 down) raises P(fraud)."""
    legit = split.X_test[split.y_test == 0][:500]
    pushed = legit.copy()
    for name, shift in (("V14", -4.0), ("V12", -3.0), ("V10", -3.0), ("V17", -3.0)):
        pushed[:, FEATURES.index(name)] += shift
    for family in ("random_forest", "xgboost"):
        pipeline = trained[family].pipeline
        assert predict_proba(pipeline, pushed).mean() > 5 * predict_proba(pipeline, legit).mean()


def test_irrelevant_change_barely_moves_the_score(trained, split):
    """Invariance: a tiny change of a weak component leaves the scores nearly unchanged."""
    pipeline = trained["random_forest"].pipeline
    rows = split.X_test[:1000]
    nudged = rows.copy()
    nudged[:, FEATURES.index("V26")] += 1e-4
    assert np.abs(predict_proba(pipeline, nudged) - predict_proba(pipeline, rows)).max() < 0.05


def test_training_is_deterministic(trained, split):
    """Training again with the session fixture's arguments gives the same search, scores and model."""
    a = trained["xgboost"]
    b = train_family("xgboost", split.X_train, split.y_train, **TRAIN_KWARGS)
    assert a.best_params == b.best_params
    np.testing.assert_array_equal(a.oof_proba, b.oof_proba)
    np.testing.assert_array_equal(predict_proba(a.pipeline, split.X_test), predict_proba(b.pipeline, split.X_test))


def test_parse_families():
    assert parse_families(" random_forest, xgboost ,random_forest") == ["random_forest", "xgboost"]
    assert parse_families(",".join(DEFAULT_FAMILIES)) == list(DEFAULT_FAMILIES)
    with pytest.raises(ValueError, match="unknown model family catboost"):
        parse_families("random_forest,catboost")
    with pytest.raises(ValueError):
        parse_families(" , ")


def test_pick_best_takes_the_highest_cross_validated_average_precision():
    assert pick_best({"a": 0.5, "b": 0.7, "c": 0.6}) == "b"
    assert pick_best({"z": 0.7, "y": 0.7}) == "y"
    with pytest.raises(ValueError):
        pick_best({})
