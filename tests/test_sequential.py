"""Sequential tests: error guarantees under continuous monitoring (Monte Carlo, fixed seeds),
power in a realistic budget, and properties of the statistics."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from canary_stream.analysis.sequential import (
    WhichArm,
    rate_bounds,
    split_alpha,
    sprt_fires,
    sprt_log_lr,
    srm_log_bf,
)

RUNS = 2_000


def ceiling(alpha: float, runs: int = RUNS) -> float:
    """alpha + 3 standard deviations of the rejection count."""
    return alpha * runs + 3.0 * math.sqrt(runs * alpha * (1.0 - alpha))


def simulate_buckets(
    rng: np.random.Generator,
    runs: int,
    buckets: int,
    rps: float,
    weights: npt.NDArray[np.float64],
    primary_rate: float,
    canary_rate: float,
) -> tuple[npt.NDArray[np.int64], ...]:
    """Per-bucket request and event counts, shape (runs, buckets); `weights` per bucket."""
    total = rng.poisson(rps, size=(runs, buckets))
    n_c = rng.binomial(total, weights[None, :])
    n_p = total - n_c
    e_c = rng.binomial(n_c, canary_rate)
    e_p = rng.binomial(n_p, primary_rate)
    return n_c, n_p, e_c, e_p


def harm_rejections(test: WhichArm, alpha: float, n_c, n_p, e_c, e_p) -> npt.NDArray[np.bool_]:
    """Whether the harm test fired at any bucket, per run (continuous monitoring)."""
    runs, buckets = n_c.shape
    inc, expected = test.bucket_log_lr(n_c.ravel(), n_p.ravel(), e_c.ravel(), e_p.ravel())
    cum = np.cumsum(inc.reshape(-1, runs, buckets), axis=2)
    log_e = test.harm_log_e_path(cum.reshape(cum.shape[0], -1)).reshape(runs, buckets)
    informative = (n_c > 0) & (n_p > 0)
    excess = np.cumsum(np.where(informative, e_c, 0), axis=1) > np.cumsum(
        expected.reshape(runs, buckets), axis=1
    )
    fired: npt.NDArray[np.bool_] = np.any((log_e >= math.log(1 / alpha)) & excess, axis=1)
    return fired


def no_harm_passes(test: WhichArm, beta: float, n_c, n_p, e_c, e_p) -> npt.NDArray[np.bool_]:
    runs, buckets = n_c.shape
    inc, _ = test.bucket_log_lr(n_c.ravel(), n_p.ravel(), e_c.ravel(), e_p.ravel())
    cum = -np.cumsum(inc[-1].reshape(runs, buckets), axis=1)
    passed: npt.NDArray[np.bool_] = np.any(cum >= math.log(1 / beta), axis=1)
    return passed


STEPPED = np.repeat(np.array([0.05, 0.10, 0.20, 0.30, 0.50]), 60)  # five weight steps of 60 s


def test_which_arm_harm_false_rollbacks_within_alpha_under_aa() -> None:
    rng = np.random.default_rng(1)
    test = WhichArm()
    alpha = 0.01
    counts = simulate_buckets(rng, RUNS, len(STEPPED), 200.0, STEPPED, 0.01, 0.01)
    fired = harm_rejections(test, alpha, *counts)
    assert fired.sum() <= ceiling(alpha)


def test_which_arm_harm_on_exceedances_within_alpha_for_rare_events() -> None:
    # "slow" requests above the primary's p99: ~1 % of requests, same law for both arms
    rng = np.random.default_rng(2)
    test = WhichArm()
    alpha = 0.01
    counts = simulate_buckets(rng, RUNS, len(STEPPED), 500.0, STEPPED, 0.001, 0.001)
    assert harm_rejections(test, alpha, *counts).sum() <= ceiling(alpha)


def test_which_arm_harm_detects_2x_errors_within_a_minute() -> None:
    rng = np.random.default_rng(3)
    test = WhichArm()
    alpha = split_alpha(0.01, 3)
    weights = np.full(60, 0.10)
    counts = simulate_buckets(rng, 500, 60, 1_000.0, weights, 0.01, 0.02)
    assert harm_rejections(test, alpha, *counts).mean() >= 0.90


def test_which_arm_harm_detects_5_percent_errors_in_seconds() -> None:
    # the benchmark case: 5 % vs 0.1 % at 100 rps of canary traffic
    rng = np.random.default_rng(4)
    test = WhichArm()
    alpha = split_alpha(0.01, 3)
    counts = simulate_buckets(rng, 500, 5, 1_000.0, np.full(5, 0.10), 0.001, 0.05)
    assert harm_rejections(test, alpha, *counts).mean() >= 0.95


def test_which_arm_harm_ignores_improvements() -> None:
    rng = np.random.default_rng(5)
    test = WhichArm()
    counts = simulate_buckets(rng, 500, 120, 1_000.0, np.full(120, 0.5), 0.02, 0.002)
    assert harm_rejections(test, 0.01, *counts).sum() == 0


def test_no_harm_rarely_passes_a_canary_at_r_max() -> None:
    rng = np.random.default_rng(6)
    test = WhichArm(no_harm_ratio=2.0)
    beta = 0.1
    counts = simulate_buckets(rng, RUNS, len(STEPPED), 300.0, STEPPED, 0.01, 0.02)
    assert no_harm_passes(test, beta, *counts).sum() <= ceiling(beta)


def test_no_harm_passes_a_healthy_canary() -> None:
    rng = np.random.default_rng(7)
    test = WhichArm(no_harm_ratio=2.0)
    counts = simulate_buckets(rng, 500, 60, 1_000.0, np.full(60, 0.2), 0.01, 0.01)
    assert no_harm_passes(test, 0.1, *counts).mean() >= 0.90


def sprt_paths(
    rng: np.random.Generator, runs: int, steps: int, per_step: int, rate: float, p0: float, p1: float
):
    n = np.arange(1, steps + 1) * per_step
    x = np.cumsum(rng.binomial(per_step, rate, size=(runs, steps)), axis=1)
    return x * math.log(p1 / p0) + (n - x) * math.log1p((p0 - p1) / (1 - p0))


def test_slo_sprt_false_rollbacks_within_alpha() -> None:
    rng = np.random.default_rng(8)
    alpha = 0.01
    s = sprt_paths(rng, RUNS, 300, 100, 0.01, 0.01, 0.02)
    assert (s.max(axis=1) >= math.log(1 / alpha)).sum() <= ceiling(alpha)


def test_slo_sprt_catches_a_rate_above_twice_the_slo() -> None:
    rng = np.random.default_rng(9)
    s = sprt_paths(rng, 500, 60, 100, 0.03, 0.01, 0.02)
    assert (s.max(axis=1) >= math.log(3 / 0.01)).mean() >= 0.95


def mixture_log_m(n: npt.NDArray[np.int64], x: npt.NDArray[np.int64], q: float, prior_mean: float):
    """log M(q) of rate_bounds' beta-binomial mixture, vectorised (integer prior parameters)."""
    b = round(1 / prior_mean - 1)
    top = int(n.max()) + b + 2
    lg = np.array([math.lgamma(k) if k > 0 else 0.0 for k in range(top + 1)])
    log_beta = lg[1 + x] + lg[b + n - x] - lg[1 + b + n] - (lg[1] + lg[b] - lg[1 + b])
    return log_beta - x * math.log(q) - (n - x) * math.log1p(-q)


