"""The Canary spec: Flagger's `flagger.app/v1beta1` shape, with canary-stream's additions in
clearly named extra fields (`analysis.judge`, `analysis.metrics[].stream`, `analysis.metrics[].noData`,
and the streaming `MetricTemplate` kind).

Attributes are snake_case (`canary.spec.analysis.step_weight`), YAML keys camelCase as in Flagger.
Models are frozen. Pydantic checks types, ranges, enums and durations; cross-field rules (Flagger's
oneOf, ascending stepWeights, metric sources, ...) live in `spec.checks` and run in `spec.load`, which
is the entry point that reports every error with its field path."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from canary_stream.spec.duration import parse_duration

GROUPS = ("flagger.app", "canary-stream.dev")
API_VERSIONS = ("flagger.app/v1beta1", "canary-stream.dev/v1beta1")
# The apiVersion canary-stream writes for its own objects (streaming MetricTemplate).
OWN_API_VERSION = "canary-stream.dev/v1beta1"

BUILTIN_METRICS = ("request-success-rate", "request-duration")
WEBHOOK_TYPES = (
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
)
# canary-stream allows analysis and metric intervals down to 1 s (Flagger raises anything below
# 10 s to 10 s): with streamed telemetry a short dwell still sees every request.
MIN_INTERVAL_S = 1.0


class Strategy(StrEnum):
    """Deployment strategy, chosen from the analysis fields exactly as Flagger does."""

    CANARY = "canary"
    AB_TESTING = "ab-testing"
    BLUE_GREEN = "blue-green"


def _valid_duration(text: str) -> str:
    seconds = parse_duration(text)  # ValueError -> a field error at this path
    if seconds < 0:
        raise ValueError(f"duration {text!r} is negative")
    return text


# A Go duration kept as written ("1m30s"); unparsable or negative values are rejected.
Duration = Annotated[str, AfterValidator(_valid_duration)]


def _int_or_string(value: Any) -> int | str:
    # Kubernetes IntOrString; a plain validator so errors carry no union-member tags in the path.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    return value


IntOrString = Annotated[int | str, PlainValidator(_int_or_string)]

Percent = Annotated[int, Field(ge=0, le=100)]
StepPercent = Annotated[int, Field(ge=1, le=100)]


def _seconds_at_least_min(text: str) -> float:
    return max(MIN_INTERVAL_S, parse_duration(text))


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class ObjectMeta(BaseModel):
    """Kubernetes metadata; only name/namespace/labels/annotations are used, the rest is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    namespace: str = "default"
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# object references (§1.2)


class TargetRef(_Model):
    """`spec.targetRef`: the workload under test."""

    api_version: str = Field("apps/v1", alias="apiVersion")
    kind: Literal["Deployment", "DaemonSet", "Service"] = "Deployment"
    name: str


class ScalerReplicas(_Model):
    """`autoscalerRef.primaryScalerReplicas`: replica bounds for the primary's scaler."""

    min_replicas: int | None = Field(None, alias="minReplicas", ge=1)
    max_replicas: int | None = Field(None, alias="maxReplicas", ge=1)


class AutoscalerRef(_Model):
    """`spec.autoscalerRef`: an HPA (autoscaling/v2) or KEDA ScaledObject, cloned for the primary."""

    api_version: str = Field(alias="apiVersion")
    kind: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    name: str
    primary_scaler_queries: dict[str, str] = Field(default_factory=dict, alias="primaryScalerQueries")
    primary_scaler_replicas: ScalerReplicas | None = Field(None, alias="primaryScalerReplicas")


class IngressRef(_Model):
    """`spec.ingressRef`: NGINX/Skipper Ingress to clone."""

    api_version: str = Field(alias="apiVersion")
    kind: Literal["Ingress"]
    name: str


class RouteRef(_Model):
    """`spec.routeRef`: APISIX route to clone."""

    api_version: str = Field(alias="apiVersion")
    kind: Literal["ApisixRoute"]
    name: str


class UpstreamRef(_Model):
    """`spec.upstreamRef`: Gloo Upstream whose config is copied (may be in another namespace)."""

    api_version: str = Field(alias="apiVersion")
    kind: Literal["Upstream"]
    name: str
    namespace: str | None = None


