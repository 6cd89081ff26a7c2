"""Turn snapshots into the per-version report: canary compared with primary, as a table
or as one JSON object."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from canary_stream.core import Totals, VersionStats

BASELINE_VERSIONS: tuple[str, ...] = ("primary", "stable")


@dataclass(frozen=True)
class Comparison:
    """A candidate version of a target against that target's baseline version."""

    target: str
    baseline: str
    candidate: str
    success_rate_delta_pp: float | None
    p50_ratio: float | None
    p99_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "success_rate_delta_pp": self.success_rate_delta_pp,
            "p50_ratio": self.p50_ratio,
            "p99_ratio": self.p99_ratio,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def compare(stats: Iterable[VersionStats], baselines: Sequence[str] = BASELINE_VERSIONS) -> list[Comparison]:
    """Every non-baseline version of a target against its baseline (the first of
    ``baselines`` present for that target)."""
    by_target: dict[str, dict[str, VersionStats]] = {}
    for s in stats:
        by_target.setdefault(s.target, {})[s.version] = s
    out: list[Comparison] = []
    for target in sorted(by_target):
        versions = by_target[target]
        base_name = next((b for b in baselines if b in versions), None)
        if base_name is None:
            continue
        base = versions[base_name]
        for name in sorted(versions):
            if name == base_name or name in baselines:
                continue
            cand = versions[name]
            delta = (
                cand.success_rate - base.success_rate
                if cand.success_rate is not None and base.success_rate is not None
                else None
            )
            out.append(
                Comparison(
                    target=target,
                    baseline=base_name,
                    candidate=name,
                    success_rate_delta_pp=delta,
                    p50_ratio=_ratio(cand.p50_ms, base.p50_ms),
                    p99_ratio=_ratio(cand.p99_ms, base.p99_ms),
                )
            )
    return out


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _flags(s: VersionStats, top: int = 3) -> str:
    items = sorted(s.flags.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k}:{v}" for k, v in items) or "-"


def render_table(
    console: Console, title: str, stats: Sequence[VersionStats], baselines: Sequence[str]
) -> None:
    table = Table(title=title, title_justify="left")
    for col, just in [
        ("target", "left"),
        ("version", "left"),
        ("requests", "right"),
        ("rps", "right"),
        ("success %", "right"),
        ("p50 ms", "right"),
        ("p90 ms", "right"),
        ("p99 ms", "right"),
        ("5xx", "right"),
        ("4xx", "right"),
        ("no resp", "right"),
        ("flags", "left"),
    ]:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for s in sorted(stats, key=lambda s: (s.target, s.version)):
        table.add_row(
            s.target,
            s.version,
            f"{s.requests:,}",
            f"{s.rps:.1f}",
            _fmt_pct(s.success_rate),
            _fmt_ms(s.p50_ms),
            _fmt_ms(s.p90_ms),
            _fmt_ms(s.p99_ms),
            f"{s.status_5xx:,}",
            f"{s.status_4xx:,}",
            f"{s.status_0:,}",
            _flags(s),
        )
    console.print(table)
    for c in compare(stats, baselines):
        delta = "-" if c.success_rate_delta_pp is None else f"{c.success_rate_delta_pp:+.2f} pp"
        p50 = "-" if c.p50_ratio is None else f"x{c.p50_ratio:.2f}"
        p99 = "-" if c.p99_ratio is None else f"x{c.p99_ratio:.2f}"
        console.print(f"  {c.target}: {c.candidate} vs {c.baseline}: success {delta}, p50 {p50}, p99 {p99}")


def render_totals(console: Console, totals: Totals, fmt: str | None) -> None:
    console.print(
        f"format: {fmt or 'undetected'}  lines: {totals.lines:,}  accepted: {totals.accepted:,}  "
        f"bytes: {totals.bytes:,}"
    )
    if totals.malformed:
        parts = ", ".join(f"{k}: {v:,}" for k, v in sorted(totals.malformed.items()))
        console.print(f"malformed ({totals.malformed_total:,}): {parts}")
    else:
        console.print("malformed: none")
    if totals.skipped:
        console.print("skipped: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(totals.skipped.items())))


def report_json(
    stats: Sequence[VersionStats],
    totals: Totals,
    fmt: str | None,
    baselines: Sequence[str],
    windows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": fmt,
        "lines": totals.lines,
        "accepted": totals.accepted,
        "bytes": totals.bytes,
        "versions": [s.to_dict() for s in sorted(stats, key=lambda s: (s.target, s.version))],
        "comparisons": [c.to_dict() for c in compare(stats, baselines)],
        "malformed": dict(totals.malformed),
        "skipped": dict(totals.skipped),
    }
    if windows is not None:
        out["windows"] = windows
    return out
