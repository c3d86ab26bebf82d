"""Conformance: the local ``fil`` backends (native, Python; GTIL, compiled; over HTTP and gRPC) answer as
native FIL of the pinned NGC image for every model format they claim, against each library's own predictions
(rows with NaN and +-Inf, Hypothesis rows, batched requests); they refuse at load what native FIL refuses or
cannot serve; an uncompiled model serves at once, then switches. One real Triton per FIL_BACKENDS entry (module
scope, ``fil_clients``) serves them, its predictor checked first.

The references: XGBoost and LightGBM take NaN as missing; +-Inf reaches them as +-1e30, since FIL
compares it like any number (XGBoost refuses Inf). Treelite imports sklearn trees with every split
sending NaN left (Treelite src/model_loader/sklearn.cc): the sklearn reference gets NaN as -1e30.
"""

from __future__ import annotations

import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import treelite
import treelite.sklearn
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import softmax
from tritonclient.utils import InferenceServerException

from fraudml.export import to_treelite
from fraudml.tritonconfig import MODEL_FILENAMES, parse_config, render_config
from serve.backends.fil import fil_forest

pytestmark = pytest.mark.slow

N_FEATURES = 8
CATEGORICAL = 7  # the LightGBM categorical model's categorical feature (integer ids 0..9)
MAX_BATCH = 256
THRESHOLD = 0.4213  # unlikely to equal a predicted probability
ATOL = 1e-5
BIG = 1e30  # how +-Inf (and NaN for sklearn) reach the reference libraries
FIL_BACKENDS = [("native", "gtil"), ("native", "compiled"), ("python", "gtil"), ("python", "compiled")]


# each trained model's outputs per row (Treelite num_class; sklearn binary forests: 2)
MODEL_OUTPUTS = {"xgb": 1, "xgb3": 3, "lgbm": 1, "lgbm_cat": 1, "lgbm3": 3, "lgbm_ova": 3, "lgbm_reg": 1,
                 "sk_rf": 2, "sk_et": 2, "sk_gb": 1, "sk_rf3": 3, "sk_rf_reg": 1}


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # key of the trained model
    model_type: str  # FIL model_type rendered into the config
    expect: str = "proba"  # output__0: "proba" | "label" | "value" (the model's own outputs)
    config: dict = field(default_factory=dict)  # further render_config arguments
    edit: dict = field(default_factory=dict)  # parameters set (str) or removed (None) afterwards
    save_as: str | None = None  # the file format written, when not model_type's
    refused: tuple[str, ...] = ()  # words the load error must hold; empty: the model serves


