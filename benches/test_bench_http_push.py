"""HTTP push ingest → aggregator, against a per-record Python ingest service, in the same run.

Both servers run as their own process on 127.0.0.1, one after the other, and receive exactly the
same request bodies from ``SENDERS`` sender processes (many agents pushing to one ingest),
``CONCURRENCY`` keep-alive connections in all, one request in flight on each, ``LINES_PER_BODY``
generated Istio JSON lines per body — what Fluent Bit's ``http`` output with ``format
json_lines`` or Vector's ``http`` sink send, minus the envelope. The senders write prebuilt
requests with one ``sendall`` each over raw sockets, as a native agent costs next to nothing per
body (an httpx sender cost twice the CPU of our server and was what the bench measured):

* ours: ``canary-stream run --http`` — ``HttpPushSource`` on its own HTTP/1.1 server
  (``sources/http_wire.py``: bodies received in place) → ``IngestQueue`` → ``fold_forever`` →
  ``Aggregator``, answering 204 once the body is folded (``ack="folded"``, the default);
* baseline: ``benches/http_baseline_server.py`` — a small Python ingest service as one would write
  it (Starlette on uvicorn with httptools and uvloop), ``orjson.loads`` per line and a Python dict
  per version, answering 204 once counted.

The rate is lines / (first request sent → last 204 received); every line must then be counted
(``GET /stats``). Shapes: identity bodies and gzip bodies (``Content-Encoding: gzip``, compressed
once up front). Sizes: ``BENCH_HTTP_LINES`` (default 5 x ``BENCH_LINES``), ``BENCH_HTTP_BODY_LINES``
(2000), ``BENCH_HTTP_CONCURRENCY`` (8), ``BENCH_HTTP_SENDERS`` (2), ``BENCH_HTTP_ROUNDS`` (3).
Run with ``-s`` for the figures.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canary_stream import generate

LINES = int(os.environ.get("BENCH_HTTP_LINES", str(5 * int(os.environ.get("BENCH_LINES", "200000")))))
BODY_LINES = int(os.environ.get("BENCH_HTTP_BODY_LINES", "2000"))
CONCURRENCY = int(os.environ.get("BENCH_HTTP_CONCURRENCY", "8"))
SENDERS = int(os.environ.get("BENCH_HTTP_SENDERS", "2"))
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "3"))
RPS = 200_000.0
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bodies(gzipped: bool) -> list[bytes]:
    # 200 K requests/s of event time: 1 M lines span 5 s, less than the aggregator's allowed
    # lateness (10 s), so however the senders interleave no line is dropped as late.
    data = generate("istio-json", lines=LINES, seed=7, rps=RPS)
    lines = data.splitlines(keepends=True)
    bodies = [b"".join(lines[i : i + BODY_LINES]) for i in range(0, len(lines), BODY_LINES)]
    return [gzip.compress(b, 1) for b in bodies] if gzipped else bodies


@pytest.fixture(scope="module")
def bodies() -> dict[str, list[bytes]]:
    return {"identity": _bodies(False), "gzip": _bodies(True)}


class Server:
    """A server process on a free port, up once /healthz answers."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def events(self) -> int:
        return int(httpx.get(self.url + "/stats", timeout=10).json()["events"])

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ours() -> Server:
    port = _free_port()
    argv = [sys.executable, "-m", "canary_stream.cli", "run", "--http", f"127.0.0.1:{port}"]
    return Server([*argv, "--stats-interval", "0", "--http-max-body", str(64 << 20)], port)


def baseline() -> Server:
    port = _free_port()
    return Server([sys.executable, str(HERE / "http_baseline_server.py"), str(port)], port)


