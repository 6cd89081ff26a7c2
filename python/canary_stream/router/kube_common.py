"""What the Kubernetes routers share: object names, owner references, Flux-safe metadata, the
original-configuration annotation, a thin async client for one custom resource, and the spec
comparison that tolerates the API server's defaulting."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from canary_stream.router.base import RouterNotReady as RouterNotReady  # re-exported for the routers
from canary_stream.router.base import Routes
from canary_stream.spec.model import Canary

JsonObject = dict[str, Any]

FIELD_MANAGER = "canary-stream"
# The spec of an object canary-stream took over, saved once so `finalize` can restore it.
ORIGINAL_CONFIG_ANNOTATION = "canary-stream.dev/original-configuration"
# What Flagger saves (a VirtualService it took over) and what `kubectl apply` leaves: both are read
# on finalize, so objects Flagger managed before revert the same way.
FLAGGER_ORIGINAL_CONFIG_ANNOTATION = "flagger.kubernetes.io/original-configuration"
KUBECTL_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Flagger marks every generated object so Flux neither reconciles nor drift-corrects it.
_FLUX_ANNOTATIONS = {
    "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
    "helm.toolkit.fluxcd.io/driftDetection": "disabled",
}
_TOOLKIT_MARKER = "toolkit.fluxcd.io"

MERGE_PATCH = "application/merge-patch+json"
# The generated clients pick JSON-patch (custom objects) or strategic merge (core) for a dict body;
# the content type is forced through an untyped keyword the stubs do not declare.
MERGE_PATCH_OPTIONS: dict[str, Any] = {"field_manager": FIELD_MANAGER, "_content_type": MERGE_PATCH}
# Unknown fields are an error, not silently pruned by the CRD's structural schema: a field the
# installed CRD version lacks (or a typo in a pass-through spec) surfaces on the first write.
STRICT = "Strict"


@dataclass(frozen=True)
class ServiceNames:
    """Flagger's `GetServiceNames`: the apex Service and its `-primary` / `-canary` siblings."""

    apex: str
    primary: str
    canary: str


def service_names(canary: Canary) -> ServiceNames:
    """apex = `spec.service.name`, else `spec.targetRef.name`."""
    apex = canary.spec.service.name or canary.spec.target_ref.name
    return ServiceNames(apex, f"{apex}-primary", f"{apex}-canary")


def check_routes(routes: Routes) -> None:
    """Weights are percentages that add up to 100 (every router writes both)."""
    pw, cw = routes.primary_weight, routes.canary_weight
    if not (0 <= pw <= 100 and 0 <= cw <= 100) or pw + cw != 100:
        raise ValueError(f"weights must be 0-100 and sum to 100, got primary {pw} canary {cw}")
    if routes.mirror_weight is not None and not 0 <= routes.mirror_weight <= 100:
        raise ValueError(f"mirror_weight must be 0-100, got {routes.mirror_weight}")


def owner_references(canary: Canary) -> list[JsonObject]:
    """A controller reference to the Canary, so Kubernetes GC removes generated objects with it.
    Empty when the Canary has no uid (not read from an API server): a reference without one is
    rejected."""
    uid = (canary.metadata.model_extra or {}).get("uid")
    if not uid:
        return []
    return [
        {
            "apiVersion": canary.api_version,
            "kind": "Canary",
            "name": canary.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def is_owned_by(obj: JsonObject, canary: Canary) -> bool:
    """True when `obj`'s controller reference names this Canary."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Canary":
            return bool(ref.get("name") == canary.name)
    return False


def flux_safe(annotations: dict[str, str]) -> dict[str, str]:
    """Annotations for a generated object: the caller's (minus Flux toolkit keys, which must never be
    copied) plus the two that keep Flux from reverting canary-stream's writes."""
    out = {k: v for k, v in annotations.items() if _TOOLKIT_MARKER not in k}
    out.update(_FLUX_ANNOTATIONS)
    return out


def apex_metadata(canary: Canary) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) for router objects named after the apex (`service.apex` metadata)."""
    apex = canary.spec.service.apex
    labels = dict(apex.labels) if apex else {}
    annotations = flux_safe(dict(apex.annotations) if apex else {})
    return labels, annotations


def stored_original_spec(obj: JsonObject) -> JsonObject | None:
    """The spec saved before canary-stream (or Flagger) took `obj` over, or None."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    for key in (ORIGINAL_CONFIG_ANNOTATION, FLAGGER_ORIGINAL_CONFIG_ANNOTATION):
        if key in annotations:
            spec = json.loads(annotations[key])
            return spec if isinstance(spec, dict) else None
    if KUBECTL_ANNOTATION in annotations:
        applied = json.loads(annotations[KUBECTL_ANNOTATION])
        spec = applied.get("spec") if isinstance(applied, dict) else None
        return spec if isinstance(spec, dict) else None
    return None


