"""The event-driven rollout scheduler: Flagger's worked examples (§3.8) in simulated time, verdict
handling, gates, revisions, deadlines and manual commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.analysis.verdict import TestResult as Check
from canary_stream.clock import SimClock
from canary_stream.controller.alerts import AlertSink
from canary_stream.controller.events import MemoryEventSink
from canary_stream.controller.phases import Phase
from canary_stream.controller.scheduler import Rollout, RolloutOptions, advance_settled, next_canary_weight
from canary_stream.controller.status import CanaryStatus
from canary_stream.controller.webhooks import WebhookClient
from canary_stream.router.base import RouterNotReady, Routes
from canary_stream.router.memory import InMemoryRouter
from canary_stream.spec.model import Analysis, Canary
from canary_stream.workload.memory import InMemoryWorkloads
from hook_server import HookServer, Reply

INTERVAL = 60.0


class ScriptedAnalyzer:
    """A fake judge: answers `decision` (and `tests`) whatever the evidence; records the steps."""

    def __init__(self, decision: Decision = Decision.PASS) -> None:
        self.decision = decision
        self.tests: tuple[Check, ...] = ()
        self.steps: list[tuple[float, Routes]] = []

    def start_step(self, at: float, routes: Routes) -> None:
        self.steps.append((at, routes))

    def verdict(self, now: float) -> Verdict:
        return Verdict(self.decision, now, (f"scripted {self.decision.value}",), tests=self.tests)


def make_canary(analysis: dict[str, Any] | None, **spec: Any) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        **spec,
    }
    if analysis is not None:
        body["analysis"] = {"interval": "1m", "threshold": 5, **analysis}
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": body,
        }
    )


@dataclass
class Env:
    clock: SimClock
    router: InMemoryRouter
    workloads: InMemoryWorkloads
    sink: MemoryEventSink
    analyzer: ScriptedAnalyzer | None
    rollout: Rollout
    task: asyncio.Task[None]
    client: WebhookClient = field(default_factory=WebhookClient)

    async def run_for(self, seconds: float) -> None:
        await advance_settled(self.clock, seconds, self.rollout)

    async def run_until(self, phase: Phase, limit: float = 7200.0, step: float = 10.0) -> float:
        """Simulated seconds until `phase` (fails after `limit`)."""
        start = self.clock.now()
        while self.rollout.status.phase != phase:
            assert self.clock.now() - start < limit, f"stuck in {self.rollout.status.phase}"
            await self.run_for(step)
        return self.clock.now() - start

    def release(self, image: str) -> None:
        self.workloads.deploy("test", "podinfo", {"image": image})
        self.rollout.on_revision()

    def weights(self) -> list[int]:
        """Canary weights written to the router (mirrored pre-stage shows as 0)."""
        return [r.canary_weight for _k, r in self.router.history]

    def messages(self) -> list[str]:
        return self.sink.messages()

    async def close(self) -> None:
        self.rollout.stop()
        await self.task
        await self.client.aclose()


@pytest.fixture
async def envs() -> AsyncIterator[list[Env]]:
    made: list[Env] = []
    yield made
    for e in made:
        if not e.task.done():
            await e.close()


async def start(
    envs: list[Env],
    analysis: dict[str, Any] | None,
    *,
    analyzer: ScriptedAnalyzer | None = None,
    options: RolloutOptions | None = None,
    startup_s: float = 0.0,
    alerts: AlertSink | None = None,
    **spec: Any,
) -> Env:
    """An initialized canary with `podinfo:1` on the primary."""
    clock = SimClock()
    router = InMemoryRouter()
    workloads = InMemoryWorkloads(clock, startup_s=startup_s)
    workloads.deploy("test", "podinfo", {"image": "podinfo:1"}, replicas=2)
    sink = MemoryEventSink()
    client = WebhookClient(retry_wait_min=0.01, retry_wait_max=0.02)
    rollout = Rollout(
        make_canary(analysis, **spec),
        router,
        workloads,
        clock,
        analyzer=analyzer,
        webhooks=client,
        events=sink,
        alerts=alerts,
        options=options,
    )
    task = asyncio.create_task(rollout.run())
    env = Env(clock, router, workloads, sink, analyzer, rollout, task, client)
    envs.append(env)
    await env.run_until(Phase.INITIALIZED)
    return env


class StagedRouter(InMemoryRouter):
    """Records when each stage ran, and can refuse a route change like a Gateway API parent that
    has not accepted it yet."""

    def __init__(self, clock: SimClock) -> None:
        super().__init__()
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.not_ready_reads = 0

    async def initialize(self, canary: Canary) -> None:
        self.calls.append(("initialize", self.clock.now()))

    async def reconcile(self, canary: Canary) -> None:
        self.calls.append(("reconcile", self.clock.now()))
        await super().reconcile(canary)

    async def get_routes(self, canary: Canary) -> Routes:
        if self.not_ready_reads > 0:
            self.not_ready_reads -= 1
            raise RouterNotReady("parent has not accepted generation 2")
        return await super().get_routes(canary)


async def test_apex_is_taken_over_only_once_the_primary_is_ready() -> None:
    """Flagger's order: the -primary/-canary Services first, the apex (reconcile) only after the
    primary has pods -- otherwise a user's existing Service would select no pods for a while."""
    clock = SimClock()
    router = StagedRouter(clock)
    workloads = InMemoryWorkloads(clock, startup_s=30.0)
    workloads.deploy("test", "podinfo", {"image": "podinfo:1"}, replicas=2)
    rollout = Rollout(make_canary({"stepWeight": 10}), router, workloads, clock)
    t0 = clock.now()
    task = asyncio.create_task(rollout.run())
    while rollout.status.phase != Phase.INITIALIZED:
        assert clock.now() - t0 < 300
        await advance_settled(clock, 5.0, rollout)
    rollout.stop()
    await task
    assert router.calls[0] == ("initialize", t0)
    first_reconcile = next(t for name, t in router.calls if name == "reconcile")
    assert first_reconcile - t0 >= 30.0


