"""Where the benchmark's model, its sklearn twin and its rows come from.

- :func:`from_repository` (default): one version of the model repository (the served one unless
  asked), copied into a benchmark-private Triton repository with a ``config.pbtxt`` rendered by
  the project's one generator from the version's ``triton_config``, pinned to it; the sklearn
  pipeline is the artifact of the Metaflow run ``lineage["pathspec"]`` names.
- :func:`reference_model`: the published comparison's RandomForest (100 trees, depth 10, 30
  features) trained here on synthetic data and published through the project's own publisher.

Rows (:func:`benchmark_rows`) are raw ``Time, V1..V28, Amount``, what a client sends to ``input__0``.
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.servers import BenchmarkError
from fraudml.data import FEATURES, LABEL, generate_dataset, load_dataset
from fraudml.repository import ModelRepository, publish_model_version
from fraudml.tritonconfig import DEFAULT_MAX_BATCH_SIZE, MODEL_FILENAMES, MODEL_NAME, render_config

ROW_SEED = 20_240  # never a training seed (the flow's default is 7)
PIPELINE_ARTIFACTS = ("best_pipeline", "pipeline", "best_model", "model")


@dataclass
class BenchModel:
    name: str
    version: int
    source_repo: str  # where the version came from (URI)
    triton_repo: Path  # the repository Triton serves in this benchmark (a local copy)
    model_file: Path  # the file Triton serves, also loaded by fastapi-treelite
    model_type: str
    lineage: dict[str, Any]
    max_batch_size: int
    info: dict[str, Any] = field(default_factory=dict)  # family, n_trees, depth, leaves, features
    pipeline_file: Path | None = None  # pickled sklearn pipeline for fastapi-sklearn, None if unavailable
    pipeline_note: str = ""  # where the pipeline came from, or why it is missing
    test_rows: np.ndarray | None = None  # the training run's X_test, when it can be read

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "source_repo": self.source_repo,
                "model_type": self.model_type, "pathspec": self.lineage.get("pathspec"),
                "dataset_fingerprint": (self.lineage.get("dataset") or {}).get("fingerprint"),
                "sklearn_pipeline": self.pipeline_note, "max_batch_size": self.max_batch_size, **self.info}

    def set_pipeline(self, pipeline: Any, note: str) -> BenchModel:
        """The sklearn pipeline of fastapi-sklearn (pickled beside the model copy), or None and why not."""
        self.pipeline_note = note
        if pipeline is not None:
            self.pipeline_file = self.triton_repo.parent / "pipeline.pkl"
            self.pipeline_file.write_bytes(pickle.dumps(pipeline))
        return self


def describe_treelite(model) -> dict[str, Any]:
    """Number of trees, features, deepest tree and largest leaf count, from the model itself."""
    depths, leaves = [], []
    for tree in json.loads(model.dump_as_json(pretty_print=False))["trees"]:
        nodes = {n["node_id"]: n for n in tree["nodes"]}
        level, depth = [0], 0
        while level := [c for i in level if "leaf_value" not in nodes[i]
                        for c in (nodes[i]["left_child"], nodes[i]["right_child"])]:
            depth += 1
        depths.append(depth)
        leaves.append(sum("leaf_value" in n for n in nodes.values()))
    return {"n_trees": int(model.num_tree), "n_features": int(model.num_feature), "max_depth": max(depths),
            "mean_depth": round(float(np.mean(depths)), 2), "max_leaves": max(leaves), "total_leaves": int(sum(leaves))}


def benchmark_rows(n_rows: int, model: BenchModel | None = None, data: str | None = None,
                   seed: int = ROW_SEED) -> tuple[np.ndarray, str]:
    """``n_rows`` raw float32 rows and where they come from: ``data`` (a dataset file) when given, else the
    test set of the Metaflow run that trained the model, else fresh synthetic rows with a seed no run uses."""
    rng = np.random.default_rng(seed)
    if data is None and model is not None and model.test_rows is not None and len(model.test_rows):
        rows = np.ascontiguousarray(model.test_rows[rng.permutation(len(model.test_rows))[:n_rows]], dtype=np.float32)
        return rows, (f"{len(rows)} rows of the test set (X_test) of Metaflow run {model.lineage.get('pathspec')}: "
                      "rows the model never saw in training")
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


def _copy_version(source_uri: str, version: int | None, work_dir: Path) -> BenchModel:
    """Copy ``version`` (default: the served one) into ``work_dir/triton-repo`` with a config pinned to it."""
    from serve.backends.fil import fil_forest

    repo = ModelRepository(source_uri, MODEL_NAME)
    if version is None and (version := repo.served_version()) is None:
        raise BenchmarkError(f"{source_uri}: no version of {MODEL_NAME} is published yet. Train and publish "
                               "one (`make train`), or benchmark the reference model: --reference-model")
    lineage = repo.read_lineage(version)
    triton_repo = work_dir / "triton-repo"
    shutil.rmtree(triton_repo, ignore_errors=True)
    version_dir = repo.download_version(version, triton_repo / MODEL_NAME / str(version))
    config = {k: v for k, v in (lineage.get("triton_config") or {}).items() if k != "versions"}
    (triton_repo / MODEL_NAME / "config.pbtxt").write_text(render_config(versions=[version], **config))
    model_type = config.get("model_type", "treelite_checkpoint")
    model_file = version_dir / MODEL_FILENAMES[model_type]
    if not model_file.is_file():
        raise BenchmarkError(f"{MODEL_NAME}/{version} has no {MODEL_FILENAMES[model_type]}")
    info = {"family": lineage.get("family", "unknown"),
            **describe_treelite(fil_forest.load_model(model_file, model_type))}
    return BenchModel(name=MODEL_NAME, version=version, source_repo=source_uri, triton_repo=triton_repo,
                      model_file=model_file, model_type=model_type, lineage=lineage, info=info,
                      max_batch_size=int(config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)))


def from_repository(source_uri: str, work_dir: Path, version: int | None = None,
                    pipeline_artifact: str | None = None) -> BenchModel:
    """The benchmark model from a published version (see the module docstring)."""
    model = _copy_version(source_uri, version, work_dir)
    pathspec = model.lineage.get("pathspec")
    if not pathspec:
        return model.set_pipeline(None, "missing: lineage.json names no Metaflow run, so fastapi-sklearn is skipped")
    names = (pipeline_artifact,) if pipeline_artifact else PIPELINE_ARTIFACTS
    try:
        import metaflow

        metaflow.namespace(None)
        run = metaflow.Run("/".join(pathspec.strip("/").split("/")[:2]))
        # a run that published its model but failed later has no end data: the publishing step has it all
        data = run.data or run["deploy"].task.data
        pipeline = next((getattr(data, n) for n in names if hasattr(data, n)), None)
        if pipeline is None:
            raise BenchmarkError(f"{pathspec}: no artifact named {' or '.join(names)}")
        if hasattr(data, "X_test"):  # the test rows, raw
            model.test_rows = np.asarray(data.X_test, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any client failure means: skip that contender
        return model.set_pipeline(None, f"missing: could not load the pipeline of {pathspec} through the Metaflow "
                                        f"client ({type(exc).__name__}: {str(exc)[:200]}); run from the folder the "
                                        "flow ran in, with the same METAFLOW_* settings, so fastapi-sklearn is skipped")
    return model.set_pipeline(pipeline, f"artifact of Metaflow run {pathspec}")


def reference_model(work_dir: Path, n_trees: int = 100, max_depth: int = 10,
                    rows: int = 20_000, seed: int = 7) -> BenchModel:
    """The flow's own SMOTE -> RandomForest pipeline with ``n_trees`` trees of depth ``max_depth``, fitted here
    on synthetic data without a search and published as version 1 of a local repository."""
    from fraudml.export import write_fil_model
    from fraudml.features import feature_matrix
    from fraudml.models import build_pipeline

    df = generate_dataset(rows=rows, seed=seed)
    # fitted on every core; fastapi-sklearn and the in-process timing set n_jobs=1 (app.sklearn_single_thread)
    pipeline = build_pipeline("random_forest", seed=seed, n_jobs=-1).set_params(
        clf__n_estimators=n_trees, clf__max_depth=max_depth).fit(feature_matrix(df), df[LABEL].to_numpy())
    model_file = Path(write_fil_model(pipeline, work_dir / "export"))
    source = work_dir / "reference-repo"
    shutil.rmtree(source, ignore_errors=True)
    lineage = {"pathspec": None, "family": "random_forest", "threshold": 0.5,
               "reference_model": {"n_estimators": n_trees, "max_depth": max_depth, "training_rows": rows, "seed": seed,
                                   "note": "trained by benchmark.model_source.reference_model, not by the flow"}}
    version = publish_model_version(str(source), {model_file.name: model_file}, lineage,
                                    {"n_features": 30, "model_type": "treelite_checkpoint", "threshold": 0.5,
                                     "predict_proba": True, "output_class": True})
    model = _copy_version(str(source), version, work_dir)
    model.source_repo = f"{source} (reference model, {MODEL_NAME})"
    return model.set_pipeline(pipeline, f"trained in process (SMOTE -> RandomForest, {n_trees} trees, depth "
                                        f"{max_depth}, {rows} synthetic rows, seed {seed})")
