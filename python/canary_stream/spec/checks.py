"""Cross-field rules of a Canary (and MetricTemplate) document that types alone cannot express.

They read the raw YAML mapping rather than the validated model, so they run even when other
fields fail type validation and every problem is reported in one pass, with the path the user
wrote (`spec.canaryAnalysis...` when the deprecated name is used). Values of the wrong type are
skipped here: pydantic reports those."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from canary_stream.spec.duration import parse_duration
from canary_stream.spec.errors import FieldError
from canary_stream.spec.model import BUILTIN_METRICS, MIN_INTERVAL_S, STREAM_KINDS

STEP_FIELDS = ("iterations", "stepWeight", "stepWeights")
METRIC_SOURCES = ("templateRef", "query", "stream")
_STATUS_CLASS = re.compile(r"^[1-5]xx$")


def _map(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    n = _num(value)
    return int(n) if n is not None and n == int(n) else None


def analysis_key(spec: Mapping[str, Any]) -> str | None:
    """Which key holds the analysis as Flagger reads it: `analysis`, else `canaryAnalysis`."""
    if spec.get("analysis") is not None:
        return "analysis"
    if spec.get("canaryAnalysis") is not None:
        return "canaryAnalysis"
    return None


class _Collector:
    """Gathers errors and warnings with their paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.warnings: list[FieldError] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(FieldError(path, message))


def canary_rules(doc: Mapping[str, Any]) -> tuple[list[FieldError], list[FieldError]]:
    """(errors, warnings) from the cross-field rules of a Canary document."""
    out = _Collector()
    spec = _map(doc.get("spec"))
    if spec is None:
        return out.errors, out.warnings
    if spec.get("service") is None and not _is_knative(spec):
        out.error("spec.service", "required (only Knative targets go without)")
    if spec.get("provider") == "nginx" and not (_map(spec.get("ingressRef")) or {}).get("name"):
        out.error("spec.ingressRef", "required with provider nginx (the Ingress to copy as <name>-canary)")
    key = analysis_key(spec)
    if key == "canaryAnalysis":
        out.warn("spec.canaryAnalysis", "deprecated name; read as spec.analysis (Flagger does the same)")
    elif "canaryAnalysis" in spec:
        out.warn("spec.canaryAnalysis", "ignored because spec.analysis is set (as in Flagger)")
    analysis = _map(spec.get(key)) if key else None
    if analysis is not None and key is not None:
        skipped = spec.get("skipAnalysis") is True
        _analysis_rules(analysis, f"spec.{key}", spec.get("provider"), skipped, out)
    return out.errors, out.warnings


def _is_knative(spec: Mapping[str, Any]) -> bool:
    target = _map(spec.get("targetRef")) or {}
    api = target.get("apiVersion")
    return spec.get("provider") == "knative" or (
        isinstance(api, str) and api.startswith("serving.knative.dev/")
    )


def _analysis_rules(a: Mapping[str, Any], base: str, provider: Any, skipped: bool, out: _Collector) -> None:
    _step_rules(a, base, skipped, out)
    iterations = _int(a.get("iterations"))
    match = _list(a.get("match"))
    ab_testing = bool(match) and bool(iterations) and provider != "kubernetes"

    if a.get("mirror") is True and ab_testing:
        out.error(
            f"{base}.mirror",
            "mirroring works with the canary (stepWeight/stepWeights) and blue-green (iterations) "
            "strategies, not with A/B testing (match + iterations)",
        )
    if a.get("mirrorWeight") is not None and a.get("mirror") is not True:
        out.warn(f"{base}.mirrorWeight", "has no effect without mirror: true")
    if match and provider == "kubernetes":
        out.warn(f"{base}.match", "dropped with provider kubernetes (no A/B testing), as in Flagger")
    if match and not iterations:
        out.warn(
            f"{base}.match",
            "without iterations this is a weighted canary, not A/B testing: the weights apply to the "
            "matching requests only (Flagger's Istio router); others stay on the primary",
        )

    interval = a.get("interval")
    if isinstance(interval, str):
        try:
            if 0 <= parse_duration(interval) < MIN_INTERVAL_S:
                out.warn(f"{base}.interval", f"below canary-stream's minimum, {MIN_INTERVAL_S:g}s is used")
        except ValueError:
            pass  # reported by the model

    _session_affinity_rules(_map(a.get("sessionAffinity")), f"{base}.sessionAffinity", out)
    for i, hook in enumerate(_list(a.get("webhooks")) or []):
        if (h := _map(hook)) is not None:
            _webhook_rules(h, f"{base}.webhooks[{i}]", out)
    for i, metric in enumerate(_list(a.get("metrics")) or []):
        if (m := _map(metric)) is not None:
            _metric_rules(m, f"{base}.metrics[{i}]", out)