async def test_router_not_ready_is_waited_for(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 50})
    router = StagedRouter(env.clock)
    router.routes = env.router.routes
    env.rollout.router = router
    router.not_ready_reads = 3
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert router.not_ready_reads == 0
    assert not env.task.done()


# -- Flagger's worked examples (§3.8) ---------------------------------------------------------------


async def test_step_weight_10_max_50_then_promote(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50})
    env.release("podinfo:2")
    took = await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 10, 20, 30, 40, 50, 0]
    assert "Advance podinfo.test canary weight 10" in env.messages()
    assert env.messages()[-1] == "Promotion completed! Scaling down podinfo.test"
    # ticks: shift at T0 (canary ready at once), 5 dwells, primary routing, Finalising -> Succeeded
    assert took == pytest.approx(6 * INTERVAL, abs=10)
    t = env.workloads.target("test", "podinfo")
    assert t.primary is not None and t.primary.template == {"image": "podinfo:2"}
    assert t.canary.replicas == 0
    s = env.rollout.status
    assert s.last_promoted_spec == s.last_applied_spec
    cond = s.promoted()
    assert cond is not None and cond.status == "True" and cond.reason == "Succeeded"
    phases = [p for _t, p in env.rollout.transitions]
    assert phases[-4:] == [Phase.PROGRESSING, Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED]


async def test_step_weight_overshoots_max_weight(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 20, "maxWeight": 50})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 20, 40, 60, 0]


async def test_step_weights_ladder(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeights": [1, 2, 10, 80]})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 1, 2, 10, 80, 0]


def test_next_canary_weight_rules() -> None:
    ladder = Analysis.model_validate({"stepWeights": [1, 2, 10, 80]})
    assert [next_canary_weight(ladder, w) for w in (0, 1, 2, 10)] == [1, 2, 10, 80]
    assert next_canary_weight(ladder, 5) == 80  # off the ladder: to maxWeight, not past it
    both = Analysis.model_validate({"stepWeight": 5, "stepWeights": [1, 2]})
    assert next_canary_weight(both, 1) == 6  # stepWeight wins
    flat = Analysis.model_validate({"stepWeight": 30, "maxWeight": 50})
    assert [next_canary_weight(flat, w) for w in (0, 30)] == [30, 60]  # Flagger overshoots maxWeight too
    assert next_canary_weight(Analysis.model_validate({"maxWeight": 40}), 0) == 40  # no step at all


async def test_mirror_pre_stage(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 5, "maxWeight": 10, "mirror": True, "mirrorWeight": 50})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    writes = [r for _k, r in env.router.history]
    assert writes[1] == Routes(100, 0, mirrored=True, mirror_weight=50)
    assert writes[2] == Routes(95, 5)  # mirroring off at the first real step
    assert env.weights() == [0, 0, 5, 10, 0]


