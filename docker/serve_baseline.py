"""The ENTRYPOINT of docker/Dockerfile.fastapi: the FastAPI baseline on the model Triton serves.

``benchmark.app`` reads a local model file (``BENCH_MODEL_FILE``); without one this launcher downloads
the version config.pbtxt names (the one Triton serves) from the model repository into
``BENCH_MODEL_DIR``, sets ``BENCH_MODEL_FILE``/``_TYPE``/``_VERSION`` and replaces itself with Uvicorn:
same model, same version as Triton, so the comparison stays fair in the cluster too.

Environment: ``MODEL_REPO`` (``s3://bucket/prefix`` or a folder), ``MODEL_NAME``
(``fraud-classifier``), the ``AWS_*`` variables, ``BENCH_MODEL_DIR`` (``/tmp/model``),
``PORT`` (``8080``), and every ``BENCH_*`` variable of ``benchmark.app``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def model_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus the served model's file, unless ``BENCH_MODEL_FILE`` is set or the runtime is
    ``sklearn`` (a pickled pipeline is a local file by nature)."""
    env = dict(environ)
    runtime = (env.get("BENCH_RUNTIME") or "treelite").strip().lower()
    if runtime != "treelite" or env.get("BENCH_MODEL_FILE"):
        return env

    from fraudml.repository import ModelRepository
    from fraudml.tritonconfig import MODEL_FILENAMES, MODEL_NAME

    repo_uri = env.get("MODEL_REPO")
    if not repo_uri:
        raise RuntimeError("set MODEL_REPO (s3://bucket/prefix) or BENCH_MODEL_FILE")
    repo = ModelRepository(repo_uri, env.get("MODEL_NAME") or MODEL_NAME)
    version = repo.served_version()
    if version is None:
        raise RuntimeError(f"{repo_uri}: no version of {repo.model_name} is published yet")
    dest = repo.download_version(version, Path(env.get("BENCH_MODEL_DIR") or "/tmp/model") / str(version))
    for model_type, filename in MODEL_FILENAMES.items():
        if (dest / filename).is_file():
            env.update(BENCH_MODEL_FILE=str(dest / filename), BENCH_MODEL_TYPE=model_type,
                       BENCH_MODEL_VERSION=str(version), BENCH_MODEL_NAME=repo.model_name)
            return env
    raise RuntimeError(
        f"{repo_uri}: {repo.model_name}/{version} holds none of {sorted(MODEL_FILENAMES.values())}")


def main() -> int:
    try:
        env = model_env(os.environ)
    except Exception as exc:  # one clear line in the pod log beats a traceback
        print(f"serve_baseline: error: {exc}", file=sys.stderr)
        return 1
    if env.get("BENCH_MODEL_FILE"):
        print(f"serve_baseline: {env.get('BENCH_MODEL_NAME', '')}/{env.get('BENCH_MODEL_VERSION', '?')} "
              f"from {env['BENCH_MODEL_FILE']}", file=sys.stderr)
    # One worker, like the benchmark: the baseline is compared per process with one Triton instance.
    argv = ["uvicorn", "benchmark.app:app", "--host", "0.0.0.0", "--port", env.get("PORT") or "8080",
            "--workers", "1", "--no-access-log"]
    os.execvpe(argv[0], argv, env)  # replaces this process: never returns


if __name__ == "__main__":
    sys.exit(main())