def test_rate_bounds_cover_the_true_rate_at_every_look() -> None:
    # the bounds miss the true rate at some look iff M(rate) >= 1/alpha at that look
    alpha = 0.05
    for rate, seed in ((0.001, 12), (0.02, 13)):
        rng = np.random.default_rng(seed)
        trials = rng.random((1_000, 4_000)) < rate
        x = np.cumsum(trials, axis=1)
        n = np.broadcast_to(np.arange(1, 4_001), x.shape)
        missed = (mixture_log_m(n, x, rate, 0.01) >= math.log(1 / alpha)).any(axis=1)
        assert missed.sum() <= ceiling(alpha, 1_000)
        # and rate_bounds is that set: spot checks along one path
        for t in (50, 500, 3_999):
            lo, hi = rate_bounds(int(n[0, t]), int(x[0, t]), alpha, 0.01)
            inside = mixture_log_m(n[0, t : t + 1], x[0, t : t + 1], rate, 0.01)[0] < math.log(1 / alpha)
            assert (lo <= rate <= hi) == inside


def test_rate_bounds_are_ordered_and_shrink() -> None:
    assert rate_bounds(0, 0, 0.05) == (0.0, 1.0)
    widths = []
    for n in (100, 1_000, 10_000, 100_000):
        x = n // 200
        lo, hi = rate_bounds(n, x, 0.05)
        assert lo <= x / n <= hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)
    lo, hi = rate_bounds(2_000, 0, 0.05)
    assert lo == 0.0 and 0.0 < hi < 0.005  # no failure in 2,000: the rate is below 0.5 %
    assert rate_bounds(10, 10, 0.05)[1] == 1.0


