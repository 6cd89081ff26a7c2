"""Sidecar log files (followed like ``tail -F``) and stdin / any byte stream.

Both hand the core only COMPLETE lines, one :class:`~canary_stream.sources.base.Batch` per chunk
read, and wait in :meth:`IngestQueue.put` when the core falls behind: reading stops, so memory
stays bounded by the queue plus one chunk and one partial line per file.

How files are read: ``O_NONBLOCK`` means nothing for regular files (they are always "ready"; a
read that misses the page cache blocks anyway), and Linux has no readiness-based asynchronous
file I/O short of io_uring. Live logs are read right after they are written, so the data is
nearly always in the page cache: each chunk is first read on the event loop with
``preadv(..., RWF_NOWAIT)`` (Linux ≥ 4.14), which copies what is cached and fails with
``EAGAIN`` instead of going to the disk. Only then (or where the flag is unsupported) is the
chunk read with :func:`os.pread` in a worker thread (:func:`asyncio.to_thread`, what
``aiofiles`` does too, without the dependency), so a slow disk or NFS mount never stalls the
event loop. (A thread hop costs ~0.3 ms on a small VM, more than copying 1 MiB from the cache.)
``pread`` at an explicit offset keeps no seek state.

Rotation, truncation, deletion (``tail -F`` semantics):

- Files are identified by ``(st_dev, st_ino)``, not by path. The glob is re-scanned every
  ``rescan_interval`` (and at once when a followed path stops pointing at its file), so files
  that appear later are picked up — from their beginning.
- Rename + new file at the same path (logrotate ``create``, kubelet/containerd): the old inode
  stays open and is read to its end; since the writer may still append to it until it reopens,
  it is kept until it has not grown for ``rotate_wait`` seconds. Only then is its end certain,
  and a partial last line (no newline) is handed over as a line of its own — it is never joined
  with the first bytes of the new file. The new file at the path is followed from offset 0.
  If the rotated name still matches the glob, the file simply stays followed (no duplicates).
  A file renamed away to a non-matching name before any scan saw it is not read: rotations
  are far apart in practice, and the scan runs again at once when a followed path loses its file.
- Truncation (``copytruncate``): the size shrank below our offset, or the first bytes of the
  file changed (truncated and rewritten past our offset between two polls) → restart at 0.
  A partial line held at that moment belongs to the copy; it is dropped and counted
  (``truncated_partial_line``).
- Deleted files (link count 0) are read to their end and dropped.

Starting at the end of an existing file skips to the next newline first, so the first line
handed over is whole. A partial line longer than ``max_line_bytes`` is dropped (the rest up to
its newline is skipped) and counted as ``line_too_long``; complete long lines are left to the
core, which counts them under the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from canary_stream.core import Source
from canary_stream.sources.base import Batch, IngestQueue, SourceStats

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # like readers.CHUNK_BYTES; fewer, larger batches fold faster
MAX_LINE_BYTES = 64 * 1024  # same default as AggregatorConfig.max_line_bytes
HEAD_BYTES = 256  # first bytes of a file remembered to notice a truncate-and-rewrite
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def _pread_cached(fd: int, n: int, offset: int) -> bytes | None:
    """Read what the page cache holds without blocking; None when a thread must read.
    Raises OSError when the file system does not support RWF_NOWAIT."""
    if _RWF_NOWAIT is None:
        raise OSError(errno.EOPNOTSUPP, "RWF_NOWAIT is not available")
    buf = bytearray(n)
    try:
        got = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except BlockingIOError:  # EAGAIN: not (all) in the cache
        return None
    if got <= 0:
        return None
    return bytes(memoryview(buf)[:got])


async def _put_unless_stopped(queue: IngestQueue, batch: Batch, stop: asyncio.Event) -> None:
    """Wait for room in the queue (backpressure: reading stops), but not past `stop()`
    (the batch is then dropped: nothing is persisted, the source is going away)."""
    if not queue.would_block(len(batch.data)):
        await queue.put(batch)
        return
    put = asyncio.ensure_future(queue.put(batch))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({put, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (put, stopped):
            t.cancel()


class LineSplitter:
    """Cut a byte stream into complete lines; keep the partial last line (bounded)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.carry = bytearray()
        self.skipping = False  # discarding up to the next newline
        self.too_long = 0  # partial lines dropped for exceeding max_line_bytes

    def push(self, data: bytes) -> bytes:
        """Add bytes; return the complete lines they finish (possibly ``b""``)."""
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return b""
            self.skipping = False
            data = data[nl + 1 :]
        cut = data.rfind(b"\n")
        if cut < 0:
            self.carry += data
            self._bound()
            return b""
        if self.carry:
            out = bytes(self.carry) + data[: cut + 1]
            self.carry.clear()
        else:
            out = data[: cut + 1]
        self.carry += data[cut + 1 :]
        self._bound()
        return out

    def _bound(self) -> None:
        if len(self.carry) > self.max_line_bytes:
            self.carry = bytearray()  # release the memory, not just the length
            self.skipping = True
            self.too_long += 1

    def end(self) -> bytes:
        """The end of the stream is certain: the partial line is a line of its own."""
        out = bytes(self.carry) + b"\n" if self.carry else b""
        self.carry = bytearray()
        self.skipping = False
        return out

    def drop(self) -> int:
        """Forget the partial line (its file was truncated); returns its length."""
        n = len(self.carry)
        self.carry = bytearray()
        self.skipping = False
        return n


