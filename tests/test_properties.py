"""Property tests (hypothesis): parsers round-trip generated field values, and the
aggregator's quantiles stay within 1 % of the exact value on any sample."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary_stream import Aggregator, AggregatorConfig, parse_lines

T0 = 1_764_133_567_000
ALPHA = 0.01

statuses = st.integers(min_value=0, max_value=599)
durations = st.integers(min_value=0, max_value=10_000_000)
versions = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
flag_lists = st.lists(st.sampled_from(["UF", "URX", "UH", "UT", "DC", "UO", "NR"]), unique=True, max_size=3)
# Printable text without quotes for the free-form fields (Envoy does not escape them).
free_text = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters='"\\'), max_size=40
)


def istio_text_line(status: int, flags: list[str], duration: int, ua: str, cluster: str, ms: int) -> str:
    sec, milli = divmod(ms, 1000)
    import time

    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{milli:03d}Z"
    fl = ",".join(flags) or "-"
    return (
        f'[{ts}] "GET /x HTTP/1.1" {status} {fl} via_upstream - "-" 0 10 {duration} - "-" "{ua}" '
        f'"req-1" "svc:80" "10.0.0.1:80" {cluster} 10.0.0.2:1 10.0.0.3:80 10.0.0.4:2 - default'
    )


@given(statuses, flag_lists, durations, free_text, names, versions, st.integers(0, 10**12))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_istio_text_round_trips(
    status: int, flags: list[str], duration: int, ua: str, name: str, version: str, ms: int
) -> None:
    cluster = f"outbound|80|{version}|{name}.ns.svc.cluster.local"
    [row] = parse_lines(istio_text_line(status, flags, duration, ua, cluster, ms).encode(), "istio-text")
    assert row["ok"], row
    assert row["status"] == status
    assert row["latency_ms"] == duration
    assert row["upstream_cluster"] == cluster
    assert row["ts_ms"] == ms
    assert sorted(row["flags"]) == sorted(flags)


@given(
    statuses,
    durations,
    names,
    versions,
    st.booleans(),
    st.permutations(
        ["start_time", "response_code", "duration", "upstream_cluster", "user_agent", "bytes_sent"]
    ),
    free_text,
)
@settings(max_examples=300)
def test_istio_json_round_trips_in_any_key_order_and_typing(
    status: int, duration: int, name: str, version: str, as_strings: bool, order: list[str], ua: str
) -> None:
    cluster = f"outbound|80||{name}-{version}.ns.svc.cluster.local"
    values: dict[str, object] = {
        "start_time": "2026-11-26T05:06:07.123Z",
        "response_code": str(status) if as_strings else status,
        "duration": str(duration) if as_strings else duration,
        "upstream_cluster": cluster,
        "user_agent": ua,
        "bytes_sent": "-" if as_strings else None,
    }
    line = json.dumps({k: values[k] for k in order}, ensure_ascii=False)
    [row] = parse_lines(line.encode(), "istio-json")
    assert row["ok"], (line, row)
    assert (row["status"], row["latency_ms"], row["upstream_cluster"]) == (status, duration, cluster)


@given(
    st.binary(max_size=2000),
    st.sampled_from(["istio-text", "istio-json", "linkerd-json", "linkerd-apache", "nginx", "ndjson"]),
)
@settings(max_examples=300)
def test_parsers_never_raise_on_arbitrary_bytes(data: bytes, fmt: str) -> None:
    for row in parse_lines(data, fmt):
        assert isinstance(row["ok"], bool)


def exact_rank_value(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[math.floor(q * (len(s) - 1))]


latency_samples = st.one_of(
    st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), min_size=1, max_size=400),
    st.lists(st.sampled_from([0.5, 1.0, 250.0, 251.0]), min_size=1, max_size=400),  # bimodal / constant-ish
    st.lists(st.floats(min_value=0.01, max_value=0.02), min_size=1, max_size=5),  # tiny
    st.builds(lambda v, n: [v] * n, st.floats(0.01, 1e5), st.integers(1, 300)),  # constant
)


@given(latency_samples)
@settings(max_examples=200, deadline=None)
def test_window_quantiles_within_one_percent(values: list[float]) -> None:
    lines = [
        json.dumps({"status": 200, "duration_ms": v, "timestamp": T0 + i, "target": "t", "version": "v"})
        for i, v in enumerate(values)
    ]
    agg = Aggregator(AggregatorConfig(format="ndjson"))
    agg.feed(("\n".join(lines) + "\n").encode(), now_ms=T0)
    [s] = agg.snapshot(None)
    assert s.requests == len(values)
    for q, got in ((0.5, s.p50_ms), (0.9, s.p90_ms), (0.99, s.p99_ms), (0.999, s.p999_ms)):
        want = exact_rank_value(values, q)
        assert got is not None
        assert abs(got - want) <= ALPHA * want + 1e-9, (q, got, want)
    assert s.min_ms == min(values) and s.max_ms == max(values)
