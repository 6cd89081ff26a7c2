"""Shared by the API tests: in-memory rollouts driven by the simulator in simulated time (real
aggregator, judge and scheduler), a Registry over them, and the API served by uvicorn on
127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from canary_stream.api import ApiConfig, create_app, serve
from canary_stream.api.notices import PublishingAnalyzer, watch
from canary_stream.clock import SimClock
from canary_stream.controller.phases import ANALYSING, Phase
from canary_stream.controller.scheduler import advance_settled
from canary_stream.registry import Registry, direct_commander
from canary_stream.sim.demo import demo_spec_path
from canary_stream.sim.engine import Simulation, build
from canary_stream.sim.mesh import MeshConfig
from canary_stream.spec.load import load_canary
from canary_stream.spec.model import Canary


def demo_canary(name: str = "podinfo", namespace: str = "test") -> Canary:
    """The demo's Canary (5 s dwell, 20/40/60 %), renamed."""
    c = load_canary(demo_spec_path())
    data = c.model_dump(by_alias=True, exclude_none=True)
    data["metadata"]["name"] = name
    data["metadata"]["namespace"] = namespace
    data["spec"]["targetRef"]["name"] = name
    return Canary.model_validate(data)


@dataclass
class Sims:
    """Simulated rollouts in one Registry (shared aggregator is not needed: each sim has its own;
    the registry holds the first one's)."""

    registry: Registry
    sims: dict[tuple[str, str], Simulation] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def sim(self, namespace: str = "test", name: str = "podinfo") -> Simulation:
        return self.sims[(namespace, name)]

    async def seconds(self, n: int, namespace: str = "test", name: str = "podinfo") -> None:
        """``n`` simulated seconds of traffic and judgement for one rollout."""
        s = self.sim(namespace, name)
        assert isinstance(s.clock, SimClock)
        for _ in range(n):
            s.emit()
            await advance_settled(s.clock, 1.0, s.rollout)
            if s.judge_now() is not None:
                await s.rollout.settle()

    async def close(self) -> None:
        for s in self.sims.values():
            s.rollout.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def add_sim(
    sims: Sims, canary: Canary, *, canary_error_rate: float = 0.005, progress: bool = True, rps: float = 400.0
) -> Simulation:
    """Add a simulated rollout to ``sims``: 30 s of primary-only traffic, then (``progress``) a new
    revision until the canary has traffic and a verdict."""
    mesh = MeshConfig(rps=rps, primary_error_rate=0.005, canary_error_rate=canary_error_rate)
    s = build(canary, mesh, seed=7, clock=SimClock())
    ns, name = canary.namespace, canary.name
    s.judge.inner = PublishingAnalyzer(s.judge.inner, sims.registry, ns, name)
    watch(sims.registry, ns, name, s.rollout)
    sims.sims[(ns, name)] = s
    if sims.registry.aggregator is None:
        sims.registry.aggregator = s.aggregator
    sims.tasks.append(asyncio.create_task(s.rollout.run()))
    assert isinstance(s.clock, SimClock)
    await advance_settled(s.clock, 0.0, s.rollout)
    await sims.seconds(30, ns, name)
    if progress:
        s.deploy("ghcr.io/stefanprodan/podinfo:6.0.1")
        await advance_settled(s.clock, 0.0, s.rollout)
        for _ in range(60):
            await sims.seconds(1, ns, name)
            if s.rollout.status.canary_weight > 0 and s.rollout.last_verdict is not None:
                break
            if s.rollout.status.phase == Phase.FAILED:  # a faulty canary can be judged that fast
                break
        assert s.rollout.status.phase in {*ANALYSING, Phase.FAILED}, s.rollout.status.phase
    return s


@contextlib.asynccontextmanager
async def served(registry: Registry, config: ApiConfig | None = None, **kw: Any) -> AsyncIterator[str]:
    """The API over ``registry`` on 127.0.0.1 (a free port); yields its base URL."""
    app = create_app(registry, config or ApiConfig(auth="none", **kw))
    ready = asyncio.Event()
    task = asyncio.create_task(serve(app, "127.0.0.1", 0, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield f"http://127.0.0.1:{app.state.port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def simulated(**kw: Any) -> AsyncIterator[Sims]:
    """One progressing rollout ``test/podinfo`` in a Registry with a direct commander."""
    registry = Registry()
    registry.commander = direct_commander(registry)
    sims = Sims(registry)
    try:
        await add_sim(sims, demo_canary(), **kw)
        yield sims
    finally:
        await sims.close()
