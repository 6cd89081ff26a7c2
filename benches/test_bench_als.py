"""Envoy gRPC access-log service → aggregator, against a per-record Python server, in the same run.

A client process (benches/als_client.py, grpcio) streams pre-encoded ``StreamAccessLogsMessage``s like
Istio sidecars do: ``BENCH_ALS_STREAMS`` streams (default 4: two primary pods and two canary pods, each
stream's first message carrying the Istio node identity), 48 HTTP entries per message (~17 KiB, about
Envoy's 16 KiB flush size), half of them inbound (with Istio's ``downstream_peer`` metadata) and half
outbound (with ``upstream_peer``), as Istio's default ``envoyHttpAls`` sends them. Messages are encoded
by the official protobuf runtime from the vendored protos (tests/proto/). Each round measures, on the
server side, the time from the first message received to the last entry counted:

* ours: ``EnvoyAlsSource`` (raw bytes, batches per stream) → ``IngestQueue`` → ``fold_forever`` →
  ``Aggregator.feed_envoy_als`` (prost decode + attribution + aggregation in Rust, GIL released);
* baseline: a ``grpc.aio`` server with the generated message class as request deserializer (python
  protobuf, upb) and per entry: the version from the stream's node / the upstream peer Struct (cached
  per distinct peer bytes) / the cluster, and a Python dict of (count, errors, durations) per version.

Sizes: ``BENCH_ALS_ENTRIES`` (default twice ``BENCH_LINES``: 400,000; ``make test`` 40,000),
``BENCH_ALS_STREAMS`` (4), ``BENCH_ALS_ROUNDS`` (3). Run with ``-s`` to see the figures and the ratio.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from canary_stream import Aggregator, AggregatorConfig, Windowing
from canary_stream.core import grpc_frame
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.envoy_als import EnvoyAlsConfig, EnvoyAlsSource

HERE = Path(__file__).resolve().parent
# The test-side encoder (vendored Envoy protos compiled at run time), shared with the tests.
sys.path.insert(0, str(HERE.parent / "tests"))
from als_proto import T0_S, http_entry, istio_node, message, protos  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_ALS_ENTRIES", str(2 * int(os.environ.get("BENCH_LINES", "200000")))))
STREAMS = int(os.environ.get("BENCH_ALS_STREAMS", "4"))
ROUNDS = int(os.environ.get("BENCH_ALS_ROUNDS", "3"))
PER_MESSAGE = 48
TIMEOUT_S = 600.0

PODS = [
    ("podinfo-primary-5d8f7c6b9d-x2x4z", "test", "podinfo-primary", {"app": "podinfo-primary"}),
    ("podinfo-7b9c4d5f6-abcde", "test", "podinfo", {"app": "podinfo"}),
    ("podinfo-primary-5d8f7c6b9d-y3y5q", "test", "podinfo-primary", {"app": "podinfo-primary"}),
    ("podinfo-7b9c4d5f6-fghij", "test", "podinfo", {"app": "podinfo"}),
]


@dataclass
class Load:
    files: list[Path]
    entries: int
    messages: int
    bytes: int


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Load:
    """One file of framed messages per stream; the entries are built once per distinct shape and
    repeated with moving start times (event time spans ~entries/20k seconds)."""
    out = tmp_path_factory.mktemp("als-bench")
    per_stream = ENTRIES // STREAMS
    caller = {
        "workload": "frontend",
        "namespace": "test",
        "app": "frontend",
        "version": "v1",
        "revision": "v1",
    }
    peers = {
        "primary": {
            "workload": "podinfo-primary",
            "namespace": "test",
            "app": "podinfo",
            "revision": "latest",
        },
        "canary": {"workload": "podinfo", "namespace": "test", "app": "podinfo", "revision": "latest"},
    }
    files: list[Path] = []
    total_msgs = total_bytes = 0
    for s in range(STREAMS):
        pod = PODS[s % len(PODS)]
        msgs: list[bytes] = []
        for first in range(0, per_stream, PER_MESSAGE):
            entries = []
            for i in range(first, min(per_stream, first + PER_MESSAGE)):
                start = T0_S + i / 20_000
                code = 503 if i % 97 == 0 else 200
                if i % 2:
                    entries.append(
                        http_entry(
                            cluster="inbound|9898||", code=code, latency_ms=5 + i % 40, start_s=start,
                            downstream_peer=caller,
                            sni="outbound_.9898_._.podinfo.test.svc.cluster.local",
                        )
                    )  # fmt: skip
                else:
                    version = "canary" if i % 4 == 0 else "primary"
                    host = "podinfo-canary" if version == "canary" else "podinfo-primary"
                    entries.append(
                        http_entry(
                            cluster=f"outbound|9898||{host}.test.svc.cluster.local", code=code,
                            latency_ms=6 + i % 50, start_s=start, peer=peers[version],
                        )
                    )  # fmt: skip
            node = istio_node(*pod) if first == 0 else None
            msgs.append(message(entries, node=node).SerializeToString())
        path = out / f"stream{s}.bin"
        path.write_bytes(grpc_frame(msgs))
        files.append(path)
        total_msgs += len(msgs)
        total_bytes += sum(len(m) for m in msgs)
    entries = per_stream * STREAMS
    print(
        f"\nALS load: {entries:,} entries in {total_msgs:,} messages ({total_bytes / 1e6:.1f} MB), "
        f"{STREAMS} streams"
    )
    return Load(files, entries, total_msgs, total_bytes)


@dataclass
class Run:
    entries: int
    seconds: float  # first message received -> last entry counted
    cpu_s: float  # server process CPU over that interval

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def client(target: str, load: Load) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "als_client.py"), target, *map(str, load.files)],
        stderr=subprocess.PIPE,
    )


async def wait_client(proc: subprocess.Popen[bytes]) -> None:
    rc = await asyncio.to_thread(proc.wait, TIMEOUT_S)
    assert rc == 0, proc.stderr.read().decode() if proc.stderr else rc


def aggregator() -> Aggregator:
    # streams interleave: accept lateness over the whole generated span
    span_s = int(ENTRIES / 20_000) + 60
    return Aggregator(
        AggregatorConfig(windowing=Windowing(ring_secs=max(600, span_s), allowed_lateness_ms=span_s * 1000))
    )


async def ours(load: Load) -> Run:
    agg = aggregator()
    queue = IngestQueue()
    src = EnvoyAlsSource(EnvoyAlsConfig(port=0))
    folder = asyncio.create_task(fold_forever(queue, agg))
    server = asyncio.create_task(src.run(queue))
    await asyncio.wait_for(src.ready.wait(), 10)
    proc = client(f"127.0.0.1:{src.port}", load)
    first: float | None = None
    cpu0 = 0.0
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while src.stats.lines < load.entries:
                assert proc.poll() in (None, 0), "the client failed"
                if first is None and src.messages:
                    first, cpu0 = time.perf_counter(), time.process_time()
                await asyncio.sleep(0.0005 if first is None else 0.005)
        end, cpu1 = time.perf_counter(), time.process_time()
        await wait_client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        src.stop()
        await asyncio.wait_for(server, 30)
        folder.cancel()
    assert first is not None
    assert src.stats.events == load.entries, (src.stats.events, src.stats.malformed)
    versions = {s.version: s.requests for s in agg.snapshot(None, target="podinfo.test")}
    assert sum(versions.values()) == load.entries and set(versions) == {"primary", "canary"}
    return Run(load.entries, end - first, cpu1 - cpu0)


async def baseline(load: Load) -> Run:
    """grpcio + python protobuf decode of each message + per-entry Python aggregation."""
    p = protos()
    from google.protobuf import struct_pb2

    per_version: dict[str, list[Any]] = {}
    counted = [0]
    first: list[float] = []
    peer_cache: dict[bytes, str] = {}

    def version_of_peer(raw: bytes) -> str:
        v = peer_cache.get(raw)
        if v is None:
            s = struct_pb2.Struct.FromString(raw)
            v = s.fields["version"].string_value if "version" in s.fields else ""
            if not v:
                v = s.fields["revision"].string_value if "revision" in s.fields else ""
                v = "" if v == "latest" else v
            peer_cache[raw] = v
        return v

    async def handler(request_iterator: Any, context: Any) -> Any:
        node_version = ""
        async for m in request_iterator:
            if not first:
                first.append(time.perf_counter())
                first.append(time.process_time())
            if m.HasField("identifier"):
                md = m.identifier.node.metadata
                name = md["WORKLOAD_NAME"] if "WORKLOAD_NAME" in md else ""  # noqa: SIM401 (Struct has no get)
                node_version = "primary" if name.endswith("-primary") else "canary"
            for e in m.http_logs.log_entry:
                c = e.common_properties
                cluster = c.upstream_cluster
                if cluster.startswith("inbound|"):
                    version = node_version
                else:
                    version = ""
                    if "upstream_peer" in c.filter_state_objects:
                        version = version_of_peer(c.filter_state_objects["upstream_peer"].value)
                    if not version:
                        host = cluster.split("|")[3]
                        version = "canary" if host.startswith("podinfo-canary") else "primary"
                code = e.response.response_code.value if e.response.HasField("response_code") else 0
                a = per_version.get(version)
                if a is None:
                    a = per_version[version] = [0, 0, []]
                a[0] += 1
                a[1] += code >= 500
                a[2].append(c.duration.ToNanoseconds() / 1e6)
                counted[0] += 1
        return p.als.StreamAccessLogsResponse()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4 << 20)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.accesslog.v3.AccessLogService",
                {
                    "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                        handler,
                        request_deserializer=p.als.StreamAccessLogsMessage.FromString,
                        response_serializer=p.als.StreamAccessLogsResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    proc = client(f"127.0.0.1:{port}", load)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while counted[0] < load.entries:
                assert proc.poll() is None or counted[0] == load.entries, "the client ended early"
                await asyncio.sleep(0.005)
        end, cpu1 = time.perf_counter(), time.process_time()
        await wait_client(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        await server.stop(5)
    assert sum(a[0] for a in per_version.values()) == load.entries
    assert set(per_version) == {"primary", "canary"}
    return Run(load.entries, end - first[0], cpu1 - first[1])


RESULTS: dict[str, list[Run]] = {}


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def measure(benchmark: Any, who: str, load: Load, run: Any) -> None:
    runs: list[Run] = []

    def once() -> None:
        runs.append(asyncio.run(run(load)))

    benchmark.pedantic(once, rounds=ROUNDS if benchmark.enabled else 1, iterations=1)
    RESULTS[who] = runs
    m = median(runs)
    load_avg = os.getloadavg()[0]
    benchmark.extra_info.update(
        entries=load.entries,
        messages=load.messages,
        bytes=load.bytes,
        events_per_s=m.rate,
        mb_per_s=load.bytes / m.seconds / 1e6,
        server_cpu_s=m.cpu_s,
        load=load_avg,
    )
    rounds = " / ".join(f"{r.rate / 1e3:.0f}" for r in runs)
    print(
        f"\n{who:<9} {load.entries:,} entries: {m.rate / 1e3:,.0f} K entries/s, "
        f"{load.bytes / m.seconds / 1e6:.0f} MB/s (rounds: {rounds} K/s); server CPU {m.cpu_s:.2f} s over "
        f"{m.seconds:.2f} s -> {load.entries / max(m.cpu_s, 1e-9) / 1e3:,.0f} K/s per server CPU s; "
        f"load {load_avg:.1f}"
    )
    mine, theirs = RESULTS.get("ours"), RESULTS.get("baseline")
    if mine and theirs:
        a, b = median(mine), median(theirs)
        print(
            f"          ours / baseline: x{a.rate / b.rate:.1f} (wall), "
            f"x{(b.cpu_s / b.entries) / (a.cpu_s / a.entries):.1f} (server CPU per entry)"
        )


@pytest.mark.benchmark(group="als")
def test_ours_als(benchmark: Any, load: Load) -> None:
    measure(benchmark, "ours", load, ours)


@pytest.mark.benchmark(group="als")
def test_baseline_als(benchmark: Any, load: Load) -> None:
    measure(benchmark, "baseline", load, baseline)
