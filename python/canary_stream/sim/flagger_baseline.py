"""Flagger's analysis algorithm (pkg/controller/scheduler.go, `advanceCanary`) replayed over the
simulated stream, as the benchmarks' peer.

One tick every `analysis.interval` (at least 10 s). Each tick after the pre-rollout one checks
point estimates of the canary alone over each metric's window: `request-success-rate` (% of
non-5xx, from the same aggregator snapshot the judge reads) against `thresholdRange.min`, and
`request-duration` (p99 in ms, truncated to an integer) against `thresholdRange.max`. A window
without requests is a failed check (Flagger's "no values found"). Failed checks add up over the
whole run (not consecutive) and roll back at the start of the tick after the one that reached
`threshold`. A passing tick advances the weight by `stepWeight` (or along `stepWeights`); the tick
after `maxWeight` promotes, then Promoting -> Finalising -> Succeeded one tick each (§1.12-1.13).

Favourable to Flagger: no Prometheus scrape or export delay and exact quantiles; the change is
noticed at t = 0 rather than up to one interval later."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from canary_stream.core import Aggregator, VersionStats
from canary_stream.router.base import Routes
from canary_stream.sim.mesh import MeshConfig, SimulatedMesh
from canary_stream.sim.result import SimResult
from canary_stream.spec.duration import parse_duration
from canary_stream.spec.model import Canary

MIN_INTERVAL_S = 10.0  # Flagger clamps analysis.interval to at least 10 s


@dataclass
class Check:
    """One metric check on one tick."""

    at: float
    metric: str
    value: float | None
    ok: bool
    message: str


@dataclass
class FlaggerBaseline:
    """Flagger's per-tick state machine for the canary (weights) strategy."""

    canary: Canary
    aggregator: Aggregator
    target: str
    phase: str = "Initialized"
    canary_weight: int = 0
    failed_checks: int = 0
    iterations: int = 0
    checks: list[Check] = field(default_factory=list)
    halt: str = ""

    @property
    def interval_s(self) -> float:
        a = self.canary.spec.analysis
        return max(MIN_INTERVAL_S, parse_duration(a.interval if a else "60s"))

    @property
    def routes(self) -> Routes:
        return Routes(primary_weight=100 - self.canary_weight, canary_weight=self.canary_weight)

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def tick(self, now: float) -> None:
        """One `advanceCanary` at `now` (seconds since the epoch, event time)."""
        a = self.canary.spec.analysis
        assert a is not None, "the baseline replays an analysis"
        if self.phase == "Initialized":
            self.phase = "Progressing"  # new revision detected, canary scaled up; end of tick
            return
        if self.phase == "Promoting":
            self.canary_weight = 0  # stepWeightPromotion unset: all traffic back to the primary
            self.phase = "Finalising"
            return
        if self.phase == "Finalising":
            self.phase = "Succeeded"
            return
        if self.phase != "Progressing":
            return
        if self.failed_checks >= a.max_failed_checks:
            self.canary_weight = 0
            self.phase = "Failed"
            return
        if self.canary_weight == 0 and self.iterations == 0:
            pass  # the pre-rollout tick: metrics are not evaluated (no traffic yet)
        elif not self._analysis(now):
            self.failed_checks += 1
            return
        self._advance(a.max_weight, a.step_weight, a.step_weights)

    def _advance(self, max_weight: int | None, step: int | None, steps: list[int] | None) -> None:
        limit = max_weight or (steps[-1] if steps else 100)
        if self.canary_weight >= limit:
            self.phase = "Promoting"  # confirm-promotion approved; primary gets the canary's spec
            return
        if steps:
            nxt = [w for w in steps if w > self.canary_weight]
            self.canary_weight = nxt[0] if self.canary_weight in [0, *steps] and nxt else 100
        else:
            self.canary_weight = min(100, self.canary_weight + (step or 10))

    def _analysis(self, now: float) -> bool:
        """Built-in metrics in spec order; the first failing check stops the tick."""
        a = self.canary.spec.analysis
        assert a is not None
        for m in a.metrics:
            if m.name not in ("request-success-rate", "request-duration") or m.stream is not None:
                continue  # the baseline replays only the two built-in checks
            canary = self._canary_stats(now, parse_duration(m.interval))
            check = _check(m.name, canary, m.threshold_range.min if m.threshold_range else None,
                           m.threshold_range.max if m.threshold_range else m.threshold, now)  # fmt: skip
            self.checks.append(check)
            if not check.ok:
                self.halt = check.message
                return False
        return True

    def _canary_stats(self, now: float, window_s: float) -> VersionStats | None:
        snap = self.aggregator.snapshot(window_s, end_ms=int(now * 1000), target=self.target)
        return next((s for s in snap if s.version == "canary"), None)


