"""Envoy gRPC access-log service: the decoder through the Python API, and the source against a real
gRPC server on 127.0.0.1 fed by a real grpcio client (messages encoded by the official protobuf
runtime from the vendored Envoy protos, tests/proto/)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from als_proto import T0_S, http_entry, istio_node, message, protos
from canary_stream.core import Aggregator, AlsStream, FeedResult, grpc_frame
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.envoy_als import FULL_METHOD, EnvoyAlsConfig, EnvoyAlsSource, stats_dict

INBOUND = "inbound|9898||"
PRIMARY_POD = ("podinfo-primary-5d8f7c6b9d-x2x4z", "test", "podinfo-primary", {"app": "podinfo-primary"})
CANARY_POD = ("podinfo-7b9c4d5f6-abcde", "test", "podinfo", {"app": "podinfo"})


def raw(m: Any) -> bytes:
    return bytes(m.SerializeToString())


def by_version(agg: Aggregator, target: str | None = None) -> dict[str, Any]:
    return {s.version: s for s in agg.snapshot(None, target=target)}


# --- the decoder through the Python API -------------------------------------------------------


def test_inbound_versions_come_from_the_node_of_the_stream() -> None:
    agg = Aggregator()
    primary, canary = AlsStream(), AlsStream()
    first = message(
        [http_entry(cluster=INBOUND, code=200, latency_ms=10 + i) for i in range(9)]
        + [http_entry(cluster=INBOUND, code=503, latency_ms=80)],
        node=istio_node(*PRIMARY_POD),
    )
    r = agg.feed_envoy_als(grpc_frame([raw(first)]), primary)
    assert r == FeedResult(10, 10)
    agg.feed_envoy_als(
        grpc_frame(
            [
                raw(
                    message(
                        [http_entry(cluster=INBOUND, code=500, latency_ms=300)], node=istio_node(*CANARY_POD)
                    )
                )
            ]
        ),
        canary,
    )
    # Later messages carry no identifier: the stream remembers its node.
    later = message([http_entry(cluster=INBOUND, code=200, latency_ms=250) for _ in range(3)])
    agg.feed_envoy_als(grpc_frame([raw(later), raw(later)]), canary)
    got = by_version(agg)
    assert set(got) == {"primary", "canary"}
    assert got["primary"].target == got["canary"].target == "podinfo.test"
    assert (got["primary"].requests, got["primary"].failures) == (10, 1)
    assert (got["canary"].requests, got["canary"].failures) == (7, 1)
    assert got["primary"].success_rate == pytest.approx(90.0)
    assert got["canary"].p50_ms == pytest.approx(250, rel=0.02)
    assert got["primary"].max_ms == pytest.approx(80, rel=0.02)
    assert canary.identity() == {
        "node_id": "sidecar~10.244.1.7~podinfo-7b9c4d5f6-abcde.test~test.svc.cluster.local",
        "log_name": "canary",
        "pod": "podinfo-7b9c4d5f6-abcde",
        "namespace": "test",
        "workload": "podinfo",
        "version": "",
    }
    assert (canary.messages, canary.entries) == (3, 7)


def test_outbound_versions_come_from_upstream_peer_then_the_cluster() -> None:
    agg = Aggregator()
    frontend = istio_node(
        "frontend-6f7d8c9b5-zzzzz", "default", "frontend", {"app": "frontend", "version": "v1"}
    )
    plain = "outbound|9080||reviews.default.svc.cluster.local"
    peer_v1 = {"workload": "reviews-v1", "namespace": "default", "app": "reviews", "version": "v1"}
    peer_v2 = {
        "workload": "reviews-v2",
        "namespace": "default",
        "app": "reviews",
        "version": "v2",
        "revision": "v2",
    }
    no_label = {"workload": "reviews-canary", "namespace": "default", "revision": "latest"}
    caller = {"workload": "frontend", "version": "v1"}  # the caller: never the serving version
    entries = [
        http_entry(cluster=plain, peer=peer_v1, downstream_peer=caller),
        http_entry(cluster=plain, peer=peer_v2, code=503, flags=("upstream_connection_failure",)),
        http_entry(cluster=plain, peer=peer_v1),
        http_entry(cluster="outbound|9080|canary|reviews.default.svc.cluster.local", peer=no_label),
        http_entry(cluster="outbound|9080||reviews-primary.default.svc.cluster.local"),
    ]
    agg.feed_envoy_als(grpc_frame([raw(message(entries, node=frontend))]), AlsStream())
    got = by_version(agg, "reviews.default")
    assert {v: (s.requests, s.failures) for v, s in got.items()} == {
        "v1": (2, 0),
        "v2": (1, 1),
        "canary": (1, 0),
        "primary": (1, 0),
    }
    assert got["v2"].flags["UF"] == 1


def test_grpc_status_flags_tcp_and_intermediate_entries() -> None:
    agg = Aggregator()
    cluster = "outbound|50051|canary|grpc-echo.default.svc.cluster.local"
    m = message(
        [
            http_entry(cluster=cluster, code=200, grpc_status="14"),  # UNAVAILABLE: a failure
            http_entry(cluster=cluster, code=200, grpc_status="0"),
            http_entry(cluster=cluster, code=None, flags=("downstream_connection_termination",)),
            http_entry(cluster=cluster, intermediate=True),
        ]
    )
    tcp = protos().als.StreamAccessLogsMessage()
    tcp.tcp_logs.log_entry.add().connection_properties.sent_bytes = 10
    r = agg.feed_envoy_als(grpc_frame([raw(m), raw(tcp)]), AlsStream())
    assert r == FeedResult(5, 3)
    s = by_version(agg)["canary"]
    assert (s.requests, s.failures, s.status_0) == (3, 2, 1)
    assert s.flags["DC"] == 1
    assert agg.totals().skipped == {"not_http": 1, "intermediate_entry": 1}


def test_garbage_is_counted_and_good_messages_around_it_kept() -> None:
    agg = Aggregator()
    good = raw(message([http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local")] * 3))
    stream = AlsStream()
    r = agg.feed_envoy_als(grpc_frame([good, b"\xff\xff\xff\xff garbage", good[:-7], good]), stream)
    assert r.accepted == 6 + 2  # both whole messages, and the cut one's complete entries
    assert agg.totals().malformed["bad_protobuf"] >= 2
    t = agg.totals()
    assert t.lines == t.accepted + sum(t.malformed.values()) + sum(t.skipped.values())
    # A frame cut short (the end of a buffer) is one bad_protobuf, never a crash.
    agg.feed_envoy_als(grpc_frame([good])[:-1], stream)
    agg.feed_envoy_als(b"\x01\x00\x00\x00\x02ab", stream)  # compressed flag: refused
    assert agg.totals().malformed["bad_protobuf"] >= 4


ENTRY = st.builds(
    dict,
    version=st.sampled_from(["primary", "canary", "stable"]),
    code=st.sampled_from([200, 201, 404, 500, 503, None]),
    latency=st.floats(min_value=0.1, max_value=5000),
    dt=st.floats(min_value=0, max_value=5),
    inbound=st.booleans(),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ENTRY, min_size=1, max_size=80), per_message=st.integers(1, 30))
def test_random_entries_give_matching_counts(rows: list[dict[str, Any]], per_message: int) -> None:
    """Inbound entries go to a stream per version (its pod), outbound ones name the subset."""
    agg = Aggregator()
    pods = {
        "primary": ("web-primary-5d8f7c6b9d-aaaaa", "prod", "web-primary", {"app": "web-primary"}),
        "canary": ("web-5d8f7c6b9d-bbbbb", "prod", "web", {"app": "web"}),
        # A version label wins over the workload name (which alone would say "canary": no suffix).
        "stable": ("web-5d8f7c6b9d-ccccc", "prod", "web", {"app": "web", "version": "stable"}),
    }
    for version, pod in pods.items():
        mine = [r for r in rows if r["version"] == version]
        entries = [
            http_entry(
                cluster=INBOUND if r["inbound"] else f"outbound|80|{version}|web.prod.svc.cluster.local",
                code=r["code"],
                latency_ms=r["latency"],
                start_s=T0_S + r["dt"],
            )
            for r in mine
        ]
        chunks = [entries[i : i + per_message] for i in range(0, len(entries), per_message)] or [[]]
        msgs = [raw(message(c, node=istio_node(*pod) if i == 0 else None)) for i, c in enumerate(chunks)]
        assert agg.feed_envoy_als(grpc_frame(msgs), AlsStream()) == FeedResult(len(mine), len(mine))
    got = by_version(agg, "web.prod")
    for version in pods:
        mine = [r for r in rows if r["version"] == version]
        if not mine:
            assert version not in got
            continue
        s = got[version]
        assert s.requests == len(mine)
        assert s.status_0 == sum(r["code"] is None for r in mine)
        assert s.status_5xx == sum(r["code"] in (500, 503) for r in mine)
        assert s.failures == s.status_5xx + s.status_0
        assert s.max_ms == pytest.approx(max(r["latency"] for r in mine), rel=0.02, abs=0.01)


# --- the source: a real gRPC server and client ----------------------------------------------


class GatedAggregator(Aggregator):
    """Folds only while `gate` is set: a core that has fallen behind."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def feed_envoy_als(self, data: bytes, stream: Any, *, now_ms: int | None = None) -> FeedResult:
        self.gate.wait()
        return super().feed_envoy_als(data, stream, now_ms=now_ms)