def _request(host: str, body: bytes, gzipped: bool) -> bytes:
    head = (
        f"POST /ingest HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-ndjson\r\n"
        f"{'Content-Encoding: gzip' + chr(13) + chr(10) if gzipped else ''}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One HTTP/1.1 response on a keep-alive connection: (status, body). `buf` keeps what was
    read past it (nothing, with one request in flight per connection)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    buf[:] = rest[length:]
    return status, rest[:length]


def _push(url: str, requests: list[bytes], concurrency: int) -> None:
    """Send every body with `concurrency` keep-alive connections, one request in flight on each
    (what Fluent Bit's `http` output and Vector's `http` sink do per worker). The requests are
    built up front and written with one `sendall` each: a native agent spends next to no CPU per
    body, and a Python HTTP client would (httpx took ~2x the CPU of our server), so the sender
    must not be what is measured. A 429/503 (backpressure) is retried after a short pause, as
    Vector and Fluent Bit do."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    todo = iter(requests)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with socket.create_connection((host, int(port))) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray()
                while True:
                    with lock:
                        request = next(todo, None)
                    if request is None:
                        return
                    while True:
                        sock.sendall(request)
                        status, text = _read_response(sock, buf)
                        if status == 204:
                            break
                        assert status in (429, 503), (status, text)
                        time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _sender(url: str, bodies: list[bytes], gzipped: bool, go: Any, done: Any) -> None:
    """One sender process (one agent): builds its requests, waits for `go`, pushes them, reports."""
    requests = [_request(url.removeprefix("http://"), body, gzipped) for body in bodies]
    go.wait()
    try:
        _push(url, requests, max(1, CONCURRENCY // SENDERS))
        done.put("ok")
    except BaseException as exc:  # reported to the parent, which fails the test
        done.put(repr(exc))


def _round(server: Server, bodies: list[bytes], gzipped: bool) -> tuple[float, float]:
    """(seconds, server CPU seconds) for one push of every body by SENDERS processes (bodies
    dealt round-robin, so event time advances evenly); checks every line was counted."""
    ctx = multiprocessing.get_context("fork")
    go, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_sender, args=(server.url, bodies[k::SENDERS], gzipped, go, done))
        for k in range(SENDERS)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # forked, requests built, waiting on `go`
    before, cpu0 = server.events(), server.cpu_s()
    started = time.perf_counter()
    go.set()
    outcomes = [done.get(timeout=600) for _ in procs]
    took = time.perf_counter() - started
    cpu = server.cpu_s() - cpu0
    for p in procs:
        p.join()
    assert outcomes == ["ok"] * SENDERS, outcomes
    counted = server.events() - before
    assert counted == LINES, f"{counted} of {LINES} lines counted: {httpx.get(server.url + '/stats').text}"
    return took, cpu


@pytest.fixture(scope="module")
def results() -> Iterator[dict[tuple[str, str], list[tuple[float, float]]]]:
    store: dict[tuple[str, str], list[tuple[float, float]]] = {}
    yield store
    if not store:
        return
    print(
        f"\nHTTP push, {LINES:,} lines in bodies of {BODY_LINES}, {SENDERS} sender processes,"
        f" {CONCURRENCY} requests in flight:"
    )
    for shape in ("identity", "gzip"):
        rates = {}
        for who in ("ours", "baseline"):
            runs = store.get((who, shape))
            if not runs:
                continue
            took = statistics.median(t for t, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            rates[who] = LINES / took
            print(
                f"  {shape:8s} {who:8s} {LINES / took / 1e3:8.0f} K events/s"
                f"  ({LINES / max(cpu, 1e-9) / 1e3:.0f} K per server CPU s)"
            )
        if len(rates) == 2:
            print(f"  {shape:8s} ratio ours / baseline x{rates['ours'] / rates['baseline']:.1f}")


@pytest.mark.parametrize("shape", ["identity", "gzip"])
@pytest.mark.parametrize("who", ["ours", "baseline"])
def test_http_push_rate(
    benchmark: object,
    bodies: dict[str, list[bytes]],
    results: dict[tuple[str, str], list[tuple[float, float]]],
    who: str,
    shape: str,
) -> None:
    # A fresh server per round: the same bytes sent again would be late for the aggregator (their
    # event time is behind its watermark by more than the allowed lateness) and be dropped.
    servers: list[Server] = []
    runs: list[tuple[float, float]] = []
    gz = shape == "gzip"

    def setup() -> None:
        for old in servers:
            old.close()
        servers.append(ours() if who == "ours" else baseline())

    def one() -> None:
        runs.append(_round(servers[-1], bodies[shape], gz))

    try:
        benchmark.pedantic(one, setup=setup, rounds=ROUNDS, iterations=1)  # type: ignore[attr-defined]
    finally:
        for server in servers:
            server.close()
    results[(who, shape)] = runs
    took = statistics.median(t for t, _ in runs)
    benchmark.extra_info.update({"events_per_s": LINES / took, "lines": LINES})  # type: ignore[attr-defined]
