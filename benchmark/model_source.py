"""Where the benchmark's model, its sklearn twin and its rows come from.

Two ways, one result (:class:`BenchModel`):

- :func:`from_repository` (default): one version of ``fraud-classifier`` in the model
  repository (``s3://…`` or a folder), the served one unless asked otherwise. Its files and
  ``lineage.json`` are copied into a benchmark-private Triton model repository whose
  ``config.pbtxt`` is rendered by the project's one generator from the version's own
  ``triton_config`` (pinned to that version), so Triton serves exactly those bytes. The
  sklearn pipeline is the artifact of the Metaflow run named by ``lineage["pathspec"]``.
- :func:`reference_model`: the model of the published comparison — a RandomForest of 100
  trees of depth 10 on 30 features — trained here on the synthetic data and published into
  a local repository through the project's own publisher. Used by the tests and by anyone
  who wants the reference set-up without a training run.

Rows (:func:`benchmark_rows`): the test set of the Metaflow run that trained the version
(rows it never saw in training), else fresh synthetic rows from the project's generator with
a seed no training run uses. Rows are raw transactions (``Time, V1..V28, Amount``), exactly
what any client sends to Triton's ``input__0``. Every contender gets the same rows in the
same order.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROW_SEED = 20_240  # never a training seed (the flow's default is 7)
PIPELINE_ARTIFACTS = ("best_pipeline", "pipeline", "best_model", "model")
FAMILY_KEYS = ("family", "model_family", "best_family", "winner")


class ModelSourceError(RuntimeError):
    """The benchmark cannot get its model; the message says what is missing and what to do."""


@dataclass
class BenchModel:
    name: str
    version: int
    source_repo: str  # where the version came from (URI)
    triton_repo: Path  # the repository Triton serves in this benchmark (a local copy)
    model_file: Path  # the file Triton serves, also loaded by fastapi-treelite
    model_type: str
    lineage: dict[str, Any]
    pipeline_file: Path | None  # pickled sklearn pipeline for fastapi-sklearn, None if unavailable
    pipeline_note: str  # where the pipeline came from, or why it is missing
    max_batch_size: int
    info: dict[str, Any] = field(default_factory=dict)  # family, n_trees, depth, leaves, features
    test_rows: np.ndarray | None = None  # the training run's X_test, when it can be read

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source_repo": self.source_repo,
            "model_type": self.model_type,
            "pathspec": self.lineage.get("pathspec"),
            "dataset_fingerprint": (self.lineage.get("dataset") or {}).get("fingerprint")
            if isinstance(self.lineage.get("dataset"), dict) else self.lineage.get("dataset_fingerprint"),
            "sklearn_pipeline": self.pipeline_note,
            "max_batch_size": self.max_batch_size,
            **self.info,
        }


# ------------------------------------------------------------------------------------
# S3 credentials of the local SeaweedFS
# ------------------------------------------------------------------------------------


def load_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` and quotes allowed) into os.environ, without
    overriding variables that are already set. Returns what it set."""
    set_now: dict[str, str] = {}
    if not path.is_file():
        return set_now
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        key, value = key.strip(), value.strip().strip("'\"")
        if key and key not in os.environ:
            os.environ[key] = value
            set_now[key] = value
    return set_now


# ------------------------------------------------------------------------------------
# model facts
# ------------------------------------------------------------------------------------


def describe_treelite(model) -> dict[str, Any]:
    """Number of trees, features, deepest tree and largest leaf count, from the model itself."""
    dump = json.loads(model.dump_as_json(pretty_print=False))
    depths, leaves = [], []
    for tree in dump.get("trees", []):
        nodes = {n["node_id"]: n for n in tree.get("nodes", [])}
        depth, n_leaves, stack = 0, 0, [(0, 0)]
        while stack:
            node_id, d = stack.pop()
            node = nodes.get(node_id)
            if node is None:
                continue
            if "leaf_value" in node:
                n_leaves += 1
                depth = max(depth, d)
            else:
                stack += [(node["left_child"], d + 1), (node["right_child"], d + 1)]
        depths.append(depth)
        leaves.append(n_leaves)
    return {
        "n_trees": int(model.num_tree),
        "n_features": int(model.num_feature),
        "max_depth": max(depths, default=0),
        "mean_depth": round(float(np.mean(depths)), 2) if depths else 0,
        "max_leaves": max(leaves, default=0),
        "total_leaves": int(sum(leaves)),
    }


def model_family(lineage: dict[str, Any], pipeline: Any = None) -> str:
    for key in FAMILY_KEYS:
        value = lineage.get(key)
        if isinstance(value, str) and value:
            return value
    if pipeline is not None:
        last = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
        return type(last).__name__
    return "unknown"


# ------------------------------------------------------------------------------------
# the sklearn pipeline from its Metaflow run
# ------------------------------------------------------------------------------------


