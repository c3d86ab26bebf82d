"""The FastAPI + Uvicorn baseline the benchmark compares Triton with.

    BENCH_RUNTIME=treelite BENCH_MODEL_FILE=.../checkpoint.tl uvicorn benchmark.app:app --port 8080 --workers 1

``BENCH_RUNTIME`` picks the runtime behind the same API: ``sklearn``, the pickled pipeline's
``predict_proba`` (the published baseline), or ``treelite``, the very model file Triton serves,
predicted and shaped by the local ``fil`` backend's own ``fil_forest`` predictors (GTIL, or the
tl2cgen library Triton loaded when ``BENCH_COMPILED_LIB`` names it): the fair baseline, same runtime.

``POST /predict`` takes ``{"rows": [[30 floats], ...]}`` (raw rows, like Triton's ``input__0``) and
answers float32 ``[1-p, p]`` per row (like ``output__0``) with the model's name and version; bad
rows are refused with 422 and a message naming the row and the problem. ``GET /healthz`` answers
once the model is loaded. Environment: ``BENCH_<field>`` of :class:`AppSettings`, read at start-up.
"""

import pickle
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field, PositiveInt, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraudml.tritonconfig import DEFAULT_MAX_BATCH_SIZE, MODEL_NAME

FEATURE_HINT = "Time, V1..V28, Amount, raw, like Triton's input__0"


class AppSettings(BaseSettings):
    """The app's settings: ``BENCH_RUNTIME``, ``BENCH_MODEL_FILE``, ... (pydantic-settings)."""

    model_config = SettingsConfigDict(env_prefix="BENCH_", env_ignore_empty=True, extra="ignore",
                                      frozen=True, protected_namespaces=())
    runtime: Annotated[Literal["sklearn", "treelite"], BeforeValidator(lambda v: v.strip().lower())] = "treelite"
    model_file: Path | None = None  # treelite: the model file Triton serves (e.g. <version>/checkpoint.tl)
    model_type: str = "treelite_checkpoint"  # treelite: its FIL model_type
    compiled_lib: Path | None = None  # treelite: a tl2cgen library of it (FIL_CACHE_DIR/<key>/libforest.so); unset: GTIL
    pipeline_file: Path | None = None  # sklearn: the pickled pipeline (a trusted local file: pickle runs code)
    model_name: str = MODEL_NAME  # echoed in every answer
    model_version: str = "0"  # echoed in every answer
    n_features: PositiveInt = 30  # row length
    max_rows: PositiveInt = DEFAULT_MAX_BATCH_SIZE  # most rows per request (Triton's max_batch_size)

    @classmethod
    def from_env(cls) -> "AppSettings":
        """The settings from the environment, one clear message per wrong variable."""
        try:
            return cls()
        except ValidationError as exc:
            raise ValueError("; ".join(
                f"BENCH_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}" for e in exc.errors())) from None

    def model_path(self) -> Path:
        """The runtime's model file (BENCH_MODEL_FILE or BENCH_PIPELINE_FILE), which must exist."""
        name, path = {"treelite": ("BENCH_MODEL_FILE", self.model_file),
                      "sklearn": ("BENCH_PIPELINE_FILE", self.pipeline_file)}[self.runtime]
        if path is None:
            raise ValueError(f"BENCH_RUNTIME={self.runtime} needs {name} (a path)")
        if not path.is_file():
            raise ValueError(f"{name}={path} does not exist")
        return path


Predictor = Callable[[np.ndarray], np.ndarray]  # rows (n, n_features) float32 -> (n, 2) [1-p, p]


def sklearn_single_thread(pipeline: Any) -> Any:
    """``n_jobs=1`` wherever the pipeline has it: joblib's pool only slows a one-row call on one pinned core."""
    return pipeline.set_params(**{k: 1 for k in pipeline.get_params() if k.split("__")[-1] == "n_jobs"})


def load_predictor(settings: AppSettings) -> Predictor:
    """The runtime on one thread (the server is pinned to one core, like Triton's one model instance)."""
    if settings.runtime == "sklearn":
        pipeline = pickle.loads(settings.model_path().read_bytes())  # noqa: S301 - a local file the benchmark wrote
        return sklearn_single_thread(pipeline).predict_proba
    # the fil backend's own predictor and output shaping
    from serve.backends.fil import fil_forest as ff

    gtil = ff.GTILPredictor(ff.load_model(settings.model_path(), settings.model_type), threads=1)
    shape = ff.OutputFormat(n_model_outputs=gtil.n_outputs, predict_proba=True, output_class=True, threshold=0.5)
    engine = gtil if settings.compiled_lib is None else ff.CompiledPredictor(
        settings.compiled_lib, n_features=gtil.n_features, n_outputs=gtil.n_outputs, threads=1)
    return lambda rows: shape(engine.predict(rows))


