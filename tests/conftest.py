"""Shared fixtures: real servers on free ports, waited for by polling, always stopped (each
fixture's docstring says what it gives)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pytest

from serve.fil_backend import NativeBackendUnavailable, build_native
from serve.ports import free_port, free_ports
from serve.s3 import SeaweedS3
from serve.triton import TritonServer

# before any test module imports them (integration tests use the rig's request loop and wire too)
pytest.register_assert_rewrite("tests.reliability.rig", "tests.reliability.wire")


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Code under test may load credentials into os.environ (as the CLIs do): no test sees an earlier one's."""
    with mock.patch.dict(os.environ):
        yield


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real SeaweedFS S3 gateway on a free port with its own credentials and bucket "models"."""
    with SeaweedS3(tmp_path_factory.mktemp("s3"), port=free_port(), bucket="models") as server:
        yield server


@pytest.fixture
def publisher_env(s3_server: SeaweedS3) -> SeaweedS3:
    """``s3_server`` with its writer credentials (AWS_*) in os.environ, as `make` gives the publishing commands."""
    os.environ.update(s3_server.env())
    return s3_server


@pytest.fixture(scope="module")
def metaflow_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """``(root, env)``: a private local Metaflow datastore and metadata for a module's flow runs
    (``Runner(FLOW, cwd=root, env=env)``), which this process reads too (its working directory is ``root``)."""
    root = tmp_path_factory.mktemp("metaflow")
    env = {"METAFLOW_USER": "pytest",  # Metaflow ignores the name "root" (CI runs as root)
           "METAFLOW_DEFAULT_DATASTORE": "local", "METAFLOW_DEFAULT_METADATA": "local",
           "METAFLOW_S3_TRANSIENT_RETRY_COUNT": "0"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        # the local datastore (and its cards) is the .metaflow folder found from the working directory
        for key in ("METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_CARD_LOCALROOT"):
            mp.delenv(key, raising=False)
        mp.chdir(root)
        yield root, env


@pytest.fixture(scope="session")
def fil_backend_kind() -> Callable[[str], str]:
    """``fil_backend_kind(kind)`` returns ``kind`` ("native", "python"), skipping the test when it is native
    and the native backend cannot be built here (tried once)."""
    try:
        build_native()
        unbuildable = None
    except NativeBackendUnavailable as e:
        unbuildable = str(e)

    def require(kind: str) -> str:
        if kind == "native" and unbuildable is not None:
            pytest.skip(f"the native fil backend cannot be built here: {unbuildable} (`make native-backend`)")
        return kind

    return require


@pytest.fixture(scope="session")
def triton_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., TritonServer]]:
    """``triton_factory(model_repository, **kwargs)`` starts a :class:`TritonServer` on free ports and
    returns it ready; all are stopped at the session's end. ``fil_compile=False``: Treelite GTIL only;
    ``fil_backend`` sets ``FIL_BACKEND`` (default: the launcher's auto); other ``kwargs`` go to TritonServer
    (``fil_cache_dir``: default, one compiled-model cache shared by the session's Tritons)."""
    started: list[TritonServer] = []
    fil_cache_dir = tmp_path_factory.mktemp("fil-cache")

    def start(model_repository: str | Path, *, env: dict[str, str] | None = None, fil_compile: bool = True,
              fil_backend: str | None = None, timeout: float = 120.0, **kwargs) -> TritonServer:
        http_port, grpc_port, metrics_port = free_ports(3)
        env = {**(env or {}), "FIL_COMPILE": "1" if fil_compile else "0"}
        if fil_backend:
            env["FIL_BACKEND"] = fil_backend
        server = TritonServer(str(model_repository), http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                              state_dir=tmp_path_factory.mktemp("triton"), env=env,
                              fil_cache_dir=kwargs.pop("fil_cache_dir", fil_cache_dir), **kwargs)
        started.append(server)
        return server.start(timeout=timeout)

    try:
        yield start
    finally:
        for server in started:
            server.stop()
