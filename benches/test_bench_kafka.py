"""Real local Kafka broker → aggregator, against a per-record Python consumer, in the same run.

A Kafka 4.x broker (infra/kafka_broker.py, KRaft, one node) runs on this machine for the module;
N generated Istio JSON lines are produced once into a topic of a few partitions, in two shapes:
one line per record (what Fluent Bit's ``kafka`` output and Vector's ``kafka`` sink send) and
records of many lines. Each round then reads the whole topic with a fresh consumer group from the
earliest offset until all N lines are counted:

* ours: ``KafkaSource`` → ``IngestQueue`` → ``fold_forever`` → ``Aggregator`` (offsets committed
  after folding, as in production), with the default Rust fetch path (``fetch_path="rust"``:
  Fetch requests and record batch decoding in the Rust core, aiokafka only for the group);
* ours-aiokafka: the same source with ``fetch_path="aiokafka"`` (``getmany``, the earlier default);
* baseline: an ``AIOKafkaConsumer`` with ``orjson.loads`` per line and a Python dict of
  (count, errors, durations) per version: the plain-Python way;
* ceiling: ``AIOKafkaConsumer.getmany`` alone, touching nothing (what aiokafka itself costs).

pytest-benchmark times the whole round (group join included); the printed figures and the
``extra_info`` are the *sustained* rates, from the first record received to the last (the group
join, 0.05 to 0.4 s here, is excluded; it is printed separately). The broker runs on the same 2 cores.
Sizes: ``BENCH_KAFKA_LINES`` (default 5 times ``BENCH_LINES``), ``BENCH_KAFKA_LINES_PER_RECORD`` for
the multi-line shape (default 100), ``BENCH_KAFKA_PARTITIONS`` (4), ``BENCH_KAFKA_ROUNDS`` (3).
Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from canary_stream import Aggregator, AggregatorConfig, Windowing, generate
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.kafka import KafkaConfig, KafkaSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "infra"))
from kafka_broker import KafkaBroker

LINES = int(os.environ.get("BENCH_KAFKA_LINES", str(5 * int(os.environ.get("BENCH_LINES", "200000")))))
LINES_PER_RECORD = int(os.environ.get("BENCH_KAFKA_LINES_PER_RECORD", "100"))
PARTITIONS = int(os.environ.get("BENCH_KAFKA_PARTITIONS", "4"))
ROUNDS = int(os.environ.get("BENCH_KAFKA_ROUNDS", "3"))
RPS = 50_000.0  # generated traffic: 1 M lines span 20 s of event time
TIMEOUT_S = 600.0

SHAPES = {"1line": 1, "multiline": LINES_PER_RECORD}

pytestmark = pytest.mark.kafka  # `-m "not kafka"` skips them (Java 17 + Maven on first use)


@dataclass
class Topic:
    name: str
    lines: int
    records: int
    bytes: int  # of the record values


@dataclass
class Run:
    """One read of a whole topic."""

    lines: int
    bytes: int
    total_s: float  # from creating the consumer to the last line counted
    sustained_s: float  # from the first record received to the last line counted
    cpu: Cpu | None = None  # CPU seconds over the sustained interval

    @property
    def rate(self) -> float:
        return self.lines / self.sustained_s

    @property
    def join_s(self) -> float:
        return self.total_s - self.sustained_s


@dataclass
class Cpu:
    """CPU seconds spent during a measurement: the consumer's event-loop thread (the one that
    cannot go faster than one core), the whole consumer process (with the fold thread), and the
    broker's JVM."""

    loop: float
    process: float
    broker: float

    def projected_rate(self, lines: int) -> float:
        """Lines/s on two otherwise idle cores: bounded by the loop thread (one core) and by the
        consumer + broker together (two cores)."""
        return lines / max(self.loop, (self.process + self.broker) / 2)


class CpuMeter:
    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self.start: tuple[float, float, float] | None = None

    def _now(self) -> tuple[float, float, float]:
        return time.thread_time(), time.process_time(), _proc_cpu(self.broker_pid)

    def begin(self) -> None:
        self.start = self._now()

    def end(self) -> Cpu | None:
        if self.start is None:
            return None
        now = self._now()
        loop, process, broker = (b - a for a, b in zip(self.start, now, strict=True))
        return Cpu(loop, process, broker)


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(workdir=tmp_path_factory.mktemp("kafka-bench")) as b:
        yield b