def run_artifacts(pathspec: str, artifact: str | None = None) -> tuple[Any, np.ndarray | None]:
    """The trained pipeline and the test rows (``X_test``, raw rows) of the Metaflow run
    (or step/task) ``pathspec``.

    Looks at the run's end data first, then the deploy, eval and preprocess steps;
    ``artifact`` overrides the pipeline names tried (``best_pipeline``, ``pipeline``, ...).
    """
    import metaflow

    metaflow.namespace(None)
    names = (artifact,) if artifact else PIPELINE_ARTIFACTS
    parts = pathspec.strip("/").split("/")
    run = metaflow.Run("/".join(parts[:2]))
    sources = []
    if len(parts) >= 3:
        sources.append(metaflow.Step("/".join(parts[:3])).task.data)
    sources.append(run.data)
    for step in ("deploy", "eval", "preprocess"):
        try:
            sources.append(run[step].task.data)
        except Exception:  # noqa: BLE001 - a flow without that step
            continue
    pipeline = x_test = None
    for data in sources:
        if data is None:
            continue
        if pipeline is None:
            pipeline = next((getattr(data, n) for n in names if hasattr(data, n)), None)
        if x_test is None and hasattr(data, "X_test"):
            x_test = np.asarray(data.X_test, dtype=np.float32)
        if pipeline is not None and x_test is not None:
            break
    if pipeline is None:
        raise ModelSourceError(f"{pathspec}: no artifact named {' or '.join(names)}")
    return pipeline, x_test


# ------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------


def benchmark_rows(model: BenchModel, n_rows: int, seed: int = ROW_SEED,
                   data: str | None = None) -> tuple[np.ndarray, str]:
    """``n_rows`` raw rows (float32, (n, 30)) and a sentence saying where they come from.

    In order of preference: rows of ``data`` (a dataset file) when given; the test set of the
    Metaflow run that trained the model (rows it never saw in training); fresh synthetic rows
    from the project's generator with a seed no training run uses.
    """
    rng = np.random.default_rng(seed)
    if data is None and model.test_rows is not None and len(model.test_rows):
        pick = rng.permutation(len(model.test_rows))[:n_rows]
        rows = np.ascontiguousarray(model.test_rows[pick], dtype=np.float32)
        return rows, (f"{len(rows)} rows of the test set (X_test) of Metaflow run {model.lineage.get('pathspec')}: "
                      "rows the model never saw in training")
    from fraudml.data import FEATURES, generate_dataset, load_dataset

    if data:
        df = load_dataset(data)
        df = df.sample(n=min(n_rows, len(df)), random_state=seed)
        origin = f"{len(df)} rows sampled (seed {seed}) from {data}"
    else:
        df = generate_dataset(rows=n_rows, seed=seed)
        origin = (f"{n_rows} fresh synthetic rows (fraudml.data.generate_dataset, seed {seed}, "
                  "a seed no training run uses)")
    rows = np.ascontiguousarray(df[FEATURES].to_numpy(dtype=np.float32))
    return rows[rng.permutation(len(rows))], origin


# ------------------------------------------------------------------------------------
# resolution
# ------------------------------------------------------------------------------------


def _copy_version(source_uri: str, version: int | None, work_dir: Path) -> tuple[int, dict, Path]:
    """Copy ``version`` (default: the served one) into ``work_dir/triton-repo`` with a config
    pinned to it. Returns (version, lineage, version folder)."""
    from fraudml.repository import ModelRepository
    from fraudml.tritonconfig import MODEL_NAME, render_config

    repo = ModelRepository(source_uri, MODEL_NAME)
    if version is None:
        version = repo.served_version()
        if version is None:
            raise ModelSourceError(
                f"{source_uri}: no version of {MODEL_NAME} is published yet. Train and publish "
                "one (`make train`), or benchmark the reference model: --reference-model"
            )
    lineage = repo.read_lineage(version)
    triton_repo = work_dir / "triton-repo"
    shutil.rmtree(triton_repo, ignore_errors=True)
    version_dir = repo.download_version(version, triton_repo / MODEL_NAME / str(version))
    config_kwargs = dict(lineage.get("triton_config") or {})
    config_kwargs.pop("versions", None)
    (triton_repo / MODEL_NAME / "config.pbtxt").write_text(render_config(versions=[version], **config_kwargs))
    return version, lineage, version_dir


