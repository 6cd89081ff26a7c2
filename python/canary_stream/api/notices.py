"""Feed a Registry's notice stream from a Rollout: phase and weight changes (through
``Rollout.on_status``), its events (a tee in front of its EventSink) and verdicts (a wrapper
around the analyzer, publishing when the decision or the reasons change). The in-memory demo
uses these; a controller may publish its own notices instead."""

from __future__ import annotations

import logging
from typing import Any

from canary_stream.analysis.verdict import Verdict
from canary_stream.controller.events import Event, EventSink
from canary_stream.controller.scheduler import Analyzer, Rollout
from canary_stream.controller.status import CanaryStatus
from canary_stream.registry import Notice, Registry
from canary_stream.router.base import Routes

log = logging.getLogger("canary_stream.rollout")


class PublishingSink:
    """Records into ``inner`` and publishes every event as an ``event`` notice."""

    def __init__(self, inner: EventSink, registry: Registry) -> None:
        self.inner = inner
        self.registry = registry

    def record(self, event: Event) -> None:
        self.inner.record(event)
        self.registry.publish_event(event)

    def __getattr__(self, name: str) -> Any:  # e.g. MemoryEventSink.events for the demo's view
        return getattr(self.inner, name)


class PublishingAnalyzer:
    """Delegates to ``inner``; publishes a ``verdict`` notice when the decision or reasons change."""

    def __init__(self, inner: Analyzer, registry: Registry, namespace: str, name: str) -> None:
        self.inner = inner
        self.registry = registry
        self.namespace = namespace
        self.name = name
        self._last: tuple[str, tuple[str, ...]] | None = None

    def start_step(self, at: float, routes: Routes) -> None:
        self.inner.start_step(at, routes)

    def verdict(self, now: float) -> Verdict:
        v = self.inner.verdict(now)
        key = (v.decision.value, v.reasons)
        if key != self._last:
            self._last = key
            self.registry.publish(Notice("verdict", self.namespace, self.name, v.at, v.to_dict()))
            log.info(
                "verdict %s: %s",
                v.decision.value,
                "; ".join(v.reasons),
                extra={"canary": self.name, "namespace": self.namespace, "verdict": v.decision.value},
            )
        return v

    def __getattr__(self, name: str) -> Any:  # e.g. the analyzer's ``target``
        return getattr(self.inner, name)


def watch(registry: Registry, namespace: str, name: str, rollout: Rollout) -> None:
    """Add ``rollout`` to ``registry`` and publish its phase, weight and event notices."""
    previous = rollout.on_status
    last = rollout.status

    def on_status(status: CanaryStatus) -> None:
        nonlocal last
        now = rollout.clock.now()
        if status.phase != last.phase and status.phase is not None:
            before = last.phase.value if last.phase else ""
            registry.publish(
                Notice("phase", namespace, name, now, {"phase": status.phase.value, "previous": before})
            )
            log.info(
                "phase %s -> %s",
                before,
                status.phase.value,
                extra={"canary": name, "namespace": namespace, "phase": status.phase.value},
            )
        if status.canary_weight != last.canary_weight:
            registry.publish(
                Notice(
                    "weight",
                    namespace,
                    name,
                    now,
                    {"canary_weight": status.canary_weight, "primary_weight": 100 - status.canary_weight},
                )
            )
        last = status
        if previous is not None:
            previous(status)

    rollout.on_status = on_status
    rollout.events = PublishingSink(rollout.events, registry)
    registry.add(namespace, name, rollout)
