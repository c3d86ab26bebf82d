"""End to end on real parts: flow -> SeaweedFS S3 -> Triton -> response -> lineage -> run.

Then, on the same running Triton: a new version and a rollback while a request loop runs
(zero failed requests). Corrupt versions refused while the old one keeps serving:
tests/reliability/test_faults_model.py; concurrent publishes to S3: test_faults_deploy.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from fraudml.data import FEATURES, generate_dataset
from fraudml.repository import ModelRepository
from fraudml.triton_control import load_model
from serve.client import infer
from tests.reliability.rig import RequestLoop

ROOT = Path(__file__).resolve().parents[2]
# the repository commands get the S3 writer's AWS_* in os.environ, as `make` gives them
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("publisher_env")]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def e2e(s3_server, metaflow_local):
    """The real flow trained on a tiny dataset and published to a fresh prefix on the real S3; the commands run
    in metaflow_local's folder, where its local datastore is."""
    csv = metaflow_local[0] / "tiny.csv"
    df = generate_dataset(rows=6000, fraud_rate=0.02, seed=3)
    df.to_csv(csv, index=False)
    repo_uri = f"s3://models/e2e-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **s3_server.env(), "MODEL_REPO": repo_uri}  # os.environ: metaflow_local's METAFLOW_*
    flow = [str(ROOT / "train" / "flow.py"), "--quiet", "run", "--data", str(csv), "--models", "random_forest,lightgbm"]
    _run([sys.executable, *flow, "--cv-folds", "2", "--n-iter", "1", "--model-repo", repo_uri], env, timeout=600)
    return {"csv": csv, "df": df, "repo_uri": repo_uri, "env": env}


@pytest.fixture(scope="module")
def triton(e2e, triton_factory, s3_server):
    return triton_factory(e2e["repo_uri"], env=s3_server.env(reader=True))  # Triton reads, never writes


@pytest.fixture
def cli_env(e2e, triton) -> dict[str, str]:
    """The environment of the serve.* commands: the module's, with this Triton's ports."""
    return {**e2e["env"], "TRITON_HTTP_PORT": str(triton.http_port), "TRITON_GRPC_PORT": str(triton.grpc_port)}


def test_client_answers_and_lineage_leads_back_to_the_run(e2e, cli_env):
    """The client CLI: answer + lineage line; then the lineage CLI proves the run behind it."""
    lineage = ModelRepository(e2e["repo_uri"]).read_lineage()
    saved = e2e["csv"].parent / "response.json"
    out = _run([sys.executable, "-m", "serve.client", "--data", str(e2e["csv"]), "--rows", "6",
                "--save", str(saved)], cli_env).stdout
    assert f"fraud-classifier/1 -> {lineage['pathspec']}" in out
    response = json.loads(saved.read_text())
    assert response["model_version"] == 1 and len(response["rows"]) == 6
    assert response["threshold"] == lineage["threshold"]  # read from config.pbtxt, written by the run

    lineage_cmd = [sys.executable, "-m", "serve.lineage", "--response", str(saved), "--json"]
    proof = json.loads(_run(lineage_cmd, cli_env).stdout)
    assert proof["lineage"]["pathspec"] == lineage["pathspec"]
    assert proof["verification"]["ok"], proof["verification"]
    assert {"dataset fingerprint matches", "published model file == the run's model_checkpoint artifact"} <= {
        c["check"] for c in proof["verification"]["checks"] if c["ok"]}


_RUN_PROBA = """
import json, sys
import numpy as np
from metaflow import Run, namespace
namespace(None)
x = np.asarray(json.load(sys.stdin), dtype=np.float32)
print(json.dumps(Run(sys.argv[1]).data.best_pipeline.predict_proba(x)[:, 1].tolist()))
"""


def test_raw_rows_straight_to_triton_equal_the_runs_pipeline(e2e, triton):
    """Raw CSV rows (NaN = missing included), untransformed, give the run's own predict_proba over HTTP and gRPC."""
    df = e2e["df"]
    x = np.vstack([df[df["Class"] == 1].head(32)[FEATURES], df.head(224)[FEATURES]]).astype(np.float32)
    x[200:, :][np.random.default_rng(1).random((56, 30)) < 0.2] = np.nan  # NaN = missing, answered like the pipeline
    served = ModelRepository(e2e["repo_uri"]).read_lineage()["pathspec"]
    result = subprocess.run([sys.executable, "-c", _RUN_PROBA, served], input=json.dumps(x.tolist()), env=e2e["env"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = np.asarray(json.loads(result.stdout))
    for protocol, url in (("http", triton.http_url), ("grpc", triton.grpc_url)):
        got = infer(x, url=url, protocol=protocol, model_name="fraud-classifier").probabilities
        assert np.max(np.abs(got - expected)) <= 1e-5
    assert expected.max() > 0.5 > expected.min()  # real frauds and legit rows, not a constant


def test_client_answers_with_only_triton_when_s3_is_down(e2e, cli_env):
    """S3 unreachable: answer and threshold (model config) still come; a note replaces the lineage line."""
    env = {**cli_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    for protocol in ("http", "grpc"):
        out = json.loads(_run([sys.executable, "-m", "serve.client", "--data", str(e2e["csv"]), "--rows", "4",
                               "--protocol", protocol, "--json"], env).stdout)
        assert (out["model_name"], out["model_version"], len(out["rows"])) == ("fraud-classifier", 1, 4)
        assert 0.0 < out["threshold"] < 1.0
        assert out["lineage"]["pathspec"] is None
        assert out["lineage"]["line"].startswith("lineage: not available") and "needs only Triton" in out["lineage"]["line"]


def test_new_version_and_rollback_without_a_failed_request(e2e, triton, cli_env):
    repo = ModelRepository(e2e["repo_uri"])
    x = e2e["df"].head(1)[FEATURES].to_numpy(np.float32)  # a raw row: the served model needs no transform
    with RequestLoop(triton.http_url, x) as loop:
        loop.wait_for(lambda lp: lp.versions[-1:] == [1], "v1 answering")
        lineage = repo.read_lineage(1)  # the new version: v1's files, lineage and config again
        record = {k: v for k, v in lineage.items() if k not in ("version", "files", "published_at", "triton_config")}
        new = repo.publish({name: repo.read_file(1, name) for name in lineage["files"]},
                           {**record, "note": "republished by the hot-swap test"}, lineage["triton_config"])
        load_model(triton.http_url, "fraud-classifier")  # as `serve.models load`; the rollback: through roll_out
        loop.wait_for(lambda lp: lp.versions[-1:] == [new], f"v{new} answering")

        _run([sys.executable, "-m", "serve.models", "rollback", "--version", "1"], cli_env)
        loop.wait_for(lambda lp: lp.versions[-1:] == [1], "v1 answering after the rollback")
        assert repo.served_version() == 1
        loop.wait_answers(50)
    assert loop.failures == [], loop.failures[:3]
    seen = [v for i, v in enumerate(loop.versions) if i == 0 or loop.versions[i - 1] != v]
    assert seen == [1, new, 1], seen