# holds requests 50 ms, so that concurrent ones share one execute()
BATCHED = Case("sk-random-forest-batched", "sk_rf", "treelite_checkpoint", config=dict(max_queue_delay_us=50_000))
SERVED = [
    Case("xgb-json-proba", "xgb", "xgboost_json"),
    Case("xgb-ubj-label", "xgb", "xgboost_ubj", "label"),
    Case("xgb-legacy-binary-proba", "xgb", "xgboost"),
    Case("xgb-treelite-checkpoint-proba", "xgb", "treelite_checkpoint"),
    Case("xgb-score", "xgb", "xgboost_json", "value"),
    # model_type left out: FIL's default, xgboost (legacy binary, xgboost.model)
    Case("xgb-default-model-type", "xgb", "xgboost", edit={"model_type": None}),
    # native FIL loads predict_proba without output_class: [1-p, p] all the same
    Case("xgb-proba-without-output-class", "xgb", "xgboost_json", edit={"output_class": "false", "threshold": None}),
    Case("xgb-multiclass-proba", "xgb3", "xgboost_json"),
    Case("xgb-multiclass-both-flags-false", "xgb3", "xgboost_ubj", "value"),
    Case("lgbm-proba", "lgbm", "lightgbm"),
    Case("lgbm-label", "lgbm", "lightgbm", "label"),
    Case("lgbm-treelite-checkpoint-proba", "lgbm", "treelite_checkpoint"),
    Case("lgbm-score", "lgbm", "lightgbm", "value"),
    Case("lgbm-categorical-proba", "lgbm_cat", "lightgbm"),
    Case("lgbm-multiclass-proba", "lgbm3", "lightgbm"),
    # native FIL replaces one-vs-all sigmoids by a softmax when predict_proba is true
    Case("lgbm-multiclassova-proba", "lgbm_ova", "lightgbm"),
    Case("lgbm-regressor", "lgbm_reg", "lightgbm", "value"),
    Case("sk-random-forest-proba", "sk_rf", "treelite_checkpoint"),
    Case("sk-extra-trees-proba", "sk_et", "treelite_checkpoint"),
    Case("sk-gradient-boosting-proba", "sk_gb", "treelite_checkpoint"),
    Case("sk-gradient-boosting-label", "sk_gb", "treelite_checkpoint", "label"),
    Case("sk-random-forest-multiclass-proba", "sk_rf3", "treelite_checkpoint"),
    Case("sk-random-forest-both-flags-false", "sk_rf", "treelite_checkpoint", "value"),
    Case("sk-random-forest-regressor", "sk_rf_reg", "treelite_checkpoint", "value"),
    BATCHED,
    # keys native FIL 25.08 does not read, or reads only on GPU with defaults that absorb bad values
    Case("unknown-keys-ignored", "lgbm", "lightgbm", config=dict(extra_parameters={
        "is_classifier": "banana", "no_such_key": "1", "algo": "NO_SUCH_ALGO", "threads_per_tree": "many",
        "blocks_per_sm": "x", "transfer_threshold": "-", "cpu_nthread": "2",
    })),  # fmt: skip
]

REFUSED = [  # rendered without n_model_outputs, which would make render_config refuse some first
    Case("no-output-class", "xgb", "xgboost_json", edit={"output_class": None},
         refused=("Required parameter output_class",)),
    Case("no-threshold", "xgb", "xgboost_json", edit={"threshold": None}, refused=("Required parameter threshold",)),
    Case("is-classifier-only", "xgb", "xgboost_json", config=dict(classifier_key="is_classifier"),
         refused=("output_class", "25.09")),
    Case("bool-not-lowercase", "xgb", "xgboost_json", edit={"predict_proba": "True"},
         refused=("Expected 'true' or 'false'",)),
    Case("unknown-model-type", "xgb", "xgboost_json", edit={"model_type": "onnx"},
         refused=("not recognized as a valid serialization format",)),
    # more than one class output + label: 'max_index', which native FIL 25.08 on CPU lacks
    Case("forest-label", "sk_rf", "treelite_checkpoint", "label", refused=("max_index",)),
    Case("multiclass-label", "xgb3", "xgboost_json", "label", refused=("max_index",)),
    # an sklearn forest writes 2 values per row: a [1] output cannot hold them
    Case("forest-outputs-in-one-column", "sk_rf", "treelite_checkpoint", "value", refused=("dims", "2")),
    # XGBoost >= 2.1 save_model("xgboost.model") writes UBJSON, not the legacy binary format
    Case("ubjson-named-xgboost-model", "xgb", "xgboost", save_as="xgboost_ubj", refused=("legacy binary",)),
]