class Running:
    def __init__(self, src: EnvoyAlsSource, agg: Aggregator, queue: IngestQueue) -> None:
        self.src, self.agg, self.queue = src, agg, queue

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.src.port}"

    async def settle(self, events: int, timeout: float = 20.0) -> None:
        """Wait until `events` entries (accepted or not) are folded."""
        deadline = time.monotonic() + timeout
        while self.src.stats.lines < events:
            assert time.monotonic() < deadline, f"folded {self.src.stats.lines} of {events}"
            await asyncio.sleep(0.02)
        await self.queue.join()


@contextlib.asynccontextmanager
async def running(
    agg: Aggregator | None = None, *, queue_bytes: int = 64 << 20, **cfg: Any
) -> AsyncIterator[Running]:
    agg = agg or Aggregator()
    queue = IngestQueue(max_bytes=queue_bytes)
    src = EnvoyAlsSource(EnvoyAlsConfig(port=0, **cfg))
    fold = asyncio.create_task(fold_forever(queue, agg))
    task = asyncio.create_task(src.run(queue))
    await asyncio.wait_for(src.ready.wait(), 10)
    try:
        yield Running(src, agg, queue)
    finally:
        src.stop()
        await asyncio.wait_for(task, 30)
        await asyncio.wait_for(queue.join(), 30)
        fold.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fold


