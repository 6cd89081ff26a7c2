"""Pick the Router for a Canary from `spec.provider` (default: the controller's `--mesh-provider`, as
Flagger's `-mesh-provider`), composed like Flagger: the Kubernetes Services are reconciled first,
then the mesh object that splits traffic between `-primary` and `-canary`."""

from __future__ import annotations

import json
from collections.abc import Sequence

from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from canary_stream.router.base import Router, Routes
from canary_stream.router.gateway_api import GatewayAPIRouter
from canary_stream.router.istio import IstioRouter
from canary_stream.router.kube_common import MERGE_PATCH_OPTIONS, check_routes, service_names
from canary_stream.router.kubernetes import DEFAULT_SELECTOR_LABELS, ServiceRouter
from canary_stream.router.nginx import NginxRouter, ingress_name
from canary_stream.router.smi import SmiRouter
from canary_stream.spec.model import Canary

DEFAULT_MESH_PROVIDER = "istio"
# provider -> what routes the traffic; every one is served by the CRDs in shared/crds except
# smi:v1alpha3 (same object shape, integer weights).
SUPPORTED_PROVIDERS = (
    "istio",
    "linkerd",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "osm",
    "nginx",
    "kubernetes",
)
_MIRRORING_PROVIDERS = ("istio", "gatewayapi:v1", "gatewayapi:v1beta1")
ROUTES_ANNOTATION = "canary-stream.dev/routes"


class ServiceRoutesRouter:
    """`provider: kubernetes` (Flagger's NopRouter): no mesh, so nothing splits traffic; blue/green
    only, the apex always selects the primary. The engine's last decision is kept as an annotation
    on the apex Service so `get_routes` survives a controller restart."""

    def __init__(self, api: ApiClient) -> None:
        self.core = CoreV1Api(api)

    async def reconcile(self, canary: Canary) -> None:
        """Nothing to create beyond the Services."""

    async def get_routes(self, canary: Canary) -> Routes:
        """The recorded decision (100/0 until one is recorded)."""
        apex = service_names(canary).apex
        try:
            svc = await self.core.read_namespaced_service(apex, canary.namespace)
        except ApiException as e:
            if e.status == 404:
                raise LookupError(f"Service {apex}.{canary.namespace} not found; reconcile first") from e
            raise
        raw = (svc.metadata.annotations or {}).get(ROUTES_ANNOTATION)
        if raw is None:
            return Routes(100, 0)
        data = json.loads(raw)
        return Routes(int(data["primary"]), int(data["canary"]))

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        """Record the decision (one merge patch)."""
        check_routes(routes)
        value = json.dumps({"primary": routes.primary_weight, "canary": routes.canary_weight})
        await self.core.patch_namespaced_service(
            service_names(canary).apex,
            canary.namespace,
            {"metadata": {"annotations": {ROUTES_ANNOTATION: value}}},
            **MERGE_PATCH_OPTIONS,
        )

    async def finalize(self, canary: Canary) -> None:
        """Nothing routes, so nothing to revert."""


class KubernetesRouter:
    """Implements `Router`: the Services (`ServiceRouter`) then the mesh router; reads and writes of
    the split go to the mesh router."""

    def __init__(self, services: ServiceRouter, mesh: Router) -> None:
        self.services = services
        self.mesh = mesh

    async def initialize(self, canary: Canary) -> None:
        """The `-primary` / `-canary` Services only (before the primary workload is ready)."""
        await self.services.initialize(canary)

    async def reconcile(self, canary: Canary) -> None:
        """Services first (the mesh objects name them), then the mesh object."""
        await self.services.reconcile(canary)
        await self.mesh.reconcile(canary)

    async def get_routes(self, canary: Canary) -> Routes:
        """The mesh object's split."""
        return await self.mesh.get_routes(canary)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        """Write the split to the mesh object."""
        await self.mesh.set_routes(canary, routes)

    async def finalize(self, canary: Canary) -> None:
        """Apex Service selector first, then the mesh object (Flagger's order)."""
        await self.services.finalize(canary)
        await self.mesh.finalize(canary)


def provider_of(canary: Canary, mesh_provider: str = DEFAULT_MESH_PROVIDER) -> str:
    """`spec.provider`, else the controller default."""
    return canary.spec.provider or mesh_provider


def mesh_router_for(provider: str, api: ApiClient, field: str = "spec.provider") -> Router:
    """The traffic-splitting router for one provider name; ValueError naming `field` if unsupported."""
    if provider == "istio":
        return IstioRouter(api)
    if provider in ("gatewayapi:v1", "gatewayapi:v1beta1"):
        return GatewayAPIRouter(api, version=provider.split(":", 1)[1])
    if provider in ("linkerd", "smi:v1alpha1"):
        return SmiRouter(api, version="v1alpha1")
    if provider in ("smi:v1alpha2", "osm"):
        return SmiRouter(api, version="v1alpha2")
    if provider == "smi:v1alpha3":
        return SmiRouter(api, version="v1alpha3")
    if provider == "nginx":
        return NginxRouter(api)
    if provider == "kubernetes":
        return ServiceRoutesRouter(api)
    raise ValueError(
        f"{field}: provider {provider!r} is not supported (supported: {', '.join(SUPPORTED_PROVIDERS)})"
    )


def router_for(
    canary: Canary,
    api: ApiClient,
    *,
    mesh_provider: str = DEFAULT_MESH_PROVIDER,
    selector_labels: Sequence[str] = DEFAULT_SELECTOR_LABELS,
) -> KubernetesRouter:
    """The Router for `canary`: ServiceRouter + the mesh router of `spec.provider` (or
    `mesh_provider`). ValueError naming the field for an unsupported provider, and for
    `analysis.mirror` with a provider that cannot mirror."""
    field = "spec.provider" if canary.spec.provider else "--mesh-provider"
    provider = provider_of(canary, mesh_provider)
    mesh = mesh_router_for(provider, api, field)
    analysis = canary.spec.analysis
    if analysis is not None and analysis.mirror and provider not in _MIRRORING_PROVIDERS:
        raise ValueError(
            f"spec.analysis.mirror: provider {provider!r} cannot mirror traffic (istio or gatewayapi can)"
        )
    if provider == "nginx":
        ingress_name(canary)  # ValueError naming spec.ingressRef when it is missing
    return KubernetesRouter(ServiceRouter(api, selector_labels), mesh)