async def test_step_weight_promotion(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 50, "maxWeight": 100, "stepWeightPromotion": 50})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 50, 100, 50, 0]
    assert "Advance podinfo.test primary weight 50" in env.messages()


async def test_ab_testing_iterations(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer()
    env = await start(
        envs,
        {"iterations": 10, "match": [{"headers": {"x-canary": {"exact": "insider"}}}]},
        analyzer=analyzer,
    )
    env.release("podinfo:2")
    took = await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 100, 0]  # the match route goes 0/100, then back to primary
    iterations = [m for m in env.messages() if "canary iteration" in m]
    assert iterations[0] == "Advance podinfo.test canary iteration 1/10" and len(iterations) == 10
    assert len(analyzer.steps) == 10  # N analyses
    assert took == pytest.approx(11 * INTERVAL, abs=10)


async def test_blue_green_with_extra_canary_tick(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer()
    env = await start(envs, {"iterations": 5}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 100, 0]
    assert [r.canary_weight for _t, r in analyzer.steps] == [0, 0, 0, 0, 0, 100]  # extra 100% step
    assert "Routing all traffic to canary" in env.messages()


async def test_blue_green_mirror(envs: list[Env]) -> None:
    env = await start(envs, {"iterations": 2, "mirror": True})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    writes = [r for _k, r in env.router.history]
    assert writes[1] == Routes(100, 0, mirrored=True)
    assert writes[2] == Routes(0, 100)


async def test_kubernetes_provider_is_blue_green_without_routing(envs: list[Env]) -> None:
    """provider kubernetes (no mesh): Flagger forces blue/green, 10 iterations by default, and
    never shifts or mirrors traffic -- the primary is promoted after the last iteration."""
    analyzer = ScriptedAnalyzer()
    env = await start(
        envs,
        {"stepWeight": 10, "match": [{"headers": {"x": {"exact": "1"}}}], "mirror": True},
        analyzer=analyzer,
        provider="kubernetes",
    )
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert all(r.canary_weight == 0 and not r.mirrored for _t, r in analyzer.steps)
    assert len(analyzer.steps) == 10
    assert "Routing all traffic to canary" not in env.messages()
    assert "Advance podinfo.test canary iteration 10/10" in env.messages()


# -- verdicts ---------------------------------------------------------------------------------------


async def test_fail_verdict_rolls_back_at_once(envs: list[Env], server: HookServer) -> None:
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    hooks = [{"name": "post", "type": "post-rollout", "url": server.url("/post")}]
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50, "webhooks": hooks}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(1)
    assert env.rollout.status.canary_weight == 10
    await env.run_for(3)
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now(), ("error rate 5% vs 0.1%",)))
    await env.rollout.settle()
    assert env.rollout.status.phase == Phase.FAILED  # 4 s into a 60 s step: no waiting
    assert env.weights()[-1] == 0
    assert env.workloads.target("test", "podinfo").canary.replicas == 0
    assert "Canary failed! Scaling down podinfo.test" in env.messages()
    assert any("error rate 5% vs 0.1%" in m for m in env.messages())
    (post,) = server.calls("/post")
    assert post.body["phase"] == "Failed"
    cond = env.rollout.status.promoted()
    assert cond is not None and cond.status == "False"


async def test_stale_verdict_from_earlier_step_is_ignored(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(1)
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now() - 30, ("old",)))
    await env.rollout.settle()
    assert env.rollout.status.phase == Phase.PROGRESSING