# -- models and repository -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def models() -> dict:
    """Small models of every family, XGBoost and LightGBM trained with missing values."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn import ensemble
    from xgboost import XGBClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    X[:, CATEGORICAL] = rng.integers(0, 10, len(X))
    y = ((X[:, 0] + X[:, 1] * X[:, 2] + (X[:, CATEGORICAL] % 3 == 0)) > 0.5).astype(int)
    y3 = np.digitize(X[:, 0] + 0.5 * X[:, 3], [-0.5, 0.5])
    value = 2 * X[:, 0] + X[:, 1] * X[:, 4]
    Xm = X.copy()  # with missing values, for the libraries that learn where they go
    Xm[rng.random(X.shape) < 0.1] = np.nan
    small = dict(n_estimators=10, random_state=0, n_jobs=1)
    lgbm = dict(small, num_leaves=8, min_child_samples=5, verbose=-1)
    return {
        "xgb": XGBClassifier(max_depth=4, **small).fit(Xm, y),
        "xgb3": XGBClassifier(max_depth=4, **small).fit(Xm, y3),
        "lgbm": LGBMClassifier(**lgbm).fit(Xm, y),
        "lgbm_cat": LGBMClassifier(min_data_per_group=5, cat_smooth=1, **lgbm).fit(
            Xm, y, categorical_feature=[CATEGORICAL]),
        "lgbm3": LGBMClassifier(**lgbm).fit(Xm, y3),
        "lgbm_ova": LGBMClassifier(objective="multiclassova", **lgbm).fit(Xm, y3),
        "lgbm_reg": LGBMRegressor(**lgbm).fit(Xm, value),
        "sk_rf": ensemble.RandomForestClassifier(max_depth=5, **small).fit(X, y),
        "sk_et": ensemble.ExtraTreesClassifier(max_depth=5, **small).fit(X, y),
        "sk_gb": ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y),
        "sk_rf3": ensemble.RandomForestClassifier(max_depth=5, **small).fit(X, y3),
        "sk_rf_reg": ensemble.RandomForestRegressor(max_depth=5, **small).fit(X, value),
    }


def write_repository(root: Path, models: dict, cases: list[Case]) -> None:
    """Each case's config.pbtxt (render_config's, ``case.edit`` applied through Triton's ModelConfig protobuf)
    and model, saved in its format with the libraries' public APIs."""
    for case in cases:
        k = MODEL_OUTPUTS[case.model]
        text = render_config(
            model_name=case.name, n_features=N_FEATURES, max_batch_size=MAX_BATCH, model_type=case.model_type,
            threshold=THRESHOLD, versions=[1], predict_proba=case.expect == "proba",
            output_class=case.expect != "value", n_classes=max(2, k),
            **({} if case.refused else {"n_model_outputs": k}), **case.config,
        )  # fmt: skip
        config = parse_config(text)
        for key, value in case.edit.items():
            if value is None:
                del config.parameters[key]
            else:
                config.parameters[key].string_value = value
        (root / case.name / "1").mkdir(parents=True)
        (root / case.name / "config.pbtxt").write_text(text_format.MessageToString(config))
        estimator, fmt = models[case.model], case.save_as or case.model_type
        dest = root / case.name / "1" / MODEL_FILENAMES[case.model_type]
        if fmt.startswith("xgboost"):  # the legacy binary format ("xgboost"): XGBoost 2.1 writes it only when asked
            raw_format = {"xgboost_json": "json", "xgboost_ubj": "ubj", "xgboost": "deprecated"}[fmt]
            with warnings.catch_warnings(action="ignore", category=UserWarning):  # "deprecated" format: FIL reads it
                dest.write_bytes(bytes(estimator.get_booster().save_raw(raw_format=raw_format)))
        elif fmt == "lightgbm":
            estimator.booster_.save_model(str(dest))
        else:  # treelite_checkpoint: scikit-learn through Treelite's importer, boosters through their files
            from_sklearn = type(estimator).__module__.startswith("sklearn")
            (treelite.sklearn.import_model(estimator) if from_sklearn else to_treelite(estimator)).serialize(str(dest))


class Clients:
    """tritonclient's HTTP and gRPC clients of one ``server``."""

    def __init__(self, server):
        self.server = server
        self.http = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        self.grpc = grpcclient.InferenceServerClient(server.grpc_url)

    def infer(self, protocol: str, model: str, x: np.ndarray) -> np.ndarray:
        """output__0 of one request holding ``x`` as input__0 (FP32)."""
        tensor = {"http": httpclient, "grpc": grpcclient}[protocol].InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return getattr(self, protocol).infer(model, [tensor]).as_numpy("output__0")

    def close(self) -> None:
        self.http.close()
        self.grpc.close()


