"""What the scheduler calls: the judge and the metric checks of one canary over the aggregator.

Overall decision of :meth:`Analyzer.verdict`:
``fail`` when a harm test or the SLO guard fires (roll back at once); ``inconclusive`` on a
sample-ratio mismatch or without canary data this step; ``pass`` when the step's minimum exposure
is met, the no-harm tests concluded and every metric check passes; ``continue`` otherwise.
Metric checks are listed in ``Verdict.tests`` with their own decision: the scheduler counts a
failing one as a Flagger failed check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace

from canary_stream.analysis.checks import (
    check_metric,
    exceedance_thresholds,
    metric_version,
    parse_interval,
)
from canary_stream.analysis.judge import BUCKET_MS, Judge, JudgeConfig, JudgeResult
from canary_stream.analysis.verdict import Decision, TestResult, Verdict, VersionFigures
from canary_stream.core import Aggregator, VersionStats
from canary_stream.router.base import Routes
from canary_stream.spec.model import Canary, Metric, StreamMetric

PRIMARY = "primary"
CANARY = "canary"


def judge_config_for(canary: Canary) -> JudgeConfig:
    """Judge settings from ``analysis`` and ``analysis.judge``: falseRollbackRate (alpha),
    promotionErrorRate (beta), noHarmRatio, minRequests, srm; the SLO error rate from
    ``judge.sloErrorRate`` or the request-success-rate minimum (99 -> 1 %); the dwell from
    ``interval``; no SRM check for A/B routing (header matches send all matching traffic to the
    canary). ``judge.lowTrafficPromotion`` (dwell periods), when the spec has it, opts in to
    advancing a step on the metric checks alone when traffic is too low to judge."""
    analysis = canary.spec.analysis
    if analysis is None:
        return JudgeConfig()
    j = analysis.judge
    slo = analysis.effective_slo_error_rate()
    slo = JudgeConfig.slo_error_rate if slo is None else min(max(slo, 1e-4), 0.4)
    try:
        dwell = max(parse_interval(analysis.interval), 1.0)
    except ValueError:
        dwell = 60.0
    return JudgeConfig(
        alpha=j.false_rollback_rate,
        beta=j.promotion_error_rate,
        no_harm_ratio=j.no_harm_ratio,
        slo_error_rate=slo,
        min_requests=j.min_requests,
        dwell_s=dwell,
        low_traffic_promotion_dwells=j.low_traffic_promotion,
        srm=j.srm and not analysis.match,
    )


class Analyzer:
    """Judge + metric checks of ``canary`` on ``target`` (e.g. ``podinfo.test``) in ``aggregator``.

    ``templates`` maps stream metric template names (``name`` or ``namespace/name``) to their
    :class:`StreamMetric`. Times are seconds since the epoch, in event time."""

    def __init__(
        self,
        canary: Canary,
        aggregator: Aggregator,
        target: str,
        templates: Mapping[str, StreamMetric] | None = None,
        *,
        config: JudgeConfig | None = None,
        no_data_fails: bool = False,
        baseline_window_s: float | None = None,
    ) -> None:
        self.canary = canary
        self.aggregator = aggregator
        self.target = target
        self.templates: Mapping[str, StreamMetric] = dict(templates or {})
        self.no_data_fails = no_data_fails
        analysis = canary.spec.analysis
        self.metrics: list[Metric] = list(analysis.metrics) if analysis is not None else []
        self.judge_enabled = analysis is None or analysis.judge.enabled
        self.config = config or judge_config_for(canary)
        self.judge = Judge(self.config)
        interval_s = parse_interval(analysis.interval) if analysis is not None else 60.0
        self.baseline_window_s = baseline_window_s or max(interval_s, 60.0)
        self._windows: dict[str, float] = {}
        for m in self.metrics:
            with suppress(ValueError):  # an invalid interval is reported by each verdict
                self._windows[m.interval] = parse_interval(m.interval)
        self._custom_thresholds = exceedance_thresholds(self.metrics, self.templates)
        if self._custom_thresholds:
            aggregator.set_thresholds(target, self._custom_thresholds)
        self._threshold_fixed = False
        self._step_at: float | None = None
        self._routes: Routes | None = None
        self.latency_note = ""

    def start_step(self, at: float, routes: Routes) -> None:
        """A weight change took effect at ``at``. The first one fixes the latency threshold T
        (the primary's p99 over the window before) and asks the aggregator to count above it."""
        at_ms = int(at * 1000)
        if not self._threshold_fixed:
            self._threshold_fixed = True
            self._fix_latency_threshold(at_ms)
        self.judge.start_step(at_ms, routes.canary_weight, routes.mirrored, routes.mirror_weight)
        self._step_at = at
        self._routes = routes

    def _fix_latency_threshold(self, at_ms: int) -> None:
        if not self.config.latency:
            return
        before = self._stats(self.baseline_window_s, at_ms)
        primary = before.get(PRIMARY)
        if primary is None or primary.p99_ms is None:
            self.latency_note = "latency test off: no primary traffic before the canary got traffic"
            return
        threshold = float(primary.p99_ms)
        self.aggregator.set_thresholds(self.target, [threshold, *self._custom_thresholds])
        self.judge.set_latency_threshold(threshold, at_ms)
        self.latency_note = (
            f"latency threshold {threshold:.1f}ms = primary p{self.config.latency_quantile * 100:g} over the "
            f"{self.baseline_window_s:g}s before the first traffic shift"
        )

    def _stats(self, window_s: float, end_ms: int, series: bool = False) -> dict[str, VersionStats]:
        if window_s <= 0:
            return {}
        snap = self.aggregator.snapshot(window_s, end_ms=end_ms, target=self.target, series=series)
        return {s.version: s for s in snap}

    def verdict(self, now: float) -> Verdict:
        """The decision at ``now`` with its reasons, per-version figures and every test."""
        if self._step_at is None:
            return Verdict(Decision.INCONCLUSIVE, now, ("no traffic has been shifted to the canary yet",))
        now_ms = int(now * 1000)
        wm = self.aggregator.watermark_ms
        end_ms = now_ms if wm is None else min(now_ms, wm + 1)
        end_bucket = math.ceil(end_ms / BUCKET_MS) * BUCKET_MS
        lateness = self.aggregator.config.windowing.allowed_lateness_ms
        final_before = (wm - lateness) if wm is not None else self.judge.folded_until_ms
        series = self._stats((end_bucket - self.judge.folded_until_ms) / 1000, end_bucket, series=True)
        empty: tuple[()] = ()
        result = self.judge.evaluate(
            series[PRIMARY].series if PRIMARY in series else empty,
            series[CANARY].series if CANARY in series else empty,
            min(final_before, end_bucket),
            now_ms=end_ms,
        )
        by_window: dict[float, dict[str, VersionStats]] = {}
        checks = self._checks(end_bucket, by_window)
        # Figures per version: over the first metric's window when there is one (the snapshot is
        # already taken, a verdict costs one snapshot less), else over the step.
        if by_window:
            window_s, figures = next(iter(by_window.items()))
        else:
            step_ms = int(self._step_at * 1000) // BUCKET_MS * BUCKET_MS
            window_s = (end_bucket - step_ms) / 1000
            figures = self._stats(window_s, end_bucket)
        result.extra["figures_window_s"] = window_s
        return self._combine(now, result, figures, checks)

    def _checks(self, end_ms: int, by_window: dict[float, dict[str, VersionStats]]) -> list[TestResult]:
        """The metric checks, with the snapshot of each window (kept in ``by_window``)."""
        out: list[TestResult] = []
        for m in self.metrics:
            window = self._windows.get(m.interval)
            if window is None:
                out.append(
                    TestResult(m.name, Decision.INCONCLUSIVE, detail=f"invalid interval {m.interval!r}")
                )
                continue
            if window not in by_window:
                by_window[window] = self._stats(window, end_ms)
            stats = by_window[window].get(metric_version(m, self.templates))
            out.append(check_metric(m, stats, self.templates, no_data_fails=self.no_data_fails))
        return out

    def _combine(
        self, now: float, r: JudgeResult, step: dict[str, VersionStats], checks: list[TestResult]
    ) -> Verdict:
        versions = tuple(self._figures(v, step.get(v), r) for v in (PRIMARY, CANARY))
        tests = (*r.tests, *checks) if self.judge_enabled else tuple(checks)
        bad_checks = [c for c in checks if c.decision is not Decision.PASS]
        check_reasons = [f"{c.name}: {c.detail}" for c in bad_checks]
        if self.judge_enabled:
            decision, reasons = r.decision, list(r.reasons)
        elif r.canary_requests == 0:
            decision, reasons = (
                Decision.INCONCLUSIVE,
                ["insufficient data: the canary received no requests this step"],
            )
        else:
            decision, reasons = Decision.PASS, ["statistical judge disabled"]
        if decision is Decision.PASS and bad_checks:
            decision = Decision.CONTINUE
            reasons = [*check_reasons]
        elif decision is not Decision.FAIL:
            reasons = [*reasons, *check_reasons]
        if decision is Decision.PASS and checks:
            reasons.append(f"all {len(checks)} metric checks pass")
        extra = dict(r.extra)
        if self.latency_note:
            extra["latency_note"] = self.latency_note
        expected = r.expected_share
        if expected is None and self._routes is not None and not self._routes.mirrored:
            expected = self._routes.canary_weight / 100.0
        return Verdict(
            decision=decision,
            at=now,
            reasons=tuple(reasons),
            versions=versions,
            tests=tests,
            canary_share=r.canary_share,
            expected_share=expected,
            extra=extra,
        )

    def _figures(self, version: str, s: VersionStats | None, r: JudgeResult) -> VersionFigures:
        slow = r.canary_slow if version == CANARY else r.primary_slow
        if s is None:
            return VersionFigures(version, 0, 0, None, None, None, None, slow)
        fig = VersionFigures(
            version, s.requests, s.failures, s.success_rate, s.p50_ms, s.p90_ms, s.p99_ms, slow
        )
        return replace(fig)
