"""One rollout end to end: the simulated mesh writes access-log lines, the real aggregator reads
them, the judge turns them into verdicts, and the scheduler moves the router's weights, which the
mesh follows. Runs in simulated time (every simulated second: emit, feed, judge; timers fire
through the SimClock) or in wall time (the demo)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.clock import Clock, SimClock, WallClock
from canary_stream.controller.phases import ANALYSING, FINISHED, Phase
from canary_stream.controller.scheduler import Analyzer, Rollout, RolloutOptions, advance_settled
from canary_stream.core import Aggregator, AggregatorConfig, Windowing
from canary_stream.router.base import Routes
from canary_stream.router.memory import InMemoryRouter, key_of
from canary_stream.sim.mesh import MeshConfig, SimulatedMesh
from canary_stream.sim.result import SimResult
from canary_stream.spec.model import Canary
from canary_stream.workload.memory import InMemoryWorkloads

# Promotion has begun: the outcome is settled, the judge no longer looks (simulate skips the traffic).
PROMOTED = frozenset({Phase.PROMOTING, Phase.FINALISING})

AnalyzerFactory = Callable[[Canary, Aggregator, str], Analyzer]


def default_analyzer(canary: Canary, aggregator: Aggregator, target: str) -> Analyzer:
    """The streaming judge (analysis/analyzer.py)."""
    from canary_stream.analysis.analyzer import Analyzer as StreamingAnalyzer

    return StreamingAnalyzer(canary, aggregator, target)


def target_of(canary: Canary) -> str:
    """The aggregator's target for this canary: `<service>.<namespace>`."""
    return f"{canary.spec.service.name or canary.spec.target_ref.name}.{canary.namespace}"


def mesh_for(canary: Canary, config: MeshConfig) -> MeshConfig:
    """`config` with the canary's service, namespace and port (and A/B matching when the spec has
    `match`: half of the users match unless the config says otherwise)."""
    from dataclasses import replace

    a = canary.spec.analysis
    match_share = config.match_share
    if match_share is None and a is not None and a.match and a.iterations:
        match_share = 0.5
    return replace(
        config,
        service=canary.spec.service.name or canary.spec.target_ref.name,
        namespace=canary.namespace,
        port=canary.spec.service.port,
        match_share=match_share,
    )


SIM_LATENESS_MS = 2_000


def new_aggregator() -> Aggregator:
    """An aggregator reading Istio JSON; its ring holds well over any metric window used here.
    The simulated mesh hands over each second's lines at once and in order, so no line is ever
    late: a 2 s allowed lateness (instead of 10 s) keeps the tail of buckets the judge recomputes
    on every verdict short, without changing any statistic."""
    return Aggregator(
        AggregatorConfig(format="istio-json", windowing=Windowing(allowed_lateness_ms=SIM_LATENESS_MS))
    )


@dataclass
class StepRecorder:
    """Wraps the judge: remembers whether a step has started, and the verdicts worth reporting
    (every change of decision or reasons, compactly; the deciding one in full)."""

    inner: Analyzer
    started: float | None = None
    routes: Routes | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    last: Verdict | None = None
    t0: float = 0.0

    def start_step(self, at: float, routes: Routes) -> None:
        self.started, self.routes = at, routes
        self.inner.start_step(at, routes)

    def verdict(self, now: float) -> Verdict:
        v = self.inner.verdict(now)
        prev = self.last
        if prev is None or prev.decision != v.decision or prev.reasons != v.reasons:
            self.log.append(
                {"t": round(now - self.t0, 3), "decision": v.decision.value, "reasons": list(v.reasons)}
            )
        self.last = v
        return v


