"""Compile the training flow into an Argo Workflows WorkflowTemplate, offline (`make argo-template`).

`python train/flow.py argo-workflows create --only-json` prints the WorkflowTemplate Metaflow
would deploy without touching a cluster, but it still needs the S3 datastore (it uploads the
flow's code package there) and the `kubernetes` package. This script starts a private SeaweedFS
(on a free port, state in <state-dir>/argo-s3), points Metaflow at it with the METAFLOW_* settings
docs/kubernetes.md lists for a real cluster, compiles, checks the result and writes it. The
file is for reading and for CI (its code package and S3 endpoint are the local SeaweedFS): to
deploy, run `python train/flow.py argo-workflows create` with your cluster's settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "train" / "flow.py"
OUT = ROOT / "k8s" / "argo" / "workflow-template.json"
DATASTORE_BUCKET = "metaflow"

# Where the step pods run (k8s/training creates the namespace and the service account) and
# what they run in (docker/Dockerfile.train, pushed to your registry at the project version).
DEFAULTS = {
    "namespace": "fraudml-training",
    "service_account": "metaflow",
    "secret": "fraudml-s3",
    "image": "registry.example.com/fraudml/fraudml-train:"
             + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"],
}
_PATHSPEC = re.compile(r"MF_PATHSPEC=\w+/argo-\{\{workflow\.name\}\}/(\w+)/")


def step_containers(template: dict) -> dict[str, dict]:
    """Metaflow step name -> the container that runs it (hooks and internal tasks left out)."""
    found = [(_PATHSPEC.search(json.dumps(t["container"])), t["container"])
             for t in template["spec"]["templates"] if t.get("container")]
    return {m.group(1): container for m, container in found if m and not m.group(1).startswith("_")}


def build(state_dir: Path, out: Path = OUT, **cluster: str) -> dict:
    """Start a private S3, compile the flow against it (`argo-workflows create --only-json`) with the
    DEFAULTS ``cluster`` does not override, write ``out``; the WorkflowTemplate."""
    from serve.ports import free_port
    from serve.s3 import SeaweedS3

    c = {**DEFAULTS, **cluster}
    home = state_dir / "argo-metaflow-home"  # no ~/.metaflowconfig profile
    home.mkdir(parents=True, exist_ok=True)
    # None of the caller's METAFLOW_*/AWS_*: a personal Metaflow profile must not leak into the template.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "AWS_"))}
    cmd = [sys.executable, str(FLOW), "--no-pylint", "--datastore=s3", "argo-workflows", "create", "--only-json"]
    with SeaweedS3(state_dir / "argo-s3", port=free_port(), bucket=DATASTORE_BUCKET) as s3:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={
            **env, **s3.env(),
            "METAFLOW_HOME": str(home),
            "METAFLOW_USER": "argo-template",
            "METAFLOW_DEFAULT_DATASTORE": "s3",
            "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{DATASTORE_BUCKET}/metaflow",
            "METAFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
            "METAFLOW_DEFAULT_METADATA": "local",
            # Fail in seconds, not minutes, when S3 misbehaves (DESIGN §2).
            "METAFLOW_S3_TRANSIENT_RETRY_COUNT": "1",
            "METAFLOW_S3_RETRY_COUNT": "1",
            "METAFLOW_KUBERNETES_NAMESPACE": c["namespace"],
            "METAFLOW_KUBERNETES_SERVICE_ACCOUNT": c["service_account"],
            "METAFLOW_KUBERNETES_CONTAINER_IMAGE": c["image"],
            "METAFLOW_KUBERNETES_SECRETS": c["secret"],
        })
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` exited {proc.returncode}:\n{proc.stderr.strip()[-4000:]}")
    try:  # what Metaflow prints before the JSON is skipped; no JSON at all is said with the output
        template = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        template = None
    if not isinstance(template, dict) or template.get("kind") != "WorkflowTemplate":
        raise RuntimeError(f"expected a WorkflowTemplate, got: {proc.stdout[:2000]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(template, indent=2) + "\n")
    return template


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k8s/argo_template.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".state")
    parser.add_argument("--out", type=Path, default=OUT)
    for key, what in (("image", "step image "), ("namespace", ""), ("service_account", ""),
                      ("secret", "Secret the step pods read AWS_* from ")):
        parser.add_argument("--" + key.replace("_", "-"), default=DEFAULTS[key], help=f"{what}(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        template = build(args.state_dir.absolute(), args.out, **{key: getattr(args, key) for key in DEFAULTS})
    except Exception as exc:  # ServiceError, RuntimeError, TimeoutExpired: one line, not a traceback
        print(f"argo-template: error: {exc}", file=sys.stderr)
        return 1
    steps = step_containers(template)
    print(f"WorkflowTemplate {template['metadata']['name']} in namespace "
          f"{template['metadata'].get('namespace')}, {len(steps)} steps:")
    for name, c in steps.items():
        req = (c.get("resources") or {}).get("requests") or {}
        print(f"  {name:<12} cpu={req.get('cpu')} memory={req.get('memory')} image={c.get('image')}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
