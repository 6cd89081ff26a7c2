"""Istio: a VirtualService `<apex>` splitting traffic between DestinationRules `<apex>-primary` and
`<apex>-canary` (Flagger's pkg/router/istio.go semantics; objects in `networking.istio.io/v1`).

The builders are pure functions of the Canary and the Routes; `IstioRouter` does the API calls.
The VirtualService is the source of truth for the split: `get_routes` reads it back, `set_routes`
rewrites `spec.http` (or `spec.tcp`) with one merge patch, `reconcile` keeps the weights it finds."""

from __future__ import annotations

import copy

from kubernetes_asyncio.client import ApiClient

from canary_stream.router.apex_object import INITIAL, ApexObjectRouter
from canary_stream.router.base import Routes
from canary_stream.router.kube_common import (
    CustomResource,
    JsonObject,
    ServiceNames,
    flux_safe,
    service_names,
    upsert_spec,
)
from canary_stream.router.session import Cookies, cookie_regex, set_cookie, sticky
from canary_stream.spec.model import Canary

GROUP = "networking.istio.io"
DEFAULT_VERSION = "v1"
MESH_GATEWAY = "mesh"


def is_tcp(canary: Canary) -> bool:
    """`service.appProtocol: tcp` switches the VirtualService to `spec.tcp` routes."""
    return (canary.spec.service.app_protocol or "").lower() == "tcp"


def hosts_and_gateways(canary: Canary) -> tuple[list[str], list[str]]:
    """`spec.hosts` = service.hosts + the apex name (unless listed or `*`); `spec.gateways` =
    service.gateways or [mesh]. Delegation: both empty. Raises ValueError when delegation is combined
    with hosts or gateways (an Istio delegate cannot have them)."""
    svc = canary.spec.service
    apex = service_names(canary).apex
    if svc.delegation:
        if svc.hosts or svc.gateways:
            raise ValueError(
                "spec.service.delegation: a delegate VirtualService cannot have hosts or gateways"
            )
        return [], []
    hosts = list(svc.hosts)
    if apex not in hosts and "*" not in hosts:
        hosts.append(apex)
    gateways = list(svc.gateways) or [MESH_GATEWAY]
    return hosts, gateways


def destination(canary: Canary, host: str, weight: int) -> JsonObject:
    """A weighted destination; the port is set only with portDiscovery behind a non-mesh gateway or
    with delegation (several ports would otherwise be ambiguous there)."""
    svc = canary.spec.service
    dest: JsonObject = {"host": host}
    gateways = svc.gateways
    if svc.port_discovery and ((gateways and gateways[0] != MESH_GATEWAY) or svc.delegation):
        dest["port"] = {"number": svc.port}
    return {"destination": dest, "weight": weight}


def merge_match(analysis: list[JsonObject], service: list[JsonObject]) -> list[JsonObject]:
    """A/B conditions layered on the service matches (cross product): each analysis condition's
    headers / sourceLabels / queryParams replace those of a copy of each service match."""
    if not service:
        return [copy.deepcopy(m) for m in analysis]
    merged: list[JsonObject] = []
    for a in analysis:
        for s in service:
            m = copy.deepcopy(s)
            for key in ("headers", "sourceLabels", "queryParams"):
                if a.get(key):
                    m[key] = copy.deepcopy(a[key])
            merged.append(m)
    return merged


def _route_options(canary: Canary) -> JsonObject:
    # The pass-through fields every HTTP route carries (match is set per route).
    svc = canary.spec.service
    opts: JsonObject = {}
    if svc.rewrite is not None and (svc.rewrite.uri or svc.rewrite.authority):
        opts["rewrite"] = {
            k: v for k, v in (("uri", svc.rewrite.uri), ("authority", svc.rewrite.authority)) if v
        }
    if svc.timeout:
        opts["timeout"] = svc.timeout
    if svc.retries is not None:
        opts["retries"] = copy.deepcopy(svc.retries)
    if svc.cors_policy is not None:
        opts["corsPolicy"] = copy.deepcopy(svc.cors_policy)
    if svc.headers is not None:
        opts["headers"] = copy.deepcopy(svc.headers)
    return opts


