"""Coverage-guided fuzzing of every parser through the extension (atheris).

Run briefly by ``make fuzz`` (CI) and for as long as you like by hand:
``.venv/bin/python tests/fuzz_parsers.py -atheris_runs=0``. Any exception other than the
documented ones, or a crash, is a finding. Inputs are seeded with generated lines of every
format so the fuzzer starts inside the grammar.
"""

from __future__ import annotations

import sys

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


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