@pytest.fixture(scope="module", params=FIL_BACKENDS, ids=["-".join(b) for b in FIL_BACKENDS])
def fil_clients(request, tmp_path_factory, models, triton_factory, fil_backend_kind):
    """A repository with every SERVED and REFUSED case, served by one Triton that loads the SERVED ones: its Clients."""
    backend, predictor = request.param
    root = tmp_path_factory.mktemp("fil-conformance")
    write_repository(root, models, SERVED + REFUSED)
    server = triton_factory(root, load_models=[c.name for c in SERVED], fil_compile=predictor == "compiled",
                            fil_backend=fil_backend_kind(backend))
    for case in SERVED:
        if predictor == "compiled":
            server.wait_compiled(case.name, timeout=900)
        assert server.predictor_state(case.name) == {1: predictor}, case.name
    assert server.fil_backend == backend and ("native backend" in server.log_file.read_text()) == (backend == "native")
    clients = Clients(server)
    yield clients
    clients.close()
    server.stop()


# -- references ----------------------------------------------------------------------------------
def conformance_rows(n: int = MAX_BATCH, seed: int = 5) -> np.ndarray:
    """Rows with NaN and +-Inf anywhere, unseen and negative category ids; rows 0-3: all NaN, 0, +Inf, -Inf."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, N_FEATURES)) * 2).astype(np.float32)
    x[:, CATEGORICAL] = rng.integers(-1, 14, n)
    x[rng.random(x.shape) < 0.12] = np.nan
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    x[0], x[1], x[2], x[3] = np.nan, 0.0, np.inf, -np.inf
    return x


def reference(case: Case, estimator, x: np.ndarray) -> np.ndarray:
    """What native FIL answers for ``x``, from the library's own predictions."""
    # Treelite's sklearn import sends NaN left, like -Inf; the boosters take NaN as missing
    rows = np.nan_to_num(x, nan=-BIG if case.model.startswith("sk_") else np.nan, posinf=BIG, neginf=-BIG)
    if not hasattr(estimator, "predict_proba"):
        return estimator.predict(rows).astype(np.float32)  # a regressor: [rows]
    if case.model == "lgbm_ova":  # native FIL's softmax, not the one-vs-all sigmoids
        proba = softmax(estimator.predict(rows, raw_score=True), axis=1)
    else:
        proba = estimator.predict_proba(rows)
    if case.expect == "label":
        return (proba[:, 1] > THRESHOLD).astype(np.float32)  # dims [1] -> [rows]
    if case.expect == "value" and MODEL_OUTPUTS[case.model] == 1:  # the model's own p
        return proba[:, 1]
    return proba


def assert_answers(case: Case, models: dict, x: np.ndarray, got: np.ndarray, protocol: str) -> None:
    """``got`` has native FIL's shape, dtype and answers within ATOL (labels away from the threshold)."""
    want, rows = reference(case, models[case.model], x), np.ones(len(x), dtype=bool)
    if case.expect == "label":
        rows = np.abs(reference(replace(case, expect="proba"), models[case.model], x)[:, 1] - THRESHOLD) > 1e-5
    assert got.dtype == np.float32 and got.shape == want.shape, (protocol, got.dtype, got.shape, want.shape)
    np.testing.assert_allclose(got[rows], want[rows], rtol=0, atol=ATOL, err_msg=f"{case.name} over {protocol}")


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", SERVED, ids=lambda c: c.name)
def test_answers_like_native_fil(case, protocol, models, fil_clients):
    """A full max_batch_size batch and one-row requests (all NaN, zeros, +Inf, -Inf): native FIL's answers."""
    x = conformance_rows()
    got = [fil_clients.infer(protocol, case.name, rows) for rows in (x, *np.split(x[:4], 4))]
    assert_answers(case, models, np.concatenate([x, x[:4]]), np.concatenate(got), protocol)