def _check(name: str, s: VersionStats | None, lo: float | None, hi: float | None, now: float) -> Check:
    """Flagger's evaluation of one built-in metric (§4.2-4.3): bounds inclusive, no data fails."""
    if s is None or s.requests == 0:
        return Check(now, name, None, False, f"Halt advancement no values found for metric {name}")
    if name == "request-success-rate":
        value = (s.requests - s.status_5xx) / s.requests * 100.0
        ok = (lo is None or value >= lo) and (hi is None or value <= hi)
        return Check(now, name, value, ok, f"Halt advancement success rate {value:.2f}% < {lo}%")
    if s.p99_ms is None or math.isnan(s.p99_ms):
        return Check(now, name, None, False, f"Halt advancement no values found for metric {name}")
    value = float(int(s.p99_ms))  # Flagger truncates the duration to whole milliseconds
    ok = (lo is None or value >= lo) and (hi is None or value <= hi)
    return Check(now, name, value, ok, f"Halt advancement request duration {value:.0f}ms > {hi}ms")


def run_flagger(
    canary: Canary,
    config: MeshConfig,
    *,
    seed: int = 0,
    warmup_s: int = 30,
    max_s: float = 6 * 3600,
    start: float = 1_767_225_600.0,
) -> SimResult:
    """Flagger's algorithm over the same simulated stream as `engine.simulate` (same mesh, seed,
    warm-up and aggregator): ticks at the new revision and every interval after it."""
    from canary_stream.sim.engine import mesh_for, new_aggregator, target_of

    mesh = SimulatedMesh(mesh_for(canary, config), seed=seed)
    agg = new_aggregator()
    flagger = FlaggerBaseline(canary, agg, target_of(canary))
    weights: list[tuple[float, int]] = [(0.0, 0)]
    lines = 0
    now = start
    next_tick = start + warmup_s  # the new revision is noticed at once (favourable to Flagger)
    decided: float | None = None
    while now - start < max_s:
        if now + 1e-9 >= next_tick:
            before = flagger.canary_weight
            flagger.tick(now)
            next_tick += flagger.interval_s
            if flagger.canary_weight != before:
                weights.append((now - start, flagger.canary_weight))
            if flagger.finished:
                decided = now
                break
        if flagger.phase in ("Promoting", "Finalising"):
            now = next_tick  # promotion has begun: nothing reads the traffic until the next tick
            continue
        second = int(now)
        lines += agg.feed(mesh.emit(second, flagger.routes), now_ms=second * 1000).accepted
        now += 1.0
    ev = mesh.events
    first = ev.first_canary_request
    return SimResult(
        phase=flagger.phase,
        decision_s=None if decided is None or first is None else decided - first,
        first_fault_s=None
        if ev.first_fault_request is None or first is None
        else ev.first_fault_request - first,
        weights=weights,
        verdicts=[
            {"t": round(c.at - start, 3), "metric": c.metric, "value": c.value, "ok": c.ok}
            for c in flagger.checks
        ],
        lines=lines,
        simulated_s=now - start,
        reason=flagger.halt if flagger.phase == "Failed" else "",
    )
