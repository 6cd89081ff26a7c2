"""``canary-stream run``: the configured telemetry sources and the aggregator as one asyncio process.

Sources (any combination, at least one): sidecar log files followed like ``tail -F`` (``--file GLOB``,
repeatable), stdin (``--stdin``), the HTTP push endpoint (``--http [HOST:]PORT``), Kafka
(``--kafka-topic``), the Envoy gRPC access-log service (``--als [HOST:]PORT``, Istio's ``envoyHttpAls``
provider). A YAML file (``--config``) may hold the full ``kafka:``, ``http:`` and ``als:`` settings
(every field of :class:`~canary_stream.sources.kafka.KafkaConfig` /
:class:`~canary_stream.sources.http_push.HttpPushConfig` /
:class:`~canary_stream.sources.envoy_als.EnvoyAlsConfig`, e.g. TLS and SASL); flags given on the
command line override its values.

Every ``--stats-interval`` seconds one line per source goes to stderr (events/s, bytes/s over the
interval, lag, malformed and backpressure waits), or one JSON object per line with ``--stats-json``.

SIGINT / SIGTERM stop cleanly: the sources stop (the HTTP server stops accepting and answers the
requests in flight, file tailing stops, Kafka stops fetching), every batch already queued is folded,
Kafka commits the folded offsets and leaves its group; then the figures since start are printed
(a table, or one JSON object with ``--json``) and the process exits 0. A second signal aborts at
once (exit 130). With only stdin (or sources that end by themselves), the process ends at their end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from rich.console import Console

from canary_stream import eventloop
from canary_stream.core import FORMATS, Aggregator, AggregatorConfig, Classification, Windowing
from canary_stream.report import BASELINE_VERSIONS, render_table, render_totals, report_json
from canary_stream.sources.base import IngestQueue, SourceStats, TelemetrySource, fold_forever

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run telemetry sources (files, stdin, HTTP push, Kafka, Envoy ALS) into the aggregator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML file with `kafka:`, `http:` and `als:` sections")
    s = p.add_argument_group("sources")
    s.add_argument("--file", action="append", default=[], metavar="GLOB", help="follow files like tail -F")
    s.add_argument("--from-start", action="store_true", help="read existing files from their beginning")
    s.add_argument("--stdin", action="store_true", help="read lines from stdin")
    s.add_argument("--http", metavar="[HOST:]PORT", help="serve POST /ingest (e.g. 0.0.0.0:8087)")
    s.add_argument("--http-envelope-key", metavar="KEY", help="JSON key holding the line (log, message)")
    s.add_argument("--http-max-body", type=int, metavar="BYTES", help="body size limit (default 8 MiB)")
    s.add_argument("--http-ack", choices=["folded", "queued"], help="answer 204 after fold (default)")
    s.add_argument("--als", metavar="[HOST:]PORT", help="serve Envoy gRPC access logs (e.g. 0.0.0.0:9001)")
    s.add_argument("--kafka-bootstrap", metavar="HOST:PORT[,...]", help="Kafka bootstrap servers")
    s.add_argument("--kafka-topic", action="append", default=[], metavar="TOPIC")
    s.add_argument("--kafka-group", metavar="GROUP", help="consumer group (default canary-stream)")
    s.add_argument("--kafka-envelope-key", metavar="KEY", help="JSON key holding the line (log, message)")
    s.add_argument(
        "--kafka-from-earliest", action="store_true", help="no committed offset: start at earliest"
    )
    a = p.add_argument_group("aggregator")
    a.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    a.add_argument("--default-version", metavar="VERSION", help="version of lines no rule attributes")
    a.add_argument("--flagger-success", action="store_true", help="count only 5xx as failures")
    a.add_argument("--max-line-bytes", type=int, default=64 * 1024)
    a.add_argument("--ring-secs", type=int, default=600, help="seconds of event time kept")
    r = p.add_argument_group("process")
    r.add_argument("--queue-bytes", type=int, default=64 << 20, help="ingest queue bound (backpressure)")
    r.add_argument("--stats-interval", type=float, default=10.0, metavar="S", help="0: no stats lines")
    r.add_argument("--stats-json", action="store_true", help="stats lines as JSON objects")
    r.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    r.add_argument("--shutdown-timeout", type=float, default=60.0, metavar="S")
    r.add_argument("--json", action="store_true", help="final figures as one JSON object on stdout")
    p.set_defaults(func=cmd_run)


# --- configuration -------------------------------------------------------------------------------


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key in doc:
        if key not in ("kafka", "http", "als"):
            raise ValueError(f"{path}: unknown section {key!r} (expected kafka, http, als)")
    return doc


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a mapping")
    return dict(value)


def _build(cls: Any, name: str, values: dict[str, Any]) -> Any:
    try:
        return cls(**values)
    except TypeError as exc:  # unknown field
        raise ValueError(f"{name}: {exc}") from None


def _listen(flag: str, value: str) -> dict[str, Any]:
    """``[HOST:]PORT`` as config values."""
    host, sep, port = value.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{flag}: expected [HOST:]PORT, got {value!r}")
    out: dict[str, Any] = {"port": int(port)}
    if sep and host:
        out["host"] = host.strip("[]")
    return out


def build_sources(args: argparse.Namespace) -> list[TelemetrySource]:
    """The sources the flags and the config file ask for. Raises ValueError naming what is wrong."""
    doc = _load_yaml(args.config) if args.config else {}
    sources: list[TelemetrySource] = []
    if args.file:
        from canary_stream.sources.files import FileTailSource

        sources.append(FileTailSource(args.file, start_at_end=not args.from_start))
    if args.stdin:
        from canary_stream.sources.files import StdinSource

        sources.append(StdinSource())
    http = _section(doc, "http")
    if args.http:
        host, sep, port = args.http.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"--http: expected [HOST:]PORT, got {args.http!r}")
        http["port"] = int(port)
        if sep and host:
            http["host"] = host.strip("[]")
    for flag, key in (("http_envelope_key", "envelope_key"), ("http_max_body", "max_body_bytes")):
        if getattr(args, flag) is not None:
            http[key] = getattr(args, flag)
    if args.http_ack:
        http["ack"] = args.http_ack
    if args.http or doc.get("http"):
        from canary_stream.sources.http_push import HttpPushConfig, HttpPushSource

        sources.append(HttpPushSource(_build(HttpPushConfig, "http", http)))
    als = _section(doc, "als")
    if args.als:
        als.update(_listen("--als", args.als))
    if args.als or doc.get("als"):
        from canary_stream.sources.envoy_als import EnvoyAlsConfig, EnvoyAlsSource

        sources.append(EnvoyAlsSource(_build(EnvoyAlsConfig, "als", als)))
    kafka = _section(doc, "kafka")
    if args.kafka_bootstrap:
        kafka["bootstrap_servers"] = [s.strip() for s in args.kafka_bootstrap.split(",") if s.strip()]
    if args.kafka_topic:
        kafka["topics"] = tuple(args.kafka_topic)
    elif "topics" in kafka:
        kafka["topics"] = tuple(kafka["topics"])
    if args.kafka_group:
        kafka["group_id"] = args.kafka_group
    if args.kafka_envelope_key:
        kafka["envelope_key"] = args.kafka_envelope_key
    if args.kafka_from_earliest:
        kafka["auto_offset_reset"] = "earliest"
    if args.kafka_topic or doc.get("kafka"):
        from canary_stream.sources.kafka import KafkaConfig, KafkaSource

        sources.append(KafkaSource(_build(KafkaConfig, "kafka", kafka)))
    if not sources:
        raise ValueError("no source: give --file, --stdin, --http, --als or --kafka-topic (or a --config)")
    return sources


def build_aggregator(args: argparse.Namespace) -> Aggregator:
    config = AggregatorConfig(
        format=args.format,
        max_line_bytes=args.max_line_bytes,
        classification=Classification(preset="flagger" if args.flagger_success else "default"),
        windowing=Windowing(ring_secs=args.ring_secs),
    )
    if args.default_version:
        config = replace(
            config, attribution=replace(config.attribution, default_version=args.default_version)
        )
    return Aggregator(config)


# --- the process ---------------------------------------------------------------------------------


@dataclass
class _Last:
    at: float
    events: int = 0
    bytes: int = 0
    malformed: int = 0
    waits: int = 0


@dataclass
class StatsPrinter:
    """Per-source stats lines over the interval since the previous line."""

    sources: Sequence[TelemetrySource]
    out: TextIO
    as_json: bool = False
    _last: dict[str, _Last] = field(default_factory=dict)

    def line(self, now: float | None = None, *, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        parts: list[str] = []
        objs: list[dict[str, Any]] = []
        for src in self.sources:
            s: SourceStats = src.stats
            last = self._last.get(s.name) or _Last(at=s.started_at)
            dt = max(1e-9, now - last.at)
            malformed = sum(s.malformed.values())
            ev_s = (s.events - last.events) / dt
            by_s = (s.bytes - last.bytes) / dt
            obj: dict[str, Any] = {
                "source": s.name,
                "events_per_s": round(ev_s, 1),
                "bytes_per_s": round(by_s, 1),
                "events": s.events,
                "bytes": s.bytes,
                "lag": s.lag,
                "malformed": malformed,
                "malformed_by_reason": dict(s.malformed),
                "waits": s.waits,
            }
            if final:
                obj.update({"final": True, **{f"avg_{k}": round(v, 1) for k, v in s.rates(now).items()}})
            objs.append(obj)
            lag = "-" if s.lag is None else f"{s.lag:,}"
            parts.append(
                f"{s.name}: {ev_s:,.0f} ev/s {by_s / 1e6:,.2f} MB/s lag {lag} "
                f"malformed +{malformed - last.malformed} ({malformed:,}) waits +{s.waits - last.waits} "
                f"events {s.events:,}"
            )
            self._last[s.name] = _Last(now, s.events, s.bytes, malformed, s.waits)
        if self.as_json:
            for obj in objs:
                print(json.dumps(obj), file=self.out, flush=True)
        else:
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}]{' final' if final else ''} " + " | ".join(parts), file=self.out, flush=True)

    async def every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.line()


async def run_pipeline(
    sources: Sequence[TelemetrySource],
    aggregator: Aggregator,
    *,
    stop: asyncio.Event,
    queue_bytes: int = 64 << 20,
    stats_interval: float = 10.0,
    stats_json: bool = False,
    err: TextIO = sys.stderr,
    duration: float | None = None,
    shutdown_timeout: float = 60.0,
) -> int:
    """Run the sources into the aggregator until `stop` is set, `duration` has passed or every source
    has ended; then stop the sources, fold what is queued and return 0 (1 if a source or the fold
    loop failed)."""
    queue = IngestQueue(max_bytes=queue_bytes)
    fold = asyncio.create_task(fold_forever(queue, aggregator), name="fold")
    tasks = {asyncio.create_task(src.run(queue), name=f"source:{src.stats.name}"): src for src in sources}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    printer = StatsPrinter(sources, err, stats_json)
    ticker = asyncio.create_task(printer.every(stats_interval)) if stats_interval > 0 else None
    announcers = [
        asyncio.create_task(_announce(src, ready, err))
        for src in sources
        if isinstance(ready := getattr(src, "ready", None), asyncio.Event)
    ]
    deadline = None if duration is None else time.monotonic() + duration
    rc = 0
    running = set(tasks)
    try:
        while running:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(
                running | {stopper, fold}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if fold in done:
                print(f"canary-stream run: the fold loop failed: {fold.exception()!r}", file=err, flush=True)
                rc = 1
                break
            for t in done & running:
                running.discard(t)
                exc = t.exception()
                if exc is not None:
                    print(f"canary-stream run: {t.get_name()} failed: {exc!r}", file=err, flush=True)
                    rc = 1
            if rc or stopper in done or not done:
                break
        # stop: sources first (they wait for their in-flight batches to fold), then the queue drains
        for src in sources:
            src.stop()
        _, late = await asyncio.wait(running, timeout=shutdown_timeout) if running else (set(), set())
        for t in late:
            print(f"canary-stream run: {t.get_name()} did not stop in time", file=err, flush=True)
            t.cancel()
            rc = 1
        for t in running - late:
            if not t.cancelled() and t.exception() is not None:
                print(f"canary-stream run: {t.get_name()} failed: {t.exception()!r}", file=err, flush=True)
                rc = 1
        if not fold.done():
            try:
                await asyncio.wait_for(queue.join(), shutdown_timeout)
            except TimeoutError:
                print("canary-stream run: queued batches not folded in time", file=err, flush=True)
                rc = 1
    finally:
        helpers: list[asyncio.Future[Any]] = [stopper, fold, *tasks, *announcers]
        if ticker is not None:
            helpers.append(ticker)
        for h in helpers:
            if not h.done():
                h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    if stats_interval > 0 or stats_json:
        printer.line(final=True)
    return rc


async def _announce(src: TelemetrySource, ready: asyncio.Event, err: TextIO) -> None:
    await ready.wait()
    cfg = getattr(src, "config", None)
    url = getattr(src, "url", None)
    if isinstance(url, str):  # a gRPC service (Envoy ALS)
        print(f"canary-stream run: {src.stats.name} listening on grpc://{url}", file=err, flush=True)
        return
    host = getattr(cfg, "host", "?")
    path = getattr(cfg, "path", "/ingest")
    print(
        f"canary-stream run: {src.stats.name} listening on http://{host}:{getattr(src, 'port', '?')}{path}",
        file=err,
        flush=True,
    )


async def _main(args: argparse.Namespace, sources: list[TelemetrySource], aggregator: Aggregator) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and main_task is not None:
            main_task.cancel()  # second signal: abort
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await run_pipeline(
            sources,
            aggregator,
            stop=stop,
            queue_bytes=args.queue_bytes,
            stats_interval=args.stats_interval,
            stats_json=args.stats_json,
            duration=args.duration,
            shutdown_timeout=args.shutdown_timeout,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def cmd_run(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        sources = build_sources(args)
        aggregator = build_aggregator(args)
    except (ValueError, OSError) as exc:
        err.print(f"[red]canary-stream run: {exc}[/red]")
        return 2
    try:
        rc = eventloop.run(_main(args, sources, aggregator))
    except (asyncio.CancelledError, KeyboardInterrupt):
        err.print("[red]canary-stream run: aborted[/red]")
        return 130
    stats = aggregator.snapshot(None)
    totals = aggregator.totals()
    baselines = list(BASELINE_VERSIONS)
    if args.json:
        out = report_json(stats, totals, aggregator.format, baselines)
        out["sources"] = {s.stats.name: s.stats.to_dict() for s in sources}
        print(json.dumps(out), flush=True)
    else:
        console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
        render_table(console, "since start", stats, baselines)
        render_totals(console, totals, aggregator.format)
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m canary_stream.run_cmd run ...`` until cli.py registers the command."""
    parser = argparse.ArgumentParser(prog="canary-stream")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    with contextlib.suppress(BrokenPipeError):
        rc: int = args.func(args)
        return rc
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
