"""HTTP push source: an NDJSON ingest endpoint for Fluent Bit's ``http`` output and Vector's ``http``
sink, served inside the process's event loop by :mod:`canary_stream.sources.http_wire` (request
bodies received straight into one buffer; see there why not uvicorn).

Endpoints:

* ``POST /ingest`` — lines say who served them (the aggregator's attribution rules).
* ``POST /ingest/{target}/{version}`` — every line of the body is attributed to ``target`` /
  ``version`` (:class:`~canary_stream.core.Source`), for senders that know it (one Fluent Bit output
  per canary pod group, Vector templated ``uri``). Lines that carry their own attribution keep it
  where the core's rules give fields precedence.
* ``GET /healthz`` — 200 ``ok`` while serving; ``GET /stats`` — this source's counters as JSON.

Bodies: newline-delimited lines (access-log lines of any format the core reads, or JSON objects).
Content types accepted: ``application/x-ndjson``, ``application/ndjson``, ``application/json``,
``application/jsonl`` / ``application/x-jsonlines``, ``text/plain`` (any parameters) or none; others
get **415**. A JSON **array** body (Fluent Bit ``format json``, Vector ``codec = "json"`` with its
default array framing) is accepted too, on a slower path (parsed in Python, one line per element):
prefer ``json_lines`` / ``framing.method = "newline_delimited"``. ``Content-Encoding``: ``gzip``
(Fluent Bit ``compress gzip``, Vector ``compression = "gzip"``; concatenated members are read),
``deflate`` (zlib, Vector ``compression = "zlib"``) or ``identity``; others get **415**.

Envelopes: Fluent Bit ``json_lines`` sends ``{"date":1712345678.1,"log":"<line>",...}`` per record,
Vector ``{"message":"<line>","timestamp":...}``. With ``envelope_key`` set (``log`` / ``message``)
each line's prefix up to ``"<key>":"`` is replaced by ``{"log":"`` in one C-level regex pass over the
body (no JSON parsed in Python), which the core's Docker-envelope unwrapper decodes in Rust — the
same fast path as the Kafka source, with the same limit (the first ``"<key>":"`` of a line wins).
Lines without the key pass through as raw lines. A ``log`` key that comes *first* is unwrapped by the
core even without ``envelope_key``.

Limits and answers:

* **413** when the body as received exceeds ``max_body_bytes`` (checked against ``Content-Length``
  before reading, and while reading a chunked body), or when it decompresses to more than
  ``max_decoded_bytes`` (zip bombs: decompression stops at the limit).
* **400** with the reason for a corrupt or truncated gzip/zlib stream or an invalid JSON array.
* A request that stalls mid-way for ``read_timeout_s`` has its connection closed (counted in
  ``rejected["disconnected"]``); an idle keep-alive connection is closed after ``keep_alive_s``.
* **429** (or **503**, ``busy_status``) with ``Retry-After`` when the ingest queue is full: the body
  is not queued, the sender retries (Vector retries 429/503, Fluent Bit any non-2xx).
* **204** once the batch has been *folded* into the aggregator (``ack="folded"``, the default) or
  once it is queued (``ack="queued"``). **503** when a folded-ack is not seen within
  ``ack_timeout_s`` (the batch may still fold: the retry can duplicate it — at-least-once).

Why ``ack="folded"`` is the default: a 2xx then means the events are counted (a verdict taken after
the response includes them), the latency it adds is one fold of the body (a few ms per MiB), and a
sender holding the data until then retries whatever the process did not take in: with
``ack="queued"`` the bodies queued but not folded when the process dies are lost although they were
acknowledged (at-most-once across a crash). The aggregate itself is in memory, so a crash loses the
folded figures too; what the folded ack buys is that no acknowledged event is ever missing from a
running aggregator, and that a stuck core turns into 503s (retried) instead of silent loss. On a
clean stop (``stop()``) the server stops accepting, in-flight requests wait for their folds (the fold
loop keeps running until the sources are stopped) and are answered 204.

Rejections: 400/413/415 are counted per reason in ``stats.malformed`` as ``http_<reason>`` (one per
request: the sender drops such bodies or retries them in vain) and in ``rejected``; 429s count in
``stats.waits`` (backpressure) and ``rejected["busy"]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal
from urllib.parse import unquote

from canary_stream.core import Source
from canary_stream.sources.base import Batch, IngestQueue, SourceStats
from canary_stream.sources.checks import FieldChecks
from canary_stream.sources.http_wire import ReadBody, WireRequest, WireResponse, WireServer

log = logging.getLogger(__name__)


def _inflater() -> ModuleType:
    """ISA-L's zlib-compatible inflate (2.7x zlib's speed on gzip bodies here), else zlib."""
    try:
        from isal import isal_zlib
    except ImportError:  # pragma: no cover - isal is a dependency; wheels exist for common platforms
        return zlib
    return isal_zlib


_zlib = _inflater()

_KEY_RE = re.compile(r"^[A-Za-z0-9_@.\-]+$")
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/json",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
        "text/plain",
        "",
    }
)
ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
# A JSON array of objects / strings (an access-log line such as Istio TEXT's "[2026-..." is not one).
_ARRAY_START = re.compile(rb'\s*\[\s*[{"\]]')
# A rejected (413) body up to this size is read and dropped before answering, so the sender sees the 413.
DRAIN_BYTES = 64 * 1024 * 1024
# Bodies larger than this are decoded in a worker thread (zlib releases the GIL), not on the loop.
THREAD_DECODE_BYTES = 256 * 1024


@dataclass(frozen=True)
class HttpPushConfig:
    """Everything :class:`HttpPushSource` needs. Invalid values raise ``ValueError`` naming the field
    (``http.<field>: ...``)."""

    host: str = "127.0.0.1"
    port: int = 8087  # 0: an ephemeral port (see HttpPushSource.port)
    path: str = "/ingest"
    max_body_bytes: int = 8 * 1024 * 1024  # as received (compressed or not)
    max_decoded_bytes: int = 64 * 1024 * 1024  # after decompression
    envelope_key: str | None = None  # "log" (Fluent Bit json_lines), "message" (Vector json)
    ack: Literal["folded", "queued"] = "folded"
    ack_timeout_s: float = 30.0
    busy_status: Literal[429, 503] = 429
    retry_after_s: int = 1
    json_arrays: bool = True  # accept a JSON array body (slow path)
    graceful_shutdown_s: float = 30.0  # stop(): how long in-flight requests may take
    read_timeout_s: float = 60.0  # a request that stalls this long mid-way: connection closed
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    backlog: int = 1024

    def __post_init__(self) -> None:
        check = FieldChecks("http", self)
        fail = check.fail
        check.listen_address()
        if not self.path.startswith("/") or self.path.endswith("/") or "{" in self.path:
            fail("path", f"an absolute path without a trailing slash, got {self.path!r}")
        check.positive_ints("max_body_bytes", "max_decoded_bytes", "retry_after_s", "backlog")
        if self.max_decoded_bytes < self.max_body_bytes:
            fail("max_decoded_bytes", "must be >= max_body_bytes")
        check.positive_numbers("ack_timeout_s", "graceful_shutdown_s", "read_timeout_s", "keep_alive_s")
        if self.ack not in ("folded", "queued"):
            fail("ack", f"expected folded or queued, got {self.ack!r}")
        if self.busy_status not in (429, 503):
            fail("busy_status", f"expected 429 or 503, got {self.busy_status!r}")
        if self.envelope_key is not None and not _KEY_RE.match(self.envelope_key):
            fail("envelope_key", f"a plain JSON key (letters, digits, _@.-), got {self.envelope_key!r}")


class _Reject(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def envelope_rewriter(key: str) -> Callable[[bytes | bytearray], bytes]:
    """A function rewriting every line ``{...,"<key>":"<escaped line>",...}`` of a buffer to
    ``{"log":"<escaped line>",...}`` for the core's Docker unwrapper: one regex pass in C. The
    pattern starts with the literal ``\n{`` so the regex engine jumps between line starts with a
    fast literal search (``^`` with MULTILINE tries every position: ~5x slower); ~5 ms per
    1.6 MB / 4000 lines here."""
    pattern = re.compile(rb'\n\{[^\n]*?"' + re.escape(key.encode()) + rb'"\s*:\s*"')
    replacement = b'\n{"log":"'

    def rewrite(data: bytes | bytearray) -> bytes:
        return pattern.sub(replacement, b"\n" + data)[1:]

    return rewrite


def _inflate(data: bytes | bytearray, limit: int, encoding: str) -> bytes:
    """Decompress gzip (all concatenated members) or zlib, stopping at `limit` output bytes."""
    out: list[bytes] = []
    total = 0
    first = True
    while data:
        if not first and not data.strip(b"\0"):
            break  # zero padding after the last member
        d = _zlib.decompressobj(47)  # gzip or zlib header, detected
        try:
            chunk = d.decompress(data, limit - total + 1)
            while True:
                total += len(chunk)
                if total > limit:
                    raise _Reject(413, "decoded_too_large", f"body decompresses to more than {limit} bytes")
                out.append(chunk)
                if not d.unconsumed_tail:
                    break
                chunk = d.decompress(d.unconsumed_tail, limit - total + 1)
        except _zlib.error as exc:
            raise _Reject(400, "bad_encoding", f"invalid {encoding} body: {exc}") from None
        if not d.eof:
            raise _Reject(400, "bad_encoding", f"truncated {encoding} body (stream did not end)")
        data = d.unused_data
        first = False
    return b"".join(out)


class HttpPushSource:
    """A :class:`~canary_stream.sources.base.TelemetrySource` serving the ingest endpoint (see the
    module docstring). ``port`` is the bound port once ``ready`` is set."""

    #: A rejected body up to this size is read and dropped before the answer (http_wire).
    drain_bytes = DRAIN_BYTES

    def __init__(self, config: HttpPushConfig | None = None, *, name: str = "http") -> None:
        self.config = config or HttpPushConfig()
        self.stats = SourceStats(name)
        self.ready = asyncio.Event()
        self.port: int | None = None
        self.requests = 0
        self.accepted = 0  # requests answered 2xx
        self.rejected: dict[str, int] = {}
        self._rewrite = envelope_rewriter(self.config.envelope_key) if self.config.envelope_key else None
        self._queue: IngestQueue | None = None
        self._server: WireServer | None = None
        self._stopping = False

    # --- the TelemetrySource protocol ------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting; requests in flight are answered (they wait for their folds)."""
        self._stopping = True
        if self._server is not None:
            self._server.stop()

    async def run(self, queue: IngestQueue) -> None:
        cfg = self.config
        self._queue = queue
        info = socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = info[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(cfg.backlog)  # connections wait in the backlog until the server accepts
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        server = WireServer(
            self,
            keep_alive_s=cfg.keep_alive_s,
            read_timeout_s=cfg.read_timeout_s,
            grace_s=cfg.graceful_shutdown_s,
        )
        self._server = server
        if self._stopping:
            server.stop()
        self.ready.set()
        try:
            await server.serve(sock)
        finally:
            sock.close()
            self._server = None

    # --- the WireApp protocol: routing ------------------------------------------------------

    def _route(self, path: str) -> tuple[str, Source]:
        """("ingest" | "healthz" | "stats" | "", the attribution the path gives)."""
        base = self.config.path
        if path == base:
            return "ingest", Source()
        if path.startswith(base + "/"):
            parts = path[len(base) + 1 :].split("/")
            if len(parts) == 2 and all(parts):
                return "ingest", Source(target=unquote(parts[0]), version=unquote(parts[1]))
            return "", Source()
        if path in ("/healthz", "/stats"):
            return path[1:], Source()
        return "", Source()

    def check(self, request: WireRequest) -> WireResponse | ReadBody:
        """A request head, before its body is read: route, method, content type and encoding,
        announced length."""
        route, _ = self._route(request.path)
        if not route:
            return WireResponse(404, b"not found\n")
        method = "POST" if route == "ingest" else "GET"
        if request.method != method:
            return WireResponse(405, b"method not allowed\n", headers=(("allow", method),))
        if route != "ingest":
            return ReadBody(0, lambda r: WireResponse(413, b"a GET has no body\n"))
        self.requests += 1
        cfg = self.config
        headers = request.headers
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in NDJSON_TYPES:
            return self._reject(
                415,
                "unsupported_content_type",
                f"unsupported content type {media!r}: send NDJSON as application/x-ndjson, "
                "application/json or text/plain",
            )
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ENCODINGS:
            return self._reject(
                415,
                "unsupported_content_encoding",
                f"unsupported content encoding {encoding!r}: use gzip, deflate or none",
            )
        length = headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > cfg.max_body_bytes:
            return self._reject(
                413, "body_too_large", f"body of {length} bytes exceeds the limit of {cfg.max_body_bytes}"
            )
        return ReadBody(cfg.max_body_bytes, self._too_large)

    def _too_large(self, request: WireRequest) -> WireResponse:
        limit = self.config.max_body_bytes
        return self._reject(413, "body_too_large", f"body exceeds the limit of {limit} bytes")

    def disconnected(self, request: WireRequest) -> None:
        if self._route(request.path)[0] == "ingest":
            self.rejected["disconnected"] = self.rejected.get("disconnected", 0) + 1

    async def handle(self, request: WireRequest) -> WireResponse:
        route, source = self._route(request.path)
        if route == "healthz":
            return WireResponse(200, b"ok")
        if route == "stats":
            return WireResponse(200, json.dumps(self.stats_doc()).encode(), "application/json")
        response, queued = await self._ingest(request, source)
        # The received buffer is free again unless a batch of it is still queued or folding
        # (ack=queued, or a folded-ack timeout).
        request.recycle = queued is not request.body
        return response

    # --- requests --------------------------------------------------------------------------

    def stats_doc(self) -> dict[str, object]:
        """This source's counters (``GET /stats``)."""
        s = self.stats
        return {
            **s.to_dict(),
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            **s.rates(),
        }

    def _reject(self, status: int, reason: str, message: str) -> WireResponse:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if reason != "busy":
            key = f"http_{reason}"
            self.stats.malformed[key] = self.stats.malformed.get(key, 0) + 1
        headers = (("retry-after", str(self.config.retry_after_s)),) if status in (429, 503) else ()
        return WireResponse(status, (message + "\n").encode(), headers=headers)

    async def _ingest(
        self, request: WireRequest, source: Source
    ) -> tuple[WireResponse, bytes | bytearray | None]:
        """The answer, and the data still held by a queued batch (None once folded)."""
        try:
            data = await self._decode(request)
        except _Reject as r:
            return self._reject(r.status, r.reason, r.message), None
        if not data:
            self.accepted += 1
            return WireResponse(204), None
        queue = self._queue
        if queue is None:  # pragma: no cover - the server runs only inside run()
            return self._reject(503, "busy", "not running"), None
        # While stopping, requests already being received are still taken in: the server accepts
        # no new connection, and the fold loop keeps running until every source has stopped.
        if queue.would_block(len(data)):
            self.stats.waits += 1
            message = f"ingest queue full ({queue.queued_bytes} of {queue.max_bytes} bytes); retry later"
            return self._reject(self.config.busy_status, "busy", message), None
        if self.config.ack == "queued":
            await queue.put(Batch(data, source, self.stats))
            self.accepted += 1
            return WireResponse(204), data
        folded = asyncio.get_running_loop().create_future()

        async def on_folded() -> None:
            if not folded.done():
                folded.set_result(None)

        await queue.put(Batch(data, source, self.stats, on_folded))
        try:
            await asyncio.wait_for(asyncio.shield(folded), self.config.ack_timeout_s)
        except TimeoutError:
            timeout = self.config.ack_timeout_s
            return self._reject(503, "busy", f"not folded within {timeout:g} s; retry"), data
        self.accepted += 1
        return WireResponse(204), None

    async def _decode(self, request: WireRequest) -> bytes | bytearray:
        """The body as complete lines (ends with a newline), or a _Reject."""
        body = request.body or bytearray()
        encoding = request.headers.get("content-encoding", "").strip().lower()
        # Only decompression and rewriting cost enough to be worth a thread hop; a plain body is
        # checked on the loop (a prefix match and its last byte).
        heavy = encoding not in ("", "identity") or self._rewrite is not None
        if heavy and len(body) > THREAD_DECODE_BYTES:
            return await asyncio.to_thread(self._transform, body, encoding)
        return self._transform(body, encoding)

    def _transform(self, body: bytearray, encoding: str) -> bytes | bytearray:
        """Decoded, unwrapped lines. A plain body is handed on as the buffer it was received in
        (the core reads any bytes-like object); nothing else holds it."""
        cfg = self.config
        data: bytes | bytearray = body
        if encoding not in ("", "identity"):
            data = _inflate(body, cfg.max_decoded_bytes, encoding)
        elif len(body) > cfg.max_decoded_bytes:  # pragma: no cover - max_decoded >= max_body
            raise _Reject(413, "decoded_too_large", "body too large")
        if cfg.json_arrays and _ARRAY_START.match(data):
            data = self._from_array(data)
        elif self._rewrite is not None:
            data = self._rewrite(data)
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return data

    def _from_array(self, body: bytes | bytearray) -> bytes:
        """A JSON array body: one line per element; with `envelope_key`, the key's string value."""
        try:
            items = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _Reject(400, "bad_json", f"invalid JSON array body: {exc}") from None
        if not isinstance(items, list):
            raise _Reject(400, "bad_json", "expected a JSON array")
        key = self.config.envelope_key
        lines: list[str] = []
        for item in items:
            if key is not None and isinstance(item, dict) and isinstance(item.get(key), str):
                lines.append(item[key].rstrip("\r\n"))
            elif isinstance(item, str):
                lines.append(item.rstrip("\r\n"))
            else:
                lines.append(json.dumps(item, separators=(",", ":")))
        if not lines:
            return b""
        return ("\n".join(lines) + "\n").encode()
