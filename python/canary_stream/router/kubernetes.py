"""The Kubernetes Services every provider needs (Flagger's KubernetesDefaultRouter): ClusterIP
Services `<apex>-canary` (the target's pods), `<apex>-primary` and the apex `<apex>` (both the
primary's pods, `<label>: <value>-primary`). The mesh routers split traffic between the first two;
the apex is what clients call.

The selector label and its value come from the target workload's `spec.selector.matchLabels` (the
first of `selector_labels` it has), extra ports from its containers when `portDiscovery` is on.
Builders are pure; `ServiceRouter` does the API calls."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from canary_stream.router.kube_common import (
    FIELD_MANAGER,
    KUBECTL_ANNOTATION,
    STRICT,
    JsonObject,
    dict_body,
    flux_safe,
    is_owned_by,
    owner_references,
    read_or_none,
    service_names,
)
from canary_stream.spec.model import Canary, CustomMetadata

DEFAULT_SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
# Mesh sidecars whose ports are never published (Flagger's list).
_SIDECARS = frozenset({"istio-proxy", "envoy"})


@dataclass(frozen=True)
class TargetInfo:
    """What the Services are built from: the pod selector label, the target's value for it, and the
    extra ports found by portDiscovery (name -> container port)."""

    label: str
    value: str
    ports: dict[str, int] = field(default_factory=dict)


def target_info(
    canary: Canary, workload: JsonObject, selector_labels: Sequence[str] = DEFAULT_SELECTOR_LABELS
) -> TargetInfo:
    """Flagger's GetMetadata from a Deployment/DaemonSet (camelCase dict). ValueError naming the
    workload when its matchLabels carry none of `selector_labels`."""
    match_labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for label in selector_labels:
        if label in match_labels:
            ports = discovered_ports(canary, workload) if canary.spec.service.port_discovery else {}
            return TargetInfo(label, str(match_labels[label]), ports)
    name = workload.get("metadata", {}).get("name")
    raise ValueError(f"{name}: spec.selector.matchLabels must contain one of {', '.join(selector_labels)}")


def discovered_ports(canary: Canary, workload: JsonObject) -> dict[str, int]:
    """Container ports other than the main one (service.targetPort, else service.port) and other than
    mesh sidecars'; unnamed ports are called `tcp-<container>-<index>`."""
    svc = canary.spec.service
    pod = (((workload.get("spec") or {}).get("template") or {}).get("spec")) or {}
    ports: dict[str, int] = {}
    for container in pod.get("containers") or []:
        if container.get("name") in _SIDECARS:
            continue
        for i, p in enumerate(container.get("ports") or []):
            number = int(p["containerPort"])
            main = svc.target_port if svc.target_port is not None else svc.port
            if (isinstance(main, int) and number == main) or (
                isinstance(main, str) and p.get("name") == main
            ):
                continue
            ports[p.get("name") or f"tcp-{container.get('name')}-{i}"] = number
    return ports


def service_ports(canary: Canary, extra: dict[str, int]) -> list[JsonObject]:
    """The main port (portName default `http`, targetPort default the port, appProtocol) plus the
    discovered ones, sorted by name for a stable comparison."""
    svc = canary.spec.service
    main: JsonObject = {
        "name": svc.port_name or "http",
        "protocol": "TCP",
        "port": svc.port,
        "targetPort": svc.target_port if svc.target_port is not None else svc.port,
    }
    if svc.app_protocol:
        main["appProtocol"] = svc.app_protocol
    others = [
        {"name": name, "protocol": "TCP", "port": port, "targetPort": port}
        for name, port in sorted(extra.items())
    ]
    return [main, *others]


def service_spec(canary: Canary, selector: dict[str, str], extra_ports: dict[str, int]) -> JsonObject:
    """A ClusterIP Service spec (`clusterIP: None` when headless)."""
    svc = canary.spec.service
    spec: JsonObject = {
        "type": "ClusterIP",
        "selector": selector,
        "ports": service_ports(canary, extra_ports),
    }
    if svc.headless:
        spec["clusterIP"] = "None"
    if svc.traffic_distribution:
        spec["trafficDistribution"] = svc.traffic_distribution
    return spec


def build_service(
    canary: Canary, name: str, info: TargetInfo, pod_value: str, metadata: CustomMetadata | None
) -> JsonObject:
    """Service `name` selecting `<label>: pod_value`, labelled `<label>: name` plus the custom
    metadata, owned by the Canary."""
    labels = dict(metadata.labels) if metadata else {}
    labels[info.label] = name
    meta: JsonObject = {
        "name": name,
        "namespace": canary.namespace,
        "labels": labels,
        "annotations": flux_safe(dict(metadata.annotations) if metadata else {}),
    }
    refs = owner_references(canary)
    if refs:
        meta["ownerReferences"] = refs
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": service_spec(canary, {info.label: pod_value}, info.ports),
    }


def _port_key(p: JsonObject) -> tuple[Any, ...]:
    return (p.get("name"), p.get("protocol", "TCP"), p.get("port"), p.get("targetPort"), p.get("appProtocol"))


