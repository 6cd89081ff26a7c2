"""The engine's scheduler driving the Kubernetes routers on a real kube-apiserver: every split the
rollout writes is read back from the VirtualService / HTTPRoute / TrafficSplit, in simulated time
(workloads in memory: there is no kubelet; the routers and their objects are real)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client import ApiClient

from canary_stream.clock import SimClock
from canary_stream.controller.events import MemoryEventSink
from canary_stream.controller.phases import Phase
from canary_stream.controller.scheduler import Rollout, advance_settled
from canary_stream.router.base import Routes
from canary_stream.router.factory import KubernetesRouter, router_for
from canary_stream.spec.model import Canary
from canary_stream.workload.memory import InMemoryWorkloads
from test_routers_kube import (
    COOKIE_MATCH,
    INGRESS_REF,
    create_canary,
    create_ingress,
    deploy_target,
    http_route,
    ingress_of,
    vs,
)
from test_scheduler import ScriptedAnalyzer

pytestmark = pytest.mark.kube


class ReadBackRouter:
    """The real router; after every write, the split as the object in the API server has it."""

    def __init__(self, inner: KubernetesRouter) -> None:
        self.inner = inner
        self.read_back: list[Routes] = []

    async def reconcile(self, canary: Canary) -> None:
        await self.inner.reconcile(canary)

    async def get_routes(self, canary: Canary) -> Routes:
        return await self.inner.get_routes(canary)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        await self.inner.set_routes(canary, routes)
        self.read_back.append(await self.inner.get_routes(canary))

    async def finalize(self, canary: Canary) -> None:
        await self.inner.finalize(canary)


async def roll_out(api: ApiClient, canary: Canary) -> tuple[ReadBackRouter, Rollout]:
    """Initialise, release a new revision, run to Succeeded (simulated time)."""
    clock = SimClock()
    workloads = InMemoryWorkloads(clock)
    workloads.deploy(canary.namespace, "podinfo", {"image": "podinfo:1"}, replicas=2)
    router = ReadBackRouter(router_for(canary, api))
    rollout = Rollout(canary, router, workloads, clock, analyzer=ScriptedAnalyzer(), events=MemoryEventSink())
    task = asyncio.create_task(rollout.run())
    try:
        await until(clock, rollout, Phase.INITIALIZED)
        workloads.deploy(canary.namespace, "podinfo", {"image": "podinfo:2"})
        rollout.on_revision()
        await until(clock, rollout, Phase.SUCCEEDED)
    finally:
        rollout.stop()
        await task
    return router, rollout


async def until(clock: SimClock, rollout: Rollout, phase: Phase, limit: float = 3600.0) -> None:
    start = clock.now()
    while rollout.status.phase != phase:
        assert clock.now() - start < limit, f"stuck in {rollout.status.phase}"
        await advance_settled(clock, 10.0, rollout)


def weights(routes: list[Routes]) -> list[tuple[int, bool]]:
    return [(r.canary_weight, r.mirrored) for r in routes]


async def test_istio_canary_weights_then_promotion(kube_api: ApiClient, kube_namespace: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    canary = await create_canary(kube_api, kube_namespace, analysis={"stepWeight": 10, "maxWeight": 30})
    router, rollout = await roll_out(kube_api, canary)
    assert weights(router.read_back) == [(10, False), (20, False), (30, False), (0, False)]
    assert rollout.status.phase == Phase.SUCCEEDED
    route = (await vs(kube_api, kube_namespace))["spec"]["http"][0]["route"]
    assert [d["weight"] for d in route] == [100, 0]


async def test_istio_ab_cookie_rollout(kube_api: ApiClient, kube_namespace: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    canary = await create_canary(
        kube_api, kube_namespace, analysis={"iterations": 2, "match": [COOKIE_MATCH]}
    )
    router, _ = await roll_out(kube_api, canary)
    assert weights(router.read_back) == [(100, False), (0, False)]
    ab, default = (await vs(kube_api, kube_namespace))["spec"]["http"]
    assert ab["match"] == [COOKIE_MATCH]
    assert [d["destination"]["host"] for d in default["route"]] == ["podinfo-primary"]


async def test_gateway_api_blue_green_with_mirror_rollout(kube_api: ApiClient, kube_namespace: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    canary = await create_canary(
        kube_api,
        kube_namespace,
        {"gatewayRefs": [{"name": "public", "namespace": "gw"}]},
        analysis={"iterations": 2, "mirror": True, "mirrorWeight": 40},
        provider="gatewayapi:v1",
    )
    router, _ = await roll_out(kube_api, canary)
    assert router.read_back[0] == Routes(100, 0, mirrored=True, mirror_weight=40)
    assert weights(router.read_back)[-2:] == [(100, False), (0, False)]  # all to canary, then primary
    (rule,) = (await http_route(kube_api, kube_namespace))["spec"]["rules"]
    assert "filters" not in rule  # the mirror is gone after promotion


@pytest.mark.parametrize("provider", ["linkerd"])
async def test_smi_canary_rollout(kube_api: ApiClient, kube_namespace: str, provider: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    canary = await create_canary(
        kube_api, kube_namespace, analysis={"stepWeights": [5, 50]}, provider=provider
    )
    router, _ = await roll_out(kube_api, canary)
    assert weights(router.read_back) == [(5, False), (50, False), (0, False)]


async def test_nginx_canary_weights_then_promotion(kube_api: ApiClient, kube_namespace: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    await create_ingress(kube_api, kube_namespace, [("/", "podinfo")])
    canary = await create_canary(
        kube_api,
        kube_namespace,
        analysis={"stepWeight": 20, "maxWeight": 40},
        provider="nginx",
        ingressRef=INGRESS_REF,
    )
    router, _ = await roll_out(kube_api, canary)
    assert weights(router.read_back) == [(20, False), (40, False), (0, False)]


async def test_nginx_ab_header_rollout(kube_api: ApiClient, kube_namespace: str) -> None:
    await deploy_target(kube_api, kube_namespace)
    await create_ingress(kube_api, kube_namespace, [("/", "podinfo")])
    match = [{"headers": {"x-canary": {"exact": "insider"}}}]
    canary = await create_canary(
        kube_api,
        kube_namespace,
        analysis={"iterations": 2, "match": match},
        provider="nginx",
        ingressRef=INGRESS_REF,
    )
    router, _ = await roll_out(kube_api, canary)
    assert weights(router.read_back) == [(100, False), (0, False)]
    notes = (await ingress_of(kube_api, kube_namespace, "podinfo-canary"))["metadata"]["annotations"]
    assert not [k for k in notes if "canary-by-header" in k]  # conditions gone after promotion
