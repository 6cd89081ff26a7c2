"""The controller against a real kube-apiserver + etcd (marker `kube`), running as the controller
user under deploy/rbac.yaml's ClusterRole (so every test also proves the RBAC manifest), with a
fake kubelet making Deployments ready, a ConfigMap-backed router and a scripted analyzer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from canary_stream.analysis.verdict import Decision
from canary_stream.controller.kube_controller import FINALIZER, ControllerConfig, KubeController
from canary_stream.controller.scheduler import RolloutOptions
from canary_stream.core import Aggregator
from canary_stream.kube.lease import LeaseConfig
from canary_stream.kube.rest import (
    CONFIGMAPS,
    DAEMONSETS,
    DEPLOYMENTS,
    HPAS,
    INGRESSES,
    PODS,
    SCALED_OBJECTS,
    SECRETS,
    SERVICES,
    Kube,
    Resource,
)
from canary_stream.registry import Registry
from canary_stream.router.base import Routes
from hook_server import HookServer
from kube_controller_helpers import (
    CANARIES,
    ConfigMapRouter,
    FakeKubelet,
    ScriptedAnalyzer,
    apply_rbac,
    canary_manifest,
    events_about,
    phase_is,
    podinfo_deployment,
    set_image,
    wait_event,
    wait_for,
    wait_phase,
)
from kube_fixtures import KubeCluster, api_client_for
from test_nginx_router import ingress_manifest

pytestmark = pytest.mark.kube

OPTIONS = RolloutOptions(min_interval_s=1.0, readiness_recheck_s=0.5)


@dataclass
class Env:
    cluster: KubeCluster
    admin: Kube
    namespace: str
    kubelet: FakeKubelet
    history: list[tuple[str, Routes]] = field(default_factory=list)
    analyzer: ScriptedAnalyzer = field(default_factory=ScriptedAnalyzer)
    running: list[tuple[KubeController, asyncio.Event, asyncio.Task[None], Any]] = field(default_factory=list)

    async def start(
        self, *, lease: LeaseConfig | None = None, registry: Registry | None = None, mesh: str | None = None
    ) -> KubeController:
        """A controller as the RBAC-bound controller user, in the background; routing in a
        ConfigMap, or with `mesh` the routers' factory for that provider (real mesh objects)."""
        api = api_client_for(self.cluster, self.cluster.controller_token)
        kube = Kube(api)
        controller = KubeController(
            kube,
            registry or Registry(),
            ControllerConfig(namespaces=(self.namespace,), lease=lease, options=OPTIONS, mesh_provider=mesh),
            router_factory=None if mesh else lambda canary, k: ConfigMapRouter(k, self.history),
            analyzer_factory=lambda canary: self.analyzer,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        self.running.append((controller, stop, task, api))
        return controller

    async def stop(self, controller: KubeController) -> None:
        for item in list(self.running):
            if item[0] is controller:
                _, stop, task, api = item
                stop.set()
                await asyncio.wait_for(task, 30)
                await api.close()
                self.running.remove(item)

    async def crash(self, controller: KubeController) -> None:
        """Stop without any clean-up (no flush, no lease release): a killed process."""
        for item in list(self.running):
            if item[0] is controller:
                _, _, task, api = item
                await controller.kill()
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await api.close()
                self.running.remove(item)

    def weights(self, name: str = "podinfo") -> list[int]:
        return [r.canary_weight for n, r in self.history if n == name]


@pytest.fixture
async def env(kube_cluster: KubeCluster, kube_api: Any, kube_namespace: str) -> AsyncIterator[Env]:
    admin = Kube(kube_api)
    await apply_rbac(admin, "canary-controller")
    async with FakeKubelet(admin, kube_namespace) as kubelet:
        e = Env(kube_cluster, admin, kube_namespace, kubelet)
        try:
            yield e
        finally:
            for controller, *_ in list(e.running):
                await e.stop(controller)


async def deploy(env: Env, canary: dict[str, Any] | None = None, **deployment: Any) -> None:
    await env.admin.create(DEPLOYMENTS, env.namespace, podinfo_deployment(**deployment))
    await env.admin.create(CANARIES, env.namespace, canary or canary_manifest())


async def delete_canary(env: Env, name: str = "podinfo") -> None:
    """Delete the Canary and wait until the finalizer has released it."""
    await env.admin.request("DELETE", CANARIES.path(env.namespace, name))
    for _ in range(300):
        if await env.admin.get(CANARIES, env.namespace, name) is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the Canary was never released by the finalizer")


async def test_initialisation_creates_primary_scales_target_down_and_sets_promoted(env: Env) -> None:
    await deploy(env)
    await env.start()
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    status = c["status"]
    promoted = next(x for x in status["conditions"] if x["type"] == "Promoted")
    assert promoted["status"] == "True" and promoted["reason"] == "Initialized"
    assert status["lastAppliedSpec"] and status["lastAppliedSpec"] == status["lastPromotedSpec"]
    assert status["observedGeneration"] == c["metadata"]["generation"]
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["selector"]["matchLabels"] == {"app": "podinfo-primary"}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-primary"
    assert primary["spec"]["replicas"] == 2
    owner = primary["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Canary",
        "podinfo",
        c["metadata"]["uid"],
        True,
    )
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 0
    assert env.history == [] or env.weights() == [0] * len(env.history)
    notes = [e["note"] for e in await events_about(env.admin, env.namespace, "podinfo")]
    assert any("Initialization done" in n for n in notes)


async def test_promotion_steps_10_20_30_then_succeeded(env: Env) -> None:
    await deploy(env)
    controller = await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Progressing")
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 2  # scaled up from zero
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    assert [w for w in env.weights() if w] == [10, 20, 30]
    assert env.weights()[-1] == 0
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-primary"
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 0
    assert c["status"]["lastPromotedSpec"] == c["status"]["lastAppliedSpec"]
    promoted = next(x for x in c["status"]["conditions"] if x["type"] == "Promoted")
    assert promoted["status"] == "True" and promoted["reason"] == "Succeeded"
    m = controller.managed[(env.namespace, "podinfo")]
    assert m.writer.writes >= 5  # status went through the status subresource


async def test_failing_analysis_rolls_back(env: Env) -> None:
    await deploy(env)
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    env.analyzer.decision = Decision.FAIL
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.2")
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Failed", timeout=40)
    promoted = next(x for x in c["status"]["conditions"] if x["type"] == "Promoted")
    assert promoted["status"] == "False"
    assert env.weights()[-1] == 0 and max(env.weights()) == 10
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None and primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":6.0.0"
    )
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 0
    events = await events_about(env.admin, env.namespace, "podinfo")
    warnings = [e["note"] for e in events if e["type"] == "Warning"]
    assert any("Rolling back" in n for n in warnings) and any("Canary failed" in n for n in warnings)


