"""Bad requests get a Triton error that says what is wrong, and the server keeps serving —
with both fil backends (native C++, Python), with Treelite GTIL and with the compiled
library, over HTTP and gRPC. NaN and +-Inf are not
bad input: native FIL takes NaN as a missing value (see test_fil_conformance.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import treelite.sklearn
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fraudml.tritonconfig import render_config

pytestmark = pytest.mark.slow

N_FEATURES = 30
MAX_BATCH = 64
MODEL = "tiny"
BATCHING_MODEL = "tiny-batching"  # holds requests 50 ms so concurrent ones share one execute()


@pytest.fixture(scope="module")
def forest():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    X = rng.normal(size=(1000, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0, n_jobs=1).fit(X, y)


@pytest.fixture(scope="module")
def fil_repository(tmp_path_factory, forest):
    root = tmp_path_factory.mktemp("bad-requests-repo")
    for name, delay in ((MODEL, 0), (BATCHING_MODEL, 50_000)):
        (root / name / "1").mkdir(parents=True)
        treelite.sklearn.import_model(forest).serialize(str(root / name / "1" / "checkpoint.tl"))
        (root / name / "config.pbtxt").write_text(
            render_config(model_name=name, max_batch_size=MAX_BATCH, max_queue_delay_us=delay, versions=[1])
        )
    return root, [MODEL, BATCHING_MODEL]


def assert_still_serving(clients, protocol: str, forest) -> None:
    x = np.random.default_rng(0).normal(size=(3, N_FEATURES)).astype(np.float32)
    np.testing.assert_allclose(clients.infer(protocol, MODEL, x), forest.predict_proba(x), atol=1e-5)


def rows(n: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, N_FEATURES)).astype(np.float32)


BAD = {
    # name: (input, datatype, model, words the error must contain)
    "too-few-features": (np.zeros((2, N_FEATURES - 1), np.float32), "FP32", MODEL, ["input__0", "shape"]),
    "too-many-features": (np.zeros((2, N_FEATURES + 3), np.float32), "FP32", MODEL, ["input__0", "shape"]),
    "no-batch-dimension": (np.zeros((N_FEATURES,), np.float32), "FP32", MODEL, ["input__0"]),
    "fp64": (np.zeros((2, N_FEATURES), np.float64), "FP64", MODEL, ["input__0", "FP64", "FP32"]),
    "int32": (np.zeros((2, N_FEATURES), np.int32), "INT32", MODEL, ["input__0", "INT32", "FP32"]),
    "over-max-batch-size": (np.zeros((MAX_BATCH + 1, N_FEATURES), np.float32), "FP32", MODEL, ["batch", str(MAX_BATCH)]),
    "unknown-model": (rows(), "FP32", "no-such-model", ["no-such-model"]),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_gets_a_clear_error_and_server_keeps_serving(fil_clients, forest, protocol, case):
    """Each bad request fails with a client error (HTTP 4xx / gRPC INVALID_ARGUMENT or
    NOT_FOUND) naming the problem; a good one then succeeds."""
    x, datatype, model, words = BAD[case]
    with pytest.raises(InferenceServerException) as info:
        fil_clients.infer(protocol, model, x, datatype)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    status = str(info.value.status())
    assert status.startswith("4") if protocol == "http" else status in ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.UNAVAILABLE"), status
    assert_still_serving(fil_clients, protocol, forest)


def with_nan(seed: int, n: int) -> np.ndarray:
    """Rows holding NaN and +-Inf: valid input, as for native FIL (NaN is a missing value)."""
    x = np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, seed % N_FEATURES] = np.nan
    x[0, (seed + 1) % N_FEATURES] = np.inf
    x[-1, (seed + 2) % N_FEATURES] = -np.inf
    return x


def sklearn_reference(forest, x: np.ndarray) -> np.ndarray:
    """predict_proba as native FIL answers it: Treelite imports sklearn splits with NaN going
    left (x <= threshold), i.e. like -Inf; +-Inf compare like huge numbers."""
    return forest.predict_proba(np.nan_to_num(x, nan=-1e30, posinf=1e30, neginf=-1e30))


def test_nan_rows_in_a_dynamic_batch_are_answered(fil_clients, forest):
    """Concurrent requests batched into one execute(): the ones holding NaN/Inf get the
    default-branch answer, the others their usual one; nobody gets an error."""
    grpc = fil_clients.grpc
    inputs = [np.random.default_rng(i).normal(size=(i % 3 + 1, N_FEATURES)).astype(np.float32) for i in range(12)]
    nan_at = {3, 8}
    for i in nan_at:
        inputs[i] = with_nan(i, 4)
    before = grpc.get_inference_statistics(BATCHING_MODEL, as_json=True)["model_stats"][0]
    done = threading.Semaphore(0)
    results: dict[int, object] = {}

    def callback(i, result, error):
        results[i] = error if error is not None else result.as_numpy("output__0")
        done.release()

    for i, x in enumerate(inputs):  # gRPC's async_infer: all in flight at once
        tensor = grpcclient.InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        grpc.async_infer(BATCHING_MODEL, [tensor], callback=lambda result, error, i=i: callback(i, result, error))
    for _ in inputs:
        assert done.acquire(timeout=60), "a request got no answer"
    after = grpc.get_inference_statistics(BATCHING_MODEL, as_json=True)["model_stats"][0]
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
    assert executions < len(inputs), "requests were not batched together; the test proves nothing"
    for i, x in enumerate(inputs):
        assert not isinstance(results[i], Exception), results[i]
        np.testing.assert_allclose(results[i], sklearn_reference(forest, x), atol=1e-5)
