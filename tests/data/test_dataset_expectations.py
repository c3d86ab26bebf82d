"""Expectations on the default synthetic dataset (what `make data` writes and the flow trains on)."""

import numpy as np
import pandas as pd
import pytest

from fraudml.data import (
    COLUMNS,
    DEFAULT_ROWS,
    LABEL,
    SECONDS_IN_TWO_DAYS,
    generate_dataset,
    validate_dataset,
)

V = [f"V{i}" for i in range(1, 29)]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate_dataset()


def test_schema(df):
    """The creditcard.csv columns in order, 60,000 rows by default; numeric and finite (validate_dataset)."""
    assert list(df.columns) == COLUMNS
    assert len(df) == DEFAULT_ROWS
    validate_dataset(df)


def test_fraud_rate_holds_enough_test_frauds(df):
    """1 % frauds: at least 100 in the default 20 % test split (the public data has 0.17 %)."""
    assert set(df[LABEL].unique()) == {0, 1}
    assert df[LABEL].mean() == pytest.approx(0.01, abs=1e-4)
    assert 0.2 * df[LABEL].sum() >= 100


def test_time_covers_two_days_with_a_daily_cycle(df):
    """Time in [0, 172800) s and sorted, both days present, nights quieter than afternoons."""
    assert df["Time"].between(0, SECONDS_IN_TWO_DAYS - 1).all() and df["Time"].is_monotonic_increasing
    day = (df["Time"] // 86_400).value_counts()
    assert set(day.index) == {0, 1} and day.min() > 0.4 * len(df)
    hour = (df["Time"] % 86_400) // 3600
    assert (hour.between(2, 4)).sum() * 4 < (hour.between(13, 15)).sum()


def test_amount_is_heavy_tailed(df):
    """Non-negative cents, median in the tens, a tail into the thousands."""
    amount = df["Amount"]
    assert amount.min() >= 0 and (amount == 0).any() and np.allclose(amount, amount.round(2))
    assert 5 < amount.median() < 60
    assert amount.skew() > 5
    assert amount.quantile(0.999) > 20 * amount.median()


def test_v_columns_look_like_pca_components(df):
    """Centred, variance falling from V1 to V28, nearly uncorrelated among legitimate rows."""
    legit = df.loc[df[LABEL] == 0, V]
    std = legit.std()
    assert (legit.mean().abs() < 0.1 * std).all()
    assert std["V1"] > 1.5 and std["V28"] < 0.5 and std["V1"] > 4 * std["V28"]
    corr = np.corrcoef(legit.drop(columns=["V2", "V7"]).to_numpy().T)  # V2, V7 follow Amount
    off_diagonal = corr[~np.eye(len(corr), dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.05


def test_fraud_differs_in_a_few_components(df):
    """Some components separate fraud clearly (|effect| > 1 std), most do not (< 0.3 std)."""
    legit, fraud = df.loc[df[LABEL] == 0, V], df.loc[df[LABEL] == 1, V]
    effect = ((fraud.mean() - legit.mean()) / legit.std()).abs()
    assert (effect > 1.0).sum() >= 5
    assert (effect < 0.3).sum() >= 10
    assert effect["V14"] > 1.5


def test_frauds_overlap_with_legitimate_rows(df):
    """Not separable by the strongest component alone: some frauds look ordinary on V14."""
    legit_v14 = df.loc[df[LABEL] == 0, "V14"]
    fraud_v14 = df.loc[df[LABEL] == 1, "V14"]
    ordinary = fraud_v14.between(legit_v14.quantile(0.05), legit_v14.quantile(0.95))
    assert 0.1 < ordinary.mean() < 0.6