async def test_pass_advances_only_after_dwell_and_waits_for_pass(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(1)
    env.rollout.on_verdict(Verdict(Decision.PASS, env.clock.now(), ("early",)))
    await env.run_for(30)
    assert env.rollout.status.canary_weight == 10  # pass before the dwell: no advance
    await env.run_for(60)
    assert env.rollout.status.canary_weight == 10  # dwell over, judge still says continue
    env.rollout.on_verdict(Verdict(Decision.PASS, env.clock.now(), ("enough evidence",)))
    await env.rollout.settle()
    assert env.rollout.status.canary_weight == 20  # advanced on the verdict, not on a tick


async def test_inconclusive_forever_never_rolls_back(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.INCONCLUSIVE)
    analyzer.tests = (Check("request-success-rate", Decision.INCONCLUSIVE, detail="no data"),)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    env = await start(
        envs, {"stepWeight": 10, "maxWeight": 50, "threshold": 1, "metrics": metrics}, analyzer=analyzer
    )
    env.release("podinfo:2")
    for _ in range(60):
        await env.run_for(60)
        env.rollout.on_verdict(analyzer.verdict(env.clock.now()))
    assert env.rollout.status.phase == Phase.PROGRESSING
    assert env.rollout.status.canary_weight == 10
    assert env.rollout.status.failed_checks == 0


async def test_failed_metric_checks_count_once_per_interval_to_threshold(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    analyzer.tests = (Check("request-success-rate", Decision.FAIL, detail="97.1 < 99"),)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    env = await start(
        envs, {"stepWeight": 10, "maxWeight": 50, "threshold": 3, "metrics": metrics}, analyzer=analyzer
    )
    env.release("podinfo:2")
    await env.run_for(1)
    for _ in range(20):  # a verdict per second for 20 s: one failed check, not twenty
        await env.run_for(1)
        env.rollout.on_verdict(analyzer.verdict(env.clock.now()))
    await env.rollout.settle()
    assert env.rollout.status.failed_checks == 1
    assert env.rollout.status.phase == Phase.PROGRESSING
    took = await env.run_until(Phase.FAILED, step=1)
    assert 95 <= took <= 105  # checks 2 and 3 at the next two interval ticks (61 s, 121 s)
    assert any("failed checks threshold reached 3" in m for m in env.messages())
    assert env.rollout.status.failed_checks == 0  # Flagger resets on Failed


async def test_flagger_mode_advances_on_metric_checks(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    analyzer.tests = (Check("request-success-rate", Decision.PASS),)
    metrics = [{"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}]
    env = await start(
        envs,
        {"stepWeight": 25, "maxWeight": 50, "metrics": metrics, "judge": {"enabled": False}},
        analyzer=analyzer,
    )
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 25, 50, 0]


# -- gates and hooks --------------------------------------------------------------------------------


async def test_confirm_promotion_denied_then_approved(envs: list[Env], server: HookServer) -> None:
    server.answer("/gate", Reply(403, "Forbidden"))
    hooks = [{"name": "gate", "type": "confirm-promotion", "url": server.url("/gate")}]
    env = await start(envs, {"stepWeight": 25, "maxWeight": 50, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_until(Phase.WAITING_PROMOTION)
    asked = len(server.calls("/gate"))
    await env.run_for(5 * INTERVAL)
    assert env.rollout.status.phase == Phase.WAITING_PROMOTION
    assert 4 <= len(server.calls("/gate")) - asked <= 6  # asked again once per interval
    assert server.calls("/gate")[0].body["phase"] == "Progressing"
    server.answer("/gate", Reply(200, "Approved"))
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 25, 50, 0]


async def test_confirm_rollout_waiting_then_progressing(envs: list[Env], server: HookServer) -> None:
    server.answer("/gate/check", Reply(403, "closed"))
    hooks = [{"name": "gate", "type": "confirm-rollout", "url": server.url("/gate/check")}]
    env = await start(envs, {"stepWeight": 50, "maxWeight": 50, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_for(1)
    assert env.rollout.status.phase == Phase.WAITING
    assert env.workloads.target("test", "podinfo").canary.replicas == 0
    assert server.calls("/gate/check")[0].body["phase"] == "Initialized"
    await env.run_for(2 * INTERVAL)
    assert server.calls("/gate/check")[-1].body["phase"] == "Waiting"
    server.answer("/gate/check", Reply(200))
    await env.run_until(Phase.PROGRESSING, step=1)
    await env.run_until(Phase.SUCCEEDED)


async def test_confirm_traffic_increase_holds_weight(envs: list[Env], server: HookServer) -> None:
    server.answer("/inc", Reply(200), Reply(403, "hold"))
    hooks = [{"name": "inc", "type": "confirm-traffic-increase", "url": server.url("/inc")}]
    env = await start(envs, {"stepWeight": 10, "maxWeight": 30, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_for(5 * INTERVAL)
    assert env.rollout.status.canary_weight == 10
    assert env.rollout.status.phase == Phase.PROGRESSING
    server.answer("/inc", Reply(200))
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 10, 20, 30, 0]


async def test_rollout_and_pre_rollout_hooks(envs: list[Env], server: HookServer) -> None:
    server.answer("/pre", Reply(500, "not yet"), Reply(200))
    server.answer("/check", Reply(200), Reply(500, "smoke test failed"), Reply(200))
    hooks = [
        {"name": "pre", "type": "pre-rollout", "url": server.url("/pre")},
        {"name": "check", "type": "rollout", "url": server.url("/check"), "metadata": {"cmd": "curl"}},
    ]
    env = await start(envs, {"stepWeight": 25, "maxWeight": 50, "threshold": 5, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 25, 50, 0]
    assert env.rollout.status.failed_checks == 2  # one pre-rollout, one rollout failure
    assert len(server.calls("/pre")) == 2
    assert any("pre-rollout check pre failed" in m for m in env.messages())
    assert any("external check check failed" in m and "smoke test failed" in m for m in env.messages())
    assert server.calls("/check")[0].body["metadata"] == {"cmd": "curl"}
    assert server.calls("/check")[0].body["phase"] == "Progressing"


async def test_rollback_hook_aborts(envs: list[Env], server: HookServer) -> None:
    server.answer("/rollback/check", Reply(403), Reply(403), Reply(200))
    hooks = [{"name": "rb", "type": "rollback", "url": server.url("/rollback/check")}]
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_until(Phase.FAILED)
    assert any("manual webhook invoked" in m for m in env.messages())


async def test_event_hooks_receive_every_event(envs: list[Env], server: HookServer) -> None:
    hooks = [{"name": "ev", "type": "event", "url": server.url("/events")}]
    env = await start(envs, {"stepWeight": 50, "maxWeight": 50, "webhooks": hooks})
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    sent = [r.body["metadata"]["eventMessage"] for r in server.calls("/events")]
    assert sent == env.messages()
    assert server.calls("/events")[-1].body["metadata"]["eventType"] == "Normal"


async def test_the_global_event_webhook_gets_events_of_canaries_without_their_own(
    envs: list[Env], server: HookServer
) -> None:
    options = RolloutOptions(min_interval_s=INTERVAL, event_webhook=server.url("/global"))
    own = [{"name": "ev", "type": "event", "url": server.url("/own")}]
    plain = await start(envs, {"stepWeight": 50, "maxWeight": 50}, options=options)
    hooked = await start(envs, {"stepWeight": 50, "maxWeight": 50, "webhooks": own}, options=options)
    for env in (plain, hooked):
        env.release("podinfo:2")
        await env.run_until(Phase.SUCCEEDED)
    assert [r.body["metadata"]["eventMessage"] for r in server.calls("/global")] == plain.messages()
    assert [r.body["metadata"]["eventMessage"] for r in server.calls("/own")] == hooked.messages()


# -- revisions, skip, suspend, deadlines ------------------------------------------------------------


async def test_new_revision_mid_analysis_restarts(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer()
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(2 * INTERVAL + 1)
    assert env.rollout.status.canary_weight == 30
    rev2 = env.rollout.status.last_applied_spec
    env.release("podinfo:3")
    await env.rollout.settle()
    assert env.rollout.status.canary_weight == 10  # back to primary, then the first step again
    assert env.rollout.status.last_applied_spec != rev2
    assert "New revision detected! Restarting analysis for podinfo.test" in env.messages()
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights()[:7] == [0, 10, 20, 30, 0, 10, 20]
    t = env.workloads.target("test", "podinfo")
    assert t.primary is not None and t.primary.template == {"image": "podinfo:3"}


async def test_reverting_to_the_primary_template_starts_nothing(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 50, "maxWeight": 50})
    env.release("podinfo:1")
    await env.run_for(INTERVAL)
    assert env.rollout.status.phase == Phase.INITIALIZED


async def test_failed_revision_is_not_retried_until_changed(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer(Decision.FAIL)
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_until(Phase.FAILED)
    env.rollout.on_revision()
    await env.run_for(3 * INTERVAL)
    assert env.rollout.status.phase == Phase.FAILED
    analyzer.decision = Decision.PASS
    env.release("podinfo:3")
    await env.run_until(Phase.SUCCEEDED)


async def test_skip_analysis_promotes_directly(envs: list[Env], server: HookServer) -> None:
    hooks = [{"name": "post", "type": "post-rollout", "url": server.url("/post")}]
    env = await start(envs, {"stepWeight": 10, "webhooks": hooks}, skipAnalysis=True)
    env.release("podinfo:2")
    await env.run_for(1)
    assert env.rollout.status.phase == Phase.SUCCEEDED
    assert env.weights() == [0, 0]
    assert server.calls("/post")[0].body["phase"] == "Succeeded"
    assert any("Canary analysis was skipped" in m for m in env.messages())


async def test_suspend_freezes_everything(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer()
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(INTERVAL + 1)
    assert env.rollout.status.canary_weight == 20
    env.rollout.update_spec(make_canary({"stepWeight": 10, "maxWeight": 50}, suspend=True))
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now(), ("ignored while suspended",)))
    await env.run_for(10 * INTERVAL)
    assert env.rollout.status.phase == Phase.PROGRESSING and env.rollout.status.canary_weight == 20
    env.rollout.update_spec(make_canary({"stepWeight": 10, "maxWeight": 50}))
    await env.run_until(Phase.SUCCEEDED)


async def test_canary_progress_deadline_rolls_back(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, progressDeadlineSeconds=120)
    env.workloads.set_broken("test", "podinfo", canary=True)
    env.release("podinfo:2")
    took = await env.run_until(Phase.FAILED, step=5)
    assert 120 <= took <= 130
    assert any("progress deadline exceeded" in m for m in env.messages())
    assert env.weights() == [0, 0]


async def test_primary_deadline_while_promoting_keeps_canary(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 50, "maxWeight": 50}, progressDeadlineSeconds=120, startup_s=30)
    env.release("podinfo:2")
    await env.run_until(Phase.PROMOTING, step=1)
    env.workloads.set_broken("test", "podinfo", primary=True)  # the primary's rolling update never finishes
    took = await env.run_until(Phase.FAILED, step=5)
    assert 115 <= took <= 125
    assert env.rollout.status.canary_weight == 100
    assert env.weights()[-1] == 100
    assert any("Promotion failed, primary not ready" in m for m in env.messages())


async def test_waits_for_canary_startup(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 50, "maxWeight": 50}, startup_s=30)
    env.release("podinfo:2")
    await env.run_for(20)
    assert env.rollout.status.phase == Phase.PROGRESSING and env.weights() == [0]
    await env.run_for(15)
    assert env.weights() == [0, 50]


# -- manual control ---------------------------------------------------------------------------------


async def test_manual_promote_skips_remaining_steps(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=ScriptedAnalyzer(Decision.CONTINUE))
    env.release("podinfo:2")
    await env.run_for(5)
    env.rollout.promote()
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 10, 0]


async def test_manual_abort_rolls_back(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50})
    env.release("podinfo:2")
    await env.run_for(INTERVAL + 5)
    env.rollout.abort()
    await env.rollout.settle()
    assert env.rollout.status.phase == Phase.FAILED
    assert any("manual abort" in m for m in env.messages())


async def test_pause_holds_weight_resume_continues(envs: list[Env]) -> None:
    analyzer = ScriptedAnalyzer()
    env = await start(envs, {"stepWeight": 10, "maxWeight": 30}, analyzer=analyzer)
    env.release("podinfo:2")
    await env.run_for(5)
    env.rollout.pause()
    await env.run_for(10 * INTERVAL)
    assert env.rollout.status.canary_weight == 10
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now(), ("still guarded while paused",)))
    await env.rollout.settle()
    assert env.rollout.status.phase == Phase.FAILED
    analyzer.decision = Decision.PASS
    env.release("podinfo:3")
    await env.run_for(5)
    env.rollout.pause()
    await env.run_for(3 * INTERVAL)
    assert env.rollout.status.canary_weight == 10
    env.rollout.resume()
    await env.run_until(Phase.SUCCEEDED)


async def test_set_weight_then_continue_from_there(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50})
    env.release("podinfo:2")
    await env.run_for(5)
    env.rollout.set_weight(40)
    await env.rollout.settle()
    assert env.rollout.status.canary_weight == 40
    await env.run_until(Phase.SUCCEEDED)
    assert env.weights() == [0, 10, 40, 50, 0]


async def test_gradual_rollback(envs: list[Env]) -> None:
    env = await start(
        envs,
        {"stepWeight": 20, "maxWeight": 60},
        analyzer=ScriptedAnalyzer(),
        options=RolloutOptions(rollback_step_weight=20, rollback_step_s=5),
    )
    env.release("podinfo:2")
    await env.run_for(2 * INTERVAL + 1)
    assert env.rollout.status.canary_weight == 60
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now(), ("bad",)))
    took = await env.run_until(Phase.FAILED, step=1)
    assert env.weights()[-3:] == [40, 20, 0]
    assert 9 <= took <= 11