@dataclass
class Simulation:
    """The wiring of one rollout; `step()` runs one second of traffic and judgement."""

    canary: Canary
    mesh: SimulatedMesh
    clock: Clock
    aggregator: Aggregator
    router: InMemoryRouter
    workloads: InMemoryWorkloads
    rollout: Rollout
    judge: StepRecorder
    target: str
    started_at: float
    lines: int = 0

    @property
    def routes(self) -> Routes:
        return self.router.routes.get(key_of(self.canary), Routes(100, 0))

    @property
    def phase(self) -> Phase | None:
        return self.rollout.status.phase

    def emit(self) -> None:
        """The lines of the second that starts now, into the aggregator."""
        second = int(self.clock.now())
        data = self.mesh.emit(second, self.routes)
        self.lines += self.aggregator.feed(data, now_ms=second * 1000).accepted

    def judge_now(self) -> Verdict | None:
        """The judge's verdict at the current time, handed to the rollout (while a step runs)."""
        if self.phase not in ANALYSING or self.judge.started is None:
            return None
        v = self.judge.verdict(self.clock.now())
        self.rollout.on_verdict(v)
        return v

    def deploy(self, image: str) -> None:
        """A new revision of the target: the rollout starts analysing it."""
        ns, name = self.canary.namespace, self.canary.spec.target_ref.name
        self.workloads.deploy(ns, name, {"containers": [{"name": name, "image": image}]})
        self.rollout.on_revision()

    def result(self) -> SimResult:
        """What happened, relative to the simulation start and the first canary request."""
        ev = self.mesh.events
        first = ev.first_canary_request
        decided = next((t for t, p in reversed(self.rollout.transitions) if p in FINISHED), None)
        phase = self.phase.value if self.phase else ""
        reason = ""
        if self.judge.last is not None and self.phase == Phase.FAILED:
            reason = "; ".join(self.judge.last.reasons)
        verdicts = list(self.judge.log)
        if self.judge.last is not None:
            verdicts.append(
                {"t": round(self.judge.last.at - self.started_at, 3), "final": self.judge.last.to_dict()}
            )
        return SimResult(
            phase=phase,
            decision_s=None if decided is None or first is None else decided - first,
            first_fault_s=None
            if ev.first_fault_request is None or first is None
            else ev.first_fault_request - first,
            weights=[(t - self.started_at, w) for t, w in self.rollout.weights],
            verdicts=verdicts,
            lines=self.lines,
            simulated_s=self.clock.now() - self.started_at,
            reason=reason,
        )


def build(
    canary: Canary,
    config: MeshConfig,
    *,
    seed: int = 0,
    clock: Clock | None = None,
    analyzer: AnalyzerFactory = default_analyzer,
    options: RolloutOptions | None = None,
    image: str = "ghcr.io/stefanprodan/podinfo:6.0.0",
) -> Simulation:
    """Wire mesh, aggregator, judge and scheduler for `canary` (not started)."""
    clock = clock or SimClock()
    agg = new_aggregator()
    target = target_of(canary)
    router = InMemoryRouter()
    workloads = InMemoryWorkloads(clock)
    workloads.deploy(canary.namespace, canary.spec.target_ref.name,
                     {"containers": [{"name": canary.spec.target_ref.name, "image": image}]})  # fmt: skip
    judge = StepRecorder(analyzer(canary, agg, target), t0=clock.now())
    # Our dwell may go below Flagger's 10 s floor: streaming makes a short step meaningful.
    rollout = Rollout(canary, router, workloads, clock, analyzer=judge,
                      options=options or RolloutOptions(min_interval_s=1.0))  # fmt: skip
    mesh = SimulatedMesh(mesh_for(canary, config), seed=seed)
    return Simulation(canary, mesh, clock, agg, router, workloads, rollout, judge, target, clock.now())


async def simulate(
    canary: Canary,
    config: MeshConfig,
    *,
    seed: int = 0,
    warmup_s: int = 30,
    max_s: float = 6 * 3600,
    analyzer: AnalyzerFactory = default_analyzer,
    options: RolloutOptions | None = None,
) -> SimResult:
    """One rollout of a new revision in simulated time: `warmup_s` of primary-only traffic (the
    judge's baseline), then the new revision, until Succeeded/Failed or `max_s`."""
    clock = SimClock()
    sim = build(canary, config, seed=seed, clock=clock, analyzer=analyzer, options=options)
    task = asyncio.create_task(sim.rollout.run())
    try:
        await advance_settled(clock, 0.0, sim.rollout)
        for _ in range(warmup_s):
            sim.emit()
            await advance_settled(clock, 1.0, sim.rollout)
        sim.deploy("ghcr.io/stefanprodan/podinfo:6.0.1")
        await advance_settled(clock, 0.0, sim.rollout)
        while sim.phase not in FINISHED and clock.now() - sim.started_at < max_s:
            if sim.phase not in PROMOTED:  # after promotion nothing reads the traffic any more
                sim.emit()
            await advance_settled(clock, 1.0, sim.rollout)
            if sim.judge_now() is not None:
                await sim.rollout.settle()
    finally:
        sim.rollout.stop()
        await task
    return sim.result()


def run_simulation(canary: Canary, config: MeshConfig, **kwargs: Any) -> SimResult:
    """`simulate` from synchronous code."""
    return asyncio.run(simulate(canary, config, **kwargs))


async def run_wall(
    sim: Simulation, *, until: Callable[[], bool], on_second: Callable[[], None] | None = None
) -> None:
    """Drive `sim` in wall time (its clock must be a WallClock): once per second, emit the second
    that just began, judge, and call `on_second`; the rollout's timers sleep for real."""
    assert isinstance(sim.clock, WallClock)
    while not until():
        sim.emit()
        next_second = int(time.time()) + 1
        await asyncio.sleep(max(0.0, next_second - time.time()))
        v = sim.judge_now()
        if v is not None and v.decision == Decision.FAIL:
            await sim.rollout.settle()
        if on_second is not None:
            on_second()
