"""File tailing and stdin on real files and pipes: complete lines only, rotation, truncation,
files that appear later, pod attribution from the path, backpressure. "Lose no complete line"
is checked with the aggregator's totals: every line written is accepted exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from canary_stream import Aggregator, AggregatorConfig, generate
from canary_stream.core import Totals, Windowing
from canary_stream.sources import files
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.files import FileTailSource, LineSplitter, StdinSource, StreamSource

POD_PRIMARY = "podinfo-primary-5d8f9c7b4-x2x7k"
POD_CANARY = "podinfo-6b7c8d9f5-q4w8z"  # Flagger's canary pods carry the plain workload name
UID = "0f3c2a1e-7b6d-4c5e-9a8b-1d2e3f4a5b6c"

FAST = {"poll_interval": 0.01, "rescan_interval": 0.05, "rotate_wait": 0.3}


def make_agg(fmt: str = "istio-json") -> Aggregator:
    # Files are read concurrently, so lines may arrive out of order: allow a wide lateness.
    return Aggregator(
        AggregatorConfig(format=fmt, windowing=Windowing(ring_secs=3600, allowed_lateness_ms=3_599_000))
    )


def lines_of(fmt: str, n: int, seed: int) -> list[bytes]:
    out = generate(fmt, lines=n, seed=seed).splitlines(keepends=True)
    assert len(out) == n
    return out


def pod_log(root: Path, pod: str, ns: str = "test", name: str = "0.log") -> Path:
    d = root / "var" / "log" / "pods" / f"{ns}_{pod}_{UID}" / "istio-proxy"
    d.mkdir(parents=True, exist_ok=True)
    return d / name


def pattern(root: Path, name: str = "*.log") -> str:
    return str(root / "var" / "log" / "pods" / "*" / "istio-proxy" / name)


class Writer:
    """Appends to a file like a proxy would: O_APPEND, writes split anywhere (mid-line)."""

    def __init__(self, path: Path, seed: int = 0) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.rng = random.Random(seed)

    async def write(self, data: bytes, pieces: int = 4) -> None:
        cuts = sorted(self.rng.randrange(len(data) + 1) for _ in range(pieces - 1))
        start = 0
        for cut in [*cuts, len(data)]:
            os.write(self.fd, data[start:cut])
            start = cut
            await asyncio.sleep(self.rng.choice((0, 0, 0.001, 0.005)))

    def reopen(self) -> None:
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        os.close(self.fd)


class Harness:
    """A source and the core's consumer running on one queue."""

    def __init__(self, source: FileTailSource | StreamSource, agg: Aggregator, queue: IngestQueue) -> None:
        self.source, self.agg, self.queue = source, agg, queue
        self.tasks: list[asyncio.Task[None]] = []

    def start_source(self) -> None:
        self.tasks.append(asyncio.create_task(self.source.run(self.queue)))

    def start_folder(self) -> None:
        self.tasks.append(asyncio.create_task(fold_forever(self.queue, self.agg)))

    async def __aenter__(self) -> Harness:
        self.start_source()
        self.start_folder()
        await asyncio.sleep(0.05)  # first scan done
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.source.stop()
        for t in self.tasks[1:]:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)
        result = await self.tasks[0] if self.tasks[0].done() else None
        assert result is None

    async def until(self, cond: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            for t in self.tasks:
                if t.done():
                    t.result()  # a source or the folder died: show why
                    raise AssertionError(f"{t} ended early")
            if time.monotonic() > deadline:
                files = self.source.files() if isinstance(self.source, FileTailSource) else None
                raise AssertionError(f"timed out: stats={self.source.stats} {files}")
            await asyncio.sleep(0.01)

    async def totals(self) -> Totals:
        # The aggregator is not thread-safe and the folder feeds it in a thread: read it
        # only when the queue is empty (the folder then waits in `get`, no feed is running).
        await self.queue.join()
        return self.agg.totals()

    async def exactly(self, n: int, settle: float = 0.4) -> None:
        """All n lines folded, and nothing more arrives (no duplicates)."""
        await self.until(lambda: self.source.stats.events >= n)
        await asyncio.sleep(settle)
        t = await self.totals()
        assert t.accepted == n, t
        assert t.lines == n, t  # no malformed fragment either
        assert t.pending_bytes == 0


def test_line_splitter_keeps_partial_lines_and_bounds_them() -> None:
    s = LineSplitter(max_line_bytes=10)
    assert s.push(b"ab") == b""
    assert s.push(b"c\nde") == b"abc\n"
    assert s.push(b"f\ng\n") == b"def\ng\n"
    assert s.push(b"x" * 11) == b""  # over-long partial: dropped and counted
    assert s.too_long == 1 and not s.carry and s.skipping
    assert s.push(b"yyy\nok\npart") == b"ok\n"
    assert s.end() == b"part\n"


@pytest.mark.parametrize("read", ["cached", "thread", "unsupported"])
async def test_follows_appends_split_mid_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    """Page-cache reads on the loop (RWF_NOWAIT), reads in a thread when the data is not
    cached (EAGAIN), and where RWF_NOWAIT does not exist."""
    if read == "thread":
        monkeypatch.setattr(files, "_pread_cached", lambda fd, n, off: None)
    elif read == "unsupported":
        monkeypatch.setattr(files, "_RWF_NOWAIT", None)
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 3000, seed=1)
    w = Writer(path, seed=1)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        for i in range(0, len(lines), 100):
            await w.write(b"".join(lines[i : i + 100]), pieces=7)
        await h.exactly(len(lines))
        assert src.stats.lag == 0 and src.stats.events == len(lines)
        assert src.stats.bytes == path.stat().st_size
        (state,) = src._files.values()
        assert (state.thread_reads > 0) == (read != "cached")
        assert state.nowait == (read != "unsupported")
    w.close()


