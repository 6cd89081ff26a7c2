"""What the judge says about a canary at one instant."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    """`continue`: keep going, no decision yet; `pass`: this step has enough evidence of no harm;
    `fail`: roll back now; `inconclusive`: the comparison is invalid or the data cannot decide
    (no data, sample-ratio mismatch) — never a pass, never a failed check."""

    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class TestResult:
    """One statistical test or metric check, with its evidence."""

    name: str  # e.g. "error-rate-harm", "latency-harm@p99", "slo-guard", "srm", "request-success-rate"
    decision: Decision
    statistic: float | None = None  # e-value, log-LR, chi-square ... (finite or None, never NaN)
    boundary: float | None = None  # where the statistic decides
    alpha: float | None = None  # the share of the false-rollback rate this test spends
    detail: str = ""  # one human sentence: why


@dataclass(frozen=True)
class VersionFigures:
    """Per-version figures over the window the verdict looked at: the first metric's interval,
    else the current step (``Verdict.extra["figures_window_s"]``); ``slow`` counts the step."""

    version: str
    requests: int
    failures: int
    success_rate: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    slow: int | None = None  # requests above the latency threshold fixed for this step


@dataclass(frozen=True)
class Verdict:
    """The judge's answer at `at` (seconds since the epoch, event time)."""

    decision: Decision
    at: float
    reasons: tuple[str, ...]
    versions: tuple[VersionFigures, ...] = ()
    tests: tuple[TestResult, ...] = ()
    canary_share: float | None = None  # observed canary share of requests over the step
    expected_share: float | None = None  # routed weight / 100
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decision"] = self.decision.value
        d["tests"] = [{**asdict(t), "decision": t.decision.value} for t in self.tests]
        return d
