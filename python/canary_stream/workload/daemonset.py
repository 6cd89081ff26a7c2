"""DaemonSet targets, as Flagger's pkg/canary/daemonset_controller.go does it.

A DaemonSet has no replica count: it is "scaled to zero" by a nodeSelector no node matches
(`flagger.app/scale-to-zero: "true"`, Flagger's key, so a Flagger-managed DaemonSet reads the
same) and scaled up again by removing it. That key is never part of a revision (scaling the canary
down must not look like a new release) and never reaches the primary. Readiness is Flagger's
isDaemonSetReady: the controller has observed the current generation, every desired pod is
updated and available."""

from __future__ import annotations

import copy
from typing import Any

from canary_stream.workload.base import Readiness

#: The nodeSelector that keeps a DaemonSet's pods off every node.
SCALE_TO_ZERO = "flagger.app/scale-to-zero"
#: DaemonSet spec fields the primary takes from the target (besides selector and template).
COPIED_FIELDS = ("minReadySeconds", "revisionHistoryLimit", "updateStrategy")


def without_scale_to_zero(template: dict[str, Any]) -> dict[str, Any]:
    """`template` (a pod template) minus the scale-to-zero nodeSelector; a nodeSelector left empty
    by that is dropped, so a template that never had one reads the same before and after."""
    node_selector = (template.get("spec") or {}).get("nodeSelector")
    if not isinstance(node_selector, dict) or SCALE_TO_ZERO not in node_selector:
        return template
    out = copy.deepcopy(template)
    rest = {k: v for k, v in node_selector.items() if k != SCALE_TO_ZERO}
    if rest:
        out["spec"]["nodeSelector"] = rest
    else:
        del out["spec"]["nodeSelector"]
    return out


def scale_patch(to_zero: bool) -> dict[str, Any]:
    """The merge patch that scales a DaemonSet to zero (or back up: null deletes the key)."""
    return {"spec": {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO: "true" if to_zero else None}}}}}


def is_scaled_to_zero(daemonset: dict[str, Any]) -> bool:
    template = (daemonset.get("spec") or {}).get("template") or {}
    return SCALE_TO_ZERO in ((template.get("spec") or {}).get("nodeSelector") or {})


def update_strategy_error(target: dict[str, Any]) -> str | None:
    """Why the target cannot be canaried: Flagger needs the RollingUpdate strategy (OnDelete would
    never roll the primary's pods)."""
    strategy = ((target.get("spec") or {}).get("updateStrategy") or {}).get("type")
    if strategy in (None, "", "RollingUpdate"):
        return None
    name = (target.get("metadata") or {}).get("name", "?")
    return f"DaemonSet {name}: spec.updateStrategy.type must be RollingUpdate, not {strategy}"


def daemonset_readiness(daemonset: dict[str, Any], not_ready_for_s: float, deadline_s: int) -> Readiness:
    """Flagger's isDaemonSetReady. A DaemonSet not ready for longer than `deadline_s`
    (progressDeadlineSeconds) fails for good."""
    meta = daemonset.get("metadata") or {}
    status = daemonset.get("status") or {}
    retriable = not_ready_for_s <= deadline_s
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return Readiness(
            False,
            retriable,
            "waiting for rollout to finish: observed daemonset generation less than desired generation",
        )
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if updated < desired:
        return Readiness(
            False,
            retriable,
            f"waiting for rollout to finish: {updated} out of {desired} new pods have been updated",
        )
    if available < desired:
        return Readiness(
            False,
            retriable,
            f"waiting for rollout to finish: {available} of {desired} updated pods are available",
        )
    return Readiness(True)


class NotReadyClock:
    """How long each DaemonSet has been read not ready, for its progress deadline (Flagger counts
    from the Canary's last transition, which the workloads do not see). The wait starts at the
    first not-ready read of a generation, and again after a silence longer than `silence_s` (no
    one was waiting: the Canary was idle, or deleted and created again), so an old wait never
    fails a new rollout."""

    def __init__(self, silence_s: float = 60.0) -> None:
        self.silence_s = silence_s
        # (namespace, name) -> (generation, since, last read)
        self._waits: dict[tuple[str, str], tuple[int, float, float]] = {}

    def waited(self, daemonset: dict[str, Any], now: float) -> float:
        """Seconds the DaemonSet has been waited for, this read included."""
        meta = daemonset.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        generation = int(meta.get("generation") or 0)
        seen = self._waits.get(key)
        since = now
        if seen is not None and seen[0] == generation and now - seen[2] <= self.silence_s:
            since = seen[1]
        self._waits[key] = (generation, since, now)
        return now - since

    def ready(self, daemonset: dict[str, Any]) -> None:
        meta = daemonset.get("metadata") or {}
        self._waits.pop((str(meta.get("namespace")), str(meta.get("name"))), None)
