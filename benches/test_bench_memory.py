"""Memory per (target, version) for a 60 s window of 1 s buckets at alpha = 1 %, with
realistic latencies filling every bucket (the sketches grow with the spread of values)."""

from __future__ import annotations

from typing import Any

import pytest

from canary_stream import Aggregator, AggregatorConfig, Windowing, generate

BUDGET = 256 * 1024


def fill_60s() -> dict[str, Any]:
    # 60 s at 2,000 req/s, lognormal (primary) and bimodal (canary) latencies, 1 % zeros.
    data = generate("istio-text", lines=120_000, seed=3, rps=2_000.0)
    agg = Aggregator(AggregatorConfig(format="istio-text", windowing=Windowing(ring_secs=60)))
    agg.feed(data, now_ms=0)
    return agg.memory()


@pytest.mark.benchmark(group="memory")
def test_memory_per_key_60s(benchmark: Any) -> None:
    mem = benchmark.pedantic(fill_60s, rounds=1, iterations=1)
    per_key = max(k["bytes"] for k in mem["keys"])
    benchmark.extra_info["bytes_per_key"] = per_key
    print(f"\nmemory per (target, version), 60 s ring: {per_key / 1024:.1f} KiB (budget 256 KiB)")
    assert per_key <= BUDGET
