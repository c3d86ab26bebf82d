"""Malformed training datasets get a one-line ``DatasetError`` naming the problem and the fix
before any training starts: read the way the flow reads them (``load_dataset`` then
``validate_dataset``), and a few through the real flow (Metaflow Runner), which must fail in
``preprocess`` without a ``train`` task ever starting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudml.data import DatasetError, generate_dataset, load_dataset, validate_dataset
from tests.reliability.wire import unnamed

FLOW = str(Path(__file__).resolve().parents[2] / "train" / "flow.py")


def base(rows: int = 3000) -> pd.DataFrame:
    return generate_dataset(rows=rows, fraud_rate=0.02, seed=5)


def frame(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda path: change(base()).to_csv(path, index=False)


def with_value(column: str, row: int, value) -> Callable[[Path], None]:
    """The dataset with ``value`` at ``row`` of ``column`` (as objects, any value fits; the CSV holds its text)."""
    return frame(lambda d: d.assign(**{column: d[column].astype(object).mask(d.index == d.index[row], value)}))


# name: (writes the file, words the DatasetError must name: each "a|b" for either)
DATASETS = {
    "missing column V7": (frame(lambda d: d.drop(columns=["V7"])), ["missing column", "V7"]),
    "missing label column Class": (frame(lambda d: d.drop(columns=["Class"])), ["missing column", "Class"]),
    "extra column": (frame(lambda d: d.assign(merchant_id=1)), ["unexpected column", "merchant_id"]),
    "index column written by pandas": (lambda p: base().to_csv(p, index=True), ["unexpected column"]),
    "non-numeric value in Amount": (with_value("Amount", 17, "12,50 EUR"), ["non-numeric", "Amount"]),
    "non-numeric label": (with_value("Class", 3, "fraud"), ["non-numeric", "Class"]),
    "NaN in V3": (with_value("V3", 40, np.nan), ["NaN/Inf", "V3"]),
    "empty file (0 bytes)": (lambda p: p.write_bytes(b""), ["empty"]),
    "Class value 2": (with_value("Class", 5, 2), ["Class", "0", "1", "2"]),
    "too few frauds (2)": (frame(lambda d: d.drop(d.index[d["Class"] == 1][2:])), ["only 2 fraud", "at least"]),
    "semicolon-separated file": (lambda p: base().to_csv(p, index=False, sep=";"), ["missing column"]),
    "not a CSV (binary)": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(2048)),
                           ["not a readable CSV|missing column|empty"]),
    "duplicated header (V1 twice)": (lambda p: base(200).rename(columns={"V2": "V1"}).to_csv(p, index=False),
                                     ["V2|V1"]),
}


def write(name: str, folder: Path) -> Path:
    path = folder / "creditcard.csv"
    DATASETS[name][0](path)
    return path


@pytest.mark.quick
@pytest.mark.parametrize("name", DATASETS)
def test_malformed_dataset_gets_a_one_line_error_naming_the_fix(tmp_path, name):
    with pytest.raises(DatasetError) as info:
        validate_dataset(load_dataset(str(write(name, tmp_path))))
    message = str(info.value)
    assert "\n" not in message.strip() and "Fix:" in message, message
    assert not unnamed(message, DATASETS[name][1]), message


@pytest.mark.parametrize("name", [pytest.param("missing column V7", marks=pytest.mark.quick), "NaN in V3"])
def test_the_flow_stops_in_preprocess_on_a_malformed_dataset(metaflow_local, tmp_path, name):
    from metaflow import Runner

    root, env = metaflow_local
    with Runner(FLOW, show_output=False, cwd=str(root), env=env) as runner:
        result = runner.run(data=str(write(name, tmp_path)), models="random_forest", cv_folds=2, n_iter=1)
        out = result.stdout + result.stderr
        assert result.status == "failed", "the flow succeeded on a malformed dataset"
        steps = {step.id for step in result.run}
    assert "preprocess" in steps and "train" not in steps, f"steps that started: {sorted(steps)}"
    assert "DatasetError" in out and not unnamed(out, DATASETS[name][1]), out[-800:]