async def test_start_at_end_skips_existing_lines_and_the_partial_one(tmp_path: Path) -> None:
    path = pod_log(tmp_path, POD_PRIMARY)
    old = lines_of("istio-json", 200, seed=2)
    new = lines_of("istio-json", 300, seed=3)
    w = Writer(path)
    os.write(w.fd, b"".join(old) + new[0][:50])  # a line being written when we start
    src = FileTailSource(pattern(tmp_path), start_at_end=True, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        await w.write(new[0][50:] + b"".join(new[1:]), pieces=9)
        await h.exactly(len(new) - 1)  # the line cut at the start is skipped, nothing else
    w.close()


async def test_file_that_appears_later_is_read_from_its_start(tmp_path: Path) -> None:
    first = pod_log(tmp_path, POD_PRIMARY)
    a, b = lines_of("istio-json", 500, seed=4), lines_of("istio-json", 700, seed=5)
    w1 = Writer(first)
    src = FileTailSource(pattern(tmp_path), start_at_end=True, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        await w1.write(b"".join(a))
        await asyncio.sleep(0.1)
        # A new pod starts: its directory and log appear, written before we notice them.
        later = pod_log(tmp_path, POD_CANARY)
        w2 = Writer(later)
        os.write(w2.fd, b"".join(b[:300]))
        await w2.write(b"".join(b[300:]), pieces=5)
        await h.exactly(len(a) + len(b))
        assert sorted(Path(f.path).parent.parent.name.split("_")[1] for f in src.files()) == sorted(
            [POD_PRIMARY, POD_CANARY]
        )
    w1.close()
    w2.close()


@pytest.mark.parametrize("glob_name", ["*.log", "*.log*"], ids=["rotated-not-matched", "rotated-matched"])
async def test_rotation_by_rename_during_writing_loses_no_line(tmp_path: Path, glob_name: str) -> None:
    """logrotate `create`: rename, the writer goes on in the old file for a while (mid-line
    included), then reopens the path; three rotations. The rotated name may match the glob."""
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 4000, seed=6)
    w = Writer(path, seed=6)
    src = FileTailSource(pattern(tmp_path, glob_name), start_at_end=False, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        per = len(lines) // 4
        for r in range(4):
            part = b"".join(lines[r * per : (r + 1) * per])
            half = len(part) // 2 + 17  # mid-line
            await w.write(part[:half], pieces=5)
            if r == 3:
                await w.write(part[half:])
                break
            os.rename(path, f"{path}.{r + 1}")
            await w.write(part[half:], pieces=5)  # still into the renamed file (no reopen yet)
            await asyncio.sleep(0.05)
            w.reopen()  # the new file at the path
            # Rotations are far apart in practice: let the tailer see the new file first.
            ino = path.stat().st_ino
            await h.until(lambda ino=ino: any(f.inode == ino for f in src.files()))  # type: ignore[misc]
        await h.exactly(len(lines), settle=0.8)  # past rotate_wait: old files are finished
    w.close()


async def test_rotated_partial_last_line_is_not_joined_with_the_new_file(tmp_path: Path) -> None:
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 100, seed=7)
    w = Writer(path)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        os.write(w.fd, b"".join(lines[:50]) + lines[50][:40])  # the writer died mid-line
        await h.until(lambda: src.stats.events == 50)
        os.rename(path, f"{path}.1")
        w.reopen()
        os.write(w.fd, b"".join(lines[51:]))
        await h.until(lambda: src.stats.lines == 100)  # 99 whole lines + the fragment alone
        await asyncio.sleep(0.3)
        t = await h.totals()
        assert t.accepted == 99 and t.lines == 100 and t.malformed_total == 1, t
    w.close()


async def test_copytruncate_during_writing_loses_no_line(tmp_path: Path) -> None:
    """copytruncate: copy the file away, truncate it, the writer (O_APPEND) goes on at 0.
    The new content is written past the old offset before the next poll, so only the changed
    head of the file tells that it was truncated."""
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 3000, seed=8)
    w = Writer(path, seed=8)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, **{**FAST, "poll_interval": 0.05})
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        per = len(lines) // 3
        written = 0
        for r in range(3):
            chunk = lines[r * per : (r + 1) * per]
            await w.write(b"".join(chunk[:-50]), pieces=6)
            written += len(chunk) - 50
            # Lines between the tailer's last read and the copy would be in the copy only
            # (logrotate's own caveat): copy once the tailer has read them.
            await h.until(lambda n=written: src.stats.events == n)  # type: ignore[misc]
            shutil.copyfile(path, f"{path}.{r + 1}")
            os.truncate(path, 0)
            rest = b"".join(chunk[-50:]) * 1
            if r == 0:
                # Grows past the old offset at once: the size alone would not show the truncation.
                os.write(w.fd, rest + b"".join(lines[per * 3 :]))
                written += 50 + len(lines) - per * 3
            else:
                os.write(w.fd, rest)
                written += 50
        await h.exactly(written)
        assert sum(f.truncations for f in src.files()) == 3
        assert "truncated_partial_line" not in src.stats.malformed
    w.close()


