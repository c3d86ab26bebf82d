"""What the model sees: the raw transaction, and SMOTE that measures distance on a fair scale.

The served model takes the raw row, ``Time, V1..V28, Amount`` in that order, so any KServe
v2 client gets the right answer without a feature transform. Trees do not need scaled
inputs; only SMOTE's neighbour search does: the ``V`` columns are PCA components on a
common scale, while ``Time`` (seconds) and ``Amount`` (heavy-tailed) are not, and SMOTE
picks neighbours by Euclidean distance. So the scaling lives *inside the resampling step*:
:func:`smote_on_robust_scale` scales ``Time`` and ``Amount`` by median and interquartile
range of the rows it is given, finds neighbours and interpolates there, and maps the new
rows back to raw units. The classifier, the exported Treelite model and Triton all see raw
rows. Interpolation commutes with a per-column affine map, so this is exactly SMOTE with a
scaled distance; the original rows are passed through untouched, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fraudml.data import FEATURES, LABEL, SMOTE_K_NEIGHBORS

# Time and Amount: the columns SMOTE's distance scales
_SCALED_IDX = [FEATURES.index("Time"), FEATURES.index("Amount")]


def smote_on_robust_scale(
    X: np.ndarray,
    y: np.ndarray,
    *,
    sampling_strategy: float | dict | Callable = "auto",
    k_neighbors: int = SMOTE_K_NEIGHBORS,
    random_state: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE (``imblearn``'s, with these arguments) on ``Time``/``Amount`` of raw rows ``X`` scaled
    by scikit-learn's ``RobustScaler`` (median, interquartile range); returns ``(X_res, y_res)``:
    the original rows first, unchanged, then the synthetic ones in raw units."""
    from imblearn.over_sampling import SMOTE  # lazy: keeps `import fraudml.*` light
    from sklearn.preprocessing import RobustScaler

    X = np.asarray(X)
    idx = [i for i in _SCALED_IDX if i < X.shape[1]]  # a narrower test model may lack Amount
    scaled = X.astype(np.float64, copy=True)
    scaler = RobustScaler().fit(scaled[:, idx])
    scaled[:, idx] = scaler.transform(scaled[:, idx])
    smote = SMOTE(sampling_strategy=sampling_strategy, k_neighbors=k_neighbors, random_state=random_state)
    X_res, y_res = smote.fit_resample(scaled, y)
    new = X_res[len(X):]  # imblearn appends the synthetic rows after the originals
    new[:, idx] = scaler.inverse_transform(new[:, idx])
    return np.vstack([X, new.astype(X.dtype)]), y_res


def make_sampler(sampling_strategy, *, k_neighbors: int = SMOTE_K_NEIGHBORS, random_state: int | None = None):
    """The pipeline step: imbalanced-learn's ``FunctionSampler`` around :func:`smote_on_robust_scale`.

    A sampler runs only in ``fit`` (imbalanced-learn skips samplers in ``predict_proba``), so
    cross-validation resamples the training folds only, and serving never sees it.
    """
    from imblearn import FunctionSampler

    return FunctionSampler(
        func=smote_on_robust_scale,
        kw_args={"sampling_strategy": sampling_strategy, "k_neighbors": k_neighbors, "random_state": random_state},
    )


def feature_matrix(df: pd.DataFrame) -> np.ndarray:
    """The model input: raw ``FEATURES`` columns by name, float32 ``(n, 30)`` (Triton's ``input__0``)."""
    missing = [c for c in FEATURES if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature column(s): {', '.join(missing)}; rows need Time, V1..V28, Amount")
    return df[FEATURES].to_numpy(dtype=np.float32, copy=True)


SPLITS = ("time", "stratified")


def split_train_test(
    df: pd.DataFrame, test_size: float = 0.2, seed: int = 7, by: str = "stratified"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off a test set.

    ``by="time"`` (the flow's default): out of time, the way a fraud model meets the world;
    the newest ``test_size`` of the rows by ``Time`` are the test set, the older ones train.
    ``by="stratified"``: a random split with the same fraud rate in both parts.
    Rows keep their original index, so a test row can be traced back to the dataset.
    ValueError for an unknown ``by`` or a part without frauds.
    """
    if by == "stratified":
        from sklearn.model_selection import train_test_split  # lazy: keeps `import fraudml.*` light

        train, test = train_test_split(df, test_size=test_size, stratify=df[LABEL], random_state=seed)
        return train.sort_index(), test.sort_index()
    if by != "time":
        raise ValueError(f"unknown split {by!r}; choose one of {', '.join(SPLITS)}")
    ordered = df.sort_values("Time", kind="stable")
    n_test = max(1, int(round(len(df) * test_size)))
    train, test = ordered.iloc[:-n_test], ordered.iloc[-n_test:]
    for part, rows in (("test", test), ("training", train)):
        if rows[LABEL].sum() == 0:
            raise ValueError(f"the {part} part of the out-of-time split holds no frauds; "
                             "use --split stratified or another --test-size")
    return train.sort_index(), test.sort_index()


def labels(df: pd.DataFrame) -> np.ndarray:
    """``Class`` as an int64 array."""
    return df[LABEL].to_numpy(dtype=np.int64)
