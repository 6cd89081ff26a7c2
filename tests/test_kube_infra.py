"""The kube test infrastructure against the real kube-apiserver + etcd (infra/kube_apiserver.py):
version, Deployment status played by the tests, every vendored CRD's real schema, RBAC for the
controller's user, watches."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.config import load_kube_config

from kube_fixtures import (
    CONTROLLER_USER,
    KubeCluster,
    KubeInfraError,
    api_client_for,
    crd_files,
    kube_version,
    make_deployment_ready,
    make_deployment_stuck,
)

pytestmark = pytest.mark.kube


def deployment(name: str, replicas: int = 3, image: str = "ghcr.io/example/podinfo:6.0.0") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 9898}]}]},
            },
        },
    }


def flagger_ready(dep: client.V1Deployment) -> bool:
    """Flagger's deployment readiness rules (pkg/canary/deployment_ready.go), as a test oracle."""
    st = dep.status
    if st is None or st.observed_generation is None or dep.metadata.generation > st.observed_generation:
        return False
    for cond in st.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            return False
    updated = st.updated_replicas or 0
    return not (
        updated < dep.spec.replicas or (st.replicas or 0) > updated or (st.available_replicas or 0) < updated
    )


async def test_version_is_the_pinned_release(kube_cluster: KubeCluster) -> None:
    status, body = kube_cluster.request("GET", "/version")
    assert status == 200
    info = json.loads(body)
    assert info["gitVersion"] == kube_version()
    assert info["gitVersion"].startswith("v1.34.")
    assert (info["major"], info["minor"]) == ("1", "34")
    # The same through the client, awaiting api_client_for (both call styles work).
    api = await api_client_for(kube_cluster)
    try:
        assert (await client.VersionApi(api).get_code()).git_version == kube_version()
    finally:
        await api.close()


async def test_kubeconfig_file_is_usable(kube_cluster: KubeCluster, tmp_path: Path) -> None:
    conf = client.Configuration()
    await load_kube_config(
        config_file=str(kube_cluster.kubeconfig(tmp_path / "admin.yaml")), client_configuration=conf
    )
    async with client.ApiClient(configuration=conf) as api:
        names = [ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items]
    assert "default" in names and "kube-system" in names


async def test_deployment_status_is_what_the_test_patches(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    created = await apps.create_namespaced_deployment(kube_namespace, deployment("podinfo", replicas=3))
    assert created.metadata.generation == 1
    # No controller-manager: nothing fills the status in by itself.
    assert not flagger_ready(await apps.read_namespaced_deployment("podinfo", kube_namespace))

    await make_deployment_ready(kube_api, kube_namespace, "podinfo")
    dep = await apps.read_namespaced_deployment("podinfo", kube_namespace)
    st = dep.status
    assert st.observed_generation == 1
    assert (st.replicas, st.updated_replicas, st.ready_replicas, st.available_replicas) == (3, 3, 3, 3)
    conds = {c.type: (c.status, c.reason) for c in st.conditions}
    assert conds == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    assert flagger_ready(dep)

    # A spec change bumps generation: the old status no longer counts as ready.
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/example/podinfo:6.0.1"}]}}
        }
    }
    bumped = await apps.patch_namespaced_deployment("podinfo", kube_namespace, patch)
    assert bumped.metadata.generation == 2
    assert not flagger_ready(bumped)

    await make_deployment_stuck(kube_api, kube_namespace, "podinfo")
    dep = await apps.read_namespaced_deployment("podinfo", kube_namespace)
    conds = {c.type: (c.status, c.reason) for c in dep.status.conditions}
    assert conds["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert conds["Available"] == ("False", "MinimumReplicasUnavailable")
    assert dep.status.observed_generation == 2 and not dep.status.available_replicas
    assert not flagger_ready(dep)

    # Ready again after the stuck state: the whole status is replaced, no stale condition remains.
    await make_deployment_ready(kube_api, kube_namespace, "podinfo")
    dep = await apps.read_namespaced_deployment("podinfo", kube_namespace)
    assert flagger_ready(dep) and len(dep.status.conditions) == 2


async def test_every_vendored_crd_is_established(kube_api: client.ApiClient) -> None:
    wanted = {
        doc["metadata"]["name"]
        for path in crd_files()
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader)
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    }
    assert {
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "httproutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
        "trafficsplits.split.smi-spec.io",
        "scaledobjects.keda.sh",
    } <= wanted
    # Raw JSON: the list is megabytes of schemas, slow to turn into client models.
    resp = await client.ApiextensionsV1Api(kube_api).list_custom_resource_definition(_preload_content=False)
    established = {
        crd["metadata"]["name"]
        for crd in json.loads(await resp.read())["items"]
        if any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    }
    assert wanted <= established


