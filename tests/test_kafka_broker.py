"""A real Kafka 4.x broker (KRaft) and aiokafka against it: the consumer-group round trip the
Kafka telemetry source will rely on, and recovery from a broker crash."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kafka_fixtures import KafkaBroker, KafkaInfraError, metadata, unique

pytest_plugins = ("kafka_fixtures",)


def group_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


async def take(consumer: AIOKafkaConsumer, n: int, timeout: float = 30.0) -> list[tuple[int, int, bytes]]:
    """Exactly ``n`` records as (partition, offset, value); the consumer's position moves past them
    and no further."""
    got: list[tuple[int, int, bytes]] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=n - len(got))
            for tp, records in batch.items():
                got += [(tp.partition, r.offset, r.value) for r in records]
    return got


def test_broker_settings(kafka_broker: KafkaBroker) -> None:
    info = metadata(kafka_broker.address)
    assert [(node, port) for node, _, port in info.brokers] == [(1, kafka_broker.port)]
    assert info.cluster_id == kafka_broker.cluster_id
    name = unique("settings")
    kafka_broker.create_topic(name, 3)
    assert name in kafka_broker.topics()
    with pytest.raises(KafkaInfraError, match="already exists"):
        kafka_broker.create_topic(name, 3)
    # auto.create.topics.enable=false: asking for an unknown topic does not create it
    missing = unique("typo")
    assert metadata(kafka_broker.address, [missing]).topics[missing].error_code == 3  # UNKNOWN_TOPIC
    assert missing not in kafka_broker.topics()


async def test_group_commit_then_second_consumer_resumes(kafka_broker: KafkaBroker) -> None:
    topic, group = unique("roundtrip"), unique("group")
    await asyncio.to_thread(kafka_broker.create_topic, topic, 2)
    sent = [f"m{i}".encode() for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, value in enumerate(sent):
            await producer.send(topic, value, partition=i % 2)
        await producer.flush()
    finally:
        await producer.stop()

    first = group_consumer(kafka_broker.bootstrap, topic, group)
    await first.start()
    try:
        part_one = await take(first, 7)
        await first.commit()
        positions = {p: await first.position(TopicPartition(topic, p)) for p in (0, 1)}
    finally:
        await first.stop()

    second = group_consumer(kafka_broker.bootstrap, topic, group)
    await second.start()
    try:
        committed = {p: await second.committed(TopicPartition(topic, p)) for p in (0, 1)}
        part_two = await take(second, len(sent) - len(part_one))
        assert await second.getmany(timeout_ms=300) == {}  # nothing beyond the 20
    finally:
        await second.stop()

    assert committed == positions
    assert sum(positions.values()) == len(part_one)
    # the second consumer starts exactly at the committed offsets: no gap, no repeat
    for p in (0, 1):
        offsets = [o for q, o, _ in part_two if q == p]
        if offsets:
            assert offsets[0] == committed[p]
    values = [v for _, _, v in part_one + part_two]
    assert sorted(values) == sorted(sent) and len(set(values)) == len(sent)
    for p in (0, 1):  # per-partition order is the send order
        assert [v for q, _, v in part_one + part_two if q == p] == sent[p::2]


async def test_clients_recover_from_broker_crash(private_kafka_broker: KafkaBroker) -> None:
    broker = private_kafka_broker
    topic, group = unique("crash"), unique("group")
    await asyncio.to_thread(broker.create_topic, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, retry_backoff_ms=200)
    consumer = group_consumer(broker.bootstrap, topic, group)
    await producer.start()
    await consumer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"before{i}".encode())
        assert [v for _, _, v in await take(consumer, 5)] == [f"before{i}".encode() for i in range(5)]
        await consumer.commit()

        broker.kill()  # SIGKILL: no clean shutdown
        in_outage = asyncio.ensure_future(producer.send_and_wait(topic, b"during-outage"))
        await asyncio.sleep(1.0)
        assert not in_outage.done()
        t0 = time.monotonic()
        await asyncio.to_thread(broker.start)  # same ports, same data dir
        restart_s = time.monotonic() - t0

        async with asyncio.timeout(60):
            record = await in_outage
        print(f"restart {restart_s:.1f}s, outage send done {time.monotonic() - t0:.1f}s after start")
        assert record.offset == 5
        for i in range(3):
            await producer.send_and_wait(topic, f"after{i}".encode())
        after = await take(consumer, 4, timeout=60)
        assert [(o, v) for _, o, v in after] == [(5, b"during-outage")] + [
            (6 + i, f"after{i}".encode()) for i in range(3)
        ]
        async with asyncio.timeout(60):
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()

    resumed = group_consumer(broker.bootstrap, topic, group)
    await resumed.start()
    try:
        assert await resumed.committed(TopicPartition(topic, 0)) == 9
    finally:
        await resumed.stop()
    assert broker.starts == 2
    assert restart_s < 60
