"""The one place that talks to Triton's control API (HTTP ``http://host:port``), through ``tritonclient``.

Errors become :class:`TritonUnavailable` or :class:`TritonRefused`, naming the server and what it said.
Every call carries ``TRITON_API_KEY`` (header ``TRITON_API_KEY_HEADER``, default ``fraudml-api-key``)
when set: the model-repository API (load) answers 403 without it.
"""

from __future__ import annotations

import os
from typing import Any


class TritonUnavailable(ConnectionError):
    """Triton could not be reached."""


class TritonRefused(RuntimeError):
    """Triton answered the call with an error."""


def _call(url: str, what: str, fn, timeout: float, headers: dict[str, str] | None = None):
    import tritonclient.http as th  # lazy: the flow imports this module only to roll out
    from tritonclient.utils import InferenceServerException

    if headers is None:  # the header that carries TRITON_API_KEY, when one is set
        key = os.environ.get("TRITON_API_KEY")
        headers = {os.environ.get("TRITON_API_KEY_HEADER") or "fraudml-api-key": key} if key else {}
    try:
        with th.InferenceServerClient(url.split("://", 1)[-1].rstrip("/"), connection_timeout=timeout,
                                      network_timeout=timeout) as client:
            return fn(client, headers)
    except InferenceServerException as exc:
        status = str(exc.status() or "")
        if status.startswith(("4", "5")) and status.isdigit():
            raise TritonRefused(f"{url} refused to {what}: {exc.message()}") from exc
        raise TritonUnavailable(f"{url} is unreachable ({what}): {exc.message()}") from exc
    except OSError as exc:  # connection refused/reset, timeouts from the HTTP layer
        raise TritonUnavailable(f"{url} is unreachable ({what}): {exc}") from exc


def is_ready(url: str, model: str | None = None, timeout: float = 2.0) -> bool:
    """Server ready, or (with ``model``) that model ready; False when unreachable."""
    try:
        return bool(_call(url, "say if it is ready",
                          lambda c, h: c.is_model_ready(model, headers=h) if model else c.is_server_ready(headers=h), timeout))
    except (TritonUnavailable, TritonRefused):
        return False


def load_model(url: str, model: str, timeout: float = 60.0, config: str | None = None) -> None:
    """Ask Triton (explicit model control) to (re)load ``model`` from its repository; with ``config``
    (JSON), with that configuration instead of its config.pbtxt (Triton then always reloads)."""
    _call(url, f"load {model}", lambda c, h: c.load_model(model, headers=h, config=config), timeout)


def repository_index(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Triton's view of its repository: name, version, state and reason per model version."""
    return _call(url, "list its repository", lambda c, h: c.get_model_repository_index(headers=h), timeout, headers)


def ready_version(url: str, model: str, timeout: float = 5.0) -> int | None:
    """The highest version of ``model`` the repository index reports READY (None if none)."""
    index = repository_index(url, timeout)
    ready = [int(m["version"]) for m in index
             if m.get("name") == model and m.get("state") == "READY" and m.get("version")]
    return max(ready) if ready else None


def server_version(url: str, timeout: float = 5.0) -> str:
    return _call(url, "give its metadata", lambda c, h: c.get_server_metadata(headers=h), timeout)["version"]


def model_config(url: str, model: str, timeout: float = 5.0) -> dict[str, Any]:
    """The model's configuration as Triton loaded it (JSON form of ``config.pbtxt``)."""
    return _call(url, f"give the config of {model}", lambda c, h: c.get_model_config(model, headers=h), timeout)


def inference_statistics(url: str, model: str, timeout: float = 10.0) -> dict[str, Any]:
    """Per-version request counts and cumulative times (``/v2/models/<model>/stats``)."""
    return _call(url, f"give the statistics of {model}", lambda c, h: c.get_inference_statistics(model, headers=h), timeout)
