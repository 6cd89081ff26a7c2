"""Envoy gRPC Access Log Service source (``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``),
the target of Istio's ``envoyHttpAls`` extension provider and of any Envoy's ``http_grpc`` access logger.

A ``grpc.aio`` server with a generic handler: messages stay raw bytes in Python (no protobuf decode here);
a stream's messages are batched (``batch_bytes``, or whatever arrived when the stream has been quiet for
``flush_ms``), framed the way gRPC frames them, and put on the ingest queue; the fold thread decodes
and aggregates them in Rust with the GIL released (rust/src/als.rs). Each stream keeps its own
:class:`~canary_stream.core.AlsStream`: Envoy sends the node identity (Istio node metadata: pod,
namespace, labels) only in the first message of a stream, and the inbound entries of that stream are
attributed to that pod.

Flow control: while the queue is full the stream's handler waits in ``queue.put`` and reads no further
message; gRPC's HTTP/2 flow control then stops Envoy's sends once the stream's window is used, so what
one stream holds is bounded by its window plus one batch. (Envoy itself buffers up to its
``buffer_size_bytes`` and drops beyond that — ALS is lossy by design.)

Streams never get a response while they last (Envoy expects none); a stream ends when Envoy closes it,
when it breaks, or on ``stop()`` (the server cuts every stream; Envoy reconnects elsewhere): in each case
the complete messages received are folded.
Messages over ``max_message_bytes`` are refused by gRPC (RESOURCE_EXHAUSTED; that stream ends, counted
in ``stream_errors``). Undecodable messages or entries are counted per reason (``bad_protobuf``, ...)
in ``stats.malformed`` and the stream goes on. ``stats.bytes`` counts the messages with gRPC's 5-byte
frame header each; ``stats.lines`` / ``events`` count entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from canary_stream.core import Aggregator, AlsStream, FeedResult, Source, grpc_frame
from canary_stream.sources.base import Batch, IngestQueue, SourceStats
from canary_stream.sources.checks import FieldChecks

log = logging.getLogger(__name__)

SERVICE = "envoy.service.accesslog.v3.AccessLogService"
METHOD = "StreamAccessLogs"
FULL_METHOD = f"/{SERVICE}/{METHOD}"


@dataclass(frozen=True)
class EnvoyAlsConfig:
    """Everything :class:`EnvoyAlsSource` needs. Invalid values raise ``ValueError`` naming the field
    (``als.<field>: ...``)."""

    host: str = "127.0.0.1"
    port: int = 9001  # 0: an ephemeral port (see EnvoyAlsSource.port)
    max_message_bytes: int = 4 * 1024 * 1024  # gRPC receive limit per message (Envoy's are ~16 KiB)
    batch_bytes: int = 256 * 1024  # a stream's messages are queued in batches of about this size
    flush_ms: float = 20.0  # ... or when the stream has sent nothing for this long
    tls_cert: str | None = None  # PEM files; both or neither
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate signed by this CA
    max_concurrent_streams: int | None = None  # per HTTP/2 connection (gRPC default: unlimited)

    def __post_init__(self) -> None:
        check = FieldChecks("als", self)
        fail = check.fail
        check.listen_address()
        check.positive_ints("max_message_bytes", "batch_bytes")
        if self.max_concurrent_streams is not None:
            check.positive_ints("max_concurrent_streams")
        check.positive_numbers("flush_ms")
        if (self.tls_cert is None) != (self.tls_key is None):
            fail("tls_cert" if self.tls_cert is None else "tls_key", "tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            fail("tls_client_ca", "needs tls_cert and tls_key")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                fail(name, f"no such file: {path}")


def _fold(stream: AlsStream) -> Callable[[Aggregator, bytes], FeedResult]:
    def fold(aggregator: Aggregator, data: bytes) -> FeedResult:
        return aggregator.feed_envoy_als(data, stream)

    return fold


class EnvoyAlsSource:
    """A :class:`~canary_stream.sources.base.TelemetrySource` serving the Envoy access-log service
    (see the module docstring). ``port`` is the bound port once ``ready`` is set."""

    def __init__(self, config: EnvoyAlsConfig | None = None, *, name: str = "als") -> None:
        self.config = config or EnvoyAlsConfig()
        self.stats = SourceStats(name)
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.streams_open = 0
        self.streams_total = 0
        self.stream_errors = 0  # streams that ended with an error (broken, message too large)
        self.messages = 0  # messages received (queued for folding)
        self._queue: IngestQueue | None = None
        self._stopping: asyncio.Event | None = None
        self._detached: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Where Envoy / Istio should send (``host:port``)."""
        return f"{self.config.host}:{self.port}"

    # --- the TelemetrySource protocol ------------------------------------------------------

    def stop(self) -> None:
        """Stop: streams queue what they hold and end; the server closes."""
        if self._stopping is not None:
            self._stopping.set()

    async def run(self, queue: IngestQueue) -> None:
        cfg = self.config
        self._queue = queue
        if self._stopping is None:
            self._stopping = asyncio.Event()
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        if cfg.max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", cfg.max_concurrent_streams))
        server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.stream_unary_rpc_method_handler(self._stream)}
        )
        server.add_generic_rpc_handlers((handler,))
        address = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            creds = grpc.ssl_server_credentials(
                [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())],
                root_certificates=Path(cfg.tls_client_ca).read_bytes() if cfg.tls_client_ca else None,
                require_client_auth=cfg.tls_client_ca is not None,
            )
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"als: cannot listen on {address}")
        self.port = port
        await server.start()
        self.ready.set()
        try:
            await self._stopping.wait()
        finally:
            # Envoy streams never end by themselves: cut them at once. A cut handler queues the
            # messages it holds (detached puts, awaited here), and Envoy reconnects elsewhere.
            await server.stop(None)
            if self._detached:
                await asyncio.gather(*self._detached, return_exceptions=True)

    # --- one stream ------------------------------------------------------------------------

    async def _stream(self, request_iterator: Any, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        """Read one Envoy stream until it ends; return the (empty) StreamAccessLogsResponse."""
        queue, stopping = self._queue, self._stopping
        assert queue is not None and stopping is not None
        cfg = self.config
        state = AlsStream()
        fold = _fold(state)
        pending: list[bytes] = []
        size = 0
        self.streams_open += 1
        self.streams_total += 1
        read: asyncio.Future[Any] | None = None
        flush_s = cfg.flush_ms / 1000

        async def flush() -> None:
            nonlocal size
            if pending:
                # Waits while the queue is full: no further message is read meanwhile. Cleared only
                # once queued: a stream cancelled while waiting still holds its messages (below).
                await queue.put(Batch(grpc_frame(pending), Source(), self.stats, fold=fold))
                pending.clear()
                size = 0

        try:
            while True:
                # One read is always in flight (also while a flush waits for queue space: without
                # it, gRPC was seen to resume a stalled stream very slowly).
                if read is None:
                    read = asyncio.ensure_future(context.read())
                if pending:
                    # Something to flush: wait for the read with a deadline (the read itself is never
                    # cancelled, so no message is lost to a timeout).
                    done, _ = await asyncio.wait((read,), timeout=flush_s)
                    if not done:  # quiet for flush_ms
                        await flush()
                        continue
                else:
                    await read
                msg, read = read.result(), None
                if msg is grpc.aio.EOF:
                    break
                pending.append(msg)
                size += len(msg)
                self.messages += 1
                if size >= cfg.batch_bytes:
                    read = asyncio.ensure_future(context.read())
                    await flush()
            await flush()
            if context.cancelled():
                # The client went away: depending on timing gRPC ends the reads with EOF rather
                # than an error; it is a broken stream all the same.
                self.stream_errors += 1
            return b""
        except BaseException as exc:
            # A broken stream (client gone, message too large) or stop(): the complete messages
            # received so far are still queued, by a task that outlives this handler.
            if not (isinstance(exc, asyncio.CancelledError) and stopping.is_set()):
                log.debug("als stream ended with %r", exc)
                self.stream_errors += 1
            if pending:
                task = asyncio.get_running_loop().create_task(
                    queue.put(Batch(grpc_frame(pending), Source(), self.stats, fold=fold))
                )
                pending.clear()
                self._detached.add(task)
                task.add_done_callback(self._detached.discard)
            raise
        finally:
            self.streams_open -= 1
            if read is not None and not read.done():
                read.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait((read,), timeout=0)


def stats_dict(source: EnvoyAlsSource) -> dict[str, Any]:
    """The source's counters as one JSON-able mapping."""
    s = source.stats
    return {
        **s.to_dict(),
        "messages": source.messages,
        "streams_open": source.streams_open,
        "streams_total": source.streams_total,
        "stream_errors": source.stream_errors,
        "uptime_s": time.monotonic() - s.started_at,
        **s.rates(),
    }
