"""Metrics for imbalanced classification, computed from predicted fraud probabilities.

Convention: a row is predicted fraud when ``proba >= threshold``. Thresholds chosen by
:func:`choose_threshold` sit half-way between two observed scores, so ``>`` (native FIL's
comparison) and ``>=`` give the same decisions on the data they were chosen on.
"""

from __future__ import annotations

import warnings

import numpy as np

THRESHOLD_RULES = ("best_f1", "precision_target")


def _check(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(proba, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and proba differ in length: {y.shape[0]} vs {p.shape[0]}")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    return y, p


def _precision_recall_points(y: np.ndarray, p: np.ndarray):
    """scikit-learn's precision-recall curve, one point per distinct score ``s`` (descending):
    predict fraud for ``proba >= s``. Returns ``(scores, precision, recall)``."""
    from sklearn.metrics import precision_recall_curve  # lazy: keeps `import fraudml.*` light

    if not y.any():
        raise ValueError("y_true has no positives: precision/recall are undefined")
    precision, recall, scores = precision_recall_curve(y, p, drop_intermediate=False)
    # sklearn: ascending scores, plus a last point (precision 1, recall 0) without a score
    return scores[::-1], precision[-2::-1], recall[-2::-1]


def stratified_resamples(y: np.ndarray, n_boot: int, seed: int = 0):
    """``n_boot`` bootstrap index arrays, frauds and legitimate rows resampled separately (so
    every resample holds the same number of frauds, and AP stays defined)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(n_boot):
        yield np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])


def percentile_interval(draws, level: float = 0.95) -> list[float]:
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(draws, [tail, 100 - tail])]


def bootstrap_intervals(y_true, proba, threshold: float, *, n_boot: int = 500) -> dict[str, list[float]]:
    """Percentile bootstrap intervals ``[low, high]`` of ``average_precision``, ``precision`` and
    ``recall`` at ``threshold`` (:func:`stratified_resamples`)."""
    from sklearn.metrics import average_precision_score

    y, p = _check(y_true, proba)
    draws: dict[str, list[float]] = {"average_precision": [], "precision": [], "recall": []}
    for idx in stratified_resamples(y, n_boot):
        yb, pb = y[idx], p[idx]
        draws["average_precision"].append(average_precision_score(yb, pb))
        tp, predicted = int((pb[yb == 1] >= threshold).sum()), int((pb >= threshold).sum())
        draws["precision"].append(tp / predicted if predicted else 0.0)
        draws["recall"].append(tp / int(yb.sum()))
    return {k: percentile_interval(d) for k, d in draws.items()}


def evaluate(y_true, proba, threshold: float, *, precision_target: float = 0.9) -> dict:
    """All the numbers reported for one model on one labelled set: threshold-free ones, the
    highest recall at a precision of at least ``precision_target``, and those of the decision
    ``proba >= threshold`` (precision, recall and F1 0.0 where undefined)."""
    from sklearn import metrics

    y, p = _check(y_true, proba)
    _, curve_precision, curve_recall = _precision_recall_points(y, p)
    reached = curve_precision >= precision_target
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(y, p >= threshold, average="binary",
                                                                        zero_division=0.0)
    tn, fp, fn, tp = metrics.confusion_matrix(y, p >= threshold, labels=[0, 1]).ravel()
    return {
        "average_precision": float(metrics.average_precision_score(y, p)),
        "roc_auc": float(metrics.roc_auc_score(y, p)),
        "recall_at_precision": float(curve_recall[reached].max()) if reached.any() else 0.0,
        "precision_target": float(precision_target),
        "threshold": float(threshold),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "positive_rate": float(y.mean()),
    }


def _between(scores: np.ndarray, i: int) -> float:
    """A threshold that predicts fraud for ``scores[: i + 1]`` and not for the lower ones."""
    if i + 1 < scores.size:
        return float((scores[i] + scores[i + 1]) / 2.0)
    return float(np.nextafter(scores[i], -np.inf))


def choose_threshold(y_true, proba, rule: str = "best_f1", precision_target: float = 0.9) -> float:
    """The decision threshold on labelled (out-of-fold) scores, half-way between two observed scores:
    ``best_f1`` the highest F1; ``precision_target`` the most recall at a precision of at least
    ``precision_target`` (none reaching it: the most precise, with a warning). Ties: the higher threshold."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    y, p = _check(y_true, proba)
    scores, precision, recall = _precision_recall_points(y, p)
    if rule == "best_f1":
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        return _between(scores, int(np.argmax(f1)))
    ok = np.flatnonzero(precision >= precision_target)
    if ok.size == 0:
        best = int(np.argmax(precision))
        warnings.warn(f"no threshold reaches precision {precision_target:g} (best {precision[best]:.3f}); "
                      "using the most precise threshold", stacklevel=2)
        return _between(scores, best)
    return _between(scores, int(ok[np.argmax(recall[ok])]))  # argmax: the first, i.e. highest, score
