"""Model families, each an imbalanced-learn ``Pipeline([("smote", sampler), ("clf", ...)])``.

SMOTE lives inside the pipeline, so it runs only in ``fit``: cross-validation oversamples the
training folds, never the validation fold, and ``predict_proba`` sees real rows only. Every
family is a tree ensemble Treelite imports (:mod:`fraudml.export`), so FIL can serve it. The
search is a small ``RandomizedSearchCV`` on stratified folds, scored by average precision, sized
for 2 cores (the four default families on 60,000 rows in about a minute and a half).
"""

from __future__ import annotations

import importlib
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fraudml.features import smote_on_robust_scale
from fraudml.metrics import bootstrap_intervals, choose_threshold, evaluate

if TYPE_CHECKING:
    from imblearn.pipeline import Pipeline

# scikit-learn and imbalanced-learn are imported inside the functions that use them: the flow
# file imports this module in every task (and card) process, most of which never train.

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
        raise ValueError(f"unknown model famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(FAMILIES)}")
    return names


# family -> (classifier class, its default hyperparameters, the search space of the classifier step).
# The random forest default (100 trees, depth 10, 30 features) is the benchmark's reference
# model. The forests' trees see bootstrap samples of 20-30 % of the rows, which keeps training
# fast on 2 cores without hurting average precision here (extra trees: half the time of
# full-data trees, the same cross-validated average precision).
SPECS: dict[str, tuple[str, dict, dict[str, list]]] = {
    "random_forest": (
        "sklearn.ensemble:RandomForestClassifier",
        {"n_estimators": 100, "max_depth": 10, "max_features": "sqrt", "max_samples": 0.2},
        {"max_depth": [8, 10], "min_samples_leaf": [1, 3, 10], "max_samples": [0.1, 0.2]},
    ),
    "extra_trees": (
        "sklearn.ensemble:ExtraTreesClassifier",
        {"n_estimators": 100, "max_depth": 10, "max_features": "sqrt", "bootstrap": True, "max_samples": 0.3},
        {"max_depth": [8, 10], "min_samples_leaf": [1, 3, 10]},
    ),
    "xgboost": (
        "xgboost:XGBClassifier",
        {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.9, "colsample_bytree": 0.8,
         "tree_method": "hist", "eval_metric": "aucpr"},
        {"n_estimators": [100, 200], "max_depth": [3, 4, 5], "learning_rate": [0.05, 0.1],
         "min_child_weight": [1, 5]},
    ),
    "lightgbm": (
        "lightgbm:LGBMClassifier",
        {"n_estimators": 200, "num_leaves": 15, "learning_rate": 0.05, "min_child_samples": 20,
         "subsample": 0.9, "subsample_freq": 1, "colsample_bytree": 0.8, "verbose": -1},
        {"n_estimators": [100, 200], "num_leaves": [7, 15, 31], "learning_rate": [0.05, 0.1],
         "min_child_samples": [10, 20, 50]},
    ),
    "hist_gradient_boosting": (  # no n_jobs: its OpenMP threads are capped by threadpool_limits
        "sklearn.ensemble:HistGradientBoostingClassifier",
        {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 15, "early_stopping": False},
        {"max_iter": [100, 200], "learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31],
         "l2_regularization": [0.0, 1.0]},
    ),
}
FAMILIES: tuple[str, ...] = tuple(SPECS)  # the names --models accepts


def oversampling_target(y: np.ndarray, ratio: float = SMOTE_SAMPLING_STRATEGY) -> dict[int, int]:
    """SMOTE's target: raise the minority class to ``ratio`` x the majority, never below its
    current count (a fixed float ratio makes SMOTE fail on data that is already less skewed)."""
    values, counts = np.unique(y, return_counts=True)
    minority, majority = values[np.argmin(counts)], counts.max()
    return {int(minority): int(max(counts.min(), round(ratio * majority)))}


def build_pipeline(family: str, *, seed: int = 7, n_jobs: int = 1) -> Pipeline:
    """``Pipeline([("smote", SMOTE on robust-scaled distance), ("clf", the family's default classifier)])``."""
    from imblearn import FunctionSampler
    from imblearn.pipeline import Pipeline

    path, defaults, _ = SPECS[family]
    module, name = path.split(":")
    threads = {} if family == "hist_gradient_boosting" else {"n_jobs": n_jobs}
    classifier = getattr(importlib.import_module(module), name)(**defaults, **threads, random_state=seed)
    smote = FunctionSampler(func=smote_on_robust_scale,
                            kw_args={"sampling_strategy": oversampling_target, "random_state": seed})
    return Pipeline([("smote", smote), ("clf", classifier)])


