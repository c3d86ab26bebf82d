"""Feature engineering: robust scaling of ``Time`` and ``Amount``, and the stratified split.

The ``V`` columns are PCA components already on a common scale; ``Time`` and ``Amount`` are
not (``Amount`` is heavy-tailed), and SMOTE interpolates between neighbours by Euclidean
distance, so those two are centred on the median and divided by the interquartile range.
The transform is fitted on the training rows only and travels with every model version as a
JSON-able dict (``lineage.json`` -> ``"feature_transform"``): Triton's ``input__0`` is the
*transformed* 30 features, so a client applies ``FeatureTransform.from_dict(d).transform(rows)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraudml.data import FEATURES, LABEL

SCALED_COLUMNS: tuple[str, ...] = ("Time", "Amount")
TRANSFORM_KIND = "robust_scale"


@dataclass
class FeatureTransform:
    """``x -> (x - center) / scale`` for ``Time`` and ``Amount``; the ``V`` columns pass through.

    ``center`` is the median and ``scale`` the interquartile range of the training rows
    (1.0 when the range is 0, so a constant column does not divide by zero).
    """

    center: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return all(c in self.center and c in self.scale for c in SCALED_COLUMNS)

    def fit(self, df: pd.DataFrame) -> FeatureTransform:
        """Learn median and IQR of ``Time`` and ``Amount`` from ``df`` (the training rows)."""
        for column in SCALED_COLUMNS:
            values = df[column].to_numpy(dtype=np.float64)
            q1, median, q3 = np.percentile(values, [25.0, 50.0, 75.0])
            iqr = float(q3 - q1)
            self.center[column] = float(median)
            self.scale[column] = iqr if iqr > 0 else 1.0
        return self

    def transform(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Return the model input: float32 ``(n, 30)`` in ``FEATURES`` order.

        Args:
            data: a DataFrame with (at least) the ``FEATURES`` columns, by name; or raw
                values, shape ``(n, 30)`` or ``(30,)``, already in ``FEATURES`` order.
        """
        if not self.fitted:
            raise RuntimeError("FeatureTransform is not fitted: call fit(train_df) or from_dict(d) first")
        if isinstance(data, pd.DataFrame):
            missing = [c for c in FEATURES if c not in data.columns]
            if missing:
                raise ValueError(f"missing feature column(s): {', '.join(missing)}")
            values = data[FEATURES].to_numpy(dtype=np.float64, copy=True)
        else:
            values = np.asarray(data, dtype=np.float64)
            if values.ndim == 1:
                values = values[None, :]
            if values.ndim != 2 or values.shape[1] != len(FEATURES):
                raise ValueError(
                    f"expected raw rows of shape (n, {len(FEATURES)}) in FEATURES order, got {np.shape(data)}"
                )
            values = values.copy()
        for column in SCALED_COLUMNS:
            j = FEATURES.index(column)
            values[:, j] = (values[:, j] - self.center[column]) / self.scale[column]
        return values.astype(np.float32)

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)

    def to_dict(self) -> dict:
        """A JSON-able description that :meth:`from_dict` (or any client) can apply."""
        if not self.fitted:
            raise RuntimeError("FeatureTransform is not fitted")
        return {
            "kind": TRANSFORM_KIND,
            "version": 1,
            "features": list(FEATURES),
            "formula": "x[c] = (x[c] - center[c]) / scale[c] for c in columns; other features unchanged",
            "columns": {c: {"center": self.center[c], "scale": self.scale[c]} for c in SCALED_COLUMNS},
            "dtype": "float32",
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureTransform:
        if d.get("kind") != TRANSFORM_KIND:
            raise ValueError(f"not a {TRANSFORM_KIND} transform: kind={d.get('kind')!r}")
        if list(d.get("features", FEATURES)) != FEATURES:
            raise ValueError("the transform was fitted for a different feature order")
        columns = d["columns"]
        return cls(
            center={c: float(columns[c]["center"]) for c in SCALED_COLUMNS},
            scale={c: float(columns[c]["scale"]) for c in SCALED_COLUMNS},
        )


def split_train_test(
    df: pd.DataFrame, test_size: float = 0.2, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified split by ``Class``: the fraud rate is the same in both parts.

    Rows keep their original index, so a test row can be traced back to the dataset.
    """
    from sklearn.model_selection import train_test_split  # lazy: keeps `import fraudml.*` light

    train, test = train_test_split(df, test_size=test_size, stratify=df[LABEL], random_state=seed)
    return train.sort_index(), test.sort_index()


def labels(df: pd.DataFrame) -> np.ndarray:
    """``Class`` as an int64 array."""
    return df[LABEL].to_numpy(dtype=np.int64)
