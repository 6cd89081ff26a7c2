"""Flagger-style metric checks evaluated on the stream (flagger-semantics.md §4.2-4.3).

Each check reads one version's figures over the metric's ``interval`` window and compares the
value with ``thresholdRange`` (fail strictly outside, bounds pass) or the deprecated ``threshold``.
No data is *insufficient*: ``inconclusive``, never pass and never fail, unless
``no_data_fails=True`` asks for Flagger's behaviour (a failed check)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from canary_stream.analysis.verdict import Decision, TestResult
from canary_stream.core import VersionStats
from canary_stream.spec.model import Metric, StreamMetric

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTINS = (SUCCESS_RATE, DURATION)

STATUS_RATE = "status-rate"
LATENCY_QUANTILE = "latency-quantile"
FLAG_RATE = "flag-rate"
EXCEEDANCE_RATE = "exceedance-rate"
STREAM_KINDS = (STATUS_RATE, LATENCY_QUANTILE, FLAG_RATE, EXCEEDANCE_RATE)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_CLASSES = {
    "0": (0, 0),
    "1xx": (100, 199),
    "2xx": (200, 299),
    "3xx": (300, 399),
    "4xx": (400, 499),
    "5xx": (500, 599),
}


def parse_interval(text: str) -> float:
    """Seconds of a Go duration such as ``1m``, ``30s`` or ``1m30s``."""
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {text!r}")
    return total


@dataclass(frozen=True)
class Resolved:
    """What a metric measures on the stream: a built-in name or a stream metric; or why not."""

    builtin: str | None = None
    stream: StreamMetric | None = None
    problem: str = ""


def resolve(metric: Metric, templates: Mapping[str, StreamMetric]) -> Resolved:
    """Find what ``metric`` computes: inline ``stream``, a template (by ``name`` or
    ``namespace/name``), or a built-in name. PromQL queries cannot run on the stream."""
    if metric.stream is not None:
        return Resolved(stream=metric.stream)
    if metric.template_ref is not None:
        ref = metric.template_ref
        keys = [f"{ref.namespace}/{ref.name}"] if ref.namespace else []
        for key in [*keys, ref.name]:
            if key in templates:
                return Resolved(stream=templates[key])
        return Resolved(problem=f"template {ref.name!r} is not a stream metric template")
    if metric.name in BUILTINS:
        return Resolved(builtin=metric.name)
    if metric.query:
        return Resolved(problem="PromQL queries are not evaluated on the stream")
    return Resolved(problem=f"unknown metric {metric.name!r}")


def metric_version(metric: Metric, templates: Mapping[str, StreamMetric]) -> str:
    """Whose figures a metric checks (built-ins: the canary, as in Flagger)."""
    r = resolve(metric, templates)
    return r.stream.version if r.stream is not None else "canary"


def exceedance_thresholds(metrics: list[Metric], templates: Mapping[str, StreamMetric]) -> list[float]:
    """Latency thresholds the aggregator must count for the exceedance-rate metrics."""
    out: list[float] = []
    for m in metrics:
        r = resolve(m, templates)
        sm = r.stream
        if (
            sm is not None
            and sm.kind == EXCEEDANCE_RATE
            and sm.threshold_ms is not None
            and sm.threshold_ms not in out
        ):
            out.append(sm.threshold_ms)
    return out


def _status_count(stats: VersionStats, code: int | str) -> int | None:
    """Requests with ``code`` (an int, or a class such as ``5xx`` / ``0``). Classes come from the
    core's class counters (always exact); exact codes from its per-code counts, ``None`` when
    those are missing (figures from before per-code counting) or overflowed."""
    key = str(code).lower()
    if key in _CLASSES:
        by_class = {
            "0": stats.status_0,
            "2xx": stats.status_2xx,
            "3xx": stats.status_3xx,
            "4xx": stats.status_4xx,
            "5xx": stats.status_5xx,
        }
        return by_class.get(key, stats.requests - sum(by_class.values()))
    if int(code) == 0:
        return stats.status_0
    per_code = stats.status_codes
    if stats.requests > 0 and (not per_code or stats.status_codes_overflow > 0):
        return None
    return int(per_code.get(int(code), 0))


def measure(resolved: Resolved, stats: VersionStats) -> tuple[float | None, str]:
    """The metric's value on ``stats`` (``None`` = no data) and a label for messages."""
    if resolved.builtin == SUCCESS_RATE:
        return stats.success_rate, "success rate"
    if resolved.builtin == DURATION:
        # Flagger takes the p99 as integer milliseconds
        return (None if stats.p99_ms is None else float(int(stats.p99_ms))), "request duration"
    sm = resolved.stream
    assert sm is not None
    if sm.kind == STATUS_RATE:
        label = "status " + ",".join(str(c) for c in sm.codes) + " rate"
        if stats.requests == 0:
            return None, label
        counts = [_status_count(stats, c) for c in sm.codes]
        if any(n is None for n in counts):
            raise ValueError("exact status codes need per-code counts, which the core does not provide yet")
        return 100.0 * sum(n or 0 for n in counts) / stats.requests, label
    if sm.kind == FLAG_RATE:
        label = "flag " + ",".join(sm.flags) + " rate"
        if stats.requests == 0:
            return None, label
        flagged = sum(stats.flags.get(f, 0) for f in sm.flags)
        return 100.0 * min(flagged, stats.requests) / stats.requests, label
    if sm.kind == LATENCY_QUANTILE:
        q = sm.quantile if sm.quantile is not None else 0.99
        label = f"p{q * 100:g} latency"
        known = {0.5: stats.p50_ms, 0.9: stats.p90_ms, 0.99: stats.p99_ms, 0.999: stats.p999_ms}
        if q not in known:
            raise ValueError(f"quantile {q} is not available (0.5, 0.9, 0.99, 0.999)")
        return known[q], label
    if sm.kind == EXCEEDANCE_RATE:
        t = sm.threshold_ms
        label = f"rate above {t:g}ms"
        if stats.latency_count == 0:
            return None, label
        for threshold, n in stats.exceed:
            if t is not None and math.isclose(threshold, t):
                return 100.0 * n / stats.latency_count, label
        raise ValueError(f"the aggregator does not count requests above {t}ms")
    raise ValueError(f"unknown stream metric kind {sm.kind!r}")


