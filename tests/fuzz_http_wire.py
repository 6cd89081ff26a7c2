"""Coverage-guided fuzzing of the ingest path's HTTP/1.1 server (sources/http_wire.py) with atheris.

Arbitrary bytes arrive on one connection, cut into pieces the fuzzer chooses, as the event loop
would deliver them (``get_buffer`` / ``buffer_updated``). Whatever arrives, the connection must
never raise out of a callback, must answer only with well-formed responses, and must stop
reading once it has closed. Run briefly by ``make fuzz`` (CI) and by hand for as long as you like:
``.venv/bin/python tests/fuzz_http_wire.py -atheris_runs=0``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from canary_stream.sources import http_wire
    from canary_stream.sources.http_wire import ReadBody, WireProtocol, WireRequest, WireResponse, WireServer


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "wrote after closing"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class App:
    drain_bytes = 8192

    def check(self, request: WireRequest) -> WireResponse | ReadBody:
        if request.path.startswith("/reject"):
            return WireResponse(415, b"no\n")
        return ReadBody(4096, lambda r: WireResponse(413, b"too large\n"))

    async def handle(self, request: WireRequest) -> WireResponse:
        assert request.body is not None and len(request.body) <= 4096
        request.recycle = bool(len(request.body) & 1)
        return WireResponse(204)

    def disconnected(self, request: WireRequest) -> None:
        pass


SEEDS = [
    b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /ingest HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /reject HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.0\r\n\r\n",
    b"POST /ingest HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"POST /ingest HTTP/1.1\r\nContent-Length: 9000\r\n\r\n",
    b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
    b"GET http://a/healthz?x=1 HTTP/1.1\r\n\r\n",
]

loop = asyncio.new_event_loop()


async def deliver(data: bytes) -> None:
    server = WireServer(App())  # type: ignore[arg-type]
    proto = WireProtocol(server)
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    cut = max(1, data[0] if data else 1)
    rest = memoryview(data[1:])
    while rest and not transport.closed:
        piece, rest = rest[:cut], rest[cut:]
        while piece and not transport.closed:
            buf = proto.get_buffer(-1)
            n = min(len(buf), len(piece))
            assert n > 0, "empty read buffer"
            buf[:n] = piece[:n]
            piece = piece[n:]
            proto.buffer_updated(n)
        for _ in range(3):
            await asyncio.sleep(0)  # handlers answer
    proto.connection_lost(None)
    out = bytes(transport.out)
    assert not out or out.startswith(b"HTTP/1.1 "), out[:80]
    assert b"HTTP/1.1 500" not in out, out[:200]  # an internal error caught by the server is a finding too
    for head in out.split(b"HTTP/1.1 ")[1:]:
        assert head[:3].isdigit(), head[:80]


def one_input(data: bytes) -> None:
    loop.run_until_complete(deliver(data))


def seed_corpus() -> str:
    d = tempfile.mkdtemp(prefix="canary-fuzz-http-")
    for i, seed in enumerate(SEEDS):
        for cut in (1, 7, 255):
            Path(d, f"seed-{i}-{cut}").write_bytes(bytes([cut]) + seed)
    return d


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(seed_corpus())
    assert http_wire.MAX_HEAD_BYTES > 0
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
