"""`autoscalerRef`: the primary's copy of the target's autoscaler (Flagger's HPA and ScaledObject
reconcilers).

- HorizontalPodAutoscaler (autoscaling/v2): `<hpa>-primary` scales `<target>-primary`.
- KEDA ScaledObject (keda.sh/v1alpha1): `<so>-primary` scales `<target>-primary`; each trigger's
  `metadata.query` is rewritten for the primary (`primaryScalerQueries[<trigger name>]`, else the
  target's name and `<target>-canary` become `<target>-primary`). While the Canary is idle the
  target's ScaledObject is paused (`autoscaling.keda.sh/paused-replicas: "0"`), or KEDA would scale
  the canary back up; it is resumed when the canary is scaled up for an analysis and on revert.

The primary copy is created at initialisation and brought in line on every promotion (a merge
patch of the spec; keys the target dropped are sent as null). `primaryScalerReplicas` overrides the
replica bounds of either kind."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canary_stream.kube.objects import CanaryRef
from canary_stream.kube.rest import HPAS, SCALED_OBJECTS, Kube, Resource
from canary_stream.kube.retry import retry, status_of
from canary_stream.kube.status import merge_diff
from canary_stream.spec.model import Canary
from canary_stream.workload.base import primary_name

#: KEDA scales nothing while a ScaledObject carries it (the replicas stay at the value, 0 here).
PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
#: ScaledObject spec fields the primary copy takes as they are (scaleTargetRef and triggers are
#: rewritten, the replica counts may be overridden).
_SCALED_OBJECT_FIELDS = (
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "minReplicaCount",
    "maxReplicaCount",
    "idleReplicaCount",
    "advanced",
    "fallback",
)


def _primary_meta(obj: dict[str, Any], owner: CanaryRef) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {
        "name": primary_name(meta["name"]),
        "namespace": meta.get("namespace"),
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": [owner.owner_reference()],
    }


def _primary_object(
    target: dict[str, Any], canary: Canary, owner: CanaryRef, spec: dict[str, Any], bounds: tuple[str, str]
) -> dict[str, Any]:
    """The primary copy of the scaler `target` with `spec`, the replica bounds of
    `autoscalerRef.primaryScalerReplicas` set under the kind's keys `bounds` (min, max)."""
    ref = canary.spec.autoscaler_ref
    replicas = ref.primary_scaler_replicas if ref else None
    if replicas is not None:
        for key, value in zip(bounds, (replicas.min_replicas, replicas.max_replicas), strict=True):
            if value is not None:
                spec[key] = value
    return {
        "apiVersion": target.get("apiVersion"),
        "kind": target.get("kind"),
        "metadata": _primary_meta(target, owner),
        "spec": spec,
    }


def primary_hpa(hpa: dict[str, Any], canary: Canary, owner: CanaryRef) -> dict[str, Any]:
    """`<hpa>-primary`: the target's HPA spec scaling `<target>-primary`, with the replica bounds
    of `autoscalerRef.primaryScalerReplicas` when given."""
    spec = copy.deepcopy(hpa.get("spec") or {})
    spec["scaleTargetRef"] = {
        **(spec.get("scaleTargetRef") or {}),
        "name": primary_name(canary.spec.target_ref.name),
    }
    return _primary_object(
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", **hpa},
        canary,
        owner,
        spec,
        ("minReplicas", "maxReplicas"),
    )


def primary_query(query: str, target: str) -> str:
    """A trigger query about the target (or `<target>-canary`) made about `<target>-primary`.
    Whole names only: `podinfo-canary` and `podinfo` become `podinfo-primary`, while
    `podinfo-primary` and `podinfo2` stay as they are."""
    name = re.escape(target)
    pattern = rf"(?<![\w-]){name}(?:-canary)?(?![\w-])"
    return re.sub(pattern, lambda _: primary_name(target), query)


def primary_scaled_object(so: dict[str, Any], canary: Canary, owner: CanaryRef) -> dict[str, Any]:
    """`<so>-primary`: the target's ScaledObject scaling `<target>-primary`, its trigger queries
    rewritten for the primary, with `primaryScalerReplicas` as min/max replica counts."""
    spec = so.get("spec") or {}
    target = canary.spec.target_ref.name
    ref = canary.spec.autoscaler_ref
    queries = ref.primary_scaler_queries if ref else {}
    out: dict[str, Any] = {k: copy.deepcopy(spec[k]) for k in _SCALED_OBJECT_FIELDS if k in spec}
    scale_ref = spec.get("scaleTargetRef") or {}
    out["scaleTargetRef"] = {
        **{k: scale_ref[k] for k in ("apiVersion", "kind", "envSourceContainerName") if k in scale_ref},
        "name": primary_name(target),
    }
    triggers = copy.deepcopy(spec.get("triggers") or [])
    for trigger in triggers:
        meta = trigger.get("metadata")
        if not isinstance(meta, dict) or "query" not in meta:
            continue
        given = queries.get(str(trigger.get("name") or ""))
        meta["query"] = given if given is not None else primary_query(str(meta["query"]), target)
    out["triggers"] = triggers
    return _primary_object(
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", **so},
        canary,
        owner,
        out,
        ("minReplicaCount", "maxReplicaCount"),
    )


