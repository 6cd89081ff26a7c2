"""A small HTTP/1.1 server for the ingest path, built so that a request body is received straight
into one buffer.

Why not uvicorn + Starlette here (they serve the verdict API): on the ingest path each body byte
was copied three times in the event-loop thread (the loop's read buffer into a ``bytes`` per read,
httptools' ``on_body`` into another ``bytes``, the chunks joined into one body) plus an ASGI
message per 64 KiB; that was ~40 % of the server's CPU per pushed line
(``benches/test_bench_http_push.py``, ``perf``). Here the connection is an
:class:`asyncio.BufferedProtocol`: once a request head announces ``Content-Length``, the kernel
writes the body directly into a ``bytearray`` of that size, and the handler gets that buffer.

What it does: HTTP/1.1 and 1.0 with keep-alive, request heads parsed by httptools (llhttp),
``Content-Length`` and ``Transfer-Encoding: chunked`` bodies, ``Expect: 100-continue``, a check of
each request head before its body is read (so a 413/415 costs no buffering), one request at a
time per connection (reading pauses while the handler runs: backpressure on the sender), an idle
keep-alive timeout, and a graceful stop (no new connections; requests in flight are answered).
No TLS (put it behind the mesh or a proxy), no HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import httptools

log = logging.getLogger(__name__)

#: Largest request head (request line + headers) accepted; larger ones get 431 and the connection closes.
MAX_HEAD_BYTES = 64 * 1024
#: Size of the read buffer outside of fixed-length bodies (what is read past a head into it is
#: copied once more; the rest of a fixed-length body is read in place).
READ_CHUNK = 64 * 1024


@dataclass
class WireRequest:
    """One request: header names lower-cased (repeated headers joined with ", "); ``body`` is
    None until it has been read."""

    method: str
    path: str  # percent-encoded, without the query
    query: str
    headers: dict[str, str]
    body: bytearray | None = None
    #: Set by the handler when nothing holds `body` any more once it has answered: the
    #: connection then receives its next body into the same buffer (no fresh pages to fault in
    #: and zero for every request).
    recycle: bool = False


@dataclass
class WireResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class ReadBody:
    """The head check's answer when the body is wanted: read it, up to ``limit`` bytes, and call
    ``too_large`` (which answers) when it is longer."""

    limit: int
    too_large: Callable[[WireRequest], WireResponse]


class WireApp(Protocol):
    """What the server calls. ``check`` sees each request head before its body is read: a
    response rejects the request (its body is read and dropped up to ``drain_bytes``, or the
    connection is closed after the answer), ``ReadBody`` accepts it. ``handle`` answers a
    request whose body has been read (or that has none). ``disconnected`` is told of a client
    that went away in the middle of a request."""

    drain_bytes: int

    def check(self, request: WireRequest) -> WireResponse | ReadBody: ...

    def handle(self, request: WireRequest) -> Awaitable[WireResponse]: ...

    def disconnected(self, request: WireRequest) -> None: ...


def render(response: WireResponse, *, keep_alive: bool) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    if response.status != 204 and response.status >= 200:
        lines.append(f"content-type: {response.content_type}")
        lines.append(f"content-length: {len(response.body)}")
    lines.extend(f"{k}: {v}" for k, v in response.headers)
    if not keep_alive:
        lines.append("connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if response.status == 204 else head + response.body


class _Head:
    """httptools callbacks collecting one request head."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.complete = False
        self.message_complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_message_complete(self) -> None:
        self.message_complete = True


class _BadRequest(Exception):
    pass


class _Chunked:
    """Incremental decoder of a chunked body (RFC 9112 §7.1): ``feed`` returns how many bytes of
    the input it consumed; ``done`` once the last chunk and the trailers are read."""

    def __init__(self) -> None:
        self.remaining = 0  # data bytes left in the current chunk
        self.state = "size"  # size | data | data_end | trailers
        self.done = False

    def feed(self, data: bytearray, sink: Callable[[memoryview], None]) -> int:
        pos = 0
        view = memoryview(data)
        try:
            while pos < len(data) and not self.done:
                if self.state == "data":
                    take = min(self.remaining, len(data) - pos)
                    sink(view[pos : pos + take])
                    pos += take
                    self.remaining -= take
                    if self.remaining == 0:
                        self.state = "data_end"
                    continue
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if len(data) - pos > 4096:
                        raise _BadRequest("chunk header line too long")
                    break
                line = bytes(data[pos:end])
                pos = end + 2
                if self.state == "data_end":
                    if line:
                        raise _BadRequest("chunk data longer than its size")
                    self.state = "size"
                elif self.state == "size":
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise _BadRequest(f"bad chunk size {size_text[:20]!r}") from None
                    if size < 0:
                        raise _BadRequest("negative chunk size")
                    if size == 0:
                        self.state = "trailers"
                    else:
                        self.remaining, self.state = size, "data"
                elif not line:  # trailers end with an empty line
                    self.done = True
        finally:
            view.release()
        return pos


