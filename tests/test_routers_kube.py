"""The Kubernetes routers against a real kube-apiserver with the upstream Istio, Gateway API and SMI
CRDs: every object is written with fieldValidation=Strict, so the real schemas (and their CEL rules)
accept exactly what the routers build, and every split read back is what was written."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canary_stream.router.base import Routes
from canary_stream.router.factory import ROUTES_ANNOTATION, KubernetesRouter, router_for
from canary_stream.router.kube_common import ORIGINAL_CONFIG_ANNOTATION, CustomResource, RouterNotReady
from canary_stream.spec.model import Canary
from test_nginx_router import ingress_manifest

pytestmark = pytest.mark.kube

COOKIE_MATCH = {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}


async def deploy_target(api: ApiClient, namespace: str, name: str = "podinfo") -> None:
    """A Deployment like Flagger's e2e podinfo (no kubelet: it only has to exist)."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                            "ports": [
                                {"name": "http", "containerPort": 9898},
                                {"name": "http-metrics", "containerPort": 9797},
                                {"name": "grpc", "containerPort": 9999},
                            ],
                        }
                    ]
                },
            },
        },
    }
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, body)


async def create_canary(
    api: ApiClient,
    namespace: str,
    service: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
    **spec: Any,
) -> Canary:
    """A flagger.app/v1beta1 Canary stored in the API server (so owner references carry its uid),
    loaded into the model."""
    body = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, **(service or {})},
            "analysis": {
                "interval": "10s",
                "threshold": 2,
                **(analysis or {"stepWeight": 10, "maxWeight": 50}),
            },
            **spec,
        },
    }
    stored = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "flagger.app", "v1beta1", namespace, "canaries", body
    )
    stored.pop("status", None)
    meta = stored["metadata"]
    stored["metadata"] = {
        k: meta[k] for k in ("name", "namespace", "uid", "labels", "annotations") if k in meta
    }
    return Canary.model_validate(stored)


async def custom(api: ApiClient, group: str, version: str, plural: str, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        group, version, ns, plural, name
    )
    return obj


async def service(api: ApiClient, ns: str, name: str) -> Any:
    return await client.CoreV1Api(api).read_namespaced_service(name, ns)


async def vs(api: ApiClient, ns: str) -> dict[str, Any]:
    return await custom(api, "networking.istio.io", "v1", "virtualservices", ns, "podinfo")


async def http_route(api: ApiClient, ns: str, version: str = "v1") -> dict[str, Any]:
    return await custom(api, "gateway.networking.k8s.io", version, "httproutes", ns, "podinfo")


# --------------------------------------------------------------------------------------------- Services


async def test_services_are_created_with_selectors_ports_and_owner(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        {"portDiscovery": True, "appProtocol": "http", "apex": {"labels": {"exposed": "true"}}},
    )
    router = router_for(canary, kube_api, mesh_provider="istio")
    await router.reconcile(canary)
    uid = canary.metadata.model_extra["uid"]  # type: ignore[index]
    selectors = {}
    for name in ("podinfo", "podinfo-primary", "podinfo-canary"):
        svc = await service(kube_api, ns, name)
        selectors[name] = svc.spec.selector
        assert svc.spec.type == "ClusterIP"
        assert svc.metadata.labels["app"] == name
        (owner,) = svc.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Canary", "podinfo", uid, True)
        ports = {p.name: (p.port, p.target_port, p.app_protocol) for p in svc.spec.ports}
        # portDiscovery: every container port but the main one, by its name
        assert ports == {
            "http": (9898, 9898, "http"),
            "http-metrics": (9797, 9797, None),
            "grpc": (9999, 9999, None),
        }
    assert selectors == {
        "podinfo": {"app": "podinfo-primary"},
        "podinfo-primary": {"app": "podinfo-primary"},
        "podinfo-canary": {"app": "podinfo"},
    }
    apex = await service(kube_api, ns, "podinfo")
    assert apex.metadata.labels["exposed"] == "true"
    assert apex.metadata.annotations["kustomize.toolkit.fluxcd.io/reconcile"] == "disabled"
    version = apex.metadata.resource_version
    await router.reconcile(canary)  # converged: nothing is rewritten
    assert (await service(kube_api, ns, "podinfo")).metadata.resource_version == version


