"""Writing a Canary's `status` through the status subresource.

The Rollout reports every status change synchronously (`on_status`); `StatusWriter` keeps only
the newest one per Canary and patches it in the background (JSON merge patch of what changed;
keys that went away are sent as null), retrying transient failures until it is written: a burst
of changes costs one request, and no change is lost. A merge patch carries no resourceVersion,
so a concurrent spec or annotation edit never makes it conflict. A 404 ends the writer (the
Canary is gone). `gate` (leadership) is asked before each write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from canary_stream.kube.objects import CanaryRef
from canary_stream.kube.rest import Kube
from canary_stream.kube.retry import retry, status_of

log = logging.getLogger(__name__)


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning `old` into `new`: changed keys, nested maps diffed, removed keys null."""
    patch: dict[str, Any] = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, dict) and isinstance(o, dict):
            sub = merge_diff(o, v)
            if sub:
                patch[k] = sub
        elif k not in old or o != v:
            patch[k] = v
    for k in old:
        if k not in new:
            patch[k] = None
    return patch


class StatusWriter:
    """Coalescing, retrying status writes for one Canary."""

    def __init__(
        self,
        kube: Kube,
        ref: CanaryRef,
        *,
        current: dict[str, Any] | None = None,
        gate: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kube = kube
        self.ref = ref
        self.gate = gate
        self.written: dict[str, Any] = dict(current or {})
        self.writes = 0
        self.gone = False
        self._want: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._done.set()

    def write(self, status: dict[str, Any]) -> None:
        """Make `status` the Canary's status (soon)."""
        if self.gone:
            return
        self._want = status
        self._done.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"status:{self.ref.name}")

    async def flush(self) -> None:
        """Wait until the newest status is written (or the Canary is gone)."""
        await self._done.wait()

    def close(self) -> None:
        """Stop writing (pending changes are dropped)."""
        self.gone = True
        if self._task is not None:
            self._task.cancel()
        self._done.set()

    async def _patch(self, patch: dict[str, Any]) -> None:
        r = self.ref
        await self.kube.patch(r.resource, r.namespace, r.name, {"status": patch}, sub="status")

    async def _drain(self) -> None:
        where = f"{self.ref.namespace}/{self.ref.name}"
        try:
            while self._want is not None:
                want, self._want = self._want, None
                patch = merge_diff(self.written, want)
                if not patch:
                    continue
                if not self.gate():
                    log.info("not the leader: status of %s not written", where)
                    continue
                try:
                    await retry(lambda p=patch: self._patch(p), what=f"status of {where}")  # type: ignore[misc]
                except Exception as exc:
                    if status_of(exc) == 404:
                        self.gone = True
                        return
                    log.error("status of %s not written: %r", where, exc)
                    continue
                self.written = want
                self.writes += 1
        finally:
            if self._want is None or self.gone:
                self._done.set()
