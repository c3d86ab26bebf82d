"""Unit tests of the raw model input, SMOTE on a robust-scaled distance, and the stratified split."""

import numpy as np
import pandas as pd
import pytest

from fraudml.data import FEATURES, generate_dataset
from fraudml.features import feature_matrix, labels, smote_on_robust_scale, split_train_test

TIME, AMOUNT = FEATURES.index("Time"), FEATURES.index("Amount")


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate_dataset(5_000, 0.02, seed=8)


def test_feature_matrix_is_the_raw_rows_in_feature_order(df):
    shuffled = df[list(reversed(df.columns))]
    x = feature_matrix(shuffled)
    assert x.dtype == np.float32 and x.shape == (len(df), 30)
    np.testing.assert_array_equal(x, df[FEATURES].to_numpy(np.float32))
    with pytest.raises(ValueError, match="missing feature column.*Amount"):
        feature_matrix(df.drop(columns=["Amount"]))


def test_smote_keeps_original_rows_and_adds_rows_in_raw_units(df):
    """The originals come back bit for bit; each new row lies between two frauds, in raw units."""
    x, y = feature_matrix(df), labels(df)
    x_res, y_res = smote_on_robust_scale(x, y, sampling_strategy={1: 400}, random_state=0)
    np.testing.assert_array_equal(x_res[: len(x)], x)
    np.testing.assert_array_equal(y_res[: len(y)], y)
    new = x_res[len(x):]
    assert len(new) == 400 - y.sum() and (y_res[len(y):] == 1).all()
    assert new.dtype == x.dtype
    frauds = x[y == 1]
    # raw units: within the frauds' own range in every column (not scaled values near 0)
    assert (new >= frauds.min(axis=0) - 1e-3).all() and (new <= frauds.max(axis=0) + 1e-3).all()
    assert new[:, TIME].max() > 1000  # Time in seconds, not in interquartile ranges


def test_smote_measures_distance_on_the_scaled_columns():
    """SMOTE's neighbours: 50 s in Time is nearer than 1 unit of V1 once Time/Amount are robust-scaled."""
    rng = np.random.default_rng(0)
    legit = rng.normal(size=(200, 30))
    legit[:, TIME] = rng.uniform(0, 172_800, 200)  # IQR of Time ~ 86,000 s
    legit[:, AMOUNT] = rng.uniform(0, 100, 200)
    base = np.zeros(30)
    base[TIME], base[AMOUNT] = 80_000.0, 50.0
    near_in_time = base.copy()
    near_in_time[TIME] += 50.0  # 50 s: tiny once scaled
    near_in_v1 = base.copy()
    near_in_v1[1] += 1.0  # V1 is not scaled
    x = np.vstack([legit, base, near_in_time, near_in_v1])
    y = np.r_[np.zeros(200, int), np.ones(3, int)]
    x_res, _ = smote_on_robust_scale(x, y, sampling_strategy={1: 300}, k_neighbors=1, random_state=0)
    new = x_res[len(x):]
    from_base_pair = new[np.isclose(new[:, 1], 0.0)]  # V1 unchanged: interpolated base <-> near_in_time
    assert len(from_base_pair) > 100  # base and near_in_time are each other's nearest neighbour


def test_split_is_stratified_disjoint_and_deterministic(df):
    train, test = split_train_test(df, test_size=0.25, seed=3)
    assert len(test) == 1_250 and len(train) == 3_750
    assert set(train.index).isdisjoint(test.index)
    assert sorted([*train.index, *test.index]) == list(df.index)
    assert labels(test).sum() == 25 and labels(train).sum() == 75
    again, _ = split_train_test(df, test_size=0.25, seed=3)
    pd.testing.assert_frame_equal(train, again)
    other, _ = split_train_test(df, test_size=0.25, seed=4)
    assert not train.index.equals(other.index)
