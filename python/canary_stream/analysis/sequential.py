"""Anytime-valid sequential tests for canary analysis (pure statistics, no I/O).

Every statistic here is the logarithm of a test martingale (a likelihood ratio or a mixture of
likelihood ratios, value 1 at the start) under its null hypothesis, so by Ville's inequality
``P(ever log_e >= ln(1/alpha)) <= alpha`` however often it is looked at and whenever we stop.
All evidence is additive: a bucket's contribution is computed once, in O(grid), and summed.

Tests (analysis-statistics.md §4):

- :class:`WhichArm` — the conditional "which arm" test. Given the canary's share ``rho_i`` of the
  requests in 1 s bucket ``i`` and the ``E_i`` events (errors, or slow requests) seen there, an
  event comes from the canary with probability ``theta_i(r) = r rho_i / (r rho_i + 1 - rho_i)``
  when the canary's per-request rate is ``r`` times the primary's. The log-LR of ``r`` against
  ``r = 1`` is ``E_c ln r - sum_i E_i ln(1 + (r - 1) rho_i)``. *Harm* mixes it over a grid of ``r > 1``
  and also requires more canary events than expected (``E_c > sum_i E_i rho_i``; a sub-event, so
  alpha holds). *No harm* is the mirrored LR of ``r = 1`` against ``r = r_max``.
  Validity: with independent Bernoulli requests and equal rates, the canary's count given ``E_i``
  is hypergeometric, which is smaller than the binomial in the convex order (Hoeffding 1963), and
  with a lower canary rate it is stochastically smaller still; the harm statistic is convex and
  increasing in the canary count, so it is a supermartingale over the whole null ``r <= 1``.
  The no-harm statistic is exact for Poisson arrivals and a rare-event approximation otherwise.
- :func:`sprt_log_lr` — Wald's SPRT on one binomial rate (absolute SLO guard, §4.2): upper
  boundary ``ln(1/alpha)`` is an exact Ville bound over the whole null ``p <= p0``.
- :func:`srm_log_bf` — sample-ratio mismatch: a mixture over canary shares around the routed
  share (offsets in log-odds) against the routed share, from the step's request totals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Effect sizes (canary rate / primary rate) mixed over by the harm tests, and their prior weights:
# most mass on the regressions that matter (1.5x-5x), some on subtle and on gross ones.
DEFAULT_RATIOS: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0)
DEFAULT_RATIO_WEIGHTS: tuple[float, ...] = (0.10, 0.15, 0.25, 0.20, 0.15, 0.10, 0.05)

# Canary-share alternatives of the SRM test, as log-odds offsets from the routed share.
SRM_OFFSETS: tuple[float, ...] = (-3.0, -1.5, -0.75, 0.75, 1.5, 3.0)


def log_sum_exp(values: FloatArray, log_weights: FloatArray) -> float:
    """``ln(sum_j w_j exp(v_j))`` without overflow; finite for finite inputs."""
    z = values + log_weights
    top = float(np.max(z))
    return top + math.log(float(np.sum(np.exp(z - top))))


@dataclass(frozen=True)
class ArmEvidence:
    """Additive evidence of the which-arm test over some buckets.

    ``log_lr[j]`` is the log-LR of ``ratios[j]`` against ``r = 1``; ``expected_canary`` is
    ``sum_i E_i rho_i``, the canary events expected if the arms were alike."""

    log_lr: FloatArray
    canary_events: int
    events: int
    expected_canary: float

    def __add__(self, other: ArmEvidence) -> ArmEvidence:
        return ArmEvidence(
            self.log_lr + other.log_lr,
            self.canary_events + other.canary_events,
            self.events + other.events,
            self.expected_canary + other.expected_canary,
        )

    @property
    def primary_events(self) -> int:
        return self.events - self.canary_events


class WhichArm:
    """Harm and no-harm statistics of the conditional which-arm test over a ratio grid.

    The last grid entry is ``no_harm_ratio`` (r_max of the mirrored test); the harm mixture uses
    the others with ``weights`` (normalised)."""

    def __init__(
        self,
        ratios: tuple[float, ...] = DEFAULT_RATIOS,
        weights: tuple[float, ...] = DEFAULT_RATIO_WEIGHTS,
        no_harm_ratio: float = 2.0,
    ) -> None:
        if len(ratios) != len(weights) or not ratios:
            raise ValueError("ratios and weights must be non-empty and of the same length")
        if any(r <= 1.0 for r in ratios) or no_harm_ratio <= 1.0:
            raise ValueError("harm ratios and no_harm_ratio must be > 1")
        if any(w <= 0 for w in weights):
            raise ValueError("weights must be > 0")
        total = sum(weights)
        self.harm_ratios = tuple(ratios)
        self.no_harm_ratio = no_harm_ratio
        grid = np.array([*ratios, no_harm_ratio], dtype=np.float64)
        self._r_minus_1 = grid - 1.0
        self._log_r = np.log(grid)
        self._log_w = np.log(np.array(weights, dtype=np.float64) / total)
        self._log_w_list: list[float] = self._log_w.tolist()
        self._grid_terms = list(zip(self._log_r.tolist(), self._r_minus_1.tolist(), strict=True))
        self._n_harm = len(ratios)

    def empty(self) -> ArmEvidence:
        """Evidence of no buckets (log-LR 0: the martingale's start)."""
        return ArmEvidence(np.zeros(self._n_harm + 1), 0, 0, 0.0)

    def bucket_log_lr(
        self,
        canary_requests: npt.ArrayLike,
        primary_requests: npt.ArrayLike,
        canary_events: npt.ArrayLike,
        primary_events: npt.ArrayLike,
    ) -> tuple[FloatArray, FloatArray]:
        """Per-bucket log-LR increments, shape ``(grid, buckets)``, and the canary events expected
        per bucket under equal rates. Buckets where one arm had no requests carry no information
        (``rho`` is 0 or 1) and contribute 0."""
        n_c = np.asarray(canary_requests, dtype=np.float64)
        n_p = np.asarray(primary_requests, dtype=np.float64)
        e_c = np.asarray(canary_events, dtype=np.float64)
        e = e_c + np.asarray(primary_events, dtype=np.float64)
        total = n_c + n_p
        rho = np.divide(n_c, total, out=np.zeros_like(n_c), where=total > 0)
        informative = (n_c > 0) & (n_p > 0)
        e = np.where(informative, e, 0.0)
        e_c = np.where(informative, e_c, 0.0)
        # log-LR_j = E_c ln r_j - E ln(1 + (r_j - 1) rho)
        inc = np.outer(self._log_r, e_c) - np.log1p(np.outer(self._r_minus_1, rho)) * e
        return inc, e * rho

    def evidence(
        self,
        canary_requests: npt.ArrayLike,
        primary_requests: npt.ArrayLike,
        canary_events: npt.ArrayLike,
        primary_events: npt.ArrayLike,
    ) -> ArmEvidence:
        """Evidence of a batch of buckets (one entry per bucket)."""
        inc, expected = self.bucket_log_lr(canary_requests, primary_requests, canary_events, primary_events)
        n_c = np.asarray(canary_requests)
        n_p = np.asarray(primary_requests)
        informative = (n_c > 0) & (n_p > 0)
        c = int(np.sum(np.where(informative, np.asarray(canary_events), 0)))
        p = int(np.sum(np.where(informative, np.asarray(primary_events), 0)))
        return ArmEvidence(inc.sum(axis=1), c, c + p, float(expected.sum()))

    def few_buckets(self, rows: Iterable[tuple[int, int, int, int]]) -> ArmEvidence:
        """Evidence of a few buckets ``(canary requests, primary requests, canary events, primary
        events)`` in plain Python: the same sums as :meth:`evidence`, faster than numpy for the
        handful of buckets one verdict adds."""
        acc = [0.0] * len(self._grid_terms)
        canary = events = 0
        expected = 0.0
        for n_c, n_p, e_c, e_p in rows:
            e = e_c + e_p
            if n_c <= 0 or n_p <= 0 or e == 0:
                continue
            rho = n_c / (n_c + n_p)
            for j, (log_r, r_minus_1) in enumerate(self._grid_terms):
                acc[j] += e_c * log_r - e * math.log1p(r_minus_1 * rho)
            canary += e_c
            events += e
            expected += e * rho
        return ArmEvidence(np.array(acc), canary, events, expected)

    def harm_log_e_path(self, cumulative_log_lr: FloatArray) -> FloatArray:
        """Harm log e-values along a path of cumulative log-LRs, shape ``(grid, T)`` -> ``(T,)``."""
        z = cumulative_log_lr[: self._n_harm] + self._log_w[:, None]
        top = z.max(axis=0)
        return np.asarray(top + np.log(np.exp(z - top).sum(axis=0)), dtype=np.float64)

    def harm_log_e(self, ev: ArmEvidence) -> float:
        """Log of the harm e-value (mixture over the grid); 0 at the start."""
        z = [v + w for v, w in zip(ev.log_lr[: self._n_harm].tolist(), self._log_w_list, strict=True)]
        top = max(z)
        return float(top + math.log(sum(math.exp(v - top) for v in z)))

    def harm_fires(self, ev: ArmEvidence, alpha: float) -> bool:
        """Roll back: the mixture crossed ``1/alpha`` and the canary has more events than expected."""
        return ev.canary_events > ev.expected_canary and self.harm_log_e(ev) >= math.log(1.0 / alpha)

    def no_harm_log_lr(self, ev: ArmEvidence) -> float:
        """Log-LR of ``r = 1`` against ``r = no_harm_ratio`` (mirrored test)."""
        return -float(ev.log_lr[self._n_harm])

    def no_harm_passes(self, ev: ArmEvidence, beta: float) -> bool:
        """Evidence that the canary is not ``no_harm_ratio`` times worse: LR >= ``1/beta``."""
        return self.no_harm_log_lr(ev) >= math.log(1.0 / beta)


def sprt_log_lr(n: int, x: int, p0: float, p1: float) -> float:
    """Wald's log-LR of rate ``p1`` against ``p0`` after ``x`` events in ``n`` trials.

    With ``p1 > p0`` it is a supermartingale for every true rate ``<= p0`` (roll back at
    ``ln(1/alpha)``); with ``p1 < p0`` for every rate ``>= p0`` (accept at ``ln(1/beta)``)."""
    if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0):
        raise ValueError("rates must be in (0, 1)")
    return x * math.log(p1 / p0) + (n - x) * math.log1p((p0 - p1) / (1.0 - p0))