@pytest.fixture(scope="module")
def topics(broker: KafkaBroker) -> dict[str, Topic]:
    lines = generate("istio-json", lines=LINES, seed=7, rps=RPS).splitlines()
    out = {}
    for shape, per_record in SHAPES.items():
        name = f"bench-{shape}-{uuid.uuid4().hex[:8]}"
        broker.create_topic(name, PARTITIONS)
        values = [b"\n".join(lines[i : i + per_record]) for i in range(0, len(lines), per_record)]
        t0 = time.perf_counter()
        asyncio.run(produce(broker.bootstrap, name, values))
        took = time.perf_counter() - t0
        size = sum(len(v) for v in values)
        print(f"\nproduced {len(values):,} records ({shape}, {size / 1e6:.0f} MB) in {took:.1f} s")
        out[shape] = Topic(name, len(lines), len(values), size)
    return out


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Fast pre-production: record batches built directly, chunks of records spread round robin
    over the partitions (so that every partition covers the whole span of event time)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20, acks=1)
    await producer.start()
    try:
        futures = []
        partition = 0
        batch = producer.create_batch()
        for v in values:
            if batch.append(key=None, value=v, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                partition = (partition + 1) % PARTITIONS
                batch = producer.create_batch()
                batch.append(key=None, value=v, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def aggregator() -> Aggregator:
    # partitions are read at different paces: accept lateness over the whole generated span
    span_s = int(LINES / RPS) + 60
    return Aggregator(
        AggregatorConfig(
            format="istio-json",
            windowing=Windowing(ring_secs=max(600, span_s), allowed_lateness_ms=span_s * 1000),
        )
    )


def group() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


# --- ours -----------------------------------------------------------------------------------


async def ours(broker: KafkaBroker, topic: Topic, **config: Any) -> Run:
    source = KafkaSource(
        KafkaConfig(
            bootstrap_servers=broker.bootstrap,
            topics=(topic.name,),
            group_id=group(),
            auto_offset_reset="earliest",
            **config,
        )
    )
    assert source.fetch_path == config.get("fetch_path", "rust")
    agg = aggregator()
    queue = IngestQueue()
    t0 = time.perf_counter()
    reader = asyncio.create_task(source.run(queue))
    folder = asyncio.create_task(fold_forever(queue, agg))
    first: float | None = None
    meter = CpuMeter(broker.pid)
    stats = source.stats
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while stats.lines < topic.lines:
                if reader.done():
                    reader.result()
                    raise AssertionError("source stopped")
                if first is None and queue.queued_bytes + stats.bytes > 0:
                    first = time.perf_counter()
                    meter.begin()
                await asyncio.sleep(0.002 if first is None else 0.01)
        end = time.perf_counter()
        cpu = meter.end()
    finally:
        source.stop()
        await asyncio.wait_for(reader, 60)
        folder.cancel()
    assert stats.events == topic.lines, (stats.events, stats.malformed)
    totals = agg.totals()
    assert totals.accepted == topic.lines
    assert first is not None
    return Run(stats.events, stats.bytes, end - t0, end - first, cpu)


# --- the per-record Python baseline and aiokafka alone ---------------------------------------


def consumer(bootstrap: str, topic: Topic, **overrides: Any) -> AIOKafkaConsumer:
    # the same fetch sizes as ours, so that only the per-record work differs
    defaults = KafkaConfig(bootstrap_servers=bootstrap, topics=(topic.name,))
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group(),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_bytes": defaults.fetch_max_bytes,
        "max_partition_fetch_bytes": defaults.max_partition_fetch_bytes,
        "fetch_max_wait_ms": defaults.fetch_max_wait_ms,
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(topic.name, **kwargs)


async def baseline(broker: KafkaBroker, topic: Topic, parse: bool = True, **overrides: Any) -> Run:
    """aiokafka + orjson per line + dict aggregation of status and duration per version; offsets
    committed after each getmany (what a careful per-record consumer does). With ``parse=False``:
    getmany alone (counting lines with ``bytes.count``), the ceiling of anything built on aiokafka."""
    c = consumer(broker.bootstrap, topic, **overrides)
    meter = CpuMeter(broker.pid)
    t0 = time.perf_counter()
    await c.start()
    per_version: dict[str, list[Any]] = {}
    lines = nbytes = 0
    first: float | None = None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while lines < topic.lines:
                fetched = await c.getmany(timeout_ms=500, max_records=10_000)
                if first is None and fetched:
                    first = time.perf_counter()
                    meter.begin()
                for records in fetched.values():
                    for r in records:
                        v = r.value
                        nbytes += len(v)
                        if not parse:
                            lines += v.count(b"\n") + 1
                            continue
                        for line in v.split(b"\n") if b"\n" in v else (v,):
                            rec = orjson.loads(line)
                            version = rec["upstream_cluster"].split("|")[2]
                            a = per_version.get(version)
                            if a is None:
                                a = per_version[version] = [0, 0, []]
                            a[0] += 1
                            a[1] += rec["response_code"] >= 500
                            a[2].append(rec["duration"])
                            lines += 1
                if parse and fetched:
                    await c.commit()
        end = time.perf_counter()
        cpu = meter.end()
    finally:
        await c.stop()
    assert lines == topic.lines
    if parse:
        assert sum(a[0] for a in per_version.values()) == topic.lines
    assert first is not None
    return Run(lines, nbytes, end - t0, end - first, cpu)


# --- the benchmarks -------------------------------------------------------------------------

RESULTS: dict[tuple[str, str], list[Run]] = {}


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.sustained_s)[len(runs) // 2]


def measure(benchmark: Any, who: str, shape: str, topic: Topic, run: Any) -> None:
    runs: list[Run] = []

    def once() -> None:
        runs.append(asyncio.run(run()))

    rounds = ROUNDS if benchmark.enabled else 1
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    RESULTS[(who, shape)] = runs
    m = median(runs)
    load = os.getloadavg()[0]
    info: dict[str, Any] = {
        "lines": topic.lines,
        "bytes": topic.bytes,
        "records": topic.records,
        "sustained_events_per_s": m.rate,
        "sustained_mb_per_s": m.bytes / m.sustained_s / 1e6,
        "join_s": m.join_s,
        "load": load,
    }
    cpu = ""
    if m.cpu is not None:
        info.update(
            cpu_loop_s=m.cpu.loop,
            cpu_process_s=m.cpu.process,
            cpu_broker_s=m.cpu.broker,
            projected_events_per_s=m.cpu.projected_rate(m.lines),
        )
        cpu = (
            f"\n          CPU: loop thread {m.cpu.loop:.2f} s, process {m.cpu.process:.2f} s, broker "
            f"{m.cpu.broker:.2f} s over {m.sustained_s:.2f} s -> {m.lines / m.cpu.loop / 1e3:,.0f} K/s per "
            f"loop-thread CPU s; on 2 idle cores ~{m.cpu.projected_rate(m.lines) / 1e3:,.0f} K/s"
        )
    benchmark.extra_info.update(info)
    rates = " / ".join(f"{r.rate / 1e3:.0f}" for r in runs)
    print(
        f"\n{who:<9} {shape:<9} {topic.lines:,} lines in {topic.records:,} records: "
        f"{m.rate / 1e3:,.0f} K events/s, {m.bytes / m.sustained_s / 1e6:.0f} MB/s sustained "
        f"(rounds: {rates} K/s), {m.lines / m.total_s / 1e3:,.0f} K/s incl. join ({m.join_s:.2f} s); "
        f"load {load:.1f}{cpu}"
    )
    if who == "ours":
        return
    for variant in ("ours", "ours-aiokafka"):
        mine = RESULTS.get((variant, shape))
        if mine and variant != who:
            print(f"          {variant} / {who} ({shape}): x{median(mine).rate / m.rate:.1f}")


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.benchmark(group="kafka")
def test_ours_kafka(benchmark: Any, broker: KafkaBroker, topics: dict[str, Topic], shape: str) -> None:
    topic = topics[shape]
    measure(benchmark, "ours", shape, topic, lambda: ours(broker, topic))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.benchmark(group="kafka")
def test_ours_aiokafka_kafka(
    benchmark: Any, broker: KafkaBroker, topics: dict[str, Topic], shape: str
) -> None:
    """Ours with ``fetch_path="aiokafka"``: getmany and per-record ConsumerRecords (the earlier path)."""
    topic = topics[shape]
    measure(benchmark, "ours-aiokafka", shape, topic, lambda: ours(broker, topic, fetch_path="aiokafka"))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.benchmark(group="kafka")
def test_aiokafka_orjson_kafka(
    benchmark: Any, broker: KafkaBroker, topics: dict[str, Topic], shape: str
) -> None:
    topic = topics[shape]
    measure(benchmark, "baseline", shape, topic, lambda: baseline(broker, topic))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.benchmark(group="kafka")
def test_aiokafka_getmany_kafka(
    benchmark: Any, broker: KafkaBroker, topics: dict[str, Topic], shape: str
) -> None:
    topic = topics[shape]
    measure(benchmark, "getmany", shape, topic, lambda: baseline(broker, topic, parse=False))
