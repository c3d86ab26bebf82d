"""What the model sees: the raw transaction, and SMOTE that measures distance on a fair scale.

The served model takes the raw row, ``Time, V1..V28, Amount``, so any KServe v2 client gets the
right answer without a transform. Trees need no scaling; only SMOTE's Euclidean neighbour search
does (``Time`` in seconds and heavy-tailed ``Amount`` next to PCA components), so the scaling lives
inside the resampling step (:func:`smote_on_robust_scale`). Interpolation commutes with a
per-column affine map, so this is exactly SMOTE with a scaled distance; original rows pass through
bit for bit, and the classifier, Treelite and Triton all see raw rows.
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
    scaler = RobustScaler()
    scaled[:, idx] = scaler.fit_transform(scaled[:, idx])
    smote = SMOTE(sampling_strategy=sampling_strategy, k_neighbors=k_neighbors, random_state=random_state)
    X_res, y_res = smote.fit_resample(scaled, y)
    new = X_res[len(X):]  # imblearn appends the synthetic rows after the originals
    new[:, idx] = scaler.inverse_transform(new[:, idx])
    return np.vstack([X, new.astype(X.dtype)]), y_res


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
    """``(train, test)``: ``by="time"`` (the flow's default: out of time, the way a fraud model meets the
    world) the newest ``test_size`` of the rows by ``Time`` are the test set; ``by="stratified"`` a random
    split with the same fraud rate in both. Rows keep their index, so a test row can be traced back."""
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
