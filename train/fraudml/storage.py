"""Object storage for the model repository: one small interface, a local folder or S3.

Both stores offer the two conditional writes that publishing relies on:
``create`` (write only if the key does not exist: S3 ``If-None-Match: *``, ``O_EXCL`` locally)
and ``replace`` (write only if the key still has the tag we read: S3 ``If-Match``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class StorageError(RuntimeError):
    """The store cannot be used: missing credentials, unreachable endpoint, denied access."""


class PreconditionFailed(Exception):
    """A conditional write lost a race: the key exists, or changed since it was read."""


@dataclass(frozen=True)
class Blob:
    data: bytes
    tag: str  # ETag on S3, content hash locally: what `replace` compares against
    modified: float  # LastModified on S3, mtime locally (seconds since the epoch)


class LocalStore:
    """A folder. Writes go through a temporary file and ``os.replace``, so readers never
    see a partial file."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"model repository {self.root} is not writable")

    def get(self, key: str) -> Blob | None:
        try:
            data, modified = (self.root / key).read_bytes(), (self.root / key).stat().st_mtime
        except FileNotFoundError:
            return None
        return Blob(data, hashlib.md5(data, usedforsecurity=False).hexdigest(), modified)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def _write(self, key: str, data: bytes, place) -> None:
        """Write ``data`` completely into a temporary file next to ``key``'s path, then ``place(tmp, path)``."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            place(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put(self, key: str, data: bytes) -> None:
        self._write(key, data, os.replace)

    def create(self, key: str, data: bytes) -> None:
        """Write the whole file aside, then hard-link it into place: the link fails if the key
        exists, and a reader never sees the file empty or half written."""
        try:
            self._write(key, data, os.link)
        except FileExistsError as exc:
            raise PreconditionFailed(key) from exc

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        """Write ``key`` only if it still has ``tag`` (``None``: only if it does not exist)."""
        lock_path = self.root / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.get(key)
            if (current.tag if current else None) != tag:
                raise PreconditionFailed(key)
            self.put(key, data)

    def delete(self, key: str) -> None:
        """Remove ``key`` and the folders it leaves empty (an empty version folder is still a
        version to Triton)."""
        path = self.root / key
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break


class S3Store:
    """A bucket and prefix on S3 or an S3-compatible service (SeaweedFS locally), configured by the standard
    ``AWS_*`` variables; short time-outs and retries, so a store that is down fails in seconds, not minutes."""

    def __init__(self, uri: str, *, connect_timeout: float = 3.0, read_timeout: float = 20.0):
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an s3://bucket/prefix URI: {uri!r}")
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(for the local SeaweedFS: `make s3`, then "
                               "`set -a; . .state/s3/credentials.env; set +a`)")
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")
        self._client = session.client(
            "s3", endpoint_url=self.endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            config=Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                          retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, **kwargs):
        import botocore.exceptions as boto

        try:
            return fn(**kwargs)
        except boto.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise PreconditionFailed(kwargs.get("Key", "")) from exc
            if code in ("NoSuchKey", "404") or status == 404 and code != "NoSuchBucket":
                raise FileNotFoundError(kwargs.get("Key", "")) from exc
            if code == "NoSuchBucket":
                raise StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS S3'}: "
                                   "create it (the local `make s3` creates `models`)") from exc
            if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise StorageError(f"S3 refused the credentials for {what} on {self.uri} ({code}): "
                                   "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from exc
            raise StorageError(f"S3 error during {what} on {self.uri}: {code or exc}") from exc
        except (boto.ConnectionError, boto.HTTPClientError, boto.IncompleteReadError) as exc:  # refused, timed out, reset
            raise StorageError(f"S3 endpoint {self.endpoint or 'AWS S3'} is unreachable during {what}: {exc}. "
                               "Is the server up (`make s3`) and AWS_ENDPOINT_URL right?") from exc
        except boto.NoCredentialsError as exc:
            raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from exc

    def check(self) -> None:
        self._call("a listing", self._client.list_objects_v2, Bucket=self.bucket, MaxKeys=1)

    def get(self, key: str) -> Blob | None:
        def fetch(**kwargs) -> Blob:  # the body is read inside _call too: a stream cut off is an S3 error
            obj = self._client.get_object(**kwargs)
            return Blob(obj["Body"].read(), obj["ETag"], obj["LastModified"].timestamp())

        try:
            return self._call(f"reading {key}", fetch, Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        return sorted(self._call(f"listing {prefix}",
                                 lambda: [o["Key"][start:] for page in pages for o in page.get("Contents", [])]))

    def put(self, key: str, data: bytes, **conditions) -> None:
        self._call(f"writing {key}", self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                   **conditions)

    def create(self, key: str, data: bytes) -> None:
        self.put(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        self.put(key, data, **({"IfMatch": tag} if tag else {"IfNoneMatch": "*"}))

    def delete(self, key: str) -> None:
        self._call(f"deleting {key}", self._client.delete_object, Bucket=self.bucket, Key=self._key(key))


def open_store(uri: str) -> LocalStore | S3Store:
    """``s3://bucket/prefix`` -> S3Store, anything else -> LocalStore (a folder)."""
    if uri.startswith("s3://"):
        return S3Store(uri)
    if "://" in uri:
        raise StorageError(f"unsupported model repository URI {uri!r}: use s3://bucket/prefix or a folder")
    return LocalStore(uri)