async def test_skip_analysis_with_a_stuck_canary_fails_by_progress_deadline(env: Env) -> None:
    manifest = canary_manifest(skipAnalysis=True)
    await deploy(env, manifest)
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    env.kubelet.stuck.add("podinfo")  # the new image never becomes ready
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:bad")
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Failed", timeout=40)
    assert c["status"]["canaryWeight"] == 0
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None and primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":6.0.0"
    )
    notes = [e["note"] for e in await events_about(env.admin, env.namespace, "podinfo")]
    assert any("progress deadline" in n for n in notes)


async def test_revert_on_deletion_runs_through_the_finalizer(env: Env) -> None:
    await deploy(env, canary_manifest(revertOnDeletion=True))
    controller = await env.start()
    c = await wait_for(
        env.admin,
        env.namespace,
        "podinfo",
        lambda c: FINALIZER in (c["metadata"].get("finalizers") or []) and phase_is("Initialized")(c),
        what="finalizer + Initialized",
    )
    await delete_canary(env)
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 2  # serves again
    assert env.history[-1] == ("podinfo", Routes(100, 0))
    assert (env.namespace, "podinfo") not in controller.managed
    assert c["metadata"]["uid"]


async def test_new_revision_mid_analysis_restarts_it(env: Env) -> None:
    await deploy(
        env, canary_manifest(analysis={"interval": "2s", "threshold": 2, "maxWeight": 50, "stepWeight": 10})
    )
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    first = await wait_for(
        env.admin,
        env.namespace,
        "podinfo",
        lambda c: (c.get("status") or {}).get("canaryWeight") == 20,
        what="weight 20",
    )
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.2")
    restarted = await wait_for(
        env.admin,
        env.namespace,
        "podinfo",
        lambda c: c["status"]["lastAppliedSpec"] != first["status"]["lastAppliedSpec"],
        what="new lastAppliedSpec",
    )
    assert restarted["status"]["phase"] == "Progressing"
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=60)
    weights = env.weights()
    back = weights.index(0, weights.index(20))  # all traffic back to primary at the restart
    assert weights[back + 1 :][:5] == [10, 20, 30, 40, 50]
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None and primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        ":6.0.2"
    )


async def test_restart_mid_rollout_resumes_without_going_back_or_promoting_twice(env: Env) -> None:
    await deploy(
        env, canary_manifest(analysis={"interval": "2s", "threshold": 2, "maxWeight": 50, "stepWeight": 10})
    )
    first = await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_for(
        env.admin,
        env.namespace,
        "podinfo",
        lambda c: (c.get("status") or {}).get("canaryWeight") == 20,
        what="weight 20",
    )
    await env.crash(first)
    at_crash = len(env.history)
    await env.start()
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=60)
    after = [r.canary_weight for _, r in env.history[at_crash:]]
    assert after[:-1] == sorted(after[:-1]) and after[0] >= 20  # never backwards
    assert after[-1] == 0
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None and primary["metadata"]["generation"] == 2  # created, promoted once
    assert c["status"]["lastPromotedSpec"] == c["status"]["lastAppliedSpec"]


