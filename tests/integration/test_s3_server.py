"""The local S3 (real SeaweedFS) and Triton reading its model repository from it."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from fraudml.repository import ModelRepository
from serve.ports import free_port
from serve.s3 import SeaweedS3
from serve.supervisor import ServiceError
from serve.triton import TritonError, triton_repository_uri

pytestmark = pytest.mark.slow


# -- SeaweedFS (anonymous and wrong-credential requests, loopback-only ports: reliability/test_security)
def test_tritons_identity_reads_but_cannot_write_or_delete(s3_server):
    """Triton's read-only identity lists and reads; every write, copy, delete and bucket creation is refused."""
    writer, reader = s3_server.client(), s3_server.client(reader=True)
    assert s3_server.env(reader=True)["AWS_ACCESS_KEY_ID"] != s3_server.env()["AWS_ACCESS_KEY_ID"]
    key = f"ro/{uuid.uuid4().hex}/config.pbtxt"
    writer.put_object(Bucket="models", Key=key, Body=b"served")
    assert reader.get_object(Bucket="models", Key=key)["Body"].read() == b"served"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket="models", Prefix=key)["Contents"]] == [key]
    attempts = {
        "put a new object": lambda: reader.put_object(Bucket="models", Key=key + ".new", Body=b"x"),
        "overwrite": lambda: reader.put_object(Bucket="models", Key=key, Body=b"evil"),
        "conditional put": lambda: reader.put_object(Bucket="models", Key=key + ".c", Body=b"x", IfNoneMatch="*"),
        "copy": lambda: reader.copy_object(Bucket="models", Key=key + ".copy", CopySource=f"models/{key}"),
        "multipart upload": lambda: reader.create_multipart_upload(Bucket="models", Key=key + ".mp"),
        "delete": lambda: reader.delete_object(Bucket="models", Key=key),
        "create a bucket": lambda: reader.create_bucket(Bucket=f"b-{uuid.uuid4().hex[:8]}"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] == "AccessDenied", what
    batch = reader.delete_objects(Bucket="models", Delete={"Objects": [{"Key": key}]})
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"] and not batch.get("Deleted")
    assert writer.get_object(Bucket="models", Key=key)["Body"].read() == b"served"
    assert [o["Key"] for o in writer.list_objects_v2(Bucket="models", Prefix=key)["Contents"]] == [key]


def test_conditional_put_never_overwrites(s3_server):
    """If-None-Match: * succeeds once and then fails with 412 (what version claims rely on)."""
    client = s3_server.client()
    key = f"claims/{uuid.uuid4().hex}.json"
    client.put_object(Bucket="models", Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket="models", Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert client.get_object(Bucket="models", Key=key)["Body"].read() == b"first"


def test_busy_port_is_a_clear_error(s3_server, tmp_path):
    with pytest.raises(ServiceError, match=f"port {s3_server.port} .* already in use"):
        SeaweedS3(tmp_path / "other", port=s3_server.port).start(timeout=10)


def test_cli_start_stop_keeps_credentials_and_data(tmp_path):
    """start, write, stop, start: same credentials (private; `env` prints them), the object kept, nothing left."""
    state, port = tmp_path / "s3", free_port()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "serve.s3", *args, "--state-dir", str(state), "--port", str(port)],
                              capture_output=True, text=True, timeout=120)

    try:
        assert cli("start").returncode == 0
        server = SeaweedS3(state, port)
        first_env, pid = server.env(), server.pid()
        for private in (server.credentials_file, server.reader_credentials_file, state / "s3-identities.json"):
            assert private.stat().st_mode & 0o777 == 0o600
        assert dict(line.split("=", 1) for line in server.credentials_file.read_text().splitlines()) == first_env
        assert first_env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        assert f"export AWS_SECRET_ACCESS_KEY={first_env['AWS_SECRET_ACCESS_KEY']}" in cli("env").stdout.splitlines()
        server.client().put_object(Bucket="models", Key="kept.txt", Body=b"still here")
        assert cli("status").returncode == 0
        assert cli("start").stdout.startswith("S3 already running")
        assert cli("stop").returncode == 0
        assert not server.is_running() and cli("status").returncode == 1
        assert cli("start").returncode == 0
        assert server.env() == first_env and server.pid() != pid
        assert server.client().get_object(Bucket="models", Key="kept.txt")["Body"].read() == b"still here"
    finally:
        cli("stop")
    assert not SeaweedS3(state, port).is_running()


# -- Triton on the S3 repository -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["no S3 credentials", "nothing published", "a corrupt model"])
def test_triton_that_cannot_serve_the_repository_says_why(publisher_env, triton_factory, monkeypatch, case):
    """No credentials: refused before start (under 10 s); an empty prefix or a corrupt model: named."""
    uri, env, words = f"s3://models/{uuid.uuid4().hex[:8]}", publisher_env.env(), ["has been published"]
    if case == "no S3 credentials":
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(key)
        env, words = {"AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]}, ["AWS_ACCESS_KEY_ID"]
    elif case == "a corrupt model":  # published with the real publisher
        ModelRepository(uri).publish({"checkpoint.tl": b"this is not a treelite checkpoint"}, {"pathspec": "test/1"},
                                     {"threshold": 0.5})
        words = ["checkpoint.tl", "treelite_checkpoint"]
    started = time.monotonic()
    with pytest.raises(TritonError) as info:
        triton_factory(uri, env=env, timeout=60)
    assert all(word in str(info.value) for word in words), info.value
    assert case != "no S3 credentials" or time.monotonic() - started < 10


@pytest.mark.parametrize("repo, endpoint, want", [
    ("s3://models/triton", "http://127.0.0.1:8333", "s3://http://127.0.0.1:8333/models/triton"),
    ("s3://models/triton/", "https://s3.example.com", "s3://https://s3.example.com:443/models/triton"),
    ("s3://models/triton", "http://minio.internal/", "s3://http://minio.internal:80/models/triton"),
    ("s3://models", "http://127.0.0.1:9000", "s3://http://127.0.0.1:9000/models"),
    ("s3://models/triton", None, "s3://models/triton"),
    ("s3://http://127.0.0.1:1/models/x", "http://ignored:2", "s3://http://127.0.0.1:1/models/x"),
    (".", None, str(Path.cwd())),
])
def test_repository_uri_in_tritons_form(repo, endpoint, want):
    """s3://bucket/prefix + AWS_ENDPOINT_URL -> Triton's s3://http://host:port/bucket/prefix; a folder: its path."""
    assert triton_repository_uri(repo, endpoint) == want


@pytest.mark.parametrize("repo, endpoint, error", [
    # Triton takes what follows s3://scheme:// up to the first / as host:port: a path or a
    # missing scheme would silently turn into a bucket name
    *(("s3://models/triton", endpoint, "is not an http") for endpoint in
      ("minio.example.com:9000", "https://minio.example.com/s3", "ftp://host:21")),
    ("/nonexistent/model-repository", None, "does not exist"),
])
def test_a_repository_triton_cannot_read_is_a_clear_error(repo, endpoint, error):
    with pytest.raises(TritonError, match=error):
        triton_repository_uri(repo, endpoint)
