"""Workloads on a real cluster, as Flagger's pkg/canary/deployment_controller.go (and
daemonset_controller.go, see `daemonset`) does it.

- initialize: `<target>-primary` Deployment (or DaemonSet) created from the target (selector
  label rewritten to `<target>-primary`, tracked ConfigMaps/Secrets copied as `<name>-primary`
  and the references rewritten, owner reference to the Canary). The Rollout scales the target
  to 0 once the primary is ready.
- revision: hash of the target's pod template and the data of the configs it tracks.
- readiness: Flagger's deployment_ready rules, with progressDeadlineSeconds and the
  primary/canary ready thresholds.
- promote: the target's pod template (and tracked configs) copied to the primary.
- revert (revertOnDeletion): the target scaled back to the primary's replicas.
- DaemonSet targets: scaled to zero with a nodeSelector no node matches (`daemonset`), Flagger's
  DaemonSet readiness; the rest as for a Deployment.
- Service targets (`service`): `<target>-canary` and `<target>-primary` copies of the target
  Service, nothing scaled, always ready; the primary copy takes the target's spec on promotion.
- autoscalerRef (HorizontalPodAutoscaler or KEDA ScaledObject, see `scalers`): `<name>-primary`
  cloned from the target's at initialisation and brought in line on every promotion, scaling
  `<target>-primary`; a ScaledObject of the target is paused while the canary is scaled to 0.

Reads go through an `ObjectReader` (the controller passes its watch caches, so a step costs no
GETs); writes are retried on transient errors and on conflicts."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from canary_stream.controller.hashing import spec_hash
from canary_stream.kube.objects import CanaryRef, parse_time
from canary_stream.kube.rest import CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, SECRETS, SERVICES, Kube, Resource
from canary_stream.kube.retry import is_transient, retry, status_of
from canary_stream.kube.status import merge_diff
from canary_stream.spec.model import Canary
from canary_stream.workload import daemonset, service
from canary_stream.workload.base import Readiness, primary_name
from canary_stream.workload.scalers import Scalers

#: Labels one of which selects the target's pods (Flagger's `-selector-labels` default).
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
#: A config annotated so is not tracked (Flagger's annotation, honoured as is).
CONFIG_TRACKING = ("flagger.app/config-tracking", "canary-stream.dev/config-tracking")
_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")
RESOURCES: dict[str, Resource] = {
    "deployments": DEPLOYMENTS,
    "daemonsets": DAEMONSETS,
    "configmaps": CONFIGMAPS,
    "secrets": SECRETS,
    "services": SERVICES,
}


@dataclass(frozen=True)
class TargetKind:
    """A `targetRef.kind` canary-stream can run: its resource and the spec fields the primary
    copies from the target (besides selector and template)."""

    name: str
    plural: str
    resource: Resource
    copied: tuple[str, ...]


TARGET_KINDS: dict[str, TargetKind] = {
    "Deployment": TargetKind(
        "Deployment", "deployments", DEPLOYMENTS, ("minReadySeconds", "revisionHistoryLimit", "strategy")
    ),
    "DaemonSet": TargetKind("DaemonSet", "daemonsets", DAEMONSETS, daemonset.COPIED_FIELDS),
    "Service": TargetKind("Service", "services", SERVICES, ()),
}
KNATIVE_GROUP = "serving.knative.dev"


def target_kind(canary: Canary) -> TargetKind:
    """The kind of the Canary's target; LookupError naming the field when it cannot be run."""
    ref = canary.spec.target_ref
    kind = TARGET_KINDS.get(ref.kind)
    if kind is None:
        raise LookupError(f"targetRef.kind {ref.kind} is not supported ({' or '.join(TARGET_KINDS)})")
    if kind.name == "DaemonSet" and canary.spec.autoscaler_ref is not None:
        raise LookupError("autoscalerRef: a DaemonSet target has no replica count to autoscale")
    if kind.name == "Service":
        if ref.api_version.startswith(f"{KNATIVE_GROUP}/"):
            raise LookupError(
                f"targetRef.apiVersion {ref.api_version}: Knative Services are not supported "
                "(a core v1 Service is)"
            )
        if canary.spec.autoscaler_ref is not None:
            raise LookupError("autoscalerRef: a Service target runs no workload to autoscale")
    return kind