async def test_two_replicas_one_leader_and_takeover(env: Env) -> None:
    await deploy(env)

    def lease(identity: str) -> LeaseConfig:
        return LeaseConfig(f"lease-{env.namespace}", env.namespace, identity, 3.0, 2.0, 0.5)

    a = await env.start(lease=lease("a"))
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    b = await env.start(lease=lease("b"))
    await asyncio.sleep(2)
    assert a.is_leader() and not b.is_leader()
    assert (env.namespace, "podinfo") in a.managed and not b.managed
    await env.crash(a)  # no release: b waits out the lease duration
    for _ in range(100):
        if b.is_leader():
            break
        await asyncio.sleep(0.1)
    assert b.is_leader()
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    c = await env.admin.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/lease-{env.namespace}"
    )
    assert c["spec"]["holderIdentity"] == "b" and c["spec"]["leaseTransitions"] == 1
    await env.stop(b)  # a clean stop releases the lease
    c = await env.admin.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{env.namespace}/leases/lease-{env.namespace}"
    )
    assert not c["spec"].get("holderIdentity")


async def test_invalid_canary_gets_a_condition_and_event_while_others_go_on(env: Env) -> None:
    await env.admin.create(DEPLOYMENTS, env.namespace, podinfo_deployment())
    await env.admin.create(DEPLOYMENTS, env.namespace, podinfo_deployment("other"))
    bad = canary_manifest(
        "broken",
        "other",
        analysis={"interval": "1s", "threshold": 2, "stepWeights": [20, 10]},
    )
    await env.admin.create(CANARIES, env.namespace, bad)
    await env.admin.create(CANARIES, env.namespace, canary_manifest())
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    c = await wait_for(
        env.admin,
        env.namespace,
        "broken",
        lambda c: any(x["type"] == "SpecValid" for x in (c.get("status") or {}).get("conditions", [])),
        what="SpecValid condition",
    )
    cond = next(x for x in c["status"]["conditions"] if x["type"] == "SpecValid")
    assert cond["status"] == "False" and "spec.analysis" in cond["message"]
    for _ in range(50):
        notes = [
            e["note"]
            for e in await events_about(env.admin, env.namespace, "broken")
            if e["type"] == "Warning"
        ]
        if notes:
            break
        await asyncio.sleep(0.1)
    assert any("spec.analysis" in n for n in notes)
    assert await env.admin.get(DEPLOYMENTS, env.namespace, "other-primary") is None


async def test_manual_promote_by_annotation_is_consumed(env: Env) -> None:
    await deploy(
        env, canary_manifest(analysis={"interval": "1s", "threshold": 2, "maxWeight": 50, "stepWeight": 10})
    )
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    env.analyzer.decision = Decision.CONTINUE  # the analysis never passes by itself
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_for(
        env.admin,
        env.namespace,
        "podinfo",
        lambda c: (c.get("status") or {}).get("canaryWeight") == 10,
        what="weight 10",
    )
    await env.admin.patch(
        CANARIES,
        env.namespace,
        "podinfo",
        {"metadata": {"annotations": {"canary-stream.dev/action": "promote"}}},
    )
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=30)
    assert "canary-stream.dev/action" not in (c["metadata"].get("annotations") or {})
    assert max(env.weights()) == 10


class RecordingAggregator(Aggregator):
    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, str] = {}

    def set_host(self, host: str, version: str) -> None:
        super().set_host(host, version)
        self.hosts[host] = version

    def remove_host(self, host: str) -> bool:
        self.hosts.pop(host, None)
        return super().remove_host(host)


