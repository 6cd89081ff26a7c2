"""Read the Registry into the API's bodies: strict numbers (non-finite -> None), the aggregator
target a canary is judged on, and which verdict is current."""

from __future__ import annotations

import math
import time
from typing import Any

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.api import models
from canary_stream.controller.phases import ANALYSING, Phase
from canary_stream.controller.scheduler import Rollout
from canary_stream.core import Aggregator, VersionStats
from canary_stream.spec.duration import parse_duration


def finite(x: float | None) -> float | None:
    """``x`` if it is a finite number, else None (strict JSON has no NaN or Infinity)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively; tuples become lists,
    other objects their str()."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    return str(value)


def target_of(rollout: Rollout) -> str:
    """The aggregator target the canary is judged on: the analyzer's own when it says
    (``Analyzer.target``, possibly behind a recorder's ``inner``), else ``<service>.<namespace>``
    as the controller and the simulator name it."""
    analyzer: Any = rollout.analyzer
    for _ in range(4):
        if analyzer is None:
            break
        target = getattr(analyzer, "target", None)
        if isinstance(target, str) and target:
            return target
        analyzer = getattr(analyzer, "inner", None)
    c = rollout.canary
    return f"{c.spec.service.name or c.spec.target_ref.name}.{c.namespace}"


def run_started_at(rollout: Rollout) -> float | None:
    """When the current run began: the last move into Progressing from a phase outside the
    analysis (a new revision), or None when no run has started."""
    started = None
    previous: Phase | None = None
    for at, phase in rollout.transitions:
        if phase == Phase.PROGRESSING and previous not in ANALYSING:
            started = at
        previous = phase
    return started


def current_verdict(rollout: Rollout, max_age_s: float | None, now: float | None = None) -> Verdict | None:
    """The latest verdict of the current run; None when there is none, when it belongs to an
    earlier run, or when it is older than ``max_age_s`` (stale data is no data)."""
    v = rollout.last_verdict
    if v is None:
        return None
    started = run_started_at(rollout)
    if started is not None and v.at + 1e-6 < started:
        return None
    if max_age_s is not None and (now if now is not None else time.time()) - v.at > max_age_s:
        return None
    return v


def verdict_body(v: Verdict) -> models.VerdictBody:
    """A Verdict as the API shows it."""
    return models.VerdictBody(
        decision=v.decision.value,
        at=finite(v.at) or 0.0,
        reasons=list(v.reasons),
        figures_window_s=finite(v.extra.get("figures_window_s")),
        versions=[
            models.VersionFigures(
                version=f.version,
                requests=f.requests,
                failures=f.failures,
                success_rate=finite(f.success_rate),
                p50_ms=finite(f.p50_ms),
                p90_ms=finite(f.p90_ms),
                p99_ms=finite(f.p99_ms),
                slow=f.slow,
            )
            for f in v.versions
        ],
        tests=[
            models.TestEvidence(
                name=t.name,
                decision=t.decision.value,
                statistic=finite(t.statistic),
                boundary=finite(t.boundary),
                alpha=finite(t.alpha),
                detail=t.detail,
            )
            for t in v.tests
        ],
        canary_share=finite(v.canary_share),
        expected_share=finite(v.expected_share),
        extra=strict(v.extra),
    )


def summary(namespace: str, name: str, rollout: Rollout, verdict: Verdict | None) -> dict[str, Any]:
    """The fields of :class:`models.CanarySummary`."""
    s = rollout.status
    return {
        "namespace": namespace,
        "name": name,
        "target": target_of(rollout),
        "strategy": rollout.strategy.value,
        "phase": s.phase.value if s.phase else "",
        "canary_weight": s.canary_weight,
        "primary_weight": 100 - s.canary_weight,
        "failed_checks": s.failed_checks,
        "iterations": s.iterations,
        "paused": rollout.paused,
        "decision": verdict.decision.value if verdict is not None else None,
    }


def live_version(s: VersionStats) -> models.LiveVersion:
    """A snapshot row as the API shows it."""
    return models.LiveVersion(
        version=s.version,
        start_ms=s.start_ms,
        end_ms=s.end_ms,
        requests=s.requests,
        successes=s.successes,
        failures=s.failures,
        rps=finite(s.rps),
        success_rate=finite(s.success_rate),
        p50_ms=finite(s.p50_ms),
        p90_ms=finite(s.p90_ms),
        p99_ms=finite(s.p99_ms),
        p999_ms=finite(s.p999_ms),
        mean_ms=finite(s.mean_ms),
        status_2xx=s.status_2xx,
        status_3xx=s.status_3xx,
        status_4xx=s.status_4xx,
        status_5xx=s.status_5xx,
    )


def snapshot(aggregator: Aggregator | None, target: str, window_s: float) -> list[VersionStats]:
    """Per-version figures of ``target`` over the last ``window_s`` seconds, by version name."""
    if aggregator is None:
        return []
    return sorted(aggregator.snapshot(window_s, target=target), key=lambda s: s.version)


def analysis_windows(rollout: Rollout, aggregator: Aggregator | None) -> list[models.WindowFigures]:
    """Per-version figures over each distinct metric interval of the analysis (unparsable
    intervals are skipped: the verdict reports them)."""
    windows: dict[float, list[str]] = {}
    for m in rollout.analysis.metrics:
        try:
            w = parse_duration(m.interval)
        except ValueError:
            continue
        if w > 0:
            windows.setdefault(w, []).append(m.name)
    target = target_of(rollout)
    return [
        models.WindowFigures(
            window_s=w, metrics=names, versions=[live_version(s) for s in snapshot(aggregator, target, w)]
        )
        for w, names in sorted(windows.items())
    ]


def parse_window(text: str, max_s: float) -> float:
    """A caller's window (``30s``, ``5m``, or plain seconds) in seconds, 1 s to ``max_s``."""
    text = text.strip()
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as e:
        raise ValueError(f"window: {e}") from None
    if not math.isfinite(seconds) or not 1.0 <= seconds <= max_s:
        raise ValueError(f"window: must be between 1s and {max_s:g}s, got {text!r}")
    return seconds


DECISION_ORDER = (Decision.CONTINUE, Decision.PASS, Decision.FAIL, Decision.INCONCLUSIVE)
