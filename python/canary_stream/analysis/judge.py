"""The statistical judge: canary vs primary from the core's 1 s buckets, continuously.

Harm tests (roll back; Bonferroni over them, total false-rollback rate <= ``alpha``):

- ``error-rate-harm``: the which-arm mixture e-process on failures (sequential.WhichArm);
- ``latency-harm@p99``: the same test on "slow" requests, above a threshold T fixed before the
  canary got traffic (the primary's p99 then), so both arms exceed T equally often under H0;
- ``slo-guard``: Wald's SPRT of the canary failure rate, ``slo_error_rate`` against twice that.

They run from the first step until the rollout ends and are never reset
(analysis-statistics.md §4.7): a canary that slipped through one step's promotion evidence is
still caught at a later step.

Promotion evidence (``pass``) counts from the last weight change: at least ``min_requests`` per
arm, and for errors and latency a concluded no-harm test (a concluded test stays concluded for the
step: each is anytime-valid, crossing once suffices).

- Errors, relative route (the main one): the mirrored which-arm test, LR of ``r = 1`` against
  ``r = no_harm_ratio`` >= ``1/beta``, so P(pass a step | canary ``no_harm_ratio`` times worse)
  <= ``beta`` (rare-event approximation).
- Errors, absolute route (for when errors are too rare for relative evidence to accrue):
  non-inferiority on the difference. Anytime-valid confidence sequences (beta-binomial mixtures,
  sequential.rate_bounds) at ``beta/2`` each bound the canary's rate from above and the primary's
  from below over the step; the step passes when ``upper(canary) <= lower(primary) + margin``
  with ``margin = abs_margin * slo_error_rate`` (0.25 percentage points at a 99 % SLO). Whenever
  the canary is in truth worse than the primary by ``margin`` or more, passing needs one of the
  two sequences to miss its rate: P <= ``beta``. (The previous rule, "the canary's rate is below
  the SLO", passed canaries twice as bad as the primary whenever both were under the SLO.)
  Without primary traffic in the step (blue/green, A/B) there is nothing to compare with and the
  absolute route asks ``upper(canary) < slo_error_rate``.
- Latency: the mirrored which-arm test on slow requests.

Not enough traffic: once the step has lasted its dwell (``dwell_s``, the spec's interval) and the
promotion evidence has not concluded, the verdict is ``inconclusive`` ("not enough traffic to
judge") when the step's data could not conclude even if the canary had no failures and no slow
requests (or an arm is below ``min_requests``): the rollout waits, as Argo's Inconclusive pauses,
and never rolls back for it. Opt-in ``low_traffic_promotion_dwells = N``: after N dwells of such a
step with no harm evidence (every harm e-value below ``alpha**-0.5``) the verdict is ``pass`` on
the metric checks alone (the analyzer still requires every check to pass on data).

A sample-ratio check (observed canary share vs the routed one, Bayes factor at ``srm_alpha``)
makes the verdict ``inconclusive``: routing or telemetry is broken and the comparison is void.

Late events: buckets older than the aggregator's allowed lateness are folded into running sums
once; newer buckets are recomputed on every evaluation, so late lines count and verdicts are fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from canary_stream.analysis.sequential import (
    DEFAULT_RATIO_WEIGHTS,
    DEFAULT_RATIOS,
    ArmEvidence,
    WhichArm,
    rate_bounds,
    split_alpha,
    sprt_log_lr,
    srm_log_bf,
)
from canary_stream.analysis.verdict import Decision, TestResult
from canary_stream.core import BucketPoint

BUCKET_MS = 1000
_EMPTY_BUCKET = BucketPoint(0, 0, 0, 0, 0, ())


@dataclass(frozen=True)
class JudgeConfig:
    """Knobs of the judge; the defaults suit canaries from ~1 to thousands of rps."""

    alpha: float = 0.01  # overall false-rollback rate, split over the harm tests
    beta: float = 0.1  # P(pass a step | canary no_harm_ratio times worse, or worse by the margin)
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    ratio_weights: tuple[float, ...] = DEFAULT_RATIO_WEIGHTS
    no_harm_ratio: float = 2.0
    slo_error_rate: float = 0.01  # the absolute SLO guard's null rate (p0); p1 = slo_factor * p0
    slo_factor: float = 2.0
    abs_margin: float = 0.25  # the absolute route's non-inferiority margin, as a fraction of the SLO
    min_requests: int = 50  # per arm per step before a pass
    dwell_s: float = 60.0  # a step's minimum duration (analysis.interval): "not enough traffic" after it
    low_traffic_promotion_dwells: int | None = None  # opt-in: pass on the checks alone after N dwells
    srm: bool = True
    srm_alpha: float = 1e-4
    srm_settle_s: float = 2.0  # routing changes need a moment to take effect everywhere
    latency: bool = True
    latency_quantile: float = 0.99

    @property
    def harm_tests(self) -> int:
        return 3 if self.latency else 2

    @property
    def alpha_each(self) -> float:
        return split_alpha(self.alpha, self.harm_tests)


@dataclass(frozen=True)
class _Counts:
    """Additive request figures of both arms over some buckets."""

    canary_requests: int = 0
    primary_requests: int = 0
    canary_failures: int = 0
    primary_failures: int = 0
    canary_slow: int = 0
    primary_slow: int = 0

    def __add__(self, o: _Counts) -> _Counts:
        return _Counts(
            self.canary_requests + o.canary_requests,
            self.primary_requests + o.primary_requests,
            self.canary_failures + o.canary_failures,
            self.primary_failures + o.primary_failures,
            self.canary_slow + o.canary_slow,
            self.primary_slow + o.primary_slow,
        )


@dataclass(frozen=True)
class _Sums:
    """Everything the tests need, additive over buckets."""

    total: _Counts  # since the first step (SLO guard)
    step: _Counts  # since the last weight change (exposure)
    srm: _Counts  # since the last weight change + settle time
    err_total: ArmEvidence
    slow_total: ArmEvidence
    err_step: ArmEvidence
    slow_step: ArmEvidence

    def __add__(self, o: _Sums) -> _Sums:
        return _Sums(
            self.total + o.total,
            self.step + o.step,
            self.srm + o.srm,
            self.err_total + o.err_total,
            self.slow_total + o.slow_total,
            self.err_step + o.err_step,
            self.slow_step + o.slow_step,
        )


@dataclass(frozen=True)
class JudgeResult:
    """The judge's statistical answer; the analyzer combines it with the metric checks."""

    decision: Decision
    reasons: tuple[str, ...]
    tests: tuple[TestResult, ...]
    canary_requests: int  # this step
    primary_requests: int
    canary_failures: int
    primary_failures: int
    canary_slow: int | None
    primary_slow: int | None
    canary_share: float | None
    expected_share: float | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _NoHarm:
    """A no-harm test's result, whether it concluded, and whether the step's data could conclude
    it in the best case (no canary events at all): if not, the step lacks traffic."""

    result: TestResult
    ok: bool
    possible: bool