ConfigKey = tuple[str, str]  # ("configmap" | "secret", name)


class ObjectReader(Protocol):
    """Reads one object as a dict; None when it does not exist. `kind` is the plural resource:
    deployments, configmaps or secrets. `wrote` tells the reader of an object the caller just wrote,
    so a later read never returns an older generation of it (read-your-writes over a cache)."""

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def wrote(self, kind: str, namespace: str, written: dict[str, Any]) -> None: ...


class ApiReader:
    """An ObjectReader doing one GET per read."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        res = RESOURCES[kind]
        return await retry(lambda: self.kube.get(res, namespace, name), what=f"GET {kind} {namespace}/{name}")

    def wrote(self, kind: str, namespace: str, written: dict[str, Any]) -> None:
        """Every read is a GET: nothing to remember."""


# -- pure derivations (unit-tested) ------------------------------------------------------------------


def selector_label(deployment: dict[str, Any]) -> tuple[str, str]:
    """The label (and value) selecting the target's pods: the first of app, name,
    app.kubernetes.io/name in `spec.selector.matchLabels`. ValueError when none is there."""
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for label in SELECTOR_LABELS:
        if label in match:
            return label, str(match[label])
    name = (deployment.get("metadata") or {}).get("name", "?")
    raise ValueError(
        f"deployment {name}: spec.selector.matchLabels must contain one of {', '.join(SELECTOR_LABELS)}"
    )


def _walk_refs(pod_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(kind, dict holding the name, key of the name) of every ConfigMap/Secret reference."""
    for vol in pod_spec.get("volumes") or []:
        if isinstance(vol.get("configMap"), dict):
            yield "configmap", vol["configMap"], "name"
        if isinstance(vol.get("secret"), dict):
            yield "secret", vol["secret"], "secretName"
        for src in (vol.get("projected") or {}).get("sources") or []:
            if isinstance(src.get("configMap"), dict):
                yield "configmap", src["configMap"], "name"
            if isinstance(src.get("secret"), dict):
                yield "secret", src["secret"], "name"
    for group in ("initContainers", "containers"):
        for c in pod_spec.get(group) or []:
            for env_from in c.get("envFrom") or []:
                if isinstance(env_from.get("configMapRef"), dict):
                    yield "configmap", env_from["configMapRef"], "name"
                if isinstance(env_from.get("secretRef"), dict):
                    yield "secret", env_from["secretRef"], "name"
            for env in c.get("env") or []:
                value_from = env.get("valueFrom") or {}
                if isinstance(value_from.get("configMapKeyRef"), dict):
                    yield "configmap", value_from["configMapKeyRef"], "name"
                if isinstance(value_from.get("secretKeyRef"), dict):
                    yield "secret", value_from["secretKeyRef"], "name"


def config_refs(pod_spec: dict[str, Any]) -> set[ConfigKey]:
    """The ConfigMaps and Secrets a pod spec references."""
    return {(kind, holder[key]) for kind, holder, key in _walk_refs(pod_spec) if holder.get(key)}


def rewrite_config_refs(pod_spec: dict[str, Any], tracked: set[ConfigKey]) -> dict[str, Any]:
    """A copy of `pod_spec` whose references to tracked configs name their `-primary` copies."""
    out = copy.deepcopy(pod_spec)
    for kind, holder, key in _walk_refs(out):
        if (kind, holder.get(key)) in tracked:
            holder[key] = primary_name(holder[key])
    return out


def is_tracked(config: dict[str, Any]) -> bool:
    """Not opted out of tracking by annotation."""
    annotations = (config.get("metadata") or {}).get("annotations") or {}
    return all(annotations.get(a) != "disabled" for a in CONFIG_TRACKING)


def config_checksum(config: dict[str, Any]) -> str:
    """Hash of a ConfigMap's / Secret's data."""
    return spec_hash({k: config.get(k) for k in ("data", "binaryData", "stringData") if config.get(k)})


def revision_of(template: dict[str, Any], configs: dict[str, str]) -> str:
    """A revision: the pod template's hash, combined with tracked configs' checksums when any (a
    template alone hashes as Flagger's lastAppliedSpec would, minus go-spew's exact dump)."""
    if not configs:
        return spec_hash(template)
    return spec_hash({"template": template, "configs": dict(sorted(configs.items()))})


