"""What every telemetry source shares: a bounded ingest queue in front of the core (backpressure),
per-source counters, and acknowledgements after the data is folded (at-least-once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from canary_stream.core import Aggregator, FeedResult, Source

if TYPE_CHECKING:
    from typing_extensions import Buffer

    class SizedBuffer(Buffer, Protocol):
        """A read-only buffer of bytes that knows its length (e.g. `_native.KafkaLines`)."""

        def __len__(self) -> int: ...


@dataclass
class SourceStats:
    """Counters of one source (the verdict API exposes them)."""

    name: str
    events: int = 0  # lines accepted by the core
    lines: int = 0  # lines seen by the core (accepted + malformed + skipped)
    bytes: int = 0
    batches: int = 0
    lag: int | None = None  # Kafka: records behind the high watermark; files: bytes not read yet
    waits: int = 0  # times the source waited because the queue was full (backpressure)
    malformed: dict[str, int] = field(default_factory=dict)  # per reason, incl. dropped_late
    started_at: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, object]:
        """The counters as one JSON-able mapping (each source adds its own)."""
        return {
            "name": self.name,
            "events": self.events,
            "lines": self.lines,
            "bytes": self.bytes,
            "batches": self.batches,
            "waits": self.waits,
            "lag": self.lag,
            "malformed": dict(self.malformed),
        }

    def rates(self, now: float | None = None) -> dict[str, float]:
        """Events/s and bytes/s since the source started."""
        elapsed = max(1e-9, (now if now is not None else time.monotonic()) - self.started_at)
        return {"events_per_s": self.events / elapsed, "bytes_per_s": self.bytes / elapsed}


@dataclass
class Batch:
    """A buffer of complete access-log lines from one origin, and what to do once it is folded."""

    # a bytearray: a received HTTP body, handed on without a copy; any other read-only buffer
    # (e.g. `_native.KafkaLines`: lines decoded by the Rust Kafka fetcher, not copied)
    data: bytes | bytearray | SizedBuffer
    source: Source
    stats: SourceStats
    on_folded: Callable[[], Awaitable[None]] | None = None  # e.g. commit Kafka offsets
    # How to fold `data` when it is not access-log lines (Envoy ALS: gRPC-framed protobuf messages);
    # runs in the fold thread instead of `Aggregator.feed`.
    fold: Callable[[Aggregator, bytes], FeedResult] | None = None


class IngestQueue:
    """Bounded queue from the sources to the core. `put` waits when the core falls behind (sources
    slow down: Kafka pauses fetching, files wait, HTTP answers 429/503), so memory stays bounded by
    `max_bytes` plus one batch."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._bytes = 0
        self._space = asyncio.Condition()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def would_block(self, n: int) -> bool:
        """True when a batch of `n` bytes would have to wait (HTTP answers 429 instead)."""
        return self._bytes > 0 and self._bytes + n > self.max_bytes

    async def put(self, batch: Batch) -> None:
        async with self._space:
            if self.would_block(len(batch.data)):
                batch.stats.waits += 1
                await self._space.wait_for(lambda: not self.would_block(len(batch.data)))
            self._bytes += len(batch.data)
        await self._queue.put(batch)

    async def get(self) -> Batch:
        return await self._queue.get()

    async def done(self, batch: Batch) -> None:
        async with self._space:
            self._bytes -= len(batch.data)
            self._space.notify_all()
        self._queue.task_done()

    async def join(self) -> None:
        await self._queue.join()


class TelemetrySource(Protocol):
    """A source reads until `stop()`, putting batches of complete lines on the queue."""

    stats: SourceStats

    async def run(self, queue: IngestQueue) -> None: ...

    def stop(self) -> None: ...


async def fold_forever(queue: IngestQueue, aggregator: Aggregator) -> None:
    """The core's consumer: feed each batch (in a thread — the core releases the GIL), count it,
    then acknowledge it (`on_folded`) — only after the data is in the aggregator."""
    while True:
        batch = await queue.get()
        try:
            before = aggregator.totals()
            # One thread hop per batch: the feed (GIL released) and the flush of an unterminated
            # tail — sources hand over complete lines, so the tail is normally empty.
            result, tail = await asyncio.to_thread(_feed_and_finish, aggregator, batch)
            after = aggregator.totals()
            # This task is the aggregator's only feeder, so the difference is this batch's.
            for kind in ("malformed", "skipped"):
                old, new = getattr(before, kind), getattr(after, kind)
                for reason, n in new.items():
                    added = n - old.get(reason, 0)
                    if added > 0:
                        batch.stats.malformed[reason] = batch.stats.malformed.get(reason, 0) + added
            batch.stats.events += result.accepted + tail.accepted
            batch.stats.lines += result.lines + tail.lines
            batch.stats.bytes += len(batch.data)
            batch.stats.batches += 1
            if batch.on_folded is not None:
                await batch.on_folded()
        finally:
            await queue.done(batch)


def _feed_and_finish(aggregator: Aggregator, batch: Batch) -> tuple[FeedResult, FeedResult]:
    if batch.fold is not None:
        return batch.fold(aggregator, bytes(batch.data)), FeedResult(0, 0)
    # Aggregator.feed reads any C-contiguous buffer in place (rust/src/python.rs `Input`)
    return aggregator.feed(batch.data, source=batch.source), aggregator.finish(source=batch.source)
