"""The ingest path's HTTP/1.1 server (sources/http_wire.py): over raw sockets on 127.0.0.1, so that
what real agents do — keep-alive, pipelining, chunked bodies, `Expect: 100-continue`, HTTP/1.0,
broken heads — is exercised byte for byte; plus properties of the chunked decoder."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canary_stream import Aggregator, AggregatorConfig, generate
from canary_stream.core import Windowing
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.http_push import HttpPushConfig, HttpPushSource
from canary_stream.sources.http_wire import _BadRequest, _Chunked

REPLAYS = AggregatorConfig(windowing=Windowing(ring_secs=3600, allowed_lateness_ms=3_000_000))


@asynccontextmanager
async def serve(**cfg: object) -> AsyncIterator[tuple[HttpPushSource, Aggregator]]:
    aggregator = Aggregator(REPLAYS)
    queue = IngestQueue()
    source = HttpPushSource(HttpPushConfig(port=0, **cfg))  # type: ignore[arg-type]
    run = asyncio.create_task(source.run(queue))
    fold = asyncio.create_task(fold_forever(queue, aggregator))
    await asyncio.wait_for(source.ready.wait(), 10)
    try:
        yield source, aggregator
    finally:
        source.stop()
        await asyncio.wait_for(run, 30)
        await asyncio.wait_for(queue.join(), 30)
        fold.cancel()


def post(body: bytes, path: str = "/ingest", extra: str = "", version: str = "1.1") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def expected(data: bytes) -> int:
    agg = Aggregator(REPLAYS)
    agg.feed(data)
    agg.finish()
    return agg.totals().accepted


async def test_keep_alive_and_pipelined_requests_on_one_connection() -> None:
    bodies = [generate("istio-json", lines=300 + 50 * i, seed=40 + i) for i in range(4)]
    async with serve() as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(bodies[0]))  # one at a time
        assert (await read_response(reader))[0] == 204
        writer.write(b"".join(post(b) for b in bodies[1:]))  # three pipelined in one write
        statuses = [(await read_response(reader))[0] for _ in bodies[1:]]
        assert statuses == [204, 204, 204]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[::2] == (200, b"ok")
        writer.close()
        assert agg.totals().accepted == sum(expected(b) for b in bodies)
        assert source.requests == 4 and source.accepted == 4


async def test_recycled_buffers_never_mix_bodies_when_batches_stay_queued() -> None:
    """With ack=queued the answer comes before the fold: the next body on the connection must not
    be received into the buffer a queued batch still holds."""
    bodies = [generate("istio-text", lines=400, seed=50 + i) for i in range(6)]
    async with serve(ack="queued") as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        for body in bodies:
            writer.write(post(body))
            assert (await read_response(reader))[0] == 204
        writer.close()
    assert agg.totals().accepted == sum(expected(b) for b in bodies)
    assert agg.totals().malformed_total == 0


def chunked_post(body: bytes, size: int) -> bytes:
    chunks = b"".join(
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )
    return b"POST /ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("piece", [1, 3, 997])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_requests_arriving_in_small_pieces(framing: str, piece: int) -> None:
    """Heads, chunk lines and bodies cut anywhere (a chunk line cut in two once hung the server:
    found by tests/fuzz_http_wire.py)."""
    body = generate("istio-json", lines=200 if piece > 1 else 20, seed=60)
    raw = post(body) if framing == "length" else chunked_post(body, 1000)
    async with serve() as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        for i in range(0, len(raw), piece):
            writer.write(raw[i : i + piece])
            await writer.drain()
            if i % (piece * 50) == 0:
                await asyncio.sleep(0.001)  # let the server read what is there so far
        assert (await read_response(reader))[0] == 204
        writer.close()
        assert agg.totals().accepted == expected(body)


async def test_chunked_body_gzip_and_expect_continue() -> None:
    body = generate("istio-json", lines=500, seed=61)
    packed = gzip.compress(body)
    chunks = [packed[i : i + 4000] for i in range(0, len(packed), 4000)]
    encoded = b"".join(f"{len(c):x};ext=1\r\n".encode() + c + b"\r\n" for c in chunks)
    encoded += b"0\r\nX-T: 1\r\n\r\n"  # the last chunk and a trailer
    async with serve() as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(
            b"POST /ingest/reviews/canary HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + encoded
        )
        assert (await read_response(reader))[0] == 204
        # curl's way for large bodies: wait for 100 Continue before sending the body
        writer.write(post(body, extra="Expect: 100-continue\r\n")[: -len(body)])
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        assert (await read_response(reader))[0] == 204
        writer.close()
        (canary,) = [s for s in agg.snapshot(None) if s.target == "reviews"]
        assert canary.version == "canary" and canary.requests == expected(body)
        assert agg.totals().accepted == 2 * expected(body)


async def test_rejected_heads_answer_without_reading_what_they_need_not() -> None:
    async with serve(max_body_bytes=10_000) as (source, agg):
        # 100-continue with a body over the limit: 413 at once, no body sent, connection closed
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 20000\r\n\r\n"
        )
        status, headers, text = await read_response(reader)
        assert status == 413 and headers["connection"] == "close" and b"limit of 10000" in text
        assert await reader.read() == b""
        writer.close()
        # a small rejected body is read and dropped: the connection stays usable
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(b"x" * 100, extra="Content-Encoding: br\r\n"))
        assert (await read_response(reader))[0] == 415
        body = generate("istio-json", lines=5, seed=62)
        writer.write(post(body))
        assert (await read_response(reader))[0] == 204
        for request, status in [
            (b"GET /ingest HTTP/1.1\r\nHost: x\r\n\r\n", 405),
            (b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404),
            (b"POST /ingest/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404),
        ]:
            writer.write(request)
            assert (await read_response(reader))[0] == status
        writer.close()
        assert agg.totals().accepted == expected(body)


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"POST /ingest HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n", 400),
    ],
)
async def test_broken_requests_get_a_clear_4xx_and_the_server_goes_on(raw: bytes, status: int) -> None:
    body = generate("istio-json", lines=20, seed=63)
    async with serve() as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(raw)
        got, headers, _ = await read_response(reader)
        assert got == status and headers["connection"] == "close"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(body, version="1.0"))  # HTTP/1.0: answered, then closed
        got, headers, _ = await read_response(reader)
        assert got == 204 and headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()
        assert agg.totals().accepted == expected(body)


async def test_a_client_gone_mid_body_is_counted_and_loses_nothing_else() -> None:
    body = generate("istio-json", lines=100, seed=64)
    async with serve() as (source, agg):
        _, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(body)[:-500])
        await writer.drain()
        writer.close()
        for _ in range(200):
            if source.rejected.get("disconnected"):
                break
            await asyncio.sleep(0.01)
        assert source.rejected == {"disconnected": 1}
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(body))
        assert (await read_response(reader))[0] == 204
        writer.close()
        assert agg.totals().accepted == expected(body)


def _encode_chunked(data: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = max(1, sizes[i % len(sizes)])
        piece = data[pos : pos + n]
        out.append(f"{len(piece):X}\r\n".encode() + piece + b"\r\n")
        pos, i = pos + n, i + 1
    return b"".join(out) + b"0\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 400), min_size=1, max_size=8),
    tail=st.binary(max_size=20),
)
def test_chunked_decoder_gives_the_data_however_the_stream_is_cut(
    data: bytes, sizes: list[int], cuts: list[int], tail: bytes
) -> None:
    stream = _encode_chunked(data, sizes)
    decoder = _Chunked()
    pending, out = bytearray(), bytearray()
    pos, i = 0, 0
    whole = stream + tail  # bytes of a next request must stay unconsumed
    while not decoder.done and pos < len(whole):
        n = cuts[i % len(cuts)]
        pending += whole[pos : pos + n]
        pos, i = pos + n, i + 1
        used = decoder.feed(pending, lambda v: out.extend(v))
        del pending[:used]
    assert decoder.done
    assert bytes(out) == data
    assert bytes(pending) + whole[pos:] == tail


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_chunked_decoder_never_fails_otherwise_than_bad_request(garbage: bytes) -> None:
    decoder = _Chunked()
    pending = bytearray(garbage)
    try:
        used = decoder.feed(pending, lambda v: None)
    except _BadRequest:
        return
    assert 0 <= used <= len(garbage)


async def test_stalled_requests_and_idle_connections_are_closed() -> None:
    body = generate("istio-json", lines=50, seed=65)
    async with serve(read_timeout_s=0.3, keep_alive_s=0.5) as (source, agg):
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(body)[:-100])  # the sender stalls 100 bytes short
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no answer
        assert source.rejected == {"disconnected": 1}
        assert source._server is not None and source._server.timeouts == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", source.port)
        writer.write(post(body))
        assert (await read_response(reader))[0] == 204
        assert await asyncio.wait_for(reader.read(), 5) == b""  # idle keep-alive closed
        assert agg.totals().accepted == expected(body)
