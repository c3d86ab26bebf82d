"""Model repository contract on a local folder: versions, pointer, claims, failures, rollback."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from fraudml.repository import ModelRepository, PublishError, publish_model_version
from fraudml.storage import StorageError, open_store
from fraudml.tritonconfig import served_versions
from serve.ports import free_port

CONFIG_KWARGS = {"model_type": "treelite_checkpoint", "threshold": 0.7, "n_features": 30}


def _lineage(run: str = "FraudClassifierTreeSelection/1") -> dict:
    return {"pathspec": run, "dataset": {"fingerprint": "sha256:abc"}, "metrics": {"average_precision": 0.8}}


def _publish(uri, payload=b"model-bytes", run="FraudClassifierTreeSelection/1") -> int:
    return publish_model_version(str(uri), {"checkpoint.tl": payload}, _lineage(run), CONFIG_KWARGS)


def test_first_publish_writes_version_1_and_points_config_at_it(tmp_path):
    assert _publish(tmp_path) == 1
    model_dir = tmp_path / "fraud-classifier"
    assert (model_dir / "1" / "checkpoint.tl").read_bytes() == b"model-bytes"
    lineage = json.loads((model_dir / "1" / "lineage.json").read_text())
    assert lineage["version"] == 1 and lineage["model_name"] == "fraud-classifier"
    assert lineage["pathspec"] == "FraudClassifierTreeSelection/1"
    assert lineage["files"]["checkpoint.tl"].startswith("sha256:")
    assert lineage["triton_config"] == CONFIG_KWARGS
    assert served_versions((model_dir / "config.pbtxt").read_text()) == [1]


def test_concurrent_publishes_get_distinct_complete_versions(tmp_path):
    with ThreadPoolExecutor(8) as pool:  # map re-raises any publish's exception
        results = list(pool.map(lambda i: _publish(tmp_path, f"m{i}".encode(), run=f"F/{i}"), range(8)))
    assert sorted(results) == list(range(1, 9))
    repo = ModelRepository(str(tmp_path))
    assert repo.served_version() == 8  # the pointer only moves forward while publishing
    for info in repo.list_versions():
        assert info.status == "complete"
        lineage = repo.read_lineage(info.version)
        assert repo.read_file(info.version, "checkpoint.tl") == f"m{lineage['pathspec'].split('/')[1]}".encode()


def test_failed_publish_leaves_pointer_and_never_reuses_the_number(tmp_path, monkeypatch):
    assert _publish(tmp_path) == 1
    repo = ModelRepository(str(tmp_path))

    def put(key, data, _put=repo.store.put):  # an S3 outage mid-publish
        if key.endswith("lineage.json"):
            raise StorageError("connection reset")
        _put(key, data)

    monkeypatch.setattr(repo.store, "put", put)
    with pytest.raises(PublishError, match="Nothing was served"):
        repo.publish({"checkpoint.tl": b"new"}, _lineage(), CONFIG_KWARGS)
    repo = ModelRepository(str(tmp_path))
    assert repo.served_version() == 1
    statuses = {v.version: v.status for v in repo.list_versions()}
    assert statuses == {1: "complete", 2: "failed"}
    assert not (tmp_path / "fraud-classifier" / "2" / "checkpoint.tl").exists()
    with pytest.raises(PublishError, match="failed, not complete"):
        repo.set_served_version(2)
    assert _publish(tmp_path) == 3


def test_lineage_json_cannot_be_smuggled_in_as_a_file(tmp_path):
    with pytest.raises(PublishError, match="lineage.json"):
        publish_model_version(str(tmp_path), {"lineage.json": b"{}"}, _lineage(), CONFIG_KWARGS)
    assert ModelRepository(str(tmp_path)).list_versions() == []


def test_lookups_of_missing_versions_are_clear_errors(tmp_path):
    with pytest.raises(LookupError, match="no version"):
        ModelRepository(str(tmp_path)).read_lineage()
    _publish(tmp_path)
    with pytest.raises(LookupError, match="fraud-classifier/7 does not exist"):
        ModelRepository(str(tmp_path)).set_served_version(7)


def test_unreachable_s3_and_unsupported_uris_are_clear_errors(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StorageError, match="unreachable"):
        open_store("s3://models/triton").check()
    with pytest.raises(StorageError, match="unsupported"):
        open_store("gs://bucket/x")


def _served_side(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "fraud-classifier").iterdir() if not p.name.endswith(".lock"))


def test_only_the_newest_versions_stay_where_triton_downloads(tmp_path):
    """Each publish moves all but the newest keep_versions complete and the served one to _archive/."""
    repo = ModelRepository(str(tmp_path), keep_versions=3)
    served_side = [["1"], ["1", "2"], ["1", "2", "3"], ["2", "3", "4"], ["3", "4", "5"]]
    for i, expected in enumerate(served_side):
        repo.publish({"checkpoint.tl": bytes([i])}, _lineage(), CONFIG_KWARGS)
        assert _served_side(tmp_path) == [*expected, "config.pbtxt"]
    repo.keep_versions = 2
    repo.archive_old_versions()
    assert _served_side(tmp_path) == ["4", "5", "config.pbtxt"]
    assert sorted(p.name for p in (tmp_path / "_archive" / "fraud-classifier").iterdir()) == ["1", "2", "3"]
    assert sorted(p.name for p in (tmp_path / "_publish" / "fraud-classifier").iterdir()) == \
        ["1.json", "2.json", "3.json", "4.json", "5.json"]
    assert [(v.version, v.status, v.archived) for v in repo.list_versions()] == \
        [(v, "complete", v <= 3) for v in range(1, 6)]
    assert repo.read_file(1, "checkpoint.tl") == bytes([0]) and repo.read_lineage(1)["version"] == 1


def test_rollback_to_an_archived_version_restores_it_and_numbers_stay_retired(tmp_path):
    repo = ModelRepository(str(tmp_path), keep_versions=1)
    for i in range(3):
        repo.publish({"checkpoint.tl": bytes([i])}, _lineage(), CONFIG_KWARGS)
    # keep 1: the new version, and the one served while it was published (until the next publish)
    assert _served_side(tmp_path) == ["2", "3", "config.pbtxt"]
    assert repo.set_served_version(1) == 3
    assert repo.served_version() == 1
    assert (tmp_path / "fraud-classifier" / "1" / "checkpoint.tl").read_bytes() == bytes([0])
    assert repo.archive_old_versions() == [2]  # the served version stays, whatever its age
    assert repo.publish({"checkpoint.tl": b"x"}, _lineage(), CONFIG_KWARGS) == 4  # 1-3 stay retired
    assert _served_side(tmp_path) == ["1", "4", "config.pbtxt"]


def test_a_tampered_archive_is_not_restored(tmp_path):
    repo = ModelRepository(str(tmp_path), keep_versions=1)
    for data in (b"good", b"next", b"last"):
        repo.publish({"checkpoint.tl": data}, _lineage(), CONFIG_KWARGS)
    (tmp_path / "_archive" / "fraud-classifier" / "1" / "checkpoint.tl").write_bytes(b"evil")
    with pytest.raises(PublishError, match="does not match the hash"):
        repo.set_served_version(1)
    assert repo.served_version() == 3


def test_keep_versions_from_the_argument_else_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_KEEP_VERSIONS", "3")
    assert ModelRepository(str(tmp_path)).keep_versions == 3
    with pytest.raises(ValueError, match=r"^keep_versions=0 must"):  # 0 is refused, not taken for "unset"
        ModelRepository(str(tmp_path), keep_versions=0)
    monkeypatch.setenv("MODEL_KEEP_VERSIONS", "0")
    with pytest.raises(ValueError, match="^MODEL_KEEP_VERSIONS='0' must"):
        ModelRepository(str(tmp_path))