async def test_resume_from_persisted_status_keeps_the_current_step() -> None:
    clock = SimClock()
    router = InMemoryRouter()
    workloads = InMemoryWorkloads(clock)
    workloads.deploy("test", "podinfo", {"image": "podinfo:1"})
    canary = make_canary({"stepWeight": 10, "maxWeight": 30})
    await workloads.initialize(canary)
    workloads.deploy("test", "podinfo", {"image": "podinfo:2"})
    await router.reconcile(canary)
    await router.set_routes(canary, Routes(80, 20))
    saved = CanaryStatus.from_dict(
        {"phase": "Progressing", "canaryWeight": 20, "lastAppliedSpec": await workloads.revision(canary)}
    )
    rollout = Rollout(canary, router, workloads, clock, status=saved)
    task = asyncio.create_task(rollout.run())
    await advance_settled(clock, 30, rollout)
    assert rollout.status.canary_weight == 20  # a fresh dwell at 20, no pre-rollout jump
    await advance_settled(clock, 31, rollout)
    assert rollout.status.canary_weight == 30
    rollout.stop()
    await task


# -- scale ------------------------------------------------------------------------------------------


async def test_hundreds_of_rollouts_in_seconds() -> None:
    clock = SimClock()
    router = InMemoryRouter()
    workloads = InMemoryWorkloads(clock)
    rollouts = []
    for i in range(300):
        name = f"app{i}"
        workloads.deploy("test", name, {"image": "v1"})
        canary = Canary.model_validate(
            {
                "apiVersion": "flagger.app/v1beta1",
                "metadata": {"name": name, "namespace": "test"},
                "spec": {
                    "targetRef": {"name": name},
                    "service": {"port": 80},
                    "analysis": {"interval": "1m", "stepWeight": 10, "maxWeight": 50},
                },
            }
        )
        rollouts.append(
            Rollout(
                canary,
                router,
                workloads,
                clock,
                analyzer=ScriptedAnalyzer(Decision.FAIL if i % 3 == 0 else Decision.PASS),
            )
        )
    tasks = [asyncio.create_task(r.run()) for r in rollouts]
    started = time.monotonic()
    await advance_settled(clock, 1, *rollouts)
    for i, r in enumerate(rollouts):
        workloads.deploy("test", f"app{i}", {"image": "v2"})
        r.on_revision()
    await advance_settled(clock, 15 * INTERVAL, *rollouts)
    elapsed = time.monotonic() - started
    phases = [r.status.phase for r in rollouts]
    assert phases.count(Phase.FAILED) == 100 and phases.count(Phase.SUCCEEDED) == 200
    assert elapsed < 10
    for r in rollouts:
        r.stop()
    await asyncio.gather(*tasks)


# -- deletion ---------------------------------------------------------------------------------------


async def test_delete_with_revert_on_deletion_reverts_target_and_routing(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, revertOnDeletion=True)
    env.release("podinfo:2")
    await env.run_for(INTERVAL + 5)
    assert env.rollout.status.canary_weight > 0
    env.rollout.delete()
    await env.task
    assert env.rollout.status.phase == Phase.TERMINATING
    assert env.workloads.target("test", "podinfo").reverted
    assert env.workloads.target("test", "podinfo").canary.replicas == 2
    assert env.router.finalized == {("test", "podinfo")}
    assert env.weights()[-1] == 0


async def test_delete_without_revert_leaves_everything(envs: list[Env]) -> None:
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50})
    env.release("podinfo:2")
    await env.run_for(INTERVAL + 5)
    env.rollout.delete()
    await env.task
    assert env.rollout.status.phase == Phase.PROGRESSING
    assert not env.workloads.target("test", "podinfo").reverted
    assert not env.router.finalized