def send(target: str, messages: Iterator[Any] | list[Any], **channel_options: Any) -> Any:
    """Stream `messages` (protobuf messages or raw bytes) like Envoy does; blocks until the call ends."""
    with grpc.insecure_channel(target, options=list(channel_options.items())) as channel:
        call = channel.stream_unary(
            FULL_METHOD,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=protos().als.StreamAccessLogsResponse.FromString,
        )
        return call(iter(messages), timeout=60)


async def test_streams_from_primary_canary_and_a_client_sidecar() -> None:
    async with running() as r:

        def pod_stream(pod: tuple[Any, ...], codes: list[int], latency: float) -> list[Any]:
            entries = [http_entry(cluster=INBOUND, code=c, latency_ms=latency) for c in codes]
            first = message(entries[:10], node=istio_node(*pod))
            return [first, *(message(entries[i : i + 10]) for i in range(10, len(entries), 10))]

        primary = pod_stream(PRIMARY_POD, [200] * 198 + [503] * 2, 20.0)
        canary = pod_stream(CANARY_POD, [200] * 45 + [500] * 5, 60.0)
        # A client sidecar's outbound entries, sent with the generated stub (the upstream service path).
        frontend = istio_node("frontend-1-2", "test", "frontend", {"app": "frontend"})
        outbound = [
            http_entry(cluster="outbound|9898||podinfo-canary.test.svc.cluster.local", latency_ms=55),
            http_entry(cluster="outbound|9898||podinfo-primary.test.svc.cluster.local", latency_ms=15),
        ]
        p = protos()

        def stub_send() -> Any:
            with grpc.insecure_channel(r.target) as ch:
                return p.als_grpc.AccessLogServiceStub(ch).StreamAccessLogs(
                    iter([message(outbound, node=frontend)])
                )

        replies = await asyncio.gather(
            asyncio.to_thread(send, r.target, primary),
            asyncio.to_thread(send, r.target, canary),
            asyncio.to_thread(stub_send),
        )
        assert all(isinstance(x, p.als.StreamAccessLogsResponse) for x in replies)
        await r.settle(252)
        got = by_version(r.agg, "podinfo.test")
        assert {v: (s.requests, s.failures) for v, s in got.items()} == {
            "primary": (201, 2),
            "canary": (51, 5),
        }
        assert got["primary"].success_rate == pytest.approx(100 * 199 / 201)
        assert got["canary"].p50_ms == pytest.approx(60, rel=0.02)
        assert got["primary"].p50_ms == pytest.approx(20, rel=0.02)
        s = r.src.stats
        assert (s.events, s.lines, s.malformed) == (252, 252, {})
        assert r.src.messages == len(primary) + len(canary) + 1
        assert s.bytes > 252 * 100 and s.rates()["events_per_s"] > 0
        assert (r.src.streams_total, r.src.streams_open) == (3, 0)
        d = stats_dict(r.src)
        assert (d["events"], d["messages"], d["stream_errors"], d["malformed"]) == (
            252,
            r.src.messages,
            0,
            {},
        )