def _count(stats: SourceStats, reason: str, n: int = 1) -> None:
    if n:
        stats.malformed[reason] = stats.malformed.get(reason, 0) + n


@dataclass
class _File:
    key: tuple[int, int]  # (st_dev, st_ino)
    path: str
    fd: int
    offset: int
    source: Source
    lines: LineSplitter
    head: bytes = b""  # the first min(HEAD_BYTES, offset) bytes read
    size: int = 0
    detached_at: float | None = None  # the path no longer names this file (rotated or deleted)
    last_growth: float = field(default_factory=time.monotonic)
    truncations: int = 0
    nowait: bool = True  # RWF_NOWAIT reads work on this file
    thread_reads: int = 0


@dataclass(frozen=True)
class FileState:
    """What :meth:`FileTailSource.files` reports per followed file."""

    path: str
    inode: int
    offset: int
    size: int
    partial_bytes: int
    rotated: bool
    truncations: int


class FileTailSource:
    """Follow the files matching one or more globs like ``tail -F`` (see the module docstring).

    ``start_at_end``: files present at start are read from their end (only new lines); files
    that appear later are always read from their beginning. ``poll_interval``: how often
    idle files are checked for new data, rotation and truncation. Namespace and pod come from
    each file's path (:meth:`Source.from_path`). ``stats.lag`` = bytes written but not read yet.
    """

    def __init__(
        self,
        patterns: str | Sequence[str],
        *,
        start_at_end: bool = True,
        poll_interval: float = 0.25,
        rescan_interval: float = 1.0,
        rotate_wait: float = 5.0,
        chunk_bytes: int = CHUNK_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        chunks_per_turn: int = 8,
        source_for: Callable[[str], Source] = Source.from_path,
        name: str = "files",
    ) -> None:
        if chunk_bytes <= 0 or max_line_bytes <= 0 or chunks_per_turn <= 0:
            raise ValueError("chunk_bytes, max_line_bytes and chunks_per_turn must be > 0")
        if poll_interval <= 0 or rescan_interval <= 0 or rotate_wait < 0:
            raise ValueError("poll_interval and rescan_interval must be > 0, rotate_wait >= 0")
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.start_at_end = start_at_end
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.rotate_wait = rotate_wait
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.chunks_per_turn = chunks_per_turn
        self.source_for = source_for
        self.stats = SourceStats(name)
        self.stats.lag = 0
        self._files: dict[tuple[int, int], _File] = {}
        # Files closed after rotation, with the offset reached: if such a file shows up again
        # under a matching name, it resumes there instead of being read twice.
        self._done: dict[tuple[int, int], int] = {}
        self._stop = asyncio.Event()
        self._started = False
        self.scans = 0

    # -- public -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def files(self) -> list[FileState]:
        return [
            FileState(
                path=f.path,
                inode=f.key[1],
                offset=f.offset,
                size=f.size,
                partial_bytes=len(f.lines.carry),
                rotated=f.detached_at is not None,
                truncations=f.truncations,
            )
            for f in self._files.values()
        ]

    async def run(self, queue: IngestQueue) -> None:
        try:
            self._scan(initial=not self._started)
            self._started = True
            next_scan = time.monotonic() + self.rescan_interval
            while not self._stop.is_set():
                progressed = False
                for f in list(self._files.values()):
                    if await self._check(f, queue):
                        next_scan = 0.0  # a path lost its file: look for the new one now
                    if f.key in self._files and await self._read(f, queue):
                        progressed = True
                    if self._stop.is_set():
                        break
                now = time.monotonic()
                if now >= next_scan:
                    self._scan(initial=False)
                    next_scan = now + self.rescan_interval
                self._update_lag()
                if progressed:
                    await asyncio.sleep(0)  # let the consumer and others run
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.poll_interval)
        finally:
            for f in list(self._files.values()):
                self._close(f)
            self._files.clear()

    # -- internals ------------------------------------------------------------------------------

    def _update_lag(self) -> None:
        self.stats.lag = sum(max(0, f.size - f.offset) for f in self._files.values())

    async def _put(self, queue: IngestQueue, batch: Batch) -> None:
        if queue.would_block(len(batch.data)):
            self._update_lag()
        await _put_unless_stopped(queue, batch, self._stop)

    def _matches(self) -> dict[tuple[int, int], tuple[str, os.stat_result]]:
        found: dict[tuple[int, int], tuple[str, os.stat_result]] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished between the listing and the stat
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), (path, st))
        return found

    def _scan(self, *, initial: bool) -> None:
        self.scans += 1
        found = self._matches()
        for key, (path, st) in found.items():
            f = self._files.get(key)
            if f is not None:
                if f.detached_at is not None:  # a rotated file that still matches: keep following it
                    f.path, f.detached_at = path, None
                continue
            self._open(key, path, st, initial=initial)
        for key in list(self._done):
            if key not in found:
                del self._done[key]

    def _open(self, key: tuple[int, int], path: str, st: os.stat_result, *, initial: bool) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            log.warning("cannot open %s: %s", path, e)
            return
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != key:  # replaced between stat and open: next scan
            os.close(fd)
            return
        lines = LineSplitter(self.max_line_bytes)
        offset = 0
        resumed = self._done.pop(key, None)
        if resumed is not None and resumed <= fst.st_size:
            offset = resumed
        elif initial and self.start_at_end and fst.st_size > 0:
            offset = fst.st_size
            # Start at the next line: skip the rest of a line being written.
            if os.pread(fd, 1, offset - 1) != b"\n":
                lines.skipping = True
        f = _File(
            key=key,
            path=path,
            fd=fd,
            offset=offset,
            source=self.source_for(path),
            lines=lines,
            head=os.pread(fd, min(HEAD_BYTES, offset), 0),
            size=fst.st_size,
        )
        self._files[key] = f
        log.debug("following %s from offset %d", path, offset)

    def _close(self, f: _File) -> None:
        with contextlib.suppress(OSError):
            os.close(f.fd)

    async def _finish(self, f: _File, queue: IngestQueue) -> None:
        """The file's end is certain: hand over its partial last line, forget the file."""
        del self._files[f.key]
        self._close(f)
        self._done[f.key] = f.offset
        tail = f.lines.end()
        if tail:
            await self._put(queue, Batch(tail, f.source, self.stats))

    async def _check(self, f: _File, queue: IngestQueue) -> bool:
        """Truncation, rotation, deletion. True when the path no longer names this file."""
        try:
            st = os.fstat(f.fd)
        except OSError:
            del self._files[f.key]
            self._close(f)
            return True
        f.size = st.st_size
        if f.offset > 0 and (st.st_size < f.offset or self._head_changed(f, st.st_size)):
            log.info("%s truncated at offset %d (size now %d): reading from 0", f.path, f.offset, st.st_size)
            _count(self.stats, "truncated_partial_line", 1 if f.lines.drop() else 0)
            f.offset = 0
            f.truncations += 1
            f.head = b""
        lost_path = False
        now = time.monotonic()
        if f.detached_at is None:
            try:
                pst = os.stat(f.path)
                moved = (pst.st_dev, pst.st_ino) != f.key
            except OSError:
                moved = True
            if moved:
                f.detached_at = now
                lost_path = True
                log.info("%s rotated or deleted: reading the old file to its end", f.path)
        drained = f.offset >= st.st_size
        if drained and st.st_nlink == 0:
            await self._finish(f, queue)  # deleted: nobody can append where anyone reads
        elif (
            drained
            and f.detached_at is not None
            and now - f.detached_at >= self.rotate_wait
            and now - f.last_growth >= self.rotate_wait
        ):
            await self._finish(f, queue)
        return lost_path

    def _head_changed(self, f: _File, size: int) -> bool:
        """Truncated and rewritten past our offset between two polls (copytruncate under load)."""
        if size == f.offset:
            return False
        n = min(len(f.head), f.offset)
        if n == 0:
            return False
        return os.pread(f.fd, n, 0) != f.head[:n]

    async def _read(self, f: _File, queue: IngestQueue) -> bool:
        """Read up to ``chunks_per_turn`` chunks; one batch of complete lines per chunk."""
        progressed = False
        for _ in range(self.chunks_per_turn):
            if f.offset >= f.size:
                try:
                    f.size = os.fstat(f.fd).st_size
                except OSError:
                    break
                if f.offset >= f.size:
                    break
            want = min(self.chunk_bytes, f.size - f.offset)
            data = None
            if f.nowait:
                try:
                    data = _pread_cached(f.fd, want, f.offset)
                except OSError:  # EOPNOTSUPP / EINVAL: this file system does not do it
                    f.nowait = False
            if data is None:
                f.thread_reads += 1
                data = await asyncio.to_thread(os.pread, f.fd, want, f.offset)
            if not data:
                break
            if f.offset < HEAD_BYTES:  # keep head == the first min(HEAD_BYTES, offset) bytes
                f.head = f.head[: f.offset] + data[: HEAD_BYTES - f.offset]
            f.offset += len(data)
            f.last_growth = time.monotonic()
            progressed = True
            before = f.lines.too_long
            complete = f.lines.push(data)
            _count(self.stats, "line_too_long", f.lines.too_long - before)
            if complete:
                await self._put(queue, Batch(complete, f.source, self.stats))
            if self._stop.is_set():
                break
        return progressed