def service_update(canary: Canary, existing: JsonObject, desired: JsonObject) -> JsonObject | None:
    """The object to write back, or None when nothing changes. Ports and selector are always
    enforced (node ports kept); labels and annotations only on Services this Canary owns, and then
    keys listed in `service.unmanagedMetadata` keep their current values."""
    spec = existing.setdefault("spec", {})
    ports = [dict(p) for p in desired["spec"]["ports"]]
    node_ports = {p.get("name"): p.get("nodePort") for p in spec.get("ports") or [] if p.get("nodePort")}
    for p in ports:
        if p["name"] in node_ports:
            p["nodePort"] = node_ports[p["name"]]
    changed = False
    if sorted(map(_port_key, ports)) != sorted(map(_port_key, spec.get("ports") or [])):
        spec["ports"] = ports
        changed = True
    if spec.get("selector") != desired["spec"]["selector"]:
        spec["selector"] = desired["spec"]["selector"]
        changed = True
    distribution = desired["spec"].get("trafficDistribution")
    if distribution is not None and spec.get("trafficDistribution") != distribution:
        spec["trafficDistribution"] = distribution
        changed = True
    if is_owned_by(existing, canary):
        meta = existing.setdefault("metadata", {})
        unmanaged = canary.spec.service.unmanaged_metadata
        labels = dict(desired["metadata"]["labels"])
        annotations = dict(desired["metadata"]["annotations"])
        if unmanaged is not None:
            labels.update({k: v for k, v in (meta.get("labels") or {}).items() if k in unmanaged.labels})
            annotations.update(
                {k: v for k, v in (meta.get("annotations") or {}).items() if k in unmanaged.annotations}
            )
        if (meta.get("labels") or {}) != labels:
            meta["labels"] = labels
            changed = True
        if (meta.get("annotations") or {}) != annotations:
            meta["annotations"] = annotations
            changed = True
    return existing if changed else None


class ServiceRouter:
    """Creates and updates the apex, `-primary` and `-canary` Services (not a traffic router: the
    factory composes it with a mesh router). A Service target (`targetRef.kind: Service`) needs
    none of them, as in Flagger."""

    def __init__(self, api: ApiClient, selector_labels: Sequence[str] = DEFAULT_SELECTOR_LABELS) -> None:
        self.api = api
        self.core = CoreV1Api(api)
        self.apps = AppsV1Api(api)
        self.selector_labels = tuple(selector_labels)

    async def target(self, canary: Canary) -> TargetInfo:
        """Read the target workload and derive the selector and ports (LookupError if it is missing)."""
        ref = canary.spec.target_ref
        obj: Any
        try:
            if ref.kind == "DaemonSet":
                obj = await self.apps.read_namespaced_daemon_set(ref.name, canary.namespace)
            else:
                obj = await self.apps.read_namespaced_deployment(ref.name, canary.namespace)
        except ApiException as e:
            if e.status == 404:
                raise LookupError(
                    f"{ref.kind} {ref.name}.{canary.namespace} (spec.targetRef) not found"
                ) from e
            raise
        workload: JsonObject = self.api.sanitize_for_serialization(obj)
        return target_info(canary, workload, self.selector_labels)

    async def initialize(self, canary: Canary) -> None:
        """The `-canary` and `-primary` Services (Flagger creates these before the primary is ready;
        the apex follows in `reconcile`)."""
        if canary.spec.target_ref.kind == "Service":
            return
        info = await self.target(canary)
        await self._initialize(canary, info)

    async def reconcile(self, canary: Canary) -> None:
        """All three Services; the apex selects the primary's pods."""
        if canary.spec.target_ref.kind == "Service":
            return
        info = await self.target(canary)
        await self._initialize(canary, info)
        names = service_names(canary)
        await self._apply(
            canary, build_service(canary, names.apex, info, f"{info.value}-primary", canary.spec.service.apex)
        )

    async def _initialize(self, canary: Canary, info: TargetInfo) -> None:
        names = service_names(canary)
        svc = canary.spec.service
        await self._apply(canary, build_service(canary, names.canary, info, info.value, svc.canary))
        await self._apply(
            canary, build_service(canary, names.primary, info, f"{info.value}-primary", svc.primary)
        )

    async def _apply(self, canary: Canary, desired: JsonObject) -> str:
        name = desired["metadata"]["name"]
        existing = await self._read(canary.namespace, name)
        if existing is None:
            await self.core.create_namespaced_service(
                canary.namespace, dict_body(desired), field_manager=FIELD_MANAGER, field_validation=STRICT
            )
            return "created"
        update = service_update(canary, existing, desired)
        if update is None:
            return "unchanged"
        await self.core.replace_namespaced_service(
            name, canary.namespace, dict_body(update), field_manager=FIELD_MANAGER, field_validation=STRICT
        )
        return "updated"

    async def _read(self, namespace: str, name: str) -> JsonObject | None:
        return await read_or_none(self.api, self.core.read_namespaced_service(name, namespace))

    async def finalize(self, canary: Canary) -> None:
        """revertOnDeletion: an apex Service canary-stream did not create selects the target's pods
        again (its `kubectl apply` selector when recorded); one it created is left to GC."""
        if canary.spec.target_ref.kind == "Service":
            return
        names = service_names(canary)
        svc = await self._read(canary.namespace, names.apex)
        if svc is None or is_owned_by(svc, canary):
            return
        applied = (svc.get("metadata", {}).get("annotations") or {}).get(KUBECTL_ANNOTATION)
        selector: dict[str, str] | None = None
        if applied:
            selector = (json.loads(applied).get("spec") or {}).get("selector")
        if selector is None:
            info = await self.target(canary)
            selector = {info.label: info.value}
        if svc["spec"].get("selector") != selector:
            svc["spec"]["selector"] = selector
            await self.core.replace_namespaced_service(
                names.apex,
                canary.namespace,
                dict_body(svc),
                field_manager=FIELD_MANAGER,
                field_validation=STRICT,
            )
