"""Kafka telemetry source (aiokafka): a consumer group reading access-log records, handing the core
one buffer per partition batch, committing offsets only after that buffer is folded.

Record shapes (what Fluent Bit's ``kafka`` output and Vector's ``kafka`` sink produce):

* **raw lines** (Vector ``encoding.codec = "text"``, Fluent Bit ``format raw``): the record value is
  one access-log line, or several newline-separated lines. Values are concatenated as they are;
  a newline is added after a value that does not end with one, so every buffer ends with a newline
  and no line of one record runs into the next.
* **JSON envelope** (Vector ``codec = "json"`` → ``{..., "message": "<line>", ...}``, Fluent Bit
  ``format json`` → ``{"@timestamp": ..., "log": "<line>", ...}``): set ``envelope_key``. Fast path,
  no JSON parsed in Python: per record one C-level ``bytes.find`` of ``"<key>":"`` and a zero-copy
  slice; the buffer gets ``{"log":"`` followed by the rest of the envelope from the value on, which the
  core's Docker-envelope unwrapper decodes in Rust (it reads the escaped string up to its closing
  quote and ignores the members after it; keep the aggregator's ``wrapping`` at ``auto`` or
  ``docker``). A record without the key passes through as a raw line. Limits: one envelope per
  record, and the first ``"<key>":"`` of the record wins (a nested object holding the same key
  earlier in the record would be taken). Without ``envelope_key``, envelopes whose *first* key is
  ``log`` are still unwrapped by the core.

Attribution: a record header ``target`` / ``version`` (names configurable) or a record key
``<target>/<version>`` sets :class:`~canary_stream.core.Source` ``target`` / ``version`` for the
lines of that record; records of a partition batch with the same pair go into one
:class:`~canary_stream.sources.base.Batch`. Records without either go into one Batch with an empty
Source (the lines say who served them).

Delivery: at-least-once. The offsets of a partition batch are committed only after every Batch made
from it has been folded into the aggregator; on a rebalance, revoked partitions wait for their
in-flight batches to fold and their offsets are committed before the partitions are given up.
Records dropped before the core (oversized records) are counted as malformed and their offsets are
committed with the batch, so a poison record is skipped once and never blocks the partition.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RecordTooLargeError,
)

from canary_stream.core import Source
from canary_stream.sources.base import Batch, IngestQueue, SourceStats

log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_KEY_RE = re.compile(r"^[A-Za-z0-9_@.\-]+$")


@dataclass(frozen=True)
class KafkaConfig:
    """Everything :class:`KafkaSource` needs. Invalid values raise ``ValueError`` naming the field
    (``kafka.<field>: ...``). TLS / SASL fields are passed through to aiokafka."""

    bootstrap_servers: str | Sequence[str] = "localhost:9092"
    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None  # regex subscription instead of `topics`
    group_id: str = "canary-stream"
    client_id: str = "canary-stream"
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    # fetching / batching
    # Larger fetches and batches cost the source less per byte (measured in
    # benches/test_bench_kafka.py: 1 MiB / 10,000 → 4 MiB / 50,000 raised records of many lines
    # from ~290 K to ~360 K lines per CPU second of the event loop); memory stays bounded by the
    # ingest queue + max_partition_fetch_bytes per assigned partition.
    max_records: int = 50_000  # per getmany (all partitions together)
    poll_timeout_ms: int = 500  # getmany wait; also the latency of stop()
    fetch_max_wait_ms: int = 100
    max_partition_fetch_bytes: int = 4 * 1024 * 1024
    fetch_max_bytes: int = 32 * 1024 * 1024
    # aiokafka verifies each record batch's CRC-32C in the event loop: ~25 % of the source's CPU
    # on big records. The broker has checked it on produce and TCP checks the transfer; False
    # trades that end-to-end check for throughput.
    check_crcs: bool = True
    max_record_bytes: int = 4 * 1024 * 1024  # larger records are skipped and counted (record_too_large)
    # record shapes and attribution
    envelope_key: str | None = None  # "log" (Fluent Bit json), "message" (Vector json); None: raw lines
    target_header: str = "target"
    version_header: str = "version"
    key_attribution: bool = True  # record key "<target>/<version>"
    # group membership
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    drain_timeout_s: float = 30.0  # revoke / stop: how long to wait for in-flight batches to fold
    lag_interval_s: float = 1.0
    # TLS
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None  # or the files below
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    # SASL
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    sasl_kerberos_service_name: str = "kafka"
    sasl_kerberos_domain_name: str | None = None
    sasl_oauth_token_provider: Any = None
    # anything else AIOKafkaConsumer accepts (client_rack, isolation_level, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f"kafka.{name}: {why}")

        servers = (
            [self.bootstrap_servers] if isinstance(self.bootstrap_servers, str) else self.bootstrap_servers
        )
        if not servers or not all(isinstance(s, str) and s.strip() for s in servers):
            fail("bootstrap_servers", f"need at least one host:port, got {self.bootstrap_servers!r}")
        if isinstance(self.topics, str):
            fail("topics", "a tuple of topic names, not a string")
        if bool(self.topics) == bool(self.topic_pattern):
            fail("topics", "give either topics or topic_pattern (exactly one)")
        if self.topic_pattern:
            try:
                re.compile(self.topic_pattern)
            except re.error as exc:
                fail("topic_pattern", f"invalid regex: {exc}")
        if not self.group_id:
            fail("group_id", "a consumer group is required (offsets are committed to it)")
        if self.auto_offset_reset not in ("latest", "earliest"):
            fail("auto_offset_reset", f"expected latest or earliest, got {self.auto_offset_reset!r}")
        for name in (
            "max_records",
            "poll_timeout_ms",
            "max_partition_fetch_bytes",
            "fetch_max_bytes",
            "max_record_bytes",
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "max_poll_interval_ms",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(name, f"must be a positive integer, got {value!r}")
        if not isinstance(self.fetch_max_wait_ms, int) or self.fetch_max_wait_ms < 0:
            fail("fetch_max_wait_ms", f"must be >= 0, got {self.fetch_max_wait_ms!r}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            fail("heartbeat_interval_ms", "must be lower than session_timeout_ms")
        for name in ("drain_timeout_s", "lag_interval_s"):
            if getattr(self, name) <= 0:
                fail(name, f"must be > 0, got {getattr(self, name)!r}")
        if self.envelope_key is not None and not _KEY_RE.match(self.envelope_key):
            fail("envelope_key", f"a plain JSON key (letters, digits, _@.-), got {self.envelope_key!r}")
        if self.security_protocol not in _PROTOCOLS:
            fail(
                "security_protocol",
                f"expected one of {', '.join(_PROTOCOLS)}, got {self.security_protocol!r}",
            )
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not tls and (self.ssl_context is not None or any(tls_files)):
            fail("security_protocol", f"TLS options given but security_protocol is {self.security_protocol}")
        if self.ssl_context is not None and any(tls_files):
            fail("ssl_context", "give either ssl_context or the ssl_*file options, not both")
        if self.ssl_keyfile and not self.ssl_certfile:
            fail("ssl_certfile", "required with ssl_keyfile")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in _MECHANISMS:
                fail(
                    "sasl_mechanism", f"expected one of {', '.join(_MECHANISMS)}, got {self.sasl_mechanism!r}"
                )
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                if not self.sasl_plain_username:
                    fail("sasl_plain_username", f"required for SASL {self.sasl_mechanism}")
                if self.sasl_plain_password is None:
                    fail("sasl_plain_password", f"required for SASL {self.sasl_mechanism}")
            if self.sasl_mechanism == "OAUTHBEARER" and self.sasl_oauth_token_provider is None:
                fail("sasl_oauth_token_provider", "required for SASL OAUTHBEARER")

    def consumer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AIOKafkaConsumer`` (auto-commit off: we commit after folding)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "group_id": self.group_id,
            "auto_offset_reset": self.auto_offset_reset,
            "enable_auto_commit": False,
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "fetch_max_bytes": self.fetch_max_bytes,
            "check_crcs": self.check_crcs,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = self.ssl_context
            if context is None:
                from aiokafka.helpers import create_ssl_context

                context = create_ssl_context(
                    cafile=self.ssl_cafile,
                    certfile=self.ssl_certfile,
                    keyfile=self.ssl_keyfile,
                    password=self.ssl_password,
                )
                context.check_hostname = self.ssl_check_hostname
            kwargs["ssl_context"] = context
        if self.security_protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_plain_username,
                sasl_plain_password=self.sasl_plain_password,
                sasl_kerberos_service_name=self.sasl_kerberos_service_name,
                sasl_kerberos_domain_name=self.sasl_kerberos_domain_name,
                sasl_oauth_token_provider=self.sasl_oauth_token_provider,
            )
        kwargs.update(self.extra)
        return kwargs


def envelope_joiner(key: str) -> Callable[[Sequence[bytes]], bytes]:
    """The fast path of envelope extraction: for each record one C-level ``bytes.find`` of
    ``"<key>":"`` and a zero-copy slice; the buffer gets ``{"log":"`` + the rest of the envelope from
    the value on, which the core's Docker-envelope unwrapper decodes (it reads the JSON string and
    stops at the closing quote). No JSON is parsed in Python. A record without the key is passed
    on as it is (a raw line)."""
    compact = b'"' + key.encode() + b'":"'
    spaced = b'"' + key.encode() + b'": "'
    prefix = b'{"log":"'

    def join(values: Sequence[bytes]) -> bytes:
        parts: list[bytes | memoryview] = []
        add = parts.append
        for v in values:
            i = v.find(compact)
            n = len(compact)
            if i < 0:
                i = v.find(spaced)
                n = len(spaced)
            if i >= 0:
                add(prefix)
                add(memoryview(v)[i + n :])
            else:
                add(v)
            add(b"\n")
        buf = b"".join(parts)
        return buf.replace(b"\n\n", b"\n") if b"\n\n" in buf else buf

    return join


def join_values(values: Sequence[bytes]) -> bytes:
    """Concatenate record values into one buffer of complete lines: a newline between records
    and at the end, without doubling one a value already ends with (no blank lines)."""
    buf = b"\n".join(values) + b"\n"
    # Look at the ends of the values, not at the whole buffer: searching the buffer for a blank
    # line runs at ~1 GB/s here (~1/6 of the source's CPU on records of many lines); this is one
    # C-level call per record. (A blank line inside a value reaches the core: counted as skipped.)
    if any(map(_ends_with_newline, values)):
        buf = buf.replace(b"\n\n", b"\n")
    return buf


_ends_with_newline = operator.methodcaller("endswith", b"\n")


@dataclass
class _Inflight:
    """One partition batch on its way through the queue: committed once `remaining` is 0 and every
    earlier batch of the partition is folded."""

    end: int  # offset to commit (last offset + 1)
    remaining: int  # Batches of it not folded yet


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class KafkaSource:
    """A :class:`~canary_stream.sources.base.TelemetrySource` reading a Kafka consumer group."""

    def __init__(self, config: KafkaConfig, *, name: str = "kafka") -> None:
        self.config = config
        self.stats = SourceStats(name)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._join = envelope_joiner(config.envelope_key) if config.envelope_key else join_values
        self._inflight: dict[TopicPartition, deque[_Inflight]] = {}
        self._folded: dict[TopicPartition, int] = {}  # folded, committable offsets
        self._committed: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}  # next offset after what getmany returned
        self._progress = asyncio.Condition()
        self._commit_task: asyncio.Task[None] | None = None
        self._commit_again = False
        self._lag_at = 0.0
        self.commits = 0  # successful commit requests (tests, diagnostics)
        self.pauses = 0  # times fetching was paused because the queue was full
        self.revoked = 0  # partitions given up in rebalances (after their batches were folded)

    # --- the TelemetrySource protocol ------------------------------------------------------

    def stop(self) -> None:
        """Stop after the current poll: in-flight batches are folded and committed first."""
        self._stopping.set()

    async def run(self, queue: IngestQueue) -> None:
        cfg = self.config
        consumer = AIOKafkaConsumer(**cfg.consumer_kwargs())
        self._consumer = consumer
        listener = _Listener(self)
        if cfg.topic_pattern:
            consumer.subscribe(pattern=cfg.topic_pattern, listener=listener)
        else:
            consumer.subscribe(topics=list(cfg.topics), listener=listener)
        try:
            await consumer.start()
            while not self._stopping.is_set():
                try:
                    fetched = await consumer.getmany(
                        timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_records
                    )
                except RecordTooLargeError as exc:
                    # only with fetch sizes below the record size on old protocols: aiokafka has
                    # already moved past the record
                    log.warning("kafka: skipped a record larger than the fetch size: %s", exc)
                    self._count("record_too_large")
                    continue
                for tp, records in fetched.items():
                    if records and not await self._hand_over(queue, tp, records):
                        break
                await self._update_lag()
        except BaseException:
            # cancelled (shutdown without stop(), a crash in a test) or failed: batches in flight
            # may never be folded, so nothing more is committed; the next consumer reads them again
            await self._close()
            raise
        # stop(): let what is in flight fold, commit it, then leave the group
        await self._drain()
        try:
            await self._commit(None)
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._commit_task is not None and not self._commit_task.done():
            self._commit_task.cancel()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    # --- batches ---------------------------------------------------------------------------

    async def _hand_over(self, queue: IngestQueue, tp: TopicPartition, records: list[Any]) -> bool:
        """Turn one partition batch into Batches (one per target/version) and queue them.
        False when stopping interrupted the hand-over."""
        groups = self._group(records)
        end = records[-1].offset + 1
        self._positions[tp] = end
        entry = _Inflight(end=end, remaining=len(groups))
        self._inflight.setdefault(tp, deque()).append(entry)
        for source, values in groups:
            data = self._join(values) if values else b""
            batch = Batch(data, source, self.stats, self._acker(tp, entry))
            if not await self._put(queue, batch):
                # stopping: the rest of this partition batch is never queued, so it never
                # completes; forget it (its offsets stay uncommitted and are read again)
                dq = self._inflight.get(tp)
                if dq is not None and entry in dq:
                    dq.remove(entry)
                    if not dq:
                        del self._inflight[tp]
                return False
        return True

    def _group(self, records: list[Any]) -> list[tuple[Source, list[bytes]]]:
        """Split records by (target, version) from headers / key; drop oversized and empty ones.
        Per-record work is attribute access only: no line is parsed here."""
        cfg = self.config
        limit = cfg.max_record_bytes
        attribute = any(r.key or r.headers for r in records) and (
            cfg.key_attribution or bool(cfg.target_header or cfg.version_header)
        )
        if not attribute:
            values = [r.value for r in records if r.value]
            if any(len(v) > limit for v in values):
                values = self._drop_large(values)
            return [(Source(), values)]
        groups: dict[tuple[str, str], list[bytes]] = {}
        for r in records:
            target, version = self._attribution(r)
            bucket = groups.setdefault((target, version), [])
            if r.value:
                bucket.append(r.value)
        return [
            (
                Source(target=t, version=v),
                self._drop_large(vals) if any(len(x) > limit for x in vals) else vals,
            )
            for (t, v), vals in groups.items()
        ]

    def _attribution(self, record: Any) -> tuple[str, str]:
        cfg = self.config
        target = version = ""
        if record.headers:
            for name, raw in record.headers:
                if raw is None:
                    continue
                if name == cfg.target_header:
                    target = raw.decode(errors="replace")
                elif name == cfg.version_header:
                    version = raw.decode(errors="replace")
        if cfg.key_attribution and record.key and not (target and version):
            key = record.key.decode(errors="replace")
            t, sep, v = key.rpartition("/")
            if sep and t and v:
                target = target or t
                version = version or v
        return target, version

    def _drop_large(self, values: list[bytes]) -> list[bytes]:
        limit = self.config.max_record_bytes
        kept = [v for v in values if len(v) <= limit]
        for _ in range(len(values) - len(kept)):
            self._count("record_too_large")
        return kept

    def _count(self, reason: str) -> None:
        self.stats.malformed[reason] = self.stats.malformed.get(reason, 0) + 1

    async def _put(self, queue: IngestQueue, batch: Batch) -> bool:
        """Queue a batch; when the queue is full, pause fetching until there is room.

        Awaiting the put alone already stops this loop from calling getmany, and aiokafka's
        background fetcher holds at most one fetched response per partition until it is drained, so
        memory is bounded by the queue's max_bytes + this batch + max_partition_fetch_bytes per
        assigned partition (≤ fetch_max_bytes per request). Pausing the partitions as well stops
        the fetcher from issuing requests while the core catches up. The group heartbeat runs in
        aiokafka's own task, so a long wait does not cost the membership (up to max_poll_interval_ms,
        after which leaving the group is right: the core is stuck).
        """
        consumer = self._consumer
        paused: set[TopicPartition] = set()
        if consumer is not None and queue.would_block(len(batch.data)):
            paused = set(consumer.assignment())
            consumer.pause(*paused)
            self.pauses += 1
        put = asyncio.ensure_future(queue.put(batch))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not put.done():
                put.cancel()  # stopping: the batch was not queued, its offsets stay uncommitted
            if consumer is not None and paused:
                consumer.resume(*(paused & set(consumer.assignment())))
        return not put.cancelled()

    # --- acknowledgements and commits ----------------------------------------------------

    def _acker(self, tp: TopicPartition, entry: _Inflight) -> Callable[[], Awaitable[None]]:
        async def on_folded() -> None:
            entry.remaining -= 1
            dq = self._inflight.get(tp)
            advanced = False
            while dq and dq[0].remaining <= 0:
                self._folded[tp] = dq.popleft().end
                advanced = True
            if dq is not None and not dq:
                del self._inflight[tp]
            async with self._progress:
                self._progress.notify_all()
            if advanced:
                self._kick_commit()

        return on_folded

    def _kick_commit(self) -> None:
        """Commit folded offsets in the background, coalescing: the fold loop does not wait for a
        commit round trip, and while one commit is in flight the next takes everything folded
        meanwhile. Uncommitted at any time: the batches in flight plus those folded during one
        commit round trip."""
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.create_task(self._commit_loop())
        else:
            self._commit_again = True

    async def _commit_loop(self) -> None:
        while True:
            self._commit_again = False
            await self._commit(None)
            if not self._commit_again:
                return

    async def _commit(self, only: set[TopicPartition] | None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: off
            for tp, off in self._folded.items()
            if (only is None or tp in only) and tp in assigned and off > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # the group rebalanced: another member owns these partitions now and reads them from
            # the last committed offsets (duplicates, never loss)
            log.warning("kafka: commit of %s failed after a rebalance: %s", offsets, exc)
            for tp in offsets:
                self._folded.pop(tp, None)
        except KafkaError as exc:
            log.warning("kafka: commit of %s failed, will retry: %s", offsets, exc)
        else:
            self.commits += 1
            self._committed.update(offsets)

    async def _wait_folded(self, tps: set[TopicPartition] | None) -> bool:
        def idle() -> bool:
            return not any(dq for tp, dq in self._inflight.items() if tps is None or tp in tps)

        try:
            async with asyncio.timeout(self.config.drain_timeout_s):
                async with self._progress:
                    await self._progress.wait_for(idle)
            return True
        except TimeoutError:
            log.warning("kafka: in-flight batches not folded after %.0fs", self.config.drain_timeout_s)
            return False

    async def _drain(self) -> None:
        await self._wait_folded(None)
        if self._commit_task is not None and not self._commit_task.done():
            await asyncio.wait({self._commit_task}, timeout=self.config.drain_timeout_s)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        await self._wait_folded(revoked)
        await self._commit(revoked)
        self.revoked += len(revoked)
        for tp in revoked:
            self._inflight.pop(tp, None)
            self._folded.pop(tp, None)
            self._committed.pop(tp, None)
            self._positions.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka: assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    # --- lag -------------------------------------------------------------------------------

    async def _update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        consumer = self._consumer
        if consumer is None or (not force and now - self._lag_at < self.config.lag_interval_s):
            return
        self._lag_at = now
        total: int | None = None
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            pos = self._positions.get(tp)
            if pos is None:
                try:  # known without a request once the partition has been fetched
                    pos = await asyncio.wait_for(consumer.position(tp), 0.5)
                except (KafkaError, TimeoutError):
                    pos = None
            if high is None or pos is None:
                continue
            total = (total or 0) + max(0, high - pos)
        self.stats.lag = total