class WireProtocol(asyncio.BufferedProtocol):
    """One connection (see the module docstring)."""

    def __init__(self, server: WireServer) -> None:
        self.server = server
        self.app = server.app
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(READ_CHUNK)
        self._pending = bytearray()  # received, not consumed yet
        self._state = "head"  # head | body | chunked | discard | busy | closed
        self._request: WireRequest | None = None
        self._keep_alive = True
        self._body = bytearray()
        self._spare: bytearray | None = None  # a recycled body buffer
        self._filled = 0
        self._limit = 0
        self._too_large: Callable[[WireRequest], WireResponse] | None = None
        self._rejection: WireResponse | None = None  # answered once a dropped body is read
        self._discard_left = 0
        self._chunked: _Chunked | None = None
        self._dropped = 0  # bytes of a chunked body over its limit, read and dropped
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.server.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        was = self._state
        self._state = "closed"
        self._cancel_idle()
        self.server.connections.discard(self)
        if self._request is not None and was in ("body", "chunked"):
            self.app.disconnected(self._request)
        self.server.idle_changed()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._state == "body":
            return memoryview(self._body)[self._filled :]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        if self._state == "body":
            self._filled += nbytes
            if self._filled == len(self._body):
                self._body_complete()
            else:
                self._arm_timer()
            return
        self._pending += memoryview(self._scratch)[:nbytes]
        self._advance()
        self._arm_timer()

    def eof_received(self) -> bool | None:
        if self._state == "busy":  # the client half-closed after its request: still answer it
            self._keep_alive = False
            return True
        return False  # close; a request cut short is reported by connection_lost

    # --- the request cycle ----------------------------------------------------------------------

    def _advance(self) -> None:
        """Consume `_pending` as far as the current state allows."""
        try:
            while self._pending and self._state in ("head", "chunked", "discard"):
                if self._state == "head":
                    if not self._read_head():
                        return
                elif self._state == "chunked":
                    before = len(self._pending)
                    self._read_chunked()
                    if self._state == "chunked" and len(self._pending) == before:
                        return  # an incomplete chunk line: wait for more
                else:
                    take = min(self._discard_left, len(self._pending))
                    del self._pending[:take]
                    self._discard_left -= take
                    if self._discard_left == 0:
                        self._answer_rejection()
        except _BadRequest as exc:
            self._fail(400, str(exc))
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("http: request handling failed")
            self._fail(500, "internal error")

    def _read_head(self) -> bool:
        end = self._pending.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(self._pending) >= MAX_HEAD_BYTES + 4:
                self._fail(431, "request head too large")
            return False
        head_bytes = bytes(self._pending[: end + 4])
        del self._pending[: end + 4]
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(head_bytes)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades: served as a plain HTTP/1.1 request
        except httptools.HttpParserError as exc:
            raise _BadRequest(f"malformed request: {exc}") from None
        if not head.complete:
            raise _BadRequest("malformed request head")
        try:
            url = httptools.parse_url(head.url)
        except httptools.HttpParserError:  # e.g. CONNECT's authority form `host:443`
            raise _BadRequest(f"unsupported request target {head.url[:100]!r}") from None
        request = WireRequest(
            method=parser.get_method().decode("latin-1"),
            path=(url.path or b"/").decode("latin-1"),
            query=(url.query or b"").decode("latin-1"),
            headers=head.headers,
        )
        self._request = request
        self._keep_alive = parser.should_keep_alive() and not self.server.stopping
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        length_text = request.headers.get("content-length")
        length = 0
        if chunked:
            length = -1
        elif length_text is not None:
            if not length_text.strip().isdigit():
                raise _BadRequest("invalid Content-Length")
            length = int(length_text)
        verdict = self.app.check(request)
        expect = request.headers.get("expect", "").lower() == "100-continue"
        if isinstance(verdict, WireResponse):
            if expect or length < 0 or length > self.app.drain_bytes:
                # The body is not read: answer, then close (the client may still be sending).
                self._keep_alive = False
                self._respond(verdict)
                return False
            self._rejection = verdict
            self._discard_left = length
            self._state = "discard"
            if length == 0:
                self._answer_rejection()
            return True
        if length >= 0 and length > verdict.limit:
            self._keep_alive = False
            self._respond(verdict.too_large(request))
            return False
        if expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._limit, self._too_large = verdict.limit, verdict.too_large
        if length < 0:
            self._body = bytearray()
            self._chunked = _Chunked()
            self._state = "chunked"
            return True
        # Fixed length: the part already received, then the kernel writes the rest in place.
        self._body = self._buffer(length)
        take = min(length, len(self._pending))
        self._body[:take] = self._pending[:take]
        del self._pending[:take]
        self._filled = take
        if take == length:
            self._body_complete()
            return False
        self._state = "body"
        return False

    def _buffer(self, length: int) -> bytearray:
        spare, self._spare = self._spare, None
        if spare is None:
            return bytearray(length)
        if len(spare) >= length:
            del spare[length:]
        else:
            spare += bytes(length - len(spare))
        return spare

    def _read_chunked(self) -> None:
        chunked = self._chunked
        assert chunked is not None and self._request is not None

        def sink(data: memoryview) -> None:
            if self._dropped or len(self._body) + len(data) > self._limit:
                self._dropped += len(data)  # over the limit: read on, drop
                self._body = bytearray()
            else:
                self._body += data

        used = chunked.feed(self._pending, sink)
        del self._pending[:used]
        if self._dropped:
            assert self._too_large is not None
            if chunked.done or self._dropped > self.app.drain_bytes:
                # Read to its end (up to drain_bytes) first, so that the sender, still
                # writing, reads the answer instead of a reset.
                self._keep_alive = self._keep_alive and chunked.done
                self._chunked, self._dropped = None, 0
                self._respond(self._too_large(self._request))
            return
        if chunked.done:
            self._chunked = None
            self._body_complete()

    def _answer_rejection(self) -> None:
        response, self._rejection = self._rejection, None
        assert response is not None
        self._respond(response)

    def _body_complete(self) -> None:
        request = self._request
        assert request is not None
        request.body = self._body
        self._body = bytearray()
        self._filled = 0
        self._state = "busy"
        if self.transport is not None:
            self.transport.pause_reading()  # one request at a time: the sender waits
        self._task = asyncio.get_running_loop().create_task(self._handle(request))

    async def _handle(self, request: WireRequest) -> None:
        try:
            response = await self.app.handle(request)
        except Exception:
            log.exception("http handler failed on %s %s", request.method, request.path)
            response = WireResponse(500, b"internal error\n")
        self._task = None
        if request.recycle and request.body is not None:
            self._spare = request.body
        request.body = None
        if self._state == "closed":
            return
        self._respond(response)
        if self._state != "closed" and self.transport is not None:
            self.transport.resume_reading()
            self._advance()

    def _respond(self, response: WireResponse) -> None:
        transport = self.transport
        keep = self._keep_alive and not self.server.stopping
        self._request = None
        if transport is None or transport.is_closing():
            self._state = "closed"
            return
        transport.write(render(response, keep_alive=keep))
        if not keep:
            self._state = "closed"
            transport.close()
            return
        self._state = "head"
        self._arm_timer()
        self.server.idle_changed()

    def _fail(self, status: int, message: str) -> None:
        self._keep_alive = False
        self._respond(WireResponse(status, (message + "\n").encode()))

    # --- idleness and stopping ------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Between requests: nothing of a next request received yet."""
        return self._state == "head" and not self._pending

    def close_if_idle(self) -> None:
        if self.idle and self.transport is not None:
            self._state = "closed"
            self.transport.close()

    def _arm_timer(self) -> None:
        """Idle between requests: close after `keep_alive_s`. Part of a request received: close
        when nothing more comes for `read_timeout_s` (a stalled sender holds no buffer forever)."""
        self._cancel_idle()
        if self._state not in ("head", "body", "chunked", "discard"):
            return  # busy (the handler has its own timeout) or closed
        timeout = self.server.keep_alive_s if self.idle else self.server.read_timeout_s
        self._idle = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._idle = None
        if self._state in ("head", "body", "chunked", "discard") and self.transport is not None:
            self.server.timeouts += 0 if self.idle else 1
            self.transport.close()  # connection_lost reports a request cut short

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


@dataclass
class WireServer:
    """Serves `app` on a listening socket until `stop()`; then answers what is in flight (up to
    `grace_s`) and closes every connection."""

    app: WireApp
    keep_alive_s: float = 5.0
    read_timeout_s: float = 60.0
    grace_s: float = 30.0
    timeouts: int = 0  # connections closed because a request stalled
    connections: set[WireProtocol] = field(default_factory=set)
    stopping: bool = False
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _drained: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: WireProtocol(self), sock=sock)
        try:
            await self._stopped.wait()
        finally:
            server.close()  # no new connections
            for conn in list(self.connections):
                conn.close_if_idle()
            self.idle_changed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.grace_s)
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            await server.wait_closed()

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()

    def idle_changed(self) -> None:
        """A connection finished a request or closed: while stopping, close the idle ones and
        note when none is left."""
        if not self.stopping:
            return
        for conn in list(self.connections):
            conn.close_if_idle()
        if not self.connections:
            self._drained.set()
