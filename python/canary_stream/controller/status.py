"""`status` of a Canary as Flagger writes it (phase, weights, counters, hashes, the `Promoted` condition)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from canary_stream.controller.phases import Phase

PROMOTED = "Promoted"


def rfc3339(t: float) -> str:
    """Kubernetes timestamp (seconds precision, `Z`)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _promoted(phase: Phase, kind: str) -> tuple[str, str]:
    """(status, message) of the `Promoted` condition for `phase`, as in Flagger's MakeStatusConditions."""
    table = {
        Phase.INITIALIZING: ("Unknown", "New deployment detected, starting initialization."),
        Phase.INITIALIZED: ("True", "Deployment initialization completed."),
        Phase.WAITING: ("Unknown", "Waiting for approval."),
        Phase.WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
        Phase.PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
        Phase.PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
        Phase.FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
        Phase.SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
        Phase.FAILED: ("False", f"Canary analysis failed, {kind} scaled to zero."),
        Phase.TERMINATING: ("Unknown", "Canary is being deleted, reverting."),
    }
    return table[phase]


@dataclass(frozen=True)
class Condition:
    """`status.conditions[]` entry; Flagger keeps exactly one, of type `Promoted`."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_update_time: str
    last_transition_time: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastUpdateTime": self.last_update_time,
            "lastTransitionTime": self.last_transition_time,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Condition:
        return cls(
            type=d["type"],
            status=d["status"],
            reason=d.get("reason", ""),
            message=d.get("message", ""),
            last_update_time=d.get("lastUpdateTime", ""),
            last_transition_time=d.get("lastTransitionTime", ""),
        )


@dataclass(frozen=True)
class CanaryStatus:
    """The Canary's `status`. `last_applied_spec` is the revision being tracked (the target's hash);
    `last_promoted_spec` the one the primary runs. `to_dict` gives the CR's camelCase shape."""

    phase: Phase | None = None
    canary_weight: int = 0
    failed_checks: int = 0
    iterations: int = 0
    last_applied_spec: str = ""
    last_promoted_spec: str = ""
    tracked_configs: dict[str, str] = field(default_factory=dict)
    last_transition_time: str = ""
    conditions: tuple[Condition, ...] = ()

    def with_phase(self, phase: Phase, now: float, kind: str = "Deployment", **changes: Any) -> CanaryStatus:
        """A copy in `phase` with the `Promoted` condition updated (its transition time moves only
        when its status changes) and `lastTransitionTime` bumped."""
        status, message = _promoted(phase, kind)
        ts = rfc3339(now)
        old = self.promoted()
        moved = old is None or old.status != status
        cond = Condition(
            type=PROMOTED,
            status=status,
            reason=phase.value,
            message=message,
            last_update_time=ts,
            last_transition_time=ts if moved or old is None else old.last_transition_time,
        )
        return replace(self, phase=phase, last_transition_time=ts, conditions=(cond,), **changes)

    def touch(self, now: float, **changes: Any) -> CanaryStatus:
        """A copy with `changes` and `lastTransitionTime` bumped (every status write does)."""
        return replace(self, last_transition_time=rfc3339(now), **changes)

    def promoted(self) -> Condition | None:
        """The `Promoted` condition, if set."""
        return next((c for c in self.conditions if c.type == PROMOTED), None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "phase": self.phase.value if self.phase else "",
            "canaryWeight": self.canary_weight,
            "failedChecks": self.failed_checks,
            "iterations": self.iterations,
            "lastAppliedSpec": self.last_applied_spec,
            "lastPromotedSpec": self.last_promoted_spec,
            "lastTransitionTime": self.last_transition_time,
            "conditions": [c.to_dict() for c in self.conditions],
        }
        if self.tracked_configs:
            d["trackedConfigs"] = dict(self.tracked_configs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CanaryStatus:
        """Read a CR status back (unknown keys ignored)."""
        phase = d.get("phase") or None
        return cls(
            phase=Phase(phase) if phase else None,
            canary_weight=int(d.get("canaryWeight", 0)),
            failed_checks=int(d.get("failedChecks", 0)),
            iterations=int(d.get("iterations", 0)),
            last_applied_spec=d.get("lastAppliedSpec", ""),
            last_promoted_spec=d.get("lastPromotedSpec", ""),
            tracked_configs=dict(d.get("trackedConfigs", {})),
            last_transition_time=d.get("lastTransitionTime", ""),
            conditions=tuple(Condition.from_dict(c) for c in d.get("conditions", [])),
        )
