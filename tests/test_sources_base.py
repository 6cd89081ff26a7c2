"""The ingest queue and the core's consumer: backpressure, counters, ack only after folding."""

from __future__ import annotations

import asyncio

from canary_stream import Aggregator, AggregatorConfig, Source, generate
from canary_stream.sources.base import Batch, IngestQueue, SourceStats, fold_forever


async def test_put_waits_when_full_and_resumes_after_done() -> None:
    q = IngestQueue(max_bytes=10)
    stats = SourceStats("t")
    await q.put(Batch(b"x" * 8, Source(), stats))
    blocked = asyncio.create_task(q.put(Batch(b"y" * 8, Source(), stats)))
    await asyncio.sleep(0.01)
    assert not blocked.done() and stats.waits == 1
    first = await q.get()
    await q.done(first)
    await asyncio.wait_for(blocked, 1)
    assert q.queued_bytes == 8


async def test_fold_counts_per_source_and_acks_after_the_data_is_in() -> None:
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    q = IngestQueue()
    stats = SourceStats("kafka")
    good = generate("istio-json", lines=200, seed=3)
    acked: list[int] = []

    async def ack() -> None:
        acked.append(agg.totals().accepted)  # the batch is already folded when this runs

    worker = asyncio.create_task(fold_forever(q, agg))
    await q.put(Batch(good + b"{not json\n", Source(), stats, ack))
    await asyncio.wait_for(q.join(), 10)
    worker.cancel()
    assert acked == [200]
    assert stats.events == 200 and stats.lines == 201 and stats.batches == 1
    assert sum(stats.malformed.values()) == 1
    assert stats.rates()["events_per_s"] > 0


async def test_snapshots_while_a_batch_is_folding_wait_instead_of_failing() -> None:
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    q = IngestQueue()
    stats = SourceStats("t")
    worker = asyncio.create_task(fold_forever(q, agg))
    big = generate("istio-json", lines=100_000, seed=5)
    await q.put(Batch(big, Source(), stats))
    seen = []
    while stats.batches == 0:
        seen.append(await asyncio.to_thread(agg.totals))  # raced against the feed thread
    await asyncio.wait_for(q.join(), 30)
    worker.cancel()
    assert agg.totals().accepted == 100_000
    assert all(t.accepted in (0, 100_000) for t in seen)  # never a torn or refused read
