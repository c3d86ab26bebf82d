"""The Triton model repository: publish a model as a new version, list, roll back, read lineage.

Layout (DESIGN §3)::

    <repo>/fraud-classifier/config.pbtxt        names the ONE served version
    <repo>/fraud-classifier/<n>/<model file>    e.g. checkpoint.tl
    <repo>/fraud-classifier/<n>/lineage.json    who made version n
    <repo>/fraud-classifier/_publish/<n>.json   the claim on number n, then its status

How publishing stays safe:
- A version number is claimed with a create-if-absent write of ``_publish/<n>.json``, so two
  publishers never get the same number, and a number is never reused, even after a failure.
- Files are uploaded into ``<n>/`` and read back and compared by hash.
- Only then is ``config.pbtxt`` rewritten (one atomic object write, compare-and-swap) to name
  ``n`` in ``version_policy { specific }``. Triton, in explicit model-control mode, loads
  exactly the version the config names, so a half-written ``<n>/`` is never visible to it,
  not even to a Triton that restarts in the middle of a publish.
- Rolling back is the same pointer move to an earlier complete version.
Triton ignores the non-numeric ``_publish`` folder (it logs that it skips it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudml.storage import LocalStore, PreconditionFailed, S3Store, StorageError, open_store
from fraudml.tritonconfig import MODEL_NAME, render_config, served_versions

CONFIG = "config.pbtxt"
LINEAGE = "lineage.json"
CLAIMS = "_publish"
MAX_CLAIM_TRIES = 64


class PublishError(RuntimeError):
    """Publishing failed; the message says what happened and that nothing was served."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    status: str  # complete | failed | in-progress | unknown
    served: bool
    files: list[str]
    claim: dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ModelRepository:
    """One model (``fraud-classifier`` by default) inside a Triton model repository."""

    def __init__(self, uri: str, model_name: str = MODEL_NAME):
        self.uri = uri
        self.model_name = model_name
        self.store: LocalStore | S3Store = open_store(uri)

    # -- keys -------------------------------------------------------------------------
    def _k(self, *parts: object) -> str:
        return "/".join([self.model_name, *map(str, parts)])

    # -- reading ----------------------------------------------------------------------
    def _config(self):
        return self.store.get(self._k(CONFIG))

    def served_version(self) -> int | None:
        """The version config.pbtxt names, or None before the first publish."""
        blob = self._config()
        if blob is None:
            return None
        versions = served_versions(blob.data.decode())
        return max(versions) if versions else None

    def _claims(self) -> dict[int, dict[str, Any]]:
        claims = {}
        for key in self.store.list(self._k(CLAIMS) + "/"):
            m = re.fullmatch(rf"{re.escape(self._k(CLAIMS))}/(\d+)\.json", key)
            if m:
                blob = self.store.get(key)
                claims[int(m.group(1))] = json.loads(blob.data) if blob else {}
        return claims

    def list_versions(self) -> list[VersionInfo]:
        files: dict[int, list[str]] = {}
        for key in self.store.list(self.model_name + "/"):
            m = re.fullmatch(rf"{re.escape(self.model_name)}/(\d+)/(.+)", key)
            if m:
                files.setdefault(int(m.group(1)), []).append(m.group(2))
        claims = self._claims()
        served = self.served_version()
        return [
            VersionInfo(
                version=v,
                status=claims.get(v, {}).get("status", "unknown"),
                served=v == served,
                files=sorted(files.get(v, [])),
                claim=claims.get(v, {}),
            )
            for v in sorted(set(files) | set(claims))
        ]

    def read_lineage(self, version: int | None = None) -> dict[str, Any]:
        """lineage.json of ``version`` (default: the served one)."""
        version = self.served_version() if version is None else version
        if version is None:
            raise LookupError(f"{self.uri}: no version of {self.model_name} has been published yet")
        blob = self.store.get(self._k(version, LINEAGE))
        if blob is None:
            raise LookupError(f"{self.uri}: {self.model_name}/{version} has no {LINEAGE}")
        return json.loads(blob.data)

    def read_file(self, version: int, name: str) -> bytes | None:
        """The bytes of one file of ``version`` (None if it does not exist)."""
        blob = self.store.get(self._k(version, name))
        return blob.data if blob else None

    def download_version(self, version: int, dest: str | Path) -> Path:
        """Copy the files of ``version`` into ``dest`` (a folder) and return it."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        prefix = self._k(version) + "/"
        keys = self.store.list(prefix)
        if not keys:
            raise LookupError(f"{self.uri}: {self.model_name}/{version} does not exist")
        for key in keys:
            blob = self.store.get(key)
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.data)
        return dest

    # -- writing ----------------------------------------------------------------------
    def _claim_next_version(self, claim: dict[str, Any]) -> int:
        existing = [v.version for v in self.list_versions()]
        candidate = max(existing, default=0) + 1
        for _ in range(MAX_CLAIM_TRIES):
            try:
                self.store.create(self._k(CLAIMS, f"{candidate}.json"), json.dumps(claim).encode())
                return candidate
            except PreconditionFailed:
                candidate += 1
        raise PublishError(f"could not claim a version number after {MAX_CLAIM_TRIES} tries")

    def _set_claim(self, version: int, claim: dict[str, Any]) -> None:
        self.store.put(self._k(CLAIMS, f"{version}.json"), json.dumps(claim, indent=2).encode())

    def _point_config(self, version: int, config_kwargs: dict[str, Any], *, only_forward: bool) -> int:
        """Compare-and-swap config.pbtxt to serve ``version``; returns the version served after.

        With ``only_forward`` (publishing) a concurrent publisher that already pointed the
        config at a newer version wins; a rollback moves the pointer wherever it is asked to.
        """
        text = render_config(versions=[version], **config_kwargs)
        for _ in range(MAX_CLAIM_TRIES):
            current = self._config()
            if current is not None and only_forward:
                served = served_versions(current.data.decode())
                if served and max(served) > version:
                    return max(served)
            try:
                self.store.replace(self._k(CONFIG), text.encode(), current.tag if current else None)
                return version
            except PreconditionFailed:
                continue
        raise PublishError("config.pbtxt kept changing under us; try again")

    def publish(
        self,
        files: dict[str, Path | bytes],
        lineage: dict[str, Any],
        config_kwargs: dict[str, Any],
    ) -> int:
        """Publish ``files`` as a new version and point config.pbtxt at it.

        Args:
            files: name -> path or bytes, e.g. ``{"checkpoint.tl": path}``.
            lineage: who made the model (run pathspec, data fingerprint, metrics, ...).
            config_kwargs: ``render_config`` arguments for this version (model_type, threshold, ...).

        Returns:
            The new version number.
        """
        self.store.check()  # fail fast: credentials, endpoint, bucket
        payload = {name: (p if isinstance(p, bytes) else Path(p).read_bytes()) for name, p in files.items()}
        if LINEAGE in payload:
            raise PublishError(f"{LINEAGE} is written by the publisher; pass it as `lineage`")
        claim = {"status": "in-progress", "claimed_at": _now(), "run": lineage.get("pathspec")}
        version = self._claim_next_version(claim)
        try:
            record = {
                **lineage,
                "model_name": self.model_name,
                "version": version,
                "model_repository": self.uri,
                "published_at": _now(),
                "triton_config": config_kwargs,
                "files": {name: _sha256(data) for name, data in payload.items()},
            }
            payload[LINEAGE] = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
            for name, data in payload.items():
                self.store.put(self._k(version, name), data)
            for name, data in payload.items():  # read back: what Triton will load is what we sent
                blob = self.store.get(self._k(version, name))
                if blob is None or blob.data != data:
                    raise PublishError(f"{self.model_name}/{version}/{name} did not read back intact")
            served = self._point_config(version, config_kwargs, only_forward=True)
        except BaseException as exc:
            self._abandon(version, claim, exc)
            if isinstance(exc, StorageError | PublishError):
                raise PublishError(
                    f"publishing {self.model_name}/{version} to {self.uri} failed: {exc}. "
                    "Nothing was served from it; version number "
                    f"{version} stays retired, and a retry publishes the next one."
                ) from exc
            raise
        self._set_claim(version, {**claim, "status": "complete", "completed_at": _now(),
                                  "files": record["files"], "served_after_publish": served})
        return version

    def _abandon(self, version: int, claim: dict[str, Any], exc: BaseException) -> None:
        """Best effort: remove the partial files and mark the claim failed (the store may be down)."""
        try:
            for key in self.store.list(self._k(version) + "/"):
                self.store.delete(key)
            self._set_claim(version, {**claim, "status": "failed", "error": str(exc)[:500], "failed_at": _now()})
        except Exception:  # noqa: BLE001 - the original error is what the caller must see
            pass

    def touch_config(self) -> None:
        """Rewrite config.pbtxt unchanged: a new modification time, so that a Triton that saw
        the previous write within the same second (S3 times have 1 s resolution) reloads it."""
        current = self._config()
        if current is not None:
            self.store.replace(self._k(CONFIG), current.data, current.tag)

    def mark_rejected(self, version: int, reason: str) -> None:
        """Record that a server refused ``version`` (it stays retired; its files stay for forensics)."""
        claim = self._claims().get(version, {})
        self._set_claim(version, {**claim, "status": "rejected", "error": reason[:500], "rejected_at": _now()})

    def set_served_version(self, version: int) -> int:
        """Roll back (or forward) to an earlier complete version. Returns the previous one."""
        self.store.check()
        info = {v.version: v for v in self.list_versions()}
        if version not in info:
            raise LookupError(f"{self.model_name}/{version} does not exist in {self.uri}")
        if info[version].status != "complete":
            raise PublishError(
                f"{self.model_name}/{version} is {info[version].status}, not complete: it cannot be served"
            )
        previous = self.served_version()
        lineage = self.read_lineage(version)
        self._point_config(version, lineage["triton_config"], only_forward=False)
        return previous


def publish_model_version(
    repo_uri: str,
    files: dict[str, Path | bytes],
    lineage: dict[str, Any],
    config_kwargs: dict[str, Any],
    model_name: str = MODEL_NAME,
) -> int:
    """Publish a model as the next version of ``model_name`` in ``repo_uri``; see ModelRepository."""
    return ModelRepository(repo_uri, model_name).publish(files, lineage, config_kwargs)
