"""Helpers for the controller tests on a real API server: the RBAC of deploy/rbac.yaml bound to
the test cluster's controller user, a "kubelet" that makes Deployments and DaemonSets ready (or
stuck), a router
that keeps its weights in a ConfigMap (a stand-in for a mesh object: it survives a controller
restart), a scripted analyzer, manifests, and waiting for a Canary's status.

PYTEST_DONT_REWRITE"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client.exceptions import ApiException

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.kube.rest import CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, Kube, Resource
from canary_stream.kube.watch import Informer
from canary_stream.router.base import Routes
from canary_stream.spec.model import Canary

ROOT = Path(__file__).resolve().parent.parent
CANARIES = Resource("canary-stream.dev", "v1beta1", "canaries")
CLUSTER_ROLES = Resource("rbac.authorization.k8s.io", "v1", "clusterroles")
CLUSTER_ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings")


async def apply_rbac(admin: Kube, user: str) -> None:
    """deploy/rbac.yaml's ClusterRole, bound to `user` (the test cluster's controller identity)."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    binding = {
        **binding,
        "metadata": {"name": f"{binding['metadata']['name']}-test"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    for res, body in ((CLUSTER_ROLES, role), (CLUSTER_ROLE_BINDINGS, binding)):
        try:
            await admin.request("POST", res.path(), body=body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            await admin.request("PUT", res.path(None, body["metadata"]["name"]), body=body)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ready_status(dep: dict[str, Any]) -> dict[str, Any]:
    replicas = (dep.get("spec") or {}).get("replicas", 1)
    return {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "lastUpdateTime": _now(),
                "lastTransitionTime": _now(),
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "lastUpdateTime": _now(),
                "lastTransitionTime": _now(),
            },
        ],
    }


#: Nodes the fake kubelet schedules a DaemonSet's pods on.
NODES = 3


def daemonset_status(ds: dict[str, Any], *, stuck: bool = False) -> dict[str, Any]:
    """A finished rollout on NODES nodes (none while the scale-to-zero nodeSelector is set); stuck:
    the new pods never become available."""
    selector = (((ds.get("spec") or {}).get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    desired = 0 if "flagger.app/scale-to-zero" in selector else NODES
    return {
        "observedGeneration": ds["metadata"]["generation"],
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": desired,
        "updatedNumberScheduled": desired,
        "numberMisscheduled": 0,
        "numberReady": 0 if stuck else desired,
        "numberAvailable": 0 if stuck else desired,
    }


def stuck_status(dep: dict[str, Any]) -> dict[str, Any]:
    replicas = (dep.get("spec") or {}).get("replicas", 1)
    return {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": 0,
        "availableReplicas": 0,
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "lastUpdateTime": _now(),
                "lastTransitionTime": _now(),
            },
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "lastUpdateTime": _now(),
                "lastTransitionTime": _now(),
            },
        ],
    }


class FakeKubelet:
    """Plays controller-manager + kubelet for one namespace: every Deployment or DaemonSet whose
    generation is not yet observed gets a finished-rollout status, or a stuck one when its name is
    in `stuck`."""

    def __init__(self, admin: Kube, namespace: str) -> None:
        self.admin = admin
        self.namespace = namespace
        self.stuck: set[str] = set()
        self.informers = [Informer(admin, res, namespace) for res in (DEPLOYMENTS, DAEMONSETS)]
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FakeKubelet:
        self._tasks = [asyncio.create_task(self._run(inf)) for inf in self.informers]
        for inf in self.informers:
            await inf.synced.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for inf in self.informers:
            inf.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, informer: Informer) -> None:
        res = informer.resource
        async for ev in informer.events():
            if ev.type == "DELETED":
                continue
            obj = ev.object
            meta, status = obj["metadata"], obj.get("status") or {}
            if status.get("observedGeneration") == meta.get("generation"):
                continue
            stuck = meta["name"] in self.stuck
            if res == DAEMONSETS:
                body = daemonset_status(obj, stuck=stuck)
            else:
                body = stuck_status(obj) if stuck else ready_status(obj)
            with contextlib.suppress(ApiException):
                await self.admin.request(
                    "PATCH",
                    res.path(self.namespace, meta["name"], "status"),
                    body=[{"op": "add", "path": "/status", "value": body}],
                    content_type="application/json-patch+json",
                )


