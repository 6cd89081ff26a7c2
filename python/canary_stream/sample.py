"""Regenerate the bundled sample log: ``python -m canary_stream.sample``.

The sample is a deterministic canary rollout of ``podinfo.test`` in Istio's default TEXT
format (primary 90 %, a slower and less reliable canary 10 %, a few malformed lines), so
``canary-stream analyze`` has something real to show on a fresh install.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from canary_stream.core import generate

SAMPLE_NAME = "sample-istio-text.log.gz"
SAMPLE_LINES = 20_000


def sample_bytes() -> bytes:
    return generate("istio-text", lines=SAMPLE_LINES, seed=7, malformed_rate=0.002, out_of_order_ms=300)


def write_sample(path: Path) -> None:
    # mtime=0 keeps the gzip bytes identical across regenerations.
    path.write_bytes(gzip.compress(sample_bytes(), compresslevel=9, mtime=0))


if __name__ == "__main__":
    target = Path(__file__).parent / "data" / SAMPLE_NAME
    write_sample(target)
    print(f"wrote {target}")
