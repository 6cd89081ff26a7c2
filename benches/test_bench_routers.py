"""Router writes against a real kube-apiserver: API requests and wall time per `set_routes`, ours
(one JSON merge patch of the route list, no read) against Flagger's read-modify-write (GET the
object, replace the route list, PUT it back), in the same run, on the same objects.

A real kube-apiserver + etcd (infra/kube_apiserver.py) with the upstream CRDs runs for the module.
N Canaries (`BENCH_ROUTER_CANARIES`, default 50; 5 under `make test`) are reconciled per provider
(Istio VirtualService, Gateway API HTTPRoute, SMI TrafficSplit). One round moves all N splits one
step (10 -> 20 -> ...), either all at once (`concurrent`: N canaries advancing on the same tick) or
one after the other (`serial`: the latency of one call). Requests are counted at the HTTP layer of
the client (every request the router makes). Run with ``-s`` to see the figures."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from canary_stream.router.base import Router, Routes
from canary_stream.router.factory import router_for
from canary_stream.router.gateway_api import http_route_spec
from canary_stream.router.istio import routes_patch
from canary_stream.router.kube_common import CustomResource, ServiceNames
from canary_stream.router.smi import backends
from canary_stream.spec.model import Canary

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "infra"))
from kube_apiserver import KubeCluster  # noqa: E402

# `make test` sets BENCH_LINES=20000 for a quick pass: 5 canaries, 2 rounds; `make bench`: 50 and 5
_SCALE = int(os.environ.get("BENCH_LINES", "200000"))
CANARIES = int(os.environ.get("BENCH_ROUTER_CANARIES", str(max(5, _SCALE // 4000))))
ROUNDS = int(os.environ.get("BENCH_ROUTER_ROUNDS", str(max(2, _SCALE // 40000))))
NAMESPACE = "bench"

pytestmark = pytest.mark.kube

PROVIDERS = {
    "istio": ("networking.istio.io", "v1", "virtualservices"),
    "gatewayapi:v1": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "linkerd": ("split.smi-spec.io", "v1alpha1", "trafficsplits"),
}


class CountingApiClient(client.ApiClient):  # type: ignore[misc]
    """Counts every HTTP request by method."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: Counter[str] = Counter()

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.requests[method] += 1
        return super().request(method, url, *args, **kwargs)


class FlaggerStyle:
    """Flagger's SetRoutes: GET the routing object, replace its routes, PUT it back (409 on a race)."""

    def __init__(self, api: client.ApiClient, provider: str) -> None:
        group, version, plural = PROVIDERS[provider]
        self.resource = CustomResource(api, group, version, plural)
        self.provider = provider

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        name = canary.spec.service.name or canary.spec.target_ref.name
        obj = await self.resource.get(canary.namespace, name)
        assert obj is not None
        if self.provider == "istio":
            obj["spec"].update(routes_patch(canary, routes)["spec"])
        elif self.provider == "linkerd":
            obj["spec"]["backends"] = backends(_names(name), routes)
        else:
            obj["spec"] = http_route_spec(canary, routes)
        await self.resource.replace(canary.namespace, obj)


def _names(apex: str) -> ServiceNames:
    return ServiceNames(apex, f"{apex}-primary", f"{apex}-canary")


def make_canary(i: int, provider: str, uid: str) -> Canary:
    service: dict[str, Any] = {"port": 9898}
    if provider.startswith("gatewayapi"):
        service["gatewayRefs"] = [{"name": "public", "namespace": "gateways"}]
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": f"app{i}", "namespace": NAMESPACE, "uid": uid},
            "spec": {
                "provider": provider,
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"app{i}"},
                "service": service,
                "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10},
            },
        }
    )