def request_model(n_features: int, max_rows: int) -> type[BaseModel]:
    """``{"rows": [[n_features finite floats], ...]}``; the checks run in pydantic-core."""
    feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]
    row = Annotated[list[feature], Field(min_length=n_features, max_length=n_features)]
    return create_model(
        "PredictRequest",
        __config__={"extra": "forbid"},  # a ConfigDict
        rows=(Annotated[list[row], Field(min_length=1, max_length=max_rows)], ...),
    )


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    runtime: str
    probabilities: list[list[float]]  # [1-p, p] per row, like Triton's output__0


def _where(loc: tuple) -> str:
    """``("body", "rows", 3, 5)`` -> ``rows[3][5]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p != "body").lstrip(".") or "body"


def explain(error: Mapping[str, Any], n_features: int, max_rows: int) -> str:
    """One clear sentence for one pydantic error."""
    loc, kind = tuple(error.get("loc", ())), error.get("type", "")
    where = _where(loc)
    actual = (error.get("ctx") or {}).get("actual_length")
    depth = len([p for p in loc if p != "body"])
    if kind in ("too_short", "too_long") and depth == 2:  # ("rows", i)
        got = actual if actual is not None else len(error.get("input") or [])
        return f"{where} has {got} features; expected exactly {n_features} ({FEATURE_HINT})"
    if kind in ("too_short", "too_long") and depth == 1:
        return f"rows must hold 1 to {max_rows} rows; got {actual if actual is not None else '?'}"
    if kind.startswith("float") or kind in ("int_type", "bool_type"):
        return f"{where} is {error.get('input')!r}: features must be JSON numbers"
    if kind == "finite_number":  # the input is one value here; for the kinds below it may be the whole body
        return f"{where} is {error.get('input')!r}: NaN and Infinity are not valid feature values"
    return {
        "missing": f'{where} is missing: send {{"rows": [[{n_features} numbers], ...]}}',
        "list_type": f"{where} must be a list",
        "extra_forbidden": f'{where} is not an accepted field: send only {{"rows": [...]}}',
        "json_invalid": f"the body is not valid JSON: {error.get('msg')}",
    }.get(kind, f"{where}: {error.get('msg')}")


def create_app() -> FastAPI:
    """The baseline app: its settings are read at import (row length and batch limit shape the request
    schema), its model at start-up."""
    s = AppSettings.from_env()
    PredictRequest = request_model(s.n_features, s.max_rows)
    state: dict[str, Predictor] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["predict"] = load_predictor(s)
        # one warm call, so that the first timed request does not pay for lazy set-up
        state["predict"](np.zeros((1, s.n_features), dtype=np.float32))
        yield
        state.clear()

    app = FastAPI(title="fraud-classifier FastAPI baseline", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        messages = [explain(e, s.n_features, s.max_rows) for e in errors[:10]]
        if len(errors) > 10:
            messages.append(f"... and {len(errors) - 10} more problems")
        return JSONResponse(
            status_code=422,
            content={"error": messages[0], "detail": [
                {"loc": _where(tuple(e.get("loc", ()))), "type": e.get("type"), "msg": m}
                for e, m in zip(errors, messages, strict=False)
            ]},
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "runtime": s.runtime, "model_name": s.model_name,
                "model_version": s.model_version}

    # (No `from __future__ import annotations` in this module: FastAPI must see the real
    # PredictRequest class, built above, in this signature.)
    # async def: the model call runs inline on the event loop. With one worker the call
    # holds the GIL either way; skipping the thread-pool hop of a plain `def` favours the
    # baseline, which is the side a fair benchmark should err on.
    @app.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
        rows = np.asarray(body.rows, dtype=np.float32)
        proba = state["predict"](rows)
        return PredictResponse(model_name=s.model_name, model_version=s.model_version,
                               runtime=s.runtime, probabilities=proba.tolist())

    return app


app = create_app()
