"""The primary copies of `autoscalerRef` (HPA and KEDA ScaledObject), as pure builders."""

from __future__ import annotations

from typing import Any

import pytest

from canary_stream.kube.objects import CanaryRef
from canary_stream.spec.load import parse_canary
from canary_stream.spec.model import Canary
from canary_stream.workload.scalers import primary_hpa, primary_query, primary_scaled_object

OWNER = CanaryRef("canary-stream.dev", "test", "podinfo", "uid-1")


def canary(**ref: Any) -> Canary:
    parsed, _warnings = parse_canary(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "autoscalerRef": {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "name": "podinfo-so",
                    **ref,
                },
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10},
            },
        }
    )
    return parsed


def scaled_object() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "podinfo-so", "namespace": "test", "labels": {"team": "a"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "pollingInterval": 10,
            "cooldownPeriod": 20,
            "minReplicaCount": 1,
            "maxReplicaCount": 3,
            "advanced": {"restoreToOriginalReplicaCount": True},
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "requests",
                    "metadata": {
                        "serverAddress": "http://prometheus:9090",
                        "query": 'sum(rate(http_requests_total{app="podinfo-canary"}[30s]))',
                        "threshold": "100",
                    },
                },
                {
                    "type": "prometheus",
                    "name": "latency",
                    "metadata": {"query": 'max(rate(x{deployment="podinfo"}[1m]))', "threshold": "5"},
                },
                {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
            ],
        },
    }


def test_primary_scaled_object_scales_the_primary_with_the_targets_settings() -> None:
    so = scaled_object()
    out = primary_scaled_object(so, canary(), OWNER)
    assert out["metadata"]["name"] == "podinfo-so-primary"
    assert out["metadata"]["labels"] == {"team": "a"}
    assert out["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = out["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "podinfo-primary",
    }
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (10, 20)
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    assert spec["advanced"] == {"restoreToOriginalReplicaCount": True}
    queries = [t["metadata"].get("query") for t in spec["triggers"]]
    assert queries == [
        'sum(rate(http_requests_total{app="podinfo-primary"}[30s]))',
        'max(rate(x{deployment="podinfo-primary"}[1m]))',
        None,
    ]
    assert spec["triggers"][2] == so["spec"]["triggers"][2]
    # the target's object is left as it was
    assert so["spec"]["triggers"][0]["metadata"]["query"].endswith('"podinfo-canary"}[30s]))')
    assert so["spec"]["scaleTargetRef"]["name"] == "podinfo"


def test_primary_scaler_queries_and_replicas_override() -> None:
    c = canary(
        primaryScalerQueries={"latency": "vector(1)"},
        primaryScalerReplicas={"minReplicas": 2, "maxReplicas": 5},
    )
    spec = primary_scaled_object(scaled_object(), c, OWNER)["spec"]
    assert [t["metadata"].get("query") for t in spec["triggers"]][:2] == [
        'sum(rate(http_requests_total{app="podinfo-primary"}[30s]))',
        "vector(1)",
    ]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ('x{app="podinfo"}', 'x{app="podinfo-primary"}'),
        ('x{app="podinfo-canary"}', 'x{app="podinfo-primary"}'),
        ('x{app="podinfo-primary"}', 'x{app="podinfo-primary"}'),
        ('x{app=~"podinfo|podinfo-canary"}', 'x{app=~"podinfo-primary|podinfo-primary"}'),
        ('x{app="podinfo2", ns="podinfo-test"}', 'x{app="podinfo2", ns="podinfo-test"}'),
        ('x{app="my-podinfo"}', 'x{app="my-podinfo"}'),
    ],
)
def test_queries_are_rewritten_on_whole_names_only(query: str, want: str) -> None:
    assert primary_query(query, "podinfo") == want


def test_primary_hpa_scales_the_primary() -> None:
    hpa = {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
        },
    }
    c = canary(kind="HorizontalPodAutoscaler", name="podinfo", primaryScalerReplicas={"maxReplicas": 9})
    out = primary_hpa(hpa, c, OWNER)
    assert out["metadata"]["name"] == "podinfo-primary"
    assert out["spec"]["scaleTargetRef"] == {"kind": "Deployment", "name": "podinfo-primary"}
    assert (out["spec"]["minReplicas"], out["spec"]["maxReplicas"]) == (2, 9)
