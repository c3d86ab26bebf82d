"""Corrupt and wrong model files published and rolled out while a client loop queries Triton:
Triton refuses them (R3: a truncated checkpoint, once accepted and then failing every request),
the previous version keeps serving without a failed request, the pointer goes back, the version
is marked rejected; and the Kubernetes readinessProbe endpoint still says ready afterwards (R1)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudml.rollout import RolloutError, roll_out
from tests.k8s import manifests as m
from tests.reliability.rig import RequestLoop, served_by_triton, train_reference
from tests.reliability.rig import test_no_version_lost as test_no_version_lost  # versions lost
from tests.reliability.wire import post

KINDS = ["random bytes", "empty file", "truncated checkpoint (first half)", "LightGBM model text under checkpoint.tl",
         "XGBoost JSON under checkpoint.tl", "valid checkpoint with 29 features"]
QUICK = {"random bytes", "truncated checkpoint (first half)", "LightGBM model text under checkpoint.tl",
         "valid checkpoint with 29 features"}


@pytest.fixture(scope="module")
def bad_files(_rig) -> dict[str, bytes]:
    """Kind -> bytes published as checkpoint.tl; none is a usable 30-feature checkpoint."""
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

    good, x = _rig.model.checkpoint, _rig.model.x
    p = _rig.model.predict_proba(x)[:, 1]
    y = (p > np.median(p)).astype(int)
    narrow = train_reference(seed=_rig.model.seed + 5, rows=1500, n_trees=5, max_depth=3, n_features=29)
    return {"random bytes": np.random.default_rng(11).bytes(4096), "empty file": b"",
            "truncated checkpoint (first half)": good[: len(good) // 2],
            "LightGBM model text under checkpoint.tl":
                LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(x, y).booster_.model_to_string().encode(),
            "XGBoost JSON under checkpoint.tl":
                bytes(XGBClassifier(n_estimators=5, max_depth=2).fit(x, y).get_booster().save_raw("json")),
            "valid checkpoint with 29 features": narrow.checkpoint}


def publish_and_roll_out(rig, data: bytes, kind: str) -> tuple[int, int, str]:
    """(previous version, the refused one, the rollout's error): the rollout must be refused."""
    repo = rig.repo()
    previous = repo.served_version()
    bad = rig.publish(f"bad file: {kind}", repo, data)
    try:
        roll_out(repo, [rig.triton.http_url], previous)
    except RolloutError as exc:
        return previous, bad, str(exc)
    repo.mark_rejected(bad, f"accepted by Triton although broken ({kind}); reverted by the reliability suite")
    raise AssertionError(f"Triton accepted v{bad} ({kind}) and the rollout reported success (the next case's "
                         "rig fixture points config.pbtxt back)")


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.quick) if k in QUICK else k for k in KINDS])
def test_bad_model_file_is_refused_and_the_previous_version_keeps_serving(rig, bad_files, kind):
    with RequestLoop(rig.triton.http_url, rig.model.x[:1]) as loop:
        previous, bad, message = publish_and_roll_out(rig, bad_files[kind], kind)
        assert "refused to load" in message, f"the rollout error does not say Triton refused: {message}"
        repo = rig.repo()
        assert repo.served_version() == previous, f"config.pbtxt names v{repo.served_version()} after the refusal"
        status = {v.version: v.status for v in repo.list_versions()}.get(bad)
        assert status == "rejected", f"v{bad} has status {status!r}"
        loop.wait_answers()
        rig.check_serving(version=previous)
        assert served_by_triton(rig.triton) == {previous}
    assert not loop.failures, f"{len(loop.failures)} client requests failed, e.g. {loop.failures[:1]}"
    assert set(loop.versions) == {previous}, f"clients saw versions {sorted(set(loop.versions))}"


@pytest.mark.quick
def test_k8s_readiness_probe_still_ready_after_a_refused_load(rig, bad_files):
    """R1: Triton 2.51's /v2/health/ready stays 400 after any refused load, although the
    previous version keeps serving; the manifests must probe something that says ready."""
    path = m.container(m.build("overlays/cpu"), "triton", "triton")["readinessProbe"]["httpGet"]["path"]
    publish_and_roll_out(rig, bad_files["random bytes"], "random bytes")
    reply = post(rig.triton.http_url + path, None, method="GET", timeout=5)
    assert reply.status == 200, (f"the readinessProbe path {path} answers {reply.status} although v"
                                 f"{rig.repo().served_version()} keeps serving: Kubernetes would take the pod out of service")
