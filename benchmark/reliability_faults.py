"""Faults: S3 stopped in the middle of a publish, a corrupt or wrong model published, Triton
killed and restarted under a client loop, two concurrent deploys.

Every fault runs while a client loop queries Triton, and ends with the ledger check: every
version whose publish reported success is still complete in S3 with the bytes it was
published with, and no version number was used twice.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.reliability_common import (
    CONFIG_KWARGS,
    MODEL_NAME,
    CaseFailed,
    Category,
    RequestLoop,
    Rig,
    expect,
    http,
    not_ready_reason,
    publish_reference,
    short,
    train_reference,
    wait_until,
)

VERSION_FILE = re.compile(rf"^{re.escape(MODEL_NAME)}/\d+/")

# Where in a publish the S3 server is stopped (DESIGN §3 order: claim, upload, read back, swap).
S3_FAULT_POINTS = {
    "after-first-file-put": "stopped right after the first file of the new version was uploaded",
    "during-read-back": "stopped after every file was uploaded, before they were read back",
    "before-config-swap": "stopped after upload and read-back, before config.pbtxt was swapped",
    "sigkill-after-first-file-put": "killed (SIGKILL) right after the first file was uploaded",
}


class FaultyStore:
    """Wraps a model-repository store and runs ``fault()`` once, at ``point`` of a publish."""

    def __init__(self, inner, point: str, fault: Callable[[], None]):
        self.inner, self.point, self.fault = inner, point, fault
        self.fired_at: float | None = None
        self.uploaded: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _fire(self) -> None:
        if self.fired_at is None:
            self.fired_at = time.monotonic()
            self.fault()

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        if VERSION_FILE.match(key):
            self.uploaded.append(key)
            if self.point.endswith("after-first-file-put"):
                self._fire()

    def get(self, key: str):
        if self.point == "during-read-back" and VERSION_FILE.match(key) and self.uploaded:
            self._fire()
        return self.inner.get(key)

    def replace(self, key: str, data: bytes, tag: str | None) -> None:
        if self.point in ("before-config-swap", "pause-before-config-swap") and key.endswith("/config.pbtxt"):
            self._fire()
        return self.inner.replace(key, data, tag)


def _kill_s3(rig: Rig) -> None:
    pid = rig.s3.pid()
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: rig.s3.pid() is None, 10)


def _served_by_triton(rig: Rig) -> set[int]:
    """Versions Triton's repository index reports READY for the model."""
    return {int(m["version"]) for m in rig.triton.repository_index()
            if m.get("name") == MODEL_NAME and m.get("state") == "READY" and m.get("version")}