async def test_deleted_file_is_dropped(tmp_path: Path) -> None:
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 100, seed=9)
    w = Writer(path)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        os.write(w.fd, b"".join(lines))
        await h.exactly(100, settle=0.05)
        path.unlink()
        w.close()
        await h.until(lambda: not src.files())


@pytest.mark.parametrize("fmt", ["istio-text", "istio-json"])
async def test_namespace_and_pod_from_the_path_attribute_the_version(tmp_path: Path, fmt: str) -> None:
    """Lines without a subset in the upstream cluster (`outbound|9898||podinfo.test...`): the
    `pod` rule tells the version from the Flagger pod name in the log path."""

    def no_subset(data: bytes) -> bytes:
        return re.sub(rb"outbound\|(\d+)\|[a-z]+\|", rb"outbound|\1||", data)

    primary, canary = pod_log(tmp_path, POD_PRIMARY), pod_log(tmp_path, POD_CANARY)
    a, b = no_subset(generate(fmt, lines=600, seed=10)), no_subset(generate(fmt, lines=400, seed=11))
    assert b"|primary|" not in a + b and b"|canary|" not in a + b
    w1, w2 = Writer(primary), Writer(canary)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, **FAST)
    agg = make_agg(fmt)
    async with Harness(src, agg, IngestQueue()) as h:
        await asyncio.gather(w1.write(a, pieces=5), w2.write(b, pieces=5))
        await h.exactly(1000)
    got = {(s.target, s.version): s.requests for s in agg.snapshot(None)}
    assert got == {("podinfo.test", "primary"): 600, ("podinfo.test", "canary"): 400}
    w1.close()
    w2.close()


async def test_backpressure_tailer_waits_and_loses_nothing(tmp_path: Path) -> None:
    path = pod_log(tmp_path, POD_PRIMARY)
    data = generate("istio-json", lines=5000, seed=12)  # ~1.8 MB
    path.write_bytes(data)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, chunk_bytes=16 * 1024, **FAST)
    queue = IngestQueue(max_bytes=32 * 1024)
    agg = make_agg()
    h = Harness(src, agg, queue)
    h.start_source()
    try:
        await asyncio.sleep(0.3)  # nobody folds: the tailer must stop reading
        assert src.stats.waits == 1
        assert queue.queued_bytes <= 32 * 1024
        (f,) = src.files()
        assert f.offset <= 3 * 16 * 1024  # queue + the batch waiting to be put + one chunk
        assert src.stats.lag is not None and src.stats.lag >= len(data) - 3 * 16 * 1024
        h.start_folder()
        await h.exactly(5000)
        assert src.stats.waits > 10 and src.stats.lag == 0
    finally:
        await h.__aexit__()


