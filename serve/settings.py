"""One typed settings object for the serving side, read once from the environment.

Each field names its variable; the README's table "Environment variables" says what each one
means and who else reads it (``MODEL_KEEP_VERSIONS``: fraudml.repository; ``FIL_BACKEND``:
serve/fil_backend.py; ``FIL_CACHE_DIR``/``FIL_COMPILE``: the local ``fil`` backends).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraudml.tritonconfig import MODEL_NAME

Port = Annotated[int, Field(gt=0, lt=65536)]


class SettingsError(ValueError):
    """An environment variable has a value the serving side cannot use."""


def _env(name: str):
    return Field(None, validation_alias=AliasChoices(name))


class _Group(BaseSettings):
    # Empty variables count as unset; unknown ones are ignored; settings never change once read.
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True)


class S3Settings(_Group):
    endpoint_url: str | None = _env("AWS_ENDPOINT_URL")
    access_key_id: str | None = _env("AWS_ACCESS_KEY_ID")
    secret_access_key: str | None = _env("AWS_SECRET_ACCESS_KEY")
    session_token: str | None = _env("AWS_SESSION_TOKEN")
    region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_DEFAULT_REGION"))
    port: Port = Field(8333, validation_alias=AliasChoices("S3_PORT"))
    bucket: str = Field("models", validation_alias=AliasChoices("S3_BUCKET"))

    @field_validator("endpoint_url")
    @classmethod
    def _is_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError("is not an http(s)://host:port URL")
        return value


class TritonSettings(_Group):
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("TRITON_HOST"))
    http_port: Port = Field(8000, validation_alias=AliasChoices("TRITON_HTTP_PORT"))
    grpc_port: Port = Field(8001, validation_alias=AliasChoices("TRITON_GRPC_PORT"))
    metrics_port: Port = Field(8002, validation_alias=AliasChoices("TRITON_METRICS_PORT"))
    api_key: str | None = _env("TRITON_API_KEY")
    api_key_header: str = Field("fraudml-api-key", validation_alias=AliasChoices("TRITON_API_KEY_HEADER"))

    @field_validator("api_key", "api_key_header")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        # it goes into Triton's command line and an HTTP header: letters, digits, - and _ only
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            raise ValueError("may hold only A-Z a-z 0-9 _ - (e.g. openssl rand -hex 32)")
        return value

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
    s3: S3Settings = Field(default_factory=S3Settings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    model_repo: str = Field("s3://models/triton", validation_alias=AliasChoices("MODEL_REPO"))
    model_name: str = Field(MODEL_NAME, validation_alias=AliasChoices("MODEL_NAME"))
    state_dir: Path = Field(Path(".state"), validation_alias=AliasChoices("STATE_DIR"))
    fil_cache_dir: Path | None = _env("FIL_CACHE_DIR")
    fil_compile: bool = Field(True, validation_alias=AliasChoices("FIL_COMPILE"))
    reconciler_port: Port = Field(8003, validation_alias=AliasChoices("RECONCILER_PORT"))
    reconciler_interval_s: float = Field(2.0, gt=0, validation_alias=AliasChoices("RECONCILER_INTERVAL_S"))

    @model_validator(mode="after")
    def _cache_in_state_dir(self) -> Settings:
        if self.fil_cache_dir is None:
            object.__setattr__(self, "fil_cache_dir", self.state_dir / "fil-cache")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every serving setting from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: a port is not an integer in 1..65535, an endpoint is not a URL, ...
        """
        try:
            if environ is None:
                return cls()
            env: dict[str, Any] = {k: v for k, v in environ.items() if v != ""}
            return cls.model_validate({**env, "s3": S3Settings.model_validate(env),
                                       "triton": TritonSettings.model_validate(env)})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r} {e['msg']}" for e in exc.errors())
            raise SettingsError(f"bad setting in the environment: {problems}") from None


def command_line(module: str, doc: str | None) -> tuple[Settings, argparse.ArgumentParser]:
    """The settings from the environment, and an argument parser for ``python -m <module>``
    whose --help starts with the module's docstring (every serve/ command starts here)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return Settings.from_env(), parser