def contains(desired: Any, actual: Any) -> bool:
    """`desired` is `actual` minus fields the API server defaulted: dicts compare key by key over
    `desired`'s keys, lists element-wise with equal length. Lets reconcile skip writes that change
    nothing (a CRD's defaults would otherwise make every comparison differ)."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        return all(k in actual and contains(v, actual[k]) for k, v in desired.items() if v is not None)
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(contains(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, int | float) and isinstance(actual, int | float) and not isinstance(desired, bool):
        return float(desired) == float(actual)
    return bool(desired == actual)


def new_object(
    api_version: str,
    kind: str,
    name: str,
    canary: Canary,
    spec: JsonObject,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> JsonObject:
    """A namespaced object owned by the Canary."""
    metadata: JsonObject = {"name": name, "namespace": canary.namespace}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    refs = owner_references(canary)
    if refs:
        metadata["ownerReferences"] = refs
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


async def read_or_none(api: ApiClient, read: Awaitable[Any]) -> JsonObject | None:
    """The object a typed client's read returns, as a dict; None when it does not exist."""
    try:
        obj = await read
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    out: JsonObject = api.sanitize_for_serialization(obj)
    return out


def dict_body(obj: JsonObject) -> Any:
    """A dict as the body of a typed client's write: the client serialises it as it is; its stubs
    only declare the model class."""
    return obj


class CustomResource:
    """Async get / create / replace / merge-patch for one custom resource kind (dict bodies)."""

    def __init__(self, api: ApiClient, group: str, version: str, plural: str) -> None:
        self.objects = CustomObjectsApi(api)
        self.group, self.version, self.plural = group, version, plural

    @property
    def api_version(self) -> str:
        """`group/version` as written in objects."""
        return f"{self.group}/{self.version}"

    async def get(self, namespace: str, name: str) -> JsonObject | None:
        """The object, or None when it does not exist."""
        try:
            obj: JsonObject = await self.objects.get_namespaced_custom_object(
                self.group, self.version, namespace, self.plural, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def create(self, namespace: str, body: JsonObject) -> JsonObject:
        """Create `body` in `namespace`."""
        out: JsonObject = await self.objects.create_namespaced_custom_object(
            self.group,
            self.version,
            namespace,
            self.plural,
            body,
            field_manager=FIELD_MANAGER,
            field_validation=STRICT,
        )
        return out

    async def replace(self, namespace: str, body: JsonObject) -> JsonObject:
        """Update with `body` (its resourceVersion makes a concurrent write a 409)."""
        out: JsonObject = await self.objects.replace_namespaced_custom_object(
            self.group,
            self.version,
            namespace,
            self.plural,
            body["metadata"]["name"],
            body,
            field_manager=FIELD_MANAGER,
            field_validation=STRICT,
        )
        return out

    async def merge_patch(self, namespace: str, name: str, patch: JsonObject) -> JsonObject:
        """JSON merge patch (RFC 7386): lists in `patch` replace the stored lists whole."""
        out: JsonObject = await self.objects.patch_namespaced_custom_object(
            self.group,
            self.version,
            namespace,
            self.plural,
            name,
            patch,
            field_validation=STRICT,
            **MERGE_PATCH_OPTIONS,
        )
        return out


async def upsert_spec(
    resource: CustomResource,
    canary: Canary,
    kind: str,
    name: str,
    spec: JsonObject,
    labels: dict[str, str],
    annotations: dict[str, str],
    existing: JsonObject | None,
) -> str:
    """Create the object, or update it when its spec or metadata differ from what is wanted.
    Annotations other controllers put on an existing object are kept. Taking over an object not
    owned by this Canary saves its spec once under `ORIGINAL_CONFIG_ANNOTATION` for `finalize`.
    Returns "created", "updated" or "unchanged"."""
    ns = canary.namespace
    if existing is None:
        await resource.create(
            ns, new_object(resource.api_version, kind, name, canary, spec, labels, annotations)
        )
        return "created"
    meta = existing.setdefault("metadata", {})
    current_annotations: dict[str, str] = dict(meta.get("annotations") or {})
    merged = {**current_annotations, **annotations}
    if not is_owned_by(existing, canary) and stored_original_spec(existing) is None:
        merged[ORIGINAL_CONFIG_ANNOTATION] = json.dumps(existing.get("spec") or {}, sort_keys=True)
    same = (
        contains(spec, existing.get("spec") or {})
        and set((existing.get("spec") or {}).keys()) <= set(spec.keys())
        and merged == current_annotations
        and (meta.get("labels") or {}) == {**(meta.get("labels") or {}), **labels}
    )
    if same:
        return "unchanged"
    meta["annotations"] = merged
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    existing["spec"] = spec
    await resource.replace(ns, existing)
    return "updated"


async def restore_original(resource: CustomResource, obj: JsonObject, original: JsonObject) -> None:
    """Put back the spec an object had before canary-stream took it over, and drop the saved copy."""
    obj["spec"] = original
    annotations = obj.setdefault("metadata", {}).get("annotations") or {}
    annotations.pop(ORIGINAL_CONFIG_ANNOTATION, None)
    obj["metadata"]["annotations"] = annotations
    await resource.replace(obj["metadata"]["namespace"], obj)
