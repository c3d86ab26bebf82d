"""The dataset: the `creditcard.csv` schema, a synthetic generator, loading, validation, fingerprint.

The public credit-card fraud dataset (284,807 transactions over two days, 492 frauds) has
``Time`` (seconds since the first transaction), ``V1``..``V28`` (PCA components of undisclosed
features), ``Amount`` and ``Class`` (1 = fraud). It cannot be downloaded here, so
:func:`generate_dataset` makes a deterministic stand-in with the same schema and a realistic shape.

CLI::

    python -m fraudml.data generate --rows 60000 --out data/creditcard_synthetic.csv
    python -m fraudml.data validate data/creditcard_synthetic.csv
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES: list[str] = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]
LABEL = "Class"
COLUMNS: list[str] = [*FEATURES, LABEL]

DEFAULT_ROWS = 60_000
FULL_ROWS = 284_807  # the size of the public dataset
# 1 % frauds (the public data has 0.17 %): 600 frauds in the default 60,000 rows, so the
# default test split holds 120 and a comparison of families is not a coin toss. For the
# public data's shape: --rows 284807 --fraud-rate 0.0017.
DEFAULT_FRAUD_RATE = 0.01
DEFAULT_SEED = 7
SECONDS_IN_TWO_DAYS = 172_800
# SMOTE's default neighbourhood: every resampled training fold needs k + 1 frauds.
SMOTE_K_NEIGHBORS = 5

GENERATE_HINT = "python -m fraudml.data generate --out PATH"


class DatasetError(ValueError):
    """The dataset cannot be used for training. The message is one line: problem, then fix."""


# Standard deviations of V1..V28 fall off like the explained variance of PCA components
# (about 1.96 for V1 down to 0.33 for V28 in the public data).
_V_STD = 1.95 * (0.33 / 1.95) ** (np.arange(28) / 27)

# How the main fraud pattern shifts components, in units of each component's std. The
# components are the ones that separate fraud best in the public data.
_FRAUD_SHIFT = pd.Series({
    "V14": -4.0, "V12": -3.2, "V10": -2.8, "V17": -3.4, "V4": 2.4, "V11": 2.4,
    "V3": -2.2, "V16": -1.8, "V7": -1.6, "V2": 1.2, "V1": -1.0, "V9": -1.2,
}).reindex([f"V{i}" for i in range(1, 29)], fill_value=0.0).to_numpy()


def _unit_t(rng: np.random.Generator, df: float, size) -> np.ndarray:
    """Student-t noise scaled to unit variance: heavier tails than a Gaussian, like the V columns."""
    return rng.standard_t(df, size=size) / math.sqrt(df / (df - 2))


def _time_of_day(rng: np.random.Generator, n: int, night_level: float) -> np.ndarray:
    """Seconds into the day, busy in the afternoon and quiet at night (``night_level`` sets how quiet)."""
    hours = np.arange(86_400) / 3600.0  # one point per second of the day
    density = night_level + np.exp(-(((hours - 14.0) / 5.0) ** 2))
    cdf = np.cumsum(density)
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n)).astype(np.float64)


def generate_dataset(
    rows: int = DEFAULT_ROWS, fraud_rate: float = DEFAULT_FRAUD_RATE, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """A synthetic dataset with the `creditcard.csv` schema, the same for the same arguments, with exactly
    ``round(rows * fraud_rate)`` frauds, sorted by ``Time`` (two days, a daily cycle). Legitimate ``V``s are
    heavy-tailed PCA-like components; frauds shift a dozen by a severity that varies per row (some look
    ordinary, so AP stays below 1), a quarter with large ``|V5|``/``|V6|`` (needs non-linear splits).
    ``Amount``: log-normal with a Pareto tail (frauds: many tiny "card test" amounts)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if not 0.0 <= fraud_rate < 0.5:
        raise ValueError(f"fraud_rate must be in [0, 0.5), got {fraud_rate}")
    rng = np.random.default_rng(seed)
    n_fraud = int(round(rows * fraud_rate))
    n_legit = rows - n_fraud

    # legitimate transactions
    v_legit = _unit_t(rng, 5.0, (n_legit, 28))
    amount_legit = np.exp(rng.normal(3.0, 1.25, n_legit))
    tail = rng.random(n_legit) < 0.03
    amount_legit[tail] *= 1.0 + rng.pareto(1.6, tail.sum()) * 4.0
    amount_legit[rng.random(n_legit) < 0.006] = 0.0  # zero-amount verifications
    time_legit = _time_of_day(rng, n_legit, night_level=0.08)

    # frauds: a main pattern with varying severity, a non-linear sub-pattern, camouflaged ones
    severity = rng.gamma(shape=2.2, scale=0.42, size=n_fraud)
    camouflaged = rng.random(n_fraud) < 0.18
    severity[camouflaged] = rng.uniform(0.0, 0.25, camouflaged.sum())
    v_fraud = _unit_t(rng, 4.0, (n_fraud, 28)) * 1.35 + severity[:, None] * _FRAUD_SHIFT
    magnitude = rng.random(n_fraud) < 0.25
    signs = rng.choice([-1.0, 1.0], size=(magnitude.sum(), 2))
    v_fraud[np.ix_(magnitude, [4, 5])] = signs * rng.uniform(2.0, 4.5, (magnitude.sum(), 2))
    card_test = rng.random(n_fraud) < 0.45
    amount_fraud = np.where(
        card_test, rng.uniform(0.0, 2.0, n_fraud), np.exp(rng.normal(4.2, 1.4, n_fraud))
    )
    amount_fraud = np.minimum(amount_fraud, 2_125.87)
    time_fraud = _time_of_day(rng, n_fraud, night_level=0.45)

    v = np.vstack([v_legit, v_fraud]) * _V_STD
    amount = np.round(np.minimum(np.concatenate([amount_legit, amount_fraud]), 25_691.16), 2)
    # In the public data Amount correlates with a few components (V2 negatively, V7 positively).
    log_amount = (np.log1p(amount) - 3.0) / 1.25
    v[:, 1] -= 0.35 * _V_STD[1] * log_amount
    v[:, 6] += 0.25 * _V_STD[6] * log_amount
    day = rng.integers(0, 2, rows) * 86_400.0
    time = np.minimum(day + np.concatenate([time_legit, time_fraud]), SECONDS_IN_TWO_DAYS - 1)
    label = np.concatenate([np.zeros(n_legit, np.int64), np.ones(n_fraud, np.int64)])

    order = np.lexsort((rng.random(rows), time))  # by Time, ties in random order
    frame = pd.DataFrame(np.round(v[order], 6), columns=FEATURES[1:-1])
    frame.insert(0, "Time", time[order])
    frame["Amount"] = amount[order]
    frame[LABEL] = label[order]
    return frame


