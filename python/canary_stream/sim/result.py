"""What one simulated rollout reports (ours and the Flagger baseline alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimResult:
    """Outcome and timeline of one rollout. Times in `weights` and `verdicts` are seconds since the
    simulation started; `decision_s` and `first_fault_s` count from the canary's first request."""

    phase: str
    decision_s: float | None = None  # first canary request -> Succeeded / Failed
    first_fault_s: float | None = None  # first canary request -> first request served with the fault
    weights: list[tuple[float, int]] = field(default_factory=list)  # (t, canary weight) at each change
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    simulated_s: float = 0.0
    reason: str = ""  # why the rollout ended (the deciding verdict's first reason, or Flagger's halt)

    @property
    def rolled_back(self) -> bool:
        return self.phase == "Failed"

    @property
    def rollback_after_fault_s(self) -> float | None:
        """First faulty request -> rollback (None unless both happened)."""
        if not self.rolled_back or self.decision_s is None or self.first_fault_s is None:
            return None
        return self.decision_s - self.first_fault_s

    def to_dict(self) -> dict[str, Any]:
        """The `simulate --json` object."""
        return {
            "phase": self.phase,
            "decision_s": _round(self.decision_s),
            "first_fault_s": _round(self.first_fault_s),
            "rollback_after_fault_s": _round(self.rollback_after_fault_s),
            "weights": [[round(t, 3), w] for t, w in self.weights],
            "verdicts": self.verdicts,
            "reason": self.reason,
            "lines": self.lines,
            "simulated_s": round(self.simulated_s, 3),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
