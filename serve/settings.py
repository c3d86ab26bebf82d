"""One typed settings object for the serving side, read once from the environment.

Every variable, its default and meaning (the README's environment table is built from this):

| variable | default | meaning |
| --- | --- | --- |
| ``AWS_ENDPOINT_URL`` | – | S3 endpoint (``http://127.0.0.1:8333`` for the local SeaweedFS); unset = AWS |
| ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` | – | S3 credentials |
| ``AWS_DEFAULT_REGION`` | ``us-east-1`` | S3 region |
| ``MODEL_REPO`` | ``s3://models/triton`` | Triton model repository: ``s3://bucket/prefix`` or a folder |
| ``MODEL_NAME`` | ``fraud-classifier`` | the model's name in the repository |
| ``TRITON_HOST`` | ``127.0.0.1`` | address Triton binds and clients connect to |
| ``TRITON_HTTP_PORT`` / ``TRITON_GRPC_PORT`` / ``TRITON_METRICS_PORT`` | 8000 / 8001 / 8002 | Triton ports |
| ``S3_PORT`` | ``8333`` | port of the local SeaweedFS S3 gateway |
| ``S3_BUCKET`` | ``models`` | bucket the local SeaweedFS creates |
| ``STATE_DIR`` | ``.state`` | pid files, logs, SeaweedFS data, compiled-model cache |
| ``FIL_CACHE_DIR`` | ``<STATE_DIR>/fil-cache`` | where the local ``fil`` backend keeps compiled models |
| ``FIL_COMPILE`` | ``1`` | ``0``: the local ``fil`` backend serves with Treelite GTIL only, never compiles |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fraudml.tritonconfig import MODEL_NAME


class SettingsError(ValueError):
    """An environment variable has a value the serving side cannot use."""


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    region: str = "us-east-1"
    port: int = 8333
    bucket: str = "models"

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables for these settings (only those that are set)."""
        out = {"AWS_DEFAULT_REGION": self.region}
        if self.endpoint_url:
            out["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.access_key_id:
            out["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            out["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return out


@dataclass(frozen=True)
class TritonSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class Settings:
    s3: S3Settings = field(default_factory=S3Settings)
    triton: TritonSettings = field(default_factory=TritonSettings)
    model_repo: str = "s3://models/triton"
    model_name: str = MODEL_NAME
    state_dir: Path = Path(".state")
    fil_cache_dir: Path = Path(".state/fil-cache")
    fil_compile: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every serving setting from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: a port is not an integer in 1..65535, or an endpoint is not a URL.
        """
        env = os.environ if environ is None else environ
        state_dir = Path(env.get("STATE_DIR") or ".state")
        endpoint = env.get("AWS_ENDPOINT_URL") or None
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"AWS_ENDPOINT_URL={endpoint!r} is not an http(s)://host:port URL")
        return cls(
            s3=S3Settings(
                endpoint_url=endpoint,
                access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                region=env.get("AWS_DEFAULT_REGION") or "us-east-1",
                port=_port(env, "S3_PORT", 8333),
                bucket=env.get("S3_BUCKET") or "models",
            ),
            triton=TritonSettings(
                host=env.get("TRITON_HOST") or "127.0.0.1",
                http_port=_port(env, "TRITON_HTTP_PORT", 8000),
                grpc_port=_port(env, "TRITON_GRPC_PORT", 8001),
                metrics_port=_port(env, "TRITON_METRICS_PORT", 8002),
            ),
            model_repo=env.get("MODEL_REPO") or "s3://models/triton",
            model_name=env.get("MODEL_NAME") or MODEL_NAME,
            state_dir=state_dir,
            fil_cache_dir=Path(env.get("FIL_CACHE_DIR") or state_dir / "fil-cache"),
            fil_compile=(env.get("FIL_COMPILE") or "1").strip().lower() not in ("0", "false", "no", "off"),
        )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name}={raw!r} is not a port number (1..65535)")
    return port


def get_settings() -> Settings:
    """The settings of this process, read from the environment at call time."""
    return Settings.from_env()