def s3_stopped_mid_publish(rig: Rig, cat: Category, points: list[str], publish_limit_s: float | None = 60.0) -> None:
    """(a) For each point: stop S3 there, check the publish fails clearly, restart S3 on the
    same state folder, check nothing half-written is visible, retry with a new number."""
    from fraudml.repository import PublishError
    from fraudml.rollout import roll_out

    for point in points:
        with cat.case(f"S3 {S3_FAULT_POINTS[point]}") as note:
            repo = rig.repo()
            previous = repo.served_version()
            expect(previous is not None, "nothing is published yet")
            loop = RequestLoop(rig.triton.http_url, rig.model.x[:1], max_seconds=240)
            loop.start()
            facts: list[str] = []
            try:
                loop.wait_requests(10)
                fault = (lambda: _kill_s3(rig)) if point.startswith("sigkill") else (lambda: rig.s3.stop(timeout=10))
                store = FaultyStore(repo.store, point, fault)
                repo.store = store
                try:
                    rig.ledger.publish(repo, {"checkpoint.tl": rig.model.checkpoint},
                                       rig.model.lineage(f"S3 fault {point}"), dict(CONFIG_KWARGS))
                    raise CaseFailed("the publish reported success although S3 was stopped in the middle")
                except PublishError as exc:
                    message = str(exc)
                expect(store.fired_at is not None, "the fault never fired: the publish took another path")
                failed = rig.ledger.record_failed(message)
                after_fault = time.monotonic() - store.fired_at
                facts.append(f"publish of v{failed} failed {after_fault:.1f} s after the fault: {short(message, 200)}")
                expect(failed is not None, f"the error does not name the version number: {message}")
                expect(re.search(r"unreachable|S3|endpoint", message, re.I), f"the error does not say S3 failed: {message}")
                expect("Nothing was served" in message or "nothing was served" in message.lower(),
                       f"the error does not say that nothing was served: {message}")
                if publish_limit_s is not None:
                    expect(after_fault <= publish_limit_s,
                           f"the publish took {after_fault:.0f} s after the fault to fail (limit {publish_limit_s:.0f} s)")
                reason = not_ready_reason(rig.triton.http_url)
                expect(reason is None, f"Triton stopped being ready while S3 was down: {reason}")

                restart = time.monotonic()
                rig.s3.start(timeout=60)
                facts.append(f"S3 back in {time.monotonic() - restart:.1f} s")
                repo = rig.repo()
                served = repo.served_version()
                expect(served == previous, f"config.pbtxt names v{served} after the failed publish; expected v{previous}")
                infos = {v.version: v for v in repo.list_versions()}
                half = infos.get(failed)
                expect(half is None or half.status != "complete",
                       f"the failed v{failed} is marked complete")
                if half is not None:
                    facts.append(f"v{failed} left as status={half.status!r} with files {half.files or 'none'}")
                expect(_served_by_triton(rig) == {previous},
                       f"Triton's index shows READY {sorted(_served_by_triton(rig))}; expected [{previous}]")
                # even a reload now (an operator, another rollout, a restart) sees only what the config names
                rig.triton.load_model(MODEL_NAME)
                rig.check_serving(version=previous)

                retry = publish_reference(repo, rig.ledger, rig.model, f"retry after S3 fault {point}")
                expect(retry > failed, f"the retry got v{retry}, not a number after the failed v{failed}")
                expect(retry not in infos, f"the retry reused v{retry}, which existed before")
                roll_out(repo, [rig.triton.http_url], previous)
                loop.wait_for(lambda lp, r=retry: bool(lp.versions) and lp.versions[-1] == r, 60, f"Triton serving v{retry}")
                rig.check_serving(version=retry)
                facts.append(f"retry published and serves v{retry}")
            finally:
                loop.stop()
                if rig.s3.pid() is None:  # never leave the rig without its S3
                    rig.s3.start(timeout=60)
            expect(not loop.failures, f"{len(loop.failures)} client requests failed during the fault, e.g. {loop.failures[0][1]}"
                   if loop.failures else "")
            expect(set(loop.versions) <= {previous, retry},
                   f"clients saw versions {sorted(set(loop.versions))}; only v{previous} then v{retry} are allowed")
            facts.append(f"client loop: {len(loop.versions)} answers, 0 failed, versions {loop.distinct_versions()}")
            note.detail = "; ".join(facts)


# -- (b) corrupt or wrong model files ----------------------------------------------------------------