async def test_pod_ips_are_attributed_to_primary_and_canary(env: Env) -> None:
    agg = RecordingAggregator()
    await deploy(env)
    await env.start(registry=Registry(aggregator=agg))
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    for pod, app, ip in (
        ("p1", "podinfo-primary", "10.1.0.1"),
        ("c1", "podinfo", "10.1.0.2"),
        ("x1", "unrelated", "10.1.0.3"),
    ):
        body = {
            "metadata": {"name": pod, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        await env.admin.create(PODS, env.namespace, body)
        await env.admin.patch(
            PODS, env.namespace, pod, {"status": {"podIP": ip, "podIPs": [{"ip": ip}]}}, sub="status"
        )
    for _ in range(50):
        if len(agg.hosts) >= 2:
            break
        await asyncio.sleep(0.1)
    assert agg.hosts == {"10.1.0.1": "primary", "10.1.0.2": "canary"}
    await env.admin.request("DELETE", PODS.path(env.namespace, "c1"), query={"gracePeriodSeconds": 0})
    for _ in range(50):
        if "10.1.0.2" not in agg.hosts:
            break
        await asyncio.sleep(0.1)
    assert agg.hosts == {"10.1.0.1": "primary"}


async def test_config_change_is_a_new_revision_and_is_copied_on_promotion(env: Env) -> None:
    await env.admin.create(
        CONFIGMAPS, env.namespace, {"metadata": {"name": "podinfo-env"}, "data": {"COLOR": "blue"}}
    )
    await deploy(env, config="podinfo-env")
    await env.start()
    initialized = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    tracked = initialized["status"]["trackedConfigs"]  # Flagger's status field, shown as is
    assert list(tracked) == ["configmap/podinfo-env"] and tracked["configmap/podinfo-env"]
    copy = await env.admin.get(CONFIGMAPS, env.namespace, "podinfo-env-primary")
    assert copy is not None and copy["data"] == {"COLOR": "blue"}
    primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
    assert primary is not None
    env_from = primary["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
    assert env_from["configMapRef"]["name"] == "podinfo-env-primary"
    await env.admin.patch(CONFIGMAPS, env.namespace, "podinfo-env", {"data": {"COLOR": "green"}})
    progressing = await wait_phase(env.admin, env.namespace, "podinfo", "Progressing", timeout=10)
    changed = progressing["status"]["trackedConfigs"]
    assert list(changed) == ["configmap/podinfo-env"] and changed != tracked
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    copy = await env.admin.get(CONFIGMAPS, env.namespace, "podinfo-env-primary")
    assert copy is not None and copy["data"] == {"COLOR": "green"}


def podinfo_hpa(cpu: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
                }
            ],
        },
    }


def hpa_cpu(hpa: dict[str, Any] | None) -> int:
    assert hpa is not None
    return int(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"])


async def test_hpa_is_cloned_for_the_primary_and_synced_on_promotion(env: Env) -> None:
    """Flagger's e2e test-hpa: `autoscalerRef` gives a `podinfo-primary` HPA scaling the primary;
    a change to the target's HPA reaches it with the next promotion."""
    await env.admin.create(HPAS, env.namespace, podinfo_hpa(99))
    ref = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "name": "podinfo",
        "primaryScalerReplicas": {"minReplicas": 3, "maxReplicas": 6},
    }
    await deploy(env, canary_manifest(autoscalerRef=ref))
    await env.start()
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    primary = await env.admin.get(HPAS, env.namespace, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["scaleTargetRef"]["name"] == "podinfo-primary"
    assert (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (3, 6)
    assert hpa_cpu(primary) == 99
    owner = primary["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Canary" and owner["uid"] == c["metadata"]["uid"]
    target = await env.admin.get(HPAS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["scaleTargetRef"]["name"] == "podinfo"  # untouched
    await env.admin.patch(
        HPAS, env.namespace, "podinfo", {"spec": {"metrics": podinfo_hpa(50)["spec"]["metrics"]}}
    )
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    primary = await env.admin.get(HPAS, env.namespace, "podinfo-primary")
    assert hpa_cpu(primary) == 50
    assert primary is not None and (primary["spec"]["minReplicas"], primary["spec"]["maxReplicas"]) == (3, 6)


PAUSED = "autoscaling.keda.sh/paused-replicas"
KEDA_REF = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo-so"}


def podinfo_scaled_object(threshold: str) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "podinfo-so"},
        "spec": {
            "scaleTargetRef": {"name": "podinfo"},
            "minReplicaCount": 1,
            "maxReplicaCount": 4,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "requests",
                    "metadata": {
                        "serverAddress": "http://prometheus.monitoring:9090",
                        "query": 'sum(rate(http_requests_total{app="podinfo"}[1m]))',
                        "threshold": threshold,
                    },
                }
            ],
        },
    }


async def paused_replicas(env: Env) -> str | None:
    so = await env.admin.get(SCALED_OBJECTS, env.namespace, "podinfo-so")
    assert so is not None
    return ((so["metadata"].get("annotations")) or {}).get(PAUSED)


