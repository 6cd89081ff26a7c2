"""The Workloads interface: what the engine needs from the target and its primary (Flagger's pkg/canary)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from canary_stream.spec.model import Canary


def primary_name(name: str) -> str:
    """The primary copy of a target object (Deployment, ConfigMap, autoscaler) is `<name>-primary`."""
    return f"{name}-primary"


@dataclass(frozen=True)
class Readiness:
    """`ready`: may proceed; not ready and `retriable`: wait; not retriable: the progress deadline
    passed (roll back)."""

    ready: bool
    retriable: bool = True
    message: str = ""


class Workloads(Protocol):
    """Deployments in a cluster; in memory here."""

    async def initialize(self, canary: Canary) -> None:
        """Create `<target>-primary` from the target if missing."""

    async def revision(self, canary: Canary) -> str:
        """Hash of the target's pod template (plus tracked configs): a new value is a new revision."""

    async def config_checksums(self, canary: Canary) -> dict[str, str]:
        """Flagger's `status.trackedConfigs`: `configmap/<name>` / `secret/<name>` -> checksum of
        the ConfigMaps and Secrets the target's pod template references (and that are tracked)."""

    async def primary_ready(self, canary: Canary) -> Readiness: ...

    async def canary_ready(self, canary: Canary) -> Readiness: ...

    async def scale_canary(self, canary: Canary, replicas: int | None) -> None:
        """`None` = scale from zero (the target's desired replicas); 0 = scale to zero."""

    async def promote(self, canary: Canary) -> None:
        """Copy the canary's pod template (and tracked configs) to the primary."""

    async def revert(self, canary: Canary) -> None:
        """revertOnDeletion: scale the target back to the primary's replicas, so it serves again
        once canary-stream lets go of it."""
