"""Read access-log bytes from files (plain or gzip) and stdin in bounded chunks."""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Input:
    """One input: a path, or ``-`` for stdin."""

    path: str

    @property
    def is_stdin(self) -> bool:
        return self.path == "-"

    def size(self) -> int | None:
        """Bytes on disk (compressed size for gzip), ``None`` for stdin and pipes."""
        if self.is_stdin:
            return None
        try:
            import os

            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_size if st.st_size > 0 else None


def _open(inp: Input) -> BinaryIO:
    raw: Any = sys.stdin.buffer if inp.is_stdin else open(inp.path, "rb")  # noqa: SIM115
    buffered: io.BufferedReader = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    # Gzip is recognised by its magic bytes, not the file name (stdin may be gzip too).
    if buffered.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    return buffered


def read_chunks(inp: Input, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """Yield (decompressed chunk, compressed bytes consumed so far) with bounded memory."""
    f = _open(inp)
    # Progress is measured on the bytes read from disk (the gzip stream, if any).
    disk = getattr(f, "fileobj", f)
    try:
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            yield chunk, (0 if inp.is_stdin else disk.tell())
    finally:
        if not inp.is_stdin:
            f.close()