def _fmt(value: float, builtin: str | None) -> str:
    if builtin == SUCCESS_RATE:
        return f"{value:.2f}%"
    if builtin == DURATION:
        # Flagger prints a Go duration ("1.515s", "850ms")
        return f"{value / 1000:g}s" if value >= 1000 else f"{value:g}ms"
    return f"{value:.2f}"


def _bound(value: float, builtin: str | None) -> str:
    if builtin == SUCCESS_RATE:
        return f"{value:g}%"
    if builtin == DURATION:
        return f"{value:g}ms"
    return f"{value:g}"


def check_metric(
    metric: Metric,
    stats: VersionStats | None,
    templates: Mapping[str, StreamMetric] | None = None,
    *,
    no_data_fails: bool = False,
) -> TestResult:
    """Evaluate one ``analysis.metrics[]`` entry on a version's figures over its window."""
    resolved = resolve(metric, templates or {})
    name = metric.name
    if resolved.problem:
        return TestResult(name, Decision.INCONCLUSIVE, detail=f"{name}: {resolved.problem}")
    try:
        value, label = (None, name) if stats is None or stats.requests == 0 else measure(resolved, stats)
    except ValueError as e:
        return TestResult(name, Decision.INCONCLUSIVE, detail=f"{name}: {e}")
    if value is None or math.isnan(value):
        who = "canary" if stats is None else stats.version
        detail = f"no values found for {name}: the {who} received no traffic in the last {metric.interval}"
        return TestResult(name, Decision.FAIL if no_data_fails else Decision.INCONCLUSIVE, detail=detail)
    b = resolved.builtin
    lo = hi = None
    if metric.threshold_range is not None:
        lo, hi = metric.threshold_range.min, metric.threshold_range.max
    elif metric.threshold is not None:
        # deprecated field: a minimum for the success rate, a maximum for everything else
        lo, hi = (metric.threshold, None) if b == SUCCESS_RATE else (None, metric.threshold)
    shown = _fmt(value, b)
    if lo is not None and value < lo:
        return TestResult(
            name, Decision.FAIL, statistic=value, boundary=lo, detail=f"{label} {shown} < {_bound(lo, b)}"
        )
    if hi is not None and value > hi:
        return TestResult(
            name, Decision.FAIL, statistic=value, boundary=hi, detail=f"{label} {shown} > {_bound(hi, b)}"
        )
    bounds = " ".join(
        part
        for part in (
            f">= {_bound(lo, b)}" if lo is not None else "",
            f"<= {_bound(hi, b)}" if hi is not None else "",
        )
        if part
    )
    return TestResult(
        name,
        Decision.PASS,
        statistic=value,
        boundary=lo if lo is not None else hi,
        detail=f"{label} {shown}" + (f" within {bounds}" if bounds else ""),
    )
