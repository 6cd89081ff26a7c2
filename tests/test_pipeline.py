"""The Python API over the core, end to end on the documented example lines."""

from __future__ import annotations

import pytest

from canary_stream import (
    Aggregator,
    AggregatorConfig,
    Attribution,
    Classification,
    CorePanic,
    Source,
    Windowing,
    _native,
    detect_format,
    generate,
    parse_lines,
)
from conftest import (
    ISTIO_JSON_INBOUND_CANARY,
    ISTIO_TEXT_CANARY_503,
    ISTIO_TEXT_PRIMARY_200,
    LINKERD_APACHE,
    LINKERD_JSON,
    NGINX_CANARY,
    NGINX_PRIMARY,
)

NOW = 1_764_133_567_000  # 2025-11-26T05:06:07Z, only used for lines without a timestamp


def by_version(agg: Aggregator) -> dict[tuple[str, str], object]:
    return {(s.target, s.version): s for s in agg.snapshot(None)}


def test_istio_text_subsets_are_attributed_and_classified() -> None:
    agg = Aggregator(AggregatorConfig(format="istio-text"))
    res = agg.feed(f"{ISTIO_TEXT_PRIMARY_200}\n{ISTIO_TEXT_CANARY_503}\n".encode(), now_ms=NOW)
    assert (res.lines, res.accepted) == (2, 2)
    stats = {(s.target, s.version): s for s in agg.snapshot(None)}
    primary = stats[("reviews.default", "primary")]
    canary = stats[("reviews.default", "canary")]
    assert (primary.requests, primary.successes, primary.success_rate) == (1, 1, 100.0)
    assert (canary.requests, canary.failures, canary.status_5xx, canary.success_rate) == (1, 1, 1, 0.0)
    assert canary.flags == {"UF": 1, "URX": 1}
    assert primary.p50_ms == pytest.approx(12, rel=0.01)
    assert canary.p99_ms == pytest.approx(62, rel=0.01)


def test_istio_json_inbound_uses_sni_subset() -> None:
    agg = Aggregator()  # auto-detect
    agg.feed(ISTIO_JSON_INBOUND_CANARY.encode() + b"\n", now_ms=NOW)
    assert agg.format == "istio-json"
    [s] = agg.snapshot(None)
    assert (s.target, s.version, s.requests, s.p50_ms) == (
        "reviews.default",
        "canary",
        1,
        pytest.approx(4, rel=0.01),
    )


def test_nginx_canary_bracket() -> None:
    agg = Aggregator(AggregatorConfig(format="nginx"))
    agg.feed(f"{NGINX_PRIMARY}\n{NGINX_CANARY}\n".encode(), now_ms=NOW)
    stats = {(s.target, s.version): s for s in agg.snapshot(None)}
    # nginx latency is $request_time (0.032 s), what the client waited.
    assert stats[("default-myapp-svc-80", "primary")].p50_ms == pytest.approx(32, rel=0.01)
    canary = stats[("default-myapp-svc-80", "canary")]
    assert (canary.requests, canary.status_5xx) == (1, 1)


def test_linkerd_versions_come_from_the_pod_log_path() -> None:
    agg = Aggregator(AggregatorConfig(format="linkerd-json"))
    primary = Source.from_path(
        "/var/log/pods/booksapp_webapp-primary-5d8f7c6b9d-x2x4z_0b1c/linkerd-proxy/0.log"
    )
    canary = Source.from_path("/var/log/pods/booksapp_webapp-7f9c8d6b5-abcde_77aa/linkerd-proxy/0.log")
    assert primary == Source(pod="webapp-primary-5d8f7c6b9d-x2x4z", namespace="booksapp")
    agg.feed(LINKERD_JSON.encode() + b"\n", source=primary, now_ms=NOW)
    agg.feed(LINKERD_JSON.encode() + b"\n", source=canary, now_ms=NOW)
    stats = {(s.target, s.version): s for s in agg.snapshot(None)}
    assert set(stats) == {("webapp.booksapp", "primary"), ("webapp.booksapp", "canary")}
    assert stats[("webapp.booksapp", "canary")].p50_ms == pytest.approx(14.122403, rel=0.01)


