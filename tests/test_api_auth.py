"""Who may act: bearer tokens from a file, and Kubernetes TokenReview + SubjectAccessReview against a
real kube-apiserver (service-account tokens of users with and without the verb). A refused call
changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from api_support import Sims, add_sim, demo_canary, served, simulated
from canary_stream.api import ApiConfig
from canary_stream.controller.phases import Phase
from canary_stream.controller.scheduler import Rollout
from canary_stream.registry import Registry, direct_commander
from kube_fixtures import KubeCluster

BASE = "/api/v1/canaries/{ns}/podinfo"
COMMANDS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("pause", None),
    ("resume", None),
    ("promote", None),
    ("abort", None),
    ("set-weight", {"weight": 50}),
)


def state(rollout: Rollout) -> tuple[Any, ...]:
    """Everything a command could change."""
    s = rollout.status
    return (s.phase, s.canary_weight, s.failed_checks, rollout.paused, len(rollout.weights))


async def refused_everywhere(
    c: httpx.AsyncClient, ns: str, rollout: Rollout, headers: dict[str, str], status: int
) -> None:
    before = state(rollout)
    for cmd, body in COMMANDS:
        r = await c.post(f"{BASE.format(ns=ns)}/{cmd}", json=body, headers=headers)
        assert r.status_code == status, (cmd, headers, r.text)
        err = json.loads(r.text)
        assert err["error"] == {401: "unauthorized", 403: "forbidden"}[status]
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
    await rollout.settle()
    assert state(rollout) == before


async def test_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# operators\n\ns3cret-token-1\n  other-token-2  \n")
    cfg = ApiConfig(auth="token-file", token_file=str(tokens))
    async with simulated() as sims, served(sims.registry, cfg) as url, httpx.AsyncClient(base_url=url) as c:
        rollout = sims.sim().rollout
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-token-"},  # a prefix
            {"Authorization": "Bearer s3cret-token-1x"},
            {"Authorization": "Bearer # operators"},  # a comment line is no token
            {"Authorization": "Basic czNjcmV0LXRva2VuLTE="},
            {"Authorization": "Bearer"},
            {"Authorization": "s3cret-token-1"},
        ):
            await refused_everywhere(c, "test", rollout, headers, 401)
        # Reads are open by default.
        assert (await c.get("/api/v1/canaries/test/podinfo")).status_code == 200
        ok = {"Authorization": "bearer other-token-2"}
        assert (await c.post("/api/v1/canaries/test/podinfo/pause", headers=ok)).status_code == 202
        await rollout.settle()
        assert rollout.paused
        # Rotation: the file is re-read when it changes.
        tokens.write_text("rotated-token-3\n")
        r = await c.post("/api/v1/canaries/test/podinfo/resume", headers=ok)
        assert r.status_code == 401
        await rollout.settle()
        assert rollout.paused
        ok = {"Authorization": "Bearer rotated-token-3"}
        assert (await c.post("/api/v1/canaries/test/podinfo/resume", headers=ok)).status_code == 202
        await rollout.settle()
        assert not rollout.paused
        tokens.unlink()
        await refused_everywhere(c, "test", rollout, ok, 401)


async def test_no_token_file_refuses_every_command() -> None:
    async with (
        simulated() as sims,
        served(sims.registry, ApiConfig()) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        await refused_everywhere(c, "test", sims.sim().rollout, {"Authorization": "Bearer anything"}, 401)


async def test_closed_reads(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token\n")
    cfg = ApiConfig(auth="token-file", token_file=str(tokens), read_auth=True)
    async with simulated() as sims, served(sims.registry, cfg) as url, httpx.AsyncClient(base_url=url) as c:
        ok = {"Authorization": "Bearer reader-token"}
        for path in (
            "/api/v1/canaries",
            "/api/v1/canaries/test/podinfo",
            "/api/v1/canaries/test/podinfo/verdict",
            "/api/v1/canaries/test/podinfo/metrics?window=10s",
            "/api/v1/sources",
            "/argo/test/podinfo",
            "/metrics",
        ):
            assert (await c.get(path)).status_code == 401, path
            assert (await c.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401, path
            assert (await c.get(path, headers=ok)).status_code == 200, path
        gate = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "x"}
        assert (await c.post("/flagger/gate", json=gate)).status_code == 401  # a halt for Flagger
        for path in ("/healthz", "/openapi.json"):
            assert (await c.get(path)).status_code == 200
        assert (await c.get("/readyz")).status_code == 503  # open, and honest: no sources here


# -- Kubernetes: TokenReview + SubjectAccessReview ------------------------------------------------


async def sa_token(api: client.ApiClient, namespace: str, name: str) -> str:
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    req = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = await core.create_namespaced_service_account_token(name, namespace, req)
    return str(answer.status.token)


async def grant(api: client.ApiClient, namespace: str, sa: str, verbs: list[str]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    role = f"canaries-{sa}"
    await rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name=role),
            rules=[
                client.V1PolicyRule(
                    api_groups=["canary-stream.dev", "flagger.app"], resources=["canaries"], verbs=verbs
                )
            ],
        ),
    )
    await rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=role),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=role),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=sa, namespace=namespace)],
        ),
    )


async def allow_reviews(api: client.ApiClient, user: str) -> None:
    """What the controller's ServiceAccount gets in the chart (system:auth-delegator's rules)."""
    rbac = client.RbacAuthorizationV1Api(api)
    name = "canary-stream-auth-delegator"
    try:
        await rbac.create_cluster_role(
            client.V1ClusterRole(
                metadata=client.V1ObjectMeta(name=name),
                rules=[
                    client.V1PolicyRule(
                        api_groups=["authentication.k8s.io"], resources=["tokenreviews"], verbs=["create"]
                    ),
                    client.V1PolicyRule(
                        api_groups=["authorization.k8s.io"],
                        resources=["subjectaccessreviews"],
                        verbs=["create"],
                    ),
                ],
            )
        )
        await rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name
                ),
                subjects=[
                    client.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")
                ],
            )
        )
    except client.ApiException as e:
        if e.status != 409:  # already there from an earlier test of the session
            raise


@pytest.fixture
async def kube_sims(kube_api: client.ApiClient, kube_namespace: str) -> AsyncIterator[Sims]:
    registry = Registry()
    registry.commander = direct_commander(registry)
    sims = Sims(registry)
    try:
        await add_sim(sims, demo_canary("podinfo", kube_namespace))
        yield sims
    finally:
        await sims.close()


def kube_config(cluster: KubeCluster, **kw: Any) -> ApiConfig:
    return ApiConfig(
        auth="kubernetes",
        kube_host=cluster.url,
        kube_token=cluster.controller_token,
        kube_ca_file=str(cluster.ca_file),
        **kw,
    )


async def test_kubernetes_review_with_and_without_the_verb(
    kube_cluster: KubeCluster, kube_api: client.ApiClient, kube_namespace: str, kube_sims: Sims
) -> None:
    ns = kube_namespace
    await allow_reviews(kube_api, "canary-controller")
    operator = await sa_token(kube_api, ns, "operator")
    viewer = await sa_token(kube_api, ns, "viewer")
    await grant(kube_api, ns, "operator", ["get", "update"])
    await grant(kube_api, ns, "viewer", ["get", "list", "watch"])
    other_ns = await (client.CoreV1Api(kube_api)).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(generate_name="other-"))
    )
    outsider = await sa_token(kube_api, other_ns.metadata.name, "operator")
    await grant(kube_api, other_ns.metadata.name, "operator", ["get", "update"])
    rollout = kube_sims.sim(ns, "podinfo").rollout
    async with (
        served(kube_sims.registry, kube_config(kube_cluster)) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        await refused_everywhere(c, ns, rollout, {}, 401)
        await refused_everywhere(c, ns, rollout, {"Authorization": "Bearer not-a-real-token"}, 401)
        await refused_everywhere(c, ns, rollout, {"Authorization": f"Bearer {viewer}"}, 403)
        # `update` on canaries, but in another namespace.
        await refused_everywhere(c, ns, rollout, {"Authorization": f"Bearer {outsider}"}, 403)
        r = await c.post(f"{BASE.format(ns=ns)}/pause", headers={"Authorization": f"Bearer {viewer}"})
        assert "may not update canaries.canary-stream.dev in namespace " + ns in json.loads(r.text)["detail"]
        r = await c.post(f"{BASE.format(ns=ns)}/pause", headers={"Authorization": f"Bearer {operator}"})
        assert r.status_code == 202, r.text
        await rollout.settle()
        assert rollout.paused
        r = await c.post(
            f"{BASE.format(ns=ns)}/set-weight",
            json={"weight": 40},
            headers={"Authorization": f"Bearer {kube_cluster.admin_token}"},
        )
        assert r.status_code == 202
        await rollout.settle()
        assert rollout.status.canary_weight == 40 and rollout.status.phase == Phase.PROGRESSING
        # The controller's own identity has no rights on canaries: a reviewer, not a backdoor.
        headers = {"Authorization": f"Bearer {kube_cluster.controller_token}"}
        await refused_everywhere(c, ns, rollout, headers, 403)


async def test_kubernetes_closed_reads(
    kube_cluster: KubeCluster, kube_api: client.ApiClient, kube_namespace: str, kube_sims: Sims
) -> None:
    ns = kube_namespace
    await allow_reviews(kube_api, "canary-controller")
    viewer = await sa_token(kube_api, ns, "viewer")
    await grant(kube_api, ns, "viewer", ["get"])
    stranger = await sa_token(kube_api, ns, "stranger")
    cfg = kube_config(kube_cluster, read_auth=True)
    async with served(kube_sims.registry, cfg) as url, httpx.AsyncClient(base_url=url) as c:
        path = f"/api/v1/canaries/{ns}/podinfo"
        assert (await c.get(path)).status_code == 401
        assert (await c.get(path, headers={"Authorization": f"Bearer {stranger}"})).status_code == 403
        assert (await c.get(path, headers={"Authorization": f"Bearer {viewer}"})).status_code == 200
        assert (
            await c.get(f"/argo/{ns}/podinfo", headers={"Authorization": f"Bearer {viewer}"})
        ).status_code == 200
        # Cluster-wide reads need `list` in every namespace.
        assert (
            await c.get("/api/v1/canaries", headers={"Authorization": f"Bearer {viewer}"})
        ).status_code == 403
        admin = {"Authorization": f"Bearer {kube_cluster.admin_token}"}
        assert (await c.get("/api/v1/canaries", headers=admin)).status_code == 200
