"""S3 stopped (SIGTERM, SIGKILL) at several points of a publish while a client loop queries
Triton: a clear PublishError naming the version and saying nothing was served, nothing
half-written visible to Triton (not even after a reload), the retry gets a new number, and no
client request fails. The version ledger is checked at the end (versions lost)."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from fraudml.repository import PublishError
from fraudml.rollout import roll_out
from fraudml.triton_control import is_ready, load_model
from fraudml.tritonconfig import MODEL_NAME
from tests.reliability.rig import FaultyStore, RequestLoop, served_by_triton, wait_until
from tests.reliability.rig import test_no_version_lost as test_no_version_lost  # versions lost

POINTS = {  # where in a publish the S3 server goes away (DESIGN §3: claim, upload, read back, swap)
    "after-first-file-put": "stopped right after the first file of the new version was uploaded",
    "during-read-back": "stopped after every file was uploaded, before they were read back",
    "before-config-swap": "stopped after upload and read-back, before config.pbtxt was swapped",
    "sigkill-after-first-file-put": "killed (SIGKILL) right after the first file was uploaded",
}


@pytest.mark.parametrize("point", [pytest.param(p, marks=pytest.mark.quick) if p == "after-first-file-put" else p
                                   for p in POINTS])
def test_s3_gone_in_the_middle_of_a_publish(rig, point, record_property):
    def stop_s3() -> None:
        if point.startswith("sigkill"):
            os.kill(rig.s3.pid(), signal.SIGKILL)
            wait_until(lambda: rig.s3.pid() is None, 10)
        else:
            rig.s3.stop(timeout=10)

    repo = rig.repo()
    previous = repo.served_version()
    repo.store = store = FaultyStore(repo.store, point, stop_s3)
    with RequestLoop(rig.triton.http_url, rig.model.x[:1]) as loop:
        with pytest.raises(PublishError) as info:
            rig.publish(f"S3 fault {point}", repo)
        message = str(info.value)
        assert store.fired_at is not None, "the fault never fired: the publish took another path"
        record_property("publish failed", f"{time.monotonic() - store.fired_at:.1f} s after the fault: {message[:160]}")
        named = re.search(rf"{MODEL_NAME}/(\d+)", message)
        assert named, f"the error does not name the version: {message}"
        failed = int(named.group(1))
        rig.failed.append(failed)  # a retired number: no later publish may report it
        assert re.search(r"unreachable|S3|endpoint", message, re.I), f"the error does not say S3 failed: {message}"
        assert "nothing was served" in message.lower(), message
        assert is_ready(rig.triton.http_url, MODEL_NAME), "Triton stopped being ready while S3 was down"

        rig.s3.start(timeout=60)  # on the same state folder
        repo = rig.repo()
        assert repo.served_version() == previous, "config.pbtxt moved although the publish failed"
        half = {v.version: v for v in repo.list_versions()}.get(failed)
        assert half is None or half.status != "complete", f"the failed v{failed} is marked complete"
        assert served_by_triton(rig.triton) == {previous}
        load_model(rig.triton.http_url, MODEL_NAME)  # a reload (operator, restart) sees only what the config names
        rig.check_serving(version=previous)

        retry = rig.publish(f"retry after S3 fault {point}", repo)
        assert retry > failed, f"the retry got v{retry}, not a number after the failed v{failed}"
        roll_out(repo, [rig.triton.http_url], previous)
        loop.wait_for(lambda lp: bool(lp.versions) and lp.versions[-1] == retry, f"Triton serving v{retry}")
        rig.check_serving(version=retry)
    assert not loop.failures, f"{len(loop.failures)} client requests failed, e.g. {loop.failures[0][1]}"
    assert set(loop.versions) <= {previous, retry}, f"clients saw versions {sorted(set(loop.versions))}"