def sprt_fires(n: int, x: int, p0: float, p1: float, alpha: float) -> bool:
    """True when the SPRT's log-LR reaches ``ln(1/alpha)`` (exact Ville bound)."""
    return sprt_log_lr(n, x, p0, p1) >= math.log(1.0 / alpha)


def srm_log_bf(
    canary: int, primary: int, expected_share: float, offsets: tuple[float, ...] = SRM_OFFSETS
) -> float:
    """Log Bayes factor of "the canary share is not the routed share" (equal-weight mixture over
    shares ``logistic(logit(expected_share) + d)``) against the routed share, from request
    counts under a constant routed share. Its exponential is a test martingale under correct
    routing; shares close to the routed one (well inside the nearest offset) drive it to 0."""
    if not 0.0 < expected_share < 1.0:
        raise ValueError("expected_share must be in (0, 1)")
    a, b = _srm_terms(expected_share, offsets)
    z = [canary * x + primary * y for x, y in zip(a, b, strict=True)]
    top = max(z)
    return top + math.log(sum(math.exp(v - top) for v in z) / len(z))


@functools.lru_cache(maxsize=64)
def _srm_terms(expected_share: float, offsets: tuple[float, ...]) -> tuple[list[float], list[float]]:
    """Per alternative share q: ``ln(q / share)`` and ``ln((1 - q) / (1 - share))``."""
    logit = math.log(expected_share / (1.0 - expected_share))
    qs = [1.0 / (1.0 + math.exp(-(logit + d))) for d in offsets]
    return [math.log(q / expected_share) for q in qs], [
        math.log((1.0 - q) / (1.0 - expected_share)) for q in qs
    ]


