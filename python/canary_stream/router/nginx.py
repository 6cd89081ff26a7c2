"""ingress-nginx canaries (`provider: nginx`; Flagger's pkg/router/ingress.go semantics).

The Ingress named by `spec.ingressRef` keeps sending traffic to the apex Service (which selects
the primary). A copy of it, `<ingress>-canary`, sends the same hosts and paths to `<apex>-canary`
and carries ingress-nginx's canary annotations:
- canary / blue-green: `canary: "true"`, `canary-weight: "<weight>"`;
- A/B (`analysis.match`): `canary-by-header` (+ `-value` for an exact value, `-pattern` for a
  regex) or `canary-by-cookie` (the cookie's name, from `cookie: {exact: <name>}`) while the
  run sends matching users to the canary; back to weight 0 without them afterwards.
The split is read back from those annotations (the source of truth). No mirroring (ingress-nginx
has no weighted mirror), as in Flagger. The copy is owned by the Canary, so deleting the Canary
removes it, and the original Ingress is never written: nothing to revert on finalize.

ingress-nginx's own access log names the canary upstream in `$proxy_alternative_upstream_name`,
which the nginx log parser attributes to the canary (rust/src/parse/nginx.rs)."""

from __future__ import annotations

import copy
from typing import Any

from kubernetes_asyncio.client import ApiClient, NetworkingV1Api

from canary_stream.router.base import Routes
from canary_stream.router.kube_common import (
    FIELD_MANAGER,
    KUBECTL_ANNOTATION,
    MERGE_PATCH_OPTIONS,
    STRICT,
    JsonObject,
    check_routes,
    dict_body,
    flux_safe,
    new_object,
    read_or_none,
    service_names,
)
from canary_stream.spec.model import Canary

DEFAULT_ANNOTATIONS_PREFIX = "nginx.ingress.kubernetes.io"
_CANARY_KEYS = (
    "canary",
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
)


def ingress_name(canary: Canary) -> str:
    """`spec.ingressRef.name`; ValueError naming the field when the Canary has none."""
    ref = canary.spec.ingress_ref
    if ref is None or not ref.name:
        raise ValueError("spec.ingressRef: provider nginx needs the Ingress to clone")
    return ref.name


def canary_ingress_name(canary: Canary) -> str:
    return f"{ingress_name(canary)}-canary"


def canary_ingress_spec(canary: Canary, ingress: JsonObject) -> JsonObject:
    """The Ingress's spec with every backend naming the apex Service sent to `<apex>-canary`;
    ValueError when no rule names the apex (the Ingress does not front this Canary)."""
    names = service_names(canary)
    spec = copy.deepcopy(ingress.get("spec") or {})
    found = False
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            svc = (path.get("backend") or {}).get("service")
            if isinstance(svc, dict) and svc.get("name") == names.apex:
                svc["name"] = names.canary
                found = True
    if not found:
        raise ValueError(
            f"spec.ingressRef: Ingress {ingress_name(canary)} has no backend naming Service {names.apex}"
        )
    return spec


def base_annotations(annotations: dict[str, str], prefix: str = DEFAULT_ANNOTATIONS_PREFIX) -> dict[str, str]:
    """The Ingress's annotations without canary keys or kubectl's, plus `canary: "true"` and
    `canary-weight: "0"` (Flagger's makeAnnotations)."""
    canary_keys = {f"{prefix}/{k}" for k in _CANARY_KEYS}
    out = {k: v for k, v in annotations.items() if k not in canary_keys and k != KUBECTL_ANNOTATION}
    out = flux_safe(out)
    out[f"{prefix}/canary"] = "true"
    out[f"{prefix}/canary-weight"] = "0"
    return out


def match_annotations(
    match: list[dict[str, Any]], prefix: str = DEFAULT_ANNOTATIONS_PREFIX
) -> dict[str, str]:
    """ingress-nginx's A/B annotations for `analysis.match` (Flagger's makeHeaderAnnotations): a
    `cookie` header names the cookie (`exact`), any other header routes by its exact value or
    regex. ValueError naming the field for what ingress-nginx cannot express."""
    out: dict[str, str] = {}
    for i, m in enumerate(match):
        for key in m:
            if key != "headers":
                raise ValueError(
                    f"spec.analysis.match[{i}].{key}: provider nginx matches headers and cookies only"
                )
        for header, cond in (m.get("headers") or {}).items():
            field = f"spec.analysis.match[{i}].headers.{header}"
            if not isinstance(cond, dict):
                raise ValueError(f"{field}: expected exact or regex")
            if header.lower() == "cookie":
                if "exact" not in cond:
                    raise ValueError(f"{field}: provider nginx routes by a cookie's name (exact)")
                out[f"{prefix}/canary-by-cookie"] = str(cond["exact"])
            else:
                out[f"{prefix}/canary-by-header"] = header
                if "exact" in cond:
                    out[f"{prefix}/canary-by-header-value"] = str(cond["exact"])
                elif "regex" in cond:
                    out[f"{prefix}/canary-by-header-pattern"] = str(cond["regex"])
                else:
                    raise ValueError(f"{field}: provider nginx takes exact or regex")
    return out


