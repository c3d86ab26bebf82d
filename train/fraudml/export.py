"""Export a trained pipeline for Triton's FIL backend, and check that the export predicts alike.

Only the classifier is exported (imbalanced-learn skips samplers outside ``fit``), so the served
model is exactly what ``predict_proba`` uses. Positive-class probability is the last column of
``gtil.predict``'s output (``(n, 1, 2)`` for scikit-learn forests, ``(n, 1, 1)`` for boosted models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import treelite
from treelite import gtil

from fraudml.models import SPECS
from fraudml.tritonconfig import MODEL_FILENAMES

DEFAULT_ATOL = 1e-5
# classifier class name -> family, from the families' specs
_FAMILIES = {path.split(":")[1]: family for family, (path, _, _) in SPECS.items()}


class ExportMismatch(RuntimeError):
    """The exported model does not predict like the trained pipeline."""


def sklearn_forest_to_treelite(clf) -> treelite.Model:
    """A fitted scikit-learn RandomForest/ExtraTrees classifier as a Treelite model, built node by node
    because ``treelite.sklearn.import_model`` (Treelite 4.4) sends NaN left at every split, while
    scikit-learn follows ``tree_.missing_go_to_left`` (without missing values in training: the child
    that saw more samples). With scikit-learn's default branches, FIL (NaN = missing = default branch)
    answers NaN rows exactly as ``predict_proba``; leaves hold class fractions, trees are averaged."""
    from treelite import model_builder as mb

    n_classes, trees = int(clf.n_classes_), [e.tree_ for e in clf.estimators_]
    builder = mb.ModelBuilder(
        threshold_type="float64", leaf_output_type="float64",
        metadata=mb.Metadata(num_feature=int(clf.n_features_in_), task_type="kMultiClf", average_tree_output=True,
                             num_target=1, num_class=[n_classes], leaf_vector_shape=(1, n_classes)),
        tree_annotation=mb.TreeAnnotation(num_tree=len(trees), target_id=[-1] * len(trees),
                                          class_id=[-1] * len(trees)),
        postprocessor=mb.PostProcessorFunc(name="identity_multiclass"), base_scores=[0.0] * n_classes,
    )
    for tree in trees:
        builder.start_tree()
        for node in range(tree.node_count):
            builder.start_node(node)
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            if left == -1:
                value = tree.value[node, 0]
                builder.leaf((value / value.sum()).tolist())
            else:
                builder.numerical_test(int(tree.feature[node]), float(tree.threshold[node]), opname="<=",
                                       default_left=bool(tree.missing_go_to_left[node]),
                                       left_child_key=left, right_child_key=right)
            builder.end_node()
        builder.end_tree()
    return builder.commit()


def to_treelite(pipeline) -> treelite.Model:
    """The pipeline's classifier (or a bare classifier) as a Treelite model (SMOTE stripped)."""
    clf = pipeline.named_steps["clf"] if hasattr(pipeline, "named_steps") else pipeline
    family = _FAMILIES.get(type(clf).__name__)
    if family is None:
        raise TypeError(f"cannot export a {type(clf).__name__}: supported are {', '.join(_FAMILIES)}")
    if family in ("random_forest", "extra_trees"):
        return sklearn_forest_to_treelite(clf)
    if family == "hist_gradient_boosting":
        return treelite.sklearn.import_model(clf)
    if family == "xgboost":
        return treelite.frontend.from_xgboost(clf.get_booster())
    return treelite.frontend.from_lightgbm(clf.booster_)


def write_fil_model(pipeline, dest_dir: str | Path) -> Path:
    """Write the pipeline's classifier into ``dest_dir`` as a Treelite checkpoint (``checkpoint.tl``,
    FIL's ``treelite_checkpoint``, which every family exports to); returns its path."""
    path = Path(dest_dir) / MODEL_FILENAMES["treelite_checkpoint"]
    path.parent.mkdir(parents=True, exist_ok=True)
    to_treelite(pipeline).serialize(str(path))
    return path


def predict_proba_treelite(tl_model: treelite.Model, X: np.ndarray) -> np.ndarray:
    """P(fraud) per row from a Treelite model (GTIL), as float64 ``(n,)``."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {X.shape}")
    return np.asarray(gtil.predict(tl_model, X, nthread=1), dtype=np.float64).reshape(X.shape[0], -1)[:, -1]


def check_export_parity(pipeline, tl_model: treelite.Model, X: np.ndarray, atol: float = DEFAULT_ATOL) -> float:
    """The largest absolute difference in P(fraud) between the Treelite model and
    ``pipeline.predict_proba`` on ``X``; ExportMismatch when it exceeds ``atol`` or the
    feature counts differ."""
    X = np.asarray(X, dtype=np.float32)
    if tl_model.num_feature != X.shape[1]:
        raise ExportMismatch(f"exported model expects {tl_model.num_feature} features, the data has {X.shape[1]}")
    expected = pipeline.predict_proba(X)[:, 1]
    got = predict_proba_treelite(tl_model, X)
    diff = float(np.max(np.abs(expected - got))) if X.shape[0] else 0.0
    if not diff <= atol:  # also catches NaN
        worst = int(np.nanargmax(np.abs(expected - got)))
        raise ExportMismatch(f"exported model disagrees with the pipeline: max |diff| {diff:.3g} > atol {atol:g} "
                             f"(row {worst}: pipeline {expected[worst]:.6f}, export {got[worst]:.6f})")
    return diff