@dataclass
class TrainedFamily:
    """One family after the search: the refitted best pipeline and how it was chosen."""

    family: str
    pipeline: Pipeline
    best_params: dict
    cv_average_precision: float  # mean over folds, best candidate
    cv_average_precision_std: float
    oof_proba: np.ndarray  # out-of-fold P(fraud) of the training rows, best params
    train_seconds: float


def train_family(family: str, X: np.ndarray, y: np.ndarray, *, seed: int = 7, cv_folds: int = DEFAULT_CV_FOLDS,
                 n_iter: int = DEFAULT_N_ITER, n_jobs: int | None = None) -> TrainedFamily:
    """Search ``n_iter`` candidates (capped at the grid size) with stratified CV on average precision
    and refit the best; ``n_jobs``: classifier threads (None: ``DEFAULT_THREADS`` or 1), candidates run
    one by one (the flow trains families in parallel). ``oof_proba``: every training row scored by a
    model that did not see it (``cv_folds`` more fits), to choose the threshold without the test set."""
    from sklearn.base import clone
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    n_jobs = n_jobs or DEFAULT_THREADS.get(family, 1)
    started = time.perf_counter()
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    space = {f"clf__{k}": v for k, v in SPECS[family][2].items()}  # clf__: the classifier step
    grid_size = int(np.prod([len(v) for v in space.values()]))
    search = RandomizedSearchCV(build_pipeline(family, seed=seed, n_jobs=n_jobs), space, n_iter=min(n_iter, grid_size),
                                scoring="average_precision", cv=folds, refit=True, random_state=seed, n_jobs=1,
                                error_score="raise")
    # threadpool_limits caps OpenMP/BLAS pools too (HistGradientBoosting, SMOTE's neighbours).
    with threadpool_limits(limits=n_jobs), warnings.catch_warnings():
        # LightGBM/sklearn feature-name chatter on numpy input
        warnings.filterwarnings("ignore", message=".*feature names.*")
        search.fit(X, y)
        oof = cross_val_predict(clone(search.best_estimator_), X, y, cv=folds, method="predict_proba")[:, 1]
    # without the clf__ prefix, numpy scalars as Python ones (JSON-able for lineage)
    best_params = {k.removeprefix("clf__"): v.item() if isinstance(v, np.generic) else v
                   for k, v in search.best_params_.items()}
    return TrainedFamily(
        family=family, pipeline=search.best_estimator_, best_params=best_params,
        cv_average_precision=float(search.best_score_),
        cv_average_precision_std=float(search.cv_results_["std_test_score"][search.best_index_]),
        oof_proba=oof.astype(np.float64), train_seconds=time.perf_counter() - started,
    )


def predict_proba(pipeline: Pipeline, X: np.ndarray) -> np.ndarray:
    return pipeline.predict_proba(np.asarray(X, dtype=np.float32))[:, 1]


def score_family(trained: TrainedFamily, X_test: np.ndarray, y_test: np.ndarray, y_train: np.ndarray,
                 *, rule: str = "best_f1", precision_target: float = 0.9, n_boot: int = 500) -> tuple[dict, np.ndarray]:
    """``(metrics, test_proba)`` of one family on the test set, for the report only (never a choice):
    :func:`fraudml.metrics.evaluate` at a threshold chosen by ``rule`` on the out-of-fold training
    scores, plus 95 % bootstrap ``intervals`` and how the family was trained."""
    proba = predict_proba(trained.pipeline, X_test)
    threshold = choose_threshold(y_train, trained.oof_proba, rule, precision_target)
    metrics = evaluate(y_test, proba, threshold, precision_target=precision_target)
    metrics.update(
        intervals=bootstrap_intervals(y_test, proba, threshold, n_boot=n_boot), family=trained.family,
        threshold_rule=rule, threshold_source="out_of_fold", cv_average_precision=trained.cv_average_precision,
        cv_average_precision_std=trained.cv_average_precision_std, best_params=trained.best_params,
        train_seconds=trained.train_seconds,
    )
    return metrics, proba


def pick_best(cv_average_precision: dict[str, float]) -> str:
    """The family with the highest cross-validated average precision (ties: name): training folds only,
    so the test set stays an unbiased report of the winner."""
    if not cv_average_precision:
        raise ValueError("no trained families to choose from")
    return min(cv_average_precision, key=lambda f: (-cv_average_precision[f], f))