def routes_of(
    canary: Canary, annotations: dict[str, str], prefix: str = DEFAULT_ANNOTATIONS_PREFIX
) -> Routes:
    """The split the canary Ingress's annotations make (Flagger's GetRoutes)."""
    analysis = canary.spec.analysis
    conditions = {f"{prefix}/canary-by-cookie", f"{prefix}/canary-by-header"}
    if analysis is not None and analysis.match and conditions & annotations.keys():
        return Routes(0, 100)
    raw = annotations.get(f"{prefix}/canary-weight", "0")
    try:
        weight = int(raw)
    except ValueError as e:
        raise ValueError(f"{prefix}/canary-weight {raw!r} is not an integer") from e
    return Routes(100 - weight, weight)


def routed_annotations(
    canary: Canary, annotations: dict[str, str], routes: Routes, prefix: str = DEFAULT_ANNOTATIONS_PREFIX
) -> dict[str, str]:
    """The canary Ingress's annotations for `routes` (Flagger's SetRoutes): the weight, or the A/B
    conditions while the canary gets the matching users; back to weight 0 without conditions."""
    out = base_annotations(annotations, prefix)
    if routes.canary_weight == 0:
        return out
    analysis = canary.spec.analysis
    if analysis is not None and analysis.match:
        out.update(match_annotations(analysis.match, prefix))
    else:
        out[f"{prefix}/canary-weight"] = str(routes.canary_weight)
    return out


class NginxRouter:
    """Implements `Router` with a `<ingress>-canary` Ingress (see the module docs)."""

    def __init__(self, api: ApiClient, prefix: str = DEFAULT_ANNOTATIONS_PREFIX) -> None:
        self.net = NetworkingV1Api(api)
        self.api = api
        self.prefix = prefix

    async def _get(self, namespace: str, name: str) -> JsonObject | None:
        return await read_or_none(self.api, self.net.read_namespaced_ingress(name, namespace))

    async def reconcile(self, canary: Canary) -> None:
        """Create `<ingress>-canary` (at weight 0), or bring its spec in line with the Ingress's,
        keeping its annotations (the current split)."""
        if canary.spec.analysis is not None and canary.spec.analysis.match:
            match_annotations(canary.spec.analysis.match, self.prefix)  # refuse what nginx cannot do, early
        name = ingress_name(canary)
        ingress = await self._get(canary.namespace, name)
        if ingress is None:
            raise LookupError(f"Ingress {name}.{canary.namespace} (spec.ingressRef) not found")
        spec = canary_ingress_spec(canary, ingress)
        meta = ingress.get("metadata") or {}
        current = await self._get(canary.namespace, canary_ingress_name(canary))
        if current is None:
            body = new_object(
                "networking.k8s.io/v1",
                "Ingress",
                canary_ingress_name(canary),
                canary,
                spec,
                dict(meta.get("labels") or {}),
                base_annotations(dict(meta.get("annotations") or {}), self.prefix),
            )
            await self.net.create_namespaced_ingress(
                canary.namespace, dict_body(body), field_manager=FIELD_MANAGER, field_validation=STRICT
            )
            return
        if current.get("spec") != spec:
            current["spec"] = spec
            current.pop("status", None)
            await self.net.replace_namespaced_ingress(
                canary_ingress_name(canary),
                canary.namespace,
                dict_body(current),
                field_manager=FIELD_MANAGER,
                field_validation=STRICT,
            )

    async def get_routes(self, canary: Canary) -> Routes:
        current = await self._get(canary.namespace, canary_ingress_name(canary))
        if current is None:
            raise LookupError(
                f"Ingress {canary_ingress_name(canary)}.{canary.namespace} not found; reconcile first"
            )
        return routes_of(canary, (current.get("metadata") or {}).get("annotations") or {}, self.prefix)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        """Write the split as annotations: one merge patch (keys that go are set to null)."""
        check_routes(routes)
        if routes.mirrored:
            raise ValueError("spec.analysis.mirror: provider nginx cannot mirror traffic")
        name = canary_ingress_name(canary)
        current = await self._get(canary.namespace, name)
        if current is None:
            raise LookupError(f"Ingress {name}.{canary.namespace} not found; reconcile first")
        old = (current.get("metadata") or {}).get("annotations") or {}
        new = routed_annotations(canary, old, routes, self.prefix)
        delta: dict[str, str | None] = {k: None for k in old if k not in new}
        delta.update({k: v for k, v in new.items() if old.get(k) != v})
        if delta:
            body = {"metadata": {"annotations": delta}}
            await self.net.patch_namespaced_ingress(name, canary.namespace, body, **MERGE_PATCH_OPTIONS)

    async def finalize(self, canary: Canary) -> None:
        """The original Ingress was never written; the copy goes with the Canary (owner reference)."""