def http_routes(canary: Canary, routes: Routes, cookies: Cookies | None = None) -> list[JsonObject]:
    """`spec.http` for the given split.
    - canary / blue-green: one route with service.match, primary and canary destinations, plus
      `mirror` (+ `mirrorPercentage` when a mirror weight is set) while mirrored;
    - A/B (analysis.match): route 0 = the A/B conditions x service.match with the split, route 1 =
      service.match to the primary alone (everyone without the header/cookie);
    - session affinity (analysis.sessionAffinity, canary strategy): sticky routes for `cookies`
      before the weighted route (`sticky_routes`)."""
    names = service_names(canary)
    svc = canary.spec.service
    analysis_match = canary.spec.analysis.match if canary.spec.analysis else []
    weighted: JsonObject = {}
    if svc.match:
        weighted["match"] = copy.deepcopy(svc.match)
    weighted.update(_route_options(canary))
    weighted["route"] = [
        destination(canary, names.primary, routes.primary_weight),
        destination(canary, names.canary, routes.canary_weight),
    ]
    if analysis_match:
        weighted["match"] = merge_match(analysis_match, svc.match)
        default: JsonObject = {}
        if svc.match:
            default["match"] = copy.deepcopy(svc.match)
        default.update(_route_options(canary))
        default["route"] = [destination(canary, names.primary, 100)]
        return [weighted, default]
    if routes.mirrored:
        weighted["mirror"] = {"host": names.canary}
        if routes.mirror_weight is not None and routes.mirror_weight > 0:
            weighted["mirrorPercentage"] = {"value": float(routes.mirror_weight)}
    affinity = canary.spec.analysis.session_affinity if canary.spec.analysis else None
    if affinity is not None and cookies is not None:
        return [*sticky_routes(canary, routes, cookies, weighted), weighted]
    return [weighted]


def _cookie_match(cookie: str) -> JsonObject:
    return {"headers": {"Cookie": {"regex": cookie_regex(cookie)}}}


def sticky_routes(canary: Canary, routes: Routes, cookies: Cookies, weighted: JsonObject) -> list[JsonObject]:
    """The routes before the weighted one. While the canary has weight: requests carrying the
    canary cookie go to the canary (0/100), those with the primary cookie to the primary, and the
    weighted route sets the cookie on the responses of each side (the primary's expires after one
    analysis interval). At weight 0: the previous cookie is matched and expired (`Max-Age=-1`)."""
    analysis = canary.spec.analysis
    assert analysis is not None and analysis.session_affinity is not None
    affinity = analysis.session_affinity
    names = service_names(canary)
    service_match = canary.spec.service.match
    out: list[JsonObject] = []
    if routes.canary_weight == 0:
        if cookies.previous:
            expire = copy.deepcopy(weighted)
            expire.pop("mirror", None)
            expire.pop("mirrorPercentage", None)
            expire["match"] = merge_match([_cookie_match(cookies.previous)], service_match)
            response = expire.setdefault("headers", {}).setdefault("response", {})
            response.setdefault("add", {})["Set-Cookie"] = f"{cookies.previous}; Max-Age=-1"
            out.append(expire)
        return out
    assert cookies.canary is not None
    by_host = {d["destination"]["host"]: d for d in weighted["route"]}
    by_host[names.canary]["headers"] = {
        "response": {"add": {"Set-Cookie": set_cookie(canary, cookies.canary, affinity.max_age)}}
    }
    sticky = {
        k: copy.deepcopy(v) for k, v in weighted.items() if k not in ("route", "mirror", "mirrorPercentage")
    }
    to_canary = {
        **copy.deepcopy(sticky),
        "match": merge_match([_cookie_match(cookies.canary)], service_match),
        "route": [destination(canary, names.primary, 0), destination(canary, names.canary, 100)],
    }
    out.append(to_canary)
    if affinity.primary_cookie_name and cookies.primary:
        by_host[names.primary]["headers"] = {
            "response": {
                "add": {"Set-Cookie": set_cookie(canary, cookies.primary, int(analysis.interval_seconds))}
            }
        }
        out.append(
            {
                **copy.deepcopy(sticky),
                "match": merge_match([_cookie_match(cookies.primary)], service_match),
                "route": [destination(canary, names.primary, 100), destination(canary, names.canary, 0)],
            }
        )
    return out


def _sticky(canary: Canary) -> bool:
    # Session affinity applies to weighted HTTP routing only (A/B and TCP routes have no cookies).
    return sticky(canary) and not is_tcp(canary)


