"""N Canaries progressing at once in one controller process against a real kube-apiserver + etcd
(issue 5's benchmark; Flagger degrades past about 70 concurrently triggered canaries, #638).

Setup: N podinfo Deployments and Canaries (interval BENCH_KUBE_INTERVAL, default 10 s, Flagger's
minimum; stepWeight 10, maxWeight 30), a fake kubelet making every Deployment ready, the in-memory
router (so the figures are the controller's own requests: workloads, status, events; a mesh
router adds its GET + PATCH per shift), a scripted passing analysis. All N are initialised, then
every target gets a new image at once, and the run ends when all N have Succeeded.

Measured: API requests during the rollouts by verb, per Canary and per step (a step = one
traffic shift), and analysis-step lateness = time between two weight steps of a Canary minus the
interval (how late a due step happens; the promotion, which waits for the primary's rollout, is
reported apart). The peer, in the same run and against the same server: Flagger's
per-tick polling pattern (every interval and for every Canary: GET the Canary, target, primary,
the apex/primary/canary Services and the router object, then PATCH the status: 8 requests).

BENCH_KUBE_CANARIES (default 20; the README figures use 1000). Figures are printed with `-s`."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "tests", ROOT / "infra"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from kube_apiserver import KubeCluster  # noqa: E402

from canary_stream.controller.kube_controller import ControllerConfig, KubeController  # noqa: E402
from canary_stream.controller.scheduler import RolloutOptions  # noqa: E402
from canary_stream.kube.rest import CONFIGMAPS, DEPLOYMENTS, SERVICES, Kube  # noqa: E402
from canary_stream.registry import Registry  # noqa: E402
from canary_stream.router.base import Routes  # noqa: E402
from canary_stream.router.memory import InMemoryRouter  # noqa: E402
from canary_stream.spec.model import Canary  # noqa: E402
from kube_controller_helpers import (  # noqa: E402
    CANARIES,
    FakeKubelet,
    ScriptedAnalyzer,
    canary_manifest,
    podinfo_deployment,
)

N = int(os.environ.get("BENCH_KUBE_CANARIES", "20"))
INTERVAL = float(os.environ.get("BENCH_KUBE_INTERVAL", "10"))
PARALLEL = 50  # concurrent setup requests

pytestmark = pytest.mark.kube


class TimedRouter(InMemoryRouter):
    """The in-memory router, remembering when each canary's weight was written."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, list[tuple[float, int]]] = {}

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        await super().set_routes(canary, routes)
        self.times.setdefault(canary.name, []).append((time.monotonic(), routes.canary_weight))


async def _bounded(coros: list[Any]) -> None:
    sem = asyncio.Semaphore(PARALLEL)

    async def one(c: Any) -> None:
        async with sem:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def _phases(admin: Kube, ns: str) -> dict[str, int]:
    doc = await admin.list(CANARIES, ns)
    out: dict[str, int] = {}
    for c in doc["items"]:
        phase = (c.get("status") or {}).get("phase", "")
        out[phase] = out.get(phase, 0) + 1
    return out


