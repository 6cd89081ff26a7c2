"""Gateway API: an HTTPRoute `<apex>` with weighted backendRefs to `<apex>-primary` / `<apex>-canary`
(Flagger's pkg/router/gateway_api.go semantics). Parents come from `service.gatewayRefs`: a Gateway
for ingress traffic, or the apex Service itself for mesh traffic (GAMMA, as Linkerd implements it).

Builders are pure; `GatewayAPIRouter` does the API calls (`gatewayapi:v1` or `gatewayapi:v1beta1`)."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes_asyncio.client import ApiClient

from canary_stream.router.apex_object import INITIAL, ApexObjectRouter
from canary_stream.router.base import Routes
from canary_stream.router.kube_common import (
    CustomResource,
    JsonObject,
    RouterNotReady,
    ServiceNames,
    service_names,
)
from canary_stream.router.session import Cookies, cookie_regex, set_cookie, sticky
from canary_stream.spec.duration import parse_duration
from canary_stream.spec.model import Canary

GROUP = "gateway.networking.k8s.io"
DEFAULT_VERSION = "v1"
_DEFAULT_MATCH: JsonObject = {"path": {"type": "PathPrefix", "value": "/"}}


def _string_match(field: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, str]:
    # Istio StringMatch {exact|prefix|regex} -> a Gateway API (type, value) pair.
    kinds = {"exact": "Exact", "regex": "RegularExpression", "prefix": "PathPrefix"}
    if isinstance(value, dict):
        for key in allowed:
            if value.get(key):
                return kinds[key], str(value[key])
    raise ValueError(f"{field}: Gateway API supports only {'/'.join(allowed)} here, got {value!r}")


def route_matches(istio_matches: list[JsonObject], field: str) -> list[JsonObject]:
    """Istio-style HTTPMatchRequests (what `service.match` and `analysis.match` hold) as Gateway API
    HTTPRouteMatches: uri exact/prefix/regex -> path, method exact, headers exact/regex,
    queryParams exact/regex. Anything else raises ValueError naming `field[i]...`."""
    out: list[JsonObject] = []
    for i, m in enumerate(istio_matches):
        at = f"{field}[{i}]"
        match: JsonObject = {}
        if m.get("uri") is not None:
            kind, value = _string_match(f"{at}.uri", m["uri"], ("regex", "exact", "prefix"))
            match["path"] = {"type": kind, "value": value}
        if m.get("method") is not None:
            _, method = _string_match(f"{at}.method", m["method"], ("exact",))
            match["method"] = method
        headers = [
            dict(
                zip(
                    ("type", "value"),
                    _string_match(f"{at}.headers.{name}", v, ("exact", "regex")),
                    strict=True,
                )
            )
            | {"name": name}
            for name, v in sorted((m.get("headers") or {}).items())
        ]
        if headers:
            match["headers"] = headers
        params = [
            dict(
                zip(
                    ("type", "value"),
                    _string_match(f"{at}.queryParams.{name}", v, ("exact", "regex")),
                    strict=True,
                )
            )
            | {"name": name}
            for name, v in sorted((m.get("queryParams") or {}).items())
        ]
        if params:
            match["queryParams"] = params
        unsupported = set(m) - {"uri", "method", "headers", "queryParams", "name"}
        if unsupported:
            raise ValueError(f"{at}: Gateway API cannot match on {', '.join(sorted(unsupported))}")
        if match:
            out.append(match)
    return out


def merge_matches(analysis: list[JsonObject], service: list[JsonObject]) -> list[JsonObject]:
    """A/B conditions x service matches: each analysis match's headers / queryParams replace those
    of a copy of each service match."""
    if not analysis:
        return service
    if not service:
        return analysis
    merged: list[JsonObject] = []
    for a in analysis:
        for s in service:
            m = copy.deepcopy(s)
            for key in ("headers", "queryParams"):
                if a.get(key):
                    m[key] = copy.deepcopy(a[key])
            merged.append(m)
    return merged


def backend_ref(name: str, port: int, weight: int) -> JsonObject:
    """A Service backendRef with a weight."""
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def _headers(ops: JsonObject) -> JsonObject:
    # Istio HeaderOperations {add, set: {name: value}, remove: [names]} -> HTTPHeaderFilter.
    out: JsonObject = {}
    for key in ("add", "set"):
        if ops.get(key):
            out[key] = [{"name": n, "value": v} for n, v in sorted(ops[key].items())]
    if ops.get("remove"):
        out["remove"] = list(ops["remove"])
    return out


def _cors(policy: JsonObject) -> JsonObject:
    # Istio CorsPolicy -> Gateway API HTTPCORSFilter (allowOrigin strings; maxAge a duration).
    cors: JsonObject = {}
    origins = policy.get("allowOrigin") or [
        o["exact"] for o in policy.get("allowOrigins") or [] if isinstance(o, dict) and "exact" in o
    ]
    if origins:
        cors["allowOrigins"] = list(origins)
    for src, dst in (
        ("allowMethods", "allowMethods"),
        ("allowHeaders", "allowHeaders"),
        ("exposeHeaders", "exposeHeaders"),
    ):
        if policy.get(src):
            cors[dst] = list(policy[src])
    if policy.get("allowCredentials"):
        cors["allowCredentials"] = True
    if policy.get("maxAge"):
        cors["maxAge"] = int(parse_duration(str(policy["maxAge"])))
    return cors


def filters(canary: Canary) -> list[JsonObject]:
    """Rule filters from the spec: header modifiers (`service.headers`), URLRewrite
    (`service.rewrite`), static RequestMirrors (`service.mirror`), CORS (`service.corsPolicy`)."""
    svc = canary.spec.service
    out: list[JsonObject] = []
    if svc.headers:
        if svc.headers.get("request"):
            out.append(
                {"type": "RequestHeaderModifier", "requestHeaderModifier": _headers(svc.headers["request"])}
            )
        if svc.headers.get("response"):
            out.append(
                {
                    "type": "ResponseHeaderModifier",
                    "responseHeaderModifier": _headers(svc.headers["response"]),
                }
            )
    if svc.rewrite is not None and (svc.rewrite.uri or svc.rewrite.authority):
        rewrite: JsonObject = {}
        if svc.rewrite.authority:
            rewrite["hostname"] = svc.rewrite.authority
        if svc.rewrite.uri:
            if svc.rewrite.type == "ReplaceFullPath":
                rewrite["path"] = {"type": "ReplaceFullPath", "replaceFullPath": svc.rewrite.uri}
            else:
                rewrite["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": svc.rewrite.uri}
        out.append({"type": "URLRewrite", "urlRewrite": rewrite})
    for mirror in svc.mirror:
        out.append({"type": "RequestMirror", "requestMirror": copy.deepcopy(mirror)})
    if svc.cors_policy:
        out.append({"type": "CORS", "cors": _cors(svc.cors_policy)})
    return out


def _timeouts(canary: Canary) -> JsonObject | None:
    svc = canary.spec.service
    t = {k: v for k, v in (("request", svc.timeout), ("backendRequest", svc.backend_timeout)) if v}
    return t or None


def _rule(
    matches: list[JsonObject], rule_filters: list[JsonObject], backends: list[JsonObject], canary: Canary
) -> JsonObject:
    rule: JsonObject = {"matches": matches}
    if rule_filters:
        rule["filters"] = rule_filters
    rule["backendRefs"] = backends
    timeouts = _timeouts(canary)
    if timeouts:
        rule["timeouts"] = timeouts
    return rule


def http_route_spec(canary: Canary, routes: Routes = INITIAL, cookies: Cookies | None = None) -> JsonObject:
    """The HTTPRoute spec for `routes`.
    - rule 0: service.match (default PathPrefix /) with both weighted backends and the filters;
      while mirrored a RequestMirror filter to the canary, with `percent` when a mirror weight is
      set. Flagger adds it for blue/green only, so its canary-strategy mirror step never reads
      back as mirrored and repeats forever; here the filter follows the Routes for both;
    - session affinity: sticky rules for `cookies` before the weighted one (`sticky_rules`);
    - A/B (analysis.match): rule 0 matches = A/B conditions x service matches; rule 1 = service
      matches to the primary alone."""
    svc = canary.spec.service
    if not svc.gateway_refs:
        raise ValueError(
            "spec.service.gatewayRefs: required with a Gateway API provider"
            " (a Gateway, or the Service for GAMMA)"
        )
    names = service_names(canary)
    analysis = canary.spec.analysis
    matches = route_matches(svc.match, "spec.service.match") or [copy.deepcopy(_DEFAULT_MATCH)]
    weighted_filters = filters(canary)
    if routes.mirrored:
        mirror: JsonObject = {
            "backendRef": {"group": "", "kind": "Service", "name": names.canary, "port": svc.port}
        }
        if routes.mirror_weight is not None and routes.mirror_weight > 0:
            mirror["percent"] = routes.mirror_weight
        weighted_filters.append({"type": "RequestMirror", "requestMirror": mirror})
    weighted = _rule(
        matches,
        weighted_filters,
        [
            backend_ref(names.primary, svc.port, routes.primary_weight),
            backend_ref(names.canary, svc.port, routes.canary_weight),
        ],
        canary,
    )
    spec: JsonObject = {"parentRefs": [copy.deepcopy(ref) for ref in svc.gateway_refs]}
    if svc.hosts:
        spec["hostnames"] = list(svc.hosts)
    spec["rules"] = [weighted]
    if cookies is not None and sticky(canary):
        spec["rules"] = [*sticky_rules(canary, routes, cookies, weighted, matches), weighted]
    if analysis is not None and analysis.match:
        ab = route_matches(analysis.match, "spec.analysis.match")
        weighted["matches"] = merge_matches(ab, matches)
        spec["rules"].append(
            _rule(matches, filters(canary), [backend_ref(names.primary, svc.port, 100)], canary)
        )
    return spec


def _cookie_match(cookie: str) -> JsonObject:
    return {"headers": [{"type": "RegularExpression", "name": "Cookie", "value": cookie_regex(cookie)}]}


def _add_response_header(filters: list[JsonObject], name: str, value: str) -> list[JsonObject]:
    # One ResponseHeaderModifier per rule or backendRef (a CEL rule): add to it when present.
    out = copy.deepcopy(filters)
    for f in out:
        if f.get("type") == "ResponseHeaderModifier":
            f["responseHeaderModifier"].setdefault("add", []).append({"name": name, "value": value})
            return out
    out.append(
        {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": name, "value": value}]},
        }
    )
    return out


def sticky_rules(
    canary: Canary, routes: Routes, cookies: Cookies, weighted: JsonObject, matches: list[JsonObject]
) -> list[JsonObject]:
    """The rules before the weighted one (Istio's `sticky_routes` in Gateway API terms): cookie
    matches are RegularExpression matches on the `Cookie` header, Set-Cookie goes in
    ResponseHeaderModifier filters on the weighted rule's backendRefs."""
    analysis = canary.spec.analysis
    assert analysis is not None and analysis.session_affinity is not None
    affinity = analysis.session_affinity
    names = service_names(canary)
    port = canary.spec.service.port
    base = {k: copy.deepcopy(v) for k, v in weighted.items() if k != "backendRefs"}
    base["filters"] = [f for f in base.get("filters", []) if f.get("type") != "RequestMirror"] or None
    base = {k: v for k, v in base.items() if v is not None}
    if routes.canary_weight == 0:
        if not cookies.previous:
            return []
        expire = {**base, "matches": merge_matches([_cookie_match(cookies.previous)], matches)}
        expire["filters"] = _add_response_header(
            expire.get("filters", []), "Set-Cookie", f"{cookies.previous}; Max-Age=-1"
        )
        expire["backendRefs"] = copy.deepcopy(weighted["backendRefs"])
        return [expire]
    assert cookies.canary is not None
    by_name = {b["name"]: b for b in weighted["backendRefs"]}
    by_name[names.canary]["filters"] = _add_response_header(
        [], "Set-Cookie", set_cookie(canary, cookies.canary, affinity.max_age)
    )
    out = [
        {
            **copy.deepcopy(base),
            "matches": merge_matches([_cookie_match(cookies.canary)], matches),
            "backendRefs": [backend_ref(names.primary, port, 0), backend_ref(names.canary, port, 100)],
        }
    ]
    if affinity.primary_cookie_name and cookies.primary:
        by_name[names.primary]["filters"] = _add_response_header(
            [], "Set-Cookie", set_cookie(canary, cookies.primary, int(analysis.interval_seconds))
        )
        out.append(
            {
                **copy.deepcopy(base),
                "matches": merge_matches([_cookie_match(cookies.primary)], matches),
                "backendRefs": [backend_ref(names.primary, port, 100), backend_ref(names.canary, port, 0)],
            }
        )
    return out


def routes_from_http_route(route: JsonObject, names: ServiceNames) -> Routes:
    """Read the split back from the rules with two backendRefs; a RequestMirror filter to the canary
    means mirrored. Raises RouterNotReady while a parent in `status.parents` has not accepted the
    current generation (Flagger waits for the gateway before the next decision), LookupError when no
    rule carries the weights."""
    generation = route.get("metadata", {}).get("generation", 0)
    namespace = route.get("metadata", {}).get("namespace")
    wanted = [_parent_key(p, namespace) for p in (route.get("spec") or {}).get("parentRefs") or []]
    for parent in (route.get("status") or {}).get("parents") or []:
        if _parent_key(parent.get("parentRef") or {}, namespace) not in wanted:
            continue
        for cond in parent.get("conditions") or []:
            if cond.get("type") == "Accepted" and (
                cond.get("status") != "True" or int(cond.get("observedGeneration") or 0) < generation
            ):
                raise RouterNotReady(
                    f"HTTPRoute {route['metadata']['name']} parent {parent['parentRef'].get('name')} has not "
                    f"accepted generation {generation} (status {cond.get('status')}, observed "
                    f"{cond.get('observedGeneration')})"
                )
    primary = canary_w = 0
    found = mirrored = False
    mirror_weight: int | None = None
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if len(refs) == 2:
            for ref in refs:
                if ref.get("name") == names.primary:
                    primary, found = int(ref.get("weight", 1)), True
                elif ref.get("name") == names.canary:
                    canary_w, found = int(ref.get("weight", 1)), True
        for f in rule.get("filters") or []:
            mirror = f.get("requestMirror") or {}
            if f.get("type") == "RequestMirror" and mirror.get("backendRef", {}).get("name") == names.canary:
                mirrored = True
                mirror_weight = mirror.get("percent")
    if not found:
        raise LookupError(
            f"HTTPRoute {route['metadata']['name']} has no rule routing to {names.primary} and {names.canary}"
        )
    return Routes(primary, canary_w, mirrored=mirrored, mirror_weight=mirror_weight)


def _parent_key(ref: JsonObject, namespace: str | None) -> tuple[Any, ...]:
    # A parentRef with the API's defaults filled in, so spec and status entries compare equal.
    return (
        ref.get("group", GROUP) or "",
        ref.get("kind", "Gateway"),
        ref.get("namespace") or namespace,
        ref.get("name"),
        ref.get("sectionName"),
        ref.get("port"),
    )


class GatewayAPIRouter(ApexObjectRouter):
    """Implements `Router` with one HTTPRoute (`get_routes` raises RouterNotReady until its parents
    accepted it)."""

    kind = "HTTPRoute"

    def __init__(self, api: ApiClient, version: str = DEFAULT_VERSION) -> None:
        self.http_routes = CustomResource(api, GROUP, version, "httproutes")
        super().__init__(self.http_routes)

    def routes_of(self, obj: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        return routes_from_http_route(obj, names)

    def routes_kept(self, existing: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        # The weights it has, whether or not its parents accepted it yet.
        return super().routes_kept({**existing, "status": {}}, canary, names)

    def spec_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        return http_route_spec(canary, routes, cookies)

    def patch_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        """parentRefs, hostnames and rules (and the cookies when there are any)."""
        spec = http_route_spec(canary, routes, cookies)
        spec.setdefault("hostnames", None)  # merge patch: null removes hosts no longer listed
        patch: JsonObject = {"spec": spec}
        if cookies is not None:
            patch["metadata"] = {"annotations": cookies.annotations()}
        return patch
