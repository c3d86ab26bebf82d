"""What the flow's cards and console show: tables as (headers, rows), plots as matplotlib figures.

Plain functions without Metaflow, so they can be tested and reused; the flow wraps the
results in ``metaflow.cards`` components.
"""

from __future__ import annotations

import numpy as np


def class_distribution_rows(parts: dict[str, dict]) -> tuple[list[str], list[list]]:
    """``parts``: name -> :func:`fraudml.data.describe` output (e.g. all / train / test)."""
    return ["part", "rows", "legitimate", "fraud", "fraud rate"], [
        [name, f"{d['rows']:,}", f"{d['legitimate']:,}", f"{d['fraud']:,}", f"{d['fraud_rate']:.3%}"]
        for name, d in parts.items()]


def with_interval(value: float, interval: list[float], digits: int) -> str:
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def comparison_rows(metrics_by_family: dict[str, dict], best: str) -> tuple[list[str], list[list]]:
    """One row per family (:func:`fraudml.models.score_family` metrics), best cross-validated AP
    (the selection criterion) first; the winner is marked ``*``."""
    order = sorted(metrics_by_family.items(), key=lambda item: (-item[1]["cv_average_precision"], item[0]))
    rows = [[f"{family}{' *' if family == best else ''}", f"{m['cv_average_precision']:.4f}",
             with_interval(m["average_precision"], m["intervals"]["average_precision"], 3),
             f"{m['roc_auc']:.4f}", f"{m['recall_at_precision']:.3f}", f"{m['threshold']:.4f}",
             with_interval(m["precision"], m["intervals"]["precision"], 3),
             with_interval(m["recall"], m["intervals"]["recall"], 3),
             f"{m['f1']:.3f}", f"{m['train_seconds']:.1f}"]
            for family, m in order]
    target = order[0][1]["precision_target"]
    return ["family", "CV AP (selects)", "test AP [95% CI]", "ROC-AUC", f"recall@P{target:g}", "threshold",
            "precision [95% CI]", "recall [95% CI]", "F1", "train s"], rows


def confusion_rows(cm: dict[str, int]) -> tuple[list[str], list[list]]:
    """A 2x2 confusion matrix table (rows: actual, columns: predicted)."""
    return ["actual \\ predicted", "legitimate (0)", "fraud (1)"], [
        ["legitimate (0)", f"{cm['tn']:,}", f"{cm['fp']:,}"], ["fraud (1)", f"{cm['fn']:,}", f"{cm['tp']:,}"]]


def pr_curves_figure(y_true: np.ndarray, proba_by_family: dict[str, np.ndarray], best: str | None = None):
    """Precision-recall curves of every family on one plot (matplotlib ``Figure``, no GUI), with
    scikit-learn's ``PrecisionRecallDisplay`` (the step curve whose area is the average precision)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from sklearn.metrics import PrecisionRecallDisplay

    fig = Figure(figsize=(6.5, 4.8), dpi=100)
    ax = fig.add_subplot()
    for i, (family, proba) in enumerate(proba_by_family.items()):
        PrecisionRecallDisplay.from_predictions(y_true, proba, name=family, ax=ax, plot_chance_level=i == 0,
                                                chance_level_kw={"color": "grey", "linestyle": ":"},
                                                curve_kwargs={"linewidth": 2.4 if family == best else 1.3})
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall on the test set")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
