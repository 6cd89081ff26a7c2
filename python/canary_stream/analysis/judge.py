"""The statistical judge: canary vs primary from the core's 1 s buckets, continuously.

Harm tests (roll back; Bonferroni over them, total false-rollback rate <= ``alpha``):

- ``error-rate-harm``: the which-arm mixture e-process on failures (sequential.WhichArm);
- ``latency-harm@p99``: the same test on "slow" requests, above a threshold T fixed before the
  canary got traffic (the primary's p99 then), so both arms exceed T equally often under H0;
- ``slo-guard``: Wald's SPRT of the canary failure rate, ``slo_error_rate`` against twice that.

They run from the first step to the end and are never reset (analysis-statistics.md §4.7).

Promotion evidence (``pass``) counts from the last weight change: at least ``min_requests`` per arm,
and for errors and latency a concluded no-harm test. For errors that is either the mirrored
which-arm test (P(pass | canary ``no_harm_ratio`` times worse) <= ``beta``, rare-event
approximation) or, where errors are too rare for relative evidence to accrue, an exact SPRT that
the canary's failure rate is below the SLO (LR of ``abs_good_fraction * slo`` against ``slo``
>= ``1/beta``: P(pass | canary rate >= SLO) <= ``beta``). A healthy canary at 0.1 % errors with
100 rps passes that in about 4 s with the default 1 % SLO (374 error-free requests). A relative
regression below the SLO can pass a step this way; the harm test keeps running across every step.

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

import numpy as np
import numpy.typing as npt

from canary_stream.analysis.sequential import (
    DEFAULT_RATIO_WEIGHTS,
    DEFAULT_RATIOS,
    ArmEvidence,
    WhichArm,
    split_alpha,
    sprt_log_lr,
    srm_log_bf,
)
from canary_stream.analysis.verdict import Decision, TestResult
from canary_stream.core import BucketPoint

BUCKET_MS = 1000


@dataclass(frozen=True)
class JudgeConfig:
    """Knobs of the judge; the defaults suit canaries from ~1 to thousands of rps."""

    alpha: float = 0.01  # overall false-rollback rate, split over the harm tests
    beta: float = 0.1  # P(pass a step | canary no_harm_ratio times worse), per metric
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    ratio_weights: tuple[float, ...] = DEFAULT_RATIO_WEIGHTS
    no_harm_ratio: float = 2.0
    slo_error_rate: float = 0.01  # the absolute SLO guard's null rate (p0); p1 = slo_factor * p0
    slo_factor: float = 2.0
    abs_good_fraction: float = 0.25  # the absolute no-harm path's alternative, as a fraction of the SLO
    min_requests: int = 50  # per arm per step before a pass
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
        self._step_passed: set[str] = (
            set()
        )  # no-harm tests concluded this step (Ville: crossing once suffices)
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
        self._step_passed = set()
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
        """Sums over the given (aligned by start) buckets, by which test they belong to."""
        p_by = {b.start_ms: b for b in primary}
        c_by = {b.start_ms: b for b in canary}
        starts = sorted(p_by.keys() | c_by.keys())
        if not starts:
            return self._empty_sums()
        empty = BucketPoint(0, 0, 0, 0, 0, ())
        rows = []
        for start in starts:
            p, c = p_by.get(start, empty), c_by.get(start, empty)
            rows.append(
                (
                    start,
                    c.requests,
                    p.requests,
                    c.failures,
                    p.failures,
                    c.latency_count,
                    p.latency_count,
                    c.exceed[0] if c.exceed else 0,
                    p.exceed[0] if p.exceed else 0,
                )
            )
        m = np.array(rows, dtype=np.int64).T
        t, n_c, n_p, f_c, f_p, l_c, l_p, s_c, s_p = m
        lat_from = self._latency_from_ms
        in_lat = t >= lat_from if lat_from is not None else np.zeros(len(starts), dtype=bool)
        s_c = np.where(in_lat, s_c, 0)
        s_p = np.where(in_lat, s_p, 0)
        in_step = t >= self._step_ms
        in_srm = t >= self._srm_from_ms
        every = np.ones(len(starts), dtype=bool)
        all_step = bool(in_step.all())

        def counts(mask: npt.NDArray[np.bool_]) -> _Counts:
            sums = m[1:, mask].sum(axis=1)
            return _Counts(int(sums[0]), int(sums[1]), int(sums[2]), int(sums[3]), int(sums[6]), int(sums[7]))

        def evidence(
            cn: npt.NDArray[np.int64],
            pn: npt.NDArray[np.int64],
            ce: npt.NDArray[np.int64],
            pe: npt.NDArray[np.int64],
        ) -> tuple[ArmEvidence, ArmEvidence]:
            """Evidence over all buckets and over this step's, from one pass over the grid."""
            if not (ce.any() or pe.any()):
                return self._arm.empty(), self._arm.empty()
            inc, expected = self._arm.bucket_log_lr(cn, pn, ce, pe)
            informative = (cn > 0) & (pn > 0)
            if all_step:  # the usual case for the recent buckets: one sum serves both
                c = int(ce[informative].sum())
                ev = ArmEvidence(
                    inc.sum(axis=1), c, c + int(pe[informative].sum()), float(expected[informative].sum())
                )
                return ev, ev
            out = []
            for mask in (every, in_step):
                use = mask & informative
                c = int(ce[use].sum())
                out.append(
                    ArmEvidence(
                        inc[:, use].sum(axis=1), c, c + int(pe[use].sum()), float(expected[use].sum())
                    )
                )
            return out[0], out[1]

        err_total, err_step = evidence(n_c, n_p, f_c, f_p)
        slow_total, slow_step = evidence(l_c, l_p, s_c, s_p)
        total = counts(every)
        step = total if all_step else counts(in_step)
        return _Sums(total, step, counts(in_srm), err_total, slow_total, err_step, slow_step)

    def evaluate(
        self, primary: Sequence[BucketPoint], canary: Sequence[BucketPoint], final_before_ms: int
    ) -> JudgeResult:
        """Judge with the series of both arms from :attr:`folded_until_ms` on; buckets ending at or
        before ``final_before_ms`` (no more late events can land there) are folded for good."""
        if self._origin_ms is None:
            raise RuntimeError("start_step must be called before evaluate")
        lo = self._folded_until_ms
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
        return self._decide(self._folded + self._sums(primary, canary))

    def _decide(self, s: _Sums) -> JudgeResult:
        c = self.config
        a = c.alpha_each
        boundary = math.log(1.0 / a)
        nh_boundary = math.log(1.0 / c.beta)
        tests: list[TestResult] = []
        fails: list[TestResult] = []
        lat_name = f"latency-harm@p{c.latency_quantile * 100:g}"
        lat_on = self.latency_threshold_ms is not None

        # harm: errors
        ev = s.err_total
        log_e = self._arm.harm_log_e(ev)
        fired = self._arm.harm_fires(ev, a)
        tests.append(
            TestResult(
                "error-rate-harm",
                Decision.FAIL if fired else Decision.CONTINUE,
                statistic=log_e,
                boundary=boundary,
                alpha=a,
                detail=f"canary failures {ev.canary_events} vs {ev.expected_canary:.1f} expected from its "
                f"share of requests (e-value {_e_text(log_e)}, rollback at {1 / a:.0f})",
            )
        )
        # harm: latency exceedances
        if lat_on:
            ev = s.slow_total
            log_e = self._arm.harm_log_e(ev)
            fired = self._arm.harm_fires(ev, a)
            tests.append(
                TestResult(
                    lat_name,
                    Decision.FAIL if fired else Decision.CONTINUE,
                    statistic=log_e,
                    boundary=boundary,
                    alpha=a,
                    detail=f"canary requests slower than {self.latency_threshold_ms:.1f}ms: "
                    f"{ev.canary_events} vs {ev.expected_canary:.1f} expected "
                    f"(e-value {_e_text(log_e)}, rollback at {1 / a:.0f})",
                )
            )
        # absolute SLO guard
        p0 = c.slo_error_rate
        p1 = min(c.slo_factor * p0, 0.999)
        n, x = s.total.canary_requests, s.total.canary_failures
        llr = sprt_log_lr(n, x, p0, p1)
        fired = llr >= boundary
        tests.append(
            TestResult(
                "slo-guard",
                Decision.FAIL if fired else Decision.CONTINUE,
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

        # promotion evidence for this step
        st = s.step
        both_arms = st.primary_requests > 0
        nh_rel = self._arm.no_harm_log_lr(s.err_step)
        nh_abs = sprt_log_lr(st.canary_requests, st.canary_failures, p0, c.abs_good_fraction * p0)
        how = "relative to primary" if both_arms and nh_rel >= nh_boundary else "below the SLO"
        if (both_arms and nh_rel >= nh_boundary) or nh_abs >= nh_boundary:
            self._step_passed.add(f"error-rate-no-harm ({how})")
        concluded = [x for x in self._step_passed if x.startswith("error-rate-no-harm")]
        err_ok = bool(concluded)
        how = concluded[0].partition("(")[2].rstrip(")") if concluded else how
        tests.append(
            TestResult(
                "error-rate-no-harm",
                Decision.PASS if err_ok else Decision.CONTINUE,
                statistic=max(nh_rel if both_arms else -math.inf, nh_abs),
                boundary=nh_boundary,
                detail=(
                    f"no error-rate regression ({how}) this step"
                    if err_ok
                    else "not enough evidence yet that "
                    f"the canary's failure rate is below {c.no_harm_ratio:g}x the primary's or the "
                    f"{100 * p0:g}% SLO (log-LR {nh_rel:.2f} relative, {nh_abs:.2f} absolute, pass at "
                    f"{nh_boundary:.2f})"
                ),
            )
        )
        lat_ok = True
        if lat_on:
            nh_lat = self._arm.no_harm_log_lr(s.slow_step)
            if nh_lat >= nh_boundary:
                self._step_passed.add("latency-no-harm")
            lat_ok = not both_arms or "latency-no-harm" in self._step_passed
            tests.append(
                TestResult(
                    f"latency-no-harm@p{c.latency_quantile * 100:g}",
                    Decision.PASS if lat_ok else Decision.CONTINUE,
                    statistic=nh_lat,
                    boundary=nh_boundary,
                    detail=f"slow requests (> {self.latency_threshold_ms:.1f}ms) this step: canary "
                    f"{s.slow_step.canary_events}, primary {s.slow_step.primary_events} "
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
        why = ""  # what an inconclusive verdict means for the scheduler: "srm" pauses, "no-data" waits
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
            pending = [
                t.detail
                for t in tests
                if t.name.endswith("no-harm") or "no-harm@" in t.name
                if t.decision is not Decision.PASS
            ]
            if not short and err_ok and lat_ok:
                decision = Decision.PASS
                reasons = [
                    f"no harm detected after {st.canary_requests} canary and {st.primary_requests} primary "
                    "requests this step"
                ]
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
                "folded_until_ms": self._folded_until_ms,
                "cumulative_canary_requests": s.total.canary_requests,
                "cumulative_canary_failures": s.total.canary_failures,
                **({"inconclusive": why} if why else {}),
            },
        )
