"""Treelite export of every family predicts like the trained pipeline (the file Triton's FIL serves)."""

import numpy as np
import pytest
import treelite
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fraudml.export import (
    ExportMismatch,
    check_export_parity,
    load_fil_model,
    predict_proba_treelite,
    to_treelite,
    write_fil_model,
)
from fraudml.models import FAMILIES, build_pipeline
from fraudml.tritonconfig import MODEL_FILENAMES


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_predicts_like_the_pipeline(trained, split, tmp_path, family):
    """checkpoint.tl, written and read back (from the file and from its bytes), gives the
    pipeline's P(fraud) within 1e-5 on every test row; and on rows with missing values too:
    NaN takes each split's default branch, which the export sets to the pipeline's own
    (sklearn forests included)."""
    pipeline = trained[family].pipeline
    path = write_fil_model(pipeline, tmp_path)
    assert path == tmp_path / "checkpoint.tl"
    for tl_model in (load_fil_model(path, "treelite_checkpoint"), treelite.Model.deserialize_bytes(path.read_bytes())):
        assert tl_model.num_feature == 30
        assert check_export_parity(pipeline, tl_model, split.X_test) <= 1e-5
    x = split.X_test[:400].copy()
    x[np.random.default_rng(0).random(x.shape) < 0.2] = np.nan
    assert np.max(np.abs(predict_proba_treelite(tl_model, x) - pipeline.predict_proba(x)[:, 1])) <= 1e-5


@pytest.mark.parametrize(
    ("family", "model_type"),
    [("xgboost", "xgboost_json"), ("xgboost", "xgboost_ubj"), ("lightgbm", "lightgbm")],
)
def test_native_fil_formats(trained, split, tmp_path, family, model_type):
    """XGBoost JSON/UBJ and LightGBM text files load in Treelite and predict like the pipeline."""
    pipeline = trained[family].pipeline
    path = write_fil_model(pipeline, tmp_path, model_type)
    assert path.name == MODEL_FILENAMES[model_type]
    check_export_parity(pipeline, load_fil_model(path, model_type), split.X_test)


@pytest.mark.parametrize(("family", "model_type"), [("random_forest", "xgboost_json"), ("xgboost", "lightgbm")])
def test_mismatched_model_type_is_refused(trained, tmp_path, family, model_type):
    with pytest.raises(ValueError, match="does not fit"):
        write_fil_model(trained[family].pipeline, tmp_path, model_type)
    with pytest.raises(ValueError, match="unknown FIL model_type"):
        write_fil_model(trained[family].pipeline, tmp_path, "onnx")


def test_smote_is_not_part_of_the_export(trained):
    """The export is the classifier only: same number of trees as the fitted classifier."""
    pipeline = trained["random_forest"].pipeline
    assert to_treelite(pipeline).num_tree == len(pipeline.named_steps["clf"].estimators_)


def test_a_different_model_is_a_mismatch(trained, split):
    with pytest.raises(ExportMismatch) as info:
        check_export_parity(trained["random_forest"].pipeline, to_treelite(trained["xgboost"].pipeline), split.X_test)
    assert info.value.max_abs_diff > 1e-3
    assert "max |diff|" in str(info.value)


def test_feature_count_mismatch(trained, split):
    with pytest.raises(ExportMismatch, match="expects 30 features"):
        check_export_parity(trained["xgboost"].pipeline, to_treelite(trained["xgboost"].pipeline), split.X_test[:, :29])


def test_unsupported_estimator():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TypeError, match="cannot export a LogisticRegression"):
        to_treelite(LogisticRegression())


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


def test_predict_proba_treelite_shape(trained, split):
    p = predict_proba_treelite(to_treelite(trained["extra_trees"].pipeline), split.X_test[:7])
    assert p.shape == (7,) and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    with pytest.raises(ValueError):
        predict_proba_treelite(to_treelite(trained["extra_trees"].pipeline), split.X_test[0])


def test_export_of_an_unfitted_pipeline_fails():
    with pytest.raises(Exception):  # noqa: B017 - each library raises its own "not fitted" error
        to_treelite(build_pipeline("random_forest"))