# (group, version, plural, valid object, JSON path to a field, a value of the wrong type for it)
SAMPLES: dict[str, tuple[str, str, str, dict[str, Any], tuple[Any, ...], Any]] = {
    "istio-virtualservice": (
        "networking.istio.io",
        "v1",
        "virtualservices",
        {
            "kind": "VirtualService",
            "spec": {
                "hosts": ["podinfo"],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": "podinfo-primary"}, "weight": 90},
                            {"destination": {"host": "podinfo-canary"}, "weight": 10},
                        ]
                    }
                ],
            },
        },
        ("spec", "http", 0, "route", 0, "weight"),
        "ninety",
    ),
    "istio-destinationrule": (
        "networking.istio.io",
        "v1",
        "destinationrules",
        {
            "kind": "DestinationRule",
            "spec": {"host": "podinfo-canary", "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
        },
        ("spec", "trafficPolicy", "tls", "mode"),
        "SOMETIMES",
    ),
    "gateway-httproute": (
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        {
            "kind": "HTTPRoute",
            "spec": {
                "parentRefs": [{"name": "podinfo", "kind": "Service", "group": "", "port": 9898}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "podinfo-primary", "port": 9898, "weight": 90},
                            {"name": "podinfo-canary", "port": 9898, "weight": 10},
                        ]
                    }
                ],
            },
        },
        ("spec", "rules", 0, "backendRefs", 1, "weight"),
        "10",
    ),
    "smi-trafficsplit": (
        "split.smi-spec.io",
        "v1alpha2",
        "trafficsplits",
        {
            "kind": "TrafficSplit",
            "spec": {
                "service": "podinfo",
                "backends": [
                    {"service": "podinfo-primary", "weight": 90},
                    {"service": "podinfo-canary", "weight": 10},
                ],
            },
        },
        ("spec", "backends", 0, "weight"),
        "ninety",
    ),
    "flagger-canary": (
        "flagger.app",
        "v1beta1",
        "canaries",
        {
            "kind": "Canary",
            "spec": {
                "provider": "istio",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {
                    "interval": "1m",
                    "threshold": 5,
                    "maxWeight": 50,
                    "stepWeight": 10,
                    "metrics": [
                        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}
                    ],
                },
            },
        },
        ("spec", "analysis", "stepWeight"),
        "ten",
    ),
    "flagger-metrictemplate": (
        "flagger.app",
        "v1beta1",
        "metrictemplates",
        {
            "kind": "MetricTemplate",
            "spec": {"provider": {"type": "prometheus", "address": "http://prometheus:9090"}, "query": "up"},
        },
        ("spec", "query"),
        ["not", "a", "string"],
    ),
}


def _with(obj: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


async def _create_custom(
    api: client.ApiClient, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
) -> Any:
    custom = client.CustomObjectsApi(api)
    for attempt in range(30):  # discovery of a just-established CRD can lag a moment
        try:
            return await custom.create_namespaced_custom_object(group, version, namespace, plural, body)
        except client.ApiException as exc:
            if exc.status != 404 or attempt == 29:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("sample", sorted(SAMPLES))
async def test_real_schema_accepts_valid_and_rejects_invalid(
    kube_api: client.ApiClient, kube_namespace: str, sample: str
) -> None:
    group, version, plural, obj, field_path, wrong = SAMPLES[sample]
    valid = {"apiVersion": f"{group}/{version}", "metadata": {"name": "podinfo"}, **obj}
    created = await _create_custom(kube_api, group, version, kube_namespace, plural, valid)
    assert created["metadata"]["uid"]
    stored = await client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        group, version, kube_namespace, plural, "podinfo"
    )
    assert _dig(stored, field_path) == _dig(valid, field_path)

    invalid = _with(valid, field_path, wrong)
    invalid["metadata"] = {"name": "podinfo-invalid"}
    with pytest.raises(client.ApiException) as err:
        await _create_custom(kube_api, group, version, kube_namespace, plural, invalid)
    assert err.value.status == 422, err.value.body
    details = json.loads(err.value.body)
    assert details["reason"] == "Invalid"
    assert field_path[-1] in details["message"], details["message"]