# ---------------------------------------------------------------------------------------------
# service (§1.3). Nested Istio / Gateway API objects stay plain mappings: the routers read them.


class CustomMetadata(_Model):
    """`service.apex|primary|canary`: labels and annotations for the generated objects."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class UnmanagedMetadata(_Model):
    """`service.unmanagedMetadata`: label/annotation keys canary-stream must leave alone."""

    labels: list[str] = Field(default_factory=list)
    annotations: list[str] = Field(default_factory=list)


class Rewrite(_Model):
    """`service.rewrite`: URI/authority rewrite (`type` is Gateway API only)."""

    uri: str | None = None
    authority: str | None = None
    type: str | None = None


class Service(_Model):
    """`spec.service`: how the apex/primary/canary Services and mesh objects are generated."""

    name: str | None = None
    port: int = Field(ge=1, le=65535)
    port_name: str | None = Field(None, alias="portName")
    target_port: IntOrString | None = Field(None, alias="targetPort")
    app_protocol: str | None = Field(None, alias="appProtocol")
    traffic_distribution: Literal["PreferClose", "PreferSameZone", "PreferSameNode"] | None = Field(
        None, alias="trafficDistribution"
    )
    port_discovery: bool = Field(False, alias="portDiscovery")
    headless: bool = False
    timeout: Duration | None = None
    backend_timeout: Duration | None = Field(None, alias="backendTimeout")
    gateways: list[str] = Field(default_factory=list)
    gateway_refs: list[dict[str, Any]] = Field(default_factory=list, alias="gatewayRefs")
    hosts: list[str] = Field(default_factory=list)
    delegation: bool = False
    traffic_policy: dict[str, Any] | None = Field(None, alias="trafficPolicy")
    match: list[dict[str, Any]] = Field(default_factory=list)
    rewrite: Rewrite | None = None
    retries: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    mirror: list[dict[str, Any]] = Field(default_factory=list)  # Gateway API static mirrors
    cors_policy: dict[str, Any] | None = Field(None, alias="corsPolicy")
    mesh_name: str | None = Field(None, alias="meshName")
    backends: list[str] = Field(default_factory=list)
    apex: CustomMetadata | None = None
    primary: CustomMetadata | None = None
    canary: CustomMetadata | None = None
    unmanaged_metadata: UnmanagedMetadata | None = Field(None, alias="unmanagedMetadata")


# ---------------------------------------------------------------------------------------------
# metrics (§1.5) and canary-stream's streaming metrics


class ThresholdRange(_Model):
    """Pass when `min <= value <= max` (both optional, bounds inclusive)."""

    min: float | None = None
    max: float | None = None


class MetricRef(_Model):
    """`metrics[].templateRef`: a MetricTemplate (namespace defaults to the canary's)."""

    name: str
    namespace: str | None = None


StreamKind = Literal["status-rate", "latency-quantile", "flag-rate", "exceedance-rate"]
STREAM_KINDS: tuple[str, ...] = ("status-rate", "latency-quantile", "flag-rate", "exceedance-rate")


class StreamMetric(_Model):
    """canary-stream addition: a metric computed on the stream (the counterpart of a MetricTemplate
    query). `kind` selects the figure; values are percent for rates, milliseconds for quantiles.
    - status-rate: % of requests whose status is in `codes` (ints like 404 or classes like "5xx", "0")
    - latency-quantile: the `quantile` (0-1) of latency in ms
    - flag-rate: % of requests carrying any of `flags` (Envoy response flags: UF, URX, UH, UT, DC ...)
    - exceedance-rate: % of requests slower than `thresholdMs`
    `version` picks whose figure is checked (default canary)."""

    kind: StreamKind
    codes: list[IntOrString] = Field(default_factory=list)
    quantile: float | None = Field(None, gt=0, lt=1)
    flags: list[str] = Field(default_factory=list)
    threshold_ms: float | None = Field(None, alias="thresholdMs", gt=0)
    version: Literal["canary", "primary"] = "canary"


class Metric(_Model):
    """`analysis.metrics[]`. `interval` is the window (default 1m)."""

    name: str
    interval: Duration = "1m"
    threshold_range: ThresholdRange | None = Field(None, alias="thresholdRange")
    threshold: float | None = None  # deprecated Flagger field
    template_ref: MetricRef | None = Field(None, alias="templateRef")
    template_variables: dict[str, str] = Field(default_factory=dict, alias="templateVariables")
    query: str | None = None
    # canary-stream addition: a streaming metric declared inline
    stream: StreamMetric | None = None
    # canary-stream addition: what a window without data means. "insufficient" (default) neither
    # passes nor counts as a failed check; "fail" is Flagger's behaviour (failedChecks++).
    no_data: Literal["insufficient", "fail"] = Field("insufficient", alias="noData")

    @property
    def interval_seconds(self) -> float:
        """The window in seconds (at least 1 s, the core's bucket)."""
        return _seconds_at_least_min(self.interval)


# ---------------------------------------------------------------------------------------------
# webhooks (§1.6), alerts (§1.7), session affinity (§1.8)

WebhookType = Literal[
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
]


class Webhook(_Model):
    """`analysis.webhooks[]`. An empty `type` means `rollout`, as in Flagger."""

    type: WebhookType = "rollout"
    name: str
    url: str
    timeout: Duration = "10s"
    metadata: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(0, ge=0)
    disable_tls: bool = Field(False, alias="disableTLS")
    mute_alert: bool = Field(False, alias="muteAlert")

    @field_validator("type", mode="before")
    @classmethod
    def _empty_type_is_rollout(cls, value: Any) -> Any:
        return "rollout" if value in ("", None) else value

    @property
    def timeout_seconds(self) -> float:
        """Per-attempt timeout in seconds (0 falls back to Flagger's 10 s)."""
        return parse_duration(self.timeout) or 10.0


class ProviderRef(_Model):
    """`alerts[].providerRef`: an AlertProvider."""

    name: str
    namespace: str | None = None


class Alert(_Model):
    """`analysis.alerts[]`: per-canary alert routing."""

    name: str
    severity: Literal["", "info", "warn", "error"] = "info"
    provider_ref: ProviderRef = Field(alias="providerRef")


class SessionAffinity(_Model):
    """`analysis.sessionAffinity`: cookie stickiness during a weighted canary."""

    cookie_name: str = Field(alias="cookieName")
    primary_cookie_name: str | None = Field(None, alias="primaryCookieName")
    max_age: int = Field(86400, alias="maxAge", ge=0)
    domain: str | None = None
    http_only: bool | None = Field(None, alias="httpOnly")
    partitioned: bool | None = None
    path: str | None = None
    same_site: Literal["Strict", "Lax", "None"] | None = Field(None, alias="sameSite")
    secure: bool | None = None


# ---------------------------------------------------------------------------------------------
# analysis (§1.4) and the judge


class Judge(_Model):
    """canary-stream addition `analysis.judge`: the sequential canary-vs-primary tests.
    - falseRollbackRate (alpha): overall probability of rolling back a canary that is not worse,
      under continuous monitoring; split over the metrics (Bonferroni).
    - promotionErrorRate (beta): probability of promoting a canary that is `noHarmRatio` times worse.
    - noHarmRatio (r_max): the harm the no-harm (promotion) test rules out, as a ratio of rates.
    - sloErrorRate: absolute SLO guard, the acceptable canary error rate (fraction, 0-1). Unset:
      derived from the request-success-rate `thresholdRange.min` (see
      `Analysis.effective_slo_error_rate`), else no guard.
    - minRequests: requests per version before a step may pass.
    - latencyQuantile: the primary's quantile fixed as the latency threshold before each step.
    - srm: the sample-ratio check (observed canary share vs routed weight; pauses on mismatch).
    - enabled: off = only Flagger-style threshold checks decide.
    - lowTrafficPromotion: opt-in, see the field."""

    false_rollback_rate: float = Field(0.01, alias="falseRollbackRate", gt=0, lt=1)
    promotion_error_rate: float = Field(0.1, alias="promotionErrorRate", gt=0, lt=1)
    no_harm_ratio: float = Field(2.0, alias="noHarmRatio", gt=1)
    slo_error_rate: float | None = Field(None, alias="sloErrorRate", gt=0, lt=1)
    min_requests: int = Field(100, alias="minRequests", ge=0)
    latency_quantile: float = Field(0.99, alias="latencyQuantile", gt=0, lt=1)
    srm: bool = True
    enabled: bool = True
    # Opt-in: after this many dwells in which the traffic was too low for the judge to show no harm,
    # pass the step on Flagger's metric checks alone (no harm test may be past half its boundary).
    low_traffic_promotion: int | None = Field(None, alias="lowTrafficPromotion", ge=1)


class Analysis(_Model):
    """`spec.analysis` (Flagger's deprecated `canaryAnalysis` is read into it when it is absent).

    `interval` is the minimum dwell per step. Flagger raises intervals below 10 s to 10 s;
    canary-stream allows down to 1 s (streaming makes a short dwell meaningful), and rejects an
    unparsable interval instead of Flagger's silent 60 s."""

    interval: Duration = "60s"
    threshold: int = Field(1, ge=0)
    max_weight: StepPercent | None = Field(None, alias="maxWeight")
    step_weight: StepPercent | None = Field(None, alias="stepWeight")
    step_weights: list[StepPercent] | None = Field(None, alias="stepWeights")
    step_weight_promotion: Percent | None = Field(None, alias="stepWeightPromotion")
    iterations: int | None = Field(None, ge=1)
    mirror: bool = False
    mirror_weight: Percent | None = Field(None, alias="mirrorWeight")
    match: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)
    session_affinity: SessionAffinity | None = Field(None, alias="sessionAffinity")
    primary_ready_threshold: Percent = Field(100, alias="primaryReadyThreshold")
    canary_ready_threshold: Percent = Field(100, alias="canaryReadyThreshold")
    judge: Judge = Field(default_factory=Judge)

    @property
    def interval_seconds(self) -> float:
        """Minimum dwell per step in seconds (at least 1 s; see the class doc)."""
        return _seconds_at_least_min(self.interval)

    @property
    def max_failed_checks(self) -> int:
        """Failed checks that trigger a rollback (Flagger: threshold 0 means 1)."""
        return max(1, self.threshold)

    def webhooks_of(self, hook_type: str) -> list[Webhook]:
        """The webhooks of one type, in spec order."""
        return [w for w in self.webhooks if w.type == hook_type]

    def effective_slo_error_rate(self) -> float | None:
        """The SLO guard's acceptable error rate: `judge.sloErrorRate`, else 1 - min/100 from the
        request-success-rate metric's `thresholdRange.min` (99 -> 0.01), else None (no guard)."""
        if self.judge.slo_error_rate is not None:
            return self.judge.slo_error_rate
        for m in self.metrics:
            tr = m.threshold_range
            if m.name == "request-success-rate" and m.stream is None and tr and tr.min is not None:
                rate = 1.0 - tr.min / 100.0
                return rate if 0.0 < rate < 1.0 else None
        return None