async def test_keda_scaled_object_is_cloned_and_paused_while_the_canary_is_idle(env: Env) -> None:
    """Flagger's e2e KEDA scenario: `<so>-primary` scales the primary (queries rewritten); the
    target's ScaledObject is paused at 0 while idle, resumed for the analysis, paused again after
    the promotion, which also brings a change of the target's ScaledObject to the primary's."""
    await env.admin.create(SCALED_OBJECTS, env.namespace, podinfo_scaled_object("100"))
    ref = {**KEDA_REF, "primaryScalerReplicas": {"minReplicas": 2, "maxReplicas": 5}}
    await deploy(env, canary_manifest(autoscalerRef=ref))
    await env.start()
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    primary = await env.admin.get(SCALED_OBJECTS, env.namespace, "podinfo-so-primary")
    assert primary is not None
    spec = primary["spec"]
    assert spec["scaleTargetRef"]["name"] == "podinfo-primary"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)
    trigger = spec["triggers"][0]["metadata"]
    assert trigger["query"] == 'sum(rate(http_requests_total{app="podinfo-primary"}[1m]))'
    assert primary["metadata"]["ownerReferences"][0]["uid"] == c["metadata"]["uid"]
    assert await paused_replicas(env) == "0"
    target = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 0

    triggers = podinfo_scaled_object("50")["spec"]["triggers"]
    await env.admin.patch(SCALED_OBJECTS, env.namespace, "podinfo-so", {"spec": {"triggers": triggers}})
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Progressing", timeout=20)
    assert await paused_replicas(env) is None  # the canary runs: KEDA scales it
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    for _ in range(50):  # scaled to 0 right after the phase is written
        if await paused_replicas(env) == "0":
            break
        await asyncio.sleep(0.1)
    assert await paused_replicas(env) == "0"
    primary = await env.admin.get(SCALED_OBJECTS, env.namespace, "podinfo-so-primary")
    assert primary is not None and primary["spec"]["triggers"][0]["metadata"]["threshold"] == "50"


@pytest.mark.parametrize("kind", ["HorizontalPodAutoscaler", "ScaledObject"])
async def test_a_missing_scaler_is_reported_and_the_canary_waits_for_it(env: Env, kind: str) -> None:
    if kind == "ScaledObject":
        ref, resource, body = KEDA_REF, SCALED_OBJECTS, podinfo_scaled_object("100")
    else:
        ref = {"apiVersion": "autoscaling/v2", "kind": kind, "name": "podinfo"}
        resource, body = HPAS, podinfo_hpa(80)
    await deploy(env, canary_manifest(autoscalerRef=ref))
    await env.start()
    await wait_event(
        env.admin, env.namespace, "podinfo",
        lambda n: f"{kind} {ref['name']}" in n and "not found" in n, f"about the missing {kind}",
    )  # fmt: skip
    await env.admin.create(resource, env.namespace, body)
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized", timeout=30)
    assert await env.admin.get(resource, env.namespace, f"{ref['name']}-primary") is not None
    if kind == "ScaledObject":
        assert await paused_replicas(env) == "0"


SCALE_TO_ZERO = "flagger.app/scale-to-zero"


def podinfo_daemonset(image: str = "ghcr.io/stefanprodan/podinfo:6.0.0") -> dict[str, Any]:
    ds = podinfo_deployment("podinfo-ds", image=image)
    ds["kind"] = "DaemonSet"
    spec = ds["spec"]
    for key in ("replicas", "progressDeadlineSeconds"):
        del spec[key]
    spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    spec["minReadySeconds"] = 5
    return ds


def node_selector(ds: dict[str, Any] | None) -> dict[str, str]:
    assert ds is not None
    return dict(ds["spec"]["template"]["spec"].get("nodeSelector") or {})


