"""Response and request bodies of the verdict API (pydantic; they make the OpenAPI schema).

Every float is finite or null: the views map NaN and infinities to null before building these
(Argo's Go client rejects non-standard JSON). Success rates are percentages (0-100), latencies
milliseconds, times seconds since the epoch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DecisionName = Literal["continue", "pass", "fail", "inconclusive"]


class ErrorBody(BaseModel):
    """Every error answer: a short machine-readable ``error`` and a human ``detail``."""

    error: str
    detail: str = ""


class TestEvidence(BaseModel):
    """One statistical test or metric check of a verdict."""

    name: str
    decision: DecisionName
    statistic: float | None = None
    boundary: float | None = None
    alpha: float | None = None
    detail: str = ""


class VersionFigures(BaseModel):
    """A version's figures over the window the verdict looked at (sample size = ``requests``)."""

    version: str
    requests: int
    failures: int
    success_rate: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    slow: int | None = None


class VerdictBody(BaseModel):
    """The judge's latest answer for a canary."""

    decision: DecisionName
    at: float
    reasons: list[str]
    figures_window_s: float | None = None
    versions: list[VersionFigures]
    tests: list[TestEvidence]
    canary_share: float | None = None
    expected_share: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class LiveVersion(BaseModel):
    """A version's figures from the aggregator over a window."""

    version: str
    start_ms: int
    end_ms: int
    requests: int
    successes: int
    failures: int
    rps: float | None = None
    success_rate: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    mean_ms: float | None = None
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int


class WindowFigures(BaseModel):
    """Per-version figures over one analysis window (a metric's ``interval``)."""

    window_s: float
    metrics: list[str]
    versions: list[LiveVersion]


class LiveMetrics(BaseModel):
    """Per-version figures over the window the caller asked for."""

    namespace: str
    name: str
    target: str
    window_s: float
    versions: list[LiveVersion]


class CanarySummary(BaseModel):
    """One canary in a list."""

    namespace: str
    name: str
    target: str
    strategy: str
    phase: str
    canary_weight: int
    primary_weight: int
    failed_checks: int
    iterations: int
    paused: bool
    decision: DecisionName | None = None


class CanaryList(BaseModel):
    """Every canary this process knows."""

    items: list[CanarySummary]


class Transition(BaseModel):
    """A phase change."""

    at: float
    phase: str


class WeightChange(BaseModel):
    """A canary weight written to the router."""

    at: float
    canary_weight: int


class CanaryDetail(CanarySummary):
    """A canary with its status, history, verdict and per-window figures."""

    status: dict[str, Any]
    transitions: list[Transition]
    weights: list[WeightChange]
    verdict: VerdictBody | None = None
    windows: list[WindowFigures]


class SourceBody(BaseModel):
    """Counters of one telemetry source."""

    name: str
    events: int
    lines: int
    bytes: int
    batches: int
    lag: int | None = None
    waits: int
    malformed: dict[str, int]
    events_per_s: float | None = None
    bytes_per_s: float | None = None


class AggregatorBody(BaseModel):
    """Totals of the aggregator all sources feed."""

    bytes: int
    lines: int
    accepted: int
    malformed: dict[str, int]
    skipped: dict[str, int]
    watermark_ms: int | None = None


class SourcesBody(BaseModel):
    """Ingest health."""

    sources: list[SourceBody]
    aggregator: AggregatorBody | None = None


class Health(BaseModel):
    """/healthz and /readyz: ``ok`` and the checks that decided it."""

    ok: bool
    checks: dict[str, bool] = Field(default_factory=dict)
    detail: str = ""


class WeightRequest(BaseModel):
    """Body of ``set-weight``."""

    model_config = ConfigDict(extra="forbid")

    weight: int = Field(ge=0, le=100)


class CommandAccepted(BaseModel):
    """A manual command was handed to the controller (it acts on it asynchronously)."""

    namespace: str
    name: str
    command: str
    weight: int | None = None


class FlaggerPayload(BaseModel):
    """Flagger's ``CanaryWebhookPayload``. ``metadata`` may name the canary-stream canary to
    consult (``canary``: ``name`` or ``namespace/name``; ``namespace``) and the hook type
    (``hook``, or ``type`` when it is a hook type)."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str
    phase: str = ""
    checksum: str = ""
    metadata: dict[str, str] | None = None


class GateAnswer(BaseModel):
    """What the gate decided. Flagger acts on the status code only (<= 202 passes); the body
    becomes the message in its events and logs."""

    allowed: bool
    hook: str
    namespace: str
    name: str
    decision: DecisionName | None = None
    phase: str | None = None
    reason: str


class ArgoEvidence(BaseModel):
    """One test in Argo's answer."""

    decision: DecisionName
    statistic: float | None = None
    boundary: float | None = None


class ArgoAnswer(BaseModel):
    """The ``web`` metric provider's result (always HTTP 200 for a decision). Use ``jsonPath:
    "{$}"`` and conditions such as ``result.verdict == "fail"``."""

    verdict: DecisionName
    reason: str
    reasons: list[str]
    namespace: str
    name: str
    phase: str
    canaryWeight: int  # Kubernetes-style names, as Argo users read them
    successRate: float | None = None
    primarySuccessRate: float | None = None
    canaryRequests: int = 0
    primaryRequests: int = 0
    canaryP99Ms: float | None = None
    primaryP99Ms: float | None = None
    at: float | None = None
    canaryHash: str | None = None
    evidence: dict[str, ArgoEvidence] = Field(default_factory=dict)
