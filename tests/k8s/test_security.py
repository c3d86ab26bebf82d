"""Who may do what in the cluster (docs/security.md): restricted pods with limits, credentials
only from Secrets, the serving pods with the read-only S3 identity, the API key in front of
HTTP inference and model loading, and NetworkPolicies in front of every port."""

from __future__ import annotations

import copy
import re

import pytest

from tests.k8s import manifests as m

SECRET_ENV = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|API_KEY|PRIVATE_KEY)", re.IGNORECASE)


def pod_security_problems(docs) -> list[str]:
    problems = [f"renders Secret/{d['metadata']['name']}: create Secrets with kubectl" for d in m.find(docs, "Secret")]
    for where, pod in m.pods(docs):
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            problems.append(f"{where}: pod securityContext needs runAsNonRoot and a non-zero runAsUser")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        for c in m.containers(pod):
            sc, who = c.get("securityContext", {}), f"{where}/{c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{who}: allowPrivilegeEscalation false and readOnlyRootFilesystem true")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or sc.get("runAsNonRoot") is False:
                problems.append(f"{who}: capabilities must drop ALL; never root")
            problems += [f"{who}: resources.{kind} lacks cpu or memory" for kind in ("requests", "limits")
                         if {"cpu", "memory"} - set(c.get("resources", {}).get(kind, {}))]
            problems += [f"{who}: {e['name']} is a literal; take it from a Secret" for e in c.get("env", [])
                         if SECRET_ENV.search(e["name"]) and "value" in e]
    return problems


@pytest.mark.parametrize("rel", m.KUSTOMIZATIONS)
def test_pods_run_restricted_with_limits_and_secret_refs(rel):
    assert pod_security_problems(m.build(rel)) == []


def test_pod_security_catches_root_literal_secrets_and_missing_limits():
    docs = copy.deepcopy(list(m.build("benchmark")))
    pod = m.one(docs, "Deployment", "fastapi-baseline")["spec"]["template"]["spec"]
    pod["securityContext"]["runAsNonRoot"] = False
    c = pod["containers"][0]
    c["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"})
    del c["resources"]["limits"]
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"k": "v"}})
    problems = " ".join(pod_security_problems(docs))
    for expected in ("runAsNonRoot", "literal", "resources.limits", "renders Secret/s3"):
        assert expected in problems


@pytest.mark.parametrize("rel", [*m.TRITON_OVERLAYS, "benchmark"])
def test_serving_pods_hold_only_the_read_only_s3_identity_and_the_api_key(rel):
    """Only the publisher holds the writer key (fraudml-s3); temporary credentials work (optional session token);
    Triton and its reconciler hold TRITON_API_KEY from its Secret (not optional)."""
    for where, pod in m.pods(m.build(rel)):
        for c in [c for c in pod["containers"] if c["name"] != "locust"]:
            refs = {e["name"]: (r["name"], r["key"], bool(r.get("optional"))) for e in c.get("env", [])
                    if (r := (e.get("valueFrom") or {}).get("secretKeyRef"))}
            assert {name for name, _, _ in refs.values() if name.startswith("fraudml-s3")} == {"fraudml-s3-readonly"}
            assert refs["AWS_SESSION_TOKEN"] == ("fraudml-s3-readonly", "AWS_SESSION_TOKEN", True), where
            if c["name"] in ("triton", "reconciler"):
                assert refs["TRITON_API_KEY"] == ("fraudml-triton-api", "TRITON_API_KEY", False), where


def test_the_start_script_restricts_http_inference_and_model_loading_to_the_api_key():
    args = m.entrypoint(MODEL_REPO="s3://b/p", TRITON_API_KEY="k3y").stdout.splitlines()
    restriction = "fraudml-api-key=k3y"
    assert f"--http-restricted-api=inference,model-repository,shared-memory,trace,logging:{restriction}" in args
    assert f"--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:{restriction}" in args


def test_network_policies_admit_only_clients_and_monitoring():
    docs = m.build("overlays/cpu")
    deny = m.one(docs, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    triton = m.one(docs, "NetworkPolicy", "triton")["spec"]
    assert triton["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "triton"}
    rules = {tuple(sorted(p["port"] for p in rule["ports"])): rule["from"] for rule in triton["ingress"]}
    clients = {"matchLabels": {"fraudml.io/triton-client": "true"}}
    assert rules[("grpc", "http")] == [{"namespaceSelector": {}, "podSelector": clients}]
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert rules[("metrics", "reconciler")] == [{"namespaceSelector": monitoring}]
    container_ports = {p["name"] for name in ("triton", "reconciler")
                       for p in m.container(docs, "triton", name)["ports"]}
    assert {p for ports in rules for p in ports} == container_ports  # every port behind one rule
    bench = m.build("benchmark")
    (locust,) = m.find(bench, "Job", "locust")
    assert locust["spec"]["template"]["metadata"]["labels"]["fraudml.io/triton-client"] == "true"
    assert m.find(bench, "NetworkPolicy", "fastapi-baseline")
