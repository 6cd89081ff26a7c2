"""The planned schedule of a rollout: which canary weights (or iterations) the analysis steps
through, and how traffic goes back to the primary while Promoting. Follows Flagger's scheduler
(`maxWeight`, `nextStepWeight`, `runCanary`, `runAB`, `runBlueGreen`, `runPromotionTrafficShift`)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from canary_stream.spec.model import Analysis, Canary, Strategy

TOTAL_WEIGHT = 100
# Flagger forces this many iterations when provider is kubernetes and none are set.
KUBERNETES_DEFAULT_ITERATIONS = 10


def max_weight(analysis: Analysis) -> int:
    """Flagger's `maxWeight`: the last stepWeights element (capped at 100), else maxWeight, else 100."""
    if analysis.step_weights:
        return min(TOTAL_WEIGHT, analysis.step_weights[-1])
    return analysis.max_weight or TOTAL_WEIGHT


def next_step_weight(analysis: Analysis, canary_weight: int) -> int:
    """Flagger's `nextStepWeight`: how much weight the next step adds. stepWeight wins when set;
    with stepWeights, the first element, then the gap to the element after the current weight
    (a weight not on the ladder jumps to 100)."""
    steps = analysis.step_weights or []
    if analysis.step_weight or not steps:
        return analysis.step_weight or 0
    max_step = TOTAL_WEIGHT - canary_weight
    if max_step == 0:
        return 1  # any positive step makes the caller promote
    if canary_weight == 0:
        return min(max_step, steps[0])
    for current, following in itertools.pairwise(steps):
        if current == canary_weight:
            return min(max_step, following - canary_weight)
    return max_step


def promotion_weights(analysis: Analysis | None, start: int) -> list[int]:
    """Canary weights written while Promoting, from `start`: stepWeightPromotion per tick, or
    0 at once when it is unset or 0."""
    step = analysis.step_weight_promotion if analysis else None
    if not step:
        return [0]
    out, w = [], start
    while w > 0:
        w = max(0, w - step)
        out.append(w)
    return out or [0]


@dataclass(frozen=True)
class Step:
    """One analysis step of Progressing: the canary weight routed while it dwells (>= interval).
    `mirrored`: the canary also receives a copy of primary traffic; `iteration`: 1-based round of
    A/B testing or blue/green; `route`: "match" when only requests matching `analysis.match` move."""

    canary_weight: int
    mirrored: bool = False
    iteration: int | None = None
    route: str = "all"


@dataclass(frozen=True)
class Schedule:
    """The plan of one rollout (what happens if every check passes)."""

    strategy: Strategy
    steps: list[Step] = field(default_factory=list)
    promotion_weights: list[int] = field(default_factory=list)
    iterations: int = 0  # A/B and blue/green rounds; 0 for the canary (weights) strategy
    mirror: bool = False
    mirror_weight: int | None = None  # percent of requests copied; None = all
    max_weight: int = TOTAL_WEIGHT
    interval_s: float = 60.0
    skip_analysis: bool = False

    @property
    def weights(self) -> list[int]:
        """Canary weights routed during Progressing, in order (mirror-only and unrouted steps
        left out, repeats collapsed): the ladder for canary, [100] for A/B (matching requests)
        and blue/green (the switch before promotion)."""
        out: list[int] = []
        for s in self.steps:
            if s.canary_weight > 0 and (not out or out[-1] != s.canary_weight):
                out.append(s.canary_weight)
        return out

    @property
    def min_analysis_s(self) -> float:
        """Shortest time Progressing can take: every step dwells at least one interval."""
        return len(self.steps) * self.interval_s

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the `validate --json` fields plus the detailed steps)."""
        return {
            "strategy": str(self.strategy),
            "weights": self.weights,
            "iterations": self.iterations,
            "mirror": self.mirror,
            "mirror_weight": self.mirror_weight,
            "max_weight": self.max_weight,
            "promotion_weights": self.promotion_weights,
            "interval_s": self.interval_s,
            "min_analysis_s": self.min_analysis_s,
            "skip_analysis": self.skip_analysis,
            "steps": [asdict(s) for s in self.steps],
        }


def plan(canary: Canary) -> Schedule:
    """The schedule a valid canary follows when every check passes."""
    strategy = canary.strategy()
    a = canary.spec.analysis
    if a is None or canary.spec.skip_analysis:
        # Promoted straight away once the canary is ready (§1.16): no steps, no traffic shift.
        return Schedule(strategy, skip_analysis=True, interval_s=a.interval_seconds if a else 60.0)
    kubernetes = canary.spec.provider == "kubernetes"
    common: dict[str, Any] = {"interval_s": a.interval_seconds, "mirror_weight": a.mirror_weight}
    if strategy is Strategy.CANARY:
        steps = _canary_steps(a)
        last = steps[-1].canary_weight if steps else 0
        return Schedule(
            strategy,
            steps,
            promotion_weights(a, last),
            mirror=a.mirror,
            max_weight=max_weight(a),
            **common,
        )
    n = a.iterations or KUBERNETES_DEFAULT_ITERATIONS
    if strategy is Strategy.AB_TESTING:
        steps = [Step(TOTAL_WEIGHT, iteration=i, route="match") for i in range(1, n + 1)]
        return Schedule(strategy, steps, promotion_weights(a, TOTAL_WEIGHT), n, **common)
    # Blue/green: live traffic stays on the primary (mirrored to the canary if asked) for n
    # iterations, then one tick with all traffic on the canary before the primary is promoted.
    # The kubernetes provider cannot route or mirror: no switch, straight to Finalising.
    mirrored = a.mirror and not kubernetes
    steps = [Step(0, mirrored=mirrored, iteration=i) for i in range(1, n + 1)]
    if kubernetes:
        return Schedule(strategy, steps, [], n, **common)
    steps.append(Step(TOTAL_WEIGHT))
    return Schedule(strategy, steps, promotion_weights(a, TOTAL_WEIGHT), n, mirror=a.mirror, **common)


def _canary_steps(a: Analysis) -> list[Step]:
    # runCanary tick by tick: with mirror, one mirrored step at weight 0 first; weights are
    # clamped to 100, not to maxWeight, so stepWeight may overshoot it (20, 40, 60 for max 50).
    top = max_weight(a)
    steps: list[Step] = []
    weight, mirrored = 0, False
    while weight < top:
        step = next_step_weight(a, weight)
        if step <= 0:
            break  # Flagger would never advance; validation rejects such specs
        if a.mirror and weight == 0 and not mirrored:
            mirrored = True
            steps.append(Step(0, mirrored=True))
            continue
        if a.mirror and weight == 0:
            mirrored, weight = False, step
        else:
            weight = min(TOTAL_WEIGHT, weight + step)
        steps.append(Step(weight))
    return steps