def split_alpha(alpha: float, tests: int) -> float:
    """Bonferroni: each of ``tests`` harm tests spends ``alpha / tests``."""
    if tests <= 0:
        raise ValueError("tests must be > 0")
    return alpha / tests


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def rate_bounds(n: int, x: int, alpha: float, prior_mean: float = 0.01) -> tuple[float, float]:
    """Anytime-valid ``1 - alpha`` confidence sequence ``(low, high)`` for a Bernoulli rate after
    ``x`` events in ``n`` trials: every rate ``q`` whose beta-binomial mixture martingale
    ``M(q) = B(a + x, b + n - x) / B(a, b) / (q^x (1 - q)^(n - x))`` is below ``1/alpha``.

    ``M(q)`` is a test martingale when the true rate is ``q`` (a mixture of likelihood ratios
    against ``q``), so by Ville the true rate leaves the interval with probability <= ``alpha``
    at any time, however often it is looked at. The prior Beta(1, 1/prior_mean - 1) puts its mass
    on rare rates, which makes the bounds tight where canary error rates live. Bounds are found by
    bisection on ``log q`` (relative precision ~1e-6)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if n <= 0:
        return 0.0, 1.0
    a, b = 1.0, max(1.0 / prior_mean - 1.0, 1.0)
    floor = _log_beta(a + x, b + n - x) - _log_beta(a, b) - math.log(1.0 / alpha)
    m = n - x

    def inside(log_q: float) -> bool:  # the likelihood of q is high enough that M(q) < 1/alpha
        q = math.exp(log_q)
        return q < 1.0 and x * log_q + m * math.log1p(-q) > floor

    if x == 0:  # n log(1 - q) > floor has a closed form
        return 0.0, -math.expm1(floor / n)
    # The log-likelihood is concave in q with its maximum at x/n, where the mixture is below it.
    p_hat = x / n
    lo, hi = math.log(p_hat), 0.0
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if inside(mid) else (lo, mid)
    high = math.exp(hi)
    lo, hi = math.log(1e-9), math.log(p_hat)
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return math.exp(lo), high


_BISECTIONS = 30
