"""Service targets (`targetRef.kind: Service`): the copies of the target Service and the checks
on the Canary (pure functions; the real-apiserver scenario is in test_kube_controller.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from canary_stream.kube.objects import CanaryRef
from canary_stream.spec.load import parse_canary
from canary_stream.workload.kubernetes import target_kind
from canary_stream.workload.service import same_copy, service_copy, service_revision

OWNER = CanaryRef("canary-stream.dev", "test", "podinfo", "uid-1")


def target_service(**spec: Any) -> dict[str, Any]:
    """A Service as the API server returns it (allocated IPs and node ports, server metadata)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "podinfo",
            "namespace": "test",
            "uid": "target-uid",
            "resourceVersion": "41",
            "creationTimestamp": "2026-11-26T00:00:00Z",
            "labels": {"app": "podinfo"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "checkout",
            },
        },
        "spec": {
            "type": "NodePort",
            "selector": {"app": "podinfo", "version": "v2"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 9898, "targetPort": 9898, "protocol": "TCP", "nodePort": 30080}
            ],
            **spec,
        },
        "status": {"loadBalancer": {}},
    }


def test_a_new_copy_leaves_allocations_to_the_api_server_and_server_metadata_out() -> None:
    out = service_copy(target_service(), "podinfo-canary", OWNER)
    meta, spec = out["metadata"], out["spec"]
    assert meta["name"] == "podinfo-canary" and meta["namespace"] == "test"
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["labels"] == {"app": "podinfo"}
    assert meta["annotations"] == {"team": "checkout"}  # kubectl's last-applied dropped
    assert not {"uid", "resourceVersion", "creationTimestamp"} & meta.keys()
    assert "status" not in out
    assert "clusterIP" not in spec and "clusterIPs" not in spec
    assert spec["ports"] == [{"name": "http", "port": 9898, "targetPort": 9898, "protocol": "TCP"}]
    assert spec["selector"] == {"app": "podinfo", "version": "v2"}


def test_a_replacing_copy_keeps_what_was_allocated_to_it() -> None:
    current = service_copy(target_service(), "podinfo-canary", OWNER)
    current["metadata"]["resourceVersion"] = "77"
    current["spec"].update(clusterIP="10.96.0.11", clusterIPs=["10.96.0.11"])
    current["spec"]["ports"][0]["nodePort"] = 31000
    changed = target_service(selector={"app": "podinfo", "version": "v3"})
    out = service_copy(changed, "podinfo-canary", OWNER, current)
    assert out["metadata"]["resourceVersion"] == "77"
    assert out["spec"]["clusterIP"] == "10.96.0.11"
    assert out["spec"]["ports"][0]["nodePort"] == 31000  # not the target's 30080
    assert out["spec"]["selector"]["version"] == "v3"


def test_a_copy_turned_cluster_ip_drops_its_node_ports() -> None:
    current = service_copy(target_service(), "podinfo-canary", OWNER)
    current["spec"]["ports"][0]["nodePort"] = 31000
    out = service_copy(target_service(type="ClusterIP"), "podinfo-canary", OWNER, current)
    assert "nodePort" not in out["spec"]["ports"][0]


def test_same_copy_ignores_allocations_but_sees_spec_labels_and_annotations() -> None:
    target = target_service()
    current = service_copy(target, "podinfo-canary", OWNER)
    current["spec"].update(clusterIP="10.96.0.11", clusterIPs=["10.96.0.11"])
    current["spec"]["ports"][0]["nodePort"] = 31000
    assert same_copy(current, target)
    assert not same_copy(current, target_service(selector={"app": "podinfo", "version": "v3"}))
    relabelled = copy.deepcopy(target)
    relabelled["metadata"]["labels"]["tier"] = "web"
    assert not same_copy(current, relabelled)
    assert not same_copy(current, target, "PreferClose")


def test_the_revision_is_the_hash_of_the_spec_only() -> None:
    a = target_service()
    b = copy.deepcopy(a)
    b["metadata"]["labels"]["tier"] = "web"
    b["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    assert service_revision(a) == service_revision(b)
    assert service_revision(a) != service_revision(
        target_service(selector={"app": "podinfo", "version": "v3"})
    )


def canary_of(target_ref: dict[str, Any], **spec: Any) -> Any:
    doc = {
        "apiVersion": "canary-stream.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": target_ref,
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "iterations": 10},
            **spec,
        },
    }
    return parse_canary(doc)[0]


def test_a_core_service_target_is_accepted() -> None:
    assert (
        target_kind(canary_of({"apiVersion": "v1", "kind": "Service", "name": "podinfo"})).plural
        == "services"
    )


@pytest.mark.parametrize(
    ("target_ref", "spec", "field"),
    [
        (
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"},
            {},
            "targetRef.apiVersion",
        ),
        (
            {"apiVersion": "v1", "kind": "Service", "name": "podinfo"},
            {
                "autoscalerRef": {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "name": "podinfo",
                }
            },
            "autoscalerRef",
        ),
    ],
)
def test_what_a_service_target_cannot_do_is_refused_by_field(
    target_ref: dict[str, Any], spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(LookupError, match=field):
        target_kind(canary_of(target_ref, **spec))
