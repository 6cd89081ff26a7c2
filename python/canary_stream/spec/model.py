"""The Canary spec: Flagger's `flagger.app/v1beta1` shape, with canary-stream's additions in
clearly named extra fields. SKELETON written by the lead — the spec helper completes it (every
Flagger field, validation with field paths); attribute names below are the contract others use."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GROUPS = ("flagger.app", "canary-stream.dev")


class Strategy(StrEnum):
    CANARY = "canary"
    AB_TESTING = "ab-testing"
    BLUE_GREEN = "blue-green"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class TargetRef(_Model):
    api_version: str = Field("apps/v1", alias="apiVersion")
    kind: str = "Deployment"
    name: str


class ThresholdRange(_Model):
    min: float | None = None
    max: float | None = None


class MetricRef(_Model):
    name: str
    namespace: str | None = None


class StreamMetric(_Model):
    """canary-stream addition: a metric computed on the stream (the counterpart of a MetricTemplate
    query). `kind` selects the figure; values are percent for rates, milliseconds for quantiles.
    - status-rate: % of requests whose status is in `codes` (ints like 404 or classes like "5xx", "0")
    - latency-quantile: the `quantile` (0-1) of latency in ms
    - flag-rate: % of requests carrying any of `flags` (Envoy response flags: UF, URX, UH, UT, DC ...)
    - exceedance-rate: % of requests slower than `thresholdMs`
    `version` picks whose figure is checked (default canary)."""

    kind: str
    codes: list[int | str] = Field(default_factory=list)
    quantile: float | None = None
    flags: list[str] = Field(default_factory=list)
    threshold_ms: float | None = Field(None, alias="thresholdMs")
    version: str = "canary"


class Metric(_Model):
    """`analysis.metrics[]`. `interval` is the window (default 1m)."""

    name: str
    interval: str = "1m"
    threshold_range: ThresholdRange | None = Field(None, alias="thresholdRange")
    threshold: float | None = None  # deprecated Flagger field
    template_ref: MetricRef | None = Field(None, alias="templateRef")
    template_variables: dict[str, str] = Field(default_factory=dict, alias="templateVariables")
    query: str | None = None
    # canary-stream addition: a streaming metric declared inline
    stream: StreamMetric | None = None


class Webhook(_Model):
    type: str = "rollout"
    name: str
    url: str
    timeout: str = "10s"
    metadata: dict[str, str] = Field(default_factory=dict)
    retries: int = 0
    disable_tls: bool = Field(False, alias="disableTLS")
    mute_alert: bool = Field(False, alias="muteAlert")


class Judge(_Model):
    """canary-stream addition `analysis.judge`: the sequential canary-vs-primary tests."""

    false_rollback_rate: float = Field(0.01, alias="falseRollbackRate")
    enabled: bool = True


class Analysis(_Model):
    interval: str = "60s"
    threshold: int = 1
    max_weight: int | None = Field(None, alias="maxWeight")
    step_weight: int | None = Field(None, alias="stepWeight")
    step_weights: list[int] | None = Field(None, alias="stepWeights")
    step_weight_promotion: int | None = Field(None, alias="stepWeightPromotion")
    iterations: int | None = None
    mirror: bool = False
    mirror_weight: int | None = Field(None, alias="mirrorWeight")
    match: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    primary_ready_threshold: int = Field(100, alias="primaryReadyThreshold")
    canary_ready_threshold: int = Field(100, alias="canaryReadyThreshold")
    judge: Judge = Field(default_factory=Judge)


class Service(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)
    name: str | None = None
    port: int


class CanarySpec(_Model):
    provider: str | None = None
    target_ref: TargetRef = Field(alias="targetRef")
    service: Service
    analysis: Analysis | None = None
    progress_deadline_seconds: int = Field(600, alias="progressDeadlineSeconds")
    skip_analysis: bool = Field(False, alias="skipAnalysis")
    suspend: bool = False
    revert_on_deletion: bool = Field(False, alias="revertOnDeletion")


class Canary(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    api_version: str = Field(alias="apiVersion")
    kind: str = "Canary"
    metadata: ObjectMeta
    spec: CanarySpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace
