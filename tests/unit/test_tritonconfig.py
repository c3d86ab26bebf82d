"""Golden and property tests of fraudml.tritonconfig (regenerate goldens: UPDATE_GOLDEN=1 pytest this file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudml.tritonconfig import MODEL_FILENAMES, render_config, served_versions

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    # the CPU overlay's published version: probabilities [1-p, p], one pinned version
    "cpu_proba_v3": dict(versions=[3]),
    # the GPU overlay: labels at a tuned threshold, XGBoost UBJSON, two instances
    "gpu_label_xgboost_ubj": dict(model_type="xgboost_ubj", predict_proba=False, threshold=0.37,
                                  instance_kind="KIND_GPU", instance_count=2, versions=[7, 5], max_queue_delay_us=100),
    # an sklearn forest's own two outputs (both flags false): dims [2]
    "raw_forest_two_outputs": dict(predict_proba=False, output_class=False, n_model_outputs=2, versions=[1]),
    # a regressor-style raw score, LightGBM text, NGC >= 25.09 key, Triton's latest policy
    "score_lightgbm_is_classifier": dict(model_type="lightgbm", predict_proba=False, output_class=False,
                                         classifier_key="is_classifier", max_batch_size=32768, n_features=12),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_config_matches_golden(case):
    """Byte for byte the reviewed golden file (score_lightgbm_is_classifier: Triton's latest policy)."""
    text = render_config(**CASES[case])
    golden = GOLDEN / f"{case}.pbtxt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


@given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=5))
@settings(max_examples=50, deadline=None)
def test_served_versions_reads_back_rendered_versions(versions):
    assert served_versions(render_config(versions=versions)) == sorted(set(versions))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version_policy: { specific: { versions: [ 2, 5 ] } }", [2, 5]),
        ("version_policy { specific { versions: 2 versions: 5 } }", [2, 5]),
        ("version_policy: { specific: { versions: 4 } }  # versions: [ 9 ]", [4]),
        ("version_policy: { latest: { num_versions: 2 } }", []),
        ("version_policy: { all: {} }", []),
        ('backend: "fil"', []),
    ],
)
def test_served_versions_on_hand_written_configs(text, expected):
    """Hand-written protobuf spellings of the policy parse the same way; no pin -> []."""
    assert served_versions(text) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_type="onnx"), "model_type"),
        (dict(instance_kind="KIND_TPU"), "instance_kind"),
        (dict(n_features=0), "n_features"),
        (dict(max_batch_size=0), "max_batch_size"),
        (dict(threshold=1.5), "threshold"),
        (dict(threshold=float("nan")), "threshold"),
        (dict(versions=[]), "versions"),
        (dict(versions=[0]), "versions"),
        # not integers: True would render as 1, 8.0 and "3" fail in the protobuf with a TypeError
        (dict(n_features=True), "n_features"),
        (dict(max_batch_size=8.0), "max_batch_size"),
        (dict(versions=["3"]), "versions"),
        (dict(predict_proba=True, output_class=False), "predict_proba"),
        (dict(classifier_key="classifier"), "classifier_key"),
        (dict(extra_parameters={"threshold": "0.1"}), "threshold"),
        # FIL's label for a model with 2+ outputs is the arg-max: the threshold would be ignored
        (dict(predict_proba=False, n_model_outputs=2), "threshold would be ignored"),
        (dict(predict_proba=False, threshold=0.3, n_model_outputs=3), "threshold would be ignored"),
        (dict(n_model_outputs=3), "n_classes"),
        (dict(n_classes=3, n_model_outputs=1), "n_classes"),
        (dict(n_model_outputs=0), "n_model_outputs"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_config(**kwargs)


def test_model_filenames_match_the_local_fil_backend():
    from serve.backends.fil.fil_forest import FIL_MODEL_FILENAMES

    assert MODEL_FILENAMES == FIL_MODEL_FILENAMES
    assert "model.so" not in MODEL_FILENAMES.values()