def primary_pod_template(
    target: dict[str, Any], label: str, primary_value: str, tracked: set[ConfigKey]
) -> dict[str, Any]:
    """The target's pod template for the primary: selector label rewritten, config refs rewritten,
    a DaemonSet's scale-to-zero nodeSelector left out."""
    template = daemonset.without_scale_to_zero((target.get("spec") or {}).get("template") or {})
    template = copy.deepcopy(template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), label: primary_value}
    template["spec"] = rewrite_config_refs(template.get("spec") or {}, tracked)
    return template


def primary_deployment(
    target: dict[str, Any], owner: CanaryRef, tracked: set[ConfigKey], progress_deadline_s: int
) -> dict[str, Any]:
    """`<target>-primary` derived from the target Deployment."""
    return primary_workload(TARGET_KINDS["Deployment"], target, owner, tracked, progress_deadline_s)


def primary_workload(
    kind: TargetKind,
    target: dict[str, Any],
    owner: CanaryRef,
    tracked: set[ConfigKey],
    progress_deadline_s: int,
) -> dict[str, Any]:
    """`<target>-primary` derived from the target (a Deployment gets its replicas, at least 1,
    and the Canary's progress deadline; a DaemonSet runs where the target would)."""
    meta = target.get("metadata") or {}
    spec = target.get("spec") or {}
    label, _ = selector_label(target)
    name = primary_name(meta["name"])
    labels = {**(meta.get("labels") or {}), label: name}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _DROP_ANNOTATIONS}
    out_spec: dict[str, Any] = {
        "selector": {"matchLabels": {label: name}},
        "template": primary_pod_template(target, label, name, tracked),
    }
    if kind.name == "Deployment":
        out_spec["replicas"] = spec.get("replicas") or 1
        out_spec["progressDeadlineSeconds"] = progress_deadline_s
    for key in kind.copied:
        if key in spec:
            out_spec[key] = copy.deepcopy(spec[key])
    return {
        "apiVersion": "apps/v1",
        "kind": kind.name,
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner.owner_reference()],
        },
        "spec": out_spec,
    }


def primary_config(config: dict[str, Any], owner: CanaryRef) -> dict[str, Any]:
    """`<name>-primary` copy of a ConfigMap or Secret."""
    meta = config.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": config.get("kind") or ("Secret" if "type" in config else "ConfigMap"),
        "metadata": {
            "name": primary_name(meta["name"]),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": [owner.owner_reference()],
        },
    }
    for key in ("data", "binaryData", "type", "immutable"):
        if key in config:
            out[key] = copy.deepcopy(config[key])
    return out


