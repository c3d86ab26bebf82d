"""Treelite export of every family predicts like the trained pipeline (the file Triton's FIL serves)."""

import numpy as np
import pytest
import treelite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import LogisticRegression

from fraudml.export import (
    ExportMismatch,
    check_export_parity,
    predict_proba_treelite,
    to_treelite,
    write_fil_model,
)
from fraudml.models import FAMILIES, build_pipeline


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_predicts_like_the_pipeline(trained, split, tmp_path, family):
    """checkpoint.tl (file and bytes) gives the pipeline's P(fraud) within 1e-5, NaN rows included."""
    pipeline = trained[family].pipeline
    path = write_fil_model(pipeline, tmp_path)
    assert path == tmp_path / "checkpoint.tl"
    for tl_model in (treelite.Model.deserialize(str(path)), treelite.Model.deserialize_bytes(path.read_bytes())):
        assert tl_model.num_feature == 30
        assert check_export_parity(pipeline, tl_model, split.X_test) <= 1e-5
    x = split.X_test[:400].copy()
    x[np.random.default_rng(0).random(x.shape) < 0.2] = np.nan
    p = predict_proba_treelite(tl_model, x)
    assert p.shape == (len(x),) and p.dtype == np.float64
    assert np.max(np.abs(p - pipeline.predict_proba(x)[:, 1])) <= 1e-5


# name: (a call given the trained families and the split; the error it raises; what the error says)
REFUSALS = {
    "a different model": (lambda t, s: check_export_parity(t["random_forest"].pipeline,
                                                           to_treelite(t["xgboost"].pipeline), s.X_test),
                          ExportMismatch, r"max \|diff\| 0\.[0-9]+ > atol"),
    "too few features": (lambda t, s: check_export_parity(t["xgboost"].pipeline, to_treelite(t["xgboost"].pipeline),
                                                          s.X_test[:, :29]), ExportMismatch, "expects 30 features"),
    "one row, not rows": (lambda t, s: predict_proba_treelite(to_treelite(t["extra_trees"].pipeline), s.X_test[0]),
                          ValueError, "2-D array"),
    "a linear model": (lambda t, s: to_treelite(LogisticRegression()), TypeError, "cannot export a LogisticRegression"),
    # each library raises its own "not fitted" error
    "an unfitted pipeline": (lambda t, s: to_treelite(build_pipeline("random_forest")), Exception, None),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_misuse_is_refused(trained, split, name):
    call, error, message = REFUSALS[name]
    with pytest.raises(error, match=message):
        call(trained, split)


@pytest.mark.parametrize("family", ["random_forest", "xgboost", "lightgbm"])
def test_parity_on_generated_rows(trained, family):
    pipeline = trained[family].pipeline
    tl_model = to_treelite(pipeline)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(arrays(np.float32, st.tuples(st.integers(1, 64), st.just(30)),
                  elements=st.floats(-1e4, 1e4, width=32, allow_nan=False)))
    def check(rows):
        check_export_parity(pipeline, tl_model, rows)

    check()
