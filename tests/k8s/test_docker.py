"""docker/: the Compose stack and the FastAPI launcher of the fraudml-bench image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from docker import serve_baseline  # docker/serve_baseline.py of this repository, not the Docker SDK
from fraudml.tritonconfig import MODEL_NAME, render_config
from tests.k8s import manifests as m

COMPOSE = m.DOCKER / "compose.yaml"


def test_compose_has_the_stack_no_credentials_and_cards_outside_the_read_only_project():
    """Literal credentials only as ${...}; the project is mounted read-only, so Metaflow's cards,
    which would go to .metaflow/ below it, go to /tmp."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"s3", "triton", "reconciler", "fastapi", "locust", "train"} <= set(services)
    for line in COMPOSE.read_text().splitlines():
        if "AWS_SECRET_ACCESS_KEY:" in line or "AWS_ACCESS_KEY_ID:" in line or "TRITON_API_KEY:" in line:
            assert "${" in line, f"a literal credential in compose.yaml: {line.strip()}"
    assert any(v.endswith(":ro") for v in services["train"]["volumes"])
    assert services["train"]["environment"]["METAFLOW_CARD_LOCALROOT"].startswith("/tmp/")


def test_compose_config_is_valid():
    """`docker compose config` when a Compose v2 binary is installed; none ships with the project."""
    for cmd in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no Docker Compose v2 binary on this machine: compose.yaml is checked by YAML and pin tests only")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    proc = subprocess.run([*cmd, "-f", str(COMPOSE), "--profile", "bench", "--profile", "train", "config", "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_fastapi_launcher_fetches_the_served_version(tmp_path):
    """The baseline in a container serves the version config.pbtxt names, like Triton."""
    model = tmp_path / "repo" / MODEL_NAME
    for version in (1, 2, 3):
        (model / str(version)).mkdir(parents=True)
        (model / str(version) / "checkpoint.tl").write_bytes(f"model {version}".encode())
    (model / "config.pbtxt").write_text(render_config(versions=[2]))
    env = serve_baseline.model_env({"MODEL_REPO": str(tmp_path / "repo"), "BENCH_MODEL_DIR": str(tmp_path / "dl")})
    assert env["BENCH_MODEL_VERSION"] == "2" and env["BENCH_MODEL_TYPE"] == "treelite_checkpoint"
    assert Path(env["BENCH_MODEL_FILE"]).read_bytes() == b"model 2"
    local = {"BENCH_MODEL_FILE": "/m/checkpoint.tl"}
    assert serve_baseline.model_env(local) == local


def test_fastapi_launcher_says_when_nothing_is_published(tmp_path):
    (tmp_path / "repo").mkdir()
    with pytest.raises(RuntimeError, match="no version"):
        serve_baseline.model_env({"MODEL_REPO": str(tmp_path / "repo")})
    with pytest.raises(RuntimeError, match="MODEL_REPO"):
        serve_baseline.model_env({})