async def test_daemonset_blue_green_promotion_and_revert_on_deletion(env: Env) -> None:
    """Flagger's e2e scenario "DaemonSet B/G": `podinfo-ds-primary` runs the release, the target
    is kept off every node by a nodeSelector while idle, a new image is analysed and promoted,
    and deleting the Canary (revertOnDeletion) lets the target run again."""
    await env.admin.create(DAEMONSETS, env.namespace, podinfo_daemonset())
    manifest = canary_manifest(
        target="podinfo-ds",
        revertOnDeletion=True,
        analysis={"interval": "1s", "threshold": 2, "iterations": 3},
    )
    manifest["spec"]["targetRef"]["kind"] = "DaemonSet"
    await env.admin.create(CANARIES, env.namespace, manifest)
    await env.start()
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    primary = await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds-primary")
    assert primary is not None
    assert primary["spec"]["selector"]["matchLabels"] == {"app": "podinfo-ds-primary"}
    assert primary["spec"]["template"]["metadata"]["labels"]["app"] == "podinfo-ds-primary"
    assert (
        primary["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        and primary["spec"]["minReadySeconds"] == 5
    )
    assert primary["metadata"]["ownerReferences"][0]["uid"] == c["metadata"]["uid"]
    assert SCALE_TO_ZERO not in node_selector(primary)
    target = await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds")
    assert node_selector(target) == {SCALE_TO_ZERO: "true"}  # "scaled to zero"
    applied = c["status"]["lastAppliedSpec"]

    containers = podinfo_daemonset("ghcr.io/stefanprodan/podinfo:6.0.1")["spec"]["template"]["spec"][
        "containers"
    ]
    await env.admin.patch(
        DAEMONSETS, env.namespace, "podinfo-ds", {"spec": {"template": {"spec": {"containers": containers}}}}
    )
    progressing = await wait_phase(env.admin, env.namespace, "podinfo", "Progressing", timeout=20)
    assert progressing["status"]["lastAppliedSpec"] != applied
    target = await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds")
    assert SCALE_TO_ZERO not in node_selector(target)  # scaled up for the analysis
    done = await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    primary = await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert SCALE_TO_ZERO not in node_selector(primary)
    target = await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds")
    assert node_selector(target) == {SCALE_TO_ZERO: "true"}  # idle again
    # Scaling the target down was not taken for a release.
    assert done["status"]["lastAppliedSpec"] == progressing["status"]["lastAppliedSpec"]

    await delete_canary(env)
    assert node_selector(await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds")) == {}


async def test_a_daemonset_with_an_on_delete_strategy_is_reported_by_field(env: Env) -> None:
    ds = podinfo_daemonset()
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    await env.admin.create(DAEMONSETS, env.namespace, ds)
    manifest = canary_manifest(target="podinfo-ds")
    manifest["spec"]["targetRef"]["kind"] = "DaemonSet"
    await env.admin.create(CANARIES, env.namespace, manifest)
    await env.start()
    await wait_event(
        env.admin, env.namespace, "podinfo",
        lambda n: "spec.updateStrategy.type must be RollingUpdate" in n, "naming spec.updateStrategy",
    )  # fmt: skip
    assert await env.admin.get(DAEMONSETS, env.namespace, "podinfo-ds-primary") is None


VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices")


def podinfo_service(version: str) -> dict[str, Any]:
    """A Service whose selector names the release behind it (the Deployments are someone else's)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}},
        "spec": {
            "selector": {"app": "podinfo", "version": version},
            "ports": [{"name": "http", "port": 9898, "targetPort": 9898}],
        },
    }


async def service_selector(env: Env, name: str) -> dict[str, str]:
    svc = await env.admin.get(SERVICES, env.namespace, name)
    assert svc is not None, name
    return dict(svc["spec"]["selector"])


async def test_service_target_is_copied_analysed_promoted_and_rolled_back(env: Env) -> None:
    """Flagger's Service controller on a real apiserver with Istio: the target Service is copied
    as `-canary` (following it) and `-primary` (given its spec on promotion), each with its own
    cluster IP; the VirtualService splits between them; a failed run leaves the primary alone."""
    await env.admin.create(SERVICES, env.namespace, podinfo_service("v1"))
    manifest = canary_manifest(analysis={"interval": "1s", "threshold": 2, "iterations": 2})
    manifest["spec"]["targetRef"] = {"apiVersion": "v1", "kind": "Service", "name": "podinfo"}
    await env.admin.create(CANARIES, env.namespace, manifest)
    await env.start(mesh="istio")
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    target = await env.admin.get(SERVICES, env.namespace, "podinfo")
    assert target is not None
    ips = {target["spec"]["clusterIP"]}
    for name in ("podinfo-primary", "podinfo-canary"):
        copy = await env.admin.get(SERVICES, env.namespace, name)
        assert copy is not None
        assert copy["spec"]["selector"] == {"app": "podinfo", "version": "v1"}
        assert copy["metadata"]["ownerReferences"][0]["uid"] == c["metadata"]["uid"]
        ips.add(copy["spec"]["clusterIP"])
    assert len(ips) == 3  # each copy has its own cluster IP
    assert not await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")  # nothing else made
    vs = await env.admin.get(VIRTUAL_SERVICES, env.namespace, "podinfo")
    assert vs is not None
    hosts = {d["destination"]["host"]: d.get("weight") for d in vs["spec"]["http"][-1]["route"]}
    assert hosts == {"podinfo-primary": 100, "podinfo-canary": 0}
    applied = c["status"]["lastAppliedSpec"]

    # A new release: the target Service selects v2.
    await env.admin.patch(SERVICES, env.namespace, "podinfo", {"spec": {"selector": {"version": "v2"}}})
    progressing = await wait_phase(env.admin, env.namespace, "podinfo", "Progressing", timeout=20)
    assert progressing["status"]["lastAppliedSpec"] != applied
    for _ in range(100):
        if (await service_selector(env, "podinfo-canary"))["version"] == "v2":
            break
        await asyncio.sleep(0.05)
    assert (await service_selector(env, "podinfo-canary"))["version"] == "v2"
    assert (await service_selector(env, "podinfo-primary"))["version"] == "v1"  # not yet promoted
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    assert (await service_selector(env, "podinfo-primary"))["version"] == "v2"
    primary = await env.admin.get(SERVICES, env.namespace, "podinfo-primary")
    assert primary is not None and primary["spec"]["clusterIP"] in ips  # kept its own

    # A failing release: rolled back, the primary keeps v2.
    env.analyzer.decision = Decision.FAIL
    await env.admin.patch(SERVICES, env.namespace, "podinfo", {"spec": {"selector": {"version": "v3"}}})
    await wait_phase(env.admin, env.namespace, "podinfo", "Failed", timeout=40)
    assert (await service_selector(env, "podinfo-primary"))["version"] == "v2"
    assert (await service_selector(env, "podinfo-canary"))["version"] == "v3"
    vs = await env.admin.get(VIRTUAL_SERVICES, env.namespace, "podinfo")
    assert vs is not None
    hosts = {d["destination"]["host"]: d.get("weight") for d in vs["spec"]["http"][-1]["route"]}
    assert hosts == {"podinfo-primary": 100, "podinfo-canary": 0}


async def test_a_knative_service_target_is_reported_by_field(env: Env) -> None:
    manifest = canary_manifest()
    manifest["spec"]["targetRef"] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "podinfo",
    }
    await env.admin.create(CANARIES, env.namespace, manifest)
    await env.start()
    await wait_event(
        env.admin,
        env.namespace,
        "podinfo",
        lambda n: "targetRef.apiVersion" in n,
        "naming targetRef.apiVersion",
    )
    assert await env.admin.get(SERVICES, env.namespace, "podinfo-primary") is None


async def test_nginx_rollout_by_the_controller_user(env: Env) -> None:
    """provider nginx end to end under deploy/rbac.yaml: the `-canary` Ingress is created and
    annotated with each step's weight, then left at 0 after promotion."""
    ingress = ingress_manifest([("/", "podinfo")])
    await env.admin.create(INGRESSES, env.namespace, ingress)
    ref = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}
    await deploy(env, canary_manifest(provider="nginx", ingressRef=ref))
    await env.start(mesh="istio")  # spec.provider wins over the controller's default
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    seen: list[str] = []

    async def sample() -> None:
        while True:
            obj = await env.admin.get(INGRESSES, env.namespace, "podinfo-canary")
            weight = ((obj or {}).get("metadata", {}).get("annotations") or {}).get(
                "nginx.ingress.kubernetes.io/canary-weight"
            )
            if weight is not None and (not seen or seen[-1] != weight):
                seen.append(weight)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    await asyncio.sleep(0.2)
    sampler.cancel()
    assert seen == ["0", "10", "20", "30", "0"]


async def test_spec_warnings_become_warning_events_and_the_canary_runs(env: Env) -> None:
    analysis = {"interval": "1s", "threshold": 2, "maxWeight": 30, "stepWeight": 10, "mirrorWeight": 50}
    await deploy(env, canary_manifest(analysis=analysis))
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    note = await wait_event(
        env.admin,
        env.namespace,
        "podinfo",
        lambda n: "mirrorWeight" in n,
        "naming spec.analysis.mirrorWeight",
    )
    assert note == "Canary spec warning: spec.analysis.mirrorWeight: has no effect without mirror: true"


async def test_alerts_go_to_the_alert_providers_address_from_its_secret(env: Env, server: HookServer) -> None:
    """analysis.alerts on the real apiserver: the AlertProvider (ours) names a Secret holding the
    address and token; an error-only alert on another provider stays silent on a good release."""
    alert_providers = Resource("canary-stream.dev", "v1beta1", "alertproviders")
    address = base64.b64encode(server.url("/slack").encode()).decode()
    token = base64.b64encode(b"t0ken").decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "slack-url"},
        "data": {"address": address, "token": token},
    }
    await env.admin.create(SECRETS, env.namespace, secret)
    await env.admin.create(
        alert_providers,
        env.namespace,
        {"apiVersion": "canary-stream.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "slack"},
         "spec": {"type": "slack", "channel": "deploys", "secretRef": {"name": "slack-url"}}},
    )  # fmt: skip
    await env.admin.create(
        alert_providers,
        env.namespace,
        {"apiVersion": "canary-stream.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "pager"},
         "spec": {"type": "msteams", "address": server.url("/pager")}},
    )  # fmt: skip
    analysis = {
        "interval": "1s",
        "threshold": 2,
        "iterations": 2,
        "alerts": [
            {"name": "team", "severity": "info", "providerRef": {"name": "slack"}},
            {"name": "on-call", "severity": "error", "providerRef": {"name": "pager"}},
        ],
    }
    await deploy(env, canary_manifest(analysis=analysis))
    await env.start()
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    for _ in range(100):
        if len(server.calls("/slack")) >= 3:
            break
        await asyncio.sleep(0.05)
    texts = [c.body["attachments"][0]["text"] for c in server.calls("/slack")]
    assert texts == [
        "New Deployment detected, initialization completed.",
        "New revision detected, progressing canary analysis.",
        "Canary analysis completed successfully, promotion finished.",
    ]
    first = server.calls("/slack")[0]
    assert first.headers.get("Authorization") == "Bearer t0ken" and first.body["channel"] == "deploys"
    assert server.calls("/pager") == []


