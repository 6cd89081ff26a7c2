"""Kafka telemetry source: a consumer group reading access-log records, handing the core one buffer
per partition fetch, committing offsets only after that buffer is folded.

Two fetch paths (``KafkaConfig.fetch_path``):

* ``rust`` (the default when the extension has it): aiokafka's ``AIOKafkaConsumer`` does only group
  membership, assignment, rebalance callbacks, offset commits and metadata; every assigned partition
  stays paused for aiokafka's own fetcher. The Rust fetcher (``_native.KafkaFetcher``,
  rust/src/kafka/) sends Fetch requests to the partition leaders over plain TCP with the GIL
  released, checks and decompresses the record batches and joins the values into one buffer per
  ``(target, version)`` of a partition fetch: no per-record Python object. The buffer is handed
  over without a copy (``_native.KafkaLines``, a read-only buffer the core reads in place; its memory
  goes back to the fetcher's pool once folded); optionally (``fetch_pipelining``) the next Fetch of
  a broker's partitions is already in flight while a response is decoded and queued. Not for TLS / SASL or
  ``isolation_level=read_committed``: those configurations use the aiokafka path (logged).
* ``aiokafka``: ``getmany`` and per-record ``ConsumerRecord`` objects (kept for comparison and for
  the configurations above).

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
import contextlib
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

from canary_stream import _native
from canary_stream.core import Source
from canary_stream.sources.base import Batch, IngestQueue, SourceStats
from canary_stream.sources.checks import FieldChecks

log = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_KEY_RE = re.compile(r"^[A-Za-z0-9_@.\-]+$")
FetchPath = Literal["rust", "aiokafka"]
_FETCH_PATHS = ("rust", "aiokafka")
RUST_FETCHER_AVAILABLE = hasattr(_native, "KafkaFetcher")

# Kafka error codes of a partition fetch after which the leader must be looked up again
_REFRESH_METADATA = {
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    9: "REPLICA_NOT_AVAILABLE",
    56: "KAFKA_STORAGE_ERROR",
    74: "FENCED_LEADER_EPOCH",
    75: "UNKNOWN_LEADER_EPOCH",
    78: "OFFSET_NOT_AVAILABLE",
    100: "UNKNOWN_TOPIC_ID",
}
_OFFSET_OUT_OF_RANGE = 1


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
    # "rust": Fetch requests and record decoding in the Rust core (aiokafka keeps the group);
    # "aiokafka": getmany. TLS / SASL / read_committed always use aiokafka (see rust_fetch_refusal).
    fetch_path: FetchPath = "rust" if RUST_FETCHER_AVAILABLE else "aiokafka"
    request_timeout_ms: int = 30_000  # rust path: connect + response wait on top of fetch_max_wait_ms
    # rust path: send a broker's next Fetch as soon as a response is read, before it is decoded
    # (used only when the next fetch asks for exactly those offsets; see rust/src/kafka/client.rs).
    # Off: on 2 shared cores it did not pay (benches/README.md, Kafka: ±0 with 1-line records,
    # -15 % with 100-line records); an option to measure where the cores are idle.
    fetch_pipelining: bool = False
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
    # At most one offset commit per interval while batches fold (what folds meanwhile goes into the
    # next one; revoke and stop commit at once). A commit after every fold cost the broker as much
    # CPU as the fetches themselves (~190 OffsetCommits per 1 M lines in benches/test_bench_kafka.py).
    # 0: commit after every folded batch. A crash re-reads at most this long's worth of batches more.
    commit_interval_ms: int = 100
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
        check = FieldChecks("kafka", self)
        fail = check.fail

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
        if self.fetch_path not in _FETCH_PATHS:
            fail("fetch_path", f"expected rust or aiokafka, got {self.fetch_path!r}")
        if self.fetch_path == "rust" and not RUST_FETCHER_AVAILABLE:
            fail("fetch_path", "this build of the extension has no Rust Kafka fetcher")
        if self.auto_offset_reset not in ("latest", "earliest"):
            fail("auto_offset_reset", f"expected latest or earliest, got {self.auto_offset_reset!r}")
        check.positive_ints(
            "max_records",
            "poll_timeout_ms",
            "max_partition_fetch_bytes",
            "fetch_max_bytes",
            "max_record_bytes",
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "max_poll_interval_ms",
            "request_timeout_ms",
        )
        check.non_negative_ints("fetch_max_wait_ms", "commit_interval_ms")
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

    def rust_fetch_refusal(self) -> str | None:
        """Why this configuration cannot use the Rust fetcher (None: it can). The fetcher speaks
        plain TCP and does not filter aborted transactions."""
        if self.security_protocol != "PLAINTEXT":
            return f"security_protocol {self.security_protocol} (the Rust fetcher has no TLS / SASL)"
        if self.extra.get("isolation_level", "read_uncommitted") != "read_uncommitted":
            return "isolation_level read_committed (the Rust fetcher reads uncommitted)"
        return None

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
        self._highwater: dict[TopicPartition, int] = {}  # rust path: from the last fetch response
        refusal = config.rust_fetch_refusal() if config.fetch_path == "rust" else None
        if refusal is not None:
            log.warning("kafka: using the aiokafka fetch path: %s", refusal)
        self.fetch_path: FetchPath = "rust" if config.fetch_path == "rust" and refusal is None else "aiokafka"
        self._rust = self.fetch_path == "rust"
        self.fetches = 0  # rust path: fetch calls (tests, diagnostics)
        self._rust_fetcher: Any = None  # rust path: the running fetcher (its counters: diagnostics)
        self.fetch_errors = 0  # rust path: broker or partition errors met (retried)
        self._failing: str | None = None  # the first error of an ongoing outage (logged once)
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
            if self._rust:
                await self._fetch_loop(consumer, queue)
            else:
                await self._getmany_loop(consumer, queue)
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

    async def _getmany_loop(self, consumer: AIOKafkaConsumer, queue: IngestQueue) -> None:
        """The aiokafka fetch path: getmany, one Batch per (target, version) of a partition batch."""
        cfg = self.config
        while not self._stopping.is_set():
            try:
                fetched = await consumer.getmany(timeout_ms=cfg.poll_timeout_ms, max_records=cfg.max_records)
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

    async def _close(self) -> None:
        if self._commit_task is not None and not self._commit_task.done():
            self._commit_task.cancel()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    # --- the Rust fetch path ------------------------------------------------------------------

    def _fetcher(self) -> Any:
        cfg = self.config
        return _native.KafkaFetcher(
            client_id=cfg.client_id,
            max_wait_ms=cfg.fetch_max_wait_ms,
            max_bytes=cfg.fetch_max_bytes,
            partition_max_bytes=cfg.max_partition_fetch_bytes,
            max_records=cfg.max_records,
            request_timeout_ms=cfg.request_timeout_ms,
            check_crcs=cfg.check_crcs,
            max_record_bytes=cfg.max_record_bytes,
            target_header=cfg.target_header,
            version_header=cfg.version_header,
            key_attribution=cfg.key_attribution,
            envelope_key=cfg.envelope_key,
            pipeline=cfg.fetch_pipelining,
        )

    async def _fetch_loop(self, consumer: AIOKafkaConsumer, queue: IngestQueue) -> None:
        """Fetch with the Rust fetcher until stop(): one Fetch per leader per round, the
        decoded buffers queued per partition, offsets committed after folding as on the
        aiokafka path. Waiting for queue space is the flow control: no fetch meanwhile."""
        fetcher = self._rust_fetcher = self._fetcher()
        backoff = 0.0
        try:
            while not self._stopping.is_set():
                if backoff:
                    await self._sleep(backoff)
                    if self._stopping.is_set():
                        break
                if consumer._subscription.reassignment_in_progress:
                    # a rebalance: the revoked partitions' batches must fold (on_partitions_revoked
                    # waits for them) and nothing new may be taken from them, as getmany does
                    backoff = 0.02
                    continue
                requests = await self._fetch_requests(consumer)
                if not requests:
                    backoff = 0.05
                    continue
                # aiokafka's max_poll_interval_ms counts the time spent outside of a fetch: a
                # fetch of ours counts as one (getmany would hand out records that aiokafka's
                # fetcher took before the partitions were paused)
                with consumer._subscription.fetch_context():
                    parts, node_errors = await asyncio.to_thread(fetcher.fetch, requests)
                self.fetches += 1
                ok = await self._take_fetched(consumer, queue, parts)
                for host, port, message in node_errors:
                    self._fetch_failed(consumer, f"broker {host}:{port}: {message}")
                backoff = 0.0 if ok and not node_errors else min(1.0, max(0.1, backoff * 2))
                await self._update_lag()
        finally:
            # a fetch still running in its thread (cancelled) holds the fetcher: its sockets then
            # close when it is collected
            with contextlib.suppress(RuntimeError):
                fetcher.close()

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _fetch_requests(
        self, consumer: AIOKafkaConsumer
    ) -> list[tuple[str, int, list[tuple[str, int, int]]]]:
        """The next fetch: every assigned partition with a known position and leader, grouped by
        the leader's address."""
        assigned = consumer.assignment()
        unpaused = assigned - consumer.paused()
        if unpaused:
            consumer.pause(*unpaused)
        cluster = consumer._client.cluster
        nodes: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
        for tp in sorted(assigned):
            known = self._positions.get(tp)
            if known is not None:
                pos = known
            else:
                try:  # the committed offset, or auto_offset_reset's (aiokafka resolves it)
                    pos = await asyncio.wait_for(consumer.position(tp), self.config.request_timeout_ms / 1000)
                except (KafkaError, IllegalStateError, TimeoutError) as exc:
                    self._fetch_failed(consumer, f"no position for {tp}: {exc!r}")
                    continue
                if tp not in consumer.assignment():
                    continue  # revoked while waiting
                self._positions[tp] = pos
            leader = cluster.leader_for_partition(tp)
            broker = cluster.broker_metadata(leader) if leader is not None and leader >= 0 else None
            if broker is None:
                self._fetch_failed(consumer, f"no leader known for {tp}")
                continue
            nodes.setdefault((broker.host, broker.port), []).append((tp.topic, tp.partition, pos))
        return [(host, port, parts) for (host, port), parts in nodes.items()]

    def _fetch_failed(self, consumer: AIOKafkaConsumer, why: str) -> None:
        """Count, log (once per outage) and ask aiokafka for fresh metadata (leaders move)."""
        self.fetch_errors += 1
        if self._failing is None:
            log.warning("kafka: fetch failed, retrying: %s", why)
            self._failing = why
        else:
            log.debug("kafka: fetch failed, retrying: %s", why)
        consumer._client.force_metadata_update()

    async def _take_fetched(self, consumer: AIOKafkaConsumer, queue: IngestQueue, parts: list[Any]) -> bool:
        """Queue what one fetch returned; False when a partition reported an error."""
        ok = True
        assigned = consumer.assignment()
        for (
            topic,
            partition,
            fetch_offset,
            error,
            next_offset,
            high,
            _start,
            _n,
            _b,
            groups,
            skipped,
            _p,
        ) in parts:
            tp = TopicPartition(topic, partition)
            if consumer._subscription.reassignment_in_progress:
                break  # a rebalance began while the fetch ran: the rest is read again by the owner
            if tp not in assigned or self._positions.get(tp) != fetch_offset:
                continue  # revoked (or moved) while the fetch ran: the data is not ours to hand over
            if error:
                ok = False
                await self._partition_error(consumer, tp, error)
                continue
            if self._failing is not None:
                log.info("kafka: fetching again after: %s", self._failing)
                self._failing = None
            if high >= 0:
                self._highwater[tp] = high
            for reason, n in skipped.items():
                self.stats.malformed[reason] = self.stats.malformed.get(reason, 0) + n
            if next_offset <= fetch_offset:
                continue
            self._positions[tp] = next_offset
            buffers = [(Source(target=t, version=v), data) for t, v, data, _ in groups]
            if not await self._queue_buffers(queue, tp, next_offset, buffers):
                break
        return ok

    async def _partition_error(self, consumer: AIOKafkaConsumer, tp: TopicPartition, error: int) -> None:
        if error == _OFFSET_OUT_OF_RANGE:
            # the position left the log (retention, a truncated log): start over as configured
            log.warning(
                "kafka: offset %s of %s out of range, resetting to %s",
                self._positions.get(tp),
                tp,
                self.config.auto_offset_reset,
            )
            self.fetch_errors += 1
            try:
                if self.config.auto_offset_reset == "earliest":
                    await consumer.seek_to_beginning(tp)
                else:
                    await consumer.seek_to_end(tp)
            except (KafkaError, IllegalStateError) as exc:
                log.warning("kafka: offset reset of %s failed: %s", tp, exc)
            self._positions.pop(tp, None)  # read again from aiokafka's reset position
            return
        name = _REFRESH_METADATA.get(error)
        self._fetch_failed(consumer, f"{tp}: Kafka error {error} {name or ''}".rstrip())

    # --- batches ---------------------------------------------------------------------------

    async def _hand_over(self, queue: IngestQueue, tp: TopicPartition, records: list[Any]) -> bool:
        """Turn one partition batch into Batches (one per target/version) and queue them.
        False when stopping interrupted the hand-over."""
        groups = self._group(records)
        end = records[-1].offset + 1
        self._positions[tp] = end
        buffers = [(source, self._join(values) if values else b"") for source, values in groups]
        return await self._queue_buffers(queue, tp, end, buffers)

    async def _queue_buffers(
        self,
        queue: IngestQueue,
        tp: TopicPartition,
        end: int,
        buffers: Sequence[tuple[Source, bytes | _native.KafkaLines]],
    ) -> bool:
        """Queue the buffers of one partition fetch; `end` is committed once all are folded (at
        least one Batch, possibly empty, so that skipped records' offsets are committed too).
        A buffer is joined record values (aiokafka path) or the Rust fetcher's lines, handed on
        without a copy (`KafkaLines`: a read-only buffer the core reads in place)."""
        if not buffers:
            buffers = [(Source(), b"")]
        entry = _Inflight(end=end, remaining=len(buffers))
        self._inflight.setdefault(tp, deque()).append(entry)
        for source, data in buffers:
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
        if queue.would_block(len(batch.data)):
            self.pauses += 1
            # the Rust path does not fetch while this waits (its partitions stay paused for aiokafka)
            if consumer is not None and not self._rust:
                paused = set(consumer.assignment())
                consumer.pause(*paused)
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
        commit round trip, and while one commit is in flight or within ``commit_interval_ms`` of the
        last, the next takes everything folded meanwhile. Uncommitted at any time: the batches in
        flight plus those folded during one commit round trip and interval."""
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.create_task(self._commit_loop())
        else:
            self._commit_again = True

    async def _commit_loop(self) -> None:
        interval = self.config.commit_interval_ms / 1000
        while True:
            self._commit_again = False
            started = time.monotonic()
            await self._commit(None)
            if interval:
                # stop() ends the wait: the drain commits what is left at once
                await self._sleep(interval - (time.monotonic() - started))
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
            self._highwater.pop(tp, None)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka: assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        if self._rust and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)  # aiokafka's fetcher never fetches them

    # --- lag -------------------------------------------------------------------------------

    async def _update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        consumer = self._consumer
        if consumer is None or (not force and now - self._lag_at < self.config.lag_interval_s):
            return
        self._lag_at = now
        total: int | None = None
        if self._rust:
            for tp in consumer.assignment():
                high, pos = self._highwater.get(tp), self._positions.get(tp)
                if high is not None and pos is not None:
                    total = (total or 0) + max(0, high - pos)
            self.stats.lag = total
            return
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
