"""What the controller process knows, in one place: the running rollouts, the aggregator and the
telemetry sources. The controller (Kubernetes or in-memory demo) fills it; the verdict API and the
Prometheus exporter only read it, subscribe to its events and send it commands.

Keeping this the only meeting point lets the API be tested without Kubernetes and the controller
without HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from canary_stream.controller.events import Event
from canary_stream.controller.scheduler import Command, Rollout
from canary_stream.core import Aggregator
from canary_stream.sources.base import TelemetrySource


class Commander(Protocol):
    """Carries out a manual command. In a cluster this writes the Canary's annotation (so it
    survives a restart and reaches the leader); in memory it calls the Rollout directly."""

    async def __call__(self, namespace: str, name: str, command: Command, weight: int | None, /) -> None: ...


@dataclass(frozen=True)
class Notice:
    """One item of the event stream: ``kind`` is ``phase``, ``verdict``, ``weight`` or ``event``."""

    kind: str
    namespace: str
    name: str
    at: float
    data: dict[str, Any]


@dataclass
class Registry:
    """Rollouts by ``(namespace, name)`` plus the shared ingest pipeline."""

    aggregator: Aggregator | None = None
    sources: list[TelemetrySource] = field(default_factory=list)
    rollouts: dict[tuple[str, str], Rollout] = field(default_factory=dict)
    #: Set by the controller; None means manual control is not available (read-only API).
    commander: Commander | None = None
    #: Is this replica the leader (the one acting on Canaries)? Readiness may depend on it.
    is_leader: Callable[[], bool] = lambda: True
    _subscribers: set[asyncio.Queue[Notice]] = field(default_factory=set)

    # -- written by the controller ------------------------------------------------------------

    def add(self, namespace: str, name: str, rollout: Rollout) -> None:
        self.rollouts[(namespace, name)] = rollout

    def remove(self, namespace: str, name: str) -> None:
        self.rollouts.pop((namespace, name), None)

    def publish(self, notice: Notice) -> None:
        """Hand a notice to every subscriber; a subscriber that does not keep up loses the oldest
        notices rather than slowing the controller."""
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(notice)

    def publish_event(self, event: Event) -> None:
        """A Kubernetes-style event of a rollout as a notice."""
        self.publish(Notice("event", event.namespace, event.name, event.at, event.to_dict()))

    # -- read by the API ------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Rollout | None:
        return self.rollouts.get((namespace, name))

    def items(self) -> Iterator[tuple[tuple[str, str], Rollout]]:
        return iter(sorted(self.rollouts.items()))

    @contextlib.asynccontextmanager
    async def subscribe(self, max_queued: int = 1000) -> AsyncIterator[asyncio.Queue[Notice]]:
        """A queue of notices from now on, for as long as the context is open."""
        queue: asyncio.Queue[Notice] = asyncio.Queue(max_queued)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


def direct_commander(registry: Registry) -> Commander:
    """A Commander for in-memory use: acts on the Rollout in this process."""

    async def command(namespace: str, name: str, cmd: Command, weight: int | None) -> None:
        rollout = registry.get(namespace, name)
        if rollout is None:
            raise KeyError(f"{namespace}/{name}")
        if cmd is Command.SET_WEIGHT:
            if weight is None:
                raise ValueError("weight is required for set-weight")
            rollout.set_weight(weight)
        elif cmd is Command.DELETE:
            rollout.delete()
        else:
            getattr(rollout, cmd.value)()

    return command
