"""What the offline checks of k8s/ and docker/ (`make k8s-check`) are built on: ``kubectl kustomize``,
strict validation (custom resources against k8s/schemas), hadolint, the start script; no cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S, DOCKER = ROOT / "k8s", ROOT / "docker"
ENTRYPOINT = K8S / "base" / "triton-entrypoint.sh"

K8S_VERSION = "1.33.0"  # the Kubernetes release the manifests are validated against
# Every kustomization a user applies, relative to k8s/: all but the components and the base the overlays share.
KUSTOMIZATIONS = tuple(sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")
                              if p.parent.name != "base" and yaml.safe_load(p.read_text())["kind"] != "Component"))
TRITON_OVERLAYS = ("overlays/cpu", "overlays/gpu", "overlays/monitored")
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", kind): K8S / "schemas" / f"{kind.lower()}.yaml"
                  for kind in ("ServiceMonitor", "PrometheusRule")}


def tool(name: str) -> str:
    """A dev tool next to this interpreter (the venv), else on PATH (else the bare name, which then fails to run)."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])) or name


@cache
def build(rel: str) -> tuple[dict, ...]:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(K8S / rel)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize k8s/{rel}: {proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and name in (None, d["metadata"]["name"])]


def one(docs, kind: str, name: str) -> dict:
    (found,) = find(docs, kind, name)
    return found


def pods(docs):
    """(kind/name, pod spec) of every workload."""
    for d in docs:
        if "template" in d.get("spec", {}):  # Deployment, StatefulSet, DaemonSet, Job, ReplicaSet
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def container(docs, deployment: str, name: str) -> dict:
    spec = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] if c["name"] == name]
    return found


def configmap(docs, prefix: str) -> dict:
    """The generated ConfigMap ``prefix-<hash>`` (or ``prefix``)."""
    (found,) = [d for d in docs if d.get("kind") == "ConfigMap"
                and re.fullmatch(rf"{re.escape(prefix)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])]
    return found


def requirement_pin(name: str) -> str | None:
    m = re.search(rf"^(?:# no-deps: )?{re.escape(name)}(?:\[[^\]]*\])?==(\S+)", (ROOT / "requirements.txt").read_text(),
                  re.MULTILINE | re.IGNORECASE)
    return m.group(1) if m else None


# -- schema validation ---------------------------------------------------------------------------
def _strict(schema: Any) -> Any:
    """An OpenAPI schema whose objects with listed properties reject others (what
    ``kubectl apply --validate=strict`` does with a CRD's structural schema)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    return [_strict(v) for v in schema] if isinstance(schema, list) else schema


def _seconds(text: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", text))


def validate(doc: dict) -> list[str]:
    """Errors of one rendered object (strict); an object without any schema is an error."""
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    path = CUSTOM_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if path is not None:
        (version,) = yaml.safe_load(path.read_text())["spec"]["versions"]
        validator = jsonschema.Draft202012Validator(_strict(version["schema"]["openAPIV3Schema"]))
        errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]
        for i, ep in enumerate(doc.get("spec", {}).get("endpoints", []) if not errors else []):
            if _seconds(ep.get("scrapeTimeout", "0")) > _seconds(ep.get("interval", "1y")):
                errors.append(f"spec.endpoints.{i}: scrapeTimeout is longer than interval (the operator rejects it)")
        return errors
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [f"no schema: {exc.message}; ship its CRD schema in k8s/schemas"]
    return []


def hadolint(dockerfile: Path) -> list[str]:
    proc = subprocess.run([tool("hadolint"), "--no-color", "-f", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return [f"{dockerfile.name}:{f['line']} {f['code']}: {f['message']}" for f in json.loads(proc.stdout or "[]")]


def entrypoint(**env: str) -> subprocess.CompletedProcess:
    """k8s/base/triton-entrypoint.sh run with a stand-in tritonserver that prints its arguments."""
    with tempfile.TemporaryDirectory(prefix="entrypoint-") as tmp:
        fake = Path(tmp) / "tritonserver"
        fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
        fake.chmod(0o755)
        return subprocess.run(["/bin/sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=10,
                              env={"PATH": f"{tmp}:/usr/bin:/bin", **env})


# -- monitoring ----------------------------------------------------------------------------------
def alert_rules() -> dict[str, dict]:
    rule = one(build("overlays/monitored"), "PrometheusRule", "fraudml-triton")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def dashboard() -> dict:
    return json.loads(one(build("monitoring"), "ConfigMap", "fraudml-grafana-dashboard")["data"]["fraudml-triton.json"])


def adapter_rules() -> list[dict]:
    config = one(build("monitoring"), "ConfigMap", "fraudml-prometheus-adapter")["data"]["config.yaml"]
    return yaml.safe_load(config)["rules"]


def promql_expressions() -> dict[str, str]:
    """Every PromQL expression shipped (Grafana and adapter template variables replaced by what they stand for)."""
    return {**{f"alert {name}": str(rule["expr"]) for name, rule in alert_rules().items()},
            **{f"panel {panel['title']} {t['refId']}": t["expr"].replace("$__rate_interval", "1m")
               .replace("$namespace", "fraudml") for panel in dashboard()["panels"] for t in panel["targets"]},
            **{f"adapter {rule['name']['as']}": rule["metricsQuery"].replace("<<.GroupBy>>", "pod")
               .replace("<<.LabelMatchers>>", 'namespace="fraudml"') for rule in adapter_rules()}}


def metric_names(expressions) -> set[str]:
    """The Triton (nv_*) and reconciler (fraudml_*) series the expressions read."""
    return {name for e in expressions for name in re.findall(r"\b((?:nv|fraudml)_[a-z_]+)\b", e)}