def _step_rules(a: Mapping[str, Any], base: str, skipped: bool, out: _Collector) -> None:
    # Flagger's CRD: exactly one of iterations / stepWeight / stepWeights (JSON-schema oneOf).
    # interval and threshold, also required there, default to 60s and 1 here.
    present = [k for k in STEP_FIELDS if a.get(k) is not None]
    for extra in present[1:]:
        out.error(
            f"{base}.{extra}",
            f"cannot be combined with {present[0]}: set exactly one of iterations (A/B testing, "
            "blue-green), stepWeight or stepWeights (canary), as Flagger's CRD requires",
        )
    if not present and not skipped:
        out.error(
            base,
            "set one of iterations (A/B testing, blue-green), stepWeight or stepWeights (canary); "
            "without one the rollout never advances",
        )

    steps = _list(a.get("stepWeights"))
    if steps is not None:
        if not steps:
            out.error(f"{base}.stepWeights", "must list at least one weight")
        previous: int | None = None
        for i, raw in enumerate(steps):
            w = _int(raw)
            if w is None:
                continue
            if previous is not None and w <= previous:
                out.error(
                    f"{base}.stepWeights[{i}]",
                    f"weights must increase: {w} follows {previous}",
                )
            previous = w
        if a.get("maxWeight") is not None:
            out.warn(f"{base}.maxWeight", "ignored with stepWeights: the last step is the maximum")


def _session_affinity_rules(sa: Mapping[str, Any] | None, base: str, out: _Collector) -> None:
    if sa is None:
        return
    cookie, primary = sa.get("cookieName"), sa.get("primaryCookieName")
    if isinstance(cookie, str) and not cookie:
        out.error(f"{base}.cookieName", "must not be empty")
    if isinstance(primary, str) and primary and primary == cookie:
        out.error(f"{base}.primaryCookieName", "must differ from cookieName")


def _webhook_rules(h: Mapping[str, Any], base: str, out: _Collector) -> None:
    url = h.get("url")
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.error(f"{base}.url", f"not an http(s) URL: {url!r}")


def _metric_rules(m: Mapping[str, Any], base: str, out: _Collector) -> None:
    name = m.get("name")
    sources = [k for k in METRIC_SOURCES if m.get(k) is not None]
    if isinstance(name, str) and name not in BUILTIN_METRICS and not sources:
        out.error(
            base,
            f"{name!r} is not a built-in metric ({', '.join(BUILTIN_METRICS)}): "
            "set templateRef, query or stream",
        )
    for extra in sources[1:]:
        out.error(f"{base}.{extra}", f"cannot be combined with {sources[0]}: set one metric source")
    if m.get("query") is not None:
        out.warn(
            f"{base}.query", "PromQL is not evaluated by canary-stream: use stream or a streaming template"
        )

    tr = _map(m.get("thresholdRange"))
    lo, hi = (_num(tr.get("min")), _num(tr.get("max"))) if tr is not None else (None, None)
    if lo is not None and hi is not None and lo > hi:
        out.error(f"{base}.thresholdRange", f"min ({lo:g}) is greater than max ({hi:g})")
    if tr is not None and lo is None and hi is None and m.get("threshold") is None:
        out.warn(f"{base}.thresholdRange", "neither min nor max: this check never fails")

    stream = _map(m.get("stream"))
    if stream is not None:
        stream_rules(stream, f"{base}.stream", out)


def stream_rules(s: Mapping[str, Any], base: str, out: _Collector) -> None:
    """Per-kind requirements of a StreamMetric (the model checks types and ranges)."""
    kind = s.get("kind")
    if kind not in STREAM_KINDS:
        return  # reported by the model
    needs = {
        "status-rate": ("codes", 'a list of status codes (404) or classes ("5xx")'),
        "latency-quantile": ("quantile", "a quantile between 0 and 1 (0.99)"),
        "flag-rate": ("flags", "a list of Envoy response flags (UF, URX, UH, UT, DC ...)"),
        "exceedance-rate": ("thresholdMs", "a latency threshold in milliseconds"),
    }
    field, what = needs[kind]
    value = s.get(field)
    if value is None or value == []:
        out.error(f"{base}.{field}", f"required for kind {kind}: {what}")
    if kind == "status-rate":
        for i, code in enumerate(_list(s.get("codes")) or []):
            if not _valid_status_code(code):
                out.error(
                    f"{base}.codes[{i}]", f"{code!r} is neither a status code (0, 100-599) nor a class (5xx)"
                )


def _valid_status_code(code: Any) -> bool:
    if isinstance(code, bool):
        return False
    if isinstance(code, str):
        if _STATUS_CLASS.match(code):
            return True
        if not code.isdigit():
            return False
        code = int(code)
    return isinstance(code, int) and (code == 0 or 100 <= code <= 599)


def template_rules(doc: Mapping[str, Any]) -> list[FieldError]:
    """Errors in a MetricTemplate document: a streaming one needs `spec.stream`, a Flagger one
    `spec.provider` and `spec.query`, and not both."""
    out = _Collector()
    spec = _map(doc.get("spec"))
    if spec is None:
        return out.errors
    stream = _map(spec.get("stream"))
    flagger = [k for k in ("provider", "query") if spec.get(k) is not None]
    if stream is not None and flagger:
        out.error(f"spec.{flagger[0]}", "a streaming template (spec.stream) has no provider or query")
    elif stream is None and len(flagger) < 2:
        out.error(
            "spec",
            "set spec.stream (streaming template) or both spec.provider and spec.query (Flagger template)",
        )
    if stream is not None:
        stream_rules(stream, "spec.stream", out)
    return out.errors