def write_dataset(df: pd.DataFrame, out: str | Path) -> Path:
    """Write ``df`` as CSV (header ``COLUMNS``) through a temporary file, so ``out`` is never half written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, out)
    return out


def _read_csv(source, *, compression="infer", name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(source, float_precision="round_trip", compression=compression)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{name} is empty (no header, no rows). Fix: regenerate it with `{GENERATE_HINT}` "
                           "or pass the path of a non-empty creditcard.csv") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{name} is not a readable CSV ({first_line}). Fix: pass a comma-separated file "
                           f"with the header {','.join(COLUMNS[:3])},...,Amount,Class") from exc


def load_dataset(source: str | Path) -> pd.DataFrame:
    """A dataset from a local CSV file or an ``s3://bucket/key`` URL, as read (floats round-trip exactly, so
    the fingerprint survives a write and a read); DatasetError when it cannot be read."""
    source = str(source)
    if source.startswith("s3://"):
        from fraudml.storage import S3Store, StorageError

        bucket, _, key = source[len("s3://") :].partition("/")
        if not bucket or not key:
            raise DatasetError(f"{source!r} is not an s3://bucket/key URL. Fix: name the object, "
                               "e.g. s3://data/creditcard.csv")
        try:  # the model repository's client: endpoint and credentials from AWS_*, short time-outs
            blob = S3Store(f"s3://{bucket}").get(key)
        except StorageError as exc:
            raise DatasetError(f"cannot read {source}: {exc}. Fix: check the AWS_* variables and that the S3 server "
                               "is up (`make s3`)") from exc
        if blob is None:
            raise DatasetError(f"S3 refused to read {source} (NoSuchKey). Fix: check the bucket and key exist")
        return _read_csv(io.BytesIO(blob.data), compression="gzip" if key.endswith(".gz") else None, name=source)
    if "://" in source:
        raise DatasetError(f"unsupported dataset URL {source!r}. Fix: pass a local CSV path or an s3://bucket/key URL")
    path = Path(source).expanduser()
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist. Fix: generate one with `{GENERATE_HINT}` "
                           "or pass the path of creditcard.csv")
    return _read_csv(path, name=str(path))


def min_positives_for(test_size: float = 0.2, cv_folds: int = 3, k_neighbors: int = SMOTE_K_NEIGHBORS) -> int:
    """The fewest frauds for which a split and a ``cv_folds``-fold search with SMOTE work: one in the test set,
    and ``k_neighbors + 1`` in every CV training fold (the split taking as many as rounding allows)."""
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if cv_folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
    for positives in itertools.count(2):
        test = math.ceil(positives * test_size)
        train = positives - test
        smallest_fold = train - math.ceil(train / cv_folds)
        if math.floor(positives * test_size) >= 1 and smallest_fold >= k_neighbors + 1:
            return positives


def validate_dataset(df: pd.DataFrame, min_positives: int | None = None) -> None:
    """Raise DatasetError at the first problem that keeps ``df`` from being trained on; too few frauds
    is fewer than ``min_positives`` (default: what the flow's default split and folds need)."""
    if min_positives is None:
        min_positives = min_positives_for()
    if len(df.columns) == 0 or len(df) == 0:
        raise DatasetError(f"the dataset has no rows ({len(df.columns)} columns, 0 rows). Fix: regenerate it with "
                           f"`{GENERATE_HINT}` or pass a non-empty creditcard.csv")
    columns = [str(c) for c in df.columns]
    if missing := [c for c in COLUMNS if c not in columns]:
        shown = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
        raise DatasetError(f"missing column(s): {shown}. Fix: the file needs exactly the creditcard.csv header "
                           "Time,V1..V28,Amount,Class (check the header line and the separator)")
    if extra := [c for c in columns if c not in COLUMNS]:
        raise DatasetError(f"unexpected column(s): {', '.join(extra[:6])}. Fix: drop them so that only "
                           "Time,V1..V28,Amount,Class remain (an index column? write the CSV with index=False)")
    if dupes := sorted({c for c in columns if columns.count(c) > 1}):
        raise DatasetError(f"duplicated column(s): {', '.join(dupes)}. Fix: keep one column of each name")
    for column in COLUMNS:
        series = df[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            coerced = pd.to_numeric(series.astype("object"), errors="coerce")
            bad = series[coerced.isna() & series.notna()]
            where = f" e.g. {bad.iloc[0]!r} in row {bad.index[0]}" if len(bad) else ""
            raise DatasetError(f"column {column} has non-numeric values{where}. Fix: clean or drop those rows; "
                               "every column must be a number")
    counts = (~np.isfinite(df[COLUMNS].to_numpy(dtype=np.float64))).sum(axis=0)
    if counts.any():
        bad = [f"{c} ({n})" for c, n in zip(COLUMNS, counts, strict=True) if n]
        raise DatasetError(f"NaN/Inf values in {', '.join(bad[:6])}. Fix: drop or impute those rows before training "
                           "(e.g. df.dropna())")
    odd = np.setdiff1d(df[LABEL].to_numpy(dtype=np.float64), [0, 1])  # sorted, unique
    if odd.size:
        shown = ", ".join(f"{x:g}" for x in odd[:5])
        raise DatasetError(f"{LABEL} must be 0 (legitimate) or 1 (fraud) but has {shown}. Fix: map the labels to 0/1")
    positives = int(df[LABEL].sum())
    if positives < min_positives:
        raise DatasetError(f"only {positives} fraud rows (Class=1) among {len(df)}; the stratified split and "
                           f"cross-validation with SMOTE need at least {min_positives}. Fix: use more rows "
                           "(--rows) or a higher --fraud-rate, fewer --cv-folds, or a dataset with more frauds")


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """``"sha256:<hex>"`` over the canonical content: the ``COLUMNS`` in order, row order kept,
    every value as little-endian float64 (so dtype, column order and CSV formatting do not
    change it; -0.0 counts as 0.0)."""
    columns = [c for c in COLUMNS if c in df.columns] + sorted(str(c) for c in df.columns if c not in COLUMNS)
    digest = hashlib.sha256()
    digest.update(json.dumps({"columns": columns, "rows": len(df)}).encode())
    digest.update(np.ascontiguousarray(df[columns].to_numpy(dtype="<f8").T + 0.0).tobytes())  # column by column
    return f"sha256:{digest.hexdigest()}"


def describe(df: pd.DataFrame) -> dict:
    """Class counts and rate, for summaries and cards."""
    positives = int(df[LABEL].sum())
    return {"rows": len(df), "legitimate": len(df) - positives, "fraud": positives,
            "fraud_rate": positives / len(df) if len(df) else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudml.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a synthetic creditcard.csv-schema dataset")
    gen.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows (default {DEFAULT_ROWS:,}; {FULL_ROWS} = full size)")
    gen.add_argument("--fraud-rate", type=float, default=DEFAULT_FRAUD_RATE, help="fraction of frauds (default %(default)s)")
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    gen.add_argument("--out", required=True, help="CSV path to write")
    val = sub.add_parser("validate", help="check that a dataset (path or s3:// URL) can be trained on")
    val.add_argument("source", help="CSV path or s3://bucket/key")
    val.add_argument("--min-positives", type=int, default=None, help="fewest frauds required (default: what the default split and CV need)")
    args = parser.parse_args(argv)

    try:
        if args.command == "generate":
            df = generate_dataset(args.rows, args.fraud_rate, args.seed)
            done = f"wrote {write_dataset(df, args.out)}"
        else:
            df = load_dataset(args.source)
            validate_dataset(df, min_positives=args.min_positives)
            done = f"ok {args.source}"
        d = describe(df)
        print(f"{done}: {d['rows']:,} rows, {d['fraud']:,} frauds ({d['fraud_rate']:.3%}), "
              f"Time {df['Time'].min():.0f}-{df['Time'].max():.0f} s, "
              f"Amount median {df['Amount'].median():.2f} max {df['Amount'].max():.2f}; {dataset_fingerprint(df)}")
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