def tcp_routes(canary: Canary, routes: Routes) -> list[JsonObject]:
    """`spec.tcp`: L4 port matches from service.match and the two weighted destinations."""
    names = service_names(canary)
    route: JsonObject = {}
    ports = [{"port": m["port"]} for m in canary.spec.service.match if "port" in m]
    if ports:
        route["match"] = ports
    route["route"] = [
        destination(canary, names.primary, routes.primary_weight),
        destination(canary, names.canary, routes.canary_weight),
    ]
    return [route]


def routes_patch(canary: Canary, routes: Routes, cookies: Cookies | None = None) -> JsonObject:
    """The merge patch `set_routes` sends: the whole route list (lists are replaced whole), and the
    session-affinity cookies when there are any."""
    if is_tcp(canary):
        return {"spec": {"tcp": tcp_routes(canary, routes)}}
    patch: JsonObject = {"spec": {"http": http_routes(canary, routes, cookies)}}
    if cookies is not None:
        patch["metadata"] = {"annotations": cookies.annotations()}
    return patch


def virtual_service_spec(
    canary: Canary, routes: Routes = INITIAL, cookies: Cookies | None = None
) -> JsonObject:
    """The VirtualService spec for `routes` (100/0 when created)."""
    hosts, gateways = hosts_and_gateways(canary)
    spec: JsonObject = {"hosts": hosts, "gateways": gateways}
    spec.update(routes_patch(canary, routes, cookies)["spec"])
    return spec


def destination_rule_spec(canary: Canary, host: str) -> JsonObject:
    """DestinationRule `<host>`: its own name as host, `service.trafficPolicy` as policy."""
    spec: JsonObject = {"host": host}
    if canary.spec.service.traffic_policy is not None:
        spec["trafficPolicy"] = copy.deepcopy(canary.spec.service.traffic_policy)
    return spec


def routes_from_virtual_service(vs: JsonObject, names: ServiceNames, tcp: bool = False) -> Routes:
    """Read the split back: the (last) route holding the canary host gives both weights; `mirror.host`
    = canary means mirrored, `mirrorPercentage.value` the mirror weight. LookupError when no route
    holds both hosts' weights (not ours, or edited by hand)."""
    spec = vs.get("spec") or {}
    chosen: JsonObject | None = None
    for route in spec.get("tcp" if tcp else "http") or []:
        if any(d.get("destination", {}).get("host") == names.canary for d in route.get("route") or []):
            chosen = route
    if chosen is None:
        raise LookupError(
            f"VirtualService {vs['metadata']['name']} has no route to {names.canary}; reconcile first"
        )
    weights = {d["destination"]["host"]: int(d.get("weight") or 0) for d in chosen.get("route") or []}
    primary, canary_w = weights.get(names.primary, 0), weights.get(names.canary, 0)
    if primary == 0 and canary_w == 0:
        raise LookupError(
            f"VirtualService {vs['metadata']['name']} does not route to {names.primary} and {names.canary}"
        )
    mirror = chosen.get("mirror") or {}
    mirrored = mirror.get("host") == names.canary
    mirror_weight: int | None = None
    if mirrored and chosen.get("mirrorPercentage") is not None:
        mirror_weight = round(float(chosen["mirrorPercentage"].get("value", 100.0)))
    return Routes(primary, canary_w, mirrored=mirrored, mirror_weight=mirror_weight)


class IstioRouter(ApexObjectRouter):
    """Implements `Router` with a VirtualService and two DestinationRules."""

    kind = "VirtualService"

    def __init__(self, api: ApiClient, version: str = DEFAULT_VERSION) -> None:
        self.virtual_services = CustomResource(api, GROUP, version, "virtualservices")
        self.destination_rules = CustomResource(api, GROUP, version, "destinationrules")
        super().__init__(self.virtual_services)

    def routes_of(self, obj: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        return routes_from_virtual_service(obj, names, is_tcp(canary))

    def spec_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        return virtual_service_spec(canary, routes, cookies)

    def patch_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        return routes_patch(canary, routes, cookies)

    def sticky(self, canary: Canary) -> bool:
        return _sticky(canary)

    async def reconcile(self, canary: Canary) -> None:
        """DestinationRules first (the VirtualService names their hosts), then the VirtualService with
        the weights and mirror it already has."""
        names = service_names(canary)
        for host in (names.canary, names.primary):
            existing = await self.destination_rules.get(canary.namespace, host)
            await upsert_spec(
                self.destination_rules,
                canary,
                "DestinationRule",
                host,
                destination_rule_spec(canary, host),
                {},
                flux_safe({}),
                existing,
            )
        await super().reconcile(canary)