def _condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def deployment_readiness(
    deployment: dict[str, Any], deadline_s: int, ready_threshold: int, now: float
) -> Readiness:
    """Flagger's isDeploymentReady: once the controller has observed the current generation,
    ProgressDeadlineExceeded fails for good; otherwise wait while replicas are not updated, old
    replicas terminate, or fewer than `ready_threshold`% of the updated replicas are available.
    Available=False (MinimumReplicasUnavailable) for longer than `deadline_s` also fails."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return Readiness(
            False,
            True,
            "waiting for rollout to finish: observed deployment generation less than desired generation",
        )
    retriable = True
    progress = _condition(status, "Progressing")
    available = _condition(status, "Available")
    if (
        progress is not None
        and available is not None
        and available.get("status") == "False"
        and available.get("reason") == "MinimumReplicasUnavailable"
    ):
        since = parse_time(available.get("lastUpdateTime"))
        retriable = since is None or since + deadline_s >= now
    if progress is not None and progress.get("reason") == "ProgressDeadlineExceeded":
        return Readiness(False, False, f"deployment {name!r} exceeded its progress deadline")
    replicas = spec.get("replicas", 1)
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    ready = int(status.get("availableReplicas") or 0)
    if replicas is not None and updated < replicas:
        return Readiness(
            False,
            retriable,
            f"waiting for rollout to finish: {updated} out of {replicas} new replicas have been updated",
        )
    if total > updated:
        return Readiness(
            False,
            retriable,
            f"waiting for rollout to finish: {total - updated} old replicas are pending termination",
        )
    needed = int(updated * ready_threshold / 100)
    if ready < needed:
        return Readiness(
            False,
            retriable,
            f"waiting for rollout to finish: {ready} of {updated} "
            f"(readyThreshold {ready_threshold}%) updated replicas are available",
        )
    return Readiness(True)


# -- the Workloads implementation ---------------------------------------------------------------------


class KubeWorkloads:
    """Implements `Workloads` for Deployment and DaemonSet targets. `owner(canary)` gives the
    CanaryRef (uid) generated objects are owned by."""

    def __init__(
        self,
        kube: Kube,
        owner: Callable[[Canary], CanaryRef],
        reader: ObjectReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.owner = owner
        self.reader: ObjectReader = reader or ApiReader(kube)
        self.clock = clock
        self.scalers = Scalers(kube, owner)
        self._daemonset_waits = daemonset.NotReadyClock()

    # -- reads

    async def _target(self, canary: Canary) -> dict[str, Any]:
        ref = canary.spec.target_ref
        kind = target_kind(canary)
        obj = await self.reader.get(kind.plural, canary.namespace, ref.name)
        if obj is None:
            raise LookupError(f"{kind.name} {ref.name}.{canary.namespace} not found")
        if kind.name == "DaemonSet" and (why := daemonset.update_strategy_error(obj)):
            raise LookupError(why)
        return obj

    async def tracked_configs(
        self, canary: Canary, target: dict[str, Any]
    ) -> dict[ConfigKey, dict[str, Any]]:
        """The tracked configs the target's pod template references (missing ones left out)."""
        pod_spec = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
        out: dict[ConfigKey, dict[str, Any]] = {}
        for kind, name in sorted(config_refs(pod_spec)):
            obj = await self.reader.get(f"{kind}s", canary.namespace, name)
            if obj is not None and is_tracked(obj):
                obj.setdefault("kind", "ConfigMap" if kind == "configmap" else "Secret")
                out[(kind, name)] = obj
        return out

    async def revision(self, canary: Canary) -> str:
        target = await self._target(canary)
        if target_kind(canary).name == "Service":
            return service.service_revision(target)
        checksums = await self._checksums(canary, target)
        # A DaemonSet's scale-to-zero nodeSelector is not a release.
        template = daemonset.without_scale_to_zero((target.get("spec") or {}).get("template") or {})
        return revision_of(template, checksums)

    async def config_checksums(self, canary: Canary) -> dict[str, str]:
        return await self._checksums(canary, await self._target(canary))

    async def _checksums(self, canary: Canary, target: dict[str, Any]) -> dict[str, str]:
        configs = await self.tracked_configs(canary, target)
        return {f"{k}/{n}": config_checksum(obj) for (k, n), obj in configs.items()}

    async def primary_ready(self, canary: Canary) -> Readiness:
        kind = target_kind(canary)
        name = primary_name(canary.spec.target_ref.name)
        dep = await self.reader.get(kind.plural, canary.namespace, name)
        if dep is None:
            return Readiness(False, True, f"{name} not created yet")
        if kind.name == "Service":
            return Readiness(True)  # the workloads behind it are someone else's (Flagger: always ready)
        if kind.name == "DaemonSet":
            return self._daemonset_ready(canary, dep)
        a = canary.spec.analysis
        threshold = a.primary_ready_threshold if a else 100
        return deployment_readiness(dep, canary.spec.progress_deadline_seconds, threshold, self.clock())

    async def canary_ready(self, canary: Canary) -> Readiness:
        target = await self._target(canary)
        if target_kind(canary).name == "Service":
            # Asked on every step of a run: the `-canary` copy follows the target, as Flagger's
            # Initialize does on every reconcile.
            await self._sync_canary_service(canary, target)
            return Readiness(True)
        if target_kind(canary).name == "DaemonSet":
            if daemonset.is_scaled_to_zero(target):
                return Readiness(True)  # no pods wanted, nothing to wait for
            return self._daemonset_ready(canary, target)
        if (target.get("spec") or {}).get("replicas") == 0:
            return Readiness(True)  # nothing scaled up, nothing to wait for
        a = canary.spec.analysis
        threshold = a.canary_ready_threshold if a else 100
        return deployment_readiness(target, canary.spec.progress_deadline_seconds, threshold, self.clock())

    def _daemonset_ready(self, canary: Canary, obj: dict[str, Any]) -> Readiness:
        waited = self._daemonset_waits.waited(obj, self.clock())
        ready = daemonset.daemonset_readiness(obj, waited, canary.spec.progress_deadline_seconds)
        if ready.ready:
            self._daemonset_waits.ready(obj)
        return ready

    # -- writes

    async def initialize(self, canary: Canary) -> None:
        ns = canary.namespace
        target = await self._target(canary)
        kind = target_kind(canary)
        name = primary_name(canary.spec.target_ref.name)
        if kind.name == "Service":
            await self._sync_canary_service(canary, target)
            if await self.reader.get("services", ns, name) is None:
                distribution = canary.spec.service.traffic_distribution
                body = service.service_copy(target, name, self.owner(canary), None, distribution)
                await self._create_service(canary, body)
            return
        if await self.reader.get(kind.plural, ns, name) is not None:
            await self.scalers.sync_primary(canary, create_only=True)
            return
        configs = await self.tracked_configs(canary, target)
        owner = self.owner(canary)
        await self._sync_configs(ns, configs, owner)
        body = primary_workload(kind, target, owner, set(configs), canary.spec.progress_deadline_seconds)
        try:
            created = await retry(
                lambda: self.kube.create(kind.resource, ns, body), what=f"create {ns}/{name}"
            )
            self.reader.wrote(kind.plural, ns, created)
        except Exception as exc:
            if status_of(exc) != 409:  # already there (a stale cache): fine
                raise
        await self.scalers.sync_primary(canary, create_only=True)

    async def scale_canary(self, canary: Canary, replicas: int | None) -> None:
        ns = canary.namespace
        if target_kind(canary).name == "Service":
            if replicas != 0:  # a run starts: the canary copy carries the new spec first
                await self._sync_canary_service(canary, await self._target(canary))
            return
        if target_kind(canary).name == "DaemonSet":
            await self._scale_daemonset(ns, canary.spec.target_ref.name, to_zero=replicas == 0)
            return
        # A KEDA ScaledObject would scale an idle canary back up: paused at 0, resumed otherwise.
        if replicas == 0:
            await self.scalers.pause_target(canary)
        else:
            await self.scalers.resume_target(canary)
        if replicas is None:
            primary = await self.reader.get("deployments", ns, primary_name(canary.spec.target_ref.name))
            replicas = int(((primary or {}).get("spec") or {}).get("replicas") or 1)
        await self._scale(ns, canary.spec.target_ref.name, replicas)

    async def _scale(self, namespace: str, name: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        patched = await retry(lambda: self.kube.patch(DEPLOYMENTS, namespace, name, body),
                              what=f"scale {namespace}/{name} to {replicas}")  # fmt: skip
        # A readiness check right after must not judge the cached pre-scale object (replicas 0
        # reads as "nothing to wait for" and would promote a revision that never came up).
        self.reader.wrote("deployments", namespace, patched)

    async def _scale_daemonset(self, namespace: str, name: str, *, to_zero: bool) -> None:
        body = daemonset.scale_patch(to_zero)
        patched = await retry(lambda: self.kube.patch(DAEMONSETS, namespace, name, body),
                              what=f"scale {namespace}/{name} {'to zero' if to_zero else 'up'}")  # fmt: skip
        self.reader.wrote("daemonsets", namespace, patched)  # as in `_scale`

    async def promote(self, canary: Canary) -> None:
        ns = canary.namespace
        target = await self._target(canary)
        kind = target_kind(canary)
        if kind.name == "Service":
            await self._replace_service(canary, target, primary_name(canary.spec.target_ref.name))
            return
        configs = await self.tracked_configs(canary, target)
        await self._sync_configs(ns, configs, self.owner(canary))
        label, _ = selector_label(target)
        name = primary_name(canary.spec.target_ref.name)
        template = primary_pod_template(target, label, name, set(configs))
        spec = target.get("spec") or {}

        async def copy_template() -> Any:
            # Read-modify-write with the resourceVersion read: a conflict reads again.
            primary = await self.kube.get(kind.resource, ns, name)
            if primary is None:
                raise LookupError(f"{name}.{ns} not found")
            pspec = primary["spec"]
            pspec["template"] = template
            if kind.name == "Deployment":
                pspec["progressDeadlineSeconds"] = canary.spec.progress_deadline_seconds
            for key in kind.copied:
                if key in spec:
                    pspec[key] = copy.deepcopy(spec[key])
            primary.pop("status", None)
            return await self.kube.replace(kind.resource, ns, name, primary)

        replaced = await retry(copy_template, what=f"promote {ns}/{name}",
                               retry_on=lambda e: status_of(e) == 409 or is_transient(e))  # fmt: skip
        self.reader.wrote(kind.plural, ns, replaced)
        await self.scalers.sync_primary(canary, create_only=False)

    async def revert(self, canary: Canary) -> None:
        ns = canary.namespace
        if target_kind(canary).name == "Service":
            return  # nothing was scaled or changed on the target
        if target_kind(canary).name == "DaemonSet":
            await self._scale_daemonset(ns, canary.spec.target_ref.name, to_zero=False)
            return
        await self.scalers.resume_target(canary)
        primary = await self.reader.get("deployments", ns, primary_name(canary.spec.target_ref.name))
        replicas = int(((primary or {}).get("spec") or {}).get("replicas") or 1)
        await self._scale(ns, canary.spec.target_ref.name, replicas)

    # -- Service targets

    async def _sync_canary_service(self, canary: Canary, target: dict[str, Any]) -> None:
        """`<target>-canary` created, or replaced when it no longer carries the target's spec."""
        name = service.canary_service_name(canary.spec.target_ref.name)
        distribution = canary.spec.service.traffic_distribution
        current = await self.reader.get("services", canary.namespace, name)
        if current is None:
            body = service.service_copy(target, name, self.owner(canary), None, distribution)
            await self._create_service(canary, body)
        elif not service.same_copy(current, target, distribution):
            await self._replace_service(canary, target, name)

    async def _create_service(self, canary: Canary, body: dict[str, Any]) -> None:
        ns, name = canary.namespace, body["metadata"]["name"]
        try:
            created = await retry(
                lambda: self.kube.create(SERVICES, ns, body), what=f"create service {ns}/{name}"
            )
            self.reader.wrote("services", ns, created)
        except Exception as exc:
            if status_of(exc) != 409:  # already there (a stale cache): fine
                raise

    async def _replace_service(self, canary: Canary, target: dict[str, Any], name: str) -> None:
        """Service `name` given the target's spec, labels and annotations (its own cluster IPs and
        node ports kept); a conflict reads again."""
        ns = canary.namespace
        distribution = canary.spec.service.traffic_distribution

        async def replace() -> Any:
            current = await self.kube.get(SERVICES, ns, name)
            if current is None:
                raise LookupError(f"Service {name}.{ns} not found")
            body = service.service_copy(target, name, self.owner(canary), current, distribution)
            return await self.kube.replace(SERVICES, ns, name, body)

        replaced = await retry(replace, what=f"replace service {ns}/{name}",
                               retry_on=lambda e: status_of(e) == 409 or is_transient(e))  # fmt: skip
        self.reader.wrote("services", ns, replaced)

    async def _sync_configs(
        self, namespace: str, configs: dict[ConfigKey, dict[str, Any]], owner: CanaryRef
    ) -> None:
        for (kind, name), obj in configs.items():
            await retry(lambda k=kind, o=obj: self._upsert_config(namespace, k, o, owner),  # type: ignore[misc]
                        what=f"copy {kind} {namespace}/{name}")  # fmt: skip

    async def _upsert_config(self, namespace: str, kind: str, obj: dict[str, Any], owner: CanaryRef) -> None:
        """Create `<name>-primary`, or bring its data in line (merge patch, removed keys null)."""
        res = RESOURCES[f"{kind}s"]
        body = primary_config(obj, owner)
        pname = body["metadata"]["name"]
        current = await self.kube.get(res, namespace, pname)
        if current is None:
            await self.kube.create(res, namespace, body)
            return
        sections = ("data", "binaryData")
        delta = merge_diff(
            {k: current.get(k) or {} for k in sections}, {k: body.get(k) or {} for k in sections}
        )
        if delta:
            await self.kube.patch(res, namespace, pname, delta)