class Bench:
    """The cluster, one event loop and one counting client for the module."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.loop = asyncio.new_event_loop()
        self.api = self.run(self._client())
        self.canaries: dict[str, list[Canary]] = {}

    async def _client(self) -> CountingApiClient:
        # aiohttp binds its connector to the running loop: create the client inside it
        return CountingApiClient(configuration=self.cluster.client_configuration())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def setup(self) -> None:
        await self.cluster.apply_crds(sorted((ROOT / "tests" / "crds" / "upstream").rglob("*.yaml")))
        core, apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        await core.create_namespace({"metadata": {"name": NAMESPACE}})
        for i in range(CANARIES):
            await apps.create_namespaced_deployment(
                NAMESPACE,
                {
                    "metadata": {"name": f"app{i}"},
                    "spec": {
                        "selector": {"matchLabels": {"app": f"app{i}"}},
                        "template": {
                            "metadata": {"labels": {"app": f"app{i}"}},
                            "spec": {"containers": [{"name": "app", "image": "podinfo"}]},
                        },
                    },
                },
            )
        for provider in PROVIDERS:
            # one apex per canary and provider would collide: each provider's canaries differ only
            # in their mesh object, the Services are shared (the same names, reconciled idempotently)
            canaries = [
                make_canary(i, provider, f"00000000-0000-0000-0000-{i:012d}") for i in range(CANARIES)
            ]
            for c in canaries:
                await router_for(c, self.api).reconcile(c)
            self.canaries[provider] = canaries


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with KubeCluster() as cluster:
        b = Bench(cluster)
        b.run(b.setup())
        try:
            yield b
        finally:
            b.run(b.api.close())
            b.loop.close()


def _step_rounds(
    b: Bench, provider: str, router: Router | FlaggerStyle, mode: str
) -> tuple[float, Counter[str]]:
    canaries = b.canaries[provider]
    state = {"weight": 0}

    async def one_round() -> None:
        state["weight"] = state["weight"] % 100 + 10
        w = state["weight"]
        if mode == "concurrent":
            await asyncio.gather(*(router.set_routes(c, Routes(100 - w, w)) for c in canaries))
        else:
            for c in canaries:
                await router.set_routes(c, Routes(100 - w, w))

    b.api.requests.clear()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        b.run(one_round())
    elapsed = time.perf_counter() - started
    requests = Counter(b.api.requests)
    # every object holds the last weight written: the writes were real
    last = state["weight"]
    for c in (canaries[0], canaries[-1]):
        assert b.run(router_for(c, b.api).get_routes(c)) == Routes(100 - last, last)
    return elapsed, requests


@pytest.mark.parametrize("mode", ["concurrent", "serial"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("style", ["ours", "flagger"])
def test_set_routes(benchmark: Any, bench: Bench, provider: str, style: str, mode: str) -> None:
    """concurrent: all N writes of a step at once (throughput); serial: one after the other (the
    latency of one set_routes, round trips included)."""
    benchmark.group = f"router-{provider}-{mode}"
    router: Router | FlaggerStyle = (
        router_for(bench.canaries[provider][0], bench.api)
        if style == "ours"
        else FlaggerStyle(bench.api, provider)
    )
    results: list[tuple[float, Counter[str]]] = []

    def run() -> None:
        results.append(_step_rounds(bench, provider, router, mode))

    benchmark.pedantic(run, rounds=1, iterations=1)
    elapsed, requests = results[-1]
    writes = CANARIES * ROUNDS
    per_write = sum(requests.values()) / writes
    benchmark.extra_info.update(
        {
            "requests_per_set_routes": per_write,
            "ms_per_step_of_all": elapsed / ROUNDS * 1e3,
            "ms_per_set_routes": elapsed / writes * 1e3,
            "canaries": CANARIES,
        }
    )
    print(
        f"\n{provider:<14} {style:<8} {mode:<10} {per_write:.2f} requests/set_routes "
        f"({dict(requests)}), {elapsed / ROUNDS * 1e3:.1f} ms per step of {CANARIES}, "
        f"{elapsed / writes * 1e3:.2f} ms per set_routes"
    )


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_reconcile_converged(benchmark: Any, bench: Bench, provider: str) -> None:
    """Requests of one reconcile of an object set that is already as the spec wants (reads only:
    the target, three Services, the mesh object(s)); a write here would be a bug."""
    benchmark.group = f"router-reconcile-{provider}"
    canaries = bench.canaries[provider]

    async def all_canaries() -> None:
        await asyncio.gather(*(router_for(c, bench.api).reconcile(c) for c in canaries))

    def run() -> None:
        bench.api.requests.clear()
        bench.run(all_canaries())

    benchmark.pedantic(run, rounds=1, iterations=1)
    requests = Counter(bench.api.requests)
    assert set(requests) == {"GET"}, f"a converged reconcile wrote: {dict(requests)}"
    per = requests["GET"] / CANARIES
    benchmark.extra_info.update({"requests_per_reconcile": per, "canaries": CANARIES})
    print(f"\n{provider:<14} reconcile (converged): {per:.0f} GETs per canary, no write")
