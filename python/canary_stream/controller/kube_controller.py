"""The in-cluster controller: one asyncio process watching Canaries, Deployments, the ConfigMaps /
Secrets they reference and Pods, and running one `Rollout` per Canary.

- Canaries (group canary-stream.dev; optionally flagger.app too): a valid one gets a Rollout,
  registered in the Registry, restored from the CR's status (so a restart resumes where it was);
  a spec change (new generation) reaches it with `update_spec`; an invalid one gets a condition and
  a Warning event naming the field, and nothing else stops.
- Deployments / ConfigMaps / Secrets: a change to a target (or to a config its pod template
  references) reaches the Rollout at once (`on_revision`), not on the next tick; readiness changes
  of the target and primary wake it too.
- Pods: their IPs are told to the aggregator as primary or canary (`Aggregator.set_host`).
- Manual control: annotations on the Canary (controller/manual.py), consumed and removed.
- revertOnDeletion: a finalizer; deletion runs the Rollout's Terminating path, then lets go.
- Leader election (kube/lease.py): only the leader runs Rollouts and writes; a standby keeps its
  caches warm and takes over from the Canaries' status and the routers' weights.
Reads of workloads come from the watch caches, so a rollout step costs only its writes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from canary_stream.analysis.verdict import Verdict
from canary_stream.clock import Clock, WallClock
from canary_stream.controller.alerts import POST_TIMEOUT_S, AlertSender, ProviderTarget
from canary_stream.controller.events import Event, EventType
from canary_stream.controller.manual import ANNOTATIONS, annotations_for, parse_manual
from canary_stream.controller.phases import ANALYSING
from canary_stream.controller.scheduler import Analyzer, Command, Rollout, RolloutOptions
from canary_stream.controller.status import CanaryStatus
from canary_stream.kube.events import KubeEventSink
from canary_stream.kube.lease import LeaderElector, LeaseConfig
from canary_stream.kube.objects import FLAGGER_GROUP, OWN_GROUP, VERSION, CanaryRef
from canary_stream.kube.rest import (
    CONFIGMAPS,
    DAEMONSETS,
    DEPLOYMENTS,
    PODS,
    SECRETS,
    SERVICES,
    Kube,
    Resource,
)
from canary_stream.kube.retry import retry, status_of
from canary_stream.kube.status import StatusWriter
from canary_stream.kube.watch import Informer, WatchEvent, key_of
from canary_stream.registry import Notice, Registry
from canary_stream.router.base import Router, Routes
from canary_stream.spec.errors import FieldError, SpecError
from canary_stream.spec.load import parse_canary, parse_template
from canary_stream.spec.model import Canary, StreamMetric
from canary_stream.workload.base import primary_name
from canary_stream.workload.kubernetes import (
    RESOURCES,
    TARGET_KINDS,
    KubeWorkloads,
    config_refs,
    selector_label,
)

log = logging.getLogger(__name__)

FINALIZER = "finalizer.canary-stream.dev"
SPEC_VALID = "SpecValid"

Key = tuple[str, str]
RouterFactory = Callable[[Canary, Kube], Router]
AnalyzerFactory = Callable[[Canary], Analyzer | None]


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of the controller process (flags and environment in `controller_cmd`)."""

    namespaces: tuple[str, ...] = ()  # empty: every namespace
    groups: tuple[str, ...] = (OWN_GROUP,)  # add FLAGGER_GROUP to reconcile flagger.app Canaries too
    lease: LeaseConfig | None = None  # None: no election, this replica always leads
    options: RolloutOptions = field(default_factory=lambda: RolloutOptions(min_interval_s=1.0))
    verdict_period_s: float = 1.0  # how often running analyses hand their verdict to the Rollout
    restart_backoff_s: float = 2.0  # a Rollout that failed (an API error) is rebuilt after this
    mesh_provider: str | None = None  # default provider for Canaries without spec.provider
    global_notifier: ProviderTarget | None = None  # alerts of Canaries without analysis.alerts
    cluster_name: str = ""  # a "Cluster" field in every alert

    def watched_namespaces(self) -> list[str | None]:
        return list(self.namespaces) or [None]


