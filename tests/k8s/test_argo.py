"""Training on the cluster: the namespace and service account exist where k8s/argo_template.py
sends Metaflow, and the flow compiles into an Argo WorkflowTemplate against a real local S3."""

from __future__ import annotations

import json
import re

import pytest

from k8s import argo_template
from tests.k8s import manifests as m


def test_training_namespace_matches_argo_settings():
    docs = m.build("training")
    assert m.find(docs, "Namespace", argo_template.DEFAULTS["namespace"])
    accounts = m.find(docs, "ServiceAccount", argo_template.DEFAULTS["service_account"])
    assert [a["metadata"]["namespace"] for a in accounts] == [argo_template.DEFAULTS["namespace"]]


@pytest.mark.slow
def test_argo_template_of_the_training_flow(tmp_path):
    """`make argo-template`: every step (foreach too) with its @resources, image, namespace, account and Secret."""
    out = tmp_path / "workflow-template.json"
    template = argo_template.build(tmp_path / "state", out)
    assert json.loads(out.read_text()) == template
    assert template["metadata"]["namespace"] == argo_template.DEFAULTS["namespace"]
    steps = argo_template.step_containers(template)
    assert {"start", "preprocess", "train", "eval", "deploy", "end"} <= set(steps)
    for name, container in steps.items():
        assert container["image"] == argo_template.DEFAULTS["image"], name
        secrets = [e["secretRef"]["name"] for e in container.get("envFrom") or [] if e.get("secretRef")]
        assert argo_template.DEFAULTS["secret"] in secrets, name
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        assert env.get("METAFLOW_DEFAULT_DATASTORE") == "s3", name
    accounts = {t.get("serviceAccountName") for t in template["spec"]["templates"] if t.get("container")}
    assert argo_template.DEFAULTS["service_account"] in accounts
    cpu, memory = re.search(r"@resources\(cpu=(\d+), memory=(\d+)\)", argo_template.FLOW.read_text()).groups()
    requests = steps["train"]["resources"]["requests"]
    assert float(requests["cpu"]) == float(cpu) and requests["memory"].startswith(memory)