async def _wait_all(admin: Kube, ns: str, phase: str, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if (await _phases(admin, ns)).get(phase, 0) == N:
            return time.monotonic() - start
        await asyncio.sleep(1.0)
    raise AssertionError(f"not all {N} canaries reached {phase}: {await _phases(admin, ns)}")


async def _ours(cluster: KubeCluster, admin: Kube, ns: str) -> dict[str, Any]:
    name = lambda i: f"app{i:04d}"  # noqa: E731
    await _bounded([admin.create(DEPLOYMENTS, ns, podinfo_deployment(name(i), replicas=1)) for i in range(N)])
    analysis = {"interval": f"{INTERVAL:g}s", "threshold": 2, "maxWeight": 30, "stepWeight": 10}
    await _bounded(
        [admin.create(CANARIES, ns, canary_manifest(name(i), name(i), analysis=analysis)) for i in range(N)]
    )
    router = TimedRouter()
    api = cluster.api_client(cluster.controller_token)
    kube = Kube(api)
    controller = KubeController(
        kube,
        Registry(),
        ControllerConfig(
            namespaces=(ns,), options=RolloutOptions(min_interval_s=1.0, readiness_recheck_s=5.0)
        ),
        router_factory=lambda c, k: router,
        analyzer_factory=lambda c: ScriptedAnalyzer(),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        init_s = await _wait_all(admin, ns, "Initialized", 120 + N * 0.5)
        before = dict(kube.counts)
        t0 = time.monotonic()
        await _bounded([_set_image(admin, ns, name(i)) for i in range(N)])
        rollout_s = await _wait_all(admin, ns, "Succeeded", 300 + N * 1.0)
        wall = time.monotonic() - t0
        counts = {k: v - before.get(k, 0) for k, v in kube.counts.items() if v - before.get(k, 0)}
    finally:
        stop.set()
        await asyncio.wait_for(task, 120)
        await api.close()
    late: list[float] = []  # analysis steps: weight to weight, due one interval after the last
    promote: list[float] = []  # last step to all traffic back on the promoted primary
    shifts = 0
    for writes in router.times.values():
        shifts += len(writes)
        for (a, wa), (b, wb) in itertools.pairwise(writes):
            (late if wa and wb else promote).append(max(0.0, b - a - INTERVAL))
    total = sum(counts.values())
    return {
        "init_s": init_s,
        "rollout_s": rollout_s,
        "wall_s": wall,
        "requests": counts,
        "total": total,
        "per_canary": total / N,
        "shifts": shifts,
        "per_step": total / max(1, shifts),
        "late_p50": statistics.median(late) if late else 0.0,
        "late_p99": sorted(late)[int(0.99 * (len(late) - 1))] if late else 0.0,
        "promote_p50": statistics.median(promote) if promote else 0.0,
        "promote_p99": sorted(promote)[int(0.99 * (len(promote) - 1))] if promote else 0.0,
    }


async def _set_image(admin: Kube, ns: str, name: str) -> None:
    dep = await admin.get(DEPLOYMENTS, ns, name)
    assert dep is not None
    containers = dep["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    await admin.patch(DEPLOYMENTS, ns, name, {"spec": {"template": {"spec": {"containers": containers}}}})


async def _flagger_polling(cluster: KubeCluster, ns: str, ticks: int = 3) -> dict[str, Any]:
    """Flagger's per-tick requests for every Canary of `ns`, one task per Canary as Flagger has
    one goroutine each; `ticks` rounds. Returns requests per tick and the tick lateness."""
    api = cluster.api_client()  # Flagger's own (broader) RBAC
    kube = Kube(api)
    names = [c["metadata"]["name"] for c in (await kube.list(CANARIES, ns))["items"]]
    late: list[float] = []

    async def tick(name: str) -> None:
        await kube.get(CANARIES, ns, name)
        await kube.get(DEPLOYMENTS, ns, name)
        await kube.get(DEPLOYMENTS, ns, f"{name}-primary")
        for svc in (name, f"{name}-primary", f"{name}-canary"):
            await kube.get(SERVICES, ns, svc)
        await kube.get(CONFIGMAPS, ns, f"{name}-routes")  # the router object
        await kube.patch(CANARIES, ns, name, {"status": {"canaryWeight": 10}}, sub="status")

    async def job(name: str) -> None:
        due = time.monotonic()
        for _ in range(ticks):
            late.append(max(0.0, time.monotonic() - due))
            await tick(name)
            due += INTERVAL
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    try:
        await asyncio.gather(*(job(n) for n in names))
    finally:
        await api.close()
    total = sum(kube.counts.values())
    return {
        "per_tick": total / max(1, len(names) * ticks),
        "total": total,
        "late_p50": statistics.median(late),
        "late_p99": sorted(late)[int(0.99 * (len(late) - 1))],
    }


def test_bench_kube_controller_n_canaries(tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        with KubeCluster() as cluster:
            await cluster.apply_crds(sorted((ROOT / "deploy" / "crds").glob("*.yaml")))
            async with cluster.api_client() as admin_api:
                admin = Kube(admin_api)
                from kube_controller_helpers import apply_rbac

                await apply_rbac(admin, "canary-controller")
                ns = f"bench-{int(time.time())}"
                await admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
                async with FakeKubelet(admin, ns):
                    ours = await _ours(cluster, admin, ns)
                    peer = await _flagger_polling(cluster, ns)
        return ours, peer

    ours, peer = asyncio.run(main())
    print(f"\n{N} canaries, interval {INTERVAL:g}s, steps 10/20/30 then promotion (real kube-apiserver)")
    print(
        f"  ours: all Initialized in {ours['init_s']:.1f}s; all Succeeded {ours['rollout_s']:.1f}s after the "
        f"new images; requests {ours['requests']} = {ours['total']} ({ours['per_canary']:.1f} per canary, "
        f"{ours['per_step']:.2f} per traffic shift over {ours['shifts']} shifts); analysis-step lateness "
        f"p50 {ours['late_p50']:.2f}s p99 {ours['late_p99']:.2f}s; promotion (primary rollout) beyond one "
        f"interval p50 {ours['promote_p50']:.2f}s p99 {ours['promote_p99']:.2f}s"
    )
    print(
        f"  Flagger-style polling: {peer['per_tick']:.1f} requests per Canary per tick, tick lateness p50 "
        f"{peer['late_p50']:.2f}s p99 {peer['late_p99']:.2f}s"
    )
    # Ours shifts a step soon after it is due, and costs fewer requests per shift than a poll tick.
    assert ours["late_p50"] < INTERVAL
    assert ours["per_step"] < peer["per_tick"] * 2