def _e_text(log_e: float) -> str:
    return f"{math.exp(log_e):.3g}" if log_e < 13.8 else "> 1e6"


class Judge:
    """Sequential canary-vs-primary tests fed with per-bucket series, incrementally."""

    def __init__(self, config: JudgeConfig | None = None) -> None:
        self.config = config or JudgeConfig()
        c = self.config
        self._arm = WhichArm(c.ratios, c.ratio_weights, c.no_harm_ratio)
        self._origin_ms: int | None = None  # first bucket of the first step
        self._step_ms = 0
        self._srm_from_ms = 0
        self._expected_share: float | None = None
        self._latency_from_ms: int | None = None
        self.latency_threshold_ms: float | None = None
        self._folded_until_ms = 0
        self._folded = self._empty_sums()
        self._failed: tuple[TestResult, ...] = ()
        self._srm_fired: TestResult | None = None
        # no-harm tests concluded this step, in order (Ville: crossing once suffices)
        self._step_passed: list[str] = []
        self.steps = 0

    def _empty_sums(self) -> _Sums:
        e = self._arm.empty()
        z = _Counts()
        return _Sums(z, z, z, e, e, e, e)

    @property
    def folded_until_ms(self) -> int:
        """Buckets starting before this are folded; series must cover it onwards."""
        return self._folded_until_ms

    def start_step(
        self, at_ms: int, canary_weight: int, mirrored: bool = False, mirror_weight: int | None = None
    ) -> None:
        """A weight change at ``at_ms``: per-step evidence restarts, the harm tests go on. The
        routed share feeds the SRM check (none for 0 % / 100 % or without SRM)."""
        bucket = at_ms // BUCKET_MS * BUCKET_MS
        if self._origin_ms is None:
            self._origin_ms = bucket
            self._folded_until_ms = bucket
        self._step_ms = max(bucket, self._folded_until_ms)
        self._srm_from_ms = max(
            self._step_ms, math.ceil((at_ms + self.config.srm_settle_s * 1000) / BUCKET_MS) * BUCKET_MS
        )
        f = self._folded
        z = _Counts()
        e = self._arm.empty()
        self._folded = _Sums(f.total, z, z, f.err_total, f.slow_total, e, e)
        self._srm_fired = None
        self._step_passed = []
        self.steps += 1
        share: float | None = None
        if mirrored:
            m = 100 if mirror_weight is None else mirror_weight
            share = m / (100.0 + m) if m > 0 else None
        elif 0 < canary_weight < 100:
            share = canary_weight / 100.0
        self._expected_share = share if self.config.srm else None

    def set_latency_threshold(self, threshold_ms: float, from_ms: int) -> None:
        """Count requests slower than ``threshold_ms`` as latency events from the first whole bucket
        after ``from_ms`` (the aggregator's exceedance index 0 must hold this threshold)."""
        if not self.config.latency:
            return
        self.latency_threshold_ms = threshold_ms
        self._latency_from_ms = max(math.ceil(from_ms / BUCKET_MS) * BUCKET_MS, self._folded_until_ms)

    def _sums(self, primary: Sequence[BucketPoint], canary: Sequence[BucketPoint]) -> _Sums:
        """Sums over the given (aligned by start) buckets, by which test they belong to.

        Plain Python over the few buckets of one evaluation; numpy only for the buckets with
        events (the which-arm evidence of a bucket without events is 0)."""
        if not primary and not canary:
            return self._empty_sums()
        empty = _EMPTY_BUCKET
        p_by = {b.start_ms: b for b in primary}
        c_by = {b.start_ms: b for b in canary}
        lat_from = self._latency_from_ms
        step_ms, srm_ms = self._step_ms, self._srm_from_ms
        total = [0, 0, 0, 0, 0, 0]
        step = [0, 0, 0, 0, 0, 0]
        srm = [0, 0, 0, 0, 0, 0]
        err_rows: list[tuple[int, int, int, int, bool]] = []
        slow_rows: list[tuple[int, int, int, int, bool]] = []
        for start in p_by.keys() | c_by.keys():
            p, c = p_by.get(start, empty), c_by.get(start, empty)
            in_lat = lat_from is not None and start >= lat_from
            s_c = c.exceed[0] if in_lat and c.exceed else 0
            s_p = p.exceed[0] if in_lat and p.exceed else 0
            row = (c.requests, p.requests, c.failures, p.failures, s_c, s_p)
            in_step = start >= step_ms
            for acc, on in ((total, True), (step, in_step), (srm, start >= srm_ms)):
                if on:
                    for k in range(6):
                        acc[k] += row[k]
            if c.failures or p.failures:
                err_rows.append((c.requests, p.requests, c.failures, p.failures, in_step))
            if s_c or s_p:
                slow_rows.append((c.latency_count, p.latency_count, s_c, s_p, in_step))
        err_total, err_step = self._evidence(err_rows)
        slow_total, slow_step = self._evidence(slow_rows)
        return _Sums(
            _Counts(*total), _Counts(*step), _Counts(*srm), err_total, slow_total, err_step, slow_step
        )

    def _evidence(self, rows: list[tuple[int, int, int, int, bool]]) -> tuple[ArmEvidence, ArmEvidence]:
        """Which-arm evidence over all the given buckets and over this step's."""
        if not rows:
            return self._arm.empty(), self._arm.empty()
        every = self._arm.few_buckets(r[:4] for r in rows)
        if all(r[4] for r in rows):
            return every, every
        return every, self._arm.few_buckets(r[:4] for r in rows if r[4])

    def evaluate(
        self,
        primary: Sequence[BucketPoint],
        canary: Sequence[BucketPoint],
        final_before_ms: int,
        now_ms: int | None = None,
    ) -> JudgeResult:
        """Judge with the series of both arms from :attr:`folded_until_ms` on; buckets ending at or
        before ``final_before_ms`` (no more late events can land there) are folded for good.
        ``now_ms`` (default: the end of the last bucket given) tells how long the step has lasted."""
        if self._origin_ms is None:
            raise RuntimeError("start_step must be called before evaluate")
        lo = self._folded_until_ms
        if now_ms is None:
            now_ms = max((b.start_ms + BUCKET_MS for b in (*primary, *canary)), default=lo)
        primary = [b for b in primary if b.start_ms >= lo]
        canary = [b for b in canary if b.start_ms >= lo]
        final_end = final_before_ms // BUCKET_MS * BUCKET_MS
        if final_end > lo:
            old_p = [b for b in primary if b.start_ms < final_end]
            old_c = [b for b in canary if b.start_ms < final_end]
            self._folded = self._folded + self._sums(old_p, old_c)
            self._folded_until_ms = final_end
            primary = [b for b in primary if b.start_ms >= final_end]
            canary = [b for b in canary if b.start_ms >= final_end]
        return self._decide(self._folded + self._sums(primary, canary), now_ms)

    def _harm(self, name: str, ev: ArmEvidence, what: str) -> TestResult:
        """A which-arm harm test's result (``fail`` = roll back)."""
        a = self.config.alpha_each
        log_e = self._arm.harm_log_e(ev)
        fired = self._arm.harm_fires(ev, a)
        return TestResult(
            name,
            Decision.FAIL if fired else Decision.CONTINUE,
            statistic=log_e,
            boundary=math.log(1.0 / a),
            alpha=a,
            detail=f"{what}: {ev.canary_events} vs {ev.expected_canary:.1f} expected from its share of "
            f"requests (e-value {_e_text(log_e)}, rollback at {1 / a:.0f})",
        )

    def _decide(self, s: _Sums, now_ms: int) -> JudgeResult:
        c = self.config
        a = c.alpha_each
        boundary = math.log(1.0 / a)
        nh_boundary = math.log(1.0 / c.beta)
        lat_on = self.latency_threshold_ms is not None
        lat_name = f"p{c.latency_quantile * 100:g}"

        # harm tests, over every step so far
        tests = [self._harm("error-rate-harm", s.err_total, "canary failures")]
        if lat_on:
            tests.append(
                self._harm(
                    f"latency-harm@{lat_name}",
                    s.slow_total,
                    f"canary requests slower than {self.latency_threshold_ms:.1f}ms",
                )
            )
        p0 = c.slo_error_rate
        p1 = min(c.slo_factor * p0, 0.999)
        n, x = s.total.canary_requests, s.total.canary_failures
        llr = sprt_log_lr(n, x, p0, p1)
        tests.append(
            TestResult(
                "slo-guard",
                Decision.FAIL if llr >= boundary else Decision.CONTINUE,
                statistic=llr,
                boundary=boundary,
                alpha=a,
                detail=f"canary failure rate {100 * x / n if n else 0:.2f}% over {n} requests against the "
                f"{100 * p0:g}% SLO (log-LR {llr:.2f}, rollback at {boundary:.2f})",
            )
        )
        fails = [t for t in tests if t.decision is Decision.FAIL]
        if fails and not self._failed:
            self._failed = tuple(fails)
        harm_quiet = all(t.statistic is None or t.statistic < 0.5 * boundary for t in tests)

        # promotion evidence for this step
        st = s.step
        both_arms = st.primary_requests > 0
        err = self._error_no_harm(s, both_arms)
        tests.append(err.result)
        lat_ok = lat_possible = True
        if lat_on:
            ev = s.slow_step
            nh_lat = self._arm.no_harm_log_lr(ev)
            if nh_lat >= nh_boundary and "latency-no-harm" not in self._step_passed:
                self._step_passed.append("latency-no-harm")
            lat_ok = not both_arms or "latency-no-harm" in self._step_passed
            # best case: none of the step's slow requests came from the canary
            lat_possible = lat_ok or nh_lat + ev.canary_events * math.log(c.no_harm_ratio) >= nh_boundary
            tests.append(
                TestResult(
                    f"latency-no-harm@{lat_name}",
                    Decision.PASS if lat_ok else Decision.CONTINUE,
                    statistic=nh_lat,
                    boundary=nh_boundary,
                    detail=f"slow requests (> {self.latency_threshold_ms:.1f}ms) this step: canary "
                    f"{ev.canary_events}, primary {ev.primary_events} "
                    f"(log-LR {nh_lat:.2f}, pass at {nh_boundary:.2f})",
                )
            )

        # sample-ratio mismatch
        share = self._expected_share
        sr = s.srm
        observed = (
            sr.canary_requests / (sr.canary_requests + sr.primary_requests)
            if sr.canary_requests + sr.primary_requests
            else None
        )
        if share is not None:
            bf = srm_log_bf(sr.canary_requests, sr.primary_requests, share)
            srm_boundary = math.log(1.0 / c.srm_alpha)
            srm = TestResult(
                "srm",
                Decision.INCONCLUSIVE if bf >= srm_boundary else Decision.CONTINUE,
                statistic=bf,
                boundary=srm_boundary,
                alpha=c.srm_alpha,
                detail=f"canary share {100 * (observed or 0):.2f}% of "
                f"{sr.canary_requests + sr.primary_requests} requests, routed {100 * share:.2f}% "
                f"(log Bayes factor {bf:.2f}, mismatch at {srm_boundary:.2f})",
            )
            if srm.decision is Decision.INCONCLUSIVE and self._srm_fired is None:
                self._srm_fired = srm
            tests.append(srm)

        reasons: list[str]
        why = ""  # what an inconclusive verdict means: "srm" pauses, "no-data" / "low-traffic" wait
        step_s = (now_ms - self._step_ms) / 1000
        if self._failed:
            decision = Decision.FAIL
            reasons = [f"{t.name}: {t.detail}" for t in self._failed]
        elif self._srm_fired is not None:
            decision = Decision.INCONCLUSIVE
            reasons = [
                f"sample-ratio mismatch, routing or telemetry broken, pausing: {self._srm_fired.detail}"
            ]
            why = "srm"
        elif st.canary_requests == 0:
            decision = Decision.INCONCLUSIVE
            reasons = ["insufficient data: the canary received no requests this step"]
            why = "no-data"
        else:
            short = [
                f"{who} has {n_} of {c.min_requests} requests"
                for who, n_ in (("canary", st.canary_requests), ("primary", st.primary_requests))
                if n_ < c.min_requests and (who == "canary" or both_arms)
            ]
            pending = [t.detail for t in tests if "no-harm" in t.name and t.decision is not Decision.PASS]
            low_traffic = bool(short) or not (err.possible and lat_possible)
            opt_in = c.low_traffic_promotion_dwells
            if not short and err.ok and lat_ok:
                decision = Decision.PASS
                reasons = [
                    f"no harm detected after {st.canary_requests} canary and {st.primary_requests} primary "
                    "requests this step"
                ]
            elif low_traffic and opt_in is not None and step_s >= opt_in * c.dwell_s and harm_quiet:
                decision = Decision.PASS
                reasons = [
                    f"not enough traffic to judge after {opt_in} dwell periods ({st.canary_requests} canary "
                    f"requests this step) and no harm evidence: advancing on the metric checks alone "
                    "(lowTrafficPromotion)"
                ]
                why = "low-traffic"
            elif low_traffic and step_s >= c.dwell_s:
                decision = Decision.INCONCLUSIVE
                reasons = [
                    f"not enough traffic to judge: {st.canary_requests} canary and {st.primary_requests} "
                    f"primary requests in {step_s:.0f}s could not show no harm even without a single canary "
                    "failure or slow request; waiting for more traffic",
                    *(f"minimum exposure not met: {x_}" for x_ in short),
                ]
                why = "low-traffic"
            else:
                decision = Decision.CONTINUE
                reasons = [*(f"minimum exposure not met: {x_}" for x_ in short), *pending]
        total = st.canary_requests + st.primary_requests
        return JudgeResult(
            decision=decision,
            reasons=tuple(reasons),
            tests=tuple(tests),
            canary_requests=st.canary_requests,
            primary_requests=st.primary_requests,
            canary_failures=st.canary_failures,
            primary_failures=st.primary_failures,
            canary_slow=st.canary_slow if lat_on else None,
            primary_slow=st.primary_slow if lat_on else None,
            canary_share=st.canary_requests / total if total else None,
            expected_share=self._expected_share,
            extra={
                "alpha_each": a,
                "latency_threshold_ms": self.latency_threshold_ms,
                "step_start_ms": self._step_ms,
                "step_s": step_s,
                "folded_until_ms": self._folded_until_ms,
                "cumulative_canary_requests": s.total.canary_requests,
                "cumulative_canary_failures": s.total.canary_failures,
                **({"inconclusive": why} if why and decision is Decision.INCONCLUSIVE else {}),
                **({"low_traffic_promotion": True} if why and decision is Decision.PASS else {}),
            },
        )

    def _error_no_harm(self, s: _Sums, both_arms: bool) -> _NoHarm:
        """The error-rate no-harm test of this step: relative route, else absolute route."""
        c = self.config
        st = s.step
        nh_boundary = math.log(1.0 / c.beta)
        ev = s.err_step
        nh_rel = self._arm.no_harm_log_lr(ev)
        concluded = next((x for x in self._step_passed if x.startswith("error-rate-no-harm")), "")
        lower = limit = upper = math.nan
        if not concluded:
            if both_arms and nh_rel >= nh_boundary:
                concluded = "error-rate-no-harm (relative to primary)"
            else:
                lower, limit = self._limit(st, both_arms)
                upper = rate_bounds(st.canary_requests, st.canary_failures, c.beta / 2, c.slo_error_rate)[1]
                if upper <= limit:
                    concluded = "error-rate-no-harm (absolute)"
            if concluded:
                self._step_passed.append(concluded)
        if concluded:
            how = concluded.partition("(")[2].rstrip(")")
            result = TestResult(
                "error-rate-no-harm",
                Decision.PASS,
                statistic=nh_rel,
                boundary=nh_boundary,
                detail=f"no error-rate regression this step ({how})",
            )
            return _NoHarm(result, True, True)
        against = (
            f"primary's lower bound {100 * lower:.3f}% + margin {100 * c.abs_margin * c.slo_error_rate:.3g}%"
            if both_arms
            else f"the {100 * c.slo_error_rate:g}% SLO (no primary traffic this step)"
        )
        result = TestResult(
            "error-rate-no-harm",
            Decision.CONTINUE,
            statistic=nh_rel,
            boundary=nh_boundary,
            detail="not enough evidence yet of no error-rate regression this step: relative log-LR "
            f"{nh_rel:.2f} (pass at {nh_boundary:.2f}: failure rate below {c.no_harm_ratio:g}x the "
            f"primary's); absolute: canary upper bound {100 * upper:.3f}% vs {against} "
            f"= {100 * limit:.3f}%",
        )
        # could the step's data conclude at all, had the canary not failed a single request?
        rel_best = nh_rel + ev.canary_events * math.log(c.no_harm_ratio)
        possible = (both_arms and rel_best >= nh_boundary) or (
            rate_bounds(st.canary_requests, 0, c.beta / 2, c.slo_error_rate)[1] <= limit
        )
        return _NoHarm(result, False, possible)

    def _limit(self, st: _Counts, both_arms: bool) -> tuple[float, float]:
        """The absolute route's bar for the canary's upper bound: the primary's lower bound (at
        ``beta/2``) plus the margin; without primary traffic, the SLO. Returns (lower, limit)."""
        c = self.config
        if not both_arms:
            return 0.0, c.slo_error_rate
        lower = rate_bounds(st.primary_requests, st.primary_failures, c.beta / 2, c.slo_error_rate)[0]
        return lower, lower + c.abs_margin * c.slo_error_rate