generated_rows = hnp.arrays(np.float32, st.tuples(st.integers(1, 64), st.just(N_FEATURES)), elements=st.one_of(
    st.floats(-6, 6, width=32), st.sampled_from([np.nan, np.inf, -np.inf])))


# not the categorical model: a fraction is no category id (conformance_rows sends it ids)
@pytest.mark.parametrize("case", [c for c in SERVED if c.model != "lgbm_cat"], ids=lambda c: c.name)
@given(x=generated_rows)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_rows_are_answered_like_native_fil(case, models, fil_clients, x):
    for protocol in ("http", "grpc"):
        assert_answers(case, models, x, fil_clients.infer(protocol, case.name, x), protocol)


def test_requests_batched_into_one_execute_get_their_own_answers(models, fil_clients):
    """Concurrent requests batched into one execute() each get their own answer, none an error."""
    inputs = [conformance_rows(seed=i)[4 : 5 + i % 3] for i in range(12)]

    def executions() -> int:
        stats = fil_clients.grpc.get_inference_statistics(BATCHED.name, as_json=True)["model_stats"][0]
        return int(stats.get("execution_count", 0))

    before = executions()
    with ThreadPoolExecutor(len(inputs)) as pool:  # all in flight at once; the gRPC client is thread-safe
        answers = list(pool.map(lambda x: fil_clients.infer("grpc", BATCHED.name, x), inputs))  # an error raises
    assert executions() - before < len(inputs), "requests were not batched together; the test proves nothing"
    for x, got in zip(inputs, answers, strict=True):
        assert_answers(BATCHED, models, x, got, "grpc")


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_refused_config_fails_to_load_with_the_reason(case, fil_clients):
    """A config native FIL refuses (or cannot serve) fails to load with the reason; loaded models keep serving."""
    http = fil_clients.http
    with pytest.raises(InferenceServerException) as info:
        http.load_model(case.name)
    for word in case.refused:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    assert not http.is_model_ready(case.name)
    assert http.is_model_ready(SERVED[0].name)


def test_fil_compiled_gauge_says_what_each_version_is_served_with(fil_clients):
    """fil_compiled{model, version} per loaded version: 1 compiled, 0 GTIL (FIL_COMPILE=0); none for refused ones."""
    text = urllib.request.urlopen(fil_clients.server.metrics_url, timeout=5).read().decode()
    [family] = [f for f in text_string_to_metric_families(text) if f.name == "fil_compiled"]
    assert family.type == "gauge"
    want = 1.0 if fil_clients.server.extra_env["FIL_COMPILE"] == "1" else 0.0
    got = {(s.labels["model"], s.labels["version"]): s.value for s in family.samples}
    assert got == {(c.name, "1"): want for c in SERVED}


@pytest.mark.parametrize("backend", ["native", "python"])
def test_uncached_model_serves_at_once_then_switches_to_compiled(tmp_path, triton_factory, fil_backend_kind, models,
                                                                backend):
    """Uncached: answers at once (GTIL), swaps to the compiled library; a restart finds it in the cache."""
    case, cache, x = SERVED[0], tmp_path / "cache", conformance_rows()
    write_repository(tmp_path / "repo", models, [case])
    start = dict(load_models=[case.name], fil_compile=True, fil_cache_dir=cache, fil_backend=fil_backend_kind(backend))
    srv = triton_factory(tmp_path / "repo", **start)
    clients = Clients(srv)
    assert_answers(case, models, x, clients.infer("http", case.name, x), "http")
    srv.wait_compiled(case.name, timeout=600)
    assert_answers(case, models, x, clients.infer("http", case.name, x), "http")
    assert list(cache.glob(f"*/{fil_forest.LIB_NAME}"))
    clients.close()
    srv.stop()
    again = triton_factory(tmp_path / "repo", **start)
    assert again.predictor_state(case.name) == {1: "compiled"}
    again.stop()
