"""Champion/challenger: publish a new version only when it beats the served one on rows neither saw.

The *reference holdout* is kept in the model repository, outside any model folder (Triton never
downloads it)::

    <repo>/_reference/<model>/holdout.csv       the rows (creditcard schema, with Class)
    <repo>/_reference/<model>/holdout.json      fingerprint, size, where the rows came from
    <repo>/_reference/<model>/decisions/<run>.json   every run's promotion decision

The first run that publishes writes it (create-if-absent); every later run removes its rows from
training, and every published version records its fingerprint, so a comparison on rows either
model has seen is refused. The gate (:func:`judge`) compares recall with the champion flagging as
many holdout rows as the challenger does at its threshold (the same review workload): each
model's threshold is on its own probability scale, so recall at two thresholds would reward
whichever flags more rows. The AP gain's 95 % interval comes from *paired* resamples.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fraudml.cards import with_interval
from fraudml.data import COLUMNS, LABEL, dataset_fingerprint, load_dataset, validate_dataset
from fraudml.features import feature_matrix, labels, split_train_test
from fraudml.lineage import utc_now
from fraudml.metrics import bootstrap_intervals, percentile_interval, stratified_resamples
from fraudml.storage import PreconditionFailed

REFERENCE = "_reference"
DEFAULT_MARGIN = 0.01  # one point of average precision
DEFAULT_RECALL_TOLERANCE = 0.02


class ComparisonRefused(ValueError):
    """Champion and challenger cannot be judged fairly on the holdout; the message says why."""


@dataclass
class Holdout:
    df: pd.DataFrame  # COLUMNS, rows in file order
    fingerprint: str
    meta: dict[str, Any]


def row_keys(rows: pd.DataFrame | np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of the features as the model sees them (float32): the same
    transaction gives the same key, whatever its label or position."""
    x = feature_matrix(rows) if isinstance(rows, pd.DataFrame) else np.asarray(rows, dtype=np.float32)
    return pd.util.hash_pandas_object(pd.DataFrame(x + np.float32(0.0)), index=False).to_numpy()


def select_test_set(
    df: pd.DataFrame, repo, holdout_path: str = "", *, by: str = "time", test_size: float = 0.2, seed: int = 7
) -> tuple[pd.DataFrame, Holdout, bool]:
    """``(train_df, holdout, stored)``: the repository's reference holdout (``stored``), else the file
    ``holdout_path``, else a split of ``df``; holdout rows found in ``df`` leave the training rows."""
    stored = read_holdout(repo) if repo is not None else None
    named = make_holdout(load_dataset(holdout_path), holdout_path) if holdout_path else None
    if stored is not None and named is not None and named.fingerprint != stored.fingerprint:
        raise ComparisonRefused(f"--holdout {holdout_path} ({named.fingerprint[:19]}…) is not the reference holdout this repository "
                                f"already judges every version on ({stored.fingerprint[:19]}…): drop --holdout")
    holdout = stored or named
    if holdout is None:
        train_df, test_df = split_train_test(df, test_size, seed, by=by)
        return train_df, make_holdout(test_df, f"newest {test_size:.0%} of {len(df):,} rows by Time"
                                      if by == "time" else f"stratified {test_size:.0%} sample"), False
    seen = np.isin(row_keys(df), row_keys(holdout.df))
    return df[~seen], holdout, stored is not None


def _key(model_name: str, *parts: str) -> str:
    return "/".join([REFERENCE, model_name, *parts])


def read_holdout(repo) -> Holdout | None:
    """The repository's reference holdout (``repo``: a :class:`fraudml.repository.ModelRepository`)."""
    blob = repo.store.get(_key(repo.model_name, "holdout.csv"))
    if blob is None:
        return None
    df = pd.read_csv(io.BytesIO(blob.data))
    meta_blob = repo.store.get(_key(repo.model_name, "holdout.json"))
    meta = json.loads(meta_blob.data) if meta_blob else {}
    holdout = Holdout(df, dataset_fingerprint(df), meta)
    if meta.get("fingerprint") not in (None, holdout.fingerprint):
        raise ComparisonRefused(f"{repo.uri}: holdout.csv does not match the fingerprint in holdout.json; "
                                "the reference holdout was changed after it was written")
    return holdout