def _dig(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


async def test_controller_user_is_bound_by_rbac(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    # ReplicaSets: a resource deploy/rbac.yaml never grants, so the check holds whichever tests
    # bound the controller's real ClusterRole earlier in the session.
    async with api_client_for(kube_cluster, kube_cluster.controller_token) as ctrl:
        apps = client.AppsV1Api(ctrl)
        with pytest.raises(client.ApiException) as err:
            await apps.list_namespaced_replica_set(kube_namespace)
        assert err.value.status == 403
        assert CONTROLLER_USER in json.loads(err.value.body)["message"]

        role_name = f"{kube_namespace}-replicasets-reader"
        async with api_client_for(kube_cluster) as admin:
            rbac = client.RbacAuthorizationV1Api(admin)
            await rbac.create_cluster_role(
                {
                    "metadata": {"name": role_name},
                    "rules": [
                        {
                            "apiGroups": ["apps"],
                            "resources": ["replicasets"],
                            "verbs": ["get", "list", "watch"],
                        }
                    ],
                }
            )
            await rbac.create_cluster_role_binding(
                {
                    "metadata": {"name": role_name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role_name,
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CONTROLLER_USER}
                    ],
                }
            )
        for _ in range(100):  # the RBAC authorizer learns of the binding through its informer
            try:
                listed = await apps.list_namespaced_replica_set(kube_namespace)
                break
            except client.ApiException as exc:
                assert exc.status == 403
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the ClusterRoleBinding never took effect")
        assert listed.items == []
        # The role grants reading only.
        with pytest.raises(client.ApiException) as err:
            await apps.create_namespaced_replica_set(kube_namespace, {"metadata": {"name": "nope"}})
        assert err.value.status == 403


async def test_watch_with_bookmarks_delivers_events(kube_api: client.ApiClient, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_config_map(
        kube_namespace, {"metadata": {"name": "before"}, "data": {"i": "0"}}
    )

    initial_done = asyncio.Event()

    async def produce() -> None:
        await initial_done.wait()  # live changes only after the initial state was delivered
        for i in range(1, 4):
            await core.create_namespaced_config_map(
                kube_namespace, {"metadata": {"name": f"cm-{i}"}, "data": {"i": str(i)}}
            )
        await core.patch_namespaced_config_map("cm-1", kube_namespace, {"data": {"i": "changed"}})

    producer = asyncio.create_task(produce())
    seen: list[tuple[str, str]] = []
    async with watch.Watch() as w:
        async with asyncio.timeout(30):
            # A "watch list": the current state as ADDED events, a BOOKMARK marking its end (annotation
            # k8s.io/initial-events-end), then live events.
            async for event in w.stream(
                core.list_namespaced_config_map,
                kube_namespace,
                allow_watch_bookmarks=True,
                send_initial_events=True,
                resource_version_match="NotOlderThan",
                timeout_seconds=25,
            ):
                if event["type"] == "BOOKMARK":
                    annotations = event["raw_object"]["metadata"].get("annotations") or {}
                    if annotations.get("k8s.io/initial-events-end") == "true":
                        seen.append(("BOOKMARK", "initial-events-end"))
                        initial_done.set()
                    continue
                seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 6:
                    w.stop()
    await asyncio.wait_for(producer, 5)
    assert seen == [
        ("ADDED", "before"),
        ("BOOKMARK", "initial-events-end"),
        ("ADDED", "cm-1"),
        ("ADDED", "cm-2"),
        ("ADDED", "cm-3"),
        ("MODIFIED", "cm-1"),
    ]


async def test_apply_crds_again_replaces_in_place(
    kube_cluster: KubeCluster, kube_api: client.ApiClient
) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    before = await ext.read_custom_resource_definition("trafficsplits.split.smi-spec.io")
    path = next(p for p in crd_files() if p.name == "trafficsplits.split.smi-spec.io.yaml")
    assert await kube_cluster.apply_crds([path]) == ["trafficsplits.split.smi-spec.io"]
    after = await ext.read_custom_resource_definition("trafficsplits.split.smi-spec.io")
    assert after.metadata.uid == before.metadata.uid  # replaced, not deleted and re-created
    assert any(c.type == "Established" and c.status == "True" for c in after.status.conditions)


def test_private_cluster_stops_cleanly(tmp_path: Path) -> None:
    cluster = KubeCluster()
    with cluster:
        assert cluster.running and cluster.start_seconds is not None
        pids = cluster.pids()
        assert set(pids) == {"etcd", "kube-apiserver"}
        workdir = cluster.workdir
        status, body = cluster.request("GET", "/api/v1/namespaces", token=cluster.controller_token)
        assert (
            status == 403 and CONTROLLER_USER in json.loads(body)["message"]
        )  # authenticated, not authorized
        status, _ = cluster.request("GET", "/api/v1/namespaces", token="not-a-token")
        assert status == 401
        kubeconfig = yaml.safe_load(
            cluster.kubeconfig(tmp_path / "ctrl.yaml", token=cluster.controller_token).read_text()
        )
        assert kubeconfig["clusters"][0]["cluster"]["server"] == cluster.url
        assert kubeconfig["users"][0]["user"]["token"] == cluster.controller_token
    assert not cluster.running
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not workdir.exists()


def test_failed_start_reports_the_apiserver_log(tmp_path: Path) -> None:
    cluster = KubeCluster(extra_apiserver_args=["--no-such-flag=1"], startup_timeout=60)
    with pytest.raises(KubeInfraError) as err:
        cluster.start()
    assert "kube-apiserver exited" in str(err.value)
    assert "no-such-flag" in str(err.value)  # the tail of its log names the bad flag
    assert not cluster.running
    assert cluster.log_path.is_file() and not (cluster.workdir / "etcd").exists()
    shutil.rmtree(cluster.workdir)
