"""Parity: the real Triton with the local ``fil`` backend — the native C++ one and the Python
one — answers like each model's own ``predict_proba``, for every FIL model_type, over HTTP and
gRPC, on Hypothesis-generated rows and on one full ``max_batch_size`` batch; with Treelite
GTIL and with the compiled library.

Opt-in latency report (prints, asserts nothing)::

    FIL_LATENCY_REPORT=1 .venv/bin/python -m pytest tests/integration/test_backend_parity.py -k latency -s
"""

from __future__ import annotations

import http.client
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import treelite
import treelite.sklearn
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fraudml.tritonconfig import MODEL_FILENAMES, render_config
from serve.backends.fil import fil_forest

pytestmark = pytest.mark.slow

N_FEATURES = 30
MAX_BATCH = 4096
THRESHOLD = 0.3137  # unlikely to equal a predicted probability exactly
ATOL = 1e-5


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    model_type: str
    mode: str  # "proba" | "label" | "score"


FORMATS = [
    ("random_forest", "treelite_checkpoint"),
    ("extra_trees", "treelite_checkpoint"),
    ("xgboost", "xgboost_json"),
    ("xgboost", "xgboost_ubj"),
    ("xgboost", "xgboost"),
    ("xgboost", "treelite_checkpoint"),
    ("lightgbm", "lightgbm"),
    ("lightgbm", "treelite_checkpoint"),
]
VARIANTS = [Variant(f"{f}-{t}-proba".replace("_", "-"), f, t, "proba") for f, t in FORMATS] + [
    Variant(f"{f}-{t}-{mode}".replace("_", "-"), f, t, mode)
    for f, t in [("xgboost", "xgboost_json"), ("lightgbm", "lightgbm")]
    for mode in ("label", "score")
] + [
    # an sklearn forest has 2 model outputs: its "score" is both columns; a label output
    # would ignore the threshold (tests/integration/test_fil_conformance.py: refused)
    Variant("random-forest-treelite-checkpoint-score", "random_forest", "treelite_checkpoint", "score"),
]
# outputs per row of each family's Treelite form (its num_class)
MODEL_OUTPUTS = {"random_forest": 2, "extra_trees": 2, "xgboost": 1, "lightgbm": 1}


def train_families(seed: int = 42) -> dict:
    """Four small tree families on random, slightly non-linear data."""
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from xgboost import XGBClassifier

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    y = ((1.5 * X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3] + 0.5 * rng.normal(size=len(X))) > 1.0).astype(int)
    models = {
        "random_forest": RandomForestClassifier(n_estimators=20, max_depth=8, random_state=seed, n_jobs=1),
        "extra_trees": ExtraTreesClassifier(n_estimators=20, max_depth=8, random_state=seed, n_jobs=1),
        "xgboost": XGBClassifier(n_estimators=20, max_depth=4, random_state=seed, n_jobs=1),
        "lightgbm": LGBMClassifier(n_estimators=20, num_leaves=15, random_state=seed, n_jobs=1, verbose=-1),
    }
    return {name: model.fit(X, y) for name, model in models.items()}


def write_model_file(family: str, estimator, model_type: str, dest: Path) -> None:
    """Save ``estimator`` as FIL ``model_type`` at ``dest`` with the libraries' public APIs."""
    if family in ("random_forest", "extra_trees"):
        assert model_type == "treelite_checkpoint"
        treelite.sklearn.import_model(estimator).serialize(str(dest))
    elif family == "xgboost":
        booster = estimator.get_booster()
        if model_type in ("xgboost_json", "xgboost_ubj"):
            booster.save_model(str(dest))  # the extension picks the format
        elif model_type == "xgboost":
            with warnings.catch_warnings():  # the legacy binary format is deprecated; FIL still reads it
                warnings.simplefilter("ignore", UserWarning)
                dest.write_bytes(bytes(booster.save_raw(raw_format="deprecated")))
        else:
            json_path = dest.with_name("tmp.json")
            booster.save_model(str(json_path))
            treelite.frontend.load_xgboost_model(str(json_path), format_choice="json").serialize(str(dest))
            json_path.unlink()
    elif family == "lightgbm":
        if model_type == "lightgbm":
            estimator.booster_.save_model(str(dest))
        else:
            txt = dest.with_name("tmp.txt")
            estimator.booster_.save_model(str(txt))
            treelite.frontend.load_lightgbm_model(str(txt)).serialize(str(dest))
            txt.unlink()
    else:
        raise ValueError(family)


