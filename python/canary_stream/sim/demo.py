"""`canary-stream demo`: two releases of podinfo in wall time over SIMULATED traffic — a healthy
one promoted, then a faulty one rolled back — with a live view of what the judge sees."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import replace
from importlib import resources
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from canary_stream import eventloop
from canary_stream.clock import WallClock
from canary_stream.controller.events import MemoryEventSink
from canary_stream.controller.phases import FINISHED
from canary_stream.controller.scheduler import RolloutOptions
from canary_stream.sim.engine import Simulation, build, run_wall
from canary_stream.sim.mesh import MeshConfig
from canary_stream.spec.load import load_canary

DEMO_SPEC = "podinfo-fast.yaml"
BANNER = "SIMULATED TRAFFIC: synthetic requests written as Istio access-log lines; no cluster is touched."


def demo_spec_path() -> str:
    """The demo's Canary (podinfo, 5 s dwell, steps 20/40/60 %), shipped with the package."""
    return str(resources.files("canary_stream.sim") / "specs" / DEMO_SPEC)


# (title, image, what the canary does); the faulty release fails 5 % of requests and is 2x slower.
RELEASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("healthy release 6.0.1", "ghcr.io/stefanprodan/podinfo:6.0.1", {}),
    ("faulty release 6.0.2 (5 % errors, 2x latency)", "ghcr.io/stefanprodan/podinfo:6.0.2",
     {"canary_error_rate": 0.05, "latency_factor": 2.0}),
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `demo` subcommand."""
    p = sub.add_parser(
        "demo",
        help="watch a healthy release promoted and a faulty one rolled back (simulated traffic, < 1 min)",
        description=BANNER,
    )
    p.add_argument("--rps", type=float, default=3000.0, help="total simulated request rate")
    p.add_argument("--no-live", action="store_true", help="plain text lines instead of a live view")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--api",
        metavar="[HOST:]PORT",
        type=host_port,
        help="serve the verdict API over the demo's rollout (host default 127.0.0.1)",
    )
    p.add_argument(
        "--api-token-file",
        metavar="FILE",
        help="bearer tokens for manual control, one per line (default: none needed on a loopback host)",
    )
    p.add_argument(
        "--api-linger", type=float, default=0.0, metavar="S", help="keep serving S seconds after the releases"
    )
    p.set_defaults(func=run)


def host_port(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:8080`` for IPv6) -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    """Run both releases; exit 0 when the healthy one succeeded and the faulty one failed."""
    console = Console()
    live = not args.no_live and console.is_terminal
    outcomes = eventloop.run(_demo(console, args.rps, args.seed, live, api=_api_options(args)))
    ok = outcomes == ["Succeeded", "Failed"]
    console.print(
        f"[bold]{'As expected' if ok else 'Unexpected outcome'}:[/] healthy -> {outcomes[0]}, "
        f"faulty -> {outcomes[1]}. The traffic was simulated."
    )
    return 0 if ok else 1


def _api_options(args: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(args, "api", None) is None:
        return None
    return {"address": args.api, "token_file": args.api_token_file, "linger": args.api_linger}


async def _demo(
    console: Console, rps: float, seed: int, live: bool, api: dict[str, Any] | None = None
) -> list[str]:
    canary = load_canary(demo_spec_path())
    events = MemoryEventSink()
    # 0.5 % errors on both versions (99.5 % success): enough events for the judge to conclude in a
    # 5 s step at this rate
    base = MeshConfig(rps=rps, primary_error_rate=0.005, canary_error_rate=0.005)
    sim = build(canary, base, seed=seed, clock=WallClock(),
                options=RolloutOptions(min_interval_s=1.0, finalise_delay_s=2.0))  # fmt: skip
    sim.rollout.events = events
    console.print(f"[bold yellow]{BANNER}[/]")
    server = (await _start_api(console, sim, api))[0] if api is not None else None
    task = asyncio.create_task(sim.rollout.run())
    outcomes: list[str] = []
    seen = 0
    try:
        await _wait_initialized(sim)
        for title, image, fault in RELEASES:
            sim.mesh.new_release(replace(sim.mesh.config, **fault))
            baseline_end = time.time() + 3  # primary-only traffic: the judge's latency baseline
            await run_wall(sim, until=lambda end=baseline_end: time.time() >= end)  # type: ignore[misc]
            sim.deploy(image)
            begun = time.time()

            def finished(begun: float = begun) -> bool:
                last = sim.rollout.transitions[-1] if sim.rollout.transitions else None
                return last is not None and last[0] >= begun and last[1] in FINISHED

            if live:
                with Live(_view(sim, title), console=console, refresh_per_second=4, transient=False) as view:
                    await run_wall(sim, until=finished, on_second=lambda t=title: view.update(_view(sim, t)))  # type: ignore[misc]
                    view.update(_view(sim, title))
            else:
                console.print(f"== {title}")

                def plain() -> None:
                    nonlocal seen
                    for e in events.events[seen:]:
                        console.print(f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} {e.message}")
                    seen = len(events.events)

                await run_wall(sim, until=finished, on_second=plain)
                plain()
            phase = sim.phase
            outcomes.append(phase.value if phase else "")
        if server is not None and api is not None and api["linger"] > 0:
            console.print(f"API still serving for {api['linger']:g} s")
            linger_end = time.time() + api["linger"]
            await run_wall(sim, until=lambda: time.time() >= linger_end)
    finally:
        sim.rollout.stop()
        await task
        if server is not None:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
    return outcomes


async def _start_api(
    console: Console, sim: Simulation, api: dict[str, Any]
) -> tuple[asyncio.Task[None], str]:
    """Serve the verdict API over the demo's rollout (in-memory registry, direct commander); the
    serving task and the base URL."""
    from canary_stream.api import ApiConfig, create_app, serve
    from canary_stream.api.config import AuthMode
    from canary_stream.api.notices import PublishingAnalyzer, watch
    from canary_stream.registry import Registry, direct_commander

    host, port = api["address"]
    registry = Registry(aggregator=sim.aggregator)
    registry.commander = direct_commander(registry)
    ns, name = sim.canary.namespace, sim.canary.name
    watch(registry, ns, name, sim.rollout)
    sim.judge.inner = PublishingAnalyzer(sim.judge.inner, registry, ns, name)
    loopback = host in ("127.0.0.1", "::1", "localhost")
    # Manual control without a token only on a loopback address; elsewhere a token file is needed.
    auth: AuthMode = "token-file" if api["token_file"] or not loopback else "none"
    config = ApiConfig(auth=auth, token_file=api["token_file"], ready_requires_sources=False)
    app = create_app(registry, config)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(app, host, port, ready=ready))
    await ready.wait()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{app.state.port}"
    console.print(f"verdict API on {url} (e.g. /api/v1/canaries/{ns}/{name}, /docs)")
    if auth == "token-file" and not api["token_file"]:
        console.print("manual control disabled: not a loopback address and no --api-token-file")
    return task, url


async def _wait_initialized(sim: Simulation) -> None:
    while sim.phase is None or sim.phase.value in ("Initializing",):
        await asyncio.sleep(0.05)


def _fmt(v: float | None, unit: str) -> str:
    return "-" if v is None else f"{v:.2f}{unit}" if unit == "%" else f"{v:.0f}{unit}"


def _view(sim: Simulation, title: str) -> Panel:
    """Phase, weights, per-version figures over the last 10 s, the judge's reasons, recent events."""
    routes = sim.routes
    head = Table.grid(padding=(0, 2))
    head.add_row("release", title)
    head.add_row("phase", Text(sim.phase.value if sim.phase else "-", style="bold"))
    bar = "#" * (routes.canary_weight // 2) + "." * ((100 - routes.canary_weight) // 2)
    head.add_row("weights", f"primary {routes.primary_weight}%  canary {routes.canary_weight}%  [{bar}]")

    figures = Table(title="last 10 s (simulated traffic)", expand=False)
    for col in ("version", "requests", "success rate", "p99"):
        figures.add_column(col, justify="right")
    now_ms = int(sim.clock.now()) * 1000
    for s in sorted(sim.aggregator.snapshot(10, end_ms=now_ms, target=sim.target), key=lambda s: s.version):
        figures.add_row(s.version, f"{s.requests:,}", _fmt(s.success_rate, "%"), _fmt(s.p99_ms, " ms"))

    judge = Text()
    v = sim.judge.last
    if v is not None:
        judge.append(f"judge: {v.decision.value}\n", style="bold")
        for r in v.reasons[:4]:
            judge.append(f"  - {r}\n")
    log = Text()
    for e in list(getattr(sim.rollout.events, "events", []))[-5:]:
        log.append(f"{time.strftime('%H:%M:%S', time.localtime(e.at))} {e.message}\n")
    return Panel(Group(head, figures, judge, log), title="canary-stream demo", subtitle=BANNER)
