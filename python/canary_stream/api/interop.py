"""The answers other controllers act on: Flagger webhooks (status code <= 202 passes, anything
else halts) and Argo Rollouts' ``web`` metric provider (HTTP 200 with a ``verdict`` field).

No data never passes: without a current verdict a Flagger gate halts and Argo reads
``inconclusive``. Verdicts are sticky per run: once the rollout failed, both keep answering
``fail`` until a new revision starts a new run."""

from __future__ import annotations

from dataclasses import dataclass

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.api import models
from canary_stream.api.views import finite
from canary_stream.controller.phases import Phase
from canary_stream.controller.scheduler import Rollout
from canary_stream.core import Aggregator

#: Flagger hook types this gate answers, and how (see ``flagger_gate``).
GATES = ("rollout", "pre-rollout", "confirm-rollout", "confirm-traffic-increase", "confirm-promotion")
ACKS = ("post-rollout", "event")
HOOKS = (*GATES, "rollback", *ACKS)

PROMOTED = frozenset({Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED})

OK = 200
HALT_FAIL = 409  # Conflict: the judge says the canary is worse
HALT_EARLY = 425  # Too Early: no data or no decision yet


@dataclass(frozen=True)
class GateResult:
    """HTTP status for Flagger and the body's fields."""

    status: int
    decision: Decision | None
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status <= 202


def _why(v: Verdict) -> str:
    return "; ".join(v.reasons) or v.decision.value


def _primary_has_traffic(aggregator: Aggregator | None, target: str, window_s: float) -> bool:
    if aggregator is None:
        return False
    return any(
        s.version == "primary" and s.requests > 0 for s in aggregator.snapshot(window_s, target=target)
    )


def flagger_gate(
    hook: str,
    rollout: Rollout,
    verdict: Verdict | None,
    aggregator: Aggregator | None,
    target: str,
) -> GateResult:
    """Flagger's question ``hook`` about ``rollout``, answered from the current ``verdict``.

    * ``rollout`` (every analysis tick): pass while no harm is shown (``continue`` or ``pass``);
      halt on ``fail`` (409) and without data or on an invalid comparison (425, Flagger counts a
      failed check: no data is never a pass).
    * ``confirm-promotion`` / ``confirm-traffic-increase``: pass only on ``pass``.
    * ``pre-rollout`` / ``confirm-rollout``: pass when the judge has a baseline (primary traffic
      over the analysis interval); pre-rollout also needs no standing ``fail`` (confirm-rollout
      asks about a new revision: the previous run's failure does not block it).
    * ``rollback``: **200 means roll back** in Flagger; answered 200 only on ``fail``.
    * ``post-rollout`` / ``event``: acknowledged (Flagger only logs them)."""
    phase = rollout.status.phase
    if hook in ACKS:
        return GateResult(OK, verdict.decision if verdict else None, f"{hook} acknowledged")
    failed = phase == Phase.FAILED or (verdict is not None and verdict.decision == Decision.FAIL)
    if hook == "rollback":
        if failed:
            why = _why(verdict) if verdict is not None else "the rollout failed"
            return GateResult(OK, Decision.FAIL, f"roll back: {why}")
        return GateResult(
            HALT_FAIL, verdict.decision if verdict else None, "no rollback: the judge found no harm"
        )
    # confirm-rollout asks about a *new* revision: a failure of the previous run must not block it.
    if failed and hook != "confirm-rollout":
        why = _why(verdict) if verdict is not None else "the rollout failed"
        return GateResult(HALT_FAIL, Decision.FAIL, f"canary failed: {why}")
    if hook in ("pre-rollout", "confirm-rollout"):
        if aggregator is None:
            return GateResult(HALT_EARLY, None, "no telemetry: the aggregator is not running")
        if not _primary_has_traffic(aggregator, target, max(rollout.interval, 60.0)):
            return GateResult(HALT_EARLY, None, f"no primary traffic for {target}: the judge has no baseline")
        return GateResult(
            OK, verdict.decision if verdict else None, "telemetry flowing: the judge has a baseline"
        )
    if phase in PROMOTED:
        return GateResult(OK, Decision.PASS, f"canary analysis completed ({phase.value if phase else ''})")
    if verdict is None:
        return GateResult(HALT_EARLY, None, "no current verdict: no canary data yet")
    d = verdict.decision
    if hook == "rollout":
        if d in (Decision.CONTINUE, Decision.PASS):
            return GateResult(OK, d, _why(verdict))
        return GateResult(HALT_EARLY, d, _why(verdict))
    # confirm-promotion, confirm-traffic-increase
    if d == Decision.PASS:
        return GateResult(OK, d, _why(verdict))
    return GateResult(HALT_EARLY, d, f"not passed yet: {_why(verdict)}")


def argo_answer(
    namespace: str, name: str, rollout: Rollout, verdict: Verdict | None, canary_hash: str | None
) -> models.ArgoAnswer:
    """The ``web`` provider's result: ``fail`` once the rollout failed (sticky), ``pass`` once it
    is promoted, otherwise the current verdict, ``inconclusive`` without one."""
    phase = rollout.status.phase
    if phase == Phase.FAILED:
        decision = Decision.FAIL
        reasons = list(verdict.reasons) if verdict is not None else ["the rollout failed"]
    elif phase in PROMOTED:
        decision = Decision.PASS
        reasons = [f"canary analysis completed ({phase.value if phase else ''})"]
    elif verdict is None:
        decision = Decision.INCONCLUSIVE
        reasons = ["no current verdict: no canary data yet"]
    else:
        decision = verdict.decision
        reasons = list(verdict.reasons)
    figures = {f.version: f for f in verdict.versions} if verdict is not None else {}
    canary = figures.get("canary")
    primary = figures.get("primary")
    evidence = (
        {
            t.name: models.ArgoEvidence(
                decision=t.decision.value, statistic=finite(t.statistic), boundary=finite(t.boundary)
            )
            for t in verdict.tests
        }
        if verdict is not None
        else {}
    )
    return models.ArgoAnswer(
        verdict=decision.value,
        reason="; ".join(reasons),
        reasons=reasons,
        namespace=namespace,
        name=name,
        phase=phase.value if phase else "",
        canaryWeight=rollout.status.canary_weight,
        successRate=finite(canary.success_rate) if canary else None,
        primarySuccessRate=finite(primary.success_rate) if primary else None,
        canaryRequests=canary.requests if canary else 0,
        primaryRequests=primary.requests if primary else 0,
        canaryP99Ms=finite(canary.p99_ms) if canary else None,
        primaryP99Ms=finite(primary.p99_ms) if primary else None,
        at=finite(verdict.at) if verdict is not None else None,
        canaryHash=canary_hash,
        evidence=evidence,
    )
