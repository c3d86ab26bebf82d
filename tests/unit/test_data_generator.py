"""Unit tests of the synthetic generator, CSV round trip, fingerprint and the data CLI."""

import numpy as np
import pandas as pd
import pytest

from fraudml.data import (
    COLUMNS,
    FEATURES,
    LABEL,
    dataset_fingerprint,
    generate_dataset,
    load_dataset,
    main,
    min_positives_for,
)


def test_a_seed_gives_one_frame_and_another_seed_another():
    a = generate_dataset(5_000, 0.01, seed=11)
    pd.testing.assert_frame_equal(a, generate_dataset(5_000, 0.01, seed=11))
    assert dataset_fingerprint(a) != dataset_fingerprint(generate_dataset(5_000, 0.01, seed=12))


@pytest.mark.parametrize(("rows", "rate"), [(1, 0.01), (10, 0.01), (4_321, 0.01), (60_000, 0.002), (10_000, 0.0017),
                                           (3_000, 0.05), (500, 0.0)])
def test_shape_dtypes_and_exact_positive_count(rows, rate):
    df = generate_dataset(rows, rate, seed=5)
    assert df.shape == (rows, len(COLUMNS))
    assert list(df.columns) == COLUMNS
    assert all(df[c].dtype == np.float64 for c in FEATURES)
    assert df[LABEL].dtype == np.int64
    assert int(df[LABEL].sum()) == round(rows * rate)
    assert set(df[LABEL].unique()) <= {0, 1}


@pytest.mark.parametrize(("rows", "rate"), [(0, 0.01), (10, -0.1), (10, 0.5)])
def test_bad_arguments_raise(rows, rate):
    with pytest.raises(ValueError):
        generate_dataset(rows, rate)


def test_fingerprint_ignores_column_order_and_dtype_but_not_values():
    """The fingerprint hashes content: column order and int/float do not matter, a value does."""
    df = generate_dataset(1_000, 0.01, seed=2)
    fp = dataset_fingerprint(df)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert dataset_fingerprint(df[list(reversed(COLUMNS))]) == fp
    assert dataset_fingerprint(df.astype({LABEL: "float64"})) == fp
    changed = df.copy()
    changed.loc[17, "V3"] += 1e-6
    assert dataset_fingerprint(changed) != fp
    assert dataset_fingerprint(df.iloc[:-1]) != fp


def test_min_positives_for_split_and_cv():
    """Enough frauds for one in the test set and k+1 in every CV training fold."""
    assert min_positives_for(0.2, 3) == 12
    assert min_positives_for(0.5, 3) > min_positives_for(0.2, 3)
    with pytest.raises(ValueError):
        min_positives_for(0.0, 3)
    with pytest.raises(ValueError):
        min_positives_for(0.2, 1)


def test_cli_generate_then_validate(tmp_path, capsys):
    """`generate` writes a CSV and a summary, `validate` accepts it, it reads back with the same fingerprint."""
    out = tmp_path / "sub" / "cc.csv"
    assert main(["generate", "--rows", "3000", "--fraud-rate", "0.01", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3,000 rows" in printed and "30 frauds" in printed and "sha256:" in printed
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    back, df = load_dataset(out), generate_dataset(3000, 0.01, 1)
    pd.testing.assert_frame_equal(back, df)
    assert dataset_fingerprint(back) == dataset_fingerprint(df)


def test_cli_validate_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("Time,V1\n0,1\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: missing column(s)") and "\n" not in err
