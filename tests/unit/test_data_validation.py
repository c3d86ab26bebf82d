"""Unit tests of dataset loading and validation: every error names the problem and the fix."""

import numpy as np
import pandas as pd
import pytest

from fraudml.data import (
    COLUMNS,
    LABEL,
    DatasetError,
    generate_dataset,
    load_dataset,
    validate_dataset,
)


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return generate_dataset(2_000, 0.02, seed=1)


def _error(df, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        validate_dataset(df, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert "Fix:" in message, "errors say how to fix them"
    return message


def test_a_good_dataset_passes(good):
    """The generated dataset is valid."""
    validate_dataset(good)


def test_empty_frame(good):
    """No rows."""
    assert "no rows" in _error(good.iloc[:0])
    assert "no rows" in _error(pd.DataFrame())


def test_missing_column(good):
    """A missing column is named."""
    message = _error(good.drop(columns=["V3", "Amount"]))
    assert "missing column(s): V3, Amount" in message


def test_extra_column(good):
    """An extra column is named (with the index hint)."""
    df = good.copy()
    df.insert(0, "Unnamed: 0", range(len(df)))
    message = _error(df)
    assert "unexpected column(s): Unnamed: 0" in message and "index=False" in message


def test_duplicated_column(good):
    """Two columns of the same name."""
    df = pd.concat([good, good[["V1"]]], axis=1)
    assert "duplicated column(s): V1" in _error(df)


def test_non_numeric_value(good):
    """A text value is named with its column and row."""
    df = good.astype({"V5": "object"})
    df.loc[7, "V5"] = "n/a?"
    message = _error(df)
    assert "column V5 has non-numeric values" in message and "'n/a?'" in message and "row 7" in message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf(good, bad):
    """NaN and +/-Inf are counted per column."""
    df = good.copy()
    df.loc[[3, 4], "Amount"] = bad
    assert "NaN/Inf values in Amount (2)" in _error(df)


@pytest.mark.parametrize("label", [2, -1, 0.5])
def test_class_not_zero_one(good, label):
    """Class must be 0 or 1."""
    df = good.astype({LABEL: "float64"})
    df.loc[0, LABEL] = label
    message = _error(df)
    assert f"{LABEL} must be 0 (legitimate) or 1 (fraud) but has {label:g}" in message


def test_too_few_positives(good):
    """Too few frauds for the split and CV: says how many there are and how many are needed."""
    df = good.copy()
    df[LABEL] = 0
    df.loc[:4, LABEL] = 1
    message = _error(df)
    assert "only 5 fraud rows" in message and "at least 12" in message
    assert "at least 100" in _error(good, min_positives=100)


def test_no_positives_at_all(good):
    """A dataset without frauds cannot be trained on."""
    df = good.assign(**{LABEL: 0})
    assert "only 0 fraud rows" in _error(df)


def test_missing_file(tmp_path):
    """A path that does not exist."""
    with pytest.raises(DatasetError, match="does not exist. Fix: generate one"):
        load_dataset(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    """A zero-byte file."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="is empty.*Fix:"):
        load_dataset(path)


def test_header_only_file(tmp_path):
    """A header without rows loads, then fails validation as empty."""
    path = tmp_path / "header.csv"
    path.write_text(",".join(COLUMNS) + "\n")
    assert "no rows" in _error(load_dataset(path))


def test_non_numeric_value_in_a_csv(tmp_path, good):
    """A text cell in a CSV file is reported by validation."""
    path = tmp_path / "text.csv"
    df = good.astype({"V10": "object"})
    df.loc[11, "V10"] = "abc"
    df.to_csv(path, index=False)
    assert "column V10 has non-numeric values e.g. 'abc' in row 11" in _error(load_dataset(path))


def test_unsupported_url():
    """Only local paths and s3:// URLs."""
    with pytest.raises(DatasetError, match="unsupported dataset URL"):
        load_dataset("https://example.com/creditcard.csv")
    with pytest.raises(DatasetError, match="not an s3://bucket/key URL"):
        load_dataset("s3://only-a-bucket")


def test_s3_without_credentials_fails_fast(monkeypatch, tmp_path):
    """Without credentials the S3 read fails with the fix, before any network call."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(DatasetError, match="no S3 credentials.*Fix: set AWS_ACCESS_KEY_ID"):
        load_dataset("s3://data/creditcard.csv")
