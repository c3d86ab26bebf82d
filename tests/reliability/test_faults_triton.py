"""tritonserver SIGKILLed under HTTP and gRPC client loops, and restarted in the middle of a
publish: clients get clear errors during the outage and recover without relapse, the server
comes back serving what config.pbtxt names, and the killed server's backend stubs do not
outlive it (R6). The version ledger is checked at the end (versions lost)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from fraudml.rollout import roll_out
from tests.reliability.rig import FaultyStore, RequestLoop, wait_until
from tests.reliability.rig import test_no_version_lost as test_no_version_lost  # versions lost


def alive(procs: list[psutil.Process]) -> list[int]:
    return [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("round_", [pytest.param(1, marks=pytest.mark.quick), 2])
def test_triton_killed_under_load_comes_back_serving_the_config(rig, round_, record_property):
    with contextlib.ExitStack() as running:
        loops = [running.enter_context(RequestLoop(url, rig.model.x[:1], protocol=protocol, timeout=2))
                 for protocol, url in (("http", rig.triton.http_url), ("grpc", rig.triton.grpc_url))]
        pid = rig.triton.pid()
        stubs = psutil.Process(pid).children(recursive=True)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for lp in loops:
            lp.wait_for(lambda lp_: any(t > killed_at for t, _ in lp_.failures), "seeing the outage", 30)
        rig.triton.start(timeout=180)  # the supervisor restarts it; this waits until it is ready
        back_at = time.monotonic()
        for lp in loops:
            lp.wait_for(lambda lp_: any(t > back_at for t, _ in lp_.answers), "recovering")
            lp.wait_answers()
    served = rig.repo().served_version()
    rig.check_serving(version=served)
    rig.check_serving("grpc", version=served)
    messages = [m for lp in loops for t, m in lp.failures if t >= killed_at]
    unclear = [m for m in messages if not re.search(r"Triton at .* failed: .+", m)]
    assert not unclear, f"unclear client errors: {unclear[:2]}"
    recovery = {}
    for lp in loops:
        first_ok = min(t for t, _ in lp.answers if t > back_at)
        recovery[lp.protocol] = round(first_ok - back_at, 2)
        relapses = [m for t, m in lp.failures if t > first_ok]
        assert not relapses, f"{lp.protocol}: {len(relapses)} requests failed after recovering, e.g. {relapses[:1]}"
    after = {v for lp in loops for t, v in lp.answers if t > back_at}
    assert after <= {served}, f"after the restart clients saw versions {sorted(after)}, config.pbtxt names v{served}"
    assert wait_until(lambda: not alive(stubs), 30), f"backend processes of the killed server still run: {alive(stubs)}"
    record_property("outage", f"{back_at - killed_at:.1f} s, {len(messages)} clear client errors; clients "
                              f"answered again {recovery} s after Triton was ready")


def test_triton_restarted_in_the_middle_of_a_publish_comes_up_on_the_previous_version(rig):
    """Triton (re)starts while a publish has uploaded its files but not swapped the config:
    it comes up on the previous version, then loads the new one when asked."""
    repo = rig.repo()
    previous = repo.served_version()
    reached, release = threading.Event(), threading.Event()
    repo.store = FaultyStore(repo.store, "before-config-swap", lambda: (reached.set(), release.wait(120)))
    with ThreadPoolExecutor(1) as pool:
        publish = pool.submit(rig.publish, "published across a Triton restart", repo)
        try:
            assert reached.wait(60), "the publish never reached the config swap"
            rig.triton.stop()
            rig.triton.start(timeout=180)
            assert rig.check_serving() == previous, "Triton restarted mid-publish does not serve what config.pbtxt names"
        finally:
            release.set()
        version = publish.result(60)  # the paused publish succeeded (raises its error otherwise)
    roll_out(rig.repo(), [rig.triton.http_url], previous)
    rig.check_serving(version=version)
