"""The core against the generator's ground truth, for every format and attribution
style: counts and success rates exact, quantiles within 1 %, malformed lines counted."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest

from canary_stream import Aggregator, AggregatorConfig, Source, generate, generate_with_truth

GRPC_FAILURES = {2, 4, 12, 13, 14, 15}
ALPHA = 0.01


def is_success(status: int, grpc: int | None) -> bool:
    return not (500 <= status <= 599 or status == 0 or (grpc is not None and grpc in GRPC_FAILURES))


def expected(truth: dict[str, list[Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"n": 0, "ok": 0, "lat": [], "5xx": 0})
    for i, kind in enumerate(truth["kind"]):
        if kind != "request":
            continue
        key = (truth["target"][i], truth["version"][i])
        e = out[key]
        e["n"] += 1
        e["ok"] += is_success(truth["status"][i], truth["grpc_status"][i])
        e["5xx"] += 500 <= truth["status"][i] <= 599
        if truth["latency_ms"][i] is not None:
            e["lat"].append(truth["latency_ms"][i])
    return dict(out)


def rank_value(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[math.floor(q * (len(s) - 1))]


def check_against_truth(agg: Aggregator, truth: dict[str, list[Any]]) -> None:
    want = expected(truth)
    got = {(s.target, s.version): s for s in agg.snapshot(None)}
    assert set(got) == set(want)
    for key, e in want.items():
        s = got[key]
        assert (s.requests, s.successes, s.status_5xx) == (e["n"], e["ok"], e["5xx"]), key
        assert s.success_rate == pytest.approx(100.0 * e["ok"] / e["n"])
        if e["lat"]:
            for q, v in ((0.5, s.p50_ms), (0.9, s.p90_ms), (0.99, s.p99_ms)):
                exact = rank_value(e["lat"], q)
                assert v is not None and abs(v - exact) <= ALPHA * exact + 1e-6, (key, q, v, exact)
    totals = agg.totals()
    bad = sum(1 for k in truth["kind"] if k in ("truncated", "binary", "badnumber"))
    assert totals.malformed_total == bad, totals.malformed
    assert totals.skipped.get("blank", 0) == truth["kind"].count("empty")
    assert totals.skipped.get("not_http", 0) == truth["kind"].count("tcp")


@pytest.mark.parametrize("style", ["subset", "host_suffix", "sni"])
@pytest.mark.parametrize("fmt", ["istio-text", "istio-json"])
def test_istio_formats_match_truth(fmt: str, style: str) -> None:
    extra = {"tcp_rate": 0.01} if fmt == "istio-text" else {"json_all_strings": style == "sni"}
    data, truth = generate_with_truth(
        fmt, lines=20_000, seed=11, attribution=style, malformed_rate=0.01, **extra
    )
    agg = Aggregator(AggregatorConfig(format="auto"))
    agg.feed(data, now_ms=0)
    agg.finish(now_ms=0)
    assert agg.format == fmt
    check_against_truth(agg, truth)


@pytest.mark.parametrize("fmt", ["nginx", "ndjson"])
def test_nginx_and_ndjson_match_truth(fmt: str) -> None:
    data, truth = generate_with_truth(fmt, lines=20_000, seed=5, malformed_rate=0.01)
    agg = Aggregator(AggregatorConfig(format="auto"))
    agg.feed(data, now_ms=0)
    agg.finish(now_ms=0)
    assert agg.format == fmt
    check_against_truth(agg, truth)


@pytest.mark.parametrize("fmt", ["linkerd-json", "linkerd-apache"])
def test_linkerd_formats_match_truth_per_pod(fmt: str) -> None:
    """Linkerd lines carry no version: the version comes from the pod that wrote them, as
    the file source does. One generated stream per pod."""
    pods = {"primary": "podinfo-primary-5d8f7c6b9d-x2x4z", "canary": "podinfo-7f9c8d6b5-abcde"}
    for name, pod in pods.items():
        service = {"name": "podinfo", "namespace": "test", "port": 9898, "versions": [{"name": name}]}
        data, truth = generate_with_truth(fmt, lines=5_000, seed=3, services=[service])
        agg = Aggregator(AggregatorConfig(format=fmt))
        agg.feed(data, source=Source(pod=pod, namespace="test"), now_ms=0)
        agg.finish(now_ms=0)
        [s] = agg.snapshot(None)
        assert (s.target, s.version) == ("podinfo.test", name)
        requests = [i for i, k in enumerate(truth["kind"]) if k == "request"]
        assert s.requests == len(requests)
        assert s.successes == sum(is_success(truth["status"][i], truth["grpc_status"][i]) for i in requests)
        if fmt == "linkerd-apache":
            assert (s.latency_count, s.p99_ms) == (0, None)
        else:
            exact = rank_value([truth["latency_ms"][i] for i in requests], 0.99)
            assert s.p99_ms is not None and abs(s.p99_ms - exact) <= ALPHA * exact + 1e-6


def test_sliding_windows_add_up_and_late_events_are_counted() -> None:
    data = generate("istio-json", lines=30_000, seed=9, rps=500.0, out_of_order_ms=2_000)
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    agg.feed(data, now_ms=0)
    total = sum(s.requests for s in agg.snapshot(None))
    wm = agg.watermark_ms
    assert wm is not None
    end = wm - wm % 1000 + 1000
    # Windows of 10 s tiling the last 60 s equal one 60 s window.
    sixty = {(s.target, s.version): s.requests for s in agg.snapshot(60, end_ms=end)}
    tiles: dict[tuple[str, str], int] = defaultdict(int)
    for k in range(6):
        for s in agg.snapshot(10, end_ms=end - k * 10_000):
            tiles[(s.target, s.version)] += s.requests
    assert dict(tiles) == sixty
    assert total == agg.totals().accepted  # 2 s jitter is inside the 10 s allowed lateness


def test_feeding_in_small_chunks_equals_one_feed() -> None:
    data = generate("istio-text", lines=5_000, seed=1, malformed_rate=0.02)
    one = Aggregator(AggregatorConfig(format="istio-text"))
    one.feed(data, now_ms=0)
    one.finish(now_ms=0)
    many = Aggregator(AggregatorConfig(format="istio-text"))
    for i in range(0, len(data), 4093):
        many.feed(data[i : i + 4093], now_ms=0)
    many.finish(now_ms=0)
    assert many.snapshot(None) == one.snapshot(None)
    assert many.totals() == one.totals()