class StepTracker:
    """Wraps an Analyzer: remembers whether a step is running (verdicts are pushed only then)."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.started: float | None = None
        self.last: Verdict | None = None

    def start_step(self, at: float, routes: Routes) -> None:
        self.started = at
        self.inner.start_step(at, routes)

    def verdict(self, now: float) -> Verdict:
        self.last = self.inner.verdict(now)
        return self.last


class _Events:
    """A Rollout's EventSink: the Kubernetes events sink and the registry's notice stream."""

    def __init__(self, sink: KubeEventSink, registry: Registry) -> None:
        self.sink = sink
        self.registry = registry

    def record(self, event: Event) -> None:
        self.sink.record(event)
        self.registry.publish_event(event)


@dataclass
class Managed:
    """One Canary this replica runs."""

    ref: CanaryRef
    canary: Canary
    generation: int
    rollout: Rollout
    writer: StatusWriter
    tracker: StepTracker | None
    task: asyncio.Task[None] | None = None
    deleting: bool = False


class CacheReader:
    """ObjectReader over the watch caches; falls back to a GET when an object is not cached yet
    (just created, or the cache is still listing), or when the cache still holds a generation older
    than one this process wrote (the watch event of our own write has not arrived yet)."""

    def __init__(self, kube: Kube, informers: dict[str, list[Informer]]) -> None:
        self.kube = kube
        self.informers = informers
        self.fallbacks = 0
        self.stale_reads = 0
        # (kind, namespace, name) -> the generation of our last write the cache has not shown yet
        self._floors: dict[tuple[str, str, str], int] = {}

    def wrote(self, kind: str, namespace: str, written: dict[str, Any]) -> None:
        meta = written.get("metadata") or {}
        name, generation = meta.get("name"), meta.get("generation")
        if isinstance(name, str) and isinstance(generation, int):
            key = (kind, namespace, name)
            self._floors[key] = max(generation, self._floors.get(key, 0))

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        key = (kind, namespace, name)
        floor = self._floors.get(key)
        for inf in self.informers.get(kind, []):
            if inf.namespace in (None, namespace):
                obj = inf.get(namespace, name)
                if obj is None:
                    continue
                if floor is None:
                    return obj
                if int((obj.get("metadata") or {}).get("generation") or 0) >= floor:
                    del self._floors[key]  # the cache has caught up with our write
                    return obj
                self.stale_reads += 1
                break
        self.fallbacks += 1
        res = RESOURCES[kind]
        return await retry(lambda: self.kube.get(res, namespace, name), what=f"GET {kind} {namespace}/{name}")


def _plural(target_kind: str) -> str:
    """The watched resource of a `targetRef.kind` (Deployments for kinds no informer follows)."""
    kind = TARGET_KINDS.get(target_kind)
    return kind.plural if kind else "deployments"


def default_router_factory(mesh_provider: str | None = None) -> RouterFactory:
    """`router.factory.router_for` (Services + the mesh object of `spec.provider`, else
    `mesh_provider`) when present, else one in-memory router for the process."""
    try:
        from canary_stream.router.factory import router_for
    except ImportError:
        from canary_stream.router.memory import InMemoryRouter

        log.warning("router.factory not available: routing is kept in memory (no mesh objects)")
        shared = InMemoryRouter()
        return lambda canary, kube: shared

    def make(canary: Canary, kube: Kube) -> Router:
        if mesh_provider:
            return router_for(canary, kube.api, mesh_provider=mesh_provider)
        return router_for(canary, kube.api)

    return make


class KubeController:
    """Runs every Canary of the watched namespaces. `run(stop)` until `stop` is set."""

    def __init__(
        self,
        kube: Kube,
        registry: Registry,
        config: ControllerConfig | None = None,
        *,
        router_factory: RouterFactory | None = None,
        analyzer_factory: AnalyzerFactory | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.kube = kube
        self.registry = registry
        self.config = config or ControllerConfig()
        self.router_factory = router_factory or default_router_factory(self.config.mesh_provider)
        self.analyzer_factory = analyzer_factory or self._default_analyzer
        self.clock: Clock = clock or WallClock()
        self.managed: dict[Key, Managed] = {}
        self.refs: dict[Key, CanaryRef] = {}
        self.invalid: dict[Key, int] = {}  # generation reported invalid
        self.warned: dict[Key, int] = {}  # generation whose spec warnings were reported
        self.pod_hosts: dict[Key, tuple[str, str]] = {}  # pod -> (ip, version)
        self.events = KubeEventSink(kube, lambda ns, n: self.refs.get((ns, n)))
        self.elector: LeaderElector | None = None
        if self.config.lease is not None:
            self.elector = LeaderElector(
                kube, self.config.lease, on_started=self._on_lead, on_stopped=self._on_unlead
            )
        self.informers: dict[str, list[Informer]] = {}
        for ns in self.config.watched_namespaces():
            for kind, res in (
                ("deployments", DEPLOYMENTS),
                ("daemonsets", DAEMONSETS),
                ("services", SERVICES),
                ("configmaps", CONFIGMAPS),
                ("secrets", SECRETS),
                ("pods", PODS),
            ):
                self.informers.setdefault(kind, []).append(Informer(kube, res, ns))
            for group in self.config.groups:
                self.informers.setdefault("canaries", []).append(
                    Informer(kube, Resource(group, VERSION, "canaries"), ns)
                )
            self.informers.setdefault("metrictemplates", []).append(
                Informer(kube, Resource(OWN_GROUP, VERSION, "metrictemplates"), ns)
            )
        self.reader = CacheReader(kube, self.informers)
        self.workloads = KubeWorkloads(kube, self._owner, self.reader, clock=self.clock.now)
        self.alerts = AlertSender(
            self._alert_provider, fallback=self.config.global_notifier, cluster_name=self.config.cluster_name
        )
        self._queue: asyncio.Queue[tuple[str, WatchEvent] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._leading = asyncio.Event()
        self._resync_needed = False
        self._killed = False
        self._target_index: dict[Key, list[Managed]] = {}
        self._target_index_stale = True
        registry.commander = self.command
        registry.is_leader = self.is_leader

    # -- leadership

    def is_leader(self) -> bool:
        """This replica leads (always, without election)."""
        return self._leading.is_set()

    def _on_lead(self) -> None:
        self._leading.set()
        self._resync_needed = True
        self._queue.put_nowait(None)  # wake the dispatcher: start every known Canary

    def _on_unlead(self) -> None:
        self._leading.clear()
        for key in list(self.managed):
            self._drop(key)

    # -- the process

    async def run(self, stop: asyncio.Event) -> None:
        """Watch, elect, run Rollouts until `stop` is set; then stop the Rollouts, flush status
        and events, and release the Lease."""
        loop = asyncio.get_running_loop()
        spawn = loop.create_task
        self._tasks.append(spawn(self.events.run(), name="events"))
        for kind in (
            "deployments",
            "daemonsets",
            "services",
            "configmaps",
            "secrets",
            "pods",
            "metrictemplates",
        ):
            for inf in self.informers[kind]:
                self._tasks.append(spawn(self._pump(kind, inf), name=f"watch:{inf.name}"))
        # Canaries only once the workload caches are listed: first reconciles read them.
        await asyncio.wait(
            [
                spawn(inf.synced.wait())
                for kind, infs in self.informers.items()
                if kind != "canaries"
                for inf in infs
            ]
            or [spawn(asyncio.sleep(0))],
            timeout=30,
        )
        for inf in self.informers["canaries"]:
            self._tasks.append(spawn(self._pump("canaries", inf), name=f"watch:{inf.name}"))
        if self.elector is not None:
            self._tasks.append(spawn(self.elector.run(), name="lease"))
        else:
            self._on_lead()
        self._tasks.append(spawn(self._verdicts(), name="verdicts"))
        dispatcher = spawn(self._dispatch(), name="dispatch")
        self._tasks.append(dispatcher)
        try:
            await stop.wait()
        finally:
            if not self._killed:
                await self.shutdown()

    async def kill(self) -> None:
        """Stop at once, writing nothing more and keeping the Lease (what a killed process leaves
        behind; used by tests of restarts and takeovers)."""
        self._killed = True
        self._leading.clear()
        for inf in (i for infs in self.informers.values() for i in infs):
            inf.stop()
        tasks = [*self._tasks, *(m.task for m in self.managed.values() if m.task is not None)]
        for m in self.managed.values():
            m.writer.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for key in list(self.managed):
            self.registry.remove(*key)
        self.managed.clear()

    async def shutdown(self) -> None:
        """Stop Rollouts (their queued work done), write what is pending, let go of the Lease."""
        for inf in (i for infs in self.informers.values() for i in infs):
            inf.stop()
        running = [m for m in self.managed.values()]
        for m in running:
            m.rollout.stop()
        tasks = [m.task for m in running if m.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for m in running:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(m.writer.flush(), 5)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.events.flush(), 5)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.alerts.close(), POST_TIMEOUT_S + 1)
        if self.elector is not None:
            await self.elector.release()
        self._leading.clear()
        for m in running:
            m.writer.close()
            if m.task is not None and not m.task.done():
                m.task.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *(m.task for m in running if m.task), return_exceptions=True)
        for key in list(self.managed):
            self.registry.remove(*key)
        self.managed.clear()

    async def _pump(self, kind: str, informer: Informer) -> None:
        async for ev in informer.events():
            self._queue.put_nowait((kind, ev))

    async def _dispatch(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if self._resync_needed and self.is_leader():
                    self._resync_needed = False
                    for inf in self.informers["canaries"]:
                        for obj in list(inf.cache.values()):
                            await self._on_canary(WatchEvent("MODIFIED", obj))
                if item is None:
                    continue
                kind, ev = item
                if kind == "canaries":
                    if self.is_leader():
                        await self._on_canary(ev)
                    else:
                        self.refs[key_of(ev.object)] = CanaryRef.of(ev.object)
                elif kind in ("deployments", "daemonsets"):
                    self._on_workload(ev)
                elif kind == "services":
                    self._on_service(ev)
                elif kind in ("configmaps", "secrets"):
                    self._on_config(kind, ev)
                elif kind == "pods":
                    self._on_pod(ev)
                elif kind == "metrictemplates":
                    self._on_template(ev)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling %s failed", item)

    # -- Canaries

    def _owner(self, canary: Canary) -> CanaryRef:
        return self.refs.get((canary.namespace, canary.name)) or CanaryRef(
            OWN_GROUP, canary.namespace, canary.name
        )

    async def _on_canary(self, ev: WatchEvent) -> None:
        obj = ev.object
        key = key_of(obj)
        ref = CanaryRef.of(obj)
        if ref.group not in self.config.groups:
            return
        if ev.type == "DELETED":
            self._drop(key)
            self.refs.pop(key, None)
            self.invalid.pop(key, None)
            self.warned.pop(key, None)
            return
        self.refs[key] = ref
        meta = obj.get("metadata") or {}
        finalizers: list[str] = list(meta.get("finalizers") or [])
        m = self.managed.get(key)
        if m is not None and _only_status_changed(m, obj):
            return  # our own status writes come back as MODIFIED: nothing to do
        try:
            canary, warnings = parse_canary(_spec_doc(obj))
        except SpecError as err:
            if meta.get("deletionTimestamp") and FINALIZER in finalizers:
                await self._set_finalizer(ref, finalizers, present=False)
                return
            await self._report_invalid(ref, obj, err)
            return
        if key in self.invalid:
            del self.invalid[key]
            await self._clear_invalid(ref, obj)
        self._report_warnings(ref, obj, warnings)
        if meta.get("deletionTimestamp"):
            await self._on_deleting(ref, obj, canary, finalizers)
            return
        if canary.spec.revert_on_deletion != (FINALIZER in finalizers):
            await self._set_finalizer(ref, finalizers, present=canary.spec.revert_on_deletion)
        generation = int(meta.get("generation") or 0)
        if m is None:
            try:
                router = self.router_factory(canary, self.kube)
            except ValueError as exc:
                path, _, message = str(exc).partition(": ")
                await self._report_invalid(ref, obj, SpecError([FieldError(path, message or str(exc))]))
                return
            m = self._start(ref, obj, canary, router)
            self.attribute_pods(ref.namespace)
        elif generation != m.generation:
            self._target_index_stale = True
            m.generation = generation
            m.canary = canary
            m.ref = ref
            m.rollout.update_spec(canary)
        await self._manual(m, obj)

    def _start(
        self, ref: CanaryRef, obj: dict[str, Any], canary: Canary, router: Router | None = None
    ) -> Managed:
        key = (ref.namespace, ref.name)
        current = obj.get("status") or {}
        writer = StatusWriter(self.kube, ref, current=current, gate=self.is_leader)
        analyzer = self.analyzer_factory(canary)
        tracker = StepTracker(analyzer) if analyzer is not None else None
        status = CanaryStatus.from_dict(current) if current.get("phase") else None
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        rollout = self._rollout(canary, writer, tracker, status, router)
        m = Managed(ref, canary, generation, rollout, writer, tracker)
        self.managed[key] = m
        self._target_index_stale = True
        self.registry.add(ref.namespace, ref.name, m.rollout)
        m.task = asyncio.get_running_loop().create_task(self._supervise(m), name=f"rollout:{ref.name}")
        return m

    def _rollout(
        self,
        canary: Canary,
        writer: StatusWriter,
        tracker: StepTracker | None,
        status: CanaryStatus | None,
        router: Router | None = None,
    ) -> Rollout:
        registry = self.registry
        ns, name = canary.namespace, canary.name
        last: dict[str, Any] = {}

        made: list[Rollout] = []

        def on_status(s: CanaryStatus) -> None:
            doc = s.to_dict()
            generation = (made[0].canary.metadata.model_extra or {}).get("generation") if made else None
            if generation is not None:
                doc["observedGeneration"] = int(generation)
            writer.write(doc)
            now = self.clock.now()
            if s.phase != last.get("phase"):
                registry.publish(Notice("phase", ns, name, now, {"phase": s.phase.value if s.phase else ""}))
            if s.canary_weight != last.get("weight"):
                registry.publish(Notice("weight", ns, name, now, {"canaryWeight": s.canary_weight}))
            last.update(phase=s.phase, weight=s.canary_weight)

        rollout = Rollout(
            canary,
            router or self.router_factory(canary, self.kube),
            self.workloads,
            self.clock,
            analyzer=tracker,
            events=_Events(self.events, registry),
            alerts=self.alerts,
            status=status,
            options=self.config.options,
            on_status=on_status,
        )
        made.append(rollout)
        return rollout

    async def _supervise(self, m: Managed) -> None:
        """Run the Rollout; when it fails (an API error it could not get past), rebuild it from
        the status it had reached and go on."""
        while True:
            try:
                await m.rollout.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("rollout %s/%s failed", m.ref.namespace, m.ref.name)
                self.events.record(
                    Event(
                        self.clock.now(),
                        EventType.WARNING,
                        f"Rollout of {m.ref.name}.{m.ref.namespace} hit an error, resuming: {exc}",
                        m.ref.name,
                        m.ref.namespace,
                    )
                )
                await asyncio.sleep(self.config.restart_backoff_s)
                if self.managed.get((m.ref.namespace, m.ref.name)) is not m or not self.is_leader():
                    return
                m.rollout = self._rollout(m.canary, m.writer, m.tracker, m.rollout.status)
                self.registry.add(m.ref.namespace, m.ref.name, m.rollout)
                if m.deleting:
                    m.rollout.delete()

    def _drop(self, key: Key) -> None:
        m = self.managed.pop(key, None)
        if m is None:
            return
        self._target_index_stale = True
        m.rollout.stop()
        self.registry.remove(*key)

    async def _on_deleting(
        self, ref: CanaryRef, obj: dict[str, Any], canary: Canary, finalizers: list[str]
    ) -> None:
        """deletionTimestamp set: with our finalizer, revert (Terminating) then remove it."""
        if FINALIZER not in finalizers:
            self._drop((ref.namespace, ref.name))
            return
        key = (ref.namespace, ref.name)
        m = self.managed.get(key) or self._start(ref, obj, canary)
        if m.deleting:
            return
        m.deleting = True
        m.rollout.delete()

        async def let_go() -> None:
            if m.task is not None:
                await m.task
            await m.writer.flush()
            await self._set_finalizer(ref, finalizers, present=False)
            self._drop(key)

        self._tasks.append(asyncio.get_running_loop().create_task(let_go(), name=f"finalize:{ref.name}"))

    async def _set_finalizer(self, ref: CanaryRef, finalizers: list[str], *, present: bool) -> None:
        wanted = [f for f in finalizers if f != FINALIZER] + ([FINALIZER] if present else [])
        body = {"metadata": {"finalizers": wanted}}
        try:
            await retry(
                lambda: self.kube.patch(ref.resource, ref.namespace, ref.name, body),
                what=f"finalizer of {ref.namespace}/{ref.name}",
            )
        except Exception as exc:
            if status_of(exc) != 404:
                raise

    async def _alert_provider(self, namespace: str, name: str, group: str) -> ProviderTarget:
        """The AlertProvider `name` (of the Canary's API group) and its Secret, as Flagger reads
        them; LookupError saying what is missing."""
        res = Resource(group, VERSION, "alertproviders")
        obj = await retry(
            lambda: self.kube.get(res, namespace, name), what=f"GET alertprovider {namespace}/{name}"
        )
        if obj is None:
            raise LookupError(f"AlertProvider {name}.{namespace} not found")
        spec = obj.get("spec") or {}
        address, token = str(spec.get("address") or ""), ""
        secret_name = (spec.get("secretRef") or {}).get("name")
        if secret_name:
            secret = await self.reader.get("secrets", namespace, secret_name)
            if secret is None:
                raise LookupError(
                    f"Secret {secret_name}.{namespace} (AlertProvider {name} secretRef) not found"
                )
            data = secret.get("data") or {}
            if "address" not in data:
                raise LookupError(f"Secret {secret_name}.{namespace} has no address")
            address = base64.b64decode(data["address"]).decode().strip()
            token = base64.b64decode(data["token"]).decode().strip() if "token" in data else ""
        return ProviderTarget(
            type=str(spec.get("type") or ""),
            address=address,
            token=token,
            proxy=str(spec.get("proxy") or ""),
            username=str(spec.get("username") or "flagger"),
            channel=str(spec.get("channel") or "general"),
        )

    def _report_warnings(self, ref: CanaryRef, obj: dict[str, Any], warnings: list[FieldError]) -> None:
        """A Warning event per spec warning (a field accepted but not acted on as written, such as
        `analysis.alerts`), once per generation."""
        key = (ref.namespace, ref.name)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        if not warnings or self.warned.get(key) == generation:
            return
        self.warned[key] = generation
        for w in warnings:
            note = f"Canary spec warning: {w}"
            self.events.record(Event(self.clock.now(), EventType.WARNING, note, ref.name, ref.namespace))

    async def _report_invalid(self, ref: CanaryRef, obj: dict[str, Any], err: SpecError) -> None:
        key = (ref.namespace, ref.name)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        if self.invalid.get(key) == generation:
            return
        self.invalid[key] = generation
        fields = "; ".join(str(e) for e in err.errors)
        self.events.record(
            Event(
                self.clock.now(), EventType.WARNING, f"Invalid canary spec: {fields}", ref.name, ref.namespace
            )
        )
        conditions = [
            c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") != SPEC_VALID
        ]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions.append(
            {
                "type": SPEC_VALID,
                "status": "False",
                "reason": "InvalidSpec",
                "message": fields[:4000],
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        m = self.managed.get(key)
        if m is not None:
            m.writer.written = {**m.writer.written, "conditions": conditions}
        await self._patch_status(ref, {"conditions": conditions})

    async def _clear_invalid(self, ref: CanaryRef, obj: dict[str, Any]) -> None:
        conditions = (obj.get("status") or {}).get("conditions") or []
        kept = [c for c in conditions if c.get("type") != SPEC_VALID]
        if len(kept) != len(conditions):
            await self._patch_status(ref, {"conditions": kept})

    async def _patch_status(self, ref: CanaryRef, status: dict[str, Any]) -> None:
        try:
            await retry(
                lambda: self.kube.patch(
                    ref.resource, ref.namespace, ref.name, {"status": status}, sub="status"
                ),
                what=f"status of {ref.namespace}/{ref.name}",
            )
        except Exception as exc:
            if status_of(exc) != 404:
                raise

    # -- manual control

    async def _manual(self, m: Managed, obj: dict[str, Any]) -> None:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        if not any(a in annotations for a in ANNOTATIONS):
            return
        for cmd in parse_manual(annotations):
            if cmd.command is None:
                self.events.record(
                    Event(
                        self.clock.now(),
                        EventType.WARNING,
                        f"Ignored annotation {cmd.error}",
                        m.ref.name,
                        m.ref.namespace,
                    )
                )
            elif cmd.command is Command.SET_WEIGHT and cmd.weight is not None:
                m.rollout.set_weight(cmd.weight)
            else:
                getattr(m.rollout, cmd.command.value)()
        body = {"metadata": {"annotations": {a: None for a in ANNOTATIONS if a in annotations}}}
        await retry(
            lambda: self.kube.patch(m.ref.resource, m.ref.namespace, m.ref.name, body),
            what=f"annotations of {m.ref.namespace}/{m.ref.name}",
        )

    async def command(self, namespace: str, name: str, command: Command, weight: int | None) -> None:
        """The Registry's commander: write the annotation (the leader acts on it, once)."""
        ref = self.refs.get((namespace, name))
        if ref is None:
            raise KeyError(f"{namespace}/{name}")
        if command is Command.DELETE:
            raise ValueError(
                "delete the Canary object itself (kubectl delete canary); revertOnDeletion applies"
            )
        body = {"metadata": {"annotations": annotations_for(command, weight)}}
        await retry(
            lambda: self.kube.patch(ref.resource, namespace, name, body), what=f"annotate {namespace}/{name}"
        )

    # -- workloads, configs, pods

    def _canaries_in(self, namespace: str) -> list[Managed]:
        return [m for (ns, _), m in self.managed.items() if ns == namespace]

    def _on_workload(self, ev: WatchEvent) -> None:
        """A target or primary Deployment/DaemonSet changed."""
        ns, name = key_of(ev.object)
        target = name.removesuffix("-primary")
        for m in self._canaries_in(ns) if len(self.managed) < 64 else self._by_target(ns, target):
            if m.canary.spec.target_ref.name == target:
                m.rollout.on_revision()  # a new template, or readiness changed: evaluate now
                if ev.type == "ADDED":
                    self.attribute_pods(ns)

    def _on_service(self, ev: WatchEvent) -> None:
        """A Service changed: Canaries targeting it (or owning its `-primary` / `-canary` copy)
        evaluate now. Services of Deployment targets are the router's, not a release."""
        ns, name = key_of(ev.object)
        target = name.removesuffix("-primary").removesuffix("-canary")
        for m in self._by_target(ns, target):
            if m.canary.spec.target_ref.kind == "Service":
                m.rollout.on_revision()

    def _by_target(self, namespace: str, target: str) -> list[Managed]:
        """Managed Canaries of `namespace` whose target is `target` (indexed)."""
        if self._target_index_stale:
            self._target_index = {}
            for (ns, _), m in self.managed.items():
                self._target_index.setdefault((ns, m.canary.spec.target_ref.name), []).append(m)
            self._target_index_stale = False
        return [
            m
            for m in self._target_index.get((namespace, target), [])
            if m.canary.spec.target_ref.name == target
        ]

    def _on_config(self, kind: str, ev: WatchEvent) -> None:
        ns, name = key_of(ev.object)
        ckind = "configmap" if kind == "configmaps" else "secret"
        for m in self._canaries_in(ns):
            ref = m.canary.spec.target_ref
            target = self.informer_get(_plural(ref.kind), ns, ref.name)
            pod_spec = (((target or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            if (ckind, name) in config_refs(pod_spec):
                m.rollout.on_revision()

    def informer_get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """An object from the watch caches."""
        for inf in self.informers.get(kind, []):
            if inf.namespace in (None, namespace) and (obj := inf.get(namespace, name)) is not None:
                return obj
        return None

    def version_of_pod(self, pod: dict[str, Any]) -> str | None:
        """primary / canary for a pod selected by a Canary's primary or target workload (any
        Canary seen, so a standby replica attributes traffic too)."""
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        ns = meta.get("namespace") or ""
        for inf in self.informers.get("canaries", []):
            for (cns, _), obj in list(inf.cache.items()):
                if cns != ns:
                    continue
                ref = (obj.get("spec") or {}).get("targetRef") or {}
                target_name = ref.get("name")
                kind = _plural(str(ref.get("kind") or "Deployment"))
                target = self.informer_get(kind, ns, target_name) if target_name else None
                if target is None:
                    continue
                try:
                    label, value = selector_label(target)
                except ValueError:
                    continue
                if labels.get(label) == primary_name(str(target_name)):
                    return "primary"
                if labels.get(label) == value:
                    return "canary"
        return None

    def attribute_pods(self, namespace: str) -> None:
        """Re-read every cached pod of `namespace` (a Canary or its target appeared)."""
        for inf in self.informers.get("pods", []):
            for (ns, _), pod in list(inf.cache.items()):
                if ns == namespace:
                    self._on_pod(WatchEvent("MODIFIED", pod))

    def _on_pod(self, ev: WatchEvent) -> None:
        agg = self.registry.aggregator
        if agg is None:
            return
        key = key_of(ev.object)
        old = self.pod_hosts.get(key)
        ip = ((ev.object.get("status") or {}).get("podIP")) or ""
        version = self.version_of_pod(ev.object) if ev.type != "DELETED" else None
        new = (ip, version) if ip and version else None
        if old == new:
            return
        if old is not None:
            agg.remove_host(old[0])
            self.pod_hosts.pop(key, None)
        if new is not None:
            agg.set_host(new[0], new[1])
            self.pod_hosts[key] = new

    # -- verdicts

    def _default_analyzer(self, canary: Canary) -> Analyzer | None:
        agg = self.registry.aggregator
        if agg is None:
            return None
        from canary_stream.analysis.analyzer import Analyzer as StreamingAnalyzer

        target = f"{canary.spec.service.name or canary.spec.target_ref.name}.{canary.namespace}"
        return StreamingAnalyzer(canary, agg, target, self.stream_templates(canary))

    def stream_templates(self, canary: Canary) -> dict[str, StreamMetric]:
        """The streaming MetricTemplates the Canary's metrics name, by `name` (same namespace) and
        `namespace/name`."""
        out: dict[str, StreamMetric] = {}
        a = canary.spec.analysis
        for m in a.metrics if a is not None else []:
            ref = m.template_ref
            if ref is None:
                continue
            ns = ref.namespace or canary.namespace
            obj = self.informer_get("metrictemplates", ns, ref.name)
            if obj is None:
                continue
            try:
                template = parse_template(_spec_doc(obj))
            except SpecError:
                continue
            if template.spec.stream is not None:
                out[f"{ns}/{ref.name}"] = template.spec.stream
                if ns == canary.namespace:
                    out[ref.name] = template.spec.stream
        return out

    def _on_template(self, ev: WatchEvent) -> None:
        """A MetricTemplate changed: Canaries naming it start their next analysis with it."""
        ns, name = key_of(ev.object)
        for m in list(self.managed.values()):
            a = m.canary.spec.analysis
            if a is not None and any(
                x.template_ref is not None
                and x.template_ref.name == name
                and (x.template_ref.namespace or m.canary.namespace) == ns
                for x in a.metrics
            ):
                m.rollout.update_spec(m.canary)
                if m.tracker is not None:
                    fresh = self.analyzer_factory(m.canary)
                    if fresh is not None:
                        m.tracker.inner = fresh

    async def _verdicts(self) -> None:
        """Hand each running analysis' verdict to its Rollout every `verdict_period_s` (a fail
        rolls back at once instead of at the next check)."""
        while True:
            await asyncio.sleep(self.config.verdict_period_s)
            if not self.is_leader():
                continue
            now = self.clock.now()
            for m in list(self.managed.values()):
                t = m.tracker
                if t is None or t.started is None or m.rollout.status.phase not in ANALYSING:
                    continue
                try:
                    m.rollout.on_verdict(t.verdict(now))
                except Exception:
                    log.exception("verdict of %s/%s failed", m.ref.namespace, m.ref.name)


def _only_status_changed(m: Managed, obj: dict[str, Any]) -> bool:
    """Same generation, no manual annotation, not being deleted, finalizer as the spec wants it:
    the change was to status or unrelated metadata."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        int(meta.get("generation") or 0) == m.generation
        and not meta.get("deletionTimestamp")
        and not any(a in annotations for a in ANNOTATIONS)
        and (FINALIZER in (meta.get("finalizers") or [])) == m.canary.spec.revert_on_deletion
    )


def _spec_doc(obj: dict[str, Any]) -> dict[str, Any]:
    """What `parse_canary` reads: apiVersion, kind, metadata, spec (status left out)."""
    return {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in obj}


__all__ = ["FINALIZER", "FLAGGER_GROUP", "ControllerConfig", "KubeController", "StepTracker"]
