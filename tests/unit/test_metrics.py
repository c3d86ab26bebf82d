"""Unit tests of the metrics and threshold selection, on inputs computed by hand."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from fraudml.metrics import choose_threshold, evaluate

# Scores descending: 0.8 (fraud), 0.4 (legit), 0.35 (fraud), 0.1 (legit).
# Operating points (predict fraud for p >= s):
#   s=0.8:  tp1 fp0 -> P 1.000 R 0.5 F1 0.667
#   s=0.4:  tp1 fp1 -> P 0.500 R 0.5 F1 0.500
#   s=0.35: tp2 fp1 -> P 0.667 R 1.0 F1 0.800
#   s=0.1:  tp2 fp2 -> P 0.500 R 1.0 F1 0.667
Y = [0, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8]


@pytest.mark.parametrize(("threshold", "counts", "scores"), [
    (0.5, {"tn": 2, "fp": 0, "fn": 1, "tp": 1}, {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}),
    (0.35, {"tn": 1, "fp": 1, "fn": 0, "tp": 2}, {"precision": 2 / 3, "recall": 1.0, "f1": 0.8}),  # p == threshold: fraud
    (0.99, {"tn": 2, "fp": 0, "fn": 2, "tp": 0}, {"precision": 0.0, "recall": 0.0, "f1": 0.0}),  # none predicted: 0, not NaN
])
def test_confusion_and_threshold_metrics(threshold, counts, scores):
    m = evaluate(Y, P, threshold)
    assert m["confusion_matrix"] == counts
    assert {k: m[k] for k in scores} == pytest.approx(scores)
    assert (m["n"], m["n_positive"], m["positive_rate"], m["threshold"]) == (4, 2, 0.5, threshold)
    # threshold-free: AP = 0.5 * 1 + 0.5 * 2/3; ROC-AUC = 3 of 4 pairs ranked right
    assert (m["average_precision"], m["roc_auc"]) == pytest.approx((0.5 * 1.0 + 0.5 * 2 / 3, 0.75))


@pytest.mark.parametrize(("y", "p", "target", "expected"), [
    *((Y, P, target, expected) for target, expected in [(0.9, 0.5), (0.6, 1.0), (0.5, 1.0), (1.0, 0.5)]),
    ([1, 0], [0.2, 0.9], 0.9, 0.0),  # no point reaches the precision
])
def test_recall_at_precision(y, p, target, expected):
    m = evaluate(y, p, 0.5, precision_target=target)
    assert m["recall_at_precision"] == pytest.approx(expected) and m["precision_target"] == target


# best F1 is at s=0.35: the threshold sits half-way to the next lower score 0.1
@pytest.mark.parametrize(("rule", "target", "expected"),
                         [("best_f1", 0.5, 0.225), ("precision_target", 0.9, 0.6), ("precision_target", 0.6, 0.225),
                          ("precision_target", 0.5, 0.225)])
def test_choose_threshold(rule, target, expected):
    assert choose_threshold(Y, P, rule, target) == pytest.approx(expected)


def test_choose_threshold_unreachable_target_warns_and_takes_the_most_precise():
    """No threshold reaches 0.9: the most precise one (all rows positive, P=0.5) with a warning."""
    with pytest.warns(UserWarning, match="no threshold reaches precision 0.9"):
        t = choose_threshold([1, 0], [0.2, 0.9], "precision_target", 0.9)
    assert t < 0.2 and t == pytest.approx(0.2)
    assert evaluate([1, 0], [0.2, 0.9], t)["confusion_matrix"] == {"tn": 0, "fp": 1, "fn": 0, "tp": 1}


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold(Y, P, "max_accuracy")
    with pytest.raises(ValueError, match="no positives"):
        choose_threshold([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        evaluate([0, 1], [0.1], 0.5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        evaluate([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="no rows"):
        evaluate([], [], 0.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 20)), min_size=2, max_size=40).filter(
        lambda rows: any(y for y, _ in rows)
    )
)
def test_best_f1_threshold_is_optimal_and_comparison_safe(rows):
    """The chosen threshold reaches the best F1 of any cut-off, and > gives the same decisions as >=."""
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows]) / 20.0  # coarse scores: many ties
    t = choose_threshold(y, p, "best_f1")
    best = max(f1_score(y, p >= s) for s in np.unique(p))
    assert f1_score(y, p >= t) == pytest.approx(best)
    np.testing.assert_array_equal(p >= t, p > t)
