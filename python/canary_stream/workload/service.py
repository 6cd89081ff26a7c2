"""Service targets (`targetRef.kind: Service`), as Flagger's pkg/canary/service_controller.go.

The workloads behind the Service are run by someone else (two Deployments, say, and the target
Service's selector names the release to try). The Canary works on Services only:
- `<target>-canary` is a copy of the target Service, kept in line with it (Flagger copies it on
  every reconcile; here on initialisation and whenever a run looks at the canary's readiness);
- `<target>-primary` is a copy made once, and given the target's spec on promotion;
- the mesh router splits traffic between the two; the target Service itself is the apex.
Nothing is scaled, both sides are always ready, and a revision is the hash of the target's spec.

Copies never take the target's cluster IPs or node ports (the API server allocates their own,
which they keep on every later update: a cluster IP is immutable, a node port cannot be shared),
and leave out what belongs to the original object (uid, resourceVersion, status, kubectl's
last-applied annotation)."""

from __future__ import annotations

import copy
from typing import Any

from canary_stream.controller.hashing import spec_hash
from canary_stream.kube.objects import CanaryRef

#: Spec fields the API server allocates for each Service (a cluster IP is immutable).
_ASSIGNED = ("clusterIP", "clusterIPs", "healthCheckNodePort")
_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
#: Metadata kept in a copy (the rest belongs to the original object).
_KEPT_METADATA = ("labels", "annotations")


def canary_service_name(target: str) -> str:
    return f"{target}-canary"


def service_revision(service: dict[str, Any]) -> str:
    """Hash of the target Service's spec (Flagger's hasSpecChanged on `Service.Spec`)."""
    return spec_hash(service.get("spec") or {})


def service_copy(
    source: dict[str, Any],
    name: str,
    owner: CanaryRef,
    current: dict[str, Any] | None = None,
    traffic_distribution: str | None = None,
) -> dict[str, Any]:
    """`source` as the Service `name`, owned by the Canary. With `current` (the copy as it is now),
    its cluster IPs and resourceVersion are kept so the result can replace it; without, the API
    server assigns new ones (a ClusterIP Service cannot be created with another's IP)."""
    meta = _copied_metadata(source)
    meta.update(
        name=name,
        namespace=(source.get("metadata") or {}).get("namespace"),
        ownerReferences=[owner.owner_reference()],
    )
    version = ((current or {}).get("metadata") or {}).get("resourceVersion")
    if version:
        meta["resourceVersion"] = version
    spec = _copied_spec(source, current, traffic_distribution)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def _copied_spec(
    source: dict[str, Any], current: dict[str, Any] | None, traffic_distribution: str | None
) -> dict[str, Any]:
    """The source's spec without its allocations, given `current`'s (when there is one)."""
    spec = copy.deepcopy(source.get("spec") or {})
    for key in _ASSIGNED:
        spec.pop(key, None)
    for port in spec.get("ports") or []:
        port.pop("nodePort", None)
    if current is not None:
        _keep_allocations(spec, current.get("spec") or {})
    if traffic_distribution:
        spec["trafficDistribution"] = traffic_distribution
    return spec


def _copied_metadata(source: dict[str, Any]) -> dict[str, Any]:
    """The source's labels and annotations (kubectl's last-applied left out)."""
    meta = source.get("metadata") or {}
    out: dict[str, Any] = {k: copy.deepcopy(meta[k]) for k in _KEPT_METADATA if meta.get(k)}
    annotations = {k: v for k, v in (out.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS}
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def _keep_allocations(spec: dict[str, Any], current: dict[str, Any]) -> None:
    """Give `spec` the cluster IPs and node ports the API server allocated to `current` (node
    ports matched by port name, else by port number), where `spec` still wants them."""
    for key in _ASSIGNED:
        if key in current:
            spec[key] = copy.deepcopy(current[key])
    wants_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    allocated = {
        (p.get("name") or p.get("port")): p["nodePort"]
        for p in current.get("ports") or []
        if p.get("nodePort")
    }
    for port in spec.get("ports") or [] if wants_node_ports else []:
        node_port = allocated.get(port.get("name") or port.get("port"))
        if node_port:
            port["nodePort"] = node_port


def same_copy(copy_: dict[str, Any], source: dict[str, Any], traffic_distribution: str | None = None) -> bool:
    """`copy_` already carries `source`'s spec (its own allocations aside), labels and annotations."""
    have = copy_.get("metadata") or {}
    want = _copied_metadata(source)
    return (copy_.get("spec") or {}) == _copied_spec(source, copy_, traffic_distribution) and all(
        (have.get(k) or {}) == (want.get(k) or {}) for k in _KEPT_METADATA
    )
