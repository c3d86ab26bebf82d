"""Every kustomization renders and validates strictly; every Dockerfile is hadolint-clean; the
checks themselves catch what they are for (a mutated copy fails)."""

from __future__ import annotations

import copy

import pytest

from tests.k8s import manifests as m


@pytest.mark.parametrize("rel", m.KUSTOMIZATIONS)
def test_kustomization_builds_and_validates_strict(rel):
    """Custom resources only in overlays/monitored (the optional component): a cluster without
    the Prometheus Operator's CRDs applies every other kustomization."""
    docs = m.build(rel)
    assert docs, f"k8s/{rel} renders nothing"
    problems = [f"{d['kind']}/{d['metadata']['name']}: {e}" for d in docs for e in m.validate(d)]
    assert problems == []
    custom = [d for d in docs if (d["apiVersion"], d["kind"]) in m.CUSTOM_SCHEMAS]
    assert bool(custom) == (rel == "overlays/monitored")


@pytest.mark.parametrize("kind, mutate, named", [
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsNonRot=True), "runAsNonRot"),
    ("ServiceMonitor", lambda d: (ep := d["spec"]["endpoints"][0]).update(prot=ep.pop("port")), "prot"),
    ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="5s", scrapeTimeout="10s"), "scrapeTimeout"),
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}), "5 minutes"),
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"), "expr"),
    ("Service", lambda d: d.update(apiVersion="example.com/v1", kind="Widget"), "no schema"),
], ids=["unknown field", "unknown field of a CRD", "scrapeTimeout over interval", "bad duration", "missing expr",
        "unknown kind"])
def test_strict_validation_rejects_a_mutated_copy(kind, mutate, named):
    (doc,) = copy.deepcopy(m.find(m.build("overlays/monitored"), kind))
    mutate(doc)
    assert any(named in e for e in m.validate(doc)), m.validate(doc)


@pytest.mark.parametrize("dockerfile", sorted(m.DOCKER.glob("Dockerfile*")), ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    assert m.hadolint(dockerfile) == []


def test_hadolint_reports_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python AS build\nRUN pip install requests\nFROM python:latest\n")
    findings = " ".join(m.hadolint(bad))
    assert "DL3006" in findings and "DL3007" in findings and "DL3013" in findings