class StreamSource:
    """Complete lines from a byte stream: an :class:`asyncio.StreamReader`, or a binary file
    object (read in a worker thread). End of input ends :meth:`run`; a last line without a
    newline is handed over as complete."""

    def __init__(
        self,
        stream: asyncio.StreamReader | BinaryIO | None,
        *,
        source: Source | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        name: str = "stream",
    ) -> None:
        self.stream = stream
        self.source = source or Source()
        self.chunk_bytes = chunk_bytes
        self.lines = LineSplitter(max_line_bytes)
        self.stats = SourceStats(name)
        self.finished = asyncio.Event()  # set once the end of input was handed over
        self._stop = asyncio.Event()
        self._pending: asyncio.Future[bytes] | None = None

    def stop(self) -> None:
        """Stop reading (the partial line is dropped, the input is not at its end)."""
        self._stop.set()
        if self._pending is not None:
            self._pending.cancel()

    async def _read_chunk(self) -> bytes:
        s = self.stream
        if s is None:
            raise RuntimeError("no stream to read")
        if isinstance(s, asyncio.StreamReader):
            return await s.read(self.chunk_bytes)
        read: Callable[[int], bytes] = getattr(s, "read1", None) or s.read
        return await asyncio.to_thread(read, self.chunk_bytes)

    async def _pump(self, queue: IngestQueue) -> None:
        while not self._stop.is_set():
            self._pending = asyncio.ensure_future(self._read_chunk())
            try:
                data = await self._pending
            except asyncio.CancelledError:
                if self._stop.is_set():
                    return
                raise
            finally:
                self._pending = None
            if not data:
                tail = self.lines.end()
                if tail:
                    await _put_unless_stopped(queue, Batch(tail, self.source, self.stats), self._stop)
                self.finished.set()
                return
            before = self.lines.too_long
            complete = self.lines.push(data)
            _count(self.stats, "line_too_long", self.lines.too_long - before)
            if complete:
                await _put_unless_stopped(queue, Batch(complete, self.source, self.stats), self._stop)

    async def run(self, queue: IngestQueue) -> None:
        await self._pump(queue)


class StdinSource(StreamSource):
    """Complete lines from stdin (or another file descriptor ``fd``). A pipe, socket or
    terminal is read through the event loop (cancellable; the descriptor is non-blocking
    meanwhile); a regular file (``< file``) in a worker thread."""

    def __init__(
        self,
        fd: int | None = None,
        *,
        source: Source | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        name: str = "stdin",
    ) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        super().__init__(
            None,  # opened in run()
            source=source,
            chunk_bytes=chunk_bytes,
            max_line_bytes=max_line_bytes,
            name=name,
        )

    async def run(self, queue: IngestQueue) -> None:
        mode = os.fstat(self.fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            with os.fdopen(os.dup(self.fd), "rb", buffering=0) as f:
                self.stream = f
                await self._pump(queue)
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=max(self.chunk_bytes, 2**16))
        was_blocking = os.get_blocking(self.fd)
        pipe: Any = os.fdopen(os.dup(self.fd), "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        self.stream = reader
        try:
            await self._pump(queue)
        finally:
            transport.close()
            with contextlib.suppress(OSError):
                os.set_blocking(self.fd, was_blocking)