def _finish(source_uri: str, version: int, lineage: dict, version_dir: Path, work_dir: Path,
            pipeline: Any, pipeline_note: str, test_rows: np.ndarray | None = None) -> BenchModel:
    from benchmark.app import load_treelite_model
    from fraudml.tritonconfig import DEFAULT_MAX_BATCH_SIZE, MODEL_FILENAMES, MODEL_NAME

    config = lineage.get("triton_config") or {}
    model_type = config.get("model_type", "treelite_checkpoint")
    model_file = version_dir / MODEL_FILENAMES[model_type]
    if not model_file.is_file():
        raise ModelSourceError(f"{MODEL_NAME}/{version} has no {MODEL_FILENAMES[model_type]}")
    pipeline_file = None
    if pipeline is not None:
        pipeline_file = work_dir / "pipeline.pkl"
        with open(pipeline_file, "wb") as fh:
            pickle.dump(pipeline, fh)
    info = {"family": model_family(lineage, pipeline),
            **describe_treelite(load_treelite_model(model_file, model_type))}
    return BenchModel(
        name=MODEL_NAME, version=version, source_repo=source_uri,
        triton_repo=work_dir / "triton-repo", model_file=model_file, model_type=model_type,
        lineage=lineage, pipeline_file=pipeline_file, pipeline_note=pipeline_note,
        max_batch_size=int(config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)), info=info,
        test_rows=test_rows,
    )


def from_repository(source_uri: str, work_dir: Path, version: int | None = None,
                    pipeline_artifact: str | None = None) -> BenchModel:
    """The benchmark model from a published version (see the module docstring)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    version, lineage, version_dir = _copy_version(source_uri, version, work_dir)
    pathspec = lineage.get("pathspec")
    pipeline, test_rows, note = None, None, ""
    if not pathspec:
        note = "missing: lineage.json names no Metaflow run, so fastapi-sklearn is skipped"
    else:
        try:
            pipeline, test_rows = run_artifacts(pathspec, pipeline_artifact)
            note = f"artifact of Metaflow run {pathspec}"
        except Exception as exc:  # noqa: BLE001 - any client failure means: skip that contender
            note = (f"missing: could not load the pipeline of {pathspec} through the Metaflow "
                    f"client ({type(exc).__name__}: {str(exc)[:200]}); run from the folder the flow "
                    "ran in, with the same METAFLOW_* settings, so fastapi-sklearn is skipped")
    return _finish(source_uri, version, lineage, version_dir, work_dir, pipeline, note, test_rows)


def train_reference_pipeline(n_trees: int = 100, max_depth: int = 10, rows: int = 20_000,
                             seed: int = 7):
    """The reference set-up: the flow's own random-forest pipeline (SMOTE -> RandomForest,
    ``fraudml.models.build_pipeline``) with ``n_trees`` trees of depth ``max_depth``, fitted
    on synthetic data without a search (raw rows, like the flow)."""
    from fraudml.data import LABEL, generate_dataset
    from fraudml.features import feature_matrix
    from fraudml.models import build_pipeline

    df = generate_dataset(rows=rows, seed=seed)
    X = feature_matrix(df)
    y = df[LABEL].to_numpy()
    pipeline = build_pipeline("random_forest", seed=seed, n_jobs=-1)
    pipeline.set_params(clf__n_estimators=n_trees, clf__max_depth=max_depth)
    pipeline.fit(X, y)
    pipeline.set_params(clf__n_jobs=1)
    return pipeline


def _export(pipeline: Any, dest: Path) -> Path:
    try:
        from fraudml.export import write_fil_model
    except ImportError:  # fraudml.export not there yet: the same file through Treelite's own API
        import treelite

        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "checkpoint.tl"
        treelite.sklearn.import_model(pipeline.steps[-1][1]).serialize(str(path))
        return path
    return Path(write_fil_model(pipeline, dest))


def reference_model(work_dir: Path, n_trees: int = 100, max_depth: int = 10,
                    rows: int = 20_000, seed: int = 7) -> BenchModel:
    """Train the reference model here and publish it as version 1 of a local repository."""
    from fraudml.repository import publish_model_version
    from fraudml.tritonconfig import MODEL_NAME

    work_dir.mkdir(parents=True, exist_ok=True)
    pipeline = train_reference_pipeline(n_trees, max_depth, rows, seed)
    model_file = _export(pipeline, work_dir / "export")
    source = work_dir / "reference-repo"
    shutil.rmtree(source, ignore_errors=True)
    lineage = {
        "pathspec": None,
        "family": "random_forest",
        "threshold": 0.5,
        "reference_model": {"n_estimators": n_trees, "max_depth": max_depth,
                            "training_rows": rows, "seed": seed,
                            "note": "trained by benchmark.model_source.reference_model, not by the flow"},
    }
    version = publish_model_version(
        str(source), {model_file.name: model_file}, lineage,
        {"n_features": 30, "model_type": "treelite_checkpoint", "threshold": 0.5,
         "predict_proba": True, "output_class": True},
    )
    version, lineage, version_dir = _copy_version(str(source), version, work_dir)
    note = (f"trained in process (SMOTE -> RandomForest, {n_trees} trees, depth {max_depth}, "
            f"{rows} synthetic rows, seed {seed})")
    model = _finish(f"{source} (reference model, {MODEL_NAME})", version, lineage, version_dir,
                    work_dir, pipeline, note)
    return model