def write_repository(root: Path, models: dict, variants: list[Variant]) -> None:
    """A local Triton repository with one model per variant."""
    for v in variants:
        version_dir = root / v.name / "1"
        version_dir.mkdir(parents=True)
        path = version_dir / MODEL_FILENAMES[v.model_type]
        write_model_file(v.family, models[v.family], v.model_type, path)
        (root / v.name / "config.pbtxt").write_text(
            render_config(
                model_name=v.name,
                n_features=N_FEATURES,
                max_batch_size=MAX_BATCH,
                model_type=v.model_type,
                predict_proba=v.mode == "proba",
                output_class=v.mode != "score",
                threshold=THRESHOLD,
                versions=[1],
                n_model_outputs=MODEL_OUTPUTS[v.family],
            )
        )


def expected(variant: Variant, estimator, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected output__0, mask of rows to compare) from the model's own predict_proba.
    A one-value-per-row output comes back as shape [rows], as native FIL squeezes it."""
    proba = estimator.predict_proba(x)
    rows = np.ones(len(x), dtype=bool)
    if variant.mode == "proba":
        return proba, rows
    if variant.mode == "score":
        return (proba if MODEL_OUTPUTS[variant.family] == 2 else proba[:, 1]), rows
    # a label is only well defined away from the threshold (float32 vs float64 rounding)
    rows = np.abs(proba[:, 1] - THRESHOLD) > 1e-5
    return (proba[:, 1] > THRESHOLD).astype(np.float32), rows


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def families():
    return train_families()


@pytest.fixture(scope="module")
def fil_repository(tmp_path_factory, families):
    root = tmp_path_factory.mktemp("fil-repo")
    write_repository(root, families, VARIANTS)
    return root, [v.name for v in VARIANTS]


def check(variant: Variant, families, clients, x: np.ndarray) -> None:
    want, rows = expected(variant, families[variant.family], x)
    for protocol in ("http", "grpc"):
        got = clients.infer(protocol, variant.name, x)
        assert got.dtype == np.float32 and got.shape == want.shape, (protocol, got.shape, want.shape)
        np.testing.assert_allclose(got[rows], want[rows], rtol=0, atol=ATOL, err_msg=f"{variant.name} over {protocol}")


rows_strategy = hnp.arrays(
    np.float32,
    st.tuples(st.integers(min_value=1, max_value=64), st.just(N_FEATURES)),
    elements=st.floats(min_value=-6, max_value=6, width=32),
)


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
@given(x=rows_strategy)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_rows_match_predict_proba(variant, families, fil_clients, x):
    """Triton's output__0 equals the model's own predict_proba (label/score variants
    derived from it) on generated rows, over HTTP and gRPC."""
    check(variant, families, fil_clients, x)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_full_max_batch_size_batch_matches_predict_proba(variant, families, fil_clients):
    """One request of exactly max_batch_size rows is answered like predict_proba."""
    x = np.random.default_rng(7).normal(scale=2.0, size=(MAX_BATCH, N_FEATURES)).astype(np.float32)
    check(variant, families, fil_clients, x)


def test_responses_name_model_and_version(fil_clients):
    """Every answer carries model_name and model_version (the lineage key)."""
    http = fil_clients.http
    tensor = httpclient.InferInput("input__0", [1, N_FEATURES], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, N_FEATURES), np.float32))
    response = http.infer(VARIANTS[0].name, [tensor]).get_response()
    assert response["model_name"] == VARIANTS[0].name and response["model_version"] == "1"


@pytest.mark.parametrize("backend", ["native", "python"])
def test_uncached_model_serves_at_once_then_switches_to_compiled(tmp_path, triton_factory, fil_backend_kind, families, backend):
    """Without a cached library the model answers immediately (GTIL), compiles in the
    background, swaps to the compiled library, and a restart finds it in the cache."""
    variant = VARIANTS[0]
    write_repository(tmp_path / "repo", families, [variant])
    cache = tmp_path / "cache"
    backend = fil_backend_kind(backend)
    srv = triton_factory(tmp_path / "repo", load_models=[variant.name], fil_compile=True, fil_cache_dir=cache,
                         fil_backend=backend)
    http = httpclient.InferenceServerClient(srv.http_url.removeprefix("http://"))
    x = np.random.default_rng(11).normal(size=(50, N_FEATURES)).astype(np.float32)
    tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    want, _ = expected(variant, families[variant.family], x)
    np.testing.assert_allclose(http.infer(variant.name, [tensor]).as_numpy("output__0"), want, atol=ATOL)
    srv.wait_compiled(variant.name, timeout=600)
    np.testing.assert_allclose(http.infer(variant.name, [tensor]).as_numpy("output__0"), want, atol=ATOL)
    assert list(cache.glob(f"*/{fil_forest.LIB_NAME}"))
    http.close()
    srv.stop()
    again = triton_factory(tmp_path / "repo", load_models=[variant.name], fil_compile=True, fil_cache_dir=cache,
                           fil_backend=backend)
    assert again.predictor_state(variant.name) == {1: "compiled"}
    again.stop()


# -- latency report (opt-in) ---------------------------------------------------------------------
def _raw_http_p50(port: int, model: str, x: np.ndarray, n: int) -> list[float]:
    """Sequential one-row requests over one keep-alive connection, binary tensor protocol."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    header = json.dumps(
        {
            "inputs": [{"name": "input__0", "shape": [1, N_FEATURES], "datatype": "FP32", "parameters": {"binary_data_size": 4 * N_FEATURES}}],
            "outputs": [{"name": "output__0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    times = []
    for i in range(n):
        body = header + x[i % len(x)].tobytes()
        started = time.perf_counter()
        conn.request("POST", f"/v2/models/{model}/infer", body, headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        assert response.status == 200
    conn.close()
    return times


@pytest.mark.skipif(os.environ.get("FIL_LATENCY_REPORT") != "1", reason="set FIL_LATENCY_REPORT=1 to measure")
def test_latency_report(tmp_path, triton_factory, fil_cache_dir):
    """p50 of 2000 sequential one-row HTTP requests, 100-tree depth-10 RF: a no-op Python
    model (the Python backend's floor), GTIL and compiled. Reports, asserts nothing."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, N_FEATURES)).astype(np.float32)
    y = ((X[:, 0] + X[:, 1] * X[:, 2] + 0.5 * rng.normal(size=len(X))) > 1.5).astype(int)
    rf = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=2).fit(X, y)
    repo = tmp_path / "repo"
    (repo / "rf100" / "1").mkdir(parents=True)
    path = repo / "rf100" / "1" / "checkpoint.tl"
    treelite.sklearn.import_model(rf).serialize(str(path))
    (repo / "rf100" / "config.pbtxt").write_text(render_config(model_name="rf100", versions=[1]))
    (repo / "noop" / "1").mkdir(parents=True)
    (repo / "noop" / "1" / "model.py").write_text(
        "import numpy as np\nimport triton_python_backend_utils as pb_utils\n"
        "class TritonPythonModel:\n"
        "    def execute(self, requests):\n"
        "        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor('output__0', np.zeros((1, 2), np.float32))]) for _ in requests]\n"
    )
    (repo / "noop" / "config.pbtxt").write_text(
        render_config(model_name="noop", versions=[1]).replace('backend: "fil"', 'backend: "python"')
    )
    cache = tmp_path / "cache"
    started = time.monotonic()
    fil_forest.compile_model(fil_forest.load_model(path, "treelite_checkpoint"), fil_forest.file_sha256(path), cache, jobs=os.cpu_count() or 1)
    compile_s = time.monotonic() - started
    gtil = triton_factory(repo, load_models=["rf100", "noop"], fil_compile=False)
    compiled = triton_factory(repo, load_models=["rf100"], fil_compile=True, fil_cache_dir=cache)
    assert compiled.predictor_state("rf100") == {1: "compiled"}
    rows = X[:1000]
    results: dict[str, list[float]] = {"noop (Python backend floor)": [], "GTIL": [], "compiled": []}
    for _ in range(10):  # interleaved blocks: same machine noise for all three
        results["noop (Python backend floor)"] += _raw_http_p50(gtil.http_port, "noop", rows, 200)
        results["GTIL"] += _raw_http_p50(gtil.http_port, "rf100", rows, 200)
        results["compiled"] += _raw_http_p50(compiled.http_port, "rf100", rows, 200)
    print(f"\ncompile (tl2cgen + gcc, in process): {compile_s:.1f} s; Triton ready: GTIL {gtil.startup_seconds:.2f} s, compiled {compiled.startup_seconds:.2f} s")
    for name, times in results.items():
        ms = np.array(times) * 1e3
        print(f"{name:28s} n={len(ms)} p50 {np.percentile(ms, 50):.3f} ms  p90 {np.percentile(ms, 90):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms")
