"""The rollout scheduler: one `Rollout` per Canary drives Flagger's phases and strategies, but acts on
events (verdicts, revision changes, manual commands, timers on the injected Clock) instead of a
fixed tick. A step advances once its dwell time (`analysis.interval`) has passed and the judge
passes it; a `fail` verdict rolls back at once."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.clock import Clock, SimClock
from canary_stream.controller.alerts import AlertSink, metadata_fields
from canary_stream.controller.events import Event, EventSink, EventType, MemoryEventSink
from canary_stream.controller.hashing import checksum
from canary_stream.controller.phases import ANALYSING, FINISHED, SETTLED, Phase
from canary_stream.controller.status import CanaryStatus
from canary_stream.controller.webhooks import HookResult, HookType, WebhookClient, hook_type
from canary_stream.router.base import InitializingRouter, Router, RouterNotReady, Routes
from canary_stream.spec.duration import parse_duration
from canary_stream.spec.model import Analysis, Canary, Strategy, Webhook
from canary_stream.spec.schedule import (
    KUBERNETES_DEFAULT_ITERATIONS,
    TOTAL_WEIGHT,
    max_weight,
    next_step_weight,
)
from canary_stream.workload.base import Workloads

_EPS = 1e-6
log = logging.getLogger(__name__)


class Analyzer(Protocol):
    """The judge as the scheduler sees it (implemented in `analysis/analyzer.py`)."""

    def start_step(self, at: float, routes: Routes) -> None:
        """A new step began at `at` with these routes: evidence starts afresh."""

    def verdict(self, now: float) -> Verdict:
        """The judge's answer about the current step at `now`."""


@dataclass(frozen=True)
class RolloutOptions:
    """Knobs that are not in the Canary spec."""

    min_interval_s: float = 10.0  # Flagger raises shorter analysis intervals to 10s
    readiness_recheck_s: float = 5.0  # how often readiness is re-read while waiting (no watch here)
    rollback_step_weight: int | None = None  # gradual rollback: canary weight removed per step
    rollback_step_s: float = 10.0  # time between gradual rollback steps
    finalise_delay_s: float | None = None  # Finalising -> Succeeded; None = one interval (Flagger's tick)
    event_webhook: str | None = None  # Flagger's -event-webhook: events of Canaries without an event hook


class Command(StrEnum):
    """Manual commands."""

    PROMOTE = "promote"
    ABORT = "abort"
    PAUSE = "pause"
    RESUME = "resume"
    SET_WEIGHT = "set-weight"
    DELETE = "delete"


@dataclass(frozen=True)
class _Timer:
    pass


@dataclass(frozen=True)
class _Nudge:
    pass


@dataclass(frozen=True)
class _VerdictEvent:
    verdict: Verdict


@dataclass(frozen=True)
class _RevisionEvent:
    pass


@dataclass(frozen=True)
class _CommandEvent:
    command: Command
    weight: int | None = None


@dataclass(frozen=True)
class _SpecEvent:
    canary: Canary


@dataclass(frozen=True)
class _Stop:
    pass


_Item = _Timer | _Nudge | _VerdictEvent | _RevisionEvent | _CommandEvent | _SpecEvent | _Stop


def duration_or(text: str | None, default: float) -> float:
    """A Go duration in seconds, or `default` when absent or unparsable (Flagger's fallback)."""
    try:
        return parse_duration(text) if text else default
    except ValueError:
        return default


def next_canary_weight(analysis: Analysis, canary_weight: int) -> int:
    """The canary weight of the next step: Flagger's `nextStepWeight` (spec/schedule.py), with two
    deliberate differences. A weight off the stepWeights ladder (a manual set-weight) goes to
    maxWeight, where Flagger would jump to 100 % past maxWeight; and with neither stepWeight nor
    stepWeights the canary goes straight to maxWeight, where Flagger would never move."""
    top = max_weight(analysis)
    step = next_step_weight(analysis, canary_weight)
    if not step:
        return top
    ladder = analysis.step_weights or []
    if not analysis.step_weight and ladder and canary_weight not in (0, *ladder):
        return max(canary_weight, top)
    return min(TOTAL_WEIGHT, canary_weight + step)


