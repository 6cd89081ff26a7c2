"""An in-memory Router: the routing object is a dict entry; tests and the simulator read it back."""

from __future__ import annotations

from collections.abc import Callable

from canary_stream.router.base import Routes
from canary_stream.spec.model import Canary

Key = tuple[str, str]  # (namespace, canary name)


def key_of(canary: Canary) -> Key:
    """The routing object's key for `canary`."""
    return (canary.namespace, canary.name)


class InMemoryRouter:
    """Implements `Router`. `reconcile` creates the routes at 100/0 and keeps existing weights, like a
    mesh router that owns only the spec-derived fields. `history` lists every write in order;
    `on_change` (optional) hears each one (the simulator re-splits its traffic there)."""

    def __init__(self, on_change: Callable[[Key, Routes], None] | None = None) -> None:
        self.routes: dict[Key, Routes] = {}
        self.history: list[tuple[Key, Routes]] = []
        self.finalized: set[Key] = set()
        self.on_change = on_change

    async def reconcile(self, canary: Canary) -> None:
        key = key_of(canary)
        if key not in self.routes:
            self._write(key, Routes(primary_weight=100, canary_weight=0))

    async def get_routes(self, canary: Canary) -> Routes:
        key = key_of(canary)
        if key not in self.routes:
            raise LookupError(f"no routes for {canary.name}.{canary.namespace}; reconcile first")
        return self.routes[key]

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        if not (0 <= routes.primary_weight <= 100 and 0 <= routes.canary_weight <= 100):
            raise ValueError(f"weights out of range: {routes}")
        self._write(key_of(canary), routes)

    async def finalize(self, canary: Canary) -> None:
        key = key_of(canary)
        self._write(key, Routes(primary_weight=100, canary_weight=0))
        self.finalized.add(key)

    def _write(self, key: Key, routes: Routes) -> None:
        self.routes[key] = routes
        self.history.append((key, routes))
        if self.on_change is not None:
            self.on_change(key, routes)