def make_holdout(df: pd.DataFrame, source: str) -> Holdout:
    """A holdout candidate from labelled rows (validated like training data)."""
    df = df[COLUMNS]  # the index stays: rows of a split can be traced back to the dataset
    validate_dataset(df, min_positives=1)
    fingerprint = dataset_fingerprint(df)
    meta = {"fingerprint": fingerprint, "rows": len(df), "frauds": int(df[LABEL].sum()), "source": source,
            "time_range": [float(df["Time"].min()), float(df["Time"].max())]}
    return Holdout(df, fingerprint, meta)


def store_holdout(repo, holdout: Holdout) -> None:
    """Write ``holdout`` as the repository's reference (create-if-absent: of two first runs racing,
    the one written first wins); refuse if another run stored a different one meanwhile."""
    try:
        repo.store.create(_key(repo.model_name, "holdout.csv"), holdout.df.to_csv(index=False).encode())
    except PreconditionFailed:
        if read_holdout(repo).fingerprint != holdout.fingerprint:
            raise ComparisonRefused("another run stored a different reference holdout while this one trained; "
                                    "run again: it will be judged on that holdout") from None
        return
    repo.store.put(_key(repo.model_name, "holdout.json"), json.dumps(holdout.meta, indent=2).encode())


def record_decision(repo, run_id: str, decision: dict[str, Any]) -> None:
    """Store ``decision`` (stamped ``decided_at`` now unless it has one) as the run's."""
    repo.store.put(_key(repo.model_name, "decisions", f"{run_id}.json"),
                   json.dumps({"decided_at": utc_now(), **decision}, indent=2, default=str).encode())


def read_decisions(repo) -> list[dict[str, Any]]:
    """Every run's recorded decision, oldest first."""
    blobs = (repo.store.get(key) for key in repo.store.list(_key(repo.model_name, "decisions") + "/"))
    return sorted((json.loads(b.data) for b in blobs if b is not None), key=lambda d: d.get("decided_at", ""))


def check_unseen(holdout: Holdout, X_train: np.ndarray, champion_lineage: dict[str, Any] | None) -> None:
    """Raise :class:`ComparisonRefused` unless neither model has trained on the holdout rows."""
    overlap = int(np.isin(row_keys(holdout.df), row_keys(X_train)).sum())
    if overlap:
        raise ComparisonRefused(f"the challenger trained on {overlap} of the {len(holdout.df)} holdout rows; "
                                "its holdout score would be inflated")
    if champion_lineage is None:
        return
    seen = (champion_lineage.get("holdout") or {}).get("fingerprint")
    if seen != holdout.fingerprint:
        version = champion_lineage.get("version")
        raise ComparisonRefused(f"the served version {version} does not record that it was kept away from the reference holdout "
                                f"{holdout.fingerprint[:19]}… (its lineage says {seen or 'nothing'}), so it may have trained on "
                                "those rows. Publish anyway with --force-publish, or roll back to a version that records it")


