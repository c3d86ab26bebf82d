"""Every kustomization renders and validates strictly; every Dockerfile is hadolint-clean; the
checks themselves catch what they are for (a mutated copy fails)."""

from __future__ import annotations

import copy

import pytest

from tests.k8s import manifests as m


@pytest.mark.parametrize("rel", m.KUSTOMIZATIONS)
def test_kustomization_builds_and_validates_strict(rel):
    docs = m.build(rel)
    assert docs, f"k8s/{rel} renders nothing"
    problems = [f"{d['kind']}/{d['metadata']['name']}: {e}" for d in docs for e in m.validate(d)]
    assert problems == []


def test_every_kustomization_is_checked():
    """A kustomization added under k8s/ but not to KUSTOMIZATIONS would go unchecked."""
    found = {str(p.parent.relative_to(m.K8S)) for p in m.K8S.rglob("kustomization.yaml")}
    components = {str(p.parent.relative_to(m.K8S)) for p in m.K8S.rglob("kustomization.yaml")
                  if "kind: Component" in p.read_text()}
    assert found - components - {"base"} == set(m.KUSTOMIZATIONS)


def test_strict_validation_rejects_an_unknown_field_and_an_unknown_kind():
    dep = copy.deepcopy(m.one(m.build("overlays/cpu"), "Deployment", "triton"))
    dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRot"] = True
    assert "runAsNonRot" in m.validate(dep)[0]
    (error,) = m.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert "no schema" in error


def test_custom_resources_are_checked_against_their_crd_schema():
    docs = m.build("overlays/monitored")
    (sm,) = m.find(docs, "ServiceMonitor")
    (rule,) = m.find(docs, "PrometheusRule")
    typo = copy.deepcopy(sm)
    typo["spec"]["endpoints"][0]["prot"] = typo["spec"]["endpoints"][0].pop("port")
    assert any("prot" in e for e in m.validate(typo))
    slow = copy.deepcopy(sm)
    slow["spec"]["endpoints"][0].update(interval="5s", scrapeTimeout="10s")
    assert any("scrapeTimeout" in e for e in m.validate(slow))
    bad_for = copy.deepcopy(rule)
    bad_for["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert m.validate(bad_for)
    no_expr = copy.deepcopy(rule)
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    assert any("expr" in e for e in m.validate(no_expr))


def test_the_base_applies_without_the_prometheus_operator():
    """Custom resources only in the optional component: a cluster without the operator's CRDs
    applies the cpu and gpu overlays, the benchmark and the monitoring ConfigMaps."""
    for rel in ("overlays/cpu", "overlays/gpu", "benchmark", "monitoring", "training"):
        assert {d["apiVersion"] for d in m.build(rel)} <= {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
                                                           "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}, rel


@pytest.mark.parametrize("dockerfile", sorted(m.DOCKER.glob("Dockerfile*")), ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    assert m.hadolint(dockerfile) == []


def test_hadolint_reports_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    findings = " ".join(m.hadolint(bad))
    assert "DL3006" in findings and "DL3013" in findings