async def test_malformed_message_is_counted_and_the_stream_goes_on() -> None:
    async with running() as r:
        good = message([http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local")] * 4)
        msgs = [good, b"\x0a\xff\xff\xff\xff\x0f garbage", good, b"\x12\x05\x0a\x03abc", good]
        await asyncio.to_thread(send, r.target, msgs)
        await r.settle(12)
        assert r.src.stats.events == 12
        assert r.src.stats.malformed.get("bad_protobuf", 0) >= 2
        assert by_version(r.agg)["canary"].requests == 12


async def test_a_broken_stream_loses_no_complete_message() -> None:
    async with running(flush_ms=5000) as r:  # nothing is flushed by time: only the break can
        n = 25
        release = threading.Event()

        def messages() -> Iterator[Any]:
            first = message([http_entry(cluster=INBOUND)] * 4, node=istio_node(*CANARY_POD))
            yield first
            for _ in range(n - 1):
                yield message([http_entry(cluster=INBOUND)] * 4)
            release.wait(30)  # hold the stream open until cancelled

        with grpc.insecure_channel(r.target) as ch:
            call = ch.stream_unary(FULL_METHOD, request_serializer=lambda m: m.SerializeToString())
            future = call.future(messages(), timeout=60)
            deadline = time.monotonic() + 20
            while r.src.messages < n:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert r.src.stats.lines == 0  # still pending in the stream's batch
            future.cancel()  # the client goes away mid-stream
            release.set()
            await r.settle(4 * n)
            deadline = time.monotonic() + 20
            while r.src.streams_open:  # the handler has seen the break (not only a timed flush)
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        assert by_version(r.agg)["canary"].requests == 4 * n
        assert r.src.stream_errors == 1


async def test_oversized_message_ends_that_stream_only() -> None:
    async with running(max_message_bytes=64 * 1024) as r:
        good = message([http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local")] * 3)
        big = message(
            [http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local", authority="x" * 100_000)]
        )
        with pytest.raises(grpc.RpcError) as exc:
            await asyncio.to_thread(send, r.target, [good, big])
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await asyncio.to_thread(send, r.target, [good])  # the server goes on
        await r.settle(6)
        assert by_version(r.agg)["canary"].requests == 6


async def test_flow_control_blocks_the_client_and_bounds_memory() -> None:
    agg = GatedAggregator()
    agg.gate.clear()  # the core is stuck
    queue_bytes = 512 * 1024
    async with running(agg, queue_bytes=queue_bytes, batch_bytes=64 * 1024) as r:
        one = raw(message([http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local")] * 48))
        total = 4000  # ~60 MB
        sent = [0]
        peak = [0]

        def messages() -> Iterator[bytes]:
            for _ in range(total):
                sent[0] += 1
                yield one

        client = asyncio.ensure_future(asyncio.to_thread(send, r.target, messages()))

        async def watch(seconds: float) -> int:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                peak[0] = max(peak[0], r.queue.queued_bytes)
                await asyncio.sleep(0.01)
            return sent[0]

        first = await watch(2.0)
        second = await watch(1.5)
        held = second * len(one)
        print(
            f"\nflow control: client blocked after {second} of {total} messages ({held / 1e6:.1f} MB taken)"
        )
        # The client is blocked: nothing more was taken in, and far less than the whole stream.
        assert second - first <= 2, (first, second)
        assert held < 24 * 1024 * 1024, held  # queue + batch + HTTP/2 windows, not 60 MB
        assert not client.done()
        assert peak[0] <= queue_bytes + 64 * 1024 + len(one)
        assert r.src.stats.waits >= 1
        agg.gate.set()  # the core catches up: everything arrives, nothing lost
        await asyncio.wait_for(client, 60)
        await r.settle(total * 48, timeout=60)
        assert by_version(agg)["canary"].requests == total * 48
        assert peak[0] <= queue_bytes + 64 * 1024 + len(one)


async def test_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    async with running(tls_cert=str(cert), tls_key=str(key)) as r:
        good = message([http_entry(cluster="outbound|80|canary|web.prod.svc.cluster.local")] * 2)

        def tls_send() -> None:
            creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            with grpc.secure_channel(r.target, creds) as ch:
                ch.stream_unary(FULL_METHOD, request_serializer=lambda m: m.SerializeToString())(iter([good]))

        await asyncio.to_thread(tls_send)
        await r.settle(2)
        with pytest.raises(grpc.RpcError):  # plaintext is refused
            await asyncio.to_thread(send, r.target, [good])
        assert r.src.stats.events == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 70000}, "als.port"),
        ({"batch_bytes": 0}, "als.batch_bytes"),
        ({"flush_ms": 0}, "als.flush_ms"),
        ({"tls_cert": "/nonexistent.pem"}, "als.tls_key"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.pem"}, "als.tls_cert"),
        ({"max_concurrent_streams": -1}, "als.max_concurrent_streams"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        EnvoyAlsConfig(**kwargs)


# --- canary-stream run --als -------------------------------------------------------------------


def _parse(argv: list[str]) -> Any:
    import argparse

    from canary_stream.run_cmd import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def test_run_builds_the_als_source_from_flags_and_yaml(tmp_path: Path) -> None:
    from canary_stream.run_cmd import build_sources

    (src,) = build_sources(_parse(["--als", "0.0.0.0:9001"]))
    assert isinstance(src, EnvoyAlsSource)
    assert (src.config.host, src.config.port) == ("0.0.0.0", 9001)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("als:\n  port: 9101\n  max_message_bytes: 1048576\n  flush_ms: 50\n")
    (src,) = build_sources(_parse(["--config", str(cfg), "--als", "9202"]))
    assert isinstance(src, EnvoyAlsSource)
    assert (src.config.port, src.config.max_message_bytes, src.config.flush_ms) == (9202, 1048576, 50)
    with pytest.raises(ValueError, match="--als"):
        build_sources(_parse(["--als", "localhost:grpc"]))
    cfg.write_text("als:\n  batch_bytes: -1\n")
    with pytest.raises(ValueError, match=r"als\.batch_bytes"):
        build_sources(_parse(["--config", str(cfg)]))
    cfg.write_text("als:\n  prot: 1\n")
    with pytest.raises(ValueError, match=r"als: .*prot"):
        build_sources(_parse(["--config", str(cfg)]))


def test_subprocess_run_als_sigterm_folds_every_entry() -> None:
    import json
    import os
    import re
    import signal
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "python")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "canary_stream.run_cmd", "run", "--als", "127.0.0.1:0",
         "--stats-interval", "0.2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r"listening on grpc://(127\.0\.0\.1:\d+)", line)
        assert m, line
        primary = [message([http_entry(cluster=INBOUND)] * 50, node=istio_node(*PRIMARY_POD))]
        primary += [message([http_entry(cluster=INBOUND)] * 50) for _ in range(9)]
        canary = [message([http_entry(cluster=INBOUND, code=503)] * 5, node=istio_node(*CANARY_POD))]
        send(m.group(1), primary)
        send(m.group(1), canary)
        deadline = time.monotonic() + 20
        seen = ""
        while time.monotonic() < deadline and not re.search(r"events 505\b", seen):
            seen = proc.stderr.readline().decode()
        assert re.search(r"events 505\b", seen), seen
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["accepted"] == 505
    assert report["sources"]["als"]["events"] == 505
    versions = {(v["target"], v["version"]): (v["requests"], v["failures"]) for v in report["versions"]}
    assert versions == {("podinfo.test", "primary"): (500, 0), ("podinfo.test", "canary"): (5, 5)}


async def test_stop_cuts_open_streams_and_folds_what_they_held() -> None:
    async with running(flush_ms=60_000) as r:  # nothing is flushed by time
        release = threading.Event()

        def messages() -> Iterator[Any]:
            yield message([http_entry(cluster=INBOUND)] * 3, node=istio_node(*PRIMARY_POD))
            yield message([http_entry(cluster=INBOUND)] * 3)
            release.wait(30)  # an Envoy stream: open for ever

        with grpc.insecure_channel(r.target) as ch:
            call = ch.stream_unary(FULL_METHOD, request_serializer=lambda m: m.SerializeToString())
            future = call.future(messages(), timeout=60)
            deadline = time.monotonic() + 20
            while r.src.messages < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            r.src.stop()
            await r.settle(6)
            release.set()
            with pytest.raises(grpc.RpcError):
                future.result(timeout=20)  # the server cut the stream
        assert by_version(r.agg)["primary"].requests == 6
        assert r.src.stream_errors == 0