async def test_over_long_partial_line_is_dropped_and_counted(tmp_path: Path) -> None:
    path = pod_log(tmp_path, POD_PRIMARY)
    lines = lines_of("istio-json", 100, seed=13)
    w = Writer(path)
    src = FileTailSource(pattern(tmp_path), start_at_end=False, chunk_bytes=4096, max_line_bytes=8192, **FAST)
    agg = make_agg()
    async with Harness(src, agg, IngestQueue()) as h:
        os.write(w.fd, b"".join(lines[:50]))
        for _ in range(50):  # a 200 KB line arriving in pieces
            os.write(w.fd, b"x" * 4000)
            await asyncio.sleep(0.001)
            assert all(f.partial_bytes <= 8192 for f in src.files())
        os.write(w.fd, b"\n" + b"".join(lines[50:]))
        await h.exactly(100)
        assert src.stats.malformed == {"line_too_long": 1}
    w.close()


async def test_stream_source_over_a_pipe(tmp_path: Path) -> None:
    """StdinSource on a real pipe: writes split mid-line, a last line without newline,
    end of input ends the source."""
    data = generate("istio-json", lines=2000, seed=14)
    r, wfd = os.pipe()
    src = StdinSource(fd=r, chunk_bytes=8192)
    agg = make_agg()
    queue = IngestQueue()
    folder = asyncio.create_task(fold_forever(queue, agg))
    runner = asyncio.create_task(src.run(queue))
    rng = random.Random(14)
    body = data[:-1]  # no final newline
    i = 0
    while i < len(body):
        n = rng.randrange(1, 5000)
        os.write(wfd, body[i : i + n])
        i += n
        await asyncio.sleep(0)
    os.close(wfd)
    await asyncio.wait_for(runner, 10)
    await asyncio.wait_for(queue.join(), 10)
    folder.cancel()
    os.close(r)
    assert src.finished.is_set()
    t = agg.totals()
    assert t.accepted == 2000 and t.lines == 2000, t
    assert src.stats.events == 2000


async def test_stream_source_stop_cancels_a_pending_read() -> None:
    r, wfd = os.pipe()
    src = StdinSource(fd=r)
    runner = asyncio.create_task(src.run(IngestQueue()))
    await asyncio.sleep(0.05)
    src.stop()
    await asyncio.wait_for(runner, 2)
    assert not src.finished.is_set()
    os.close(wfd)
    os.close(r)


async def test_stream_source_over_a_file_object(tmp_path: Path) -> None:
    data = generate("istio-text", lines=500, seed=15)
    p = tmp_path / "access.log"
    p.write_bytes(data)
    agg = make_agg("istio-text")
    queue = IngestQueue()
    folder = asyncio.create_task(fold_forever(queue, agg))
    with p.open("rb") as f:
        src = StreamSource(f, chunk_bytes=1000)
        await src.run(queue)
    await queue.join()
    folder.cancel()
    assert agg.totals().accepted == 500


STDIN_SCRIPT = """
import asyncio, sys
from canary_stream import Aggregator, AggregatorConfig
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources import files
from canary_stream.sources.files import StdinSource

async def main():
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    q = IngestQueue(max_bytes=64 * 1024)
    folder = asyncio.create_task(fold_forever(q, agg))
    await StdinSource(chunk_bytes=4096).run(q)
    await q.join()
    folder.cancel()
    print(agg.totals().accepted)

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["pipe", "file"])
def test_stdin_of_a_process(tmp_path: Path, kind: str) -> None:
    data = generate("istio-json", lines=3000, seed=16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if kind == "pipe":
        out = subprocess.run(
            [sys.executable, "-c", STDIN_SCRIPT], input=data, capture_output=True, env=env, timeout=60
        )
    else:
        p = tmp_path / "in.log"
        p.write_bytes(data)
        with p.open("rb") as f:
            out = subprocess.run(
                [sys.executable, "-c", STDIN_SCRIPT], stdin=f, capture_output=True, env=env, timeout=60
            )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.strip() == b"3000"