class Rollout:
    """Drives one Canary. Feed it with `on_verdict`, `on_revision`, the manual commands and
    `update_spec`; `run()` processes them in order until `stop()`."""

    def __init__(
        self,
        canary: Canary,
        router: Router,
        workloads: Workloads,
        clock: Clock,
        *,
        analyzer: Analyzer | None = None,
        webhooks: WebhookClient | None = None,
        events: EventSink | None = None,
        alerts: AlertSink | None = None,
        status: CanaryStatus | None = None,
        options: RolloutOptions | None = None,
        on_status: Callable[[CanaryStatus], None] | None = None,
    ) -> None:
        self.canary = canary
        self.router = router
        self.workloads = workloads
        self.clock = clock
        self.analyzer = analyzer
        self.webhooks = webhooks
        self.events: EventSink = events if events is not None else MemoryEventSink()
        self.alerts = alerts
        self.status = status or CanaryStatus()
        self.options = options or RolloutOptions()
        self.on_status = on_status
        #: (time, canary weight) at every route write — what the simulator plots.
        self.weights: list[tuple[float, int]] = []
        #: (time, phase) at every phase change.
        self.transitions: list[tuple[float, Phase]] = []
        self.last_verdict: Verdict | None = None
        self.paused = False
        self.finished = asyncio.Event()

        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._deadlines: list[float] = []
        self._armed_at: float | None = None
        self._timer: asyncio.Task[None] | None = None
        # per-run / per-step state
        self._step_started: float | None = None  # None: no step yet in this run (pre-rollout next)
        self._latest: Verdict | None = None  # latest verdict of the current step
        self._hooks_ok = True  # rollout hooks passed at the last check of this step
        self._next_tick = 0.0  # next analysis check (hooks, pulled verdict), once per interval
        self._gate_retry_at = 0.0  # a denied confirm-* gate is asked again from then on
        self._last_failed_check: tuple[float, int] | None = None  # (step origin, window index)
        self._next_shift = 0.0  # next promotion traffic shift (stepWeightPromotion)
        self._finalise_at = 0.0
        self._rolling_back = False
        self._next_rollback_step = 0.0

    # -- public inputs -------------------------------------------------------------------------------

    def on_verdict(self, verdict: Verdict) -> None:
        """A verdict from the judge (a `fail` rolls back at once)."""
        self._post(_VerdictEvent(verdict))

    def on_revision(self) -> None:
        """The target's pod template (or a tracked config) may have changed."""
        self._post(_RevisionEvent())

    def update_spec(self, canary: Canary) -> None:
        """A new Canary spec (suspend, skipAnalysis, intervals ... take effect now)."""
        self._post(_SpecEvent(canary))

    def promote(self) -> None:
        """Skip the remaining steps and promote (no confirm-promotion gate)."""
        self._post(_CommandEvent(Command.PROMOTE))

    def abort(self) -> None:
        """Roll back now."""
        self._post(_CommandEvent(Command.ABORT))

    def pause(self) -> None:
        """Hold the current weight. Checks keep running, and a failing canary is still rolled back."""
        self._post(_CommandEvent(Command.PAUSE))

    def resume(self) -> None:
        """Undo `pause`."""
        self._post(_CommandEvent(Command.RESUME))

    def set_weight(self, weight: int) -> None:
        """Route `weight`% to the canary now and restart the step there (canary strategy)."""
        self._post(_CommandEvent(Command.SET_WEIGHT, weight))

    def delete(self) -> None:
        """The Canary was deleted: with `revertOnDeletion`, go to Terminating, scale the target back
        up and revert the routing (Flagger's finalizer); then end `run()`."""
        self._post(_CommandEvent(Command.DELETE))

    def stop(self) -> None:
        """End `run()` after the queued events."""
        self._post(_Stop())

    async def settle(self) -> None:
        """Wait until every queued event is handled and timer tasks have registered their sleeps."""
        while True:
            await self._idle.wait()
            for _ in range(3):
                await asyncio.sleep(0)
            if self._idle.is_set() and self._queue.empty():
                return

    async def run(self) -> None:
        """Handle events until `stop()`."""
        if self.status.phase in ANALYSING:
            await self._resume_step()
        self._post(_Nudge())
        try:
            while True:
                if self._queue.empty():
                    self._idle.set()
                item = await self._queue.get()
                if isinstance(item, _Stop):
                    break
                await self._handle(item)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._idle.set()

    async def _resume_step(self) -> None:
        """Started from a persisted status mid-analysis: the current weight gets a fresh dwell (it is
        not skipped, and pre-rollout does not run again)."""
        routes = await self.router.get_routes(self.canary)
        if routes.canary_weight > 0 or routes.mirrored or self.status.iterations > 0:
            self._start_step(routes)

    # -- derived settings ----------------------------------------------------------------------------

    @property
    def ident(self) -> str:
        """`name.namespace`, as Flagger's messages print it."""
        return f"{self.canary.name}.{self.canary.namespace}"

    @property
    def analysis(self) -> Analysis:
        """The analysis block (defaults when absent)."""
        return self.canary.spec.analysis or Analysis()

    @property
    def interval(self) -> float:
        """Dwell time per step: `analysis.interval`, at least `min_interval_s`, 60s when unparsable."""
        return max(self.options.min_interval_s, duration_or(self.analysis.interval, 60.0))

    @property
    def threshold(self) -> int:
        """Failed checks before rollback (0 means 1)."""
        return self.analysis.threshold or 1

    @property
    def strategy(self) -> Strategy:
        return self.canary.strategy()

    def _skip_analysis(self) -> bool:
        return self.canary.spec.skip_analysis or self.canary.spec.analysis is None

    def _metric_names(self) -> set[str]:
        return {m.name for m in self.analysis.metrics}

    def _has_hooks(self, kind: HookType) -> bool:
        return any(hook_type(h) == kind for h in self.analysis.webhooks)

    def _muted(self, hook: str) -> bool:
        """The gate hook `hook` asks for no alert while it denies (`muteAlert`)."""
        return any(h.name == hook and h.mute_alert for h in self.analysis.webhooks)

    # -- plumbing ------------------------------------------------------------------------------------

    def _post(self, item: _Item) -> None:
        self._idle.clear()
        self._queue.put_nowait(item)

    def _wake(self, at: float) -> None:
        """Evaluate again at `at` (now or earlier: right after the current event)."""
        if at <= self.clock.now() + _EPS:
            self._post(_Nudge())
            return
        if at not in self._deadlines:
            heapq.heappush(self._deadlines, at)
        self._arm()

    def _arm(self) -> None:
        if not self._deadlines:
            return
        first = self._deadlines[0]
        if self._armed_at is not None and self._armed_at <= first and self._timer and not self._timer.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = first
        self._timer = asyncio.get_running_loop().create_task(self._sleep_until(first))

    async def _sleep_until(self, at: float) -> None:
        await self.clock.sleep(at - self.clock.now())
        self._post(_Timer())

    async def _handle(self, item: _Item) -> None:
        try:
            await self._dispatch(item)
        except RouterNotReady as exc:
            # The mesh has not accepted the last route change: look again shortly, draw no
            # conclusion from the split in the meantime.
            log.info("%s: %s; retrying", self.ident, exc)
            self._wake(self.clock.now() + self.options.readiness_recheck_s)

    async def _dispatch(self, item: _Item) -> None:
        if isinstance(item, _Timer):
            now = self.clock.now()
            while self._deadlines and self._deadlines[0] <= now + _EPS:
                heapq.heappop(self._deadlines)
            self._armed_at = None
            self._arm()
            await self._evaluate()
        elif isinstance(item, _Nudge | _RevisionEvent):
            await self._evaluate()
        elif isinstance(item, _VerdictEvent):
            if not self._frozen():
                await self._take_verdict(item.verdict)
        elif isinstance(item, _SpecEvent):
            self.canary = item.canary
            await self._evaluate()
        elif isinstance(item, _CommandEvent) and not self._frozen():
            await self._command(item)

    def _frozen(self) -> bool:
        """`spec.suspend`: nothing happens."""
        return self.canary.spec.suspend

    async def _event(self, message: str, warning: bool = False) -> None:
        """Record an event and send it to the `event` hooks."""
        etype = EventType.WARNING if warning else EventType.NORMAL
        now = self.clock.now()
        self.events.record(Event(now, etype, message, self.canary.name, self.canary.namespace))
        hooks: Sequence[Webhook] = self.analysis.webhooks
        if not self._has_hooks(HookType.EVENT) and self.options.event_webhook:
            hooks = [
                Webhook.model_validate({"name": "events", "type": "event", "url": self.options.event_webhook})
            ]
        if any(hook_type(h) == HookType.EVENT for h in hooks):
            await self._client().run_event(
                hooks,
                self.canary.name,
                self.canary.namespace,
                self.status.phase or "",
                self._checksum(),
                message,
                etype.value,
                now,
            )

    def _alert(self, message: str, severity: str, metadata: bool = False) -> None:
        """An alert to the Canary's AlertProviders (Flagger's `alert`), sent in the background."""
        if self.alerts is None:
            return
        fields = metadata_fields(self.canary, self.threshold) if metadata else []
        self.alerts.alert(self.canary, message, severity, fields)

    def _client(self) -> WebhookClient:
        if self.webhooks is None:
            self.webhooks = WebhookClient()
        return self.webhooks

    def _checksum(self) -> str:
        return checksum(self.status.last_applied_spec, self.status.tracked_configs)

    async def _hooks(self, kind: HookType, phase: Phase) -> HookResult:
        if not self._has_hooks(kind):
            return HookResult(True)
        return await self._client().run(
            self.analysis.webhooks, kind, self.canary.name, self.canary.namespace, phase, self._checksum()
        )

    def _write(self, status: CanaryStatus) -> None:
        if status.phase != self.status.phase and status.phase is not None:
            self.transitions.append((self.clock.now(), status.phase))
        self.status = status
        if self.on_status is not None:
            self.on_status(status)

    def _set_phase(self, phase: Phase, **changes: Any) -> None:
        kind = self.canary.spec.target_ref.kind
        self._write(self.status.with_phase(phase, self.clock.now(), kind, **changes))

    async def _route(self, routes: Routes) -> None:
        await self.router.set_routes(self.canary, routes)
        self.weights.append((self.clock.now(), routes.canary_weight))
        self._write(self.status.touch(self.clock.now(), canary_weight=routes.canary_weight))

    def _start_step(self, routes: Routes) -> None:
        now = self.clock.now()
        self._step_started = now
        self._latest = None
        self._hooks_ok = not self._has_hooks(HookType.ROLLOUT)
        self._next_tick = now + self.interval
        self._gate_retry_at = 0.0
        self._wake(self._next_tick)
        if self.analyzer is not None:
            self.analyzer.start_step(now, routes)

    def _reset_run(self) -> None:
        self._step_started = None
        self._latest = None
        self._last_failed_check = None
        self._rolling_back = False
        self._gate_retry_at = 0.0
        self._next_tick = self.clock.now()

    # -- the state machine ---------------------------------------------------------------------------

    async def _evaluate(self) -> None:
        """Do whatever the current phase allows now; ask for a wake-up when it waits on time."""
        if self._frozen():
            return
        now = self.clock.now()
        phase = self.status.phase
        if phase in (None, Phase.INITIALIZING):
            await self._initialize()
            return
        if phase == Phase.TERMINATING:
            return
        if phase in SETTLED:
            if phase == Phase.WAITING and now < self._gate_retry_at:
                self._wake(self._gate_retry_at)
                return
            if not await self._new_revision():
                return
            await self._start_run()
            if self.status.phase != Phase.PROGRESSING:
                return
            phase = self.status.phase
        if self._rolling_back:
            await self._rollback_step()
            return
        skip = self._skip_analysis()
        if not skip:
            ready = await self.workloads.primary_ready(self.canary)
            if not ready.ready:
                if ready.retriable:
                    self._wake(now + self.options.readiness_recheck_s)
                elif phase in (Phase.PROMOTING, Phase.FINALISING):
                    await self._failed_promotion(ready.message)
                else:
                    await self._rollback(f"progress deadline exceeded {ready.message}")
                return
        if phase in ANALYSING:
            revision = await self.workloads.revision(self.canary)
            if revision != self.status.last_applied_spec:
                await self._restart(revision)
            ready = await self.workloads.canary_ready(self.canary)
            if not ready.ready:
                if ready.retriable:
                    self._wake(now + self.options.readiness_recheck_s)
                else:
                    await self._rollback(f"progress deadline exceeded {ready.message}")
                return
            if skip:
                await self._skip_promote()
                return
        if phase == Phase.PROMOTING:
            await self._promotion_shift()
            return
        if phase == Phase.FINALISING:
            if now + _EPS >= self._finalise_at:
                await self._finalise()
            else:
                self._wake(self._finalise_at)
            return
        if now + _EPS >= self._next_tick:
            await self._analysis_tick()
        if self.status.phase in ANALYSING and not self._rolling_back:
            self._wake(self._next_tick)

    async def _initialize(self) -> None:
        if self.status.phase is None:
            self._set_phase(Phase.INITIALIZING)
        if isinstance(self.router, InitializingRouter):
            await self.router.initialize(self.canary)
        await self.workloads.initialize(self.canary)
        ready = await self.workloads.primary_ready(self.canary)
        if not ready.ready:
            self._wake(self.clock.now() + self.options.readiness_recheck_s)
            return
        # Only now may the apex Service (and the mesh object) point at the primary: it has pods.
        await self.router.reconcile(self.canary)
        await self.workloads.scale_canary(self.canary, 0)
        revision = await self.workloads.revision(self.canary)
        configs = await self.workloads.config_checksums(self.canary)
        routes = await self.router.get_routes(self.canary)
        self.weights.append((self.clock.now(), routes.canary_weight))
        self._set_phase(
            Phase.INITIALIZED,
            last_applied_spec=revision,
            last_promoted_spec=revision,
            tracked_configs=configs,
        )
        await self._event(f"Initialization done! {self.ident}")
        self._alert(
            f"New {self.canary.spec.target_ref.kind} detected, initialization completed.", "info", True
        )

    async def _new_revision(self) -> bool:
        """Flagger's hasSpecChanged: a hash that differs from the last applied one and from what the
        primary runs (reverting to the primary's template starts nothing). Waiting always re-asks."""
        if self.status.phase == Phase.WAITING:
            return True
        revision = await self.workloads.revision(self.canary)
        return revision not in (self.status.last_applied_spec, self.status.last_promoted_spec)

    async def _start_run(self) -> None:
        """A new revision: ask confirm-rollout, then scale the canary up and start Progressing."""
        now = self.clock.now()
        phase = self.status.phase or Phase.INITIALIZED
        gate = await self._hooks(HookType.CONFIRM_ROLLOUT, phase)
        if not gate.ok:
            if phase != Phase.WAITING:
                await self._event(f"Halt {self.ident} advancement waiting for approval {gate.hook}", True)
                if not self._muted(gate.hook):
                    self._alert("Canary is waiting for approval.", "warn")
                self._set_phase(Phase.WAITING)
            self._gate_retry_at = now + self.interval
            self._wake(self._gate_retry_at)
            return
        revision = await self.workloads.revision(self.canary)
        configs = await self.workloads.config_checksums(self.canary)
        self.finished.clear()
        await self._event(f"New revision detected! Scaling up {self.ident}")
        self._alert("New revision detected, progressing canary analysis.", "info", True)
        await self.workloads.scale_canary(self.canary, None)
        self._progress_from_zero(revision, configs)

    def _progress_from_zero(self, revision: str, configs: dict[str, str]) -> None:
        """Progressing on `revision` with weight, failed checks and iterations back at zero."""
        self._set_phase(
            Phase.PROGRESSING,
            canary_weight=0,
            failed_checks=0,
            iterations=0,
            last_applied_spec=revision,
            tracked_configs=configs,
        )
        self._reset_run()

    async def _restart(self, revision: str) -> None:
        """A newer revision mid-analysis: all traffic back to primary, counters reset, start over."""
        await self._route(Routes(100, 0))
        configs = await self.workloads.config_checksums(self.canary)
        self._progress_from_zero(revision, configs)
        await self._event(f"New revision detected! Restarting analysis for {self.ident}")

    async def _analysis_tick(self) -> None:
        """Once per interval in Progressing/WaitingPromotion: rollback hooks, threshold, pre-rollout (first
        time) or rollout hooks, a pulled verdict, then an advance if the step is done."""
        now = self.clock.now()
        self._next_tick = now + self.interval
        phase = self.status.phase or Phase.PROGRESSING
        if self._has_hooks(HookType.ROLLBACK) and (await self._hooks(HookType.ROLLBACK, phase)).ok:
            await self._rollback(
                "manual webhook invoked", alert=("Rolling back manual webhook invoked", "warn")
            )
            return
        if self.status.failed_checks >= self.threshold:
            await self._rollback_at_threshold()
            return
        if self._step_started is None:
            await self._event(f"Starting canary analysis for {self.ident}")
            pre = await self._hooks(HookType.PRE_ROLLOUT, Phase.PROGRESSING)
            if not pre.ok:
                await self._failed_check(now, f"pre-rollout check {pre.hook} failed {pre.error}")
                return
            if not self.paused:
                await self._advance()
            return
        hooks = await self._hooks(HookType.ROLLOUT, Phase.PROGRESSING)
        if not hooks.ok:
            self._hooks_ok = False
            await self._failed_check(now, f"external check {hooks.hook} failed {hooks.error}")
            return
        self._hooks_ok = True
        if self.analyzer is not None:
            await self._take_verdict(self.analyzer.verdict(now))
        else:
            await self._try_advance()

    async def _take_verdict(self, verdict: Verdict) -> None:
        """Fail: roll back now. Failed metric checks: one failed check per interval at most. Then advance
        if the step is done."""
        if self.status.phase not in ANALYSING or self._rolling_back or self._step_started is None:
            return
        if verdict.at + _EPS < self._step_started:
            return  # about an earlier step
        self.last_verdict = verdict
        self._latest = verdict
        if verdict.decision == Decision.FAIL:
            why = "; ".join(verdict.reasons) or "fail verdict"
            await self._rollback(f"canary analysis failed: {why}")
            return
        names = self._metric_names()
        failed = [t for t in verdict.tests if t.name in names and t.decision == Decision.FAIL]
        if failed:
            first = failed[0]
            if await self._failed_check(verdict.at, f"{first.name} check failed {first.detail}".rstrip()):
                return
        await self._try_advance()

    async def _failed_check(self, at: float, why: str) -> bool:
        """Count a failed check (at most once per interval); roll back at the threshold (-> True)."""
        # Windows of one interval aligned with the step's checks, like Flagger's one check per tick.
        origin = self._step_started if self._step_started is not None else self._next_tick - self.interval
        window = (origin, int((at - origin + _EPS) // self.interval))
        if window == self._last_failed_check:
            return False
        self._last_failed_check = window
        self._write(self.status.touch(self.clock.now(), failed_checks=self.status.failed_checks + 1))
        await self._event(f"Halt advancement {self.ident} {why}", True)
        if self.status.failed_checks >= self.threshold:
            await self._rollback_at_threshold()
            return True
        return False

    def _passes(self, verdict: Verdict | None) -> bool:
        """Judge mode: a `pass` verdict. Flagger mode (judge disabled): every declared metric check passes.
        No analyzer: the dwell alone. Inconclusive never passes."""
        if self.analyzer is None:
            return True
        if verdict is None or verdict.decision in (Decision.FAIL, Decision.INCONCLUSIVE):
            return False
        names = self._metric_names()
        checks = {t.name: t.decision for t in verdict.tests if t.name in names}
        if any(d != Decision.PASS for d in checks.values()):
            return False
        if self.analysis.judge.enabled:
            return verdict.decision == Decision.PASS
        return all(n in checks for n in names)

    async def _try_advance(self) -> None:
        now = self.clock.now()
        if self.paused or self._rolling_back or self.status.phase not in ANALYSING:
            return
        if self._step_started is None or now + _EPS < self._step_started + self.interval:
            return
        if not self._hooks_ok or now + _EPS < self._gate_retry_at or not self._passes(self._latest):
            return
        await self._advance()

    async def _advance(self) -> None:
        """The strategy's next move: a weight or iteration step, or promotion."""
        routes = await self.router.get_routes(self.canary)
        a = self.analysis
        strategy = self.strategy
        it = self.status.iterations
        if strategy == Strategy.CANARY:
            cw = routes.canary_weight
            if a.mirror and cw == 0 and not routes.mirrored:
                new = Routes(100, 0, mirrored=True, mirror_weight=a.mirror_weight)
                await self._route(new)
                await self._event(f"Advance {self.ident} canary weight 0 with traffic mirroring")
                self._start_step(new)
                return
            if cw < max_weight(a):
                if not routes.mirrored and not await self._gate(HookType.CONFIRM_TRAFFIC_INCREASE):
                    return
                canary = next_canary_weight(a, cw)
                new = Routes(100 - canary, canary)
                await self._route(new)
                await self._event(f"Advance {self.ident} canary weight {canary}")
                self._start_step(new)
                return
            if await self._gate(HookType.CONFIRM_PROMOTION):
                await self._promote()
            return
        kubernetes = self.canary.spec.provider == "kubernetes"
        n = a.iterations or (KUBERNETES_DEFAULT_ITERATIONS if kubernetes else 0)
        if it < n:
            if strategy == Strategy.AB_TESTING and it == 0:
                await self._route(Routes(0, 100))
            elif strategy == Strategy.BLUE_GREEN and a.mirror and not kubernetes and not routes.mirrored:
                await self._route(Routes(100, 0, mirrored=True, mirror_weight=a.mirror_weight))
            self._write(self.status.touch(self.clock.now(), iterations=it + 1))
            await self._event(f"Advance {self.ident} canary iteration {it + 1}/{n}")
            self._start_step(await self.router.get_routes(self.canary))
            return
        if strategy == Strategy.BLUE_GREEN and it == n and not kubernetes:
            # Live traffic moves to the canary for one more interval before the primary is updated.
            if not await self._gate(HookType.CONFIRM_PROMOTION):
                return
            await self._event("Routing all traffic to canary")
            new = Routes(0, 100)
            await self._route(new)
            self._write(self.status.touch(self.clock.now(), iterations=n + 1))
            self._start_step(new)
            return
        if strategy == Strategy.BLUE_GREEN or await self._gate(HookType.CONFIRM_PROMOTION):
            await self._promote()

    async def _gate(self, kind: HookType) -> bool:
        """confirm-traffic-increase / confirm-promotion: denied -> ask again at the next check."""
        result = await self._hooks(kind, Phase.PROGRESSING)
        if result.ok:
            return True
        self._gate_retry_at = self._next_tick
        if kind == HookType.CONFIRM_PROMOTION:
            if self.status.phase != Phase.WAITING_PROMOTION:
                await self._event(
                    f"Halt {self.ident} advancement waiting for promotion approval {result.hook}", True
                )
                if not self._muted(result.hook):
                    self._alert("Canary promotion is waiting for approval.", "warn")
                self._set_phase(Phase.WAITING_PROMOTION, canary_weight=self.status.canary_weight)
        else:
            await self._event(
                f"Halt {self.ident} advancement waiting for traffic increase approval {result.hook}"
            )
            if not self._muted(result.hook):
                self._alert("Canary traffic increase is waiting for approval.", "warn")
        return False

    async def _promote(self) -> None:
        """Copy the canary template to the primary; traffic shifts back once the primary is ready."""
        target = self.canary.spec.target_ref.name
        ns = self.canary.namespace
        await self._event(f"Copying {target}.{ns} template spec to {target}-primary.{ns}")
        await self.workloads.promote(self.canary)
        self._set_phase(Phase.PROMOTING, canary_weight=self.status.canary_weight)
        self._step_started = None
        self._next_shift = self.clock.now()
        self._wake(self.clock.now())

    async def _promotion_shift(self) -> None:
        """Promoting: with the primary ready, route everything back to it (stepWeightPromotion per
        interval if set), then Finalising."""
        now = self.clock.now()
        if now + _EPS < self._next_shift:
            self._wake(self._next_shift)
            return
        routes = await self.router.get_routes(self.canary)
        step = self.analysis.step_weight_promotion or 0
        if step > 0 and routes.canary_weight > 0:
            primary = min(100, routes.primary_weight + step)
            await self._route(Routes(primary, 100 - primary))
            await self._event(f"Advance {self.ident} primary weight {primary}")
            if primary < 100:
                self._next_shift = now + self.interval
                self._wake(self._next_shift)
                return
        else:
            await self._event("Routing all traffic to primary")
            await self._route(Routes(100, 0))
        self._set_phase(Phase.FINALISING, canary_weight=0)
        self._finalise_at = now + (
            self.options.finalise_delay_s if self.options.finalise_delay_s is not None else self.interval
        )
        self._wake(self._finalise_at)

    async def _finalise(self) -> None:
        await self.workloads.scale_canary(self.canary, 0)
        self._set_phase(
            Phase.SUCCEEDED, canary_weight=0, iterations=0, last_promoted_spec=self.status.last_applied_spec
        )
        await self._event(f"Promotion completed! Scaling down {self.ident}")
        self._alert("Canary analysis completed successfully, promotion finished.", "info", True)
        await self._hooks(HookType.POST_ROLLOUT, Phase.SUCCEEDED)
        self._finish()

    async def _skip_promote(self) -> None:
        """skipAnalysis: all traffic to primary, promote, canary to zero, Succeeded."""
        await self._route(Routes(100, 0))
        await self.workloads.promote(self.canary)
        await self.workloads.scale_canary(self.canary, 0)
        self._set_phase(
            Phase.SUCCEEDED, canary_weight=0, iterations=0, last_promoted_spec=self.status.last_applied_spec
        )
        await self._event(f"Promotion completed! Canary analysis was skipped for {self.ident}")
        self._alert("Canary analysis was skipped, promotion finished.", "info", True)
        await self._hooks(HookType.POST_ROLLOUT, Phase.SUCCEEDED)
        self._finish()

    async def _rollback_at_threshold(self) -> None:
        await self._rollback(
            f"failed checks threshold reached {self.threshold}",
            alert=(f"Failed checks threshold reached {self.status.failed_checks}", "error"),
        )

    async def _rollback(self, reason: str, alert: tuple[str, str] | None = None) -> None:
        """Back to the primary: in one step (Flagger), or by `rollback_step_weight` per step if set.
        The event says why; the alert is Flagger's text and severity when it has one, else the
        reason as an error."""
        await self._event(f"Rolling back {self.ident} {reason}", True)
        message, severity = alert or (reason[:1].upper() + reason[1:], "error")
        self._alert(message, severity)
        step = self.options.rollback_step_weight
        routes = await self.router.get_routes(self.canary)
        if step and routes.canary_weight > step and not self._rolling_back:
            self._rolling_back = True
            self._next_rollback_step = self.clock.now()
            await self._rollback_step()
            return
        await self._fail()

    async def _rollback_step(self) -> None:
        now = self.clock.now()
        if now + _EPS < self._next_rollback_step:
            self._wake(self._next_rollback_step)
            return
        routes = await self.router.get_routes(self.canary)
        canary = max(0, routes.canary_weight - (self.options.rollback_step_weight or 100))
        if canary == 0:
            await self._fail()
            return
        await self._route(Routes(100 - canary, canary))
        await self._event(f"Rolling back {self.ident} canary weight {canary}", True)
        self._next_rollback_step = now + self.options.rollback_step_s
        self._wake(self._next_rollback_step)

    async def _fail(self) -> None:
        await self._route(Routes(100, 0))
        await self._event(f"Canary failed! Scaling down {self.ident}", True)
        await self.workloads.scale_canary(self.canary, 0)
        self._set_phase(Phase.FAILED, canary_weight=0, failed_checks=0, iterations=0)
        await self._hooks(HookType.POST_ROLLOUT, Phase.FAILED)
        self._finish()

    async def _failed_promotion(self, why: str) -> None:
        """The primary missed its progress deadline while promoting: the canary is the only healthy
        copy, so it keeps all the traffic."""
        await self._route(Routes(0, 100))
        await self._event(f"Promotion failed, primary not ready {self.ident}: {why}", True)
        self._alert(f"Promotion failed, primary not ready: {why}", "error")
        self._set_phase(Phase.FAILED, canary_weight=100)
        await self._hooks(HookType.POST_ROLLOUT, Phase.FAILED)
        self._finish()

    async def _terminate(self) -> None:
        if self.canary.spec.revert_on_deletion:
            self._set_phase(Phase.TERMINATING)
            await self._event(f"Terminating {self.ident}: reverting the target and the routing")
            await self.workloads.revert(self.canary)
            await self.router.finalize(self.canary)
            await self._event(f"Reverted {self.ident}: the target serves again, routing restored")
        self.finished.set()
        self._post(_Stop())

    def _finish(self) -> None:
        self._rolling_back = False
        self._step_started = None
        self.paused = False
        self.finished.set()
        # A revision that arrived while promoting starts its run now.
        self._wake(self.clock.now())

    async def _command(self, item: _CommandEvent) -> None:
        phase = self.status.phase
        analysing = phase in ANALYSING and not self._rolling_back
        cmd = item.command
        if cmd == Command.DELETE:
            await self._terminate()
        elif cmd == Command.PAUSE:
            self.paused = True
            await self._event(f"Rollout of {self.ident} paused")
        elif cmd == Command.RESUME:
            self.paused = False
            await self._event(f"Rollout of {self.ident} resumed")
            await self._evaluate()
            await self._try_advance()
        elif cmd == Command.PROMOTE and analysing:
            await self._event(f"Manual promotion of {self.ident}: skipping the remaining steps")
            await self._promote()
        elif cmd == Command.ABORT and (analysing or phase == Phase.WAITING):
            await self._rollback("manual abort")
        elif cmd == Command.SET_WEIGHT and analysing and self.strategy == Strategy.CANARY:
            weight = max(0, min(100, item.weight or 0))
            new = Routes(100 - weight, weight)
            await self._route(new)
            await self._event(f"Manual weight for {self.ident} canary weight {weight}")
            if phase == Phase.WAITING_PROMOTION:
                self._set_phase(Phase.PROGRESSING, canary_weight=weight)
            self._start_step(new)
        else:
            await self._event(f"Ignored {cmd.value} for {self.ident} in phase {phase}", True)


async def advance_settled(clock: SimClock, seconds: float, *rollouts: Rollout) -> None:
    """Move simulated time forward by `seconds`, letting every rollout finish its work at each instant
    a timer fires (so nothing drifts when handlers await I/O)."""
    end = clock.now() + seconds
    while True:
        for r in rollouts:
            await r.settle()
        deadline = clock.next_deadline()
        if deadline is None or deadline > end:
            break
        await clock.advance(max(0.0, deadline - clock.now()))
    await clock.advance(max(0.0, end - clock.now()))
    for r in rollouts:
        await r.settle()


def phase_is_final(status: CanaryStatus) -> bool:
    """True in Succeeded or Failed."""
    return status.phase in FINISHED


__all__ = [
    "Analyzer",
    "Command",
    "Rollout",
    "RolloutOptions",
    "advance_settled",
    "next_canary_weight",
    "phase_is_final",
]