async def test_an_existing_apex_service_is_taken_over_and_reverted_on_finalize(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    users = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "podinfo", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": 9898}]},
    }
    await client.CoreV1Api(kube_api).create_namespaced_service(ns, users)
    canary = await create_canary(kube_api, ns, revertOnDeletion=True)
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    apex = await service(kube_api, ns, "podinfo")
    assert apex.spec.selector == {"app": "podinfo-primary"}
    assert apex.metadata.labels == {"team": "web"}  # not ours: metadata untouched
    assert not apex.metadata.owner_references
    await router.finalize(canary)
    assert (await service(kube_api, ns, "podinfo")).spec.selector == {"app": "podinfo"}


async def test_a_missing_target_is_reported_by_name(kube_api: ApiClient, kube_namespace: str) -> None:
    canary = await create_canary(kube_api, kube_namespace)
    with pytest.raises(LookupError, match=r"Deployment podinfo\..* \(spec\.targetRef\) not found"):
        await router_for(canary, kube_api).reconcile(canary)


# --------------------------------------------------------------------------------------------- Istio


async def test_istio_round_trip_weights_survive_reconcile(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        {
            "gateways": ["public-gateway.istio-system.svc.cluster.local", "mesh"],
            "hosts": ["app.example.com"],
            "timeout": "15s",
            "retries": {"attempts": 3, "perTryTimeout": "5s", "retryOn": "gateway-error,connect-failure"},
            "headers": {"request": {"add": {"x-envoy-upstream-rq-timeout-ms": "15000"}}},
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}], "allowMethods": ["GET"]},
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "match": [{"uri": {"prefix": "/"}}],
            "rewrite": {"uri": "/"},
        },
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    for name in ("podinfo-primary", "podinfo-canary"):
        dr = await custom(kube_api, "networking.istio.io", "v1", "destinationrules", ns, name)
        assert dr["spec"] == {"host": name, "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}
        assert dr["metadata"]["ownerReferences"][0]["name"] == "podinfo"
    obj = await vs(kube_api, ns)
    assert obj["spec"]["hosts"] == ["app.example.com", "podinfo"]
    assert obj["spec"]["http"][0]["retries"]["attempts"] == 3
    assert obj["spec"]["http"][0]["timeout"] == "15s"

    for step in (Routes(90, 10), Routes(70, 30)):
        await router.set_routes(canary, step)
        assert await router.get_routes(canary) == step
    generation = (await vs(kube_api, ns))["metadata"]["generation"]
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(70, 30)
    assert (await vs(kube_api, ns))["metadata"]["generation"] == generation  # nothing rewritten

    # a spec change is applied and still keeps the weights
    changed = canary.model_copy(
        update={
            "spec": canary.spec.model_copy(
                update={"service": canary.spec.service.model_copy(update={"timeout": "20s"})}
            )
        }
    )
    await router.reconcile(changed)
    obj = await vs(kube_api, ns)
    assert obj["spec"]["http"][0]["timeout"] == "20s"
    assert await router.get_routes(changed) == Routes(70, 30)
    await router.finalize(changed)
    assert await router.get_routes(changed) == Routes(100, 0)


async def test_istio_ab_with_a_cookie_match(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        analysis={"iterations": 10, "match": [COOKIE_MATCH, {"headers": {"x-canary": {"exact": "insider"}}}]},
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    await router.set_routes(canary, Routes(0, 100))
    assert await router.get_routes(canary) == Routes(0, 100)
    ab, default = (await vs(kube_api, ns))["spec"]["http"]
    assert ab["match"][0] == COOKIE_MATCH
    assert ab["match"][1] == {"headers": {"x-canary": {"exact": "insider"}}}
    assert [(d["destination"]["host"], d["weight"]) for d in ab["route"]] == [
        ("podinfo-primary", 0),
        ("podinfo-canary", 100),
    ]
    assert "match" not in default
    assert [d["destination"]["host"] for d in default["route"]] == ["podinfo-primary"]


async def test_istio_blue_green_with_mirror(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(kube_api, ns, analysis={"iterations": 5, "mirror": True, "mirrorWeight": 30})
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    mirrored = Routes(100, 0, mirrored=True, mirror_weight=30)
    await router.set_routes(canary, mirrored)
    assert await router.get_routes(canary) == mirrored
    (route,) = (await vs(kube_api, ns))["spec"]["http"]
    assert route["mirror"] == {"host": "podinfo-canary"}
    assert route["mirrorPercentage"] == {"value": 30}
    await router.reconcile(canary)  # mirror kept, like the weights
    assert await router.get_routes(canary) == mirrored
    await router.set_routes(canary, Routes(0, 100))
    assert await router.get_routes(canary) == Routes(0, 100)
    assert "mirror" not in (await vs(kube_api, ns))["spec"]["http"][0]


async def test_istio_takes_over_an_existing_virtual_service_and_restores_it(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    original = {"hosts": ["podinfo"], "http": [{"route": [{"destination": {"host": "podinfo"}}]}]}
    await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "networking.istio.io",
        "v1",
        ns,
        "virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "podinfo"},
            "spec": original,
        },
    )
    canary = await create_canary(kube_api, ns, revertOnDeletion=True)
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    taken = await vs(kube_api, ns)
    assert json.loads(taken["metadata"]["annotations"][ORIGINAL_CONFIG_ANNOTATION]) == original
    await router.set_routes(canary, Routes(50, 50))
    await router.reconcile(canary)  # a taken-over object keeps its weights too
    assert await router.get_routes(canary) == Routes(50, 50)
    await router.finalize(canary)
    restored = await vs(kube_api, ns)
    assert restored["spec"] == original
    assert ORIGINAL_CONFIG_ANNOTATION not in (restored["metadata"].get("annotations") or {})


async def test_istio_rejects_a_pass_through_field_the_crd_does_not_know(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    stored = await create_canary(kube_api, ns)
    # Flagger's CRD would prune the typo from the Canary itself; a Canary read from a file keeps it
    typo = stored.spec.service.model_copy(update={"retries": {"attempts": 3, "perTryTimeOut": "1s"}})
    canary = stored.model_copy(update={"spec": stored.spec.model_copy(update={"service": typo})})
    with pytest.raises(client.ApiException) as err:
        await router_for(canary, kube_api).reconcile(canary)
    assert err.value.status in (400, 422) and "perTryTimeOut" in str(err.value.body)


async def test_istio_session_affinity_cookies_live_on_the_virtual_service(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    affinity = {"cookieName": "flagger-cookie", "maxAge": 600, "sameSite": "Lax"}
    canary = await create_canary(
        kube_api, ns, analysis={"stepWeight": 10, "maxWeight": 50, "sessionAffinity": affinity}
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    assert len((await vs(kube_api, ns))["spec"]["http"]) == 1  # no cookie before the first step
    await router.set_routes(canary, Routes(90, 10))
    obj = await vs(kube_api, ns)
    cookie = obj["metadata"]["annotations"]["canary-stream.dev/session-affinity-cookie"]
    name, value = cookie.split("=")
    sticky, weighted = obj["spec"]["http"]
    assert sticky["match"] == [{"headers": {"Cookie": {"regex": f".*{name}.*{value}.*"}}}]
    assert (
        weighted["route"][1]["headers"]["response"]["add"]["Set-Cookie"]
        == f"{cookie}; Max-Age=600; SameSite=Lax"
    )
    assert await router.get_routes(canary) == Routes(90, 10)
    await router.set_routes(canary, Routes(80, 20))
    assert (await vs(kube_api, ns))["metadata"]["annotations"][
        "canary-stream.dev/session-affinity-cookie"
    ] == cookie
    generation = (await vs(kube_api, ns))["metadata"]["generation"]
    await router.reconcile(canary)
    assert (await vs(kube_api, ns))["metadata"]["generation"] == generation
    assert await router.get_routes(canary) == Routes(80, 20)
    await router.set_routes(canary, Routes(100, 0))
    obj = await vs(kube_api, ns)
    annotations = obj["metadata"]["annotations"]
    assert "canary-stream.dev/session-affinity-cookie" not in annotations
    assert annotations["canary-stream.dev/previous-session-affinity-cookie"] == cookie
    expire, _ = obj["spec"]["http"]
    assert expire["headers"]["response"]["add"]["Set-Cookie"] == f"{cookie}; Max-Age=-1"
    assert await router.get_routes(canary) == Routes(100, 0)


# --------------------------------------------------------------------------------------------- Gateway API


async def test_http_route_with_a_gateway_parent(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    gateway = {"name": "public", "namespace": "istio-ingress"}
    canary = await create_canary(
        kube_api,
        ns,
        {
            "gatewayRefs": [gateway],
            "hosts": ["app.example.com"],
            "timeout": "30s",
            "backendTimeout": "10s",
            "headers": {"request": {"set": {"x-a": "1"}}, "response": {"remove": ["server"]}},
            "rewrite": {"uri": "/api", "type": "ReplacePrefixMatch"},
            "match": [{"uri": {"prefix": "/v1"}}],
            "corsPolicy": {"allowOrigin": ["https://example.com"], "allowMethods": ["GET"], "maxAge": "1h"},
        },
        provider="gatewayapi:v1",
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    for step in (Routes(80, 20), Routes(40, 60)):
        await router.set_routes(canary, step)
        assert await router.get_routes(canary) == step
    route = await http_route(kube_api, ns)
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert route["spec"]["hostnames"] == ["app.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["timeouts"] == {"request": "30s", "backendRequest": "10s"}
    assert [f["type"] for f in rule["filters"]] == [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "URLRewrite",
        "CORS",
    ]
    generation = route["metadata"]["generation"]
    await router.reconcile(canary)
    assert (await http_route(kube_api, ns))["metadata"]["generation"] == generation
    assert await router.get_routes(canary) == Routes(40, 60)

    # a gateway that has not accepted the current generation holds the next decision back
    status = {
        "parents": [
            {
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", **gateway},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True",
                        "reason": "Accepted",
                        "message": "",
                        "observedGeneration": generation - 1,
                        "lastTransitionTime": "2026-11-26T12:00:00Z",
                    }
                ],
            }
        ]
    }
    await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io",
        "v1",
        ns,
        "httproutes",
        "podinfo",
        [{"op": "add", "path": "/status", "value": status}],
    )
    with pytest.raises(RouterNotReady):
        await router.get_routes(canary)
    status["parents"][0]["conditions"][0]["observedGeneration"] = generation  # type: ignore[index]
    await client.CustomObjectsApi(kube_api).patch_namespaced_custom_object_status(
        "gateway.networking.k8s.io",
        "v1",
        ns,
        "httproutes",
        "podinfo",
        [{"op": "add", "path": "/status", "value": status}],
    )
    assert await router.get_routes(canary) == Routes(40, 60)


async def test_http_route_gamma_with_the_service_as_parent_and_ab_cookie(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        {
            "gatewayRefs": [
                {"group": "core", "kind": "Service", "name": "podinfo", "namespace": ns, "port": 9898}
            ]
        },
        analysis={"iterations": 10, "match": [COOKIE_MATCH]},
        provider="gatewayapi:v1beta1",
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    await router.set_routes(canary, Routes(0, 100))
    assert await router.get_routes(canary) == Routes(0, 100)
    route = await http_route(kube_api, ns, "v1beta1")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
    assert route["spec"]["parentRefs"][0]["kind"] == "Service"
    ab, default = route["spec"]["rules"]
    assert ab["matches"][0]["headers"] == [
        {"name": "cookie", "type": "RegularExpression", "value": "^(.*?;)?(canary=always)(;.*)?$"}
    ]
    assert [(b["name"], b["weight"]) for b in default["backendRefs"]] == [("podinfo-primary", 100)]


async def test_http_route_blue_green_mirror(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        {"gatewayRefs": [{"name": "public", "namespace": "gw"}]},
        analysis={"iterations": 5, "mirror": True, "mirrorWeight": 50},
        provider="gatewayapi:v1",
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    await router.set_routes(canary, Routes(100, 0, mirrored=True, mirror_weight=50))
    assert await router.get_routes(canary) == Routes(100, 0, mirrored=True, mirror_weight=50)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0, mirrored=True, mirror_weight=50)
    await router.set_routes(canary, Routes(0, 100))
    assert await router.get_routes(canary) == Routes(0, 100)
    await router.finalize(canary)
    assert await router.get_routes(canary) == Routes(100, 0)


async def test_http_route_session_affinity(kube_api: ApiClient, kube_namespace: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(
        kube_api,
        ns,
        {
            "gatewayRefs": [{"name": "public", "namespace": "gw"}],
            "headers": {"response": {"set": {"x-v": "1"}}},
        },
        analysis={"stepWeight": 10, "sessionAffinity": {"cookieName": "c", "primaryCookieName": "p"}},
        provider="gatewayapi:v1",
    )
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    await router.set_routes(canary, Routes(90, 10))
    route = await http_route(kube_api, ns)
    assert len(route["spec"]["rules"]) == 3  # canary cookie, primary cookie, weighted
    assert await router.get_routes(canary) == Routes(90, 10)
    generation = route["metadata"]["generation"]
    await router.reconcile(canary)
    assert (await http_route(kube_api, ns))["metadata"]["generation"] == generation
    await router.set_routes(canary, Routes(100, 0))  # accepted by the CEL rules: one modifier per rule
    expire, _ = (await http_route(kube_api, ns))["spec"]["rules"]
    assert any(
        h["value"].endswith("Max-Age=-1")
        for f in expire["filters"]
        for h in f.get("responseHeaderModifier", {}).get("add", [])
    )
    assert await router.get_routes(canary) == Routes(100, 0)


# --------------------------------------------------------------------------------------------- SMI


@pytest.mark.parametrize("provider", ["linkerd", "smi:v1alpha2"])
async def test_traffic_split_weights(kube_api: ApiClient, kube_namespace: str, provider: str) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(kube_api, ns, provider=provider)
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.set_routes(canary, Routes(75, 25))
    assert await router.get_routes(canary) == Routes(75, 25)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(75, 25)
    # stored once (v1alpha1), served in both versions
    for version in ("v1alpha1", "v1alpha2"):
        ts = await custom(kube_api, "split.smi-spec.io", version, "trafficsplits", ns, "podinfo")
        assert ts["spec"]["service"] == "podinfo"
        assert {b["service"]: int(b["weight"]) for b in ts["spec"]["backends"]} == {
            "podinfo-canary": 25,
            "podinfo-primary": 75,
        }
    with pytest.raises(ValueError, match="cannot mirror"):
        await router.set_routes(canary, Routes(100, 0, mirrored=True))
    await router.finalize(canary)
    assert await router.get_routes(canary) == Routes(100, 0)


async def test_traffic_split_reads_quantity_weights_written_by_others(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(kube_api, ns, provider="linkerd")
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    ts = CustomResource(kube_api, "split.smi-spec.io", "v1alpha1", "trafficsplits")
    await ts.merge_patch(
        ns,
        "podinfo",
        {
            "spec": {
                "backends": [
                    {"service": "podinfo-canary", "weight": "500m"},
                    {"service": "podinfo-primary", "weight": "99"},
                ]
            }
        },
    )
    assert await router.get_routes(canary) == Routes(99, 0)


async def test_traffic_split_taken_over_is_restored_on_finalize(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    """A TrafficSplit that existed before (a Linkerd user's own split) keeps its weights while the
    Canary runs and gets its own spec back with revertOnDeletion, as VirtualServices and HTTPRoutes do."""
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    original = {
        "service": "podinfo",
        "backends": [
            {"service": "podinfo-primary", "weight": 90},
            {"service": "podinfo-canary", "weight": 10},
        ],
    }
    ts = CustomResource(kube_api, "split.smi-spec.io", "v1alpha2", "trafficsplits")
    await ts.create(
        ns,
        {
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": {"name": "podinfo"},
            "spec": original,
        },
    )
    canary = await create_canary(kube_api, ns, provider="smi:v1alpha2", revertOnDeletion=True)
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(90, 10)  # the split it had is kept
    taken = await ts.get(ns, "podinfo")
    assert taken is not None
    assert json.loads(taken["metadata"]["annotations"][ORIGINAL_CONFIG_ANNOTATION]) == original
    await router.set_routes(canary, Routes(40, 60))
    await router.finalize(canary)
    restored = await ts.get(ns, "podinfo")
    assert restored is not None
    assert restored["spec"] == original
    assert ORIGINAL_CONFIG_ANNOTATION not in (restored["metadata"].get("annotations") or {})


# --------------------------------------------------------------------------------------------- kubernetes


async def test_kubernetes_provider_records_the_decision_on_the_apex(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    canary = await create_canary(kube_api, ns, analysis={"iterations": 3}, provider="kubernetes")
    router = router_for(canary, kube_api)
    assert isinstance(router, KubernetesRouter)
    await router.reconcile(canary)
    assert await router.get_routes(canary) == Routes(100, 0)
    await router.set_routes(canary, Routes(0, 100))
    assert await router.get_routes(canary) == Routes(0, 100)
    apex = await service(kube_api, ns, "podinfo")
    assert json.loads(apex.metadata.annotations[ROUTES_ANNOTATION]) == {"primary": 0, "canary": 100}
    assert apex.spec.selector == {"app": "podinfo-primary"}  # nothing splits: the apex stays on primary


# ---------------------------------------------------------------------------------------- ingress-nginx

NGINX = "nginx.ingress.kubernetes.io"
INGRESS_REF = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}


async def create_ingress(api: ApiClient, namespace: str, paths: list[tuple[str, str]]) -> None:
    """The user's Ingress: `(path, service)` rules on one host, as ingress-nginx serves them."""
    body = ingress_manifest(paths, {f"{NGINX}/proxy-body-size": "1m"})
    await client.NetworkingV1Api(api).create_namespaced_ingress(namespace, body)


async def ingress_of(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.NetworkingV1Api(api).read_namespaced_ingress(name, namespace)
    out: dict[str, Any] = api.sanitize_for_serialization(obj)
    return out


async def test_nginx_canary_ingress_follows_the_ingress_and_carries_the_weight(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    ns = kube_namespace
    await deploy_target(kube_api, ns)
    await create_ingress(kube_api, ns, [("/", "podinfo"), ("/static", "cdn")])
    canary = await create_canary(kube_api, ns, provider="nginx", ingressRef=INGRESS_REF)
    router = router_for(canary, kube_api)
    await router.reconcile(canary)
    ing = await ingress_of(kube_api, ns, "podinfo-canary")
    paths = ing["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"]["name"] for p in paths] == ["podinfo-canary", "cdn"]
    notes = ing["metadata"]["annotations"]
    assert notes[f"{NGINX}/canary"] == "true" and notes[f"{NGINX}/canary-weight"] == "0"
    assert notes[f"{NGINX}/proxy-body-size"] == "1m"
    assert ing["metadata"]["ownerReferences"][0]["uid"] == canary.metadata.model_extra["uid"]
    assert await router.get_routes(canary) == Routes(100, 0)

    await router.set_routes(canary, Routes(90, 10))
    assert await router.get_routes(canary) == Routes(90, 10)
    # The user's Ingress gains a path: the copy follows, the split stays.
    api = client.NetworkingV1Api(kube_api)
    user = await ingress_of(kube_api, ns, "podinfo")
    user["spec"]["rules"][0]["http"]["paths"].append(
        {
            "path": "/api",
            "pathType": "Prefix",
            "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}},
        }
    )
    await api.replace_namespaced_ingress("podinfo", ns, user)
    await router.reconcile(canary)
    paths = (await ingress_of(kube_api, ns, "podinfo-canary"))["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"]["name"] for p in paths] == ["podinfo-canary", "cdn", "podinfo-canary"]
    assert await router.get_routes(canary) == Routes(90, 10)
    # The user's own Ingress is never written.
    assert "canary" not in json.dumps(
        (await ingress_of(kube_api, ns, "podinfo"))["metadata"].get("annotations")
    )


async def test_nginx_without_the_ingress_is_reported_by_field(
    kube_api: ApiClient, kube_namespace: str
) -> None:
    await deploy_target(kube_api, kube_namespace)
    canary = await create_canary(kube_api, kube_namespace, provider="nginx", ingressRef=INGRESS_REF)
    with pytest.raises(LookupError, match=r"spec\.ingressRef"):
        await router_for(canary, kube_api).reconcile(canary)
