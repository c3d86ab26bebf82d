"""The Triton pods: probes, the reconciler beside Triton, FIL threads from the CPU limit, the
objects that point at the pods, and the start script run for real (with a stand-in tritonserver,
and its flags checked against the real binary)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from fraudml.tritonconfig import MODEL_NAME
from serve.triton import bundle_paths
from tests.k8s import manifests as m

LIVENESS_BUDGET_S = 20  # periodSeconds x failureThreshold: a hung Triton is restarted within this


@pytest.mark.parametrize("rel", m.TRITON_OVERLAYS)
def test_probes_are_quick_and_on_model_readiness(rel):
    """Model readiness, not /v2/health/ready: that is 400 after a refused load while the old version serves (R1)."""
    triton = m.container(m.build(rel), "triton", "triton")
    ready = {"path": f"/v2/models/{MODEL_NAME}/ready", "port": "http"}
    assert triton["startupProbe"]["httpGet"] == triton["readinessProbe"]["httpGet"] == ready
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert triton["startupProbe"]["periodSeconds"] <= 5 and triton["readinessProbe"]["periodSeconds"] <= 5
    live = triton["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] <= LIVENESS_BUDGET_S
    assert triton["args"] == ["/bin/sh", "/opt/fraudml/triton-entrypoint.sh"]


@pytest.mark.parametrize("rel", m.TRITON_OVERLAYS)
def test_every_pod_runs_a_reconciler_beside_triton(rel):
    """Same repository and identity, its own Triton on localhost, canary share from the pod name, metrics."""
    docs = m.build(rel)
    reconciler = m.container(docs, "triton", "reconciler")
    assert reconciler["command"][:4] == ["python", "-m", "serve.reconciler", "run"]
    assert "--triton-url" not in reconciler["command"]  # default: http://127.0.0.1:8000, its own Triton
    env = {e["name"]: e.get("valueFrom") for e in reconciler["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert reconciler["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "reconciler"}
    assert m.find(docs, "Job") == [], "no roll-out Job: the reconcilers converge by themselves"
    assert m.configmap(docs, "triton-entrypoint")["data"]["triton-entrypoint.sh"] == m.ENTRYPOINT.read_text()


@pytest.mark.parametrize("rel", m.TRITON_OVERLAYS)
def test_fil_threads_follow_the_cpu_limit(rel):
    """Native FIL runs omp_get_max_threads() threads: one per core of the CPU limit, not of the node."""
    triton = m.container(m.build(rel), "triton", "triton")
    (omp,) = [e for e in triton["env"] if e["name"] == "OMP_NUM_THREADS"]
    assert omp["valueFrom"]["resourceFieldRef"] == {"containerName": "triton", "resource": "limits.cpu", "divisor": "1"}
    assert triton["resources"]["limits"]["cpu"]


@pytest.mark.parametrize("rel", m.TRITON_OVERLAYS)
def test_service_pdb_hpa_and_servicemonitor_point_at_the_pods(rel):
    docs = m.build(rel)
    dep = m.one(docs, "Deployment", "triton")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    selects = lambda selector: bool(selector) and selector.items() <= labels.items()  # noqa: E731
    assert selects(dep["spec"]["selector"]["matchLabels"])
    assert [s["metadata"]["name"] for s in m.find(docs, "Service") if selects(s["spec"]["selector"])] == ["triton"]
    assert selects(m.one(docs, "PodDisruptionBudget", "triton")["spec"]["selector"]["matchLabels"])
    hpa = m.one(docs, "HorizontalPodAutoscaler", "triton")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "triton" and hpa["minReplicas"] >= 2
    metrics = {x["pods"]["metric"]["name"] if x["type"] == "Pods" else x["resource"]["name"] for x in hpa["metrics"]}
    assert metrics == {"triton_queue_time_per_request_us", "cpu"}
    service_labels = m.one(docs, "Service", "triton")["metadata"]["labels"]
    for sm in m.find(docs, "ServiceMonitor"):
        assert sm["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
        assert {e["port"] for e in sm["spec"]["endpoints"]} == {"metrics", "reconciler"}


# -- the start script ----------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint, repository", [
    (None, "s3://models/triton"),
    ("http://s3.storage:8333/", "s3://http://s3.storage:8333/models/triton"),
    ("https://minio.example.com", "s3://https://minio.example.com:443/models/triton"),
    ("http://minio.internal", "s3://http://minio.internal:80/models/triton"),
])
def test_entrypoint_command_line(endpoint, repository):
    """Triton reads s3://scheme://host:port/: without a port the bucket would become one, so the default is
    written out. Without an API key (compose on 127.0.0.1) nothing is restricted, with a warning."""
    proc = m.entrypoint(MODEL_REPO="s3://models/triton", **({"AWS_ENDPOINT_URL": endpoint} if endpoint else {}))
    args = proc.stdout.splitlines()
    assert f"--model-repository={repository}" in args, proc.stderr
    assert {"--model-control-mode=explicit", "--load-model=fraud-classifier", "--http-port=8000", "--grpc-port=8001",
            "--metrics-port=8002", "--metrics-config=summary_latencies=true"} <= set(args)
    assert not [a for a in args if "restricted" in a] and "TRITON_API_KEY is not set" in proc.stderr


@pytest.mark.parametrize("env, named", [
    ({"MODEL_REPO": "s3://models/triton", "AWS_ENDPOINT_URL": "https://minio.example.com/s3"}, "AWS_ENDPOINT_URL"),
    ({"MODEL_REPO": "s3://models/triton", "AWS_ENDPOINT_URL": "minio.example.com:9000"}, "AWS_ENDPOINT_URL"),
    ({"MODEL_REPO": "s3://models/triton", "TRITON_API_KEY": "a b"}, "TRITON_API_KEY"),
    ({}, "MODEL_REPO"),
], ids=["endpoint with a path", "endpoint without a scheme", "API key never into a flag unchecked", "no repository"])
def test_entrypoint_refuses_what_triton_would_misread_or_lack(env, named):
    proc = m.entrypoint(**env)
    assert proc.returncode != 0 and named in proc.stderr


def test_entrypoint_flags_exist_in_tritonserver():
    """The 2.51 bundled in nvidia-pytriton accepts every flag (the pinned, newer NGC image keeps them)."""
    bundle, libs = bundle_paths()
    proc = subprocess.run([str(bundle / "bin" / "tritonserver"), "--help"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "LD_LIBRARY_PATH": str(libs)})
    known = set(re.findall(r"^\s+(--[a-z0-9-]+)", proc.stdout + proc.stderr, re.MULTILINE))
    used = set(re.findall(r"(--[a-z0-9-]+)=", m.ENTRYPOINT.read_text()))
    assert "--model-repository" in known and used and used <= known, sorted(used - known)
