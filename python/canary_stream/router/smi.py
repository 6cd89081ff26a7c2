"""SMI TrafficSplit `<apex>` (Linkerd's SMI extension; Flagger's pkg/router/smi*.go semantics):
backends `<apex>-canary` and `<apex>-primary` with weights. `split.smi-spec.io/v1alpha1` (what Flagger
writes for `provider: linkerd`; the storage version of linkerd-smi's CRD) takes Kubernetes quantities,
v1alpha2 (`smi:v1alpha2`, OSM) plain numbers; integers are valid for both. No A/B, no mirroring."""

from __future__ import annotations

import re
from decimal import Decimal

from kubernetes_asyncio.client import ApiClient

from canary_stream.router.apex_object import INITIAL, ApexObjectRouter
from canary_stream.router.base import Routes
from canary_stream.router.kube_common import (
    CustomResource,
    JsonObject,
    ServiceNames,
    flux_safe,
    service_names,
)
from canary_stream.router.session import Cookies
from canary_stream.spec.model import Canary

GROUP = "split.smi-spec.io"
DEFAULT_VERSION = "v1alpha1"
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(m|k|)$")


def split_host(canary: Canary) -> str:
    """`spec.service`: the first of `service.hosts`, else the apex Service."""
    hosts = canary.spec.service.hosts
    return hosts[0] if hosts else service_names(canary).apex


def backends(names: ServiceNames, routes: Routes) -> list[JsonObject]:
    """Canary first, then primary, as Flagger writes them."""
    return [
        {"service": names.canary, "weight": routes.canary_weight},
        {"service": names.primary, "weight": routes.primary_weight},
    ]


def traffic_split_spec(canary: Canary, routes: Routes = INITIAL) -> JsonObject:
    """The TrafficSplit spec for `routes`."""
    return {"service": split_host(canary), "backends": backends(service_names(canary), routes)}


def parse_weight(value: object) -> int:
    """A backend weight: an integer, a float, or a quantity string ("100", "500m", "1k")."""
    if isinstance(value, bool):
        raise ValueError(f"weight {value!r} is not a number")
    if isinstance(value, int | float):
        return round(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"weight {value!r} is not a quantity this router understands")
    scale = {"m": Decimal("0.001"), "k": Decimal(1000), "": Decimal(1)}[m.group(2)]
    return round(Decimal(m.group(1)) * scale)


def routes_from_traffic_split(ts: JsonObject, names: ServiceNames) -> Routes:
    """The split read back from the backends; LookupError when neither service has weight."""
    weights = {
        b.get("service"): parse_weight(b.get("weight", 0))
        for b in (ts.get("spec") or {}).get("backends") or []
    }
    primary, canary_w = weights.get(names.primary, 0), weights.get(names.canary, 0)
    if primary == 0 and canary_w == 0:
        raise LookupError(
            f"TrafficSplit {ts['metadata']['name']} has no weights for {names.primary} and {names.canary}"
        )
    return Routes(primary, canary_w)


class SmiRouter(ApexObjectRouter):
    """Implements `Router` with one TrafficSplit (no session affinity, no mirroring)."""

    kind = "TrafficSplit"

    def __init__(self, api: ApiClient, version: str = DEFAULT_VERSION) -> None:
        self.traffic_splits = CustomResource(api, GROUP, version, "trafficsplits")
        super().__init__(self.traffic_splits)

    def routes_of(self, obj: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        return routes_from_traffic_split(obj, names)

    def spec_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        return traffic_split_spec(canary, routes)

    def patch_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        """The backends only."""
        return {"spec": {"backends": backends(service_names(canary), routes)}}

    def sticky(self, canary: Canary) -> bool:
        return False  # a TrafficSplit has no header matches to pin a session with

    def metadata(self, canary: Canary) -> tuple[dict[str, str], dict[str, str]]:
        return {}, flux_safe({})

    def check(self, routes: Routes) -> None:
        """SMI cannot mirror: a mirrored split is refused."""
        super().check(routes)
        if routes.mirrored:
            raise ValueError(
                "SMI TrafficSplit cannot mirror traffic (spec.analysis.mirror needs Istio or Gateway API)"
            )
