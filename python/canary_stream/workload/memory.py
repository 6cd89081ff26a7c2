"""In-memory Workloads: a target Deployment and its `-primary` copy whose pod template, replicas and
readiness the tests and the simulator control, including Kubernetes' progress deadline."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from canary_stream.clock import Clock
from canary_stream.controller.hashing import spec_hash
from canary_stream.spec.model import Canary
from canary_stream.workload.base import Readiness

Key = tuple[str, str]  # (namespace, target name)


@dataclass
class Deployment:
    """One Deployment: a pod template, desired replicas, and when its current rollout started.
    `broken`: its pods never become ready, so the progress deadline eventually passes."""

    template: dict[str, Any]
    replicas: int = 1
    rollout_started: float = 0.0
    broken: bool = False
    override: Readiness | None = None  # forced readiness (tests)


@dataclass
class Target:
    """A canary target (`<name>`) and its primary (`<name>-primary`, None until initialize)."""

    canary: Deployment
    primary: Deployment | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)
    reverted: bool = False  # revertOnDeletion ran


class InMemoryWorkloads:
    """Implements `Workloads`. A Deployment becomes ready `startup_s` after its rollout starts
    (scale-up, promotion); a `broken` one never does, and once `progressDeadlineSeconds` pass its
    readiness turns non-retriable, as Kubernetes' ProgressDeadlineExceeded does."""

    def __init__(self, clock: Clock, startup_s: float = 0.0) -> None:
        self.clock = clock
        self.startup_s = startup_s
        self.targets: dict[Key, Target] = {}

    # -- what tests and the simulator drive --------------------------------------------------------

    def deploy(
        self, namespace: str, name: str, template: dict[str, Any], replicas: int | None = None
    ) -> None:
        """Create the target, or change its pod template (a new revision when the template differs) and,
        if given, its replicas (like `kubectl set image`: a scaled-down target stays at 0)."""
        key = (namespace, name)
        t = self.targets.get(key)
        if t is None:
            self.targets[key] = Target(Deployment(copy.deepcopy(template), replicas or 1, self.clock.now()))
            return
        t.canary.template = copy.deepcopy(template)
        if replicas is not None:
            t.canary.replicas = replicas
        t.canary.rollout_started = self.clock.now()

    def target(self, namespace: str, name: str) -> Target:
        """The target and its primary."""
        return self.targets[(namespace, name)]

    def set_broken(
        self, namespace: str, name: str, *, canary: bool | None = None, primary: bool | None = None
    ) -> None:
        """Make the canary's or the primary's pods (never) become ready."""
        t = self.target(namespace, name)
        if canary is not None:
            t.canary.broken = canary
        if primary is not None and t.primary is not None:
            t.primary.broken = primary

    def force_readiness(
        self, namespace: str, name: str, *, canary: Readiness | None = None, primary: Readiness | None = None
    ) -> None:
        """Override what `canary_ready` / `primary_ready` answer (None = computed again)."""
        t = self.target(namespace, name)
        t.canary.override = canary
        if t.primary is not None:
            t.primary.override = primary

    # -- the Workloads protocol --------------------------------------------------------------------

    def _target(self, canary: Canary) -> Target:
        key = (canary.namespace, canary.spec.target_ref.name)
        if key not in self.targets:
            raise LookupError(f"{canary.spec.target_ref.kind} {key[1]}.{key[0]} not found")
        return self.targets[key]

    async def initialize(self, canary: Canary) -> None:
        t = self._target(canary)
        if t.primary is None:
            t.primary = Deployment(copy.deepcopy(t.canary.template), t.canary.replicas or 1, self.clock.now())

    async def revision(self, canary: Canary) -> str:
        return spec_hash(self._target(canary).canary.template)

    async def config_checksums(self, canary: Canary) -> dict[str, str]:
        return {}  # in-memory Deployments reference no configs

    async def primary_ready(self, canary: Canary) -> Readiness:
        t = self._target(canary)
        if t.primary is None:
            return Readiness(False, True, f"{canary.spec.target_ref.name}-primary not created yet")
        return self._readiness(canary, t.primary, f"{canary.spec.target_ref.name}-primary")

    async def canary_ready(self, canary: Canary) -> Readiness:
        t = self._target(canary)
        if t.canary.replicas == 0:
            # Flagger checks canary readiness only after scaling up; 0 replicas means nothing to wait for.
            return Readiness(True)
        return self._readiness(canary, t.canary, canary.spec.target_ref.name)

    async def scale_canary(self, canary: Canary, replicas: int | None) -> None:
        t = self._target(canary)
        if replicas is None:
            # ScaleFromZero: the target's desired replicas, else the primary's, else 1.
            desired = t.canary.replicas or (t.primary.replicas if t.primary else 0) or 1
            t.canary.replicas = desired
            t.canary.rollout_started = self.clock.now()
        else:
            t.canary.replicas = replicas

    async def promote(self, canary: Canary) -> None:
        t = self._target(canary)
        if t.primary is None:
            raise LookupError(f"{canary.spec.target_ref.name}-primary not created yet")
        t.primary.template = copy.deepcopy(t.canary.template)
        t.primary.rollout_started = self.clock.now()
        t.promotions.append(copy.deepcopy(t.canary.template))

    async def revert(self, canary: Canary) -> None:
        t = self._target(canary)
        t.canary.replicas = (t.primary.replicas if t.primary else 0) or t.canary.replicas or 1
        t.canary.rollout_started = self.clock.now()
        t.reverted = True

    def _readiness(self, canary: Canary, d: Deployment, name: str) -> Readiness:
        if d.override is not None:
            return d.override
        elapsed = self.clock.now() - d.rollout_started
        if d.broken:
            if elapsed > canary.spec.progress_deadline_seconds:
                return Readiness(False, False, f"deployment {name} exceeded its progress deadline")
            return Readiness(
                False, True, f"waiting for rollout to finish: 0 of {d.replicas} replicas available"
            )
        if elapsed < self.startup_s:
            return Readiness(False, True, f"waiting for rollout to finish: {name} pods starting")
        return Readiness(True)
