"""Training input: every malformed dataset gets its one-line error before any training starts.

Each case is written as a CSV file and read the way the flow reads it
(``fraudml.data.load_dataset`` then ``validate_dataset``); a few also go through the real
flow (``python train/flow.py run --data BAD.csv``), which must fail in ``preprocess`` with
the same message, without a ``train`` task ever starting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.reliability_common import Category, expect, short

ROOT = Path(__file__).resolve().parents[1]


def _base(rows: int = 3000) -> pd.DataFrame:
    from fraudml.data import generate_dataset

    return generate_dataset(rows=rows, fraud_rate=0.02, seed=5)


def _set(df: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    df = df.copy()
    if not isinstance(value, float | int):
        df[column] = df[column].astype(object)
    elif isinstance(value, float):
        df[column] = df[column].astype(float)
    df.loc[df.index[row], column] = value
    return df


# name -> (file content writer, words the DatasetError must contain)
def dataset_cases() -> dict[str, tuple[Callable[[Path], None], list[str]]]:
    def frame(make: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
        return lambda path: make(_base()).to_csv(path, index=False)

    def raw(content: bytes) -> Callable[[Path], None]:
        return lambda path: path.write_bytes(content)

    def few_frauds(df: pd.DataFrame) -> pd.DataFrame:
        frauds = df.index[df["Class"] == 1]
        return df.drop(frauds[2:])

    return {
        "missing column V7": (frame(lambda d: d.drop(columns=["V7"])), ["missing column", "V7"]),
        "missing label column Class": (frame(lambda d: d.drop(columns=["Class"])), ["missing column", "Class"]),
        "extra column": (frame(lambda d: d.assign(merchant_id=1)), ["unexpected column", "merchant_id"]),
        "index column written by pandas": (lambda p: _base().to_csv(p, index=True), ["unexpected column"]),
        "non-numeric value in Amount": (frame(lambda d: _set(d, "Amount", 17, "12,50 EUR")), ["non-numeric", "Amount"]),
        "non-numeric label": (frame(lambda d: _set(d, "Class", 3, "fraud")), ["non-numeric", "Class"]),
        "NaN in V3": (frame(lambda d: _set(d, "V3", 40, np.nan)), ["NaN/Inf", "V3"]),
        "Inf in Amount": (frame(lambda d: _set(d, "Amount", 41, np.inf)), ["NaN/Inf", "Amount"]),
        "empty file (0 bytes)": (raw(b""), ["empty"]),
        "header only, no rows": (raw((",".join(_base(10).columns) + "\n").encode()), ["no rows"]),
        "Class value 2": (frame(lambda d: _set(d, "Class", 5, 2)), ["Class", "0", "1", "2"]),
        "Class value -1": (frame(lambda d: _set(d, "Class", 5, -1)), ["Class", "-1"]),
        "Class value 0.5": (frame(lambda d: _set(d, "Class", 5, 0.5)), ["Class", "0.5"]),
        "too few frauds (2)": (frame(few_frauds), ["only 2 fraud", "at least"]),
        "no frauds at all": (frame(lambda d: d[d["Class"] == 0]), ["only 0 fraud"]),
        "semicolon-separated file": (lambda p: _base().to_csv(p, index=False, sep=";"), ["missing column"]),
        "not a CSV (binary)": (raw(np.random.default_rng(1).bytes(2048)), ["not a readable CSV|missing column|empty"]),
        "duplicated header (V1 twice)": (lambda p: p.write_text(_base(200).rename(columns={"V2": "V1"}).to_csv(index=False)),
                                         ["V2|V1"]),
    }


def check_error(message: str, words: list[str]) -> list[str]:
    low = message.lower()
    return [w for w in words if not any(alt.lower() in low for alt in w.split("|"))]


def validate_cases(cat: Category, work: Path) -> dict[str, Path]:
    """Every case through load_dataset + validate_dataset; returns the files written."""
    from fraudml.data import DatasetError, load_dataset, validate_dataset

    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, (write, words) in dataset_cases().items():
        with cat.case(f"validate_dataset: {name}") as note:
            path = work / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".csv")
            write(path)
            files[name] = path
            try:
                validate_dataset(load_dataset(str(path)))
                raise AssertionError("the dataset was accepted")
            except DatasetError as exc:
                message = str(exc)
            expect("\n" not in message.strip(), f"the error is not one line: {message!r}")
            expect("Fix:" in message, f"the error does not say how to fix it: {message}")
            missing = check_error(message, words)
            expect(not missing, f"the error does not name {missing}: {message}")
            note.detail = short(message, 200)
    return files


def flow_cases(cat: Category, files: dict[str, Path], work: Path, names: list[str], timeout: float = 300) -> None:
    """The real flow on bad data: it must fail in ``preprocess`` with the dataset's error,
    and no ``train`` task may start."""
    words = {name: w for name, (_, w) in dataset_cases().items()}
    for name in names:
        with cat.case(f"flow run --data <{name}>") as note:
            mf = work / "metaflow"
            env = {
                **os.environ,
                "USERNAME": "reliability",
                "METAFLOW_DEFAULT_DATASTORE": "local",
                "METAFLOW_DEFAULT_METADATA": "local",
                "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(mf),
                "METAFLOW_S3_TRANSIENT_RETRY_COUNT": "0",
            }
            cmd = [sys.executable, "train/flow.py", "--no-pylint", "run", "--data", str(files[name]),
                   "--models", "random_forest", "--cv-folds", "2", "--n-iter", "1"]
            started = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            out = proc.stdout + proc.stderr
            expect(proc.returncode != 0, "the flow succeeded on a malformed dataset")
            started_steps = sorted(set(re.findall(r"\[\d+/(\w+)/\d+[^\]]*\] Task is starting", out)))
            expect("train" not in started_steps, f"a train task started: steps {started_steps}")
            expect("preprocess" in started_steps, f"the flow failed before preprocess ({started_steps}): {out[-800:]}")
            expect("DatasetError" in out, f"no DatasetError in the flow's output: {out[-800:]}")
            missing = check_error(out, words[name])
            expect(not missing, f"the flow's output does not name {missing}")
            line = next((ln for ln in out.splitlines() if re.search(r"DatasetError\b.*:", ln) and "raise" not in ln), "")
            line = line.split("] ", 1)[-1]
            note.detail = (f"failed in preprocess after {time.monotonic() - started:.0f} s, steps run: "
                           f"{', '.join(started_steps)}; {short(line, 160)}")