def test_srm_quiet_under_correct_routing_and_fires_on_mismatch() -> None:
    rng = np.random.default_rng(12)
    alpha = 1e-4
    runs, steps, rps, w = 400, 60, 500, 0.1
    n_c = np.cumsum(rng.binomial(rps, w, size=(runs, steps)), axis=1)
    n_p = np.arange(1, steps + 1) * rps - n_c
    fired = 0
    for i in range(runs):
        fired += any(
            srm_log_bf(int(c), int(p), w) >= math.log(1 / alpha) for c, p in zip(n_c[i], n_p[i], strict=True)
        )
    assert fired <= 1  # expected 0.04
    # half the expected canary share: caught within 10 s at 500 rps
    assert srm_log_bf(250, 4_750, 0.1) >= math.log(1 / alpha)
    # no canary traffic at all while routed 10 %
    assert srm_log_bf(0, 1_000, 0.1) >= math.log(1 / alpha)
    # a small wobble is not a mismatch
    assert srm_log_bf(10_300, 89_700, 0.1) < math.log(1 / alpha)


def test_sprt_validates_rates() -> None:
    assert sprt_log_lr(0, 0, 0.01, 0.02) == 0.0
    assert sprt_fires(1_000, 60, 0.01, 0.02, 0.01)
    assert not sprt_fires(1_000, 10, 0.01, 0.02, 0.01)


buckets = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 200), st.integers(0, 200)).map(
        lambda t: (t[0], t[1], min(t[2], t[0]), min(t[3], t[1]))
    ),
    min_size=1,
    max_size=30,
)


@given(buckets)
@settings(max_examples=200, deadline=None)
def test_which_arm_statistics_finite_and_monotone(bs: list[tuple[int, int, int, int]]) -> None:
    test = WhichArm()
    n_c, n_p, e_c, e_p = (np.array(col) for col in zip(*bs, strict=True))
    ev = test.evidence(n_c, n_p, e_c, e_p)
    assert np.all(np.isfinite(ev.log_lr))
    assert math.isfinite(test.harm_log_e(ev)) and math.isfinite(test.no_harm_log_lr(ev))
    # one more canary error in an informative bucket: more harm evidence, less no-harm evidence
    i = int(np.argmax((n_c > 0) & (n_p > 0)))
    if n_c[i] > 0 and n_p[i] > 0:
        more = e_c.copy()
        more[i] += 1
        ev2 = test.evidence(n_c, n_p, more, e_p)
        assert test.harm_log_e(ev2) > test.harm_log_e(ev)
        assert test.no_harm_log_lr(ev2) < test.no_harm_log_lr(ev)
        more_p = e_p.copy()
        more_p[i] += 1
        assert test.harm_log_e(test.evidence(n_c, n_p, e_c, more_p)) < test.harm_log_e(ev)
    # additivity: evidence of the parts sums to the evidence of the whole
    half = len(bs) // 2
    parts = test.evidence(n_c[:half], n_p[:half], e_c[:half], e_p[:half]) + test.evidence(
        n_c[half:], n_p[half:], e_c[half:], e_p[half:]
    )
    assert np.allclose(parts.log_lr, ev.log_lr)
    assert parts.canary_events == ev.canary_events


@given(st.integers(0, 100_000), st.integers(0, 100_000), st.floats(0.001, 0.999))
@settings(max_examples=200, deadline=None)
def test_srm_and_sprt_finite(c: int, p: int, w: float) -> None:
    assert math.isfinite(srm_log_bf(c, p, w))
    x = min(c, p)
    assert math.isfinite(sprt_log_lr(p, x, 0.01, 0.02))
    # more errors: more evidence against the SLO
    if x < p:
        assert sprt_log_lr(p, x + 1, 0.01, 0.02) > sprt_log_lr(p, x, 0.01, 0.02)
