"""Unit tests of the feature transform and the stratified split."""

import json

import numpy as np
import pandas as pd
import pytest

from fraudml.data import FEATURES, LABEL, generate_dataset
from fraudml.features import FeatureTransform, labels, split_train_test


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate_dataset(5_000, 0.02, seed=8)


def test_fit_learns_median_and_iqr_of_time_and_amount(df):
    """Center = median, scale = interquartile range, from the rows given to fit."""
    t = FeatureTransform().fit(df)
    for column in ("Time", "Amount"):
        q1, q3 = np.percentile(df[column], [25, 75])
        assert t.center[column] == pytest.approx(df[column].median())
        assert t.scale[column] == pytest.approx(q3 - q1)


def test_transform_scales_only_time_and_amount(df):
    """float32 (n, 30) in FEATURES order; V columns pass through unchanged."""
    t = FeatureTransform().fit(df)
    out = t.transform(df)
    assert out.dtype == np.float32 and out.shape == (len(df), 30)
    v = [FEATURES.index(f"V{i}") for i in range(1, 29)]
    np.testing.assert_array_equal(out[:, v], df[FEATURES].to_numpy(np.float32)[:, v])
    amount = FEATURES.index("Amount")
    expected = (df["Amount"] - t.center["Amount"]) / t.scale["Amount"]
    np.testing.assert_allclose(out[:, amount], expected, rtol=1e-6)
    assert np.median(out[:, amount]) == pytest.approx(0.0, abs=1e-6)


def test_frame_and_raw_array_give_the_same_result(df):
    """Columns are taken by name from a frame (any order, extra columns ignored) or by position from an array."""
    t = FeatureTransform().fit(df)
    shuffled = df[[LABEL, *reversed(FEATURES)]]
    np.testing.assert_array_equal(t.transform(shuffled), t.transform(df[FEATURES].to_numpy()))
    one = t.transform(df[FEATURES].to_numpy()[0])
    assert one.shape == (1, 30)


def test_transform_does_not_modify_its_input(df):
    """The caller's array is left alone."""
    raw = df[FEATURES].to_numpy()
    before = raw.copy()
    FeatureTransform().fit(df).transform(raw)
    np.testing.assert_array_equal(raw, before)


def test_bad_inputs_raise(df):
    """Unfitted transform, wrong width, missing column."""
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureTransform().transform(df)
    t = FeatureTransform().fit(df)
    with pytest.raises(ValueError, match=r"shape \(n, 30\)"):
        t.transform(np.zeros((2, 29)))
    with pytest.raises(ValueError, match="missing feature column"):
        t.transform(df.drop(columns=["V7"]))


def test_dict_round_trip_through_json(df):
    """to_dict is JSON-able and from_dict rebuilds the same transform."""
    t = FeatureTransform().fit(df)
    d = json.loads(json.dumps(t.to_dict()))
    assert d["kind"] == "robust_scale" and d["features"] == FEATURES
    back = FeatureTransform.from_dict(d)
    np.testing.assert_array_equal(back.transform(df), t.transform(df))
    with pytest.raises(ValueError):
        FeatureTransform.from_dict({**d, "kind": "standard"})
    with pytest.raises(ValueError):
        FeatureTransform.from_dict({**d, "features": list(reversed(FEATURES))})


def test_constant_column_does_not_divide_by_zero(df):
    """An interquartile range of 0 gives scale 1."""
    t = FeatureTransform().fit(df.assign(Amount=5.0))
    assert t.scale["Amount"] == 1.0
    assert np.isfinite(t.transform(df)).all()


def test_split_is_stratified_disjoint_and_deterministic(df):
    """Same fraud rate in both parts, no shared rows, same split for the same seed."""
    train, test = split_train_test(df, test_size=0.25, seed=3)
    assert len(test) == 1_250 and len(train) == 3_750
    assert set(train.index).isdisjoint(test.index)
    assert sorted([*train.index, *test.index]) == list(df.index)
    assert labels(test).sum() == 25 and labels(train).sum() == 75
    again, _ = split_train_test(df, test_size=0.25, seed=3)
    pd.testing.assert_frame_equal(train, again)
    other, _ = split_train_test(df, test_size=0.25, seed=4)
    assert not train.index.equals(other.index)


def test_transform_fitted_on_train_only(df):
    """Fitting on the training part gives other statistics than on all rows (test rows are not used)."""
    train, _ = split_train_test(df, seed=1)
    assert FeatureTransform().fit(train).center != FeatureTransform().fit(df).center