def test_linkerd_apache_has_no_latency() -> None:
    agg = Aggregator(AggregatorConfig(format="linkerd-apache"))
    agg.feed(
        LINKERD_APACHE.encode() + b"\n",
        source=Source(target="webapp.booksapp", version="primary"),
        now_ms=NOW,
    )
    [s] = agg.snapshot(None)
    assert (s.requests, s.latency_count, s.p50_ms) == (1, 0, None)


def test_unattributable_lines_are_counted_not_aggregated() -> None:
    line = ISTIO_TEXT_PRIMARY_200.replace("outbound|9080|primary|", "outbound|9080||")
    agg = Aggregator(AggregatorConfig(format="istio-text"))
    agg.feed(line.encode() + b"\n", now_ms=NOW)
    assert agg.snapshot(None) == []
    assert agg.totals().malformed == {"unattributable_version": 1}
    agg2 = Aggregator(
        AggregatorConfig(format="istio-text", attribution=Attribution(default_version="unknown"))
    )
    agg2.feed(line.encode() + b"\n", now_ms=NOW)
    assert [(s.target, s.version) for s in agg2.snapshot(None)] == [("reviews.default", "unknown")]


def test_bad_lines_are_counted_per_reason_and_good_lines_kept() -> None:
    good = ISTIO_TEXT_PRIMARY_200
    lines = [
        good,
        good[: len(good) // 2],  # truncated
        good.replace(" 200 ", " 2x0 ", 1),  # bad number
        "",  # blank
        good.replace("2026-11-26T05:06:07.123Z", "yesterday"),  # bad timestamp
        good,
    ]
    data = "\n".join(lines).encode() + b"\n" + b"\xff\xfe garbage \x80\n" + b"x" * 5000 + b"\n"
    agg = Aggregator(AggregatorConfig(format="istio-text", max_line_bytes=4096))
    res = agg.feed(data, now_ms=NOW)
    totals = agg.totals()
    assert res.accepted == 2
    assert totals.malformed["not_utf8"] == 1
    assert totals.malformed["line_too_long"] == 1
    assert totals.malformed["bad_number"] == 1
    assert totals.malformed["bad_timestamp"] == 1
    assert totals.skipped == {"blank": 1}
    assert totals.lines == totals.accepted + totals.malformed_total + sum(totals.skipped.values())
    [s] = agg.snapshot(None)
    assert s.requests == 2


def test_lines_split_across_feeds_are_joined() -> None:
    data = f"{ISTIO_TEXT_PRIMARY_200}\n{ISTIO_TEXT_CANARY_503}\n".encode()
    whole = Aggregator(AggregatorConfig(format="istio-text"))
    whole.feed(data, now_ms=NOW)
    for cut in (1, 10, len(ISTIO_TEXT_PRIMARY_200), len(ISTIO_TEXT_PRIMARY_200) + 1, len(data) - 1):
        agg = Aggregator(AggregatorConfig(format="istio-text"))
        agg.feed(data[:cut], now_ms=NOW)
        agg.feed(data[cut:], now_ms=NOW)
        assert agg.totals().accepted == 2
        assert agg.snapshot(None) == whole.snapshot(None)


def test_last_line_without_newline_needs_finish() -> None:
    agg = Aggregator(AggregatorConfig(format="istio-text"))
    agg.feed(ISTIO_TEXT_PRIMARY_200.encode(), now_ms=NOW)
    assert agg.totals().accepted == 0
    assert agg.totals().pending_bytes == len(ISTIO_TEXT_PRIMARY_200)
    agg.finish(now_ms=NOW)
    assert agg.totals().accepted == 1


def test_cri_and_docker_wrapped_lines() -> None:
    cri = f"2026-11-26T05:06:07.999999999Z stdout F {ISTIO_TEXT_PRIMARY_200}"
    escaped = ISTIO_TEXT_PRIMARY_200.replace("\\", "\\\\").replace('"', '\\"')
    docker = '{"log":"' + escaped + '\\n","stream":"stdout","time":"2026-11-26T05:06:08Z"}'
    agg = Aggregator(AggregatorConfig(format="istio-text"))
    agg.feed(f"{cri}\n{docker}\n".encode(), now_ms=NOW)
    assert agg.totals().accepted == 2, agg.totals()


def test_flagger_classification_counts_only_5xx() -> None:
    no_response = ISTIO_TEXT_PRIMARY_200.replace(" 200 - via_upstream", " 0 DC downstream_remote_disconnect")
    default = Aggregator(AggregatorConfig(format="istio-text"))
    flagger = Aggregator(
        AggregatorConfig(format="istio-text", classification=Classification(preset="flagger"))
    )
    for agg in (default, flagger):
        agg.feed(no_response.encode() + b"\n", now_ms=NOW)
    [d] = default.snapshot(None)
    [f] = flagger.snapshot(None)
    assert (d.status_0, d.success_rate, d.flags) == (1, 0.0, {"DC": 1})
    assert f.success_rate == 100.0


def test_host_map_attribution_at_run_time() -> None:
    line = ISTIO_TEXT_PRIMARY_200.replace("outbound|9080|primary|", "outbound|9080||")
    agg = Aggregator(AggregatorConfig(format="istio-text"))
    agg.feed(line.encode() + b"\n", now_ms=NOW)
    agg.set_host("10.244.1.17", "canary")
    agg.feed(line.encode() + b"\n", now_ms=NOW)
    [s] = agg.snapshot(None)
    assert (s.version, s.requests) == ("canary", 1)
    assert agg.totals().malformed == {"unattributable_version": 1}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (AggregatorConfig(format="nope"), "format"),  # type: ignore[arg-type]
        (AggregatorConfig(max_line_bytes=1), "max_line_bytes"),
        (AggregatorConfig(attribution=Attribution(rules=("bogus",))), "attribution.rules"),  # type: ignore[arg-type]
        (AggregatorConfig(attribution=Attribution(suffixes=(("canary", "c"),))), "attribution.suffixes"),
        (
            AggregatorConfig(classification=Classification(failure_status=(1000,))),
            "classifier.failure_status",
        ),
        (AggregatorConfig(windowing=Windowing(ring_secs=0)), "ring_secs"),
        (AggregatorConfig(windowing=Windowing(thresholds_ms=tuple(range(1, 20)))), "thresholds_ms"),
    ],
)
def test_bad_config_names_the_field(config: AggregatorConfig, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Aggregator(config)


def test_unknown_native_config_field_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"aggregate\.ring_sec: unknown field"):
        _native.Pipeline({"aggregate": {"ring_sec": 60}})


