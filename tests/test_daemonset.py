"""DaemonSet targets as pure functions: scale-to-zero, revisions, readiness, the primary copy."""

from __future__ import annotations

from typing import Any

import pytest

from canary_stream.kube.objects import CanaryRef
from canary_stream.workload.daemonset import (
    SCALE_TO_ZERO,
    NotReadyClock,
    daemonset_readiness,
    is_scaled_to_zero,
    scale_patch,
    update_strategy_error,
    without_scale_to_zero,
)
from canary_stream.workload.kubernetes import TARGET_KINDS, primary_workload, revision_of

OWNER = CanaryRef("canary-stream.dev", "test", "podinfo", "uid-1")


def daemonset(node_selector: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}
    if node_selector is not None:
        pod_spec["nodeSelector"] = node_selector
    return {
        "metadata": {"name": "agent", "namespace": "test", "labels": {"app": "agent"}, "generation": 2},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec},
            **spec,
        },
    }


def template(ds: dict[str, Any]) -> dict[str, Any]:
    return dict(ds["spec"]["template"])


def test_the_scale_to_zero_selector_is_not_a_revision() -> None:
    plain = daemonset()
    zero = daemonset({SCALE_TO_ZERO: "true"})
    assert revision_of(without_scale_to_zero(template(zero)), {}) == revision_of(template(plain), {})
    own = daemonset({"disk": "ssd"})
    own_zero = daemonset({"disk": "ssd", SCALE_TO_ZERO: "true"})
    assert without_scale_to_zero(template(own_zero)) == template(own)
    assert without_scale_to_zero(own["spec"]["template"]) is own["spec"]["template"]  # no key: no copy
    assert zero["spec"]["template"]["spec"]["nodeSelector"] == {SCALE_TO_ZERO: "true"}  # input untouched
    # a real change still is one
    other = daemonset({SCALE_TO_ZERO: "true"})
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "podinfo:6.0.1"
    assert revision_of(without_scale_to_zero(template(other)), {}) != revision_of(template(plain), {})


def test_scale_patch_sets_or_deletes_the_key() -> None:
    assert scale_patch(True) == {"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO: "true"}}}}}
    assert scale_patch(False) == {"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO: None}}}}}
    assert is_scaled_to_zero(daemonset({SCALE_TO_ZERO: "true"}))
    assert not is_scaled_to_zero(daemonset({"disk": "ssd"})) and not is_scaled_to_zero(daemonset())


def status(observed: int, desired: int, updated: int, available: int) -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "desiredNumberScheduled": desired,
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
    }


@pytest.mark.parametrize(
    ("st", "ready", "message"),
    [
        (status(1, 3, 3, 3), False, "observed daemonset generation less than desired"),
        (status(2, 3, 1, 3), False, "1 out of 3 new pods have been updated"),
        (status(2, 3, 3, 2), False, "2 of 3 updated pods are available"),
        (status(2, 3, 3, 3), True, ""),
        (status(2, 0, 0, 0), True, ""),  # no node wants a pod
    ],
)
def test_readiness_follows_flaggers_rules(st: dict[str, Any], ready: bool, message: str) -> None:
    ds = {**daemonset(), "status": st}
    r = daemonset_readiness(ds, not_ready_for_s=0, deadline_s=60)
    assert (r.ready, r.retriable) == (ready, True)
    assert message in r.message
    late = daemonset_readiness(ds, not_ready_for_s=61, deadline_s=60)
    assert late.retriable is ready  # past the deadline a not-ready DaemonSet fails for good


def test_only_rolling_update_daemonsets_can_be_canaried() -> None:
    assert update_strategy_error(daemonset()) is None
    assert update_strategy_error(daemonset(updateStrategy={"type": "RollingUpdate"})) is None
    why = update_strategy_error(daemonset(updateStrategy={"type": "OnDelete"}))
    assert why is not None and "spec.updateStrategy.type" in why and "OnDelete" in why


def test_primary_daemonset_has_primary_labels_and_no_scale_to_zero() -> None:
    ds = daemonset(
        {SCALE_TO_ZERO: "true", "disk": "ssd"}, minReadySeconds=5, updateStrategy={"type": "RollingUpdate"}
    )
    out = primary_workload(TARGET_KINDS["DaemonSet"], ds, OWNER, set(), 600)
    assert out["kind"] == "DaemonSet" and out["metadata"]["name"] == "agent-primary"
    spec = out["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "agent-primary"}}
    assert spec["template"]["metadata"]["labels"]["app"] == "agent-primary"
    assert spec["template"]["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert (spec["minReadySeconds"], spec["updateStrategy"]) == (5, {"type": "RollingUpdate"})
    assert "replicas" not in spec and "progressDeadlineSeconds" not in spec
    assert out["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_the_wait_restarts_with_a_new_generation_or_after_a_silence() -> None:
    clock = NotReadyClock(silence_s=60)
    ds = daemonset()
    assert clock.waited(ds, 1000.0) == 0
    assert clock.waited(ds, 1030.0) == 30
    assert clock.waited(ds, 1080.0) == 80  # read every few seconds in between: one wait
    newer = {**ds, "metadata": {**ds["metadata"], "generation": 3}}
    assert clock.waited(newer, 1085.0) == 0  # a new rollout waits afresh
    assert clock.waited(newer, 1200.0) == 0  # nobody asked for two minutes: an old wait is not this one
    clock.ready(newer)
    assert clock.waited(newer, 1201.0) == 0
