"""The ingress-nginx router's pure parts: the canary Ingress's spec and annotations for each
split, and reading the split back (Flagger's pkg/router/ingress.go); the real-apiserver tests are
in test_routers_kube.py."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canary_stream.router.base import Routes
from canary_stream.router.nginx import (
    base_annotations,
    canary_ingress_spec,
    match_annotations,
    routed_annotations,
    routes_of,
)
from canary_stream.spec.model import Canary

P = "nginx.ingress.kubernetes.io"


def canary(match: list[dict[str, Any]] | None = None, service_name: str | None = None) -> Canary:
    analysis: dict[str, Any] = {"interval": "1m", "threshold": 5}
    analysis.update({"iterations": 10, "match": match} if match else {"stepWeight": 10, "maxWeight": 50})
    service: dict[str, Any] = {"port": 9898}
    if service_name:
        service["name"] = service_name
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "nginx",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                "service": service,
                "analysis": analysis,
            },
        }
    )


def ingress_manifest(
    paths: list[tuple[str, str]], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """An Ingress `podinfo` of class nginx sending `(path, service)` rules of one host to port 9898
    (also the user's Ingress of the real-apiserver tests)."""
    meta: dict[str, Any] = {"name": "podinfo"}
    if annotations:
        meta["annotations"] = annotations
    rule_paths = [
        {"path": path, "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 9898}}}}
        for path, svc in paths
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "app.example.com", "http": {"paths": rule_paths}}],
        },
    }


def ingress(*backends: str) -> dict[str, Any]:
    return ingress_manifest([(f"/{b}", b) for b in backends])


def test_backends_naming_the_apex_go_to_its_canary_service_and_others_stay() -> None:
    spec = canary_ingress_spec(canary(), ingress("podinfo", "other"))
    names = [p["backend"]["service"]["name"] for p in spec["rules"][0]["http"]["paths"]]
    assert names == ["podinfo-canary", "other"]
    assert spec["ingressClassName"] == "nginx"


def test_the_apex_is_service_name_when_set() -> None:
    spec = canary_ingress_spec(canary(service_name="web"), ingress("web"))
    assert spec["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "web-canary"


def test_an_ingress_without_the_apex_backend_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec.ingressRef: .* no backend naming Service podinfo"):
        canary_ingress_spec(canary(), ingress("other"))


def test_base_annotations_drop_canary_keys_and_kubectl_and_start_at_weight_0() -> None:
    out = base_annotations(
        {
            f"{P}/rewrite-target": "/",
            f"{P}/canary-by-header": "x-canary",
            f"{P}/canary-weight": "30",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        }
    )
    assert out[f"{P}/rewrite-target"] == "/"
    assert out[f"{P}/canary"] == "true" and out[f"{P}/canary-weight"] == "0"
    assert (
        f"{P}/canary-by-header" not in out and "kubectl.kubernetes.io/last-applied-configuration" not in out
    )


@given(st.integers(0, 100))
def test_a_weight_written_reads_back(weight: int) -> None:
    c = canary()
    annotations = routed_annotations(c, {f"{P}/ssl-redirect": "false"}, Routes(100 - weight, weight))
    assert routes_of(c, annotations) == Routes(100 - weight, weight)
    assert annotations[f"{P}/ssl-redirect"] == "false"


def test_ab_conditions_while_the_canary_gets_matching_users_then_gone() -> None:
    c = canary(
        [{"headers": {"x-canary": {"exact": "insider"}}}, {"headers": {"cookie": {"exact": "canary"}}}]
    )
    on = routed_annotations(c, {}, Routes(0, 100))
    assert on[f"{P}/canary-by-header"] == "x-canary" and on[f"{P}/canary-by-header-value"] == "insider"
    assert on[f"{P}/canary-by-cookie"] == "canary"
    assert routes_of(c, on) == Routes(0, 100)
    off = routed_annotations(c, on, Routes(100, 0))
    assert not {k for k in off if k.startswith(f"{P}/canary-by")}
    assert routes_of(c, off) == Routes(100, 0)


def test_a_header_regex_becomes_the_pattern() -> None:
    out = match_annotations([{"headers": {"user-agent": {"regex": ".*Firefox.*"}}}])
    assert out == {f"{P}/canary-by-header": "user-agent", f"{P}/canary-by-header-pattern": ".*Firefox.*"}


@pytest.mark.parametrize(
    ("match", "field"),
    [
        ([{"headers": {"cookie": {"regex": "canary=always"}}}], r"match\[0\].headers.cookie"),
        ([{"sourceLabels": {"app": "x"}}], r"match\[0\].sourceLabels"),
        ([{"headers": {"x-canary": {"prefix": "in"}}}], r"match\[0\].headers.x-canary"),
    ],
)
def test_what_ingress_nginx_cannot_match_is_refused_by_field(match: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        match_annotations(match)


def test_a_weight_that_is_not_a_number_is_reported() -> None:
    with pytest.raises(ValueError, match="canary-weight"):
        routes_of(canary(), {f"{P}/canary-weight": "ten"})
