"""The Kubernetes routers' pure builders: what each object looks like for a spec and a split, and
that reading an object back gives the split it was built with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from canary_stream.router.base import Routes
from canary_stream.router.factory import SUPPORTED_PROVIDERS, mesh_router_for, router_for
from canary_stream.router.gateway_api import (
    GatewayAPIRouter,
    http_route_spec,
    route_matches,
    routes_from_http_route,
)
from canary_stream.router.istio import (
    IstioRouter,
    destination_rule_spec,
    http_routes,
    routes_from_virtual_service,
    virtual_service_spec,
)
from canary_stream.router.kube_common import (
    ORIGINAL_CONFIG_ANNOTATION,
    RouterNotReady,
    check_routes,
    contains,
    flux_safe,
    owner_references,
    service_names,
    stored_original_spec,
)
from canary_stream.router.kubernetes import (
    TargetInfo,
    build_service,
    discovered_ports,
    service_update,
    target_info,
)
from canary_stream.router.session import Cookies, next_cookies
from canary_stream.router.smi import SmiRouter, parse_weight, routes_from_traffic_split, traffic_split_spec
from canary_stream.spec.model import Canary

COOKIE_MATCH = {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}
HEADER_MATCH = {"headers": {"x-canary": {"exact": "insider"}}}


def make_canary(
    service: dict[str, Any] | None = None, analysis: dict[str, Any] | None = None, **spec: Any
) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898, **(service or {})},
        "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 10, **(analysis or {})},
        **spec,
    }
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {
                "name": "podinfo",
                "namespace": "test",
                "uid": "0b5c6f0e-1111-2222-3333-444455556666",
            },
            "spec": body,
        }
    )


def vs_object(canary: Canary, routes: Routes) -> dict[str, Any]:
    return {"metadata": {"name": "podinfo"}, "spec": virtual_service_spec(canary, routes)}


# --------------------------------------------------------------------------------------------- common


def test_service_names_default_to_the_target_and_follow_service_name() -> None:
    assert service_names(make_canary()) == service_names(make_canary()).__class__(
        "podinfo", "podinfo-primary", "podinfo-canary"
    )
    assert service_names(make_canary({"name": "web"})).canary == "web-canary"


def test_check_routes_rejects_weights_that_do_not_add_up() -> None:
    check_routes(Routes(90, 10))
    for bad in (Routes(90, 20), Routes(-1, 101), Routes(100, 0, mirrored=True, mirror_weight=101)):
        with pytest.raises(ValueError, match="weight"):
            check_routes(bad)


def test_owner_reference_points_at_the_canary_and_needs_a_uid() -> None:
    (ref,) = owner_references(make_canary())
    assert ref == {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "name": "podinfo",
        "uid": "0b5c6f0e-1111-2222-3333-444455556666",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    no_uid = Canary.model_validate(
        {**make_canary().model_dump(by_alias=True), "metadata": {"name": "podinfo", "namespace": "test"}}
    )
    assert owner_references(no_uid) == []


def test_flux_toolkit_keys_are_never_copied_and_flux_is_told_to_keep_off() -> None:
    out = flux_safe({"team": "a", "kustomize.toolkit.fluxcd.io/checksum": "x"})
    assert out == {
        "team": "a",
        "kustomize.toolkit.fluxcd.io/reconcile": "disabled",
        "helm.toolkit.fluxcd.io/driftDetection": "disabled",
    }


def test_contains_ignores_server_defaults_but_not_changes() -> None:
    desired = {"rules": [{"backendRefs": [{"name": "a", "weight": 10}]}]}
    defaulted = {"rules": [{"backendRefs": [{"name": "a", "weight": 10, "group": "", "kind": "Service"}]}]}
    assert contains(desired, defaulted)
    assert not contains(desired, {"rules": [{"backendRefs": [{"name": "a", "weight": 20}]}]})
    assert not contains(desired, {"rules": [{"backendRefs": []}]})
    assert contains({"value": 50}, {"value": 50.0})


def test_stored_original_spec_reads_ours_flaggers_and_kubectls() -> None:
    spec = {"hosts": ["x"]}
    for key, value in (
        (ORIGINAL_CONFIG_ANNOTATION, json.dumps(spec)),
        ("flagger.kubernetes.io/original-configuration", json.dumps(spec)),
        ("kubectl.kubernetes.io/last-applied-configuration", json.dumps({"spec": spec})),
    ):
        assert stored_original_spec({"metadata": {"annotations": {key: value}}}) == spec
    assert stored_original_spec({"metadata": {}}) is None


# --------------------------------------------------------------------------------------------- Services


DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "podinfo"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "podinfo-app", "tier": "web"}},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "podinfo",
                        "ports": [{"name": "http", "containerPort": 9898}, {"containerPort": 9797}],
                    },
                    {"name": "grpc", "ports": [{"name": "grpc", "containerPort": 9999}]},
                    {"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]},
                ]
            }
        },
    },
}


def test_target_info_takes_the_first_selector_label_present_and_discovers_ports() -> None:
    plain = target_info(make_canary(), DEPLOYMENT)
    assert plain == TargetInfo("app.kubernetes.io/name", "podinfo-app", {})
    discovered = target_info(make_canary({"portDiscovery": True}), DEPLOYMENT)
    # main port 9898 and the sidecar's are left out; an unnamed port gets tcp-<container>-<index>
    assert discovered.ports == {"tcp-podinfo-1": 9797, "grpc": 9999}
    by_name = discovered_ports(make_canary({"portDiscovery": True, "targetPort": "grpc"}), DEPLOYMENT)
    assert by_name == {"http": 9898, "tcp-podinfo-1": 9797}
    with pytest.raises(ValueError, match="matchLabels must contain one of app, name"):
        target_info(
            make_canary(), {"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"k": "v"}}}}
        )


def test_services_select_primary_or_canary_pods_with_spec_ports_and_metadata() -> None:
    canary = make_canary(
        {
            "portName": "web",
            "targetPort": "http",
            "appProtocol": "http",
            "headless": True,
            "apex": {"labels": {"exposed": "yes"}, "annotations": {"note": "apex"}},
        }
    )
    info = TargetInfo("app", "podinfo", {"grpc": 9999})
    apex = build_service(canary, "podinfo", info, "podinfo-primary", canary.spec.service.apex)
    assert apex["metadata"]["labels"] == {"exposed": "yes", "app": "podinfo"}
    assert apex["metadata"]["annotations"]["note"] == "apex"
    assert apex["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}
    assert apex["spec"]["clusterIP"] == "None"
    assert apex["spec"]["ports"] == [
        {"name": "web", "protocol": "TCP", "port": 9898, "targetPort": "http", "appProtocol": "http"},
        {"name": "grpc", "protocol": "TCP", "port": 9999, "targetPort": 9999},
    ]
    canary_svc = build_service(canary, "podinfo-canary", info, "podinfo", None)
    assert canary_svc["spec"]["selector"] == {"app": "podinfo"}
    assert canary_svc["metadata"]["labels"] == {"app": "podinfo-canary"}


def test_a_service_canary_stream_did_not_create_gets_selector_and_ports_but_keeps_its_metadata() -> None:
    canary = make_canary({"apex": {"labels": {"ours": "1"}}})
    info = TargetInfo("app", "podinfo")
    desired = build_service(canary, "podinfo", info, "podinfo-primary", canary.spec.service.apex)
    users = {
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo", "owner": "team"}},
        "spec": {
            "selector": {"app": "podinfo"},
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 9898, "targetPort": 9898, "nodePort": 30080}
            ],
        },
    }
    updated = service_update(canary, json.loads(json.dumps(users)), desired)
    assert updated is not None
    assert updated["spec"]["selector"] == {"app": "podinfo-primary"}
    assert updated["spec"]["ports"][0]["nodePort"] == 30080  # kept
    assert updated["metadata"]["labels"] == {"app": "podinfo", "owner": "team"}  # not ours: untouched
    assert service_update(canary, updated, desired) is None  # converged


def test_owned_service_metadata_is_enforced_except_unmanaged_keys() -> None:
    canary = make_canary({"unmanagedMetadata": {"labels": ["rollout"]}, "primary": {"labels": {"x": "1"}}})
    info = TargetInfo("app", "podinfo")
    desired = build_service(canary, "podinfo-primary", info, "podinfo-primary", canary.spec.service.primary)
    current = json.loads(json.dumps(desired))
    current["metadata"]["labels"] = {"app": "podinfo-primary", "rollout": "blue", "stray": "y"}
    updated = service_update(canary, current, desired)
    assert updated is not None
    assert updated["metadata"]["labels"] == {"x": "1", "app": "podinfo-primary", "rollout": "blue"}


# --------------------------------------------------------------------------------------------- Istio


def test_virtual_service_canary_route_has_both_destinations_and_pass_through_fields() -> None:
    canary = make_canary(
        {
            "gateways": ["public-gateway.istio-system.svc.cluster.local"],
            "hosts": ["app.example.com"],
            "timeout": "5s",
            "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
            "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}},
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "maxAge": "24h"},
            "rewrite": {"uri": "/"},
            "match": [{"uri": {"prefix": "/api"}}],
        }
    )
    spec = virtual_service_spec(canary, Routes(70, 30))
    assert spec["hosts"] == ["app.example.com", "podinfo"]
    assert spec["gateways"] == ["public-gateway.istio-system.svc.cluster.local"]
    (route,) = spec["http"]
    assert route["match"] == [{"uri": {"prefix": "/api"}}]
    assert route["timeout"] == "5s"
    assert route["retries"]["attempts"] == 3
    assert route["headers"] == {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}}
    assert route["corsPolicy"]["maxAge"] == "24h"
    assert route["rewrite"] == {"uri": "/"}
    assert route["route"] == [
        {"destination": {"host": "podinfo-primary"}, "weight": 70},
        {"destination": {"host": "podinfo-canary"}, "weight": 30},
    ]
    assert "mirror" not in route


def test_virtual_service_defaults_to_the_mesh_gateway_and_delegation_clears_hosts() -> None:
    spec = virtual_service_spec(make_canary({"hosts": ["*"]}))
    assert spec["hosts"] == ["*"] and spec["gateways"] == ["mesh"]
    delegate = virtual_service_spec(make_canary({"delegation": True, "portDiscovery": True}))
    assert delegate["hosts"] == [] and delegate["gateways"] == []
    assert delegate["http"][0]["route"][0]["destination"]["port"] == {"number": 9898}
    with pytest.raises(ValueError, match=r"spec\.service\.delegation"):
        virtual_service_spec(make_canary({"delegation": True, "hosts": ["a"]}))


def test_virtual_service_ab_routes_cookie_users_to_the_split_and_everyone_else_to_primary() -> None:
    canary = make_canary(
        {"match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}}]},
        {"stepWeight": None, "iterations": 10, "match": [COOKIE_MATCH, HEADER_MATCH]},
    )
    ab, default = http_routes(canary, Routes(0, 100))
    # each A/B condition layered on each service match
    assert ab["match"] == [
        {"uri": {"prefix": "/api"}, **COOKIE_MATCH},
        {"uri": {"prefix": "/v2"}, **COOKIE_MATCH},
        {"uri": {"prefix": "/api"}, **HEADER_MATCH},
        {"uri": {"prefix": "/v2"}, **HEADER_MATCH},
    ]
    assert [d["weight"] for d in ab["route"]] == [0, 100]
    assert default["match"] == [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/v2"}}]
    assert default["route"] == [{"destination": {"host": "podinfo-primary"}, "weight": 100}]
    names = service_names(canary)
    assert routes_from_virtual_service(vs_object(canary, Routes(0, 100)), names) == Routes(0, 100)


def test_virtual_service_mirror_with_and_without_a_percentage() -> None:
    canary = make_canary(analysis={"stepWeight": None, "iterations": 5, "mirror": True})
    (route,) = http_routes(canary, Routes(100, 0, mirrored=True, mirror_weight=25))
    assert route["mirror"] == {"host": "podinfo-canary"}
    assert route["mirrorPercentage"] == {"value": 25.0}
    (full,) = http_routes(canary, Routes(100, 0, mirrored=True))
    assert "mirrorPercentage" not in full
    names = service_names(canary)
    for routes in (Routes(100, 0, True, 25), Routes(100, 0, True, None), Routes(40, 60)):
        assert routes_from_virtual_service(vs_object(canary, routes), names) == routes


def test_virtual_service_tcp_routes() -> None:
    canary = make_canary({"appProtocol": "tcp", "match": [{"port": 9898}]})
    spec = virtual_service_spec(canary, Routes(80, 20))
    assert "http" not in spec
    assert spec["tcp"] == [
        {
            "match": [{"port": 9898}],
            "route": [
                {"destination": {"host": "podinfo-primary"}, "weight": 80},
                {"destination": {"host": "podinfo-canary"}, "weight": 20},
            ],
        }
    ]
    assert routes_from_virtual_service(
        {"metadata": {"name": "p"}, "spec": spec}, service_names(canary), tcp=True
    ) == (Routes(80, 20))


def test_routes_cannot_be_read_from_a_virtual_service_that_is_not_ours() -> None:
    foreign = {
        "metadata": {"name": "podinfo"},
        "spec": {"http": [{"route": [{"destination": {"host": "x"}}]}]},
    }
    with pytest.raises(LookupError, match="no route to podinfo-canary"):
        routes_from_virtual_service(foreign, service_names(make_canary()))


AFFINITY = {
    "cookieName": "flagger-cookie",
    "primaryCookieName": "primary-cookie",
    "maxAge": 3600,
    "path": "/",
    "secure": True,
}


def test_session_affinity_cookie_lifecycle() -> None:
    canary = make_canary(analysis={"sessionAffinity": AFFINITY})
    first = next_cookies(canary, Cookies(), 10)
    assert first.canary is not None and first.canary.startswith("flagger-cookie=") and len(first.canary) == 25
    assert first.primary is not None and first.primary.startswith("primary-cookie=")
    assert next_cookies(canary, first, 20) == first  # kept while the canary has weight
    back = next_cookies(canary, first, 0)
    assert back == Cookies(None, first.primary, first.canary)
    assert next_cookies(canary, back, 10).canary != first.canary  # a new run draws a new cookie


def test_session_affinity_sticky_routes_then_the_weighted_route() -> None:
    canary = make_canary({"match": [{"uri": {"prefix": "/"}}]}, {"sessionAffinity": AFFINITY})
    cookies = Cookies("flagger-cookie=abcdefghij", "primary-cookie=klmnopqrst", None)
    to_canary, to_primary, weighted = http_routes(canary, Routes(90, 10), cookies)
    assert to_canary["match"] == [
        {"uri": {"prefix": "/"}, "headers": {"Cookie": {"regex": ".*flagger-cookie.*abcdefghij.*"}}}
    ]
    assert [d["weight"] for d in to_canary["route"]] == [0, 100]
    assert to_primary["match"][0]["headers"] == {"Cookie": {"regex": ".*primary-cookie.*klmnopqrst.*"}}
    assert [d["weight"] for d in to_primary["route"]] == [100, 0]
    primary_dest, canary_dest = weighted["route"]
    assert canary_dest["headers"] == {
        "response": {"add": {"Set-Cookie": "flagger-cookie=abcdefghij; Max-Age=3600; Path=/; Secure"}}
    }
    # the primary's cookie lasts one analysis interval (10s here)
    assert primary_dest["headers"]["response"]["add"]["Set-Cookie"].startswith(
        "primary-cookie=klmnopqrst; Max-Age=10;"
    )
    names = service_names(canary)
    vs = {"metadata": {"name": "podinfo"}, "spec": {"http": [to_canary, to_primary, weighted]}}
    assert routes_from_virtual_service(vs, names) == Routes(90, 10)
    # back at weight 0: the last run's cookie is expired on sight
    expire, weighted0 = http_routes(canary, Routes(100, 0), Cookies(None, None, "flagger-cookie=abcdefghij"))
    assert expire["headers"]["response"]["add"]["Set-Cookie"] == "flagger-cookie=abcdefghij; Max-Age=-1"
    assert "headers" not in weighted0["route"][1]
    assert http_routes(canary, Routes(100, 0), Cookies()) == [weighted0]


def test_destination_rules_carry_the_traffic_policy() -> None:
    policy = {"tls": {"mode": "ISTIO_MUTUAL"}, "loadBalancer": {"simple": "LEAST_REQUEST"}}
    canary = make_canary({"trafficPolicy": policy})
    assert destination_rule_spec(canary, "podinfo-canary") == {
        "host": "podinfo-canary",
        "trafficPolicy": policy,
    }
    assert destination_rule_spec(make_canary(), "podinfo-primary") == {"host": "podinfo-primary"}


# --------------------------------------------------------------------------------------------- Gateway API

GATEWAY_REF = {"name": "public", "namespace": "gateways"}
GAMMA_REF = {"group": "core", "kind": "Service", "name": "podinfo", "port": 9898}


def test_http_route_weights_parents_hostnames_timeouts_and_filters() -> None:
    canary = make_canary(
        {
            "gatewayRefs": [GATEWAY_REF],
            "hosts": ["app.example.com"],
            "timeout": "30s",
            "backendTimeout": "10s",
            "headers": {
                "request": {"set": {"b": "2", "a": "1"}, "remove": ["x-debug"]},
                "response": {"add": {"r": "1"}},
            },
            "rewrite": {"uri": "/v2"},
            "corsPolicy": {"allowOrigin": ["https://a.example"], "allowMethods": ["GET"], "maxAge": "1h"},
        }
    )
    spec = http_route_spec(canary, Routes(90, 10))
    assert spec["parentRefs"] == [GATEWAY_REF]
    assert spec["hostnames"] == ["app.example.com"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 90},
        {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 10},
    ]
    assert rule["timeouts"] == {"request": "30s", "backendRequest": "10s"}
    assert rule["filters"] == [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {
                "set": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
                "remove": ["x-debug"],
            },
        },
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "r", "value": "1"}]}},
        {
            "type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}},
        },
        {
            "type": "CORS",
            "cors": {"allowOrigins": ["https://a.example"], "allowMethods": ["GET"], "maxAge": 3600},
        },
    ]


def test_http_route_needs_gateway_refs() -> None:
    with pytest.raises(ValueError, match=r"spec\.service\.gatewayRefs"):
        http_route_spec(make_canary())


def test_http_route_ab_cookie_match_and_default_rule() -> None:
    canary = make_canary(
        {"gatewayRefs": [GAMMA_REF], "match": [{"uri": {"prefix": "/api"}}]},
        {"stepWeight": None, "iterations": 10, "match": [COOKIE_MATCH]},
    )
    spec = http_route_spec(canary, Routes(0, 100))
    ab, default = spec["rules"]
    assert ab["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "headers": [
                {"type": "RegularExpression", "value": "^(.*?;)?(canary=always)(;.*)?$", "name": "cookie"}
            ],
        }
    ]
    assert [b["weight"] for b in ab["backendRefs"]] == [0, 100]
    assert default["matches"] == [{"path": {"type": "PathPrefix", "value": "/api"}}]
    assert [(b["name"], b["weight"]) for b in default["backendRefs"]] == [("podinfo-primary", 100)]
    route = {"metadata": {"name": "podinfo", "namespace": "test"}, "spec": spec}
    assert routes_from_http_route(route, service_names(canary)) == Routes(0, 100)


def test_http_route_mirror_filter_with_percent_follows_the_routes() -> None:
    bg = make_canary({"gatewayRefs": [GATEWAY_REF]}, {"stepWeight": None, "iterations": 5, "mirror": True})
    (rule,) = http_route_spec(bg, Routes(100, 0, mirrored=True, mirror_weight=50))["rules"]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898},
                "percent": 50,
            },
        }
    ]
    route = {"metadata": {"name": "podinfo"}, "spec": http_route_spec(bg, Routes(100, 0, True, 50))}
    assert routes_from_http_route(route, service_names(bg)) == Routes(100, 0, True, 50)
    # canary strategy: the mirror step reads back as mirrored (Flagger's would not, and repeat)
    weighted = make_canary({"gatewayRefs": [GATEWAY_REF]}, {"mirror": True})
    pre = {"metadata": {"name": "podinfo"}, "spec": http_route_spec(weighted, Routes(100, 0, mirrored=True))}
    assert routes_from_http_route(pre, service_names(weighted)) == Routes(100, 0, mirrored=True)
    (plain,) = http_route_spec(weighted, Routes(95, 5))["rules"]
    assert "filters" not in plain


def test_http_route_match_mapping_rejects_what_gateway_api_cannot_express() -> None:
    assert route_matches(
        [{"uri": {"regex": "/a.*"}, "method": {"exact": "GET"}, "queryParams": {"v": {"exact": "2"}}}], "m"
    ) == [
        {
            "path": {"type": "RegularExpression", "value": "/a.*"},
            "method": "GET",
            "queryParams": [{"type": "Exact", "value": "2", "name": "v"}],
        }
    ]
    with pytest.raises(ValueError, match=r"spec.analysis.match\[0\].headers.x-user"):
        route_matches([{"headers": {"x-user": {"prefix": "a"}}}], "spec.analysis.match")
    with pytest.raises(ValueError, match=r"m\[0\]: Gateway API cannot match on sourceLabels"):
        route_matches([{"sourceLabels": {"app": "x"}}], "m")


def test_http_route_readiness_gate_waits_for_every_parent_to_accept_the_generation() -> None:
    canary = make_canary({"gatewayRefs": [GATEWAY_REF]})
    route: dict[str, Any] = {
        "metadata": {"name": "podinfo", "namespace": "test", "generation": 3},
        "spec": http_route_spec(canary, Routes(80, 20)),
        "status": {
            "parents": [
                {
                    "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", **GATEWAY_REF},
                    "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 2}],
                }
            ]
        },
    }
    with pytest.raises(RouterNotReady, match="generation 3"):
        routes_from_http_route(route, service_names(canary))
    route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 3
    assert routes_from_http_route(route, service_names(canary)) == Routes(80, 20)


def test_http_route_session_affinity_rules() -> None:
    canary = make_canary(
        {"gatewayRefs": [GATEWAY_REF], "headers": {"response": {"add": {"x-served-by": "podinfo"}}}},
        {"sessionAffinity": {"cookieName": "c", "maxAge": 60}},
    )
    cookies = Cookies("c=abcdefghij")
    to_canary, weighted = http_route_spec(canary, Routes(80, 20), cookies)["rules"]
    assert to_canary["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"type": "RegularExpression", "name": "Cookie", "value": ".*c.*abcdefghij.*"}],
        }
    ]
    assert [(b["name"], b["weight"]) for b in to_canary["backendRefs"]] == [
        ("podinfo-primary", 0),
        ("podinfo-canary", 100),
    ]
    assert weighted["backendRefs"][1]["filters"] == [
        {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": "c=abcdefghij; Max-Age=60"}]},
        }
    ]
    route = {"metadata": {"name": "podinfo"}, "spec": {"rules": [to_canary, weighted]}}
    assert routes_from_http_route(route, service_names(canary)) == Routes(80, 20)
    # weight 0: the expiring Set-Cookie joins the rule's own ResponseHeaderModifier (one per rule)
    expire, _ = http_route_spec(canary, Routes(100, 0), Cookies(None, None, "c=abcdefghij"))["rules"]
    (modifier,) = [f for f in expire["filters"] if f["type"] == "ResponseHeaderModifier"]
    assert modifier["responseHeaderModifier"]["add"] == [
        {"name": "x-served-by", "value": "podinfo"},
        {"name": "Set-Cookie", "value": "c=abcdefghij; Max-Age=-1"},
    ]


# --------------------------------------------------------------------------------------------- SMI


def test_traffic_split_backends_and_host() -> None:
    canary = make_canary({"hosts": ["podinfo.test.svc.cluster.local"]})
    assert traffic_split_spec(canary, Routes(60, 40)) == {
        "service": "podinfo.test.svc.cluster.local",
        "backends": [
            {"service": "podinfo-canary", "weight": 40},
            {"service": "podinfo-primary", "weight": 60},
        ],
    }
    ts = {"metadata": {"name": "podinfo"}, "spec": traffic_split_spec(make_canary(), Routes(60, 40))}
    assert routes_from_traffic_split(ts, service_names(canary)) == Routes(60, 40)


def test_traffic_split_weights_as_quantities() -> None:
    assert [parse_weight(v) for v in (100, "100", "500m", "1k", 12.0)] == [100, 100, 0, 1000, 12]
    with pytest.raises(ValueError):
        parse_weight("lots")


# --------------------------------------------------------------------------------------------- factory


def test_factory_picks_the_mesh_router_by_provider_and_default() -> None:
    assert isinstance(mesh_router_for("istio", _FakeApi()), IstioRouter)
    for provider, kind, version in (
        ("gatewayapi:v1", GatewayAPIRouter, "v1"),
        ("gatewayapi:v1beta1", GatewayAPIRouter, "v1beta1"),
        ("linkerd", SmiRouter, "v1alpha1"),
        ("smi:v1alpha2", SmiRouter, "v1alpha2"),
    ):
        router = mesh_router_for(provider, _FakeApi())
        assert isinstance(router, kind)
        resource = router.http_routes if isinstance(router, GatewayAPIRouter) else router.traffic_splits  # type: ignore[union-attr]
        assert resource.version == version
    assert isinstance(router_for(make_canary(), _FakeApi()).mesh, IstioRouter)
    assert isinstance(router_for(make_canary(), _FakeApi(), mesh_provider="linkerd").mesh, SmiRouter)
    assert isinstance(
        router_for(make_canary(provider="istio"), _FakeApi(), mesh_provider="linkerd").mesh, IstioRouter
    )
    assert "kubernetes" in SUPPORTED_PROVIDERS


def test_factory_rejects_unknown_providers_and_mirroring_where_impossible() -> None:
    with pytest.raises(ValueError, match=r"spec\.provider: provider 'contour' is not supported"):
        router_for(make_canary(provider="contour"), _FakeApi())
    with pytest.raises(ValueError, match=r"spec\.ingressRef: provider nginx needs the Ingress"):
        router_for(make_canary(provider="nginx"), _FakeApi())
    with pytest.raises(ValueError, match=r"spec\.analysis\.mirror: provider 'nginx' cannot mirror"):
        router_for(make_canary(analysis={"mirror": True}, provider="nginx"), _FakeApi())
    with pytest.raises(ValueError, match="--mesh-provider: provider 'bogus'"):
        router_for(make_canary(), _FakeApi(), mesh_provider="bogus")
    with pytest.raises(ValueError, match=r"spec\.analysis\.mirror"):
        router_for(make_canary(analysis={"mirror": True}, provider="linkerd"), _FakeApi())


class _FakeApi:
    """Stands in for an ApiClient where no call is made (the generated APIs only store it)."""