async def test_flagger_canaries_are_reconciled_only_when_asked(env: Env) -> None:
    from canary_stream.kube.objects import FLAGGER_GROUP, OWN_GROUP
    from canary_stream.kube.rest import Resource

    flagger = Resource("flagger.app", "v1beta1", "canaries")
    await env.admin.create(DEPLOYMENTS, env.namespace, podinfo_deployment())
    manifest = {**canary_manifest(), "apiVersion": "flagger.app/v1beta1"}
    await env.admin.create(flagger, env.namespace, manifest)
    first = await env.start()
    await asyncio.sleep(3)
    assert not first.managed  # ours only by default
    await env.stop(first)
    api = api_client_for(env.cluster, env.cluster.controller_token)
    controller = KubeController(
        Kube(api),
        Registry(),
        ControllerConfig(namespaces=(env.namespace,), groups=(OWN_GROUP, FLAGGER_GROUP), options=OPTIONS),
        router_factory=lambda canary, k: ConfigMapRouter(k, env.history),
        analyzer_factory=lambda canary: env.analyzer,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        for _ in range(300):
            obj = await env.admin.get(flagger, env.namespace, "podinfo")
            if obj and (obj.get("status") or {}).get("phase") == "Initialized":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"flagger.app Canary not initialised: {obj}")
        primary = await env.admin.get(DEPLOYMENTS, env.namespace, "podinfo-primary")
        assert primary is not None
        assert primary["metadata"]["ownerReferences"][0]["apiVersion"] == "flagger.app/v1beta1"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await api.close()