@dataclass(frozen=True)
class ScalerKind:
    """How one `autoscalerRef.kind` is copied for the primary, and whether it can be paused."""

    resource: Resource
    primary: Callable[[dict[str, Any], Canary, CanaryRef], dict[str, Any]]
    pausable: bool


SCALER_KINDS: dict[str, ScalerKind] = {
    "HorizontalPodAutoscaler": ScalerKind(HPAS, primary_hpa, pausable=False),
    "ScaledObject": ScalerKind(SCALED_OBJECTS, primary_scaled_object, pausable=True),
}


class Scalers:
    """The `autoscalerRef` of Canaries on a cluster: the primary copy, and the target's pause."""

    def __init__(self, kube: Kube, owner: Callable[[Canary], CanaryRef]) -> None:
        self.kube = kube
        self.owner = owner

    def _kind(self, canary: Canary) -> ScalerKind | None:
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return None
        kind = SCALER_KINDS.get(ref.kind)
        if kind is None:
            supported = " or ".join(SCALER_KINDS)
            raise LookupError(f"autoscalerRef.kind {ref.kind} is not supported ({supported})")
        return kind

    async def _target_scaler(self, canary: Canary, kind: ScalerKind) -> dict[str, Any]:
        ref = canary.spec.autoscaler_ref
        assert ref is not None  # `_kind` gave a kind
        ns = canary.namespace
        obj = await retry(
            lambda: self.kube.get(kind.resource, ns, ref.name), what=f"GET {ref.kind} {ns}/{ref.name}"
        )
        if obj is None:
            raise LookupError(f"autoscalerRef: {ref.kind} {ref.name}.{ns} not found")
        return obj

    async def sync_primary(self, canary: Canary, *, create_only: bool) -> None:
        """Create `<name>-primary` when missing; with `create_only=False` (promotion) also bring
        its spec in line with the target's scaler (a merge patch; removed keys sent as null)."""
        kind = self._kind(canary)
        if kind is None:
            return
        ns = canary.namespace
        want = kind.primary(await self._target_scaler(canary, kind), canary, self.owner(canary))
        pname = want["metadata"]["name"]
        current = await retry(lambda: self.kube.get(kind.resource, ns, pname), what=f"GET {ns}/{pname}")
        if current is None:
            try:
                await retry(lambda: self.kube.create(kind.resource, ns, want), what=f"create {ns}/{pname}")
            except Exception as exc:
                if status_of(exc) != 409:  # created meanwhile: fine
                    raise
            return
        if create_only:
            return
        delta = merge_diff(current.get("spec") or {}, want["spec"])
        if delta:
            await retry(lambda: self.kube.patch(kind.resource, ns, pname, {"spec": delta}),
                        what=f"sync {ns}/{pname}")  # fmt: skip

    async def pause_target(self, canary: Canary) -> None:
        """Idle: the target's scaler must not scale the canary up (KEDA only; an HPA never scales
        a Deployment at 0 replicas)."""
        await self._set_paused(canary, "0")

    async def resume_target(self, canary: Canary) -> None:
        """The canary runs (or is given back on revert): its scaler scales it again."""
        await self._set_paused(canary, None)

    async def _set_paused(self, canary: Canary, value: str | None) -> None:
        kind = self._kind(canary)
        if kind is None or not kind.pausable:
            return
        ref = canary.spec.autoscaler_ref
        assert ref is not None
        ns = canary.namespace
        so = await self._target_scaler(canary, kind)
        if ((so.get("metadata") or {}).get("annotations") or {}).get(PAUSED_REPLICAS) == value:
            return
        body = {"metadata": {"annotations": {PAUSED_REPLICAS: value}}}
        await retry(lambda: self.kube.patch(kind.resource, ns, ref.name, body),
                    what=f"{'pause' if value else 'resume'} {ref.kind} {ns}/{ref.name}")  # fmt: skip
