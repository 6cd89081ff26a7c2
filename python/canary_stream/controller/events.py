"""Kubernetes-style events recorded by the scheduler (Flagger's `recordEventInfof` / `Warningf`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Protocol


class EventType(StrEnum):
    """Kubernetes event types."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    """One event about a canary at `at` (seconds since the epoch)."""

    at: float
    type: EventType
    message: str
    name: str = ""
    namespace: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type.value
        return d


class EventSink(Protocol):
    """Where events go: memory here, the Kubernetes events API later."""

    def record(self, event: Event) -> None: ...


class MemoryEventSink:
    """Keeps every event in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, event: Event) -> None:
        self.events.append(event)

    def messages(self) -> list[str]:
        """The messages, in order."""
        return [e.message for e in self.events]
