"""One typed settings object for the serving side, read once from the environment.

Each field names its variable; the README's table "Environment variables" says what each one
means and who else reads it (``MODEL_KEEP_VERSIONS``: fraudml.repository; ``FIL_BACKEND``:
serve/fil_backend.py; ``FIL_CACHE_DIR``/``FIL_COMPILE``: the local ``fil`` backends).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraudml.tritonconfig import MODEL_NAME

Port = Annotated[int, Field(gt=0, lt=65536)]
# goes into Triton's command line and an HTTP header: letters, digits, - and _ only (e.g. openssl rand -hex 32)
HeaderSafe = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]


class _Group(BaseSettings):
    # Empty variables count as unset; unknown ones are ignored; settings never change once read.
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True)


class TritonSettings(_Group):
    host: str = Field("127.0.0.1", validation_alias="TRITON_HOST")
    http_port: Port = Field(8000, validation_alias="TRITON_HTTP_PORT")
    grpc_port: Port = Field(8001, validation_alias="TRITON_GRPC_PORT")
    metrics_port: Port = Field(8002, validation_alias="TRITON_METRICS_PORT")
    api_key: HeaderSafe | None = Field(None, validation_alias="TRITON_API_KEY")
    api_key_header: HeaderSafe = Field("fraudml-api-key", validation_alias="TRITON_API_KEY_HEADER")

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


class Settings(_Group):
    triton: TritonSettings = Field(default_factory=TritonSettings)
    s3_region: str = Field("us-east-1", validation_alias="AWS_DEFAULT_REGION")
    s3_port: Port = Field(8333, validation_alias="S3_PORT")
    s3_bucket: str = Field("models", validation_alias="S3_BUCKET")
    model_repo: str = Field("s3://models/triton", validation_alias="MODEL_REPO")
    model_name: str = Field(MODEL_NAME, validation_alias="MODEL_NAME")
    state_dir: Path = Field(Path(".state"), validation_alias="STATE_DIR")
    fil_cache_dir: Path | None = Field(None, validation_alias="FIL_CACHE_DIR")  # default: <state_dir>/fil-cache
    reconciler_port: Port = Field(8003, validation_alias="RECONCILER_PORT")
    reconciler_interval_s: float = Field(2.0, gt=0, validation_alias="RECONCILER_INTERVAL_S")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every serving setting from ``environ`` (default ``os.environ``); a ValueError names each bad one."""
        try:
            if environ is None:
                return cls()
            return cls.model_validate({**environ, "triton": TritonSettings.model_validate(environ)})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r} {e['msg']}" for e in exc.errors())
            raise ValueError(f"bad setting in the environment: {problems}") from None


def command_line(module: str, doc: str | None) -> tuple[Settings, argparse.ArgumentParser]:
    """The settings from the environment, and the parser of ``python -m <module>`` (--help: the module's docstring)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return Settings.from_env(), parser
