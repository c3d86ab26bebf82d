"""The whole job, end to end, on the embedded defaults (`make demo`).

    data -> local S3 (SeaweedFS) -> Metaflow flow -> new version published to s3://models/triton
         -> Triton (bundled tritonserver, local `fil` backend) and its reconciler -> a query
         -> its lineage -> a quick benchmark

Every step runs the same command a user would run by hand (shown before it runs), so the demo doubles as the
README walkthrough. S3 and Triton keep running afterwards; stop them with `make serve-stop s3-stop`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from fraudml.triton_control import is_ready
from serve.s3 import SeaweedS3, read_env_file
from serve.settings import command_line

PY = sys.executable


def _step(n: int, title: str) -> None:
    print(f"\n\033[1m[{n}/7] {title}\033[0m", flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=env)
    if result.returncode != 0:
        sys.exit(f"demo stopped: `{' '.join(cmd)}` exited with {result.returncode}")
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    settings, parser = command_line("serve.demo", __doc__)
    parser.add_argument("--data", default="data/creditcard_synthetic.csv", help="dataset CSV (made if missing)")
    parser.add_argument("--rows", type=int, default=60_000, help="rows of the synthetic dataset if it is made")
    parser.add_argument("--models", default="random_forest,extra_trees,xgboost,lightgbm", help="model families")
    parser.add_argument("--model-repo", default=settings.model_repo, help="default: %(default)s")
    parser.add_argument("--state-dir", default=str(settings.state_dir), help="default: %(default)s")
    parser.add_argument("--skip-benchmark", action="store_true", help="stop after the lineage step")
    args = parser.parse_args(argv)
    state = Path(args.state_dir)
    t_start = time.perf_counter()

    _step(1, "dataset")
    if Path(args.data).exists():
        print(f"{args.data} exists; `make data` makes it anew")
    else:
        _run([PY, "-m", "fraudml.data", "generate", "--rows", str(args.rows), "--out", args.data], dict(os.environ))

    _step(2, "local S3 (SeaweedFS on 127.0.0.1)")
    _run([PY, "-m", "serve.s3", "start", "--state-dir", str(state / "s3")], dict(os.environ))
    s3 = SeaweedS3(state / "s3")
    api_key = read_env_file(state / "triton" / "api-key.env")  # a Triton started earlier (make serve)
    env = {**os.environ, **read_env_file(s3.credentials_file), **api_key}  # the publisher
    # Triton and its reconciler read with the read-only identity (an older S3 state: the publisher's)
    reader = {**env, **read_env_file(s3.reader_credentials_file)}

    triton_url = settings.triton.http_url
    triton_up = is_ready(triton_url)
    _step(3, "train: Metaflow flow -> best model -> new version in " + args.model_repo)
    flow = [PY, "train/flow.py", "run", "--data", args.data, "--models", args.models, "--model-repo", args.model_repo]
    if triton_up:  # a running Triton is asked to load the new version as soon as it is published
        flow += ["--triton-url", triton_url]
    _run(flow, env)

    _step(4, "serve: tritonserver on the S3 model repository, and its reconciler")
    if triton_up:
        print(f"Triton already running at {triton_url}; the flow asked it to load the new version, if one was promoted")
    else:
        _run([PY, "-m", "serve.triton", "start", "--model-repo", args.model_repo,
              "--state-dir", str(state / "triton")], reader)
    reader.update(read_env_file(state / "triton" / "api-key.env"))
    _run([PY, "-m", "serve.reconciler", "start", "--model-repo", args.model_repo,
          "--state-dir", str(state / "reconciler")], reader)

    _step(5, "query: five transactions, with the lineage of the answer")
    _run([PY, "-m", "serve.client", "--data", args.data, "--rows", "5",
          "--model-repo", args.model_repo, "--save", str(state / "last_response.json")], env)

    _step(6, "lineage: from the response back to the Metaflow run and its data")
    _run([PY, "-m", "serve.lineage", "--model-repo", args.model_repo,
          "--response", str(state / "last_response.json")], env)

    if not args.skip_benchmark:
        _step(7, "benchmark (quick): Triton HTTP/gRPC vs FastAPI+Uvicorn on the same model")
        _run([PY, "-m", "benchmark.run", "--quick", "--state-dir", str(state), "--model-repo", args.model_repo], env)

    print(f"\ndemo done in {time.perf_counter() - t_start:.0f} s. S3, Triton and its reconciler are still "
          f"running (Triton {triton_url}); `make serve-stop s3-stop` stops them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
