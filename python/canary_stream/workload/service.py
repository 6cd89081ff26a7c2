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
    meta = source.get("metadata") or {}
    spec = copy.deepcopy(source.get("spec") or {})
    for key in _ASSIGNED:
        spec.pop(key, None)
    for port in spec.get("ports") or []:
        port.pop("nodePort", None)
    if current is not None:
        _keep_allocations(spec, current.get("spec") or {})
    if traffic_distribution:
        spec["trafficDistribution"] = traffic_distribution
    out_meta: dict[str, Any] = {k: copy.deepcopy(meta[k]) for k in _KEPT_METADATA if meta.get(k)}
    annotations = {k: v for k, v in (out_meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS}
    if annotations:
        out_meta["annotations"] = annotations
    else:
        out_meta.pop("annotations", None)
    out_meta.update(name=name, namespace=meta.get("namespace"), ownerReferences=[owner.owner_reference()])
    if current is not None:
        version = (current.get("metadata") or {}).get("resourceVersion")
        if version:
            out_meta["resourceVersion"] = version
    return {"apiVersion": "v1", "kind": "Service", "metadata": out_meta, "spec": spec}


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
    """`copy_` already carries `source`'s spec (cluster IPs aside), labels and annotations."""
    want = service_copy(source, "", CanaryRef("", "", ""), copy_, traffic_distribution)
    have_meta = copy_.get("metadata") or {}
    return (copy_.get("spec") or {}) == want["spec"] and all(
        (have_meta.get(k) or {}) == (want["metadata"].get(k) or {}) for k in _KEPT_METADATA
    )
