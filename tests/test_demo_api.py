"""`canary-stream demo --api`: the API served over the demo's in-memory rollout (wall clock),
answering reads and acting on manual commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import httpx
import pytest
from rich.console import Console

from canary_stream.clock import WallClock
from canary_stream.controller.events import MemoryEventSink
from canary_stream.controller.phases import Phase
from canary_stream.controller.scheduler import RolloutOptions
from canary_stream.sim.demo import _start_api, demo_spec_path, host_port
from canary_stream.sim.engine import build, run_wall
from canary_stream.sim.mesh import MeshConfig
from canary_stream.spec.load import load_canary


def test_host_port() -> None:
    assert host_port("8080") == ("127.0.0.1", 8080)
    assert host_port("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert host_port("[::1]:9000") == ("::1", 9000)
    assert host_port(":0") == ("127.0.0.1", 0)
    for bad in ("x", "host:", "1:99999", "a:b"):
        with pytest.raises(argparse.ArgumentTypeError):
            host_port(bad)


async def test_demo_serves_its_rollout() -> None:
    canary = load_canary(demo_spec_path())
    sim = build(canary, MeshConfig(rps=300), seed=1, clock=WallClock(),
                options=RolloutOptions(min_interval_s=1.0, finalise_delay_s=2.0))  # fmt: skip
    sim.rollout.events = MemoryEventSink()
    console = Console(quiet=True)
    options = {"address": ("127.0.0.1", 0), "token_file": None, "linger": 0}
    server, url = await _start_api(console, sim, options)
    task = asyncio.create_task(sim.rollout.run())
    try:
        while sim.phase in (None, Phase.INITIALIZING):
            await asyncio.sleep(0.05)
        end = time.time() + 3
        await run_wall(sim, until=lambda: time.time() >= end)
        sim.deploy("ghcr.io/stefanprodan/podinfo:6.0.1")
        await run_wall(sim, until=lambda: sim.rollout.status.canary_weight > 0)
        await run_wall(sim, until=lambda: sim.rollout.last_verdict is not None)
        async with httpx.AsyncClient(base_url=url) as c:
            d = (await c.get("/api/v1/canaries/test/podinfo")).json()
            assert d["phase"] == "Progressing" and d["canary_weight"] == sim.rollout.status.canary_weight
            assert d["verdict"] is not None
            live = (await c.get("/api/v1/canaries/test/podinfo/metrics?window=5s")).json()
            assert {v["version"] for v in live["versions"]} == {"primary", "canary"}
            assert (await c.post("/api/v1/canaries/test/podinfo/abort")).status_code == 202
            await sim.rollout.settle()
            assert sim.rollout.status.phase == Phase.FAILED
    finally:
        sim.rollout.stop()
        await task
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
