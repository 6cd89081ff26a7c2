"""Leader election on a coordination.k8s.io/v1 Lease, client-go style.

A candidate takes the Lease when it is free (no holder) or expired: its record has not changed
for `lease_duration_s` as observed on this replica's own clock (so clock skew between replicas
does not matter). The leader renews every `retry_period_s`; when it cannot renew for
`renew_deadline_s` it stops leading. `release()` (on a clean stop) clears the holder so a standby
takes over at once instead of after a lease duration. Every write carries the resourceVersion it
read, so two candidates never both win."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from canary_stream.kube.objects import micro_time
from canary_stream.kube.rest import LEASES, Kube
from canary_stream.kube.retry import describe, status_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    """Name, namespace and timings (client-go defaults 15 / 10 / 2 s)."""

    name: str = "canary-stream-controller"
    namespace: str = "canary-stream"
    identity: str = ""
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def check(self) -> None:
        """client-go's rule: lease duration > renew deadline > retry period, all positive."""
        if not (self.lease_duration_s > self.renew_deadline_s > self.retry_period_s > 0):
            raise ValueError("lease: need leaseDuration > renewDeadline > retryPeriod > 0")
        if not self.identity:
            raise ValueError("lease: identity is required")


class LeaderElector:
    """Campaigns for the Lease and keeps it; `leading` is set while this replica leads.
    `on_started` / `on_stopped` are called on each change."""

    def __init__(
        self,
        kube: Kube,
        config: LeaseConfig,
        *,
        on_started: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config.check()
        self.kube = kube
        self.config = config
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self.leading = asyncio.Event()
        self.transitions = 0
        self._observed: tuple[str, float] | None = None  # (resourceVersion, local time first seen)
        self._last_renew = 0.0
        self._released = False

    def is_leader(self) -> bool:
        """True while this replica holds the Lease."""
        return self.leading.is_set()

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        c = self.config
        while not self._released:
            try:
                ok = await self._try_acquire_or_renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease %s/%s: %r", c.namespace, c.name, exc)
                ok = False
            now = self.clock()
            if ok:
                self._last_renew = now
                if not self.leading.is_set():
                    log.info("lease %s/%s: %s is the leader", c.namespace, c.name, c.identity)
                    self.leading.set()
                    self.transitions += 1
                    if self.on_started:
                        self.on_started()
            if self._released:
                return
            elif self.leading.is_set() and now - self._last_renew >= c.renew_deadline_s:
                self._lose()
            await asyncio.sleep(c.retry_period_s)

    def _lose(self) -> None:
        log.warning(
            "lease %s/%s: %s stopped leading", self.config.namespace, self.config.name, self.config.identity
        )
        self.leading.clear()
        if self.on_stopped:
            self.on_stopped()

    async def release(self) -> None:
        """Give the Lease up now (clean shutdown)."""
        self._released = True  # no renewal from now on (run() ends at its next turn)
        if not self.leading.is_set():
            return
        c = self.config
        self._lose()
        for _ in range(5):  # a renewal in flight may have moved the resourceVersion: read again
            try:
                lease = await self.kube.get(LEASES, c.namespace, c.name)
                if lease is None:
                    return
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != c.identity:
                    return
                spec["holderIdentity"] = None
                spec["leaseDurationSeconds"] = 1
                spec["renewTime"] = micro_time(time.time())
                await self.kube.replace(LEASES, c.namespace, c.name, lease)
                return
            except Exception as exc:
                if status_of(exc) != 409:
                    log.warning("lease %s/%s not released: %s", c.namespace, c.name, describe(exc))
                    return

    async def _try_acquire_or_renew(self) -> bool:
        c = self.config
        wall = micro_time(time.time())
        lease = await self.kube.get(LEASES, c.namespace, c.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": c.name, "namespace": c.namespace},
                "spec": {
                    "holderIdentity": c.identity,
                    "leaseDurationSeconds": max(1, round(c.lease_duration_s)),
                    "acquireTime": wall,
                    "renewTime": wall,
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.kube.create(LEASES, c.namespace, body)
            except Exception as create_exc:
                if status_of(create_exc) == 409:
                    return False  # another replica created it first
                raise
            return True
        spec = lease.setdefault("spec", {})
        rv = lease["metadata"]["resourceVersion"]
        now = self.clock()
        if self._observed is None or self._observed[0] != rv:
            self._observed = (rv, now)
        holder = spec.get("holderIdentity") or ""
        duration = float(spec.get("leaseDurationSeconds") or c.lease_duration_s)
        expired = now - self._observed[1] >= duration
        if holder and holder != c.identity and not expired:
            return False
        if holder != c.identity:
            spec["acquireTime"] = wall
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = c.identity
        spec["leaseDurationSeconds"] = max(1, round(c.lease_duration_s))
        spec["renewTime"] = wall
        try:
            updated = await self.kube.replace(LEASES, c.namespace, c.name, lease)
        except Exception as exc:
            if status_of(exc) == 409:
                return False  # lost the race (or our view was stale)
            raise
        self._observed = (updated["metadata"]["resourceVersion"], self.clock())
        return True