def bad_model_files(rig: Rig) -> dict[str, bytes]:
    """name -> bytes published as checkpoint.tl; none of them is a usable 30-feature checkpoint."""
    good = rig.model.checkpoint
    rng = np.random.default_rng(11)
    out: dict[str, bytes] = {
        "random bytes": rng.bytes(4096),
        "empty file": b"",
        "truncated checkpoint (first half)": good[: len(good) // 2],
    }
    lightgbm_text, xgboost_json, narrow = _other_models(rig)
    out["LightGBM model text under checkpoint.tl"] = lightgbm_text
    out["XGBoost JSON under checkpoint.tl"] = xgboost_json
    out["valid checkpoint with 29 features"] = narrow
    return out


def _other_models(rig: Rig) -> tuple[bytes, bytes, bytes]:
    import tempfile
    from pathlib import Path

    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    x = rig.model.x
    y = (rig.model.predict_proba(x)[:, 1] > np.median(rig.model.predict_proba(x)[:, 1])).astype(int)
    with tempfile.TemporaryDirectory(prefix="reliability-models-") as tmp:
        lgb = LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(x, y)
        lgb.booster_.save_model(str(Path(tmp) / "model.txt"))
        xgb = XGBClassifier(n_estimators=5, max_depth=2).fit(x, y)
        xgb.get_booster().save_model(str(Path(tmp) / "xgboost.json"))
        lightgbm_text = (Path(tmp) / "model.txt").read_bytes()
        xgboost_json = (Path(tmp) / "xgboost.json").read_bytes()
    narrow = train_reference(seed=rig.model.seed + 5, rows=1500, n_trees=5, max_depth=3, n_features=29).checkpoint
    return lightgbm_text, xgboost_json, narrow


def corrupt_versions(rig: Rig, cat: Category, kinds: list[str] | None = None, *, probe: bool = True) -> None:
    """(b) Publish each bad file as a new version and roll it out: Triton must refuse it and
    keep serving the previous version; the pointer goes back; the version is marked rejected."""
    from fraudml.rollout import RolloutError, roll_out

    files = bad_model_files(rig)
    for kind in kinds or list(files):
        with cat.case(f"{kind} published and rolled out") as note:
            repo = rig.repo()
            previous = repo.served_version()
            loop = RequestLoop(rig.triton.http_url, rig.model.x[:1], max_seconds=240)
            loop.start()
            try:
                loop.wait_requests(10)
                bad = rig.ledger.publish(repo, {"checkpoint.tl": files[kind]}, rig.model.lineage(f"bad file: {kind}"),
                                         dict(CONFIG_KWARGS))
                try:
                    roll_out(repo, [rig.triton.http_url], previous)
                except RolloutError as exc:
                    message = str(exc)
                else:
                    _undo_accepted(rig, repo, bad, previous, kind)
                expect("refused to load" in message, f"the rollout error does not say Triton refused: {message}")
                expect(repo.served_version() == previous,
                       f"config.pbtxt names v{repo.served_version()} after the refusal; expected v{previous}")
                status = {v.version: v.status for v in repo.list_versions()}.get(bad)
                expect(status == "rejected", f"v{bad} has status {status!r}, expected 'rejected'")
                time.sleep(0.3)
                loop.wait_requests(10)
                rig.check_serving(version=previous)
                expect(_served_by_triton(rig) == {previous}, f"Triton's index shows READY {sorted(_served_by_triton(rig))}")
            finally:
                loop.stop()
            expect(not loop.failures, f"{len(loop.failures)} client requests failed, e.g. {loop.failures[:1]}")
            expect(set(loop.versions) == {previous}, f"clients saw versions {sorted(set(loop.versions))}, expected only v{previous}")
            note.detail = (f"v{bad} refused ({short(message.split(': ', 1)[-1], 140)}); v{previous} kept serving "
                           f"{len(loop.versions)} answers, 0 failed")
    if probe:
        probe_after_refusal(rig, cat)


def _undo_accepted(rig: Rig, repo, bad: int, previous: int, kind: str) -> None:
    """Triton took a broken version: say what it does now, then put the previous one back."""
    from serve.client import ClientError, infer

    try:
        answer = infer(rig.model.x[:2], url=rig.triton.http_url, model_name=MODEL_NAME)
        now = f"it answers as v{answer.model_version}"
    except ClientError as exc:
        now = f"every request now fails: {short(exc, 200)}"
    repo.mark_rejected(bad, f"accepted by Triton although broken ({kind}); reverted by the reliability suite")
    time.sleep(1.1)  # the revert must land in a later second than the write Triton loaded
    repo.set_served_version(previous)
    rig.triton.load_model(MODEL_NAME)
    raise CaseFailed(f"Triton accepted v{bad} ({kind}) and the rollout reported success; {now}. "
                     f"Pointer reverted to v{previous} by the suite")


def k8s_readiness_path(root: Path | None = None) -> str | None:
    """The path of the Triton container's readinessProbe in k8s/base (None if there is none)."""
    import yaml

    root = root or Path(__file__).resolve().parents[1]
    manifest = root / "k8s" / "base" / "triton-deployment.yaml"
    if not manifest.is_file():
        return None
    for doc in yaml.safe_load_all(manifest.read_text()):
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"].get("containers", []):
            probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
            if probe.get("path"):
                return probe["path"]
    return None


def probe_after_refusal(rig: Rig, cat: Category) -> None:
    """After Triton refused a version it keeps serving the previous one; the readiness
    endpoint the Kubernetes manifests probe must say so too, or every pod that refused a bad
    version is taken out of its Service (an outage caused by a refused model)."""
    with cat.case("after a refused load, the k8s readinessProbe endpoint still says ready") as note:
        path = k8s_readiness_path()
        if path is None:
            note.skipped = "k8s/base/triton-deployment.yaml has no readinessProbe to check"
            return
        path = path.replace("$(MODEL_NAME)", MODEL_NAME)
        status, body, _ = http("GET", rig.triton.http_url + path, timeout=5)
        model_status = http("GET", f"{rig.triton.http_url}/v2/models/{MODEL_NAME}/ready", timeout=5)[0]
        note.detail = f"GET {path} -> {status}; GET /v2/models/{MODEL_NAME}/ready -> {model_status}"
        expect(status == 200,
               f"the readinessProbe path {path} answers {status} although v{rig.served_version()} keeps serving "
               f"(model ready: {model_status}); Kubernetes would take the pod out of service. Probe "
               f"/v2/models/{MODEL_NAME}/ready instead (Triton 2.51 strict readiness stays false after any failed load)")


# -- (c) Triton killed and restarted ------------------------------------------------------------------

def _triton_family(pid: int) -> list[int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


def watch_orphans(pids: list[int], since: float, cat: Category, limit_s: float = 300) -> None:
    """Record in ``cat.facts`` how long the Python backend stubs outlive a SIGKILLed server
    (they notice the dead parent by themselves, after about a minute)."""
    record: dict[str, Any] = {"orphaned_stubs": len(pids), "all_exited_after_s": None}
    cat.facts.setdefault("stubs_orphaned_by_sigkill", []).append(record)

    def watch() -> None:
        deadline = since + limit_s
        while time.monotonic() < deadline:
            if not _alive(pids):
                record["all_exited_after_s"] = round(time.monotonic() - since, 1)
                return
            time.sleep(1)
        record["still_alive_after_s"] = limit_s

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def triton_killed(rig: Rig, cat: Category, rounds: int = 1) -> None:
    """(c) SIGKILL tritonserver while HTTP and gRPC client loops run; the clients get clear
    errors, then recover once Triton is back; it serves what config.pbtxt names."""

    for i in range(rounds):
        with cat.case(f"tritonserver SIGKILLed under load and restarted (round {i + 1})") as note:
            loops = [RequestLoop(rig.triton.http_url, rig.model.x[:1], max_seconds=300, timeout=2),
                     RequestLoop(rig.triton.grpc_url, rig.model.x[:1], protocol="grpc", max_seconds=300, timeout=2)]
            for lp in loops:
                lp.start()
            try:
                for lp in loops:
                    lp.wait_requests(10)
                pid = rig.triton.pid()
                expect(pid is not None, "Triton is not running")
                family = _triton_family(pid)
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                for lp in loops:
                    lp.wait_for(lambda lp_, k=killed_at: any(t > k for t, _ in lp_.failures), 30, f"{lp.protocol} client seeing the outage")
                stubs = family[1:]
                watch_orphans(stubs, killed_at, cat)
                rig.start_triton()
                back_at = time.monotonic()
                for lp in loops:
                    lp.wait_for(lambda lp_, b=back_at: any(t > b for t, _ in lp_.answers), 60, f"{lp.protocol} client recovering")
                    lp.wait_requests(10)
            finally:
                for lp in loops:
                    lp.stop()
            served = rig.served_version()
            rig.check_serving(version=served)
            rig.check_serving("grpc", version=served)
            messages = [m for lp in loops for t, m in lp.failures if t >= killed_at]
            unclear = [m for m in messages if not re.search(r"Triton at .* failed: .+", m)]
            expect(not unclear, f"unclear client errors: {unclear[:2]}")
            recovery: dict[str, float] = {}
            for lp in loops:
                first_ok = min(t for t, _ in lp.answers if t > back_at)
                recovery[lp.protocol] = round(first_ok - back_at, 2)
                relapses = [m for t, m in lp.failures if t > first_ok]
                expect(not relapses, f"{lp.protocol}: {len(relapses)} requests failed after the client had recovered, "
                                     f"e.g. {relapses[:1]}")
            after = [v for lp in loops for t, v in lp.answers if t > back_at]
            expect(set(after) <= {served}, f"after the restart clients saw versions {sorted(set(after))}, config names v{served}")
            cat.facts.setdefault("client_recovery_s_after_triton_ready", []).append(recovery)
            note.detail = (f"outage {back_at - killed_at:.1f} s; {len(messages)} clear client errors "
                           f"(e.g. {short(messages[0], 120) if messages else '-'}); clients recovered "
                           f"{', '.join(f'{k} {v} s' for k, v in recovery.items())} after Triton was ready, on v{served}; "
                           f"{len(stubs)} backend stub process(es) orphaned by the kill (their exit is watched)")


def triton_restart_during_publish(rig: Rig, cat: Category) -> None:
    """Triton (re)starts while a publish has uploaded its files but not yet swapped the
    config: it must come up on the previous version, then load the new one when asked."""
    from fraudml.rollout import roll_out

    with cat.case("Triton restarted while a publish is between upload and config swap") as note:
        repo = rig.repo()
        previous = repo.served_version()
        reached, release = threading.Event(), threading.Event()

        def pause() -> None:
            reached.set()
            release.wait(120)

        repo.store = FaultyStore(repo.store, "pause-before-config-swap", pause)
        result: dict[str, Any] = {}

        def publish() -> None:
            try:
                result["version"] = publish_reference(repo, rig.ledger, rig.model, "published across a Triton restart")
            except Exception as exc:  # noqa: BLE001 - reported below
                result["error"] = exc

        worker = threading.Thread(target=publish, daemon=True)
        worker.start()
        try:
            expect(reached.wait(60), "the publish never reached the config swap")
            rig.triton.stop()
            rig.start_triton()
            first = rig.check_serving()
            expect(first == previous, f"Triton restarted mid-publish serves v{first}; config still names v{previous}")
        finally:
            release.set()
            worker.join(60)
        expect("error" not in result, f"the paused publish failed: {result.get('error')}")
        new = result["version"]
        roll_out(rig.repo(), [rig.triton.http_url], previous)
        rig.check_serving(version=new)
        note.detail = f"restarted Triton came up on v{previous} while v{new} was uploaded; then loaded v{new}"


# -- (d) concurrent deploys --------------------------------------------------------------------------

def _deploy_in_process(args: tuple[str, dict[str, str], str, bytes, dict, list[str]]) -> tuple[int, str]:
    repo_uri, env, note, checkpoint, lineage, triton_urls = args
    os.environ.update(env)
    from fraudml.repository import ModelRepository
    from fraudml.rollout import roll_out

    repo = ModelRepository(repo_uri, MODEL_NAME)
    previous = repo.served_version()
    version = repo.publish({"checkpoint.tl": checkpoint}, {**lineage, "note": note}, dict(CONFIG_KWARGS))
    roll_out(repo, triton_urls, previous)
    return version, note


def concurrent_deploys(rig: Rig, cat: Category, rounds: int = 2) -> None:
    """(d) Two deploys (publish + rollout) at once from two processes, each with its own model:
    two distinct complete versions; then, separately, Triton serving the one config.pbtxt names."""
    from benchmark.reliability_common import sha256
    from fraudml.triton_control import ready_version as serving_version

    other = train_reference(seed=rig.model.seed + 100)
    models = {"A": rig.model, "B": other}
    ctx = multiprocessing.get_context("spawn")
    for r in range(rounds):
        results: list[tuple[int, str]] = []
        with cat.case(f"two concurrent deploys (round {r + 1}): two distinct complete versions") as note:
            jobs = [(rig.repo_uri, rig.env, f"{tag}{r}", m.checkpoint, m.lineage(f"concurrent deploy {tag}{r}"),
                     [rig.triton.http_url]) for tag, m in models.items()]
            with ctx.Pool(2) as pool:
                results = pool.map(_deploy_in_process, jobs)
            for (version, _tag), job in zip(results, jobs, strict=True):
                rig.ledger.record(version, {"checkpoint.tl": job[3]})
            versions = sorted(v for v, _ in results)
            expect(len(set(versions)) == 2, f"both deploys got v{versions[0]}")
            repo = rig.repo()
            infos = {v.version: v for v in repo.list_versions()}
            for version, tag in results:
                expect(infos[version].status == "complete", f"v{version} ({tag}) is {infos[version].status}")
                data = repo.read_file(version, "checkpoint.tl")
                expect(data is not None and sha256(data) == sha256(models[tag[0]].checkpoint),
                       f"v{version} does not hold deploy {tag}'s model")
            served = repo.served_version()
            expect(served == versions[-1], f"config.pbtxt names v{served}, expected the newer v{versions[-1]}")
            note.detail = f"deploys got v{versions[0]} and v{versions[1]}, both complete; config.pbtxt names v{served}"
        if len(results) != 2:
            continue
        with cat.case(f"two concurrent deploys (round {r + 1}): Triton then serves what config.pbtxt names") as note:
            served = rig.served_version()
            actual = serving_version(rig.triton.http_url, MODEL_NAME)
            note.detail = f"config.pbtxt names v{served}, Triton serves v{actual}"
            expect(actual == served, f"both rollouts reported success but Triton serves v{actual} while config.pbtxt "
                   f"names v{served} (a restarted server would serve v{served}: the fleet diverges)")
            winner = dict((v, t) for v, t in results)[served]
            rig.check_serving(version=served, model=models[winner[0]])
    _serve_reference_again(rig)


def _serve_reference_again(rig: Rig) -> None:
    """Publish the reference model again and load it (a second after any earlier config write)."""
    from fraudml.rollout import roll_out

    time.sleep(1.1)
    repo = rig.repo()
    previous = repo.served_version()
    new = publish_reference(repo, rig.ledger, rig.model, "reference model again")
    roll_out(repo, [rig.triton.http_url], previous)
    rig.check_serving(version=new)


def same_second_repoint(rig: Rig, cat: Category, tries: int = 5) -> None:
    """The mechanism behind a diverging concurrent deploy, made deterministic: config.pbtxt
    is pointed at v_a and loaded, then pointed at v_b and loaded, both writes within one
    wall-clock second (S3's LastModified resolution). Triton 2.51 then skips the second reload
    although it answers 200; ``load_and_confirm`` (what roll_out uses) must notice and make
    Triton serve v_b."""
    from fraudml.rollout import load_and_confirm
    from fraudml.triton_control import ready_version as serving_version

    with cat.case("config.pbtxt re-pointed twice within one second, each followed by a load") as note:
        repo = rig.repo()
        first = repo.served_version()
        second = publish_reference(repo, rig.ledger, rig.model, "same-second re-point")
        config_kwargs = repo.read_lineage(second)["triton_config"]
        for attempt in range(1, tries + 1):  # noqa: B007 - reported after the loop
            time.sleep(1.1)
            while time.time() % 1 > 0.05:
                time.sleep(0.005)
            t0 = time.time()
            # the pointer move of ModelRepository.set_served_version, without its listing
            repo._point_config(second, config_kwargs, only_forward=False)
            load_and_confirm(rig.triton.http_url, repo)
            repo._point_config(first, config_kwargs, only_forward=False)
            written = time.time() - t0
            load_and_confirm(rig.triton.http_url, repo)
            if written < 0.95:
                break
            first, second = second, first
        else:
            note.skipped = f"could not write config.pbtxt twice within one second in {tries} tries (busy machine)"
            _serve_reference_again(rig)
            return
        actual = serving_version(rig.triton.http_url, MODEL_NAME)
        config = repo.served_version()
        note.detail = (f"pointer v{second} then v{first} {written:.2f} s apart (attempt {attempt}), both loads "
                       f"succeeded; config.pbtxt names v{config}, Triton serves v{actual}")
        try:
            expect(actual == config, f"Triton serves v{actual} although config.pbtxt names v{config} and the load "
                   "reported success: Triton 2.51 skips a reload when the S3 objects' LastModified (1 s resolution) "
                   "did not change since the last load")
        finally:
            _serve_reference_again(rig)


def ledger_check(rig: Rig, cat: Category) -> None:
    """Versions lost, computed: every version whose publish reported success, read back."""
    with cat.case("every successfully published version is complete in S3 (sha256)") as note:
        lost, problems = rig.ledger.versions_lost(rig.repo())
        cat.versions_lost = lost
        note.detail = (f"{len(rig.ledger.published)} versions checked, {lost} lost; failed publishes retired "
                       f"numbers {sorted(rig.ledger.failed)}")
        expect(not problems, "; ".join(problems[:5]))
