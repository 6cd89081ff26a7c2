"""Typed Python API over the Rust core: configure an aggregator, feed it bytes or Arrow
batches, and take snapshots of per-version figures over sliding windows.

The heavy lifting (splitting lines, parsing, attribution, aggregation) happens in Rust with
the GIL released; nothing here runs per line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from canary_stream import _native

if TYPE_CHECKING:
    from typing_extensions import Buffer

Format = Literal["auto", "istio-json", "istio-text", "linkerd-json", "linkerd-apache", "nginx", "ndjson"]
Unit = Literal["ns", "us", "ms", "s"]
Rule = Literal["field", "cluster_subset", "host_suffix", "sni_subset", "host_map", "pod"]

FORMATS: tuple[str, ...] = tuple(_native.FORMATS)
FLAG_NAMES: tuple[str, ...] = tuple(_native.FLAG_NAMES)
CorePanic = _native.CorePanic
#: State of one Envoy gRPC access-log stream (the node identity from its first message).
AlsStream = _native.AlsStream


@dataclass(frozen=True)
class FieldMapping:
    """Which top-level keys of a generic NDJSON line hold what (format ``ndjson``)."""

    status: str = "status"
    duration: str = "duration_ms"
    duration_unit: Unit = "ms"
    timestamp: str = "timestamp"
    timestamp_unit: Unit = "ms"
    target: str = "target"
    version: str = "version"
    grpc_status: str = "grpc_status"
    flags: str = ""
    upstream_cluster: str = ""
    sni: str = ""
    upstream_host: str = ""
    authority: str = ""


@dataclass(frozen=True)
class Attribution:
    """How the serving version is told (see rust/src/attribution.rs for the rules)."""

    rules: tuple[Rule, ...] = ("field", "cluster_subset", "host_suffix", "sni_subset", "host_map", "pod")
    per_target: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    suffixes: tuple[tuple[str, str], ...] = (("-canary", "canary"), ("-primary", "primary"))
    cluster_domain: str = "svc.cluster.local"
    default_version: str | None = None
    pod_plain_version: str = "canary"


@dataclass(frozen=True)
class Classification:
    """Which requests fail. ``preset="flagger"`` counts only 5xx, like Flagger's
    request-success-rate; the default also fails status 0 (no response) and server-side
    gRPC codes. ``failure_status`` / ``grpc_failure`` replace the preset's sets."""

    preset: Literal["default", "flagger"] = "default"
    failure_status: tuple[int, ...] | None = None
    grpc_failure: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Windowing:
    """Event-time windowing and memory bounds of the aggregator."""

    ring_secs: int = 600
    allowed_lateness_ms: int = 10_000
    max_future_ms: int = 3_600_000
    max_keys: int = 10_000
    idle_evict_ms: int = 900_000
    thresholds_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything an :class:`Aggregator` needs. Invalid values raise ``ValueError``
    naming the field (e.g. ``aggregate.ring_secs: ...``)."""

    format: Format = "auto"
    max_line_bytes: int = 64 * 1024
    wrapping: Literal["auto", "none", "cri", "docker"] = "auto"
    mapping: FieldMapping = field(default_factory=FieldMapping)
    attribution: Attribution = field(default_factory=Attribution)
    classification: Classification = field(default_factory=Classification)
    windowing: Windowing = field(default_factory=Windowing)

    def to_native(self) -> dict[str, Any]:
        attribution = asdict(self.attribution)
        attribution["rules"] = list(self.attribution.rules)
        attribution["per_target"] = {k: list(v) for k, v in self.attribution.per_target.items()}
        attribution["suffixes"] = [list(s) for s in self.attribution.suffixes]
        classifier: dict[str, Any] = {"preset": self.classification.preset}
        if self.classification.failure_status is not None:
            classifier["failure_status"] = list(self.classification.failure_status)
        if self.classification.grpc_failure is not None:
            classifier["grpc_failure"] = list(self.classification.grpc_failure)
        aggregate = asdict(self.windowing)
        aggregate["thresholds_ms"] = list(self.windowing.thresholds_ms)
        return {
            "format": self.format,
            "max_line_bytes": self.max_line_bytes,
            "wrapping": self.wrapping,
            "mapping": asdict(self.mapping),
            "attribution": attribution,
            "classifier": classifier,
            "aggregate": aggregate,
        }


@dataclass(frozen=True)
class Source:
    """Where a buffer came from; fills in what the lines do not say."""

    pod: str = ""
    namespace: str = ""
    target: str = ""
    version: str = ""

    _POD_LOG = re.compile(r"/var/log/pods/(?P<ns>[^_/]+)_(?P<pod>[^_/]+)_[^/]+/")
    _CONTAINER_LOG = re.compile(r"/var/log/containers/(?P<pod>[^_/]+)_(?P<ns>[^_/]+)_")

    @classmethod
    def from_path(cls, path: str) -> Source:
        """Pod and namespace from a kubelet log path
        (``/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`` or
        ``/var/log/containers/<pod>_<ns>_<container>-<id>.log``); empty otherwise."""
        m = cls._POD_LOG.search(path) or cls._CONTAINER_LOG.search(path)
        if m is None:
            return cls()
        return cls(pod=m.group("pod"), namespace=m.group("ns"))


@dataclass(frozen=True)
class BucketPoint:
    """One 1 s bucket of a snapshot series."""

    start_ms: int
    requests: int
    successes: int
    failures: int
    latency_count: int
    exceed: tuple[int, ...]


@dataclass(frozen=True)
class VersionStats:
    """Figures of one (target, version) over one window."""

    target: str
    version: str
    start_ms: int
    end_ms: int
    requests: int
    successes: int
    failures: int
    status_0: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    rps: float
    success_rate: float | None
    latency_count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    min_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    flags: Mapping[str, int]
    exceed: tuple[tuple[float, int], ...]
    series: tuple[BucketPoint, ...] = ()
    #: Exact requests per HTTP status code (200 included), ascending by code.
    status_codes: Mapping[int, int] = field(default_factory=dict)
    #: Requests whose code is not in ``status_codes``: rare, it takes more than 14
    #: distinct non-200 codes in one second of one version.
    status_codes_overflow: int = 0

    @classmethod
    def from_native(cls, d: Mapping[str, Any]) -> VersionStats:
        values = dict(d)
        values["flags"] = dict(d["flags"])
        values["exceed"] = tuple((float(t), int(n)) for t, n in d["exceed"])
        values["status_codes"] = {int(c): int(n) for c, n in d.get("status_codes", {}).items()}
        values["series"] = tuple(
            BucketPoint(
                start_ms=p["start_ms"],
                requests=p["requests"],
                successes=p["successes"],
                failures=p["failures"],
                latency_count=p["latency_count"],
                exceed=tuple(p["exceed"]),
            )
            for p in d["series"]
        )
        return cls(**values)

    def to_dict(self, series: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = dict(self.flags)
        d["exceed"] = [list(e) for e in self.exceed]
        d["status_codes"] = dict(self.status_codes)
        if not series:
            d.pop("series")
        return d


@dataclass(frozen=True)
class Totals:
    """Running totals of an aggregator: what came in and why lines were skipped."""

    bytes: int
    lines: int
    accepted: int
    malformed: Mapping[str, int]
    skipped: Mapping[str, int]
    pending_bytes: int

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


@dataclass(frozen=True)
class FeedResult:
    lines: int
    accepted: int


class _Serialised:
    """Calls into the native pipeline one at a time. `feed` runs with the GIL released, and PyO3
    refuses a second borrow of the pipeline meanwhile ("Already mutably borrowed"): with the lock a
    reader on another thread (a snapshot for a verdict while a source's batch is being folded)
    waits for the feed to finish instead of failing."""

    def __init__(self, native: Any) -> None:
        self._native = native
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            attr = getattr(self._native, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


class Aggregator:
    """Parse access-log bytes and keep per-(target, version) windowed figures.

    Safe to share between threads: calls are serialised (a snapshot waits for a running `feed`).
    """

    def __init__(self, config: AggregatorConfig | None = None) -> None:
        self.config = config or AggregatorConfig()
        # Typed as the pipeline itself: the wrapper forwards every call unchanged.
        self._native = cast("_native.Pipeline", _Serialised(_native.Pipeline(self.config.to_native())))

    def feed(self, data: Buffer, *, source: Source | None = None, now_ms: int | None = None) -> FeedResult:
        """Feed any number of lines; a trailing partial line waits for the next call.
        ``now_ms`` (default: wall clock) stamps lines without a timestamp. ``data`` is ``bytes``
        or any C-contiguous buffer of bytes (a ``bytearray``, a ``memoryview``, the Kafka
        fetcher's ``KafkaLines``), read in place with the GIL released: nothing may change it
        until the call returns."""
        s = source or Source()
        lines, accepted = self._native.feed(
            data, pod=s.pod, namespace=s.namespace, target=s.target, version=s.version, now_ms=now_ms
        )
        return FeedResult(lines, accepted)

    def finish(self, *, source: Source | None = None, now_ms: int | None = None) -> FeedResult:
        """End of stream: process a final line that had no newline."""
        s = source or Source()
        lines, accepted = self._native.finish(
            pod=s.pod, namespace=s.namespace, target=s.target, version=s.version, now_ms=now_ms
        )
        return FeedResult(lines, accepted)

    def feed_envoy_als(
        self, data: bytes, stream: _native.AlsStream, *, now_ms: int | None = None
    ) -> FeedResult:
        """Fold gRPC-framed Envoy ``StreamAccessLogsMessage`` bytes of one ALS stream (see
        :func:`grpc_frame`); every HTTP entry counts as a line. ``stream`` remembers the node
        identity sent in the stream's first message (rust/src/als.rs)."""
        entries, accepted = self._native.feed_als(data, stream, now_ms=now_ms)
        return FeedResult(entries, accepted)

    def snapshot(
        self,
        window_s: float | None = None,
        *,
        end_ms: int | None = None,
        target: str | None = None,
        series: bool = False,
    ) -> list[VersionStats]:
        """Figures per (target, version) over the last ``window_s`` seconds of event time
        ending at ``end_ms`` (default: the newest bucket); ``window_s=None`` covers
        everything since each key appeared."""
        window_ms = None if window_s is None else round(window_s * 1000)
        raw = self._native.snapshot(window_ms, end_ms=end_ms, target=target, series=series)
        return [VersionStats.from_native(d) for d in raw]

    def totals(self) -> Totals:
        t = self._native.totals()
        return Totals(
            bytes=t["bytes"],
            lines=t["lines"],
            accepted=t["accepted"],
            malformed=dict(t["malformed"]),
            skipped=dict(t["skipped"]),
            pending_bytes=t["pending_bytes"],
        )

    @property
    def format(self) -> str | None:
        """The format in use; ``None`` until auto-detection has seen a line."""
        return self._native.format

    @property
    def watermark_ms(self) -> int | None:
        """Newest event time seen (ms since the epoch)."""
        return self._native.watermark_ms

    def set_host(self, host: str, version: str) -> None:
        """Attribute requests served by ``host`` (``ip`` or ``ip:port``) to ``version``."""
        self._native.set_host(host, version)

    def remove_host(self, host: str) -> bool:
        return self._native.remove_host(host)

    def replace_hosts(self, hosts: Mapping[str, str]) -> None:
        self._native.replace_hosts(dict(hosts))

    def set_thresholds(self, target: str, thresholds_ms: Sequence[float]) -> None:
        """Latency thresholds whose exceedances are counted for ``target`` from now on
        (resets that target's exceedance counters)."""
        self._native.set_thresholds(target, [float(t) for t in thresholds_ms])

    def evict_idle(self, now_ms: int) -> int:
        """Drop keys without events for ``idle_evict_ms``; returns how many."""
        return self._native.evict_idle(now_ms)

    def memory(self) -> dict[str, Any]:
        """Bytes held: total and per key."""
        return self._native.memory()

    def ingest_arrow(
        self, data: Any, mapping: Mapping[str, Any] | None = None, now_ms: int | None = None
    ) -> dict[str, Any]:
        """Fold an Arrow table / record batch / Polars DataFrame (anything with
        ``__arrow_c_stream__`` or ``__arrow_c_array__``) into the aggregator without
        per-row Python work. ``mapping`` names the columns (target, version, status,
        latency, latency_unit, timestamp, success)."""
        return self._native.ingest_arrow(data, dict(mapping) if mapping else None, now_ms)


def grpc_frame(messages: Sequence[bytes]) -> bytes:
    """Messages in gRPC's length-prefixed framing (flag 0, big-endian u32 length), the input
    of :meth:`Aggregator.feed_envoy_als`."""
    parts: list[bytes] = []
    for m in messages:  # one copy of each message (the join)
        parts.append(b"\0" + len(m).to_bytes(4, "big"))
        parts.append(m)
    return b"".join(parts)


def detect_format(sample: bytes) -> str | None:
    """Guess the access-log format of a sample of lines."""
    return _native.detect_format(sample)


def parse_lines(data: bytes, format: str, mapping: FieldMapping | None = None) -> list[dict[str, Any]]:
    """Parse lines without aggregating (debugging and tests); one dict per non-blank line."""
    return _native.parse_lines(data, format, asdict(mapping) if mapping else None)


def generate(format: str, lines: int = 10_000, seed: int = 42, **overrides: Any) -> bytes:
    """Deterministic, realistic access-log lines in ``format`` (a canary rollout of
    ``podinfo.test`` unless ``services`` is given). Other keys: ``start_ms``, ``rps``,
    ``attribution`` (subset | host_suffix | sni), ``malformed_rate``, ``out_of_order_ms``,
    ``json_all_strings``, ``tcp_rate``, ``clients`` (mixed: browsers and tools, the
    default | mesh: service-to-service user agents), ``services`` (see rust/src/generator)."""
    return _native.generate({"format": format, "lines": lines, "seed": seed, **overrides})


def generate_with_truth(
    format: str, lines: int = 10_000, seed: int = 42, **overrides: Any
) -> tuple[bytes, dict[str, list[Any]]]:
    """Like :func:`generate`, plus what every line means (columns: ts_ms, target,
    version, status, grpc_status, latency_ms, flags, kind, malformed)."""
    return _native.generate_with_truth({"format": format, "lines": lines, "seed": seed, **overrides})