class ConfigMapRouter:
    """A Router keeping the split in ConfigMap `<canary>-routes` (like a mesh object, it outlives
    the controller). Every write is appended to `history` (shared across instances)."""

    def __init__(self, kube: Kube, history: list[tuple[str, Routes]]) -> None:
        self.kube = kube
        self.history = history

    @staticmethod
    def _name(canary: Canary) -> str:
        return f"{canary.name}-routes"

    async def reconcile(self, canary: Canary) -> None:
        if await self.kube.get(CONFIGMAPS, canary.namespace, self._name(canary)) is None:
            body = {"metadata": {"name": self._name(canary)}, "data": _data(Routes(100, 0))}
            with contextlib.suppress(ApiException):
                await self.kube.create(CONFIGMAPS, canary.namespace, body)

    async def get_routes(self, canary: Canary) -> Routes:
        cm = await self.kube.get(CONFIGMAPS, canary.namespace, self._name(canary))
        if cm is None:
            raise LookupError("routes not reconciled")
        d = cm["data"]
        return Routes(int(d["primary"]), int(d["canary"]), d["mirrored"] == "true")

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        await self.kube.patch(CONFIGMAPS, canary.namespace, self._name(canary), {"data": _data(routes)})
        self.history.append((canary.name, routes))

    async def finalize(self, canary: Canary) -> None:
        await self.set_routes(canary, Routes(100, 0))


def _data(r: Routes) -> dict[str, str]:
    return {
        "primary": str(r.primary_weight),
        "canary": str(r.canary_weight),
        "mirrored": "true" if r.mirrored else "false",
    }


class ScriptedAnalyzer:
    """An Analyzer whose decision the test sets (`decision`)."""

    def __init__(self, decision: Decision = Decision.PASS) -> None:
        self.decision = decision
        self.steps: list[tuple[float, Routes]] = []

    def start_step(self, at: float, routes: Routes) -> None:
        self.steps.append((at, routes))

    def verdict(self, now: float) -> Verdict:
        return Verdict(self.decision, now, (f"scripted {self.decision.value}",))


def podinfo_deployment(
    name: str = "podinfo",
    image: str = "ghcr.io/stefanprodan/podinfo:6.0.0",
    replicas: int = 2,
    config: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "podinfod", "image": image, "ports": [{"containerPort": 9898}]}
    if config:
        container["envFrom"] = [{"configMapRef": {"name": config}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def canary_manifest(name: str = "podinfo", target: str = "podinfo", **spec: Any) -> dict[str, Any]:
    analysis = spec.pop("analysis", {"interval": "1s", "threshold": 2, "maxWeight": 30, "stepWeight": 10})
    return {
        "apiVersion": "canary-stream.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898},
            "analysis": analysis,
            **spec,
        },
    }


async def set_image(kube: Kube, namespace: str, name: str, image: str) -> None:
    """A new revision of the target (like `kubectl set image`)."""
    dep = await kube.get(DEPLOYMENTS, namespace, name)
    assert dep is not None
    containers = dep["spec"]["template"]["spec"]["containers"]
    containers[0]["image"] = image
    await kube.patch(
        DEPLOYMENTS, namespace, name, {"spec": {"template": {"spec": {"containers": containers}}}}
    )


async def wait_for(
    kube: Kube,
    namespace: str,
    name: str,
    pred: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,
    what: str = "condition",
) -> dict[str, Any]:
    """Poll the Canary until `pred(canary)`; AssertionError with the last status on timeout."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = await kube.get(CANARIES, namespace, name)
        if last is not None and pred(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; canary status: {(last or {}).get('status')}")


def phase_is(*phases: str) -> Callable[[dict[str, Any]], bool]:
    return lambda c: (c.get("status") or {}).get("phase") in phases


async def wait_phase(
    kube: Kube, namespace: str, name: str, *phases: str, timeout: float = 30.0
) -> dict[str, Any]:
    return await wait_for(kube, namespace, name, phase_is(*phases), timeout, f"phase {'/'.join(phases)}")


async def events_about(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    doc = await kube.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    return [e for e in doc.get("items") or [] if (e.get("regarding") or {}).get("name") == name]


async def wait_event(
    kube: Kube, namespace: str, name: str, pred: Callable[[str], bool], what: str, timeout: float = 10.0
) -> str:
    """Poll the events about `name` until one's note satisfies `pred`; that note."""
    notes: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = [e["note"] for e in await events_about(kube, namespace, name)]
        if found := next((n for n in notes if pred(n)), None):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no event {what}: {notes}")
