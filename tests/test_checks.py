"""Flagger-style metric checks on stream figures."""

from __future__ import annotations

from typing import Any

import pytest

from canary_stream.analysis.checks import check_metric, exceedance_thresholds, parse_interval
from canary_stream.analysis.verdict import Decision
from canary_stream.core import VersionStats
from canary_stream.spec.model import Metric, StreamMetric


def stats(**kw: Any) -> VersionStats:
    base: dict[str, Any] = dict(
        target="podinfo.test",
        version="canary",
        start_ms=0,
        end_ms=60_000,
        requests=1_000,
        successes=987,
        failures=13,
        status_0=2,
        status_2xx=900,
        status_3xx=10,
        status_4xx=75,
        status_5xx=13,
        rps=16.7,
        success_rate=98.7,
        latency_count=1_000,
        p50_ms=12.0,
        p90_ms=40.0,
        p99_ms=1515.7,
        p999_ms=2000.0,
        min_ms=1.0,
        max_ms=2500.0,
        mean_ms=20.0,
        flags={"UF": 5, "URX": 3, "UH": 0},
        exceed=((100.0, 30), (250.0, 12)),
    )
    base.update(kw)
    return VersionStats(**base)


def metric(**kw: Any) -> Metric:
    return Metric.model_validate(kw)


def test_success_rate_below_min_fails_with_flagger_message() -> None:
    r = check_metric(
        metric(name="request-success-rate", thresholdRange={"min": 99}), stats(success_rate=98.69)
    )
    assert r.decision is Decision.FAIL
    assert r.detail == "success rate 98.69% < 99%"
    assert r.statistic == pytest.approx(98.69)


def test_bounds_are_inclusive() -> None:
    m = metric(name="request-success-rate", thresholdRange={"min": 99, "max": 100})
    assert check_metric(m, stats(success_rate=99.0)).decision is Decision.PASS
    assert check_metric(m, stats(success_rate=100.0)).decision is Decision.PASS
    assert check_metric(m, stats(success_rate=98.999)).decision is Decision.FAIL


def test_duration_is_p99_truncated_to_ms() -> None:
    m = metric(name="request-duration", thresholdRange={"max": 500})
    r = check_metric(m, stats(p99_ms=1515.7))
    assert r.decision is Decision.FAIL
    assert r.statistic == 1515.0
    assert r.detail == "request duration 1.515s > 500ms"
    # 500.9 truncates to 500: equal to the bound, passes
    assert check_metric(m, stats(p99_ms=500.9)).decision is Decision.PASS


def test_deprecated_threshold() -> None:
    assert check_metric(
        metric(name="request-success-rate", threshold=99), stats(success_rate=98.0)
    ).decision is (Decision.FAIL)
    assert check_metric(
        metric(name="request-success-rate", threshold=99), stats(success_rate=99.5)
    ).decision is (Decision.PASS)
    assert check_metric(metric(name="request-duration", threshold=2000), stats(p99_ms=1515.0)).decision is (
        Decision.PASS
    )
    assert check_metric(metric(name="request-duration", threshold=1000), stats(p99_ms=1515.0)).decision is (
        Decision.FAIL
    )


def test_no_data_is_inconclusive_unless_asked_to_fail() -> None:
    m = metric(name="request-success-rate", thresholdRange={"min": 99})
    empty = stats(requests=0, success_rate=None, p99_ms=None, latency_count=0)
    for s in (empty, None):
        r = check_metric(m, s)
        assert r.decision is Decision.INCONCLUSIVE
        assert "no values found" in r.detail
        assert check_metric(m, s, no_data_fails=True).decision is Decision.FAIL


def test_status_rate_by_class_and_by_code() -> None:
    m = metric(
        name="server-errors", thresholdRange={"max": 1}, stream={"kind": "status-rate", "codes": ["5xx", 0]}
    )
    r = check_metric(m, stats())
    assert r.statistic == pytest.approx(1.5)  # (13 + 2) / 1000
    assert r.decision is Decision.FAIL
    assert r.detail == "status 5xx,0 rate 1.50 > 1"
    not_found = metric(name="404s", thresholdRange={"max": 5}, stream={"kind": "status-rate", "codes": [404]})
    # exact codes need per-code counts: inconclusive without them (or when they overflowed), exact with them
    assert check_metric(not_found, stats()).decision is Decision.INCONCLUSIVE
    overflowed = VersionStats(**{**stats().__dict__, "status_codes": {200: 900}, "status_codes_overflow": 3})
    assert check_metric(not_found, overflowed).decision is Decision.INCONCLUSIVE
    with_codes = VersionStats(**{**stats().__dict__, "status_codes": {200: 900, 404: 70, 429: 5, 503: 13}})
    r = check_metric(not_found, with_codes)
    assert r.statistic == pytest.approx(7.0)
    assert r.decision is Decision.FAIL
    four = metric(name="4xx", thresholdRange={"max": 10}, stream={"kind": "status-rate", "codes": ["4xx"]})
    assert check_metric(four, with_codes).statistic == pytest.approx(7.5)