# ---------------------------------------------------------------------------------------------
# the Canary


class CanarySpec(_Model):
    """`spec` of a Canary (§1.2)."""

    provider: (
        Literal[
            "apisix",
            "appmesh",
            "appmesh:v1beta2",
            "contour",
            "gatewayapi:v1",
            "gatewayapi:v1beta1",
            "gloo",
            "istio",
            "knative",
            "kubernetes",
            "kuma",
            "linkerd",
            "nginx",
            "osm",
            "skipper",
            "smi:v1alpha1",
            "smi:v1alpha2",
            "smi:v1alpha3",
            "traefik",
        ]
        | None
    ) = None
    metrics_server: str | None = Field(None, alias="metricsServer")
    target_ref: TargetRef = Field(alias="targetRef")
    autoscaler_ref: AutoscalerRef | None = Field(None, alias="autoscalerRef")
    ingress_ref: IngressRef | None = Field(None, alias="ingressRef")
    route_ref: RouteRef | None = Field(None, alias="routeRef")
    upstream_ref: UpstreamRef | None = Field(None, alias="upstreamRef")
    # Flagger's CRD leaves `service` optional because Knative targets need none; a Canary without
    # it gets port 80 here (checks.py rejects a missing service for other targets).
    service: Service = Field(default_factory=lambda: Service(port=80))
    analysis: Analysis | None = None
    progress_deadline_seconds: int = Field(600, alias="progressDeadlineSeconds", ge=1)
    skip_analysis: bool = Field(False, alias="skipAnalysis")
    suspend: bool = False
    revert_on_deletion: bool = Field(False, alias="revertOnDeletion")

    @model_validator(mode="before")
    @classmethod
    def _read_deprecated_canary_analysis(cls, data: Any) -> Any:
        # Flagger reads `canaryAnalysis` only when `analysis` is absent (GetAnalysis).
        if isinstance(data, dict) and "canaryAnalysis" in data:
            data = dict(data)
            old = data.pop("canaryAnalysis")
            if data.get("analysis") is None:
                data["analysis"] = old
        return data

    @property
    def analysis_skipped(self) -> bool:
        """Promote without analysis: `skipAnalysis`, or no analysis block at all (§1.16)."""
        return self.skip_analysis or self.analysis is None


