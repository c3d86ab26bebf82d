"""Tell running Tritons to serve what config.pbtxt now names (explicit model control).

Triton runs with ``--model-control-mode=explicit``: it loads a model at start and again
only when asked (``POST /v2/repository/models/<name>/load``). A load re-reads config.pbtxt,
loads the version it names and swaps it in; requests in flight finish on the old one. If
the load fails, Triton keeps serving what it had; we then move the pointer back, so that a
Triton restarting later does not pick up the version that failed.
"""

from __future__ import annotations

import time

from fraudml.repository import ModelRepository
from fraudml.triton_control import TritonRefused, TritonUnavailable, load_model, ready_version


class RolloutError(RuntimeError):
    """A Triton refused or could not load the new version; the previous one keeps serving."""


def vanished_during_copy(exc: Exception) -> bool:
    """Triton's load failed because an object it had listed was gone when it fetched it: the
    folder changed under it (an archived version), not the version being loaded."""
    return "NoSuchKey" in str(exc)


def load_and_confirm(url: str, repo: ModelRepository, attempts: int = 4) -> None:
    """Ask ``url`` to load, then check it serves the version config.pbtxt names now (read anew each time:
    a concurrent publisher may have moved it on). Triton skips a reload when the files look unchanged,
    and S3 times have one-second resolution, so a config rewritten within a second of the last load
    can be ignored (the load still answers 200): then it is rewritten unchanged and loaded again. A load
    that failed because a concurrent publisher archived a file Triton was copying (R9) is tried again."""
    for attempt in range(attempts):
        try:
            load_model(url, repo.model_name)
            serving = ready_version(url, repo.model_name)
        except TritonRefused as exc:
            if not (vanished_during_copy(exc) and attempt + 1 < attempts):
                raise RolloutError(str(exc)) from exc
            time.sleep(0.5)
            continue
        except TritonUnavailable as exc:
            raise RolloutError(str(exc)) from exc
        want = repo.served_version()
        if want is None or serving == want:
            return
        if attempt + 1 < attempts:
            time.sleep(1.1)
            repo.touch_config()
    raise RolloutError(f"{url} still serves version {serving} after {attempts} loads; "
                       f"config.pbtxt names version {want}")


def roll_out(repo: ModelRepository, triton_urls: list[str], previous: int | None) -> None:
    """Load what config.pbtxt names on every Triton in ``triton_urls``; on the first failure, point back at
    ``previous``, have the Tritons that had switched load it again, and raise RolloutError."""
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
            raise RolloutError(f"{exc}. config.pbtxt points at version {previous} again; "
                               f"the servers keep serving version {previous}.") from exc