def _score(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    ci = bootstrap_intervals(y, p, threshold, n_boot=n_boot)
    return {"average_precision": float(average_precision_score(y, p)),
            "average_precision_95ci": ci["average_precision"],
            "recall": float((p[y == 1] >= threshold).mean()), "recall_95ci": ci["recall"],
            "threshold": float(threshold)}


def judge(y: np.ndarray, champion: tuple[np.ndarray, float] | None, challenger: tuple[np.ndarray, float], *,
          margin: float = DEFAULT_MARGIN, recall_tolerance: float = DEFAULT_RECALL_TOLERANCE,
          n_boot: int = 500) -> dict[str, Any]:
    """The promotion decision (``promoted``, ``reason``, both models' scores, ``ap_gain`` and its
    interval). ``champion``/``challenger``: ``(P(fraud) on the holdout, threshold)``; ``champion``
    is None before the first version."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y, dtype=np.int64)
    new = _score(y, challenger[0], challenger[1], n_boot)
    out: dict[str, Any] = {"challenger": new, "champion": None, "margin": margin, "recall_tolerance": recall_tolerance}
    if champion is None:
        return {**out, "promoted": True, "reason": "first version: there is no champion to beat"}
    old = _score(y, champion[0], champion[1], n_boot)
    flagged = int((challenger[0] >= challenger[1]).sum())
    top = np.argsort(-champion[0], kind="stable")[:flagged]
    old["recall_at_same_alerts"] = float(y[top].sum() / y.sum())
    gain = new["average_precision"] - old["average_precision"]
    paired = [average_precision_score(y[i], challenger[0][i]) - average_precision_score(y[i], champion[0][i])
              for i in stratified_resamples(y, n_boot, seed=1)]
    recall_drop = old["recall_at_same_alerts"] - new["recall"]
    out.update(champion=old, ap_gain=gain, ap_gain_95ci=percentile_interval(paired))
    if gain < margin:
        reason = f"average precision gain {gain:+.4f} is below the margin {margin:g}"
    elif recall_drop > recall_tolerance:
        reason = (f"recall at the run's threshold ({flagged} alerts) falls by {recall_drop:.4f} against the "
                  f"champion with as many alerts, more than the tolerance {recall_tolerance:g}")
    else:
        return {**out, "promoted": True,
                "reason": f"average precision {gain:+.4f} (margin {margin:g}), recall {-recall_drop:+.4f}"}
    return {**out, "promoted": False, "reason": reason}


def decide(repo, holdout: Holdout, X_train: np.ndarray, challenger: tuple[np.ndarray, float], *,
           margin: float = DEFAULT_MARGIN, recall_tolerance: float = DEFAULT_RECALL_TOLERANCE,
           force: bool = False) -> dict[str, Any]:
    """:func:`judge` the challenger against the served version, plus ``champion_version``, ``holdout``
    and ``forced``: with ``force``, a refused (else ComparisonRefused) or lost comparison is published anyway."""
    served = repo.served_version()
    champion_lineage = repo.read_lineage(served) if served is not None else None
    common = {"champion_version": served, "holdout": holdout.meta, "forced": False}
    try:
        check_unseen(holdout, X_train, champion_lineage)
    except ComparisonRefused as exc:
        if not force:
            raise
        return {**common, "promoted": True, "forced": True, "challenger": None, "champion": None,
                "reason": f"--force-publish; no comparison: {exc}"}
    champion = None
    if champion_lineage is not None:  # scored with the very model file (a Treelite checkpoint) Triton serves
        import treelite

        from fraudml.export import predict_proba_treelite

        name = next(n for n in champion_lineage["files"] if n != "lineage.json")
        model = treelite.Model.deserialize_bytes(repo.read_file(served, name))
        champion = (predict_proba_treelite(model, feature_matrix(holdout.df)), float(champion_lineage["threshold"]))
    result = {**judge(labels(holdout.df), champion, challenger, margin=margin, recall_tolerance=recall_tolerance),
              **common}
    if force and not result["promoted"]:
        result.update(promoted=True, forced=True, reason=f"--force-publish; the gate said: {result['reason']}")
    return result


def describe_decision(decision: dict[str, Any]) -> str:
    """One line: ``promoted|not promoted|forced: <reason>`` with both scores when there are two."""
    word = "forced" if decision.get("forced") else "promoted" if decision["promoted"] else "not promoted"
    line = f"{word}: {decision['reason']}"
    new, old = decision.get("challenger"), decision.get("champion")
    if new and old:
        ap = {name: with_interval(s["average_precision"], s["average_precision_95ci"], 4) for name, s in
              (("new", new), ("old", old))}
        line += f" (holdout AP: challenger {ap['new']}, v{decision['champion_version']} {ap['old']})"
    return line
