"""The Router interface: what the engine needs from a mesh or ingress (Flagger's pkg/router)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from canary_stream.spec.model import Canary


@dataclass(frozen=True)
class Routes:
    """Traffic split read back from (or written to) the router object — the source of truth."""

    primary_weight: int
    canary_weight: int
    mirrored: bool = False
    mirror_weight: int | None = None  # percent of primary traffic copied to the canary; None = 100


class RouterNotReady(RuntimeError):
    """The routing object exists but its controller has not accepted the last change yet (Gateway
    API parents): retry later, no verdict may be drawn from the current split."""


class Router(Protocol):
    """One implementation per mesh (in-memory here; Istio, Gateway API, SMI in the Kubernetes issue)."""

    async def reconcile(self, canary: Canary) -> None:
        """Create or update the routing objects from the spec, preserving current weights. Called
        once the primary is ready, so taking over the apex Service causes no outage."""

    async def get_routes(self, canary: Canary) -> Routes: ...

    async def set_routes(self, canary: Canary, routes: Routes) -> None: ...

    async def finalize(self, canary: Canary) -> None:
        """Revert routing to what it was before canary-stream (revertOnDeletion)."""


@runtime_checkable
class InitializingRouter(Protocol):
    """A router with something to create before the primary is ready (Flagger: the `-primary` /
    `-canary` Services), while live traffic is not touched yet."""

    async def initialize(self, canary: Canary) -> None: ...