def test_panics_surface_as_exceptions() -> None:
    with pytest.raises(CorePanic, match="deliberate test panic"):
        _native._panic_for_test()


def test_detect_and_parse_lines() -> None:
    assert detect_format((ISTIO_TEXT_PRIMARY_200 + "\n").encode()) == "istio-text"
    assert detect_format((NGINX_PRIMARY + "\n").encode()) == "nginx"
    assert detect_format((LINKERD_JSON + "\n").encode()) == "linkerd-json"
    assert detect_format((LINKERD_APACHE + "\n").encode()) == "linkerd-apache"
    assert detect_format(b"\x00\x01 nothing like a log\n") is None
    [row] = parse_lines(ISTIO_TEXT_CANARY_503.encode(), "istio-text")
    assert row["ok"] and row["status"] == 503 and row["flags"] == ["UF", "URX"]
    assert row["upstream_cluster"] == "outbound|9080|canary|reviews.default.svc.cluster.local"


def test_feed_reads_any_contiguous_byte_buffer_in_place() -> None:
    data = generate("istio-json", lines=300, seed=5)
    want = Aggregator()
    want.feed(data)
    for wrapped in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        agg = Aggregator()
        agg.feed(wrapped)  # type: ignore[arg-type]  # a memoryview too
        assert agg.totals() == want.totals()
    held = bytearray(data)
    Aggregator().feed(held)
    held += b"x"  # the export ended with the call: the buffer can be resized again
    strided = memoryview(data)[::2]
    with pytest.raises((ValueError, BufferError)):
        Aggregator()._native.feed(strided)
