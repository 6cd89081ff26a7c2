"""Coverage-guided fuzzing of every parser through the extension (atheris).

Run briefly by ``make fuzz`` (CI) and for as long as you like by hand:
``.venv/bin/python tests/fuzz_parsers.py -atheris_runs=0``. Any exception other than the
documented ones, or a crash, is a finding. Inputs are seeded with generated lines of every
format so the fuzzer starts inside the grammar.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from canary_stream import _native

FORMATS = list(_native.FORMATS)
REASONS = {name for name, _ in _native.reason_names()}


def one_input(data: bytes) -> None:
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    body = data[1:]
    for row in _native.parse_lines(body, fmt):
        assert row["ok"] or row["reason"] in REASONS, row
    # The whole pipeline, including detection, must not raise on any input.
    p = _native.Pipeline({"format": "auto" if data[0] & 0x80 else fmt, "max_line_bytes": 4096})
    p.feed(body, now_ms=1_700_000_000_000)
    p.finish(now_ms=1_700_000_000_000)
    t = p.totals()
    assert t["lines"] == t["accepted"] + sum(t["malformed"].values()) + sum(t["skipped"].values()), t


def seed_corpus() -> str:
    """A directory of generated lines of every format (first byte selects the format), so
    the fuzzer starts inside each grammar rather than from nothing."""
    d = tempfile.mkdtemp(prefix="canary-fuzz-seeds-")
    for i, fmt in enumerate(FORMATS):
        if fmt.startswith("linkerd") or fmt == "ndjson":
            lines = _native.generate({"format": fmt, "lines": 8, "seed": i})
        else:
            lines = _native.generate({"format": fmt, "lines": 8, "seed": i, "malformed_rate": 0.3})
        for j, line in enumerate(lines.splitlines()):
            Path(d, f"{fmt}-{j}").write_bytes(bytes([i]) + line + b"\n")
    return d


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(seed_corpus())
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
