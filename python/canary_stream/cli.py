"""The ``canary-stream`` command line."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from importlib import resources
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from canary_stream import __version__, logs
from canary_stream.core import (
    FORMATS,
    Aggregator,
    AggregatorConfig,
    Classification,
    FieldMapping,
    Source,
    Windowing,
    generate,
)
from canary_stream.readers import Input, read_chunks
from canary_stream.report import BASELINE_VERSIONS, render_table, render_totals, report_json

SAMPLE_LOG = "sample-istio-text.log.gz"


def bundled_sample() -> str:
    """Path of the sample log shipped with the package (a canary rollout, Istio TEXT)."""
    return str(resources.files("canary_stream") / "data" / SAMPLE_LOG)


def _positive_float(s: str) -> float:
    v = float(s)
    if not 0 < v <= 86_400:
        raise argparse.ArgumentTypeError("must be between 0 and 86400 seconds")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canary-stream", description=__doc__)
    p.add_argument("--version", action="version", version=f"canary-stream {__version__}")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log format (json: one object per line with canary, namespace, phase, verdict); "
        "default $CANARY_STREAM_LOG_FORMAT, else Python's default",
    )
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser(
        "analyze",
        help="per-version success rate and latency of access logs (files, gzip, stdin)",
        description="Per-version request counts, success rate and latency quantiles of access logs, "
        "with canary compared against primary. Without FILE, analyzes the bundled sample log.",
    )
    a.add_argument("files", nargs="*", metavar="FILE", help="log files (plain or gzip); '-' for stdin")
    a.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    a.add_argument(
        "--window", type=_positive_float, metavar="S", help="report per tumbling window of S seconds"
    )
    a.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    a.add_argument(
        "--baseline",
        action="append",
        metavar="VERSION",
        help=f"baseline version name(s) to compare against (default: {', '.join(BASELINE_VERSIONS)})",
    )
    a.add_argument(
        "--flagger-success",
        action="store_true",
        help="count only 5xx as failures (Flagger's request-success-rate); "
        "by default no-response (status 0) and server-side gRPC errors fail too",
    )
    a.add_argument(
        "--default-version",
        metavar="VERSION",
        help="version for lines no attribution rule can attribute (default: count them as malformed)",
    )
    a.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="ROLE=KEY",
        help="ndjson field mapping, e.g. --field status=code --field duration=latency "
        "--field duration_unit=s (roles: " + ", ".join(f.name for f in fields(FieldMapping)) + ")",
    )
    a.add_argument("--max-line-bytes", type=int, default=64 * 1024)
    a.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    a.set_defaults(func=cmd_analyze)

    g = sub.add_parser(
        "generate",
        help="write deterministic, realistic access logs (a canary rollout) for replay and benchmarks",
    )
    g.add_argument("--format", default="istio-text", choices=FORMATS)
    g.add_argument("--lines", type=int, default=10_000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--attribution", default="subset", choices=["subset", "host_suffix", "sni"])
    g.add_argument("--malformed-rate", type=float, default=0.0, help="share of malformed lines (0..1)")
    g.add_argument("-o", "--output", default="-", help="file to write ('.gz' compresses); default stdout")
    g.set_defaults(func=cmd_generate)

    # Each engine command lives with its stage and registers itself.
    from canary_stream import run_cmd
    from canary_stream.sim import demo, simulate_cmd
    from canary_stream.spec import validate_cmd

    validate_cmd.register(sub)
    simulate_cmd.register(sub)
    demo.register(sub)
    run_cmd.register(sub)
    return p


def cmd_generate(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"malformed_rate": args.malformed_rate}
    if args.format.startswith("istio"):
        overrides["attribution"] = args.attribution
    try:
        data = generate(args.format, lines=args.lines, seed=args.seed, **overrides)
    except ValueError as e:
        Console(stderr=True).print(f"[red]invalid generator settings: {e}[/red]")
        return 2
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif args.output.endswith(".gz"):
        with gzip.open(args.output, "wb") as f:
            f.write(data)
    else:
        with open(args.output, "wb") as f:
            f.write(data)
    return 0


class _Windows:
    """Tumbling windows over event time, emitted once the watermark (minus the allowed
    lateness) has passed their end."""

    def __init__(self, agg: Aggregator, width_s: float, lateness_ms: int) -> None:
        self.agg = agg
        self.width_ms = max(1000, round(width_s * 1000))
        self.lateness_ms = lateness_ms
        self.next_start: int | None = None
        self.emitted: list[tuple[int, int, list[Any]]] = []

    def poll(self, final: bool = False) -> list[tuple[int, int, list[Any]]]:
        wm = self.agg.watermark_ms
        if wm is None:
            return []
        if self.next_start is None:
            first = min((s.start_ms for s in self.agg.snapshot(None)), default=wm)
            self.next_start = first - first % self.width_ms
        limit = wm + 1 if final else wm - self.lateness_ms
        out = []
        while self.next_start + self.width_ms <= limit or (final and self.next_start <= wm):
            end = self.next_start + self.width_ms
            stats = self.agg.snapshot(self.width_ms / 1000, end_ms=end)
            stats = [s for s in stats if s.requests > 0]
            out.append((self.next_start, end, stats))
            self.next_start = end
        self.emitted.extend(out)
        return out


def _mapping(pairs: list[str]) -> FieldMapping:
    """``ROLE=KEY`` pairs onto the NDJSON field mapping."""
    roles = {f.name for f in fields(FieldMapping)}
    values: dict[str, Any] = {}  # units are checked (and named) by the core
    for pair in pairs:
        role, sep, key = pair.partition("=")
        if not sep or role not in roles:
            raise ValueError(f"{pair!r}: expected ROLE=KEY with ROLE one of {', '.join(sorted(roles))}")
        values[role] = key
    return replace(FieldMapping(), **values)


def cmd_analyze(args: argparse.Namespace) -> int:
    # Wide tables when piped or captured, so no column is cut.
    out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True)
    files = args.files or [bundled_sample()]
    inputs = [Input(f) for f in files]
    window_s: float | None = args.window
    ring = 600 if window_s is None else max(600, int(window_s * 4) + 60)
    try:
        mapping = _mapping(args.field)
    except ValueError as e:
        err.print(f"[red]--field: {e}[/red]")
        return 2
    config = AggregatorConfig(
        format=args.format,
        mapping=mapping,
        max_line_bytes=args.max_line_bytes,
        classification=Classification(preset="flagger" if args.flagger_success else "default"),
        windowing=Windowing(ring_secs=min(ring, 86_400)),
    )
    if args.default_version:
        config = replace(
            config, attribution=replace(config.attribution, default_version=args.default_version)
        )
    try:
        agg = Aggregator(config)
    except ValueError as e:
        err.print(f"[red]invalid configuration: {e}[/red]")
        return 2
    baselines: list[str] = args.baseline or list(BASELINE_VERSIONS)
    windows = _Windows(agg, window_s, config.windowing.allowed_lateness_ms) if window_s else None
    # Smaller chunks with windows, so no chunk spans more event time than the ring holds.
    chunk = (256 << 10) if windows else (1 << 20)
    show_progress = sys.stderr.isatty() and not args.no_progress
    sizes = [i.size() for i in inputs]
    total = sum(s for s in sizes if s) if all(sizes) else None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show_progress,
        transient=True,
    )
    done_before = 0
    started = time.perf_counter()
    with progress:
        task = progress.add_task("analyzing", total=total)
        for inp in inputs:
            source = Source() if inp.is_stdin else Source.from_path(inp.path)
            try:
                for data, pos in read_chunks(inp, chunk):
                    agg.feed(data, source=source)
                    progress.update(
                        task, completed=done_before + pos if pos else None, advance=None if pos else len(data)
                    )
                    if windows and not args.json:
                        for start, end, stats in windows.poll():
                            render_table(out, _window_title(start, end), stats, baselines)
                    elif windows:
                        windows.poll()
            except OSError as e:
                err.print(f"[red]{inp.path}: {e.strerror or e}[/red]")
                return 2
            except EOFError as e:  # truncated gzip: keep what was read, say so
                err.print(f"[yellow]{inp.path}: {e}[/yellow]")
            agg.finish(source=source)
            done_before += inp.size() or 0
    elapsed = time.perf_counter() - started
    if windows:
        tail = windows.poll(final=True)
        if not args.json:
            for start, end, stats in tail:
                render_table(out, _window_title(start, end), stats, baselines)
    stats = agg.snapshot(None)
    totals = agg.totals()
    if args.json:
        win_json = None
        if windows:
            win_json = [
                report_json(s, totals, agg.format, baselines) | {"start_ms": a, "end_ms": b}
                for a, b, s in windows.emitted
            ]
            for w in win_json:
                for k in ("lines", "accepted", "bytes", "malformed", "skipped", "format"):
                    w.pop(k, None)
        print(json.dumps(report_json(stats, totals, agg.format, baselines, win_json)))
    else:
        render_table(out, "whole input", stats, baselines)
        render_totals(out, totals, agg.format)
        mb = totals.bytes / 1e6
        rate = mb / elapsed if elapsed else 0.0
        out.print(f"{mb:,.1f} MB read in {elapsed:.2f} s ({rate:,.0f} MB/s, including decompression)")
    if totals.accepted == 0:
        err.print("[red]no request could be parsed and attributed: no data is not a pass[/red]")
        return 1
    return 0


def _window_title(start_ms: int, end_ms: int) -> str:
    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

    return f"window {iso(start_ms)} .. {iso(end_ms)}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_format or os.environ.get(logs.ENV_FORMAT):
        logs.configure(args.log_format)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
