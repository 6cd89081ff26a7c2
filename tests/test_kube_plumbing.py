"""kube/ against a real kube-apiserver: the informer (list, watch, reconnects), the events sink
(events.k8s.io/v1, series), the status writer, leader election, request counting."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from canary_stream.controller.events import Event, EventType
from canary_stream.kube.events import KubeEventSink
from canary_stream.kube.lease import LeaderElector, LeaseConfig
from canary_stream.kube.objects import CanaryRef
from canary_stream.kube.rest import CONFIGMAPS, Kube
from canary_stream.kube.status import StatusWriter
from canary_stream.kube.watch import Informer, WatchEvent
from kube_controller_helpers import CANARIES, canary_manifest

pytestmark = pytest.mark.kube


async def collect(informer: Informer, into: list[WatchEvent]) -> None:
    async for ev in informer.events():
        into.append(ev)


async def until(pred: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_informer_lists_and_watches_across_reconnects(kube_api: Any, kube_namespace: str) -> None:
    kube = Kube(kube_api)
    ns = kube_namespace
    await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    inf = Informer(kube, CONFIGMAPS, ns, timeout_s=1)
    seen: list[WatchEvent] = []
    task = asyncio.create_task(collect(inf, seen))
    try:
        await inf.synced.wait()
        assert [(e.type, e.object["metadata"]["name"]) for e in seen] == [("ADDED", "a")]
        await kube.patch(CONFIGMAPS, ns, "a", {"data": {"k": "2"}})
        await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "b"}})
        await until(lambda: len(seen) >= 3)
        assert [(e.type, e.object["metadata"]["name"]) for e in seen[1:3]] == [
            ("MODIFIED", "a"),
            ("ADDED", "b"),
        ]
        assert inf.get(ns, "a")["data"] == {"k": "2"}  # type: ignore[index]
        await kube.delete(CONFIGMAPS, ns, "b")
        await until(lambda: len(seen) >= 4)
        assert seen[3].type == "DELETED" and seen[3].object["metadata"]["name"] == "b"
        assert set(inf.cache) == {(ns, "a")}
        await asyncio.sleep(1.5)  # the 1 s watch ended and resumed from its resourceVersion
        await kube.create(CONFIGMAPS, ns, {"metadata": {"name": "c"}})
        await until(lambda: inf.get(ns, "c") is not None)
        assert [(e.type, e.object["metadata"]["name"]) for e in seen[4:]] == [("ADDED", "c")]
        assert inf.relists == 1
        assert kube.counts["WATCH"] >= 2 and kube.counts["GET"] == 1  # reconnects do not re-list
    finally:
        inf.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_events_are_written_and_repeats_become_a_series(kube_api: Any, kube_namespace: str) -> None:
    kube = Kube(kube_api)
    created = await kube.create(CANARIES, kube_namespace, canary_manifest())
    ref = CanaryRef.of(created)
    sink = KubeEventSink(kube, lambda ns, name: ref if name == "podinfo" else None, instance="test")
    task = asyncio.create_task(sink.run())
    try:
        for msg in ("Initialization done!", "Halt advancement", "Halt advancement"):
            sink.record(
                Event(
                    0.0,
                    EventType.WARNING if "Halt" in msg else EventType.NORMAL,
                    msg,
                    "podinfo",
                    kube_namespace,
                )
            )
        sink.record(Event(0.0, EventType.NORMAL, "about nobody", "ghost", kube_namespace))
        await asyncio.wait_for(sink.flush(), 10)
    finally:
        task.cancel()
    doc = await kube.request("GET", f"/apis/events.k8s.io/v1/namespaces/{kube_namespace}/events")
    items = sorted(doc["items"], key=lambda e: e["note"])
    assert [(e["note"], e["type"]) for e in items] == [
        ("Halt advancement", "Warning"),
        ("Initialization done!", "Normal"),
    ]
    halt = items[0]
    assert halt["series"]["count"] == 2
    assert halt["regarding"]["uid"] == created["metadata"]["uid"] and halt["reason"] == "Synced"
    assert halt["reportingController"] == "canary-stream.dev/controller"
    assert (sink.created, sink.patched) == (2, 1)


async def test_status_writer_coalesces_and_stops_on_404(kube_api: Any, kube_namespace: str) -> None:
    kube = Kube(kube_api)
    created = await kube.create(CANARIES, kube_namespace, canary_manifest())
    writer = StatusWriter(kube, CanaryRef.of(created))
    for w in (10, 20, 30):
        writer.write({"phase": "Progressing", "canaryWeight": w, "trackedConfigs": {"configmap/x": "1"}})
    await writer.flush()
    got = await kube.get(CANARIES, kube_namespace, "podinfo")
    assert got is not None and got["status"]["canaryWeight"] == 30
    assert writer.writes <= 2  # a burst costs at most the first write and the newest
    writer.write({"phase": "Progressing", "canaryWeight": 30})
    await writer.flush()
    got = await kube.get(CANARIES, kube_namespace, "podinfo")
    assert got is not None and "trackedConfigs" not in got["status"]  # removed keys are nulled
    await kube.request("DELETE", CANARIES.path(kube_namespace, "podinfo"))
    writer.write({"phase": "Failed"})
    await asyncio.wait_for(writer.flush(), 10)
    assert writer.gone


async def test_lease_single_leader_release_and_takeover(kube_api: Any, kube_namespace: str) -> None:
    kube = Kube(kube_api)
    cfg = LeaseConfig("l", kube_namespace, "", 3.0, 2.0, 0.5)
    a = LeaderElector(kube, LeaseConfig(**{**cfg.__dict__, "identity": "a"}))
    b = LeaderElector(kube, LeaseConfig(**{**cfg.__dict__, "identity": "b"}))
    ta = asyncio.create_task(a.run())
    await until(a.is_leader)
    tb = asyncio.create_task(b.run())
    await asyncio.sleep(1.5)
    assert a.is_leader() and not b.is_leader()
    await a.release()
    ta.cancel()
    await until(b.is_leader, timeout=3)  # released: no need to wait out the lease
    lease = await kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/l")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    tb.cancel()
    for t in (ta, tb):
        with contextlib.suppress(asyncio.CancelledError):
            await t


class _FrozenInformer:
    """A watch cache that never sees another event: the worst case of a watch running behind."""

    namespace: str | None

    def __init__(self, namespace: str, objects: list[dict[str, Any]]) -> None:
        self.namespace = namespace
        self.cache = {(namespace, o["metadata"]["name"]): o for o in objects}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get((namespace, name))


async def test_readiness_after_a_scale_up_never_judges_the_stale_cached_object(
    kube_api: Any, kube_namespace: str
) -> None:
    """The skipAnalysis race: the cache still shows the target at 0 replicas ("nothing to wait
    for") after the controller scaled it up; readiness must see its own write, not the cache."""
    from canary_stream.controller.kube_controller import CacheReader
    from canary_stream.kube.rest import DEPLOYMENTS
    from canary_stream.spec.load import parse_canary
    from canary_stream.workload.kubernetes import KubeWorkloads
    from kube_controller_helpers import podinfo_deployment

    kube = Kube(kube_api)
    ns = kube_namespace
    await kube.create(DEPLOYMENTS, ns, podinfo_deployment(replicas=0))
    stale = await kube.get(DEPLOYMENTS, ns, "podinfo")
    assert stale is not None
    # what the cache would hold had the deployment controller finished the 0-replica rollout
    stale["status"] = {"observedGeneration": stale["metadata"]["generation"]}
    doc = canary_manifest()
    doc["metadata"]["namespace"] = ns
    canary, errors = parse_canary(doc)
    assert not errors
    reader = CacheReader(kube, {"deployments": [_FrozenInformer(ns, [stale])]})  # type: ignore[list-item]
    owner = CanaryRef("canary-stream.dev", ns, "podinfo", "0000")
    workloads = KubeWorkloads(kube, lambda c: owner, reader)

    assert (await workloads.canary_ready(canary)).ready  # at 0 replicas: nothing to wait for
    await workloads.scale_canary(canary, 2)
    readiness = await workloads.canary_ready(canary)
    assert not readiness.ready and readiness.retriable, readiness
    assert reader.stale_reads == 1 and reader.fallbacks == 1
    # once the cache shows the write, reads come from it again
    fresh = await kube.get(DEPLOYMENTS, ns, "podinfo")
    assert fresh is not None
    reader.informers["deployments"][0].cache[(ns, "podinfo")] = fresh  # type: ignore[attr-defined]
    await workloads.canary_ready(canary)
    assert reader.fallbacks == 1