class _Document(BaseModel):
    """What every top-level object shares: a known apiVersion, metadata, name and namespace."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    api_version: str = Field(alias="apiVersion")
    metadata: ObjectMeta

    @field_validator("api_version")
    @classmethod
    def _known_api_version(cls, value: str) -> str:
        if value not in API_VERSIONS:
            raise ValueError(f"unsupported apiVersion {value!r}; expected one of {', '.join(API_VERSIONS)}")
        return value

    @property
    def name(self) -> str:
        """metadata.name"""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """metadata.namespace"""
        return self.metadata.namespace


class Canary(_Document):
    """A Canary object (`flagger.app/v1beta1` or `canary-stream.dev/v1beta1`)."""

    kind: Literal["Canary"] = "Canary"
    spec: CanarySpec
    status: dict[str, Any] | None = None  # ignored; allowed so `kubectl get -o yaml` output loads

    def strategy(self) -> Strategy:
        """Flagger's choice (`DeploymentStrategy` plus the kubernetes-provider override):
        match + iterations -> A/B testing; iterations -> blue/green; anything else -> canary.
        With `provider: kubernetes` match is dropped and iterations default to 10 (blue/green)."""
        a = self.spec.analysis
        if a is None:
            return Strategy.CANARY
        if self.spec.provider == "kubernetes":
            return Strategy.BLUE_GREEN
        if a.match and a.iterations:
            return Strategy.AB_TESTING
        if a.iterations:
            return Strategy.BLUE_GREEN
        return Strategy.CANARY


# ---------------------------------------------------------------------------------------------
# MetricTemplate: Flagger's (provider + query) and canary-stream's streaming one (spec.stream)


class SecretRef(_Model):
    """A Secret holding provider credentials."""

    name: str


class TemplateProvider(_Model):
    """Flagger `MetricTemplate.spec.provider` (kept so Flagger files load; not evaluated here)."""

    type: Literal[
        "prometheus",
        "influxdb",
        "datadog",
        "externalmetrics",
        "stackdriver",
        "cloudwatch",
        "newrelic",
        "graphite",
        "dynatrace",
        "keptn",
        "splunk",
    ]
    address: str | None = None
    headers: dict[str, list[str]] = Field(default_factory=dict)
    secret_ref: SecretRef | None = Field(None, alias="secretRef")
    region: str | None = None
    insecure_skip_verify: bool = Field(False, alias="insecureSkipVerify")


class MetricTemplateSpec(_Model):
    """Either `stream` (canary-stream) or Flagger's `provider` + `query`."""

    stream: StreamMetric | None = None
    provider: TemplateProvider | None = None
    query: str | None = None


class MetricTemplate(_Document):
    """A MetricTemplate that `metrics[].templateRef` can name. The streaming kind is
    `apiVersion: canary-stream.dev/v1beta1, kind: MetricTemplate, spec: {stream: {...}}`."""

    kind: Literal["MetricTemplate"] = "MetricTemplate"
    spec: MetricTemplateSpec

    @property
    def is_streaming(self) -> bool:
        """True when the template is evaluated on the stream (has `spec.stream`)."""
        return self.spec.stream is not None
