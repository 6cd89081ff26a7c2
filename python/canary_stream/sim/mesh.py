"""A simulated service mesh: synthetic requests split between primary and canary by the router's
current routes, written as real Istio JSON access-log lines (Envoy's typed JSON encoding).

Lines are built without per-line Python: every request is a row of a byte matrix copied from a
pre-rendered template (version, request kind), whose variable slots (milliseconds of the start
time, duration, request id, client port) are filled with numpy-drawn digits; unused slot bytes hold
a sentinel that is dropped when the matrix is flattened. The result is byte-for-byte what an Istio
sidecar with ``accessLogEncoding: JSON`` writes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from canary_stream.router.base import Routes

PAD = 0  # sentinel byte of unused slot positions (never appears in a line)
Z_99 = 2.3263478740408408  # standard normal quantile at 0.99

PRIMARY, CANARY, MIRROR = 0, 1, 2  # template rows per version; MIRROR = shadow copies served by the canary


@dataclass(frozen=True)
class Latency:
    """Lognormal latency in ms given by its median and its p99."""

    p50_ms: float = 20.0
    p99_ms: float = 80.0

    @property
    def sigma(self) -> float:
        return math.log(self.p99_ms / self.p50_ms) / Z_99

    def scaled(self, factor: float) -> Latency:
        """The same shape, every request `factor` times slower."""
        return Latency(self.p50_ms * factor, self.p99_ms * factor)


@dataclass(frozen=True)
class MeshConfig:
    """Traffic and behaviour of the two versions.

    `rps`: total request rate (Poisson), split by the routes. The canary behaves like the primary
    until its fault starts: at its first request, or once its weight reaches `fault_at_weight`;
    from then on it fails `canary_error_rate` of its requests and is `latency_factor` times slower.
    `match_share`: for A/B testing, the share of requests whose user matches the canary route (only
    those follow the route's weights; None = every request does). `canary_direct_rps`: requests
    sent straight to `<svc>-canary` (a load tester), whatever the weights."""

    rps: float = 100.0
    primary_error_rate: float = 0.001
    canary_error_rate: float = 0.001
    latency: Latency = field(default_factory=Latency)
    latency_factor: float = 1.0
    fault_at_weight: int | None = None
    match_share: float | None = None
    canary_direct_rps: float = 0.0
    namespace: str = "test"
    service: str = "podinfo"
    port: int = 9898

    @property
    def faulty(self) -> bool:
        """Whether the canary differs from the primary once its fault starts."""
        return self.canary_error_rate != self.primary_error_rate or self.latency_factor != 1.0


# One request kind per row: (method, path, protocol, user agent, bytes received, bytes sent).
_KINDS: tuple[tuple[str, str, str, str, int, int], ...] = (
    ("GET", "/", "HTTP/1.1", "curl/8.7.1", 0, 396),
    ("GET", "/api/info", "HTTP/2", "okhttp/4.12.0", 0, 412),
    ("POST", "/api/echo", "HTTP/1.1", "k6/0.55.0 (https://k6.io/)", 64, 64),
    ("GET", "/status/200", "HTTP/1.1", "Go-http-client/1.1", 0, 25),
)
# Failures: (response code, response flags, details, bytes sent).
_FAILURES: tuple[tuple[int, str, str, int], ...] = (
    (500, "-", "via_upstream", 21),
    (503, "UF", "upstream_reset_before_response_started{connection_failure}", 91),
)
N_KINDS = len(_KINDS)
N_ROWS_PER_VERSION = N_KINDS + len(_FAILURES)

# Variable slots, in line order; the widths are the most bytes a value takes.
_SLOTS = {"ms": 3, "duration": 7, "ust": 7, "request_id": 36, "port": 5}
_MARK = "\x01{}\x01"


def _json_line(version: int, row: int, cfg: MeshConfig) -> str:
    """One template line with slot markers where values go."""
    svc, ns, port = cfg.service, cfg.namespace, cfg.port
    suffix = "primary" if version == PRIMARY else "canary"
    subnet = 1 if version == PRIMARY else 2
    authority = f"{svc}.{ns}:{port}" + ("-shadow" if version == MIRROR else "")
    if row < N_KINDS:
        method, path, proto, agent, received, sent = _KINDS[row]
        code, flags, details = 200, "-", "via_upstream"
    else:
        method, path, proto, agent, received, _ = _KINDS[row % 2]
        code, flags, details, sent = _FAILURES[row - N_KINDS]
    upstream_host = "null" if flags == "UF" else f'"10.244.{subnet}.{17 + row % 3}:{port}"'
    ust = "null" if flags == "UF" else '"' + _MARK.format("ust") + '"'
    return (
        '{"start_time":"' + _MARK.format("date") + _MARK.format("ms") + 'Z","route_name":"default",'
        f'"method":"{method}","path":"{path}","protocol":"{proto}","response_code":{code},'
        f'"response_flags":"{flags}","response_code_details":"{details}",'
        '"connection_termination_details":null,'
        f'"bytes_received":{received},"bytes_sent":{sent},"duration":' + _MARK.format("duration") + ","
        f'"upstream_service_time":{ust},"x_forwarded_for":null,"user_agent":"{agent}",'
        '"request_id":"' + _MARK.format("request_id") + '",'
        f'"authority":"{authority}","upstream_host":{upstream_host},'
        f'"upstream_cluster":"outbound|{port}||{svc}-{suffix}.{ns}.svc.cluster.local",'
        f'"upstream_local_address":"10.244.0.{9 + version}:38412",'
        f'"downstream_local_address":"10.96.0.{40 + version}:{port}",'
        '"downstream_remote_address":"10.244.0.' + str(9 + version) + ":" + _MARK.format("port") + '",'
        '"requested_server_name":null,"upstream_transport_failure_reason":null}\n'
    )


class _Templates:
    """Every template row cut at its slots into blocks: block k of all rows is a matrix padded with
    PAD to its widest row, so that a batch of lines is one row gather per block plus the slot
    digits, concatenated column-wise. Slot order is the same in every row; a row without a slot
    (`upstream_service_time` is null on a connection failure) gets PAD there."""

    def __init__(self, cfg: MeshConfig) -> None:
        texts = [_json_line(v, r, cfg) for v in (PRIMARY, CANARY, MIRROR) for r in range(N_ROWS_PER_VERSION)]
        self.slots = [k for k in ("date", *_SLOTS) if all(_MARK.format(k) in t for t in texts)]
        blocks: list[list[bytes]] = [[] for _ in range(len(_SLOTS) + 2)]
        has: dict[str, list[bool]] = {k: [] for k in _SLOTS}
        for text in texts:
            parts = text.split("\x01")
            names = parts[1::2]
            for k in _SLOTS:
                has[k].append(k in names)
            # Blocks between the slots every row has; an optional slot missing from a row joins its
            # block boundary as an empty slot.
            pieces = parts[0::2]
            order = ["date", *_SLOTS]
            b, j = 0, 0
            for k in order:
                if j < len(names) and names[j] == k:
                    blocks[b].append(pieces[j].encode())
                    j += 1
                else:
                    blocks[b].append(b"")
                b += 1
            blocks[b].append(pieces[j].encode())
        self.order = ["date", *_SLOTS]
        self.blocks = [_padded(bs) for bs in blocks]
        self.head = bytes(self.blocks[0][0])  # '{"start_time":"', the same in every row
        self.has = {k: np.asarray(v, dtype=bool) for k, v in has.items()}


def _padded(rows: list[bytes]) -> npt.NDArray[np.uint8]:
    """Byte strings as a matrix, right-padded with PAD."""
    w = max(len(r) for r in rows)
    mat = np.full((len(rows), w), PAD, dtype=np.uint8)
    for i, r in enumerate(rows):
        mat[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
    return mat


def _digit_table(limit: int, width: int) -> npt.NDArray[np.uint8]:
    """Row v: the decimal digits of v, left-aligned in `width` columns, PAD after the last."""
    v = np.arange(limit, dtype=np.int64)
    n_digits = np.ones(limit, dtype=np.int64)
    for k in range(1, width):
        n_digits += v >= 10**k
    cols = np.arange(width)
    power = np.maximum(n_digits[:, None] - 1 - cols[None, :], 0)  # column c: digit of 10^(n-1-c)
    digit = (v[:, None] // 10**power) % 10
    return np.where(cols[None, :] < n_digits[:, None], 48 + digit, PAD).astype(np.uint8)


MAX_DURATION_MS = 100_000  # longer requests are written as MAX - 1 ms (beyond any timeout here)
# Digits of 0 .. MAX - 1, plus an all-PAD row at MAX (an absent value).
_DIGITS = np.vstack(
    [_digit_table(MAX_DURATION_MS, _SLOTS["duration"]), np.full((1, _SLOTS["duration"]), PAD, np.uint8)]
)


def _request_id_pool(size: int, seed: int = 7) -> npt.NDArray[np.uint8]:
    """`size` random version-4 UUIDs as 36-byte rows (a batch takes a slice at a random offset)."""
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    ids = hex_digits[np.random.default_rng(seed).integers(0, 16, (size, 36))]
    ids[:, [8, 13, 18, 23]] = ord("-")
    ids[:, 14] = ord("4")
    return ids


_REQUEST_IDS = _request_id_pool(1 << 16)


@dataclass
class MeshEvents:
    """What happened on the wire (event time, seconds since the epoch)."""

    first_canary_request: float | None = None
    fault_started: float | None = None  # when the fault turned on
    first_fault_request: float | None = None  # first canary request served with the fault on
    requests: dict[str, int] = field(default_factory=lambda: {"primary": 0, "canary": 0, "mirror": 0})


class SimulatedMesh:
    """Emits one second of traffic at a time as Istio JSON access-log lines."""

    def __init__(self, config: MeshConfig, seed: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.events = MeshEvents()
        self._t = _Templates(config)
        self._fault_on = False
        self.lines = 0
        self.build_seconds = 0.0

    def new_release(self, config: MeshConfig) -> None:
        """A new canary version behaving as `config` says: its fault and first-request times start over."""
        self.config = config
        self._fault_on = False
        self.events = MeshEvents()

    def fault_active(self) -> bool:
        """Whether the canary currently serves with its fault."""
        return self._fault_on

    def _update_fault(self, second: float, routes: Routes, canary_gets_traffic: bool) -> None:
        if self._fault_on:
            return
        w = self.config.fault_at_weight
        if (w is None and canary_gets_traffic) or (w is not None and routes.canary_weight >= w):
            self._fault_on = True
            self.events.fault_started = second

    def emit(self, second: int, routes: Routes) -> bytes:
        """The lines of requests that start in [second, second + 1) (epoch seconds), routed by `routes`."""
        t0 = time.perf_counter()
        cfg, rng = self.config, self.rng
        n = int(rng.poisson(cfg.rps))
        # Where each live request goes: the canary route applies to matching users only (A/B).
        if routes.mirrored:
            to_canary = np.zeros(n, dtype=bool)
        else:
            p = routes.canary_weight / 100.0
            if cfg.match_share is not None:
                p *= cfg.match_share
            to_canary = rng.random(n) < p
        version = np.where(to_canary, CANARY, PRIMARY).astype(np.int64)
        ms = rng.integers(0, 1000, n)
        # Mirrored copies of primary requests (Istio appends "-shadow" to their authority).
        if routes.mirrored:
            share = (100 if routes.mirror_weight is None else routes.mirror_weight) / 100.0
            copies = np.flatnonzero(rng.random(n) < share)
            version = np.concatenate([version, np.full(len(copies), MIRROR, dtype=np.int64)])
            ms = np.concatenate([ms, ms[copies]])
        n_direct = int(rng.poisson(cfg.canary_direct_rps)) if cfg.canary_direct_rps > 0 else 0
        if n_direct:
            version = np.concatenate([version, np.full(n_direct, CANARY, dtype=np.int64)])
            ms = np.concatenate([ms, rng.integers(0, 1000, n_direct)])
        order = np.argsort(ms, kind="stable")
        version, ms = version[order], ms[order]
        n = len(version)
        served_by_canary = version != PRIMARY
        n_canary = int(served_by_canary.sum())
        if n_canary and self.events.first_canary_request is None:
            self.events.first_canary_request = second + float(ms[np.argmax(served_by_canary)]) / 1000.0
        self._update_fault(second, routes, n_canary > 0)
        faulty = served_by_canary & self._fault_on
        if faulty.any() and self.events.first_fault_request is None and cfg.faulty:
            self.events.first_fault_request = second + float(ms[np.argmax(faulty)]) / 1000.0

        error_rate = np.where(faulty, cfg.canary_error_rate, cfg.primary_error_rate)
        failed = rng.random(n) < error_rate
        lat = cfg.latency
        dur = rng.lognormal(math.log(lat.p50_ms), lat.sigma, n) * np.where(faulty, cfg.latency_factor, 1.0)
        duration = dur.astype(np.int64)  # Envoy's %DURATION% is whole milliseconds
        kind = np.where(failed, N_KINDS + rng.integers(0, len(_FAILURES), n), rng.integers(0, N_KINDS, n))
        rows = version * N_ROWS_PER_VERSION + kind

        out = self._render(second, rows, ms, np.minimum(duration, MAX_DURATION_MS - 1))

        ev = self.events.requests
        ev["primary"] += int(n - n_canary)
        n_mirror = int((version == MIRROR).sum())
        ev["mirror"] += n_mirror
        ev["canary"] += n_canary - n_mirror
        self.lines += n
        self.build_seconds += time.perf_counter() - t0
        return out

    def _render(
        self,
        second: int,
        rows: npt.NDArray[np.int64],
        ms: npt.NDArray[np.int64],
        duration: npt.NDArray[np.int64],
    ) -> bytes:
        """The lines of template `rows` with their slot values, as bytes."""
        tm, rng, n = self._t, self.rng, len(rows)
        head = np.empty((n, tm.blocks[0].shape[1] + 20), dtype=np.uint8)  # '{"start_time":"' + date
        head[:] = np.frombuffer(
            tm.head + time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode(), np.uint8
        )
        at = int(rng.integers(0, len(_REQUEST_IDS) - n)) if n < len(_REQUEST_IDS) else 0
        # upstream_service_time: the duration minus the proxy's own millisecond, as Envoy reports it;
        # rows without it (null) take the all-PAD row.
        ust = np.where(tm.has["ust"][rows], np.maximum(duration - 1, 0), MAX_DURATION_MS)
        values = {
            "ms": _DIGITS[1000 + ms, 1:4],  # "1xyz" without its leading 1: zero-padded milliseconds
            "duration": _DIGITS[duration],
            "ust": _DIGITS[ust],
            "request_id": _REQUEST_IDS[at : at + n] if at else _REQUEST_IDS[np.arange(n) % len(_REQUEST_IDS)],
            "port": _DIGITS[rng.integers(32768, 61000, n), :5],
        }
        parts: list[npt.NDArray[np.uint8]] = [head]
        for i, k in enumerate(tm.order):
            if i > 0:
                parts.append(values[k])
            parts.append(tm.blocks[i + 1][rows])
        flat = np.concatenate(parts, axis=1).ravel()
        return bytes(flat[flat != PAD].tobytes())

    @property
    def lines_per_second(self) -> float:
        """Lines built per second of CPU spent in `emit` (speed of the generator itself)."""
        return self.lines / self.build_seconds if self.build_seconds else 0.0
