"""Tell running Tritons to serve what config.pbtxt now names (explicit model control).

Triton runs with ``--model-control-mode=explicit``: it loads a model at start and again
only when asked (``POST /v2/repository/models/<name>/load``). A load re-reads config.pbtxt,
loads the version it names and swaps it in; requests in flight finish on the old one. If
the load fails, Triton keeps serving what it had; we then move the pointer back, so that a
Triton restarting later does not pick up the version that failed.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from fraudml.repository import ModelRepository


class RolloutError(RuntimeError):
    """A Triton refused or could not load the new version; the previous one keeps serving."""


def request_load(triton_url: str, model_name: str, timeout: float = 60.0) -> None:
    """Ask one Triton (``http://host:port``) to (re)load ``model_name``; raise on failure."""
    url = f"{triton_url.rstrip('/')}/v2/repository/models/{model_name}/load"
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            body = json.loads(body).get("error", body)
        except ValueError:
            pass
        raise RolloutError(f"{triton_url} refused to load {model_name}: {body}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise RolloutError(f"{triton_url} is unreachable: {exc}") from exc


def serving_version(triton_url: str, model_name: str, timeout: float = 5.0) -> int | None:
    """The version Triton reports READY for ``model_name`` (None if none)."""
    url = f"{triton_url.rstrip('/')}/v2/repository/index"
    req = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        index = json.loads(resp.read())
    ready = [int(m["version"]) for m in index if m.get("name") == model_name and m.get("state") == "READY" and m.get("version")]
    return max(ready) if ready else None


def load_and_confirm(url: str, repo: ModelRepository, attempts: int = 4) -> None:
    """Ask ``url`` to load, then check it serves the version config.pbtxt names now.

    Triton skips a reload when the model files look unchanged, and S3 modification times have a
    one-second resolution: a config rewritten within a second of the last load can be ignored
    (the load still answers 200). Then the config is rewritten unchanged and loaded again.
    The config is read anew each time: a concurrent publisher may have moved it on.
    """
    for attempt in range(attempts):
        request_load(url, repo.model_name)
        want = repo.served_version()
        serving = serving_version(url, repo.model_name)
        if want is None or serving == want:
            return
        if attempt + 1 < attempts:
            time.sleep(1.1)
            repo.touch_config()
    raise RolloutError(f"{url} still serves version {serving} after {attempts} loads; "
                       f"config.pbtxt names version {want}")


def roll_out(repo: ModelRepository, triton_urls: list[str], previous: int | None) -> None:
    """Load what config.pbtxt names on every Triton in ``triton_urls``.

    On the first failure the pointer goes back to ``previous`` and the Tritons that had
    already switched are asked to load it again, then RolloutError is raised.
    """
    new = repo.served_version()
    done: list[str] = []
    for url in triton_urls:
        try:
            load_and_confirm(url, repo)
            done.append(url)
        except RolloutError as exc:
            if repo.served_version() != new:
                raise  # a concurrent publisher moved the pointer on: its roll-out owns it now
            if new is not None and new != previous:
                repo.mark_rejected(new, str(exc))
            if previous is not None:
                repo.set_served_version(previous)
                for ok in done:
                    load_and_confirm(ok, repo)
            raise RolloutError(
                f"{exc}. config.pbtxt points at version {previous} again; "
                f"the servers keep serving version {previous}."
            ) from exc
