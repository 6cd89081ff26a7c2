"""An EventSink writing events.k8s.io/v1 Events about Canaries.

`record` never blocks the Rollout: events go to a bounded queue that one task drains (the oldest
is dropped, and counted, if the API server cannot keep up). The same (Canary, type, message) seen
again within `series_window_s` patches the first Event's `series` (count, lastObservedTime) instead
of creating another, as client-go's event recorder does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canary_stream.controller.events import Event
from canary_stream.kube.objects import CanaryRef, micro_time
from canary_stream.kube.rest import EVENTS, Kube
from canary_stream.kube.retry import describe, retry, status_of

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "canary-stream.dev/controller"
NOTE_LIMIT = 1024


def reporting_instance() -> str:
    """This replica's name (the pod name in a cluster)."""
    return os.environ.get("CANARY_STREAM_POD_NAME") or socket.gethostname()


@dataclass
class _Series:
    name: str
    count: int
    first: float


def event_body(ref: CanaryRef, event: Event, instance: str, now: float) -> dict[str, Any]:
    """The events.k8s.io/v1 Event for one scheduler event."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name}-", "namespace": ref.namespace},
        "eventTime": micro_time(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": "Reconcile",
        "reason": "Synced",
        "type": event.type.value,
        "regarding": ref.object_reference(),
        "note": event.message[:NOTE_LIMIT],
    }


class KubeEventSink:
    """Events of every Canary of this process. `refs` finds the Canary an event is about."""

    def __init__(
        self,
        kube: Kube,
        refs: Callable[[str, str], CanaryRef | None],
        *,
        instance: str | None = None,
        max_queued: int = 10_000,
        series_window_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.refs = refs
        self.instance = instance or reporting_instance()
        self.series_window_s = series_window_s
        self.clock = clock
        self.dropped = 0
        self.created = 0
        self.patched = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue(max_queued)
        self._series: dict[tuple[str, str, str, str], _Series] = {}

    def record(self, event: Event) -> None:
        """Queue `event` (never waits)."""
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self._queue.task_done()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def flush(self) -> None:
        """Wait until every queued event is written."""
        await self._queue.join()

    async def run(self) -> None:
        """Write queued events, forever."""
        while True:
            event = await self._queue.get()
            try:
                await self._write(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event about %s/%s not written: %s", event.namespace, event.name, describe(exc))
            finally:
                self._queue.task_done()

    async def _write(self, event: Event) -> None:
        ref = self.refs(event.namespace, event.name)
        if ref is None:
            return
        now = self.clock()
        key = (ref.namespace, ref.name, event.type.value, event.message)
        series = self._series.get(key)
        if series is not None and now - series.first <= self.series_window_s:
            series.count += 1
            patch = {"series": {"count": series.count, "lastObservedTime": micro_time(now)}}
            try:
                await retry(lambda: self.kube.patch(EVENTS, ref.namespace, series.name, patch),
                            what="event series", attempts=5)  # fmt: skip
                self.patched += 1
                return
            except Exception as exc:
                if status_of(exc) != 404:
                    raise
        body = event_body(ref, event, self.instance, now)
        doc = await retry(lambda: self.kube.create(EVENTS, ref.namespace, body), what="event", attempts=5)
        self._series[key] = _Series(doc["metadata"]["name"], 1, now)
        self.created += 1
        if len(self._series) > 50_000:
            cutoff = now - self.series_window_s
            self._series = {k: s for k, s in self._series.items() if s.first >= cutoff}
