"""KafkaSource against a real Kafka 4.x broker: records of one and of many lines, JSON envelopes,
attribution from headers and keys, commit after fold (consumer restart resumes), poison records,
backpressure and lag, and a broker crash mid-stream. The default fetch path (Rust) everywhere; the
aiokafka path as well where the two could differ (parametrized ``fetch_path``)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from canary_stream import Aggregator, AggregatorConfig, generate
from canary_stream.core import FeedResult, Windowing
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.kafka import (
    RUST_FETCHER_AVAILABLE,
    KafkaConfig,
    KafkaSource,
    envelope_joiner,
    join_values,
)
from kafka_fixtures import KafkaBroker, unique

pytest_plugins = ("kafka_fixtures",)

Headers = list[tuple[str, bytes]]
BOTH_PATHS = pytest.mark.parametrize("fetch_path", ["rust", "aiokafka"])


@dataclass
class Rec:
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    partition: int | None = None


def aggregator() -> Aggregator:
    # partitions are read in any order: allow lateness over the whole generated span
    return Aggregator(
        AggregatorConfig(
            format="istio-json", windowing=Windowing(ring_secs=3600, allowed_lateness_ms=3_000_000)
        )
    )


class SlowAggregator(Aggregator):
    def __init__(self, delay: float = 0.01) -> None:
        super().__init__(aggregator().config)
        self.delay = delay

    def feed(self, data: bytes, **kwargs: Any) -> FeedResult:
        time.sleep(self.delay)  # in fold_forever's thread
        return super().feed(data, **kwargs)


def lines_of(n: int, seed: int) -> list[bytes]:
    return generate("istio-json", lines=n, seed=seed).splitlines()


def chunk_records(lines: Sequence[bytes], seed: int, max_lines: int = 40) -> list[bytes]:
    """Half the lines as one-line records (no newline, like Fluent Bit / Vector), the rest as records
    of 2..max_lines lines, some ending with a newline and some not."""
    rng = random.Random(seed)
    half = len(lines) // 2
    records = list(lines[:half])
    i = half
    while i < len(lines):
        n = rng.randint(2, max_lines)
        body = b"\n".join(lines[i : i + n])
        records.append(body + b"\n" if rng.random() < 0.5 else body)
        i += n
    return records


async def produce(bootstrap: str, topic: str, records: Sequence[Rec | bytes], **kwargs: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kwargs)
    await producer.start()
    try:
        futures = []
        for r in records:
            rec = r if isinstance(r, Rec) else Rec(r)
            futures.append(
                await producer.send(
                    topic, rec.value, key=rec.key, headers=rec.headers or None, partition=rec.partition
                )
            )
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def config(broker: KafkaBroker, topic: str, group: str, **kwargs: Any) -> KafkaConfig:
    defaults: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap,
        "topics": (topic,),
        "group_id": group,
        "auto_offset_reset": "earliest",
        "poll_timeout_ms": 200,
        "lag_interval_s": 0.1,
    }
    defaults.update(kwargs)
    return KafkaConfig(**defaults)


class Pipeline:
    """A KafkaSource and fold_forever on one queue, like `canary-stream run`."""

    def __init__(self, cfg: KafkaConfig, agg: Aggregator | None = None, max_bytes: int = 8 << 20) -> None:
        self.source = KafkaSource(cfg)
        self.agg = agg or aggregator()
        self.queue = IngestQueue(max_bytes=max_bytes)
        self.reader: asyncio.Task[None] | None = None
        self.folder: asyncio.Task[None] | None = None

    def start(self, fold: bool = True) -> None:
        self.reader = asyncio.create_task(self.source.run(self.queue))
        if fold:
            self.start_folding()

    def start_folding(self) -> None:
        self.folder = asyncio.create_task(fold_forever(self.queue, self.agg))

    async def until(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                if self.reader is not None and self.reader.done():
                    self.reader.result()  # raise what stopped it
                    raise AssertionError("source stopped")
                await asyncio.sleep(0.05)

    async def accepted(self, n: int, timeout: float = 60.0) -> None:
        # stats, not agg.totals(): fold_forever feeds the aggregator in a thread, and the
        # aggregator must not be read while it is fed (it raises "Already mutably borrowed")
        await self.until(lambda: self.source.stats.events >= n, timeout)

    async def stop(self) -> None:
        self.source.stop()  # folds and commits what is in flight first
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 60)
        if self.folder is not None:
            self.folder.cancel()
            await asyncio.gather(self.folder, return_exceptions=True)


async def committed(broker: KafkaBroker, topic: str, group: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def end_offsets(broker: KafkaBroker, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_all_values(broker: KafkaBroker, topic: str, partitions: int) -> list[bytes]:
    """Every record value in the log (no group), to count what the broker really holds."""
    ends = await end_offsets(broker, topic, partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        values: list[bytes] = []
        async with asyncio.timeout(60):
            while any([await consumer.position(tp) < ends[tp.partition] for tp in tps]):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    values += [r.value for r in records]
        return values
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------------------------
# Without a broker


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"kafka\.topics"):
        KafkaConfig()
    with pytest.raises(ValueError, match=r"kafka\.topics"):
        KafkaConfig(topics=("a",), topic_pattern="a.*")
    with pytest.raises(ValueError, match=r"kafka\.auto_offset_reset"):
        KafkaConfig(topics=("a",), auto_offset_reset="oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kafka\.max_records"):
        KafkaConfig(topics=("a",), max_records=0)
    with pytest.raises(ValueError, match=r"kafka\.sasl_plain_username"):
        KafkaConfig(topics=("a",), security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")
    with pytest.raises(ValueError, match=r"kafka\.security_protocol"):
        KafkaConfig(topics=("a",), ssl_cafile="/ca.pem")
    with pytest.raises(ValueError, match=r"kafka\.envelope_key"):
        KafkaConfig(topics=("a",), envelope_key='a"b')
    with pytest.raises(ValueError, match=r"kafka\.bootstrap_servers"):
        KafkaConfig(topics=("a",), bootstrap_servers="")
    with pytest.raises(ValueError, match=r"kafka\.commit_interval_ms"):
        KafkaConfig(topics=("a",), commit_interval_ms=-1)
    sasl = KafkaConfig(
        topics=("a",),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="u",
        sasl_plain_password="p",
        extra={"client_rack": "r1"},
    ).consumer_kwargs()
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-256" and sasl["sasl_plain_username"] == "u"
    assert sasl["enable_auto_commit"] is False and sasl["client_rack"] == "r1"
    assert "ssl_context" not in sasl


def test_buffers_end_with_a_newline_and_have_no_blank_lines() -> None:
    assert join_values([b"a", b"b\n", b"c\nd", b"e\n"]) == b"a\nb\nc\nd\ne\n"
    join = envelope_joiner("message")
    vector = [
        json.dumps({"host": "h", "message": 'x "q"', "source_type": "k"}).encode(),  # spaced
        json.dumps({"host": "h", "message": "y"}, separators=(",", ":")).encode(),
        b"raw line",
    ]
    assert join(vector) == b'{"log":"x \\"q\\"", "source_type": "k"}\n{"log":"y"}\nraw line\n'


def test_envelope_lines_are_decoded_by_the_core() -> None:
    lines = lines_of(300, seed=11)
    fluent_bit = [
        json.dumps({"@timestamp": 1.5, "log": ln.decode(), "stream": "stdout"}).encode() for ln in lines
    ]
    vector = [
        json.dumps({"host": "n1", "kubernetes": {"pod_name": "p"}, "message": ln.decode()}).encode()
        for ln in lines
    ]
    for key, records in (("log", fluent_bit), ("message", vector)):
        agg = aggregator()
        agg.feed(envelope_joiner(key)(records))
        assert agg.totals().accepted == len(lines), key


# --------------------------------------------------------------------------------------------
# Against the session broker


@BOTH_PATHS
async def test_records_of_one_and_many_lines_are_all_counted(
    kafka_broker: KafkaBroker, fetch_path: str
) -> None:
    topic, group = unique("lines"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 3)
    lines = lines_of(6000, seed=1)
    records = chunk_records(lines, seed=1)
    await produce(kafka_broker.bootstrap, topic, records)

    p = Pipeline(config(kafka_broker, topic, group, max_records=500, fetch_path=fetch_path))
    assert p.source.fetch_path == fetch_path
    p.start()
    await p.accepted(len(lines))
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()

    totals = p.agg.totals()
    assert totals.accepted == totals.lines == len(lines)
    assert totals.malformed == {} and totals.skipped == {}
    stats = p.source.stats
    assert stats.events == len(lines) and stats.malformed == {}
    assert stats.bytes == sum(len(r) + (not r.endswith(b"\n")) for r in records)
    assert stats.batches >= len(records) // 500
    assert sum(s.requests for s in p.agg.snapshot()) == len(lines)
    # everything folded was committed: the group's offsets are the end offsets
    assert await committed(kafka_broker, topic, group, 3) == await end_offsets(kafka_broker, topic, 3)


@BOTH_PATHS
async def test_json_envelopes_fluent_bit_and_vector(kafka_broker: KafkaBroker, fetch_path: str) -> None:
    lines = lines_of(1000, seed=2)
    shapes = {
        # Fluent Bit kafka output, format json: `log` is not the first key
        "log": [
            json.dumps({"@timestamp": 1.7e9, "log": ln.decode(), "stream": "stdout"}).encode() for ln in lines
        ],
        # Vector kafka sink, codec json (compact, keys sorted): `message` after `kubernetes`
        "message": [
            json.dumps(
                {"host": "n1", "kubernetes": {"pod_name": "podinfo-canary-1"}, "message": ln.decode()},
                separators=(",", ":"),
            ).encode()
            for ln in lines
        ],
    }
    for key, records in shapes.items():
        topic, group = unique(f"env-{key}"), unique("group")
        await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
        await produce(kafka_broker.bootstrap, topic, records)
        p = Pipeline(config(kafka_broker, topic, group, envelope_key=key, fetch_path=fetch_path))
        p.start()
        await p.accepted(len(lines))
        await p.stop()
        assert p.agg.totals().accepted == len(lines) and p.source.stats.malformed == {}, key


@BOTH_PATHS
async def test_target_and_version_from_headers_and_keys(kafka_broker: KafkaBroker, fetch_path: str) -> None:
    topic, group = unique("attr"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    lines = lines_of(900, seed=3)
    a, b, c = lines[:300], lines[300:600], lines[600:]
    records = (
        [Rec(ln, headers=[("target", b"reviews"), ("version", b"v2")], partition=0) for ln in a]
        + [
            Rec(b"\n".join(b[i : i + 10]), key=b"ratings/v7", partition=i // 10 % 2)
            for i in range(0, 300, 10)
        ]
        # a header wins over the key; the key fills in what the headers leave out
        + [Rec(ln, key=b"ignored/v9", headers=[("target", b"details")], partition=1) for ln in c]
    )
    await produce(kafka_broker.bootstrap, topic, records)
    p = Pipeline(config(kafka_broker, topic, group, fetch_path=fetch_path))
    p.start()
    await p.accepted(len(lines))
    await p.stop()
    got = {(s.target, s.version): s.requests for s in p.agg.snapshot()}
    assert got == {("reviews", "v2"): 300, ("ratings", "v7"): 300, ("details", "v9"): 300}


async def test_consumer_restart_resumes_from_the_committed_offsets(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("resume"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    first, second = lines_of(2000, seed=4), lines_of(1500, seed=5)
    await produce(kafka_broker.bootstrap, topic, first)

    one = Pipeline(config(kafka_broker, topic, group, max_records=300))
    one.start()
    await one.accepted(len(first))
    await one.stop()
    after_first = await committed(kafka_broker, topic, group, 2)
    assert sum(v or 0 for v in after_first.values()) == len(first)

    await produce(kafka_broker.bootstrap, topic, second)
    # a new consumer of the group (a new process): starts at the committed offsets, even with
    # auto_offset_reset=earliest, so it sees exactly the second part
    two = Pipeline(config(kafka_broker, topic, group, max_records=300))
    two.start()
    await two.accepted(len(second))
    await asyncio.sleep(0.5)  # anything extra would show up now
    await two.stop()
    assert two.agg.totals().accepted == len(second)
    assert sum(s.requests for s in two.agg.snapshot()) == len(second)
    assert sum(v or 0 for v in (await committed(kafka_broker, topic, group, 2)).values()) == len(first) + len(
        second
    )


async def test_uncommitted_batches_are_read_again_after_a_crash(kafka_broker: KafkaBroker) -> None:
    """A consumer that dies with batches queued but not folded: their offsets were never
    committed, so the next consumer reads them again (at-least-once, nothing lost)."""
    topic, group = unique("crash-consumer"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
    lines = lines_of(1000, seed=6)
    await produce(kafka_broker.bootstrap, topic, lines)

    dead = Pipeline(config(kafka_broker, topic, group, max_records=100))
    dead.start(fold=False)  # the core never folds: nothing may be committed
    await dead.until(lambda: dead.queue.queued_bytes > 0 and dead.source.stats.lag is not None)
    assert dead.reader is not None
    dead.reader.cancel()  # a crash: no drain, no commit
    await asyncio.gather(dead.reader, return_exceptions=True)
    assert dead.source.commits == 0
    assert (await committed(kafka_broker, topic, group, 1))[0] is None

    again = Pipeline(config(kafka_broker, topic, group, max_records=100))
    again.start()
    await again.accepted(len(lines))
    await again.stop()
    assert again.agg.totals().accepted == len(lines)


@BOTH_PATHS
async def test_poison_records_are_counted_and_skipped(kafka_broker: KafkaBroker, fetch_path: str) -> None:
    topic, group = unique("poison"), unique("group")
    limit = 12 * 1024 * 1024
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1, configs={"max.message.bytes": str(limit)})
    good = lines_of(600, seed=7)
    garbage = random.Random(7).randbytes(4096).replace(b"\n", b"") + b"\xff\xfe"
    huge = b"{" + b"x" * (10 * 1024 * 1024) + b"}"
    records = [*good[:200], garbage, *good[200:400], huge, *good[400:]]
    await produce(kafka_broker.bootstrap, topic, records, max_request_size=limit)

    p = Pipeline(config(kafka_broker, topic, group, max_records=150, fetch_path=fetch_path))
    p.start()
    await p.accepted(len(good))
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()
    stats = p.source.stats
    assert p.agg.totals().accepted == len(good)
    assert stats.malformed.get("record_too_large") == 1  # skipped before the core
    assert sum(n for r, n in stats.malformed.items() if r != "record_too_large") == 1  # the garbage line
    assert (await committed(kafka_broker, topic, group, 1))[0] == len(records)


async def test_full_queue_pauses_fetching_and_memory_stays_bounded(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("backpressure"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    lines = lines_of(4000, seed=8)  # ≈ 3.3 MB
    await produce(kafka_broker.bootstrap, topic, lines)

    max_bytes = 128 * 1024
    p = Pipeline(config(kafka_broker, topic, group, max_records=100), max_bytes=max_bytes)
    p.start(fold=False)
    await p.until(lambda: p.source.stats.waits > 0 and (p.source.stats.lag or 0) > 0)
    await asyncio.sleep(0.5)
    assert p.source.pauses >= 1
    assert p.queue.queued_bytes <= max_bytes
    lag_while_blocked = p.source.stats.lag or 0
    assert lag_while_blocked >= len(lines) // 2  # the rest waits in Kafka, not in memory
    p.start_folding()
    await p.accepted(len(lines))
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()
    assert p.agg.totals().accepted == len(lines)


# --------------------------------------------------------------------------------------------
# A broker of its own: crash and restart


@pytest.mark.slow
async def test_broker_restart_mid_stream_loses_nothing(private_kafka_broker: KafkaBroker) -> None:
    broker = private_kafka_broker
    topic, group = unique("restart"), unique("group")
    await asyncio.to_thread(broker.create_topic, topic, 2)
    max_records = 200
    chunks = [lines_of(500, seed=100 + i) for i in range(8)]
    # a slow core (50 ms per batch of at most 200 records; at 10 ms the Rust fetch path caught up
    # before the kill in ~1 CI run of 10) and a small queue: the consumer is behind, with batches
    # in flight and folded-but-uncommitted offsets, when the broker dies
    p = Pipeline(
        config(broker, topic, group, max_records=max_records), SlowAggregator(0.05), max_bytes=256 * 1024
    )
    p.start()

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:

        async def send(chunk: list[bytes]) -> None:
            futures = [await producer.send(topic, ln) for ln in chunk]
            await asyncio.gather(*futures)

        for chunk in chunks[:3]:
            await send(chunk)
        await p.accepted(600)  # mid-stream: the consumer is still working through the topic
        # behind = produced but not folded yet. Not stats.lag: while the source is paused (full
        # queue) the fetcher does not fetch, so the high watermark is stale and the lag read 0 in
        # ~1 run of 4 although the consumer was behind
        behind = sum(map(len, chunks[:3])) - p.source.stats.events
        broker.kill()
        sending = asyncio.ensure_future(send(chunks[3]))  # waits for the broker
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.start)
        async with asyncio.timeout(90):
            await sending
        for chunk in chunks[4:]:
            await send(chunk)
    finally:
        await producer.stop()

    produced = len(await read_all_values(broker, topic, 2))  # what the log really holds
    assert produced >= sum(map(len, chunks))
    await p.accepted(produced, timeout=120)
    await p.until(lambda: p.source.stats.lag == 0, timeout=60)
    await asyncio.sleep(1.0)
    await p.stop()
    accepted = p.agg.totals().accepted
    print(
        f"not folded at the kill {behind}, produced {produced}, accepted {accepted}, "
        f"commits {p.source.commits}, pauses {p.source.pauses}, broker starts {broker.starts}"
    )
    assert behind, "the consumer was not behind when the broker died"
    assert broker.starts == 2
    assert produced <= accepted <= produced + max_records
    assert sum(v or 0 for v in (await committed(broker, topic, group, 2)).values()) == produced


@pytest.mark.parametrize("pipelining", [False, True])
async def test_rebalance_commits_revoked_partitions_after_their_batches_fold(
    kafka_broker: KafkaBroker, pipelining: bool
) -> None:
    """A second member joins while the first is behind: the first waits for its in-flight batches
    of the revoked partitions to fold and commits them before giving them up, so the second starts
    where the first stopped (duplicates at most one batch, nothing lost). With pipelined fetches,
    a request in flight for revoked partitions is dropped, never handed over."""
    topic, group = unique("rebalance"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 4)
    lines = lines_of(4000, seed=9)
    await produce(kafka_broker.bootstrap, topic, lines)
    max_records = 100
    cfg = config(
        kafka_broker,
        topic,
        group,
        max_records=max_records,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        fetch_pipelining=pipelining,
    )
    slow = SlowAggregator(delay=0.2)  # the first member stays behind until the rebalance
    first = Pipeline(cfg, slow, max_bytes=128 * 1024)
    first.start()
    await first.accepted(200)
    second = Pipeline(cfg, max_bytes=128 * 1024)
    second.start()
    await first.until(lambda: first.source.revoked > 0, 60)
    slow.delay = 0.0
    await second.until(lambda: first.source.stats.events + second.source.stats.events >= len(lines), 90)
    await second.until(lambda: (first.source.stats.lag, second.source.stats.lag) == (0, 0), 30)
    await asyncio.sleep(0.5)
    await first.stop()
    await second.stop()
    a, b = first.agg.totals().accepted, second.agg.totals().accepted
    print(f"first {a}, second {b}, commits {first.source.commits}/{second.source.commits}")
    assert b > 0, "the second member got no partition"
    assert len(lines) <= a + b <= len(lines) + max_records
    assert sum(v or 0 for v in (await committed(kafka_broker, topic, group, 4)).values()) == len(lines)
    if pipelining:
        assert first.source._rust_fetcher.pipelined > 0 and second.source._rust_fetcher.pipelined > 0


# --------------------------------------------------------------------------------------------
# The Rust fetch path


def test_rust_is_the_default_fetch_path_and_tls_sasl_fall_back(caplog: pytest.LogCaptureFixture) -> None:
    assert RUST_FETCHER_AVAILABLE
    assert KafkaSource(KafkaConfig(topics=("a",))).fetch_path == "rust"
    assert KafkaSource(KafkaConfig(topics=("a",), fetch_path="aiokafka")).fetch_path == "aiokafka"
    with pytest.raises(ValueError, match=r"kafka\.fetch_path"):
        KafkaConfig(topics=("a",), fetch_path="librdkafka")  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="canary_stream.sources.kafka"):
        tls = KafkaSource(KafkaConfig(topics=("a",), security_protocol="SSL"))
        sasl = KafkaSource(
            KafkaConfig(
                topics=("a",),
                security_protocol="SASL_PLAINTEXT",
                sasl_plain_username="u",
                sasl_plain_password="p",
            )
        )
        txn = KafkaSource(KafkaConfig(topics=("a",), extra={"isolation_level": "read_committed"}))
    assert (tls.fetch_path, sasl.fetch_path, txn.fetch_path) == ("aiokafka",) * 3
    assert sum("using the aiokafka fetch path" in r.message for r in caplog.records) == 3


async def test_rust_path_leaves_aiokafkas_fetcher_idle(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("idle"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    lines = lines_of(3000, seed=12)
    await produce(kafka_broker.bootstrap, topic, lines)
    p = Pipeline(config(kafka_broker, topic, group, max_records=400))
    p.start()
    await p.accepted(len(lines))
    consumer = p.source._consumer
    assert consumer is not None
    assigned = consumer.assignment()
    assert len(assigned) == 2 and consumer.paused() == assigned  # aiokafka never fetches
    assert p.source.fetches >= len(lines) // 400
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()
    assert p.agg.totals().accepted == len(lines)
    assert await committed(kafka_broker, topic, group, 2) == await end_offsets(kafka_broker, topic, 2)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_batches_compressed_by_the_broker_are_decoded(kafka_broker: KafkaBroker, codec: str) -> None:
    """The topic's compression.type makes the broker recompress what it stores with its own (Java)
    codecs: snappy in the xerial framing, lz4 frames, zstd, gzip."""
    topic, group = unique(f"codec-{codec}"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2, configs={"compression.type": codec})
    lines = lines_of(4000, seed=13)
    await produce(kafka_broker.bootstrap, topic, chunk_records(lines, seed=13))
    p = Pipeline(config(kafka_broker, topic, group, max_records=700))
    p.start()
    await p.accepted(len(lines))
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()
    assert p.agg.totals().accepted == len(lines)
    assert p.source.stats.malformed == {}
    assert await committed(kafka_broker, topic, group, 2) == await end_offsets(kafka_broker, topic, 2)


async def test_offset_out_of_range_resets_per_auto_offset_reset(kafka_broker: KafkaBroker) -> None:
    """A committed offset past the end of the log (the log was truncated or recreated): the Rust
    fetcher's OFFSET_OUT_OF_RANGE resets the partition to the earliest offset."""
    topic, group = unique("range"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
    lines = lines_of(500, seed=14)
    await produce(kafka_broker.bootstrap, topic, lines)
    setter = AIOKafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    await setter.start()
    try:
        tp = TopicPartition(topic, 0)
        setter.assign([tp])
        await setter.commit({tp: 1_000_000})
    finally:
        await setter.stop()
    p = Pipeline(config(kafka_broker, topic, group))
    p.start()
    await p.accepted(len(lines))
    await p.until(lambda: p.source.stats.lag == 0)
    await p.stop()
    assert p.source.fetch_errors >= 1
    assert p.agg.totals().accepted == len(lines)
    assert (await committed(kafka_broker, topic, group, 1))[0] == len(lines)


@pytest.mark.parametrize("interval_ms", [0, 1000])
async def test_commits_are_spaced_by_commit_interval_ms(kafka_broker: KafkaBroker, interval_ms: int) -> None:
    """Many small batches: with an interval, at most one commit per interval while folding (and
    one at stop), and the folded offsets are all committed in the end; 0 commits after folds."""
    topic, group = unique(f"spacing-{interval_ms}"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
    lines = lines_of(3000, seed=24)
    await produce(kafka_broker.bootstrap, topic, lines)
    p = Pipeline(
        config(
            kafka_broker,
            topic,
            group,
            commit_interval_ms=interval_ms,
            max_records=50,
            max_partition_fetch_bytes=8 << 10,
        ),
        agg=SlowAggregator(0.005),
    )
    t0 = time.monotonic()
    p.start()
    await p.accepted(len(lines))
    elapsed = time.monotonic() - t0
    await p.stop()
    batches = p.source.stats.batches
    assert batches >= 40
    if interval_ms:
        assert p.source.commits <= elapsed / (interval_ms / 1000) + 2
    else:
        assert p.source.commits >= 10  # one per fold, coalesced only while one is in flight
    assert await committed(kafka_broker, topic, group, 1) == await end_offsets(kafka_broker, topic, 1)


# --------------------------------------------------------------------------------------------
# The Rust fetcher on its own: zero-copy line buffers, their pool, pipelined fetches

needs_rust = pytest.mark.skipif(not RUST_FETCHER_AVAILABLE, reason="extension without the Rust fetcher")


def fetcher(**kwargs: Any) -> Any:
    from canary_stream import _native

    return _native.KafkaFetcher(**kwargs)


def leader(broker: KafkaBroker) -> tuple[str, int]:
    host, _, port = broker.bootstrap.rpartition(":")
    return host, int(port)


async def fetch_from(f: Any, broker: KafkaBroker, positions: Sequence[tuple[str, int, int]]) -> Any:
    host, port = leader(broker)
    parts, errors = await asyncio.to_thread(f.fetch, [(host, port, list(positions))])
    assert errors == []
    return parts


async def until(done: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.01)


def joined(values: Sequence[bytes]) -> bytes:
    return b"".join(v + b"\n" for v in values)


@needs_rust
async def test_fetched_lines_are_a_read_only_buffer_the_core_reads(kafka_broker: KafkaBroker) -> None:
    topic = unique("zerocopy")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
    lines = lines_of(300, seed=21)
    await produce(kafka_broker.bootstrap, topic, lines)
    f = fetcher()
    parts = await fetch_from(f, kafka_broker, [(topic, 0, 0)])
    [(_, _, fetch_offset, error, next_offset, *_rest, groups, skipped, _partial)] = parts
    assert (fetch_offset, error, next_offset, skipped) == (0, 0, len(lines), {})
    [(target, version, data, records)] = groups
    assert (target, version, records) == ("", "", len(lines))
    assert type(data).__name__ == "KafkaLines"
    assert bytes(data) == joined(lines)
    assert len(data) == len(joined(lines))
    view = memoryview(data)
    assert view.readonly and view.format == "B" and view.nbytes == len(data)
    with pytest.raises(TypeError):
        view[0] = 0
    with pytest.raises((TypeError, BufferError)):
        ctypes.c_char.from_buffer(data)  # asks for a writable buffer
    view.release()
    agg = aggregator()
    assert agg.feed(data).lines == len(lines)  # read in place: no bytes() copy needed
    assert agg.totals().accepted == len(lines)


@needs_rust
async def test_pooled_buffers_still_viewed_from_python_are_never_reused(kafka_broker: KafkaBroker) -> None:
    """A dropped KafkaLines gives its buffer back to the pool; one still viewed from Python (a
    memoryview holds the object) is not, so later fetches never write over it."""
    topic = unique("pool")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 1)
    lines = lines_of(2000, seed=22)
    await produce(kafka_broker.bootstrap, topic, lines)
    f = fetcher(partition_max_bytes=64 << 10, max_records=200)

    async def lines_at(offset: int) -> tuple[Any, int]:
        [part] = await fetch_from(f, kafka_broker, [(topic, 0, offset)])
        [(_, _, data, _)] = part[9]
        return data, part[4]

    data, next_offset = await lines_at(0)
    kept = memoryview(data)
    expected = bytes(data)
    assert expected == joined(lines[:next_offset])
    idle = f.pooled_buffers
    del data  # the memoryview still holds it: not pooled
    assert f.pooled_buffers == idle
    offset = next_offset
    while offset < len(lines):  # fetch (and drop) everything else: the pool is used meanwhile
        data, end = await lines_at(offset)
        assert bytes(data) == joined(lines[offset:end])
        del data
        offset = end
    # the executor's worker thread drops its reference to the last result a moment later
    await until(lambda: f.pooled_buffers >= 1)
    assert bytes(kept) == expected  # never written over
    before = f.pooled_buffers
    kept.release()  # the last reference: the buffer goes back
    assert f.pooled_buffers == min(before + 1, 8)
    again, _ = await lines_at(0)  # a pooled buffer, refilled
    assert bytes(again) == expected


@needs_rust
async def test_pipelined_fetches_follow_the_callers_positions(kafka_broker: KafkaBroker) -> None:
    """The next Fetch is sent before a response is decoded; it answers the next call only when that
    asks for the same partitions at the same offsets (a seek or another partition set drops it)."""
    topic = unique("pipeline")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    values = [Rec(v, partition=i % 2) for i, v in enumerate(lines_of(1200, seed=23))]
    await produce(kafka_broker.bootstrap, topic, values, max_batch_size=4096)
    by_partition = {p: [r.value for r in values if r.partition == p] for p in (0, 1)}
    f = fetcher(partition_max_bytes=16 << 10, pipeline=True)

    async def read(positions: dict[int, int]) -> dict[int, tuple[int, bytes]]:
        parts = await fetch_from(f, kafka_broker, [(topic, p, off) for p, off in positions.items()])
        out = {}
        for _t, partition, fetch_offset, error, next_offset, *_r, groups, _s, _p in parts:
            assert error == 0 and fetch_offset == positions[partition]
            out[partition] = (next_offset, b"".join(bytes(g[2]) for g in groups))
        return out

    positions = {0: 0, 1: 0}
    got = await read(positions)
    assert f.pipelined == 0
    steps = 0
    while any(positions[p] < len(by_partition[p]) for p in positions):
        for p, (end, data) in got.items():
            assert data == joined(by_partition[p][positions[p] : end])
            positions[p] = end
        got = await read(positions)
        steps += 1
    assert steps >= 3
    assert f.pipelined == steps and f.discarded == 0  # every next call was the request in flight
    # a seek back: the request in flight is for other offsets, so its response is dropped
    got = await read({0: 5, 1: positions[1]})
    assert f.discarded == 1
    end, data = got[0]
    assert data == joined(by_partition[0][5:end])
    # one partition only (the other revoked): dropped again, and the data is the caller's
    got = await read({1: 7})
    assert f.discarded == 2
    end, data = got[1]
    assert data == joined(by_partition[1][7:end])
    # without pipelining: nothing in flight between calls
    plain = fetcher(partition_max_bytes=16 << 10)  # the default
    host, port = leader(kafka_broker)
    for _ in range(2):
        await asyncio.to_thread(plain.fetch, [(host, port, [(topic, 0, 0)])])
    assert (plain.pipelined, plain.discarded) == (0, 0)
