"""The Triton model repository: publish a model as a new version, list, roll back, read lineage.

Layout (DESIGN §3)::

    <repo>/fraud-classifier/config.pbtxt         names the ONE served version
    <repo>/fraud-classifier/<n>/<model file>     e.g. checkpoint.tl: the newest versions only
    <repo>/fraud-classifier/<n>/lineage.json     who made version n
    <repo>/_publish/fraud-classifier/<n>.json    the claim on number n, then its status
    <repo>/_archive/fraud-classifier/<n>/...     older versions, restored when rolled back to

Triton downloads the whole ``fraud-classifier/`` folder at every load, so only what it may serve
lives there (``MODEL_KEEP_VERSIONS`` complete versions, default 5, plus the served and canary ones).
A number is claimed by a create-if-absent write and never reused; files are uploaded and read back
by hash; only then is ``config.pbtxt`` compare-and-swapped to name ``n`` (``version_policy
specific``), never within the second of the previous write (Triton tells a changed config by its
modification time, which S3 keeps in seconds). In explicit model-control mode Triton loads exactly
the version the config names, so it never sees a half-written ``<n>/``. A rollback is the same
pointer move (after copying the version back from ``_archive/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudml.lineage import utc_now
from fraudml.storage import LocalStore, PreconditionFailed, S3Store, StorageError, open_store
from fraudml.tritonconfig import MODEL_NAME, render_config, served_versions

CONFIG = "config.pbtxt"
LINEAGE = "lineage.json"
CLAIMS = "_publish"
ARCHIVE = "_archive"
CANARY = "_canary"  # _canary/<model>.json: {"version": n, "percent": p}, read by serve.reconciler
MAX_CLAIM_TRIES = 64
DEFAULT_KEEP_VERSIONS = 5


class PublishError(RuntimeError):
    """Publishing failed; the message says what happened and that nothing was served."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    status: str  # complete | failed | in-progress | unknown
    served: bool
    files: list[str]
    claim: dict[str, Any]
    archived: bool = False  # its files are in _archive/ only (restored when rolled back to)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ModelRepository:
    """One model (``fraud-classifier`` by default) inside a Triton model repository."""

    def __init__(self, uri: str, model_name: str = MODEL_NAME, keep_versions: int | None = None):
        self.uri = uri
        self.model_name = model_name
        # complete versions kept where Triton downloads them: the argument, else MODEL_KEEP_VERSIONS
        name, raw = (("keep_versions", keep_versions) if keep_versions is not None
                     else ("MODEL_KEEP_VERSIONS", os.environ.get("MODEL_KEEP_VERSIONS") or DEFAULT_KEEP_VERSIONS))
        if not str(raw).isdigit() or int(raw) < 1:
            raise ValueError(f"{name}={raw!r} must be an integer >= 1")
        self.keep_versions = int(raw)
        self.store: LocalStore | S3Store = open_store(uri)

    def _k(self, *parts: object) -> str:
        return "/".join([self.model_name, *map(str, parts)])

    def _archived(self, *parts: object) -> str:
        return "/".join([ARCHIVE, self.model_name, *map(str, parts)])

    def _claim_key(self, version: int) -> str:
        return f"{CLAIMS}/{self.model_name}/{version}.json"

    def read_config(self):
        """config.pbtxt as a :class:`fraudml.storage.Blob` (data, ETag, modification time), or None."""
        return self.store.get(self._k(CONFIG))

    def canary(self) -> dict[str, int] | None:
        """The canary, if one runs: ``{"version": n, "percent": p}`` (serve.reconciler)."""
        blob = self.store.get(f"{CANARY}/{self.model_name}.json")
        return json.loads(blob.data) if blob else None

    def served_version(self) -> int | None:
        """The version config.pbtxt names, or None before the first publish."""
        blob = self.read_config()
        versions = served_versions(blob.data.decode()) if blob is not None else []
        return max(versions) if versions else None

    def _claims(self) -> dict[int, dict[str, Any]]:
        claims, folder = {}, f"{CLAIMS}/{self.model_name}"
        for key in self.store.list(folder + "/"):
            if m := re.fullmatch(rf"{re.escape(folder)}/(\d+)\.json", key):
                blob = self.store.get(key)
                claims[int(m.group(1))] = json.loads(blob.data) if blob else {}
        return claims

    def _files(self, prefix: str) -> dict[int, list[str]]:
        files: dict[int, list[str]] = {}
        for key in self.store.list(prefix + "/"):
            if m := re.fullmatch(rf"{re.escape(prefix)}/(\d+)/(.+)", key):
                files.setdefault(int(m.group(1)), []).append(m.group(2))
        return files

    def list_versions(self) -> list[VersionInfo]:
        files, archived = self._files(self.model_name), self._files(self._archived())
        claims, served = self._claims(), self.served_version()
        return [
            VersionInfo(v, claims.get(v, {}).get("status", "unknown"), v == served,
                        sorted(files.get(v) or archived.get(v, [])), claims.get(v, {}),
                        archived=v not in files and v in archived)
            for v in sorted(set(files) | set(archived) | set(claims))
        ]

    def read_lineage(self, version: int | None = None) -> dict[str, Any]:
        """lineage.json of ``version`` (default: the served one)."""
        version = self.served_version() if version is None else version
        if version is None:
            raise LookupError(f"{self.uri}: no version of {self.model_name} has been published yet")
        data = self.read_file(version, LINEAGE)
        if data is None:
            raise LookupError(f"{self.uri}: {self.model_name}/{version} has no {LINEAGE}")
        return json.loads(data)

    def read_file(self, version: int, name: str) -> bytes | None:
        """The bytes of one file of ``version``, served side or archive (None if it does not exist)."""
        blob = self.store.get(self._k(version, name)) or self.store.get(self._archived(version, name))
        return blob.data if blob else None

    def download_version(self, version: int, dest: str | Path) -> Path:
        """Copy the files of ``version`` into ``dest`` (a folder) and return it."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for prefix in (self._k(version) + "/", self._archived(version) + "/"):  # served side first
            if keys := self.store.list(prefix):
                break
        else:
            raise LookupError(f"{self.uri}: {self.model_name}/{version} does not exist")
        for key in keys:
            blob = self.store.get(key)
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.data)
        return dest

    def _claim_next_version(self, claim: dict[str, Any]) -> int:
        candidate = max((v.version for v in self.list_versions()), default=0) + 1
        for _ in range(MAX_CLAIM_TRIES):
            try:
                self.store.create(self._claim_key(candidate), json.dumps(claim).encode())
                return candidate
            except PreconditionFailed:
                candidate += 1
        raise PublishError(f"could not claim a version number after {MAX_CLAIM_TRIES} tries")

    def _set_claim(self, version: int, claim: dict[str, Any]) -> None:
        self.store.put(self._claim_key(version), json.dumps(claim, indent=2).encode())

    def _point_config(self, version: int, config_kwargs: dict[str, Any], *, only_forward: bool) -> int:
        """Compare-and-swap config.pbtxt to serve ``version``; returns the version served after.

        With ``only_forward`` (publishing) a concurrent publisher that already pointed the
        config at a newer version wins; a rollback moves the pointer wherever it is asked to.
        """
        text = render_config(versions=[version], **config_kwargs)
        for _ in range(MAX_CLAIM_TRIES):
            current = self.read_config()
            if current is not None:
                served = max(served_versions(current.data.decode()), default=0) if only_forward else 0
                if served > version:
                    return served
                # A write within the second of the previous one would look unchanged to a
                # Triton that loaded the previous one (S3 times have 1 s resolution, R2).
                time.sleep(max(0.0, min(1.1, int(current.modified) + 1.05 - time.time())))
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
        canary_percent: int | None = None,
    ) -> int:
        """Publish ``files`` (name -> path or bytes) as a new version and point config.pbtxt (rendered from
        ``config_kwargs``) at it; with ``canary_percent``, config.pbtxt keeps the served version and that share
        of the pods serves the new one (:meth:`set_canary`; a first version is always served). Returns its number."""
        self.store.check()  # fail fast: credentials, endpoint, bucket
        payload = {name: (p if isinstance(p, bytes) else Path(p).read_bytes()) for name, p in files.items()}
        if LINEAGE in payload:
            raise PublishError(f"{LINEAGE} is written by the publisher; pass it as `lineage`")
        claim = {"status": "in-progress", "claimed_at": utc_now(), "run": lineage.get("pathspec")}
        version = self._claim_next_version(claim)
        try:
            record = {**lineage, "model_name": self.model_name, "version": version, "model_repository": self.uri,
                      "published_at": utc_now(), "triton_config": config_kwargs,
                      "files": {name: _sha256(data) for name, data in payload.items()}}
            payload[LINEAGE] = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
            for name, data in payload.items():
                self._put_verified(self._k(version, name), data)
            # Before the pointer moves: no Triton has a reason to load while the folder shrinks
            # (one that downloads it while an object is deleted fails that load, then retries).
            try:
                self.archive_old_versions(incoming=version)
            except (StorageError, PublishError) as exc:  # the publish goes on; the next one archives again
                print(f"warning: archiving versions older than {self.model_name}/{version} failed: {exc}",
                      file=sys.stderr)
            as_canary = bool(canary_percent) and self.served_version() is not None
            served = self.served_version() if as_canary else \
                self._point_config(version, config_kwargs, only_forward=True)
        except BaseException as exc:
            self._abandon(version, claim, exc)
            if isinstance(exc, StorageError | PublishError):
                raise PublishError(f"publishing {self.model_name}/{version} to {self.uri} failed: {exc}. "
                                   "Nothing was served from it; version number "
                                   f"{version} stays retired, and a retry publishes the next one.") from exc
            raise
        self._set_claim(version, {**claim, "status": "complete", "completed_at": utc_now(),
                                  "files": record["files"], "served_after_publish": served})
        if as_canary:
            self.set_canary(version, canary_percent)
        return version

    def _put_verified(self, key: str, data: bytes) -> None:
        """Write, then read back: what Triton will load is what we sent."""
        self.store.put(key, data)
        blob = self.store.get(key)
        if blob is None or blob.data != data:
            raise PublishError(f"{key} did not read back intact")

    def archive_old_versions(self, incoming: int | None = None) -> list[int]:
        """Move to ``_archive/`` every complete, failed or rejected version but the newest ``keep_versions``
        complete ones (``incoming``, about to be served, counting as one), the served and the canary one."""
        infos = [v for v in self.list_versions() if not v.archived and v.files]
        complete = sorted(v.version for v in infos if v.status == "complete")
        canary = (self.canary() or {}).get("version")
        newest = self.keep_versions - (incoming is not None)
        keep = set(complete[max(0, len(complete) - newest):]) | {self.served_version(), canary, incoming}
        return [info.version for info in infos if info.version not in keep
                and info.status in ("complete", "rejected", "failed") and self._move_to_archive(info.version)]

    def _move_to_archive(self, version: int) -> bool:
        """Copy, read back, then delete the served-side copy (unless it became the served one)."""
        prefix = self._k(version) + "/"
        keys = self.store.list(prefix)
        for key in keys:
            blob = self.store.get(key)
            if blob is None:
                return False  # another publisher is archiving it
            self._put_verified(self._archived(version, key[len(prefix):]), blob.data)
        if version in (self.served_version(), (self.canary() or {}).get("version")):  # chosen meanwhile
            return False
        for key in keys:
            self.store.delete(key)
        return True

    def restore_version(self, version: int) -> None:
        """Copy an archived version back where Triton finds it, checked against its lineage."""
        lineage = self.read_lineage(version)
        prefix = self._archived(version) + "/"
        for key in self.store.list(prefix):
            name = key[len(prefix):]
            data = self.store.get(key).data
            if name in lineage.get("files", {}) and _sha256(data) != lineage["files"][name]:
                raise PublishError(f"{key} does not match the hash in its lineage.json; not restored")
            self.store.put(self._k(version, name), data)

    def _abandon(self, version: int, claim: dict[str, Any], exc: BaseException) -> None:
        """Best effort: remove the partial files and mark the claim failed (the store may be down)."""
        with contextlib.suppress(Exception):  # the original error is what the caller must see
            for key in self.store.list(self._k(version) + "/"):
                self.store.delete(key)
            self._set_claim(version, {**claim, "status": "failed", "error": str(exc)[:500], "failed_at": utc_now()})

    def touch_config(self) -> None:
        """Rewrite config.pbtxt unchanged: a new modification time, so that a Triton that saw
        the previous write within the same second (S3 times have 1 s resolution) reloads it."""
        current = self.read_config()
        if current is not None:
            self.store.replace(self._k(CONFIG), current.data, current.tag)

    def mark_rejected(self, version: int, reason: str) -> None:
        """Record that a server refused ``version`` (it stays retired; its files stay for forensics)."""
        claim = self._claims().get(version, {})
        self._set_claim(version, {**claim, "status": "rejected", "error": reason[:500], "rejected_at": utc_now()})

    def set_canary(self, version: int, percent: int) -> None:
        """Let ``percent`` % of the Triton pods (chosen by name) serve ``version``; the others
        keep what config.pbtxt names. Promote with :meth:`set_served_version`, then
        :meth:`clear_canary`; abort with :meth:`clear_canary`."""
        if not 0 < percent <= 100:
            raise ValueError(f"percent must be in 1..100, got {percent}")
        self._restore_complete(version, "be a canary")
        self.store.put(f"{CANARY}/{self.model_name}.json", json.dumps({"version": version, "percent": percent}).encode())

    def _restore_complete(self, version: int, purpose: str) -> None:
        """Refuse a version that does not exist or is not complete; restore it when it was archived."""
        info = {v.version: v for v in self.list_versions()}.get(version)
        if info is None:
            raise LookupError(f"{self.model_name}/{version} does not exist in {self.uri}")
        if info.status != "complete":
            raise PublishError(f"{self.model_name}/{version} is {info.status}, not complete: it cannot {purpose}")
        if info.archived:
            self.restore_version(version)

    def clear_canary(self) -> None:
        self.store.delete(f"{CANARY}/{self.model_name}.json")

    def set_served_version(self, version: int) -> int:
        """Roll back (or forward) to an earlier complete version. Returns the previous one."""
        self.store.check()
        self._restore_complete(version, "be served")
        previous = self.served_version()
        lineage = self.read_lineage(version)
        self._point_config(version, lineage["triton_config"], only_forward=False)
        if not self.store.list(self._k(version) + "/"):  # a concurrent publish archived it meanwhile
            self.restore_version(version)
        return previous


def publish_model_version(
    repo_uri: str,
    files: dict[str, Path | bytes],
    lineage: dict[str, Any],
    config_kwargs: dict[str, Any],
) -> int:
    """Publish a model as the next version of ``fraud-classifier`` in ``repo_uri``; see ModelRepository."""
    return ModelRepository(repo_uri).publish(files, lineage, config_kwargs)
