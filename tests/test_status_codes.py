"""Per-status-code counts in snapshots (exact, 200 included)."""

from __future__ import annotations

import json

from canary_stream import _native
from canary_stream.core import VersionStats


def _line(ts: int, status: int) -> bytes:
    return json.dumps(
        {"timestamp": ts, "status": status, "duration_ms": 5, "target": "reviews", "version": "v2"}
    ).encode()


def test_snapshot_counts_each_status_code() -> None:
    statuses = [200, 200, 200, 404, 503, 503, 204, 0]
    p = _native.Pipeline({"format": "ndjson"})
    p.feed(b"\n".join(_line(1_700_000_000_000 + i, s) for i, s in enumerate(statuses)) + b"\n")
    (raw,) = p.snapshot()
    stats = VersionStats.from_native(raw)
    assert dict(stats.status_codes) == {0: 1, 200: 3, 204: 1, 404: 1, 503: 2}
    assert list(stats.status_codes) == sorted(stats.status_codes)
    assert stats.status_codes_overflow == 0
    assert stats.to_dict()["status_codes"] == {0: 1, 200: 3, 204: 1, 404: 1, 503: 2}


def test_version_stats_defaults_keep_old_dicts_working() -> None:
    p = _native.Pipeline({"format": "ndjson"})
    p.feed(_line(1_700_000_000_000, 200) + b"\n")
    (raw,) = p.snapshot()
    raw.pop("status_codes")
    raw.pop("status_codes_overflow")
    stats = VersionStats.from_native(raw)
    assert dict(stats.status_codes) == {}
    assert stats.status_codes_overflow == 0
