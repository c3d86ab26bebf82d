"""Model families, each an imbalanced-learn ``Pipeline([("smote", sampler), ("clf", ...)])``.

SMOTE lives inside the pipeline, so it runs only in ``fit``: in cross-validation it
oversamples the training folds and never the validation fold, and ``predict_proba`` (test
set, serving) sees real rows only. Every step takes raw rows; SMOTE scales ``Time`` and
``Amount`` for its own neighbour search only (:mod:`fraudml.features`). Every family is a tree ensemble that Treelite can import
(see :mod:`fraudml.export`), so each can be served by Triton's FIL backend.

The hyperparameter search is a small ``RandomizedSearchCV`` over stratified folds, scored
by average precision. Defaults are sized for 2 CPU cores: the flow trains all four default
families on 60,000 rows in about a minute and a half.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fraudml.data import SMOTE_K_NEIGHBORS
from fraudml.features import make_sampler
from fraudml.metrics import bootstrap_intervals, choose_threshold, evaluate

if TYPE_CHECKING:
    from imblearn.pipeline import Pipeline

# scikit-learn and imbalanced-learn are imported inside the functions that use them: the flow
# file imports this module in every task (and card) process, most of which never train.

FAMILIES: tuple[str, ...] = ("random_forest", "extra_trees", "xgboost", "lightgbm", "hist_gradient_boosting")
DEFAULT_FAMILIES: tuple[str, ...] = ("random_forest", "extra_trees", "xgboost", "lightgbm")
# SMOTE raises the frauds to 10 % of the legitimate rows in each training fold: enough to
# help every family, without doubling the rows (which would double the tree-building time).
SMOTE_SAMPLING_STRATEGY = 0.1
DEFAULT_CV_FOLDS = 3
DEFAULT_N_ITER = 3
# Threads per classifier when not given. The flow trains the families side by side on 2
# cores; the forests are the slowest, and their joblib threads yield the CPU cleanly, so
# they take the second core when the boosters (whose OpenMP threads would spin when
# oversubscribed) are done.
DEFAULT_THREADS = {"random_forest": 2, "extra_trees": 2}


def parse_families(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"random_forest, xgboost"`` -> ``["random_forest", "xgboost"]``; unknown names raise."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = list(dict.fromkeys(n for n in names if n))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise ValueError(
            f"unknown model famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(FAMILIES)}"
        )
    return names


def make_classifier(family: str, *, seed: int = 7, n_jobs: int = 1):
    """The family's classifier with its default hyperparameters.

    The random forest default (100 trees, depth 10, 30 features) is the benchmark's
    reference model. The forests' trees see bootstrap samples of 20-30 % of the rows, which
    keeps training fast on 2 cores without hurting average precision here.
    """
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=100, max_depth=10, max_features="sqrt", max_samples=0.2,
            n_jobs=n_jobs, random_state=seed,
        )
    if family == "extra_trees":
        from sklearn.ensemble import ExtraTreesClassifier

        # Bootstrap samples of 30 % of the rows: half the time of full-data trees here, and
        # the same cross-validated average precision.
        return ExtraTreesClassifier(
            n_estimators=100, max_depth=10, max_features="sqrt", bootstrap=True, max_samples=0.3,
            n_jobs=n_jobs, random_state=seed,
        )
    if family == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=200, max_depth=4, learning_rate=0.1, subsample=0.9, colsample_bytree=0.8,
            tree_method="hist", eval_metric="aucpr", n_jobs=n_jobs, random_state=seed,
        )
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=200, num_leaves=15, learning_rate=0.05, min_child_samples=20,
            subsample=0.9, subsample_freq=1, colsample_bytree=0.8,
            n_jobs=n_jobs, random_state=seed, verbose=-1,
        )
    if family == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, max_leaf_nodes=15, early_stopping=False, random_state=seed
        )
    raise ValueError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")


def search_space(family: str) -> dict[str, list]:
    """The hyperparameters the search samples from (``clf__`` = the classifier step)."""
    spaces = {
        "random_forest": {
            "clf__max_depth": [8, 10],
            "clf__min_samples_leaf": [1, 3, 10],
            "clf__max_samples": [0.1, 0.2],
        },
        "extra_trees": {
            "clf__max_depth": [8, 10],
            "clf__min_samples_leaf": [1, 3, 10],
        },
        "xgboost": {
            "clf__n_estimators": [100, 200],
            "clf__max_depth": [3, 4, 5],
            "clf__learning_rate": [0.05, 0.1],
            "clf__min_child_weight": [1, 5],
        },
        "lightgbm": {
            "clf__n_estimators": [100, 200],
            "clf__num_leaves": [7, 15, 31],
            "clf__learning_rate": [0.05, 0.1],
            "clf__min_child_samples": [10, 20, 50],
        },
        "hist_gradient_boosting": {
            "clf__max_iter": [100, 200],
            "clf__learning_rate": [0.05, 0.1],
            "clf__max_leaf_nodes": [15, 31],
            "clf__l2_regularization": [0.0, 1.0],
        },
    }
    if family not in spaces:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")
    return spaces[family]


def oversampling_target(y: np.ndarray, ratio: float = SMOTE_SAMPLING_STRATEGY) -> dict[int, int]:
    """SMOTE's target: raise the minority class to ``ratio`` x the majority, never below its
    current count (a fixed float ratio makes SMOTE fail on data that is already less skewed)."""
    values, counts = np.unique(y, return_counts=True)
    minority, majority = values[np.argmin(counts)], counts.max()
    return {int(minority): int(max(counts.min(), round(ratio * majority)))}


def build_pipeline(
    family: str, *, seed: int = 7, n_jobs: int = 1, sampling_ratio: float = SMOTE_SAMPLING_STRATEGY
) -> Pipeline:
    """``Pipeline([("smote", SMOTE on robust-scaled distance), ("clf", make_classifier(family))])``."""
    from imblearn.pipeline import Pipeline

    target = functools.partial(oversampling_target, ratio=sampling_ratio)
    return Pipeline(
        [
            ("smote", make_sampler(target, k_neighbors=SMOTE_K_NEIGHBORS, random_state=seed)),
            ("clf", make_classifier(family, seed=seed, n_jobs=n_jobs)),
        ]
    )


@dataclass
class TrainedFamily:
    """One family after the search: the refitted best pipeline and how it was chosen."""

    family: str
    pipeline: Pipeline
    best_params: dict
    cv_average_precision: float  # mean over folds, best candidate
    cv_average_precision_std: float
    cv_results: list[dict]  # every candidate: params, mean and std AP, rank
    oof_proba: np.ndarray | None  # out-of-fold P(fraud) of the training rows, best params
    cv_folds: int
    n_iter: int
    train_seconds: float
    n_train: int
    n_train_positive: int


def train_family(
    family: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 7,
    cv_folds: int = DEFAULT_CV_FOLDS,
    n_iter: int = DEFAULT_N_ITER,
    n_jobs: int | None = None,
    out_of_fold: bool = True,
) -> TrainedFamily:
    """Search ``n_iter`` hyperparameter candidates with stratified ``cv_folds``-fold CV
    (average precision), refit the best on all of ``X``, ``y``.

    Args:
        family: one of ``FAMILIES``.
        X: raw training rows, float32 ``(n, 30)`` in ``FEATURES`` order.
        y: training labels 0/1.
        seed: seeds SMOTE, the classifier, the folds and the candidate sampling.
        cv_folds: number of stratified folds.
        n_iter: candidates sampled from :func:`search_space` (capped at the grid size).
        n_jobs: threads for the classifier (None: ``DEFAULT_THREADS`` or 1); the search
            itself runs candidates one by one (the flow trains the families in parallel).
        out_of_fold: also predict every training row with a model that did not see it
            (best parameters, same folds), for choosing the decision threshold without
            touching the test set. Costs ``cv_folds`` more fits.

    Returns:
        A :class:`TrainedFamily`.
    """
    from sklearn.base import clone
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    n_jobs = n_jobs or DEFAULT_THREADS.get(family, 1)
    started = time.perf_counter()
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    space = search_space(family)
    grid_size = int(np.prod([len(v) for v in space.values()]))
    search = RandomizedSearchCV(
        build_pipeline(family, seed=seed, n_jobs=n_jobs),
        space,
        n_iter=min(n_iter, grid_size),
        scoring="average_precision",
        cv=folds,
        refit=True,
        random_state=seed,
        n_jobs=1,
        error_score="raise",
    )
    # threadpool_limits caps OpenMP/BLAS pools too (HistGradientBoosting, SMOTE's neighbours).
    with threadpool_limits(limits=n_jobs), warnings.catch_warnings():
        # LightGBM/sklearn feature-name chatter on numpy input
        warnings.filterwarnings("ignore", message=".*feature names.*")
        search.fit(X, y)
        oof = None
        if out_of_fold:
            best = clone(search.best_estimator_)
            oof = cross_val_predict(best, X, y, cv=folds, method="predict_proba")[:, 1]
    res = search.cv_results_
    cv_results = [
        {
            "params": {k.removeprefix("clf__"): _plain(v) for k, v in res["params"][i].items()},
            "mean_average_precision": float(res["mean_test_score"][i]),
            "std_average_precision": float(res["std_test_score"][i]),
            "rank": int(res["rank_test_score"][i]),
        }
        for i in range(len(res["params"]))
    ]
    return TrainedFamily(
        family=family,
        pipeline=search.best_estimator_,
        best_params={k.removeprefix("clf__"): _plain(v) for k, v in search.best_params_.items()},
        cv_average_precision=float(search.best_score_),
        cv_average_precision_std=float(res["std_test_score"][search.best_index_]),
        cv_results=sorted(cv_results, key=lambda r: r["rank"]),
        oof_proba=None if oof is None else oof.astype(np.float64),
        cv_folds=cv_folds,
        n_iter=min(n_iter, grid_size),
        train_seconds=time.perf_counter() - started,
        n_train=int(y.size),
        n_train_positive=int(y.sum()),
    )


def _plain(value):
    """numpy scalars -> Python scalars, so params are JSON-able for lineage."""
    return value.item() if isinstance(value, np.generic) else value


def predict_proba(pipeline: Pipeline, X: np.ndarray) -> np.ndarray:
    """P(fraud) for each row; the SMOTE step is skipped outside ``fit``."""
    return pipeline.predict_proba(np.asarray(X, dtype=np.float32))[:, 1]


def score_family(
    trained: TrainedFamily,
    X_test: np.ndarray,
    y_test: np.ndarray,
    y_train: np.ndarray | None = None,
    *,
    rule: str = "best_f1",
    precision_target: float = 0.9,
    n_boot: int = 500,
) -> tuple[dict, np.ndarray]:
    """Metrics of one trained family on the untouched test set, for the report.

    The family is *chosen* on its cross-validated average precision (:func:`pick_best`); the
    test set is scored once per family afterwards and never feeds back into a choice. The
    decision threshold is chosen with ``rule`` on the out-of-fold training scores
    (``y_train`` needed) when the family has them, otherwise on the test scores (then
    ``threshold_source`` says so and the threshold metrics are optimistic).

    Returns:
        ``(metrics, test_proba)``: :func:`fraudml.metrics.evaluate` plus ``intervals``
        (95 % bootstrap intervals of AP, precision and recall, ``n_boot`` resamples),
        ``family``, ``threshold_rule``, ``threshold_source``, ``cv_average_precision``,
        ``cv_average_precision_std``, ``best_params``, ``train_seconds``.
    """
    proba = predict_proba(trained.pipeline, X_test)
    if trained.oof_proba is not None and y_train is not None:
        threshold = choose_threshold(y_train, trained.oof_proba, rule, precision_target)
        source = "out_of_fold"
    else:
        threshold = choose_threshold(y_test, proba, rule, precision_target)
        source = "test"
    metrics = evaluate(y_test, proba, threshold, precision_target=precision_target)
    metrics.update(
        intervals=bootstrap_intervals(y_test, proba, threshold, n_boot=n_boot),
        family=trained.family,
        threshold_rule=rule,
        threshold_source=source,
        cv_average_precision=trained.cv_average_precision,
        cv_average_precision_std=trained.cv_average_precision_std,
        best_params=trained.best_params,
        train_seconds=trained.train_seconds,
    )
    return metrics, proba


def pick_best(cv_average_precision: dict[str, float]) -> str:
    """The family with the highest cross-validated average precision (ties: name).

    Chosen on training folds only, so the test set stays an unbiased report of the winner.
    """
    if not cv_average_precision:
        raise ValueError("no trained families to choose from")
    return min(cv_average_precision, key=lambda f: (-cv_average_precision[f], f))
