"""Print the benchmark figures and the ratios against the peers measured in the same run.

Usage: ``python benches/report.py .benchmarks/latest.json`` (``make bench`` does it)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

PAIRS = [
    ("istio-json", "test_ours_istio_json", ["test_polars_istio_json", "test_orjson_istio_json"]),
    (
        "istio-json-mesh",
        "test_ours_istio_json_mesh",
        ["test_polars_istio_json_mesh", "test_orjson_istio_json_mesh"],
    ),
    ("istio-text", "test_ours_istio_text", ["test_python_split_istio_text"]),
    ("columnar", "test_ours_columnar[enum]", ["test_polars_columnar"]),
    ("columnar", "test_ours_columnar[string]", ["test_polars_columnar"]),
    ("columnar", "test_ours_columnar[categorical]", ["test_polars_columnar"]),
    ("columnar", "test_ours_columnar_pyarrow", ["test_polars_columnar"]),
]


def load(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text())
    return {b["name"]: b for b in data["benchmarks"]}


def rate(b: dict[str, Any]) -> str:
    t = b["stats"]["median"]
    info = b.get("extra_info", {})
    parts = []
    if "bytes" in info:
        parts.append(f"{info['bytes'] / t / 1e9:.2f} GB/s")
    if "lines" in info:
        parts.append(f"{info['lines'] / t / 1e6:.2f} M lines/s")
        if "bytes" in info:
            parts.append(f"{info['bytes'] / info['lines']:.0f} B/line")
    if "rows" in info:
        parts.append(f"{info['rows'] / t / 1e6:.1f} M rows/s")
    return ", ".join(parts)


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else ".benchmarks/latest.json")
    benches = load(path)
    calibration = benches.get("test_host_calibration")
    if calibration:
        print(
            f"host calibration (pure-Python loop): {calibration['stats']['median'] * 1e3:.0f} ms"
            " (this VM: ~73 ms fast state, ~130 ms slow state)"
        )
    print(f"{'group':<16} {'benchmark':<32} {'median':>10}  throughput")
    for group, ours, peers in PAIRS:
        if ours not in benches:
            continue
        mine = benches[ours]
        print(f"{group:<16} {ours:<32} {mine['stats']['median'] * 1e3:>8.1f}ms  {rate(mine)}")
        for p in peers:
            if p not in benches:
                continue
            b = benches[p]
            ratio = b["stats"]["median"] / mine["stats"]["median"]
            median_ms = b["stats"]["median"] * 1e3
            print(f"{'':<16} {p:<32} {median_ms:>8.1f}ms  {rate(b)}  -> ours x{ratio:.1f} faster")
    for name, b in benches.items():
        info = b.get("extra_info", {})
        ratios = info.get("paired_ratios")
        if not name.startswith("test_paired_") or not ratios:
            continue
        ratios = sorted(ratios)
        mid = statistics.median(ratios)
        print(
            f"{b['group']:<16} {name:<32} {b['stats']['median'] * 1e3:>8.1f}ms  {rate(b)}\n"
            f"{'':<16} {info['peer'] + ' (alternate rounds)':<32} "
            f"{info['peer_median_s'] * 1e3:>8.1f}ms  -> ours x{mid:.1f} faster "
            f"(median of {len(ratios)} adjacent pairs; x{ratios[0]:.1f}-x{ratios[-1]:.1f})"
        )
    mem = benches.get("test_memory_per_key_60s")
    if mem:
        info = mem["extra_info"]
        print(f"memory per (target, version), 60 s ring at 1 %: {info['bytes_per_key'] / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
