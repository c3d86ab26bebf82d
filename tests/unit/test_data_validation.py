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
    """The error validating ``df`` (a frame, or a path or URL to load it from) raises."""
    with pytest.raises(DatasetError) as info:
        validate_dataset(df if isinstance(df, pd.DataFrame) else load_dataset(df), **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert "Fix:" in message, "errors say how to fix them"
    return message


def test_a_good_dataset_passes_unless_the_fraud_minimum_is_raised(good):
    validate_dataset(good)
    assert "at least 100" in _error(good, min_positives=100)


def _with(column: str, rows, value):
    """A frame change: ``value`` into ``column`` at ``rows``."""
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: "object" if isinstance(value, str) else "float64"})
        df.loc[rows, column] = value
        return df
    return change


# name: (good frame -> bad frame, what the error must say)
BAD_FRAMES = {
    "no rows": (lambda g: g.iloc[:0], ["no rows"]),
    "no columns either": (lambda g: pd.DataFrame(), ["no rows"]),
    "missing columns": (lambda g: g.drop(columns=["V3", "Amount"]), ["missing column(s): V3, Amount"]),
    "index written as a column": (lambda g: g.reset_index(names="Unnamed: 0"),
                                  ["unexpected column(s): Unnamed: 0", "index=False"]),
    "duplicated column": (lambda g: pd.concat([g, g[["V1"]]], axis=1), ["duplicated column(s): V1"]),
    "text value": (_with("V5", 7, "n/a?"), ["column V5 has non-numeric values", "'n/a?'", "row 7"]),
    **{f"{bad} in Amount": (_with("Amount", [3, 4], bad), ["NaN/Inf values in Amount (2)"])
       for bad in (np.nan, np.inf, -np.inf)},
    **{f"Class {label}": (_with(LABEL, 0, label), [f"{LABEL} must be 0 (legitimate) or 1 (fraud) but has {label:g}"])
       for label in (2, -1, 0.5)},
    "5 frauds": (lambda g: g.assign(**{LABEL: (g.index < 5).astype(int)}), ["only 5 fraud rows", "at least 12"]),
    "no frauds": (lambda g: g.assign(**{LABEL: 0}), ["only 0 fraud rows"]),
}


@pytest.mark.parametrize("name", BAD_FRAMES)
def test_bad_frame_is_named_in_the_error(good, name):
    change, fragments = BAD_FRAMES[name]
    message = _error(change(good))
    assert all(f in message for f in fragments), (fragments, message)


# name: (a URL, or the CSV file's text as a function of the good frame, None for no file; error words)
BAD_SOURCES = {
    "missing file": (None, ["does not exist. Fix: generate one"]),
    "header only": (lambda g: ",".join(COLUMNS) + "\n", ["no rows"]),
    "text cell in a CSV": (lambda g: _with("V10", 11, "abc")(g).to_csv(index=False),
                           ["column V10 has non-numeric values e.g. 'abc' in row 11"]),
    "https URL": ("https://example.com/creditcard.csv", ["unsupported dataset URL"]),
    "s3 URL without a key": ("s3://only-a-bucket", ["not an s3://bucket/key URL"]),
}


@pytest.mark.parametrize("name", BAD_SOURCES)
def test_bad_source_is_named_in_the_error(tmp_path, good, name):
    source, fragments = BAD_SOURCES[name]
    if not isinstance(source, str):
        path = tmp_path / "cc.csv"
        if source is not None:
            path.write_text(source(good))
        source = path
    message = _error(source)
    assert all(f in message for f in fragments), (fragments, message)


def test_s3_without_credentials_fails_fast(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never contacted
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(DatasetError, match="no S3 credentials: set AWS_ACCESS_KEY_ID.*Fix:"):
        load_dataset("s3://data/creditcard.csv")
