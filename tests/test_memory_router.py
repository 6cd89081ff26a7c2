"""In-memory router and workloads: the behaviour the scheduler and the simulator rely on."""

from __future__ import annotations

import pytest

from canary_stream.clock import SimClock
from canary_stream.controller.hashing import checksum, spec_hash
from canary_stream.controller.phases import Phase
from canary_stream.controller.status import CanaryStatus
from canary_stream.router.base import Routes
from canary_stream.router.memory import InMemoryRouter
from canary_stream.spec.model import Canary
from canary_stream.workload.base import Readiness
from canary_stream.workload.memory import InMemoryWorkloads


def make_canary(deadline: int = 60) -> Canary:
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "progressDeadlineSeconds": deadline,
            },
        }
    )


async def test_router_reconcile_keeps_weights_and_records_history() -> None:
    seen: list[Routes] = []
    router = InMemoryRouter(on_change=lambda _k, r: seen.append(r))
    canary = make_canary()
    with pytest.raises(LookupError):
        await router.get_routes(canary)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.set_routes(canary, Routes(70, 30))
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(70, 30)
    with pytest.raises(ValueError):
        await router.set_routes(canary, Routes(-1, 101))
    await router.finalize(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    assert seen == [Routes(100, 0), Routes(70, 30), Routes(100, 0)]
    assert ("test", "podinfo") in router.finalized


async def test_workloads_revision_promote_and_scale() -> None:
    clock = SimClock()
    w = InMemoryWorkloads(clock)
    canary = make_canary()
    w.deploy("test", "podinfo", {"image": "podinfo:6.0.0"}, replicas=3)
    await w.initialize(canary)
    t = w.target("test", "podinfo")
    assert t.primary is not None and t.primary.template == {"image": "podinfo:6.0.0"}
    assert t.primary.replicas == 3
    rev1 = await w.revision(canary)
    w.deploy("test", "podinfo", {"image": "podinfo:6.0.1"}, replicas=3)
    rev2 = await w.revision(canary)
    assert rev1 != rev2 and rev1 == spec_hash({"image": "podinfo:6.0.0"})
    await w.scale_canary(canary, 0)
    assert t.canary.replicas == 0
    assert (await w.canary_ready(canary)).ready  # nothing to wait for at 0 replicas
    await w.scale_canary(canary, None)  # scale from zero: the primary's replicas
    assert t.canary.replicas == 3
    await w.promote(canary)
    assert t.primary.template == {"image": "podinfo:6.0.1"}
    assert t.promotions == [{"image": "podinfo:6.0.1"}]


async def test_readiness_startup_and_progress_deadline() -> None:
    clock = SimClock()
    w = InMemoryWorkloads(clock, startup_s=5)
    canary = make_canary(deadline=60)
    w.deploy("test", "podinfo", {"image": "a"})
    await w.initialize(canary)
    assert not (await w.primary_ready(canary)).ready
    await clock.advance(5)
    assert (await w.primary_ready(canary)).ready
    await w.scale_canary(canary, 0)
    w.set_broken("test", "podinfo", canary=True)
    await w.scale_canary(canary, None)
    r = await w.canary_ready(canary)
    assert not r.ready and r.retriable
    await clock.advance(61)
    r = await w.canary_ready(canary)
    assert not r.ready and not r.retriable and "progress deadline" in r.message
    w.force_readiness("test", "podinfo", canary=Readiness(True))
    assert (await w.canary_ready(canary)).ready


def test_status_round_trip_and_promoted_condition() -> None:
    s = CanaryStatus().with_phase(Phase.INITIALIZED, 100.0, last_applied_spec="a", last_promoted_spec="a")
    cond = s.promoted()
    assert cond is not None and cond.status == "True" and cond.reason == "Initialized"
    s2 = s.with_phase(Phase.PROGRESSING, 200.0, canary_weight=10)
    c2 = s2.promoted()
    assert c2 is not None and c2.status == "Unknown"
    assert c2.message == "New revision detected, progressing canary analysis."
    s3 = s2.with_phase(Phase.WAITING_PROMOTION, 300.0)
    c3 = s3.promoted()
    assert c3 is not None and c3.last_transition_time == c2.last_transition_time  # status unchanged
    failed = s3.with_phase(Phase.FAILED, 400.0)
    assert failed.promoted() is not None and failed.promoted().status == "False"  # type: ignore[union-attr]
    d = failed.to_dict()
    assert d["phase"] == "Failed" and d["conditions"][0]["type"] == "Promoted"
    assert d["conditions"][0]["message"] == "Canary analysis failed, Deployment scaled to zero."
    assert CanaryStatus.from_dict(d) == failed
    assert checksum("a", {}) != checksum("b", {})