def test_flag_latency_and_exceedance_metrics() -> None:
    flags = metric(
        name="upstream-failures",
        thresholdRange={"max": 1},
        stream={"kind": "flag-rate", "flags": ["UF", "URX"]},
    )
    r = check_metric(flags, stats())
    assert r.statistic == pytest.approx(0.8)
    assert r.decision is Decision.PASS
    q = metric(name="p90", thresholdRange={"max": 30}, stream={"kind": "latency-quantile", "quantile": 0.9})
    assert check_metric(q, stats()).decision is Decision.FAIL
    odd = metric(
        name="p75", thresholdRange={"max": 30}, stream={"kind": "latency-quantile", "quantile": 0.75}
    )
    assert check_metric(odd, stats()).decision is Decision.INCONCLUSIVE
    ex = metric(
        name="slow", thresholdRange={"max": 2}, stream={"kind": "exceedance-rate", "thresholdMs": 250}
    )
    r = check_metric(ex, stats())
    assert r.statistic == pytest.approx(1.2)
    assert r.decision is Decision.PASS
    missing = metric(
        name="slow", thresholdRange={"max": 2}, stream={"kind": "exceedance-rate", "thresholdMs": 300}
    )
    assert check_metric(missing, stats()).decision is Decision.INCONCLUSIVE
    assert exceedance_thresholds([ex, missing, flags], {}) == [250.0, 300.0]


def test_templates_and_unsupported_metrics() -> None:
    tpl = {"test/not-found": StreamMetric(kind="status-rate", codes=["4xx"])}
    m = metric(
        name="not-found", thresholdRange={"max": 5}, templateRef={"name": "not-found", "namespace": "test"}
    )
    r = check_metric(m, stats(), tpl)
    assert r.statistic == pytest.approx(7.5)
    assert r.decision is Decision.FAIL
    assert r.detail == "status 4xx rate 7.50 > 5"
    promql = metric(name="custom", query="sum(rate(x[1m]))", thresholdRange={"max": 5})
    assert check_metric(promql, stats()).decision is Decision.INCONCLUSIVE
    unknown_tpl = metric(name="x", templateRef={"name": "nope"}, thresholdRange={"max": 5})
    assert check_metric(unknown_tpl, stats(), tpl).decision is Decision.INCONCLUSIVE


def test_no_threshold_passes_with_value() -> None:
    r = check_metric(metric(name="request-success-rate"), stats())
    assert r.decision is Decision.PASS
    assert r.statistic == pytest.approx(98.7)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1m", 60), ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600)]
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "abc", "1m x", "m"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


def test_exact_code_rate_from_the_real_aggregator() -> None:
    """A 404-rate stream metric over lines the core parsed: exact per-code counts, 200 derived."""
    from canary_stream.core import Aggregator, AggregatorConfig

    line = (
        '{{"start_time":"2026-01-01T00:00:{s:02d}.{ms:03d}Z","method":"GET","path":"/",'
        '"protocol":"HTTP/1.1","response_code":{code},"response_flags":"-","bytes_received":0,'
        '"bytes_sent":10,"duration":12,"upstream_service_time":"11","authority":"podinfo.test:9898",'
        '"upstream_host":"10.0.0.2:9898","upstream_cluster":"outbound|9898||podinfo-canary.test.svc.cluster.local"}}'
    )
    codes = ([200] * 90 + [404] * 7 + [503] + [201]) * 10 + [429] * 5 + [503] * 3 + [201] * 2
    lines = [line.format(s=i // 20, ms=i % 1000, code=c) for i, c in enumerate(codes)]
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    agg.feed(("\n".join(lines) + "\n").encode())
    (canary,) = agg.snapshot(None)
    assert dict(canary.status_codes) == {200: 900, 201: 12, 404: 70, 429: 5, 503: 13}
    not_found = metric(name="404s", thresholdRange={"max": 5}, stream={"kind": "status-rate", "codes": [404]})
    r = check_metric(not_found, canary)
    assert r.statistic == pytest.approx(7.0)
    assert r.decision is Decision.FAIL