class VirtualServiceWatch:
    """Samples the VirtualService every 50 ms: the (canary weight, mirrored, has a match) states seen."""

    def __init__(self, env: Env, name: str = "podinfo") -> None:
        self.path = f"/apis/networking.istio.io/v1/namespaces/{env.namespace}/virtualservices/{name}"
        self.admin = env.admin
        self.states: list[tuple[int, bool, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                vs = await self.admin.request("GET", self.path)
                http = vs["spec"]["http"]
                last = [
                    r for r in http if any(d["destination"]["host"].endswith("-canary") for d in r["route"])
                ][-1]
                weight = next(
                    int(d.get("weight") or 0)
                    for d in last["route"]
                    if d["destination"]["host"].endswith("-canary")
                )
                mirrored = (last.get("mirror") or {}).get("host", "").endswith("-canary")
                state = (weight, mirrored, any("match" in r for r in http))
                if not self.states or self.states[-1] != state:
                    self.states.append(state)
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.task.cancel()


async def test_istio_step_weights_ladder(env: Env) -> None:
    await deploy(
        env, canary_manifest(analysis={"interval": "1s", "threshold": 2, "stepWeights": [5, 25, 60]})
    )
    await env.start(mesh="istio")
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    vs = VirtualServiceWatch(env)
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    await asyncio.sleep(0.2)
    vs.stop()
    assert [w for w, _, _ in vs.states] == [0, 5, 25, 60, 0]


async def test_istio_ab_testing_with_a_cookie_match(env: Env) -> None:
    match = [{"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]
    await deploy(
        env, canary_manifest(analysis={"interval": "1s", "threshold": 2, "iterations": 3, "match": match})
    )
    await env.start(mesh="istio")
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    vs = VirtualServiceWatch(env)
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    c = await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    await asyncio.sleep(0.2)
    vs.stop()
    # During the run the cookie route sends matching users to the canary; after it, all to primary.
    assert (100, False, True) in vs.states
    assert vs.states[-1][0] == 0
    assert c["status"]["iterations"] == 0


async def test_istio_blue_green_with_mirroring(env: Env) -> None:
    analysis = {"interval": "1s", "threshold": 2, "iterations": 2, "mirror": True, "mirrorWeight": 50}
    await deploy(env, canary_manifest(analysis=analysis))
    await env.start(mesh="istio")
    await wait_phase(env.admin, env.namespace, "podinfo", "Initialized")
    vs = VirtualServiceWatch(env)
    await set_image(env.admin, env.namespace, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
    await wait_phase(env.admin, env.namespace, "podinfo", "Succeeded", timeout=40)
    await asyncio.sleep(0.2)
    vs.stop()
    # mirrored at 0 % live traffic, then all live traffic to the canary, then back to the primary
    assert (0, True, False) in vs.states
    assert (100, False, False) in vs.states
    assert vs.states[-1] == (0, False, False)
