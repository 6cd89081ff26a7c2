"""The verdict API (FastAPI): canaries, verdicts, live figures, notice streams (SSE), manual
control, Flagger and Argo Rollouts interop, Prometheus ``/metrics``, health. It only reads the
:class:`~canary_stream.registry.Registry` and sends commands through its commander."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from canary_stream import __version__
from canary_stream.api import models
from canary_stream.api.auth import Access, Authorizer, Denied, authorizer_for, bearer
from canary_stream.api.config import ApiConfig
from canary_stream.api.interop import HOOKS, argo_answer, flagger_gate
from canary_stream.api.metrics import metrics_registry
from canary_stream.api.views import (
    analysis_windows,
    current_verdict,
    live_version,
    parse_window,
    snapshot,
    strict,
    summary,
    target_of,
    verdict_body,
)
from canary_stream.controller.scheduler import Command, Rollout
from canary_stream.registry import Notice, Registry

log = logging.getLogger(__name__)

API = "/api/v1"
CANARY = API + "/canaries/{namespace}/{name}"


class ApiError(Exception):
    """An error answer: ``status`` and an :class:`models.ErrorBody`."""

    def __init__(
        self, status: int, error: str, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail or error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def _error(status: int, error: str, detail: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """413 for a request body over ``limit`` bytes: by ``Content-Length`` before reading, and by
    counting while a chunked body arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                    response = _error(400, "bad request", "invalid Content-Length")
                    await response(scope, receive, send)
                    return
                if too_big:
                    await _error(413, "body too large", f"the limit is {self.limit} bytes")(
                        scope, receive, send
                    )
                    return
        seen = 0
        started = False
        replied = False  # our 413 went out: whatever the app answers later is dropped

        async def limited_receive() -> Message:
            nonlocal seen, started, replied
            message = await receive()
            if message["type"] == "http.request" and not replied:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if not started:
                        started = replied = True
                        await _error(413, "body too large", f"the limit is {self.limit} bytes")(
                            scope, receive, send
                        )
                    # The app sees the client gone and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if replied:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": models.ErrorBody, "description": "invalid request"},
    401: {"model": models.ErrorBody, "description": "no or invalid bearer token"},
    403: {"model": models.ErrorBody, "description": "the caller lacks the RBAC verb"},
    404: {"model": models.ErrorBody, "description": "unknown canary"},
    413: {"model": models.ErrorBody, "description": "request body too large"},
    503: {"model": models.ErrorBody, "description": "not available"},
}


def create_app(registry: Registry, config: ApiConfig) -> FastAPI:
    """The API over ``registry``. ``app.state.stopping`` (an asyncio.Event) ends open streams."""
    authz: Authorizer = authorizer_for(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.stopping.set()
            await authz.close()

    app = FastAPI(
        lifespan=lifespan,
        title="canary-stream verdict API",
        version=__version__,
        description="Canaries, streaming verdicts, live per-version figures, manual control, "
        "Flagger webhook gate, Argo Rollouts web metric, Prometheus metrics.",
        responses=ERRORS,
    )
    app.state.registry = registry
    app.state.config = config
    app.state.authorizer = authz
    app.state.stopping = asyncio.Event()
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).lower(), "", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log, never to the caller.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error", "see the server log")

    # -- authorization -------------------------------------------------------------------------

    async def authorize(request: Request, access: Access) -> None:
        try:
            who = await authz.check(bearer(request.headers.get("authorization")), access)
        except Denied as d:
            headers = {"WWW-Authenticate": 'Bearer realm="canary-stream"'} if d.status == 401 else None
            error = {401: "unauthorized", 403: "forbidden"}.get(d.status, "unavailable")
            raise ApiError(d.status, error, d.reason, headers) from None
        request.state.caller = who

    def group_of(rollout: Rollout | None) -> str | None:
        if rollout is None:
            return None
        return rollout.canary.api_version.partition("/")[0]

    def reader(verb: str = "get") -> Callable[[Request], Awaitable[None]]:
        async def check(request: Request) -> None:
            if not config.read_auth:
                return
            ns = request.path_params.get("namespace")
            name = request.path_params.get("name")
            rollout = registry.get(ns, name) if ns and name else None
            await authorize(request, Access(verb if ns else "list", ns, name, group_of(rollout)))

        return check

    read_one = Depends(reader("get"))
    read_all = Depends(reader("list"))

    def rollout_or_404(namespace: str, name: str) -> Rollout:
        r = registry.get(namespace, name)
        if r is None:
            raise ApiError(404, "not found", f"no canary {namespace}/{name}")
        return r

    # -- health ----------------------------------------------------------------------------------

    @app.get("/healthz", response_model=models.Health, tags=["health"])
    async def healthz() -> models.Health:
        """The process serves requests."""
        return models.Health(ok=True)

    @app.get(
        "/readyz", response_model=models.Health, tags=["health"], responses={503: {"model": models.Health}}
    )
    async def readyz() -> Response:
        """Ready to judge: an aggregator, running sources and leadership (as configured)."""
        checks = {"aggregator": registry.aggregator is not None}
        if config.ready_requires_sources:
            checks["sources"] = bool(registry.sources) and all(_running(s) for s in registry.sources)
        if config.ready_requires_leader:
            checks["leader"] = registry.is_leader()
        ok = all(checks.values())
        failing = ", ".join(k for k, v in checks.items() if not v)
        body = models.Health(ok=ok, checks=checks, detail="" if ok else f"not ready: {failing}")
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    # -- reads ----------------------------------------------------------------------------------

    @app.get(API + "/canaries", response_model=models.CanaryList, tags=["canaries"], dependencies=[read_all])
    async def list_canaries() -> models.CanaryList:
        """Every canary with its phase, weights and current decision."""
        items = [
            models.CanarySummary(**summary(ns, name, r, current_verdict(r, config.verdict_max_age_s)))
            for (ns, name), r in registry.items()
        ]
        return models.CanaryList(items=items)

    @app.get(CANARY, response_model=models.CanaryDetail, tags=["canaries"], dependencies=[read_one])
    async def get_canary(namespace: str, name: str) -> models.CanaryDetail:
        """Phase, weights, status, history, the current verdict with its reasons and tests, and
        per-version figures over each analysis window."""
        r = rollout_or_404(namespace, name)
        v = current_verdict(r, config.verdict_max_age_s)
        return models.CanaryDetail(
            **summary(namespace, name, r, v),
            status=strict(r.status.to_dict()),
            transitions=[models.Transition(at=t, phase=p.value) for t, p in r.transitions],
            weights=[models.WeightChange(at=t, canary_weight=w) for t, w in r.weights],
            verdict=verdict_body(v) if v is not None else None,
            windows=analysis_windows(r, registry.aggregator),
        )

    @app.get(
        CANARY + "/verdict",
        response_model=models.VerdictBody,
        tags=["canaries"],
        dependencies=[read_one],
        responses={404: {"model": models.ErrorBody, "description": "unknown canary or no verdict yet"}},
    )
    async def get_verdict(namespace: str, name: str) -> models.VerdictBody:
        """The current verdict: decision, reasons, per-version figures with sample sizes, tests."""
        r = rollout_or_404(namespace, name)
        v = current_verdict(r, config.verdict_max_age_s)
        if v is None:
            raise ApiError(404, "no verdict", f"no current verdict for {namespace}/{name}")
        return verdict_body(v)

    @app.get(
        CANARY + "/metrics", response_model=models.LiveMetrics, tags=["canaries"], dependencies=[read_one]
    )
    async def live_metrics(
        namespace: str,
        name: str,
        window: str = Query("30s", max_length=32, description="window: 30s, 5m, 1h or seconds"),
    ) -> models.LiveMetrics:
        """Per-version figures from the aggregator over the last ``window`` (event time)."""
        r = rollout_or_404(namespace, name)
        agg = registry.aggregator
        max_s = float(agg.config.windowing.ring_secs) if agg is not None else 600.0
        try:
            seconds = parse_window(window, max_s)
        except ValueError as e:
            raise ApiError(400, "invalid window", str(e)) from None
        target = target_of(r)
        versions = [live_version(s) for s in snapshot(agg, target, seconds)]
        return models.LiveMetrics(
            namespace=namespace, name=name, target=target, window_s=seconds, versions=versions
        )

    @app.get(API + "/sources", response_model=models.SourcesBody, tags=["ingest"], dependencies=[read_all])
    async def sources() -> models.SourcesBody:
        """Counters of every telemetry source and of the aggregator."""
        out = []
        for s in registry.sources:
            st = s.stats
            rates = st.rates()
            out.append(
                models.SourceBody(
                    name=st.name,
                    events=st.events,
                    lines=st.lines,
                    bytes=st.bytes,
                    batches=st.batches,
                    lag=st.lag,
                    waits=st.waits,
                    malformed=dict(st.malformed),
                    events_per_s=strict(rates["events_per_s"]),
                    bytes_per_s=strict(rates["bytes_per_s"]),
                )
            )
        agg_body = None
        if registry.aggregator is not None:
            t = registry.aggregator.totals()
            agg_body = models.AggregatorBody(
                bytes=t.bytes,
                lines=t.lines,
                accepted=t.accepted,
                malformed=dict(t.malformed),
                skipped=dict(t.skipped),
                watermark_ms=registry.aggregator.watermark_ms,
            )
        return models.SourcesBody(sources=out, aggregator=agg_body)

    # -- streams ----------------------------------------------------------------------------------

    sse_doc: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}
    }

    async def notices(only: tuple[str, str] | None) -> AsyncIterator[ServerSentEvent]:
        seq = 0
        async with registry.subscribe(config.sse_queue) as queue:
            # Subscribed first, then the current state: nothing falls in between.
            for (ns, name), r in registry.items():
                if only is None or only == (ns, name):
                    seq += 1
                    state = summary(ns, name, r, current_verdict(r, config.verdict_max_age_s))
                    yield _sse("state", seq, {"kind": "state", "namespace": ns, "name": name, "data": state})
            while not app.state.stopping.is_set():
                try:
                    notice = await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:
                    continue
                if only is not None and only != (notice.namespace, notice.name):
                    continue
                seq += 1
                yield _sse(notice.kind, seq, _notice_dict(notice))

    @app.get(
        API + "/events", tags=["streams"], dependencies=[read_all], responses=sse_doc, response_class=Response
    )
    async def all_events() -> EventSourceResponse:
        """Server-sent events of every canary: ``state`` (at connect), ``phase``, ``weight``,
        ``verdict``, ``event``; ``data`` is JSON."""
        return EventSourceResponse(notices(None), ping=config.sse_ping_s)

    @app.get(
        CANARY + "/events",
        tags=["streams"],
        dependencies=[read_one],
        responses=sse_doc,
        response_class=Response,
    )
    async def canary_events(namespace: str, name: str) -> EventSourceResponse:
        """Server-sent events of one canary (see ``/api/v1/events``)."""
        rollout_or_404(namespace, name)
        return EventSourceResponse(notices((namespace, name)), ping=config.sse_ping_s)

    # -- manual control --------------------------------------------------------------------------

    async def command(
        request: Request, namespace: str, name: str, cmd: Command, weight: int | None
    ) -> Response:
        rollout = registry.get(namespace, name)
        await authorize(request, Access(config.sar_verb, namespace, name, group_of(rollout)))
        if rollout is None:
            raise ApiError(404, "not found", f"no canary {namespace}/{name}")
        if registry.commander is None:
            raise ApiError(503, "unavailable", "manual control is not available in this process")
        await registry.commander(namespace, name, cmd, weight)
        log.info(
            "%s by %s",
            cmd.value,
            getattr(request.state, "caller", "?"),
            extra={"canary": name, "namespace": namespace, "command": cmd.value, "weight": weight},
        )
        body = models.CommandAccepted(namespace=namespace, name=name, command=cmd.value, weight=weight)
        return JSONResponse(body.model_dump(), status_code=202)

    accepted: dict[int | str, dict[str, Any]] = {202: {"model": models.CommandAccepted}}

    def simple(cmd: Command) -> None:
        async def handler(request: Request, namespace: str, name: str) -> Response:
            return await command(request, namespace, name, cmd, None)

        handler.__doc__ = {
            Command.PROMOTE: "Skip the remaining steps and promote.",
            Command.ABORT: "Roll back now.",
            Command.PAUSE: "Hold the current weight (a failing canary is still rolled back).",
            Command.RESUME: "Undo pause.",
        }[cmd]
        app.add_api_route(
            CANARY + "/" + cmd.value,
            handler,
            methods=["POST"],
            status_code=202,
            responses=accepted,
            response_class=Response,
            tags=["control"],
            name=cmd.value,
        )

    for cmd in (Command.PROMOTE, Command.ABORT, Command.PAUSE, Command.RESUME):
        simple(cmd)

    @app.post(
        CANARY + "/set-weight", status_code=202, responses=accepted, response_class=Response, tags=["control"]
    )
    async def set_weight(request: Request, namespace: str, name: str, body: models.WeightRequest) -> Response:
        """Route ``weight`` percent to the canary now (canary strategy, during the analysis)."""
        return await command(request, namespace, name, Command.SET_WEIGHT, body.weight)

    # -- interop ----------------------------------------------------------------------------------

    gate_doc: dict[int | str, dict[str, Any]] = {
        409: {"model": models.GateAnswer, "description": "halt: the canary failed (rollback hook: no harm)"},
        425: {"model": models.GateAnswer, "description": "halt: no data or no decision yet"},
        400: {"model": models.GateAnswer, "description": "halt: unknown hook type"},
        404: {"model": models.GateAnswer, "description": "halt: unknown canary"},
    }

    async def gate(request: Request, payload: models.FlaggerPayload, hook: str | None) -> JSONResponse:
        meta = payload.metadata or {}
        # The payload does not say the hook's type: the URL does, or metadata ``hook``; a metadata
        # ``type`` counts only when it names a hook (the load tester uses ``type: cmd``).
        typed = meta.get("type") if meta.get("type") in HOOKS else None
        hook_type = hook or meta.get("hook") or typed or "rollout"
        ns, name = payload.namespace, payload.name
        target_name = meta.get("canary")
        if target_name:
            ns, _, name = target_name.rpartition("/") if "/" in target_name else ("", "", target_name)
            ns = ns or meta.get("namespace") or payload.namespace
        elif meta.get("namespace"):
            ns = meta["namespace"]
        if config.read_auth:
            await authorize(request, Access("get", ns, name, group_of(registry.get(ns, name))))

        def answer(status: int, allowed: bool, reason: str, decision: str | None = None) -> JSONResponse:
            r = registry.get(ns, name)
            phase = r.status.phase.value if r is not None and r.status.phase else None
            body = models.GateAnswer(
                allowed=allowed,
                hook=hook_type,
                namespace=ns,
                name=name,
                decision=decision,
                phase=phase,
                reason=reason,
            )
            log.info(
                "flagger %s %s: %s",
                hook_type,
                "pass" if allowed else "halt",
                reason,
                extra={"canary": name, "namespace": ns, "hook": hook_type, "verdict": decision},
            )
            return JSONResponse(body.model_dump(), status_code=status)

        if hook_type not in HOOKS:
            return answer(400, False, f"unknown hook type {hook_type!r}: expected one of {', '.join(HOOKS)}")
        rollout = registry.get(ns, name)
        if rollout is None:
            return answer(404, False, f"no canary {ns}/{name} in canary-stream")
        v = current_verdict(rollout, config.verdict_max_age_s)
        result = flagger_gate(hook_type, rollout, v, registry.aggregator, target_of(rollout))
        return answer(
            result.status, result.allowed, result.reason, result.decision.value if result.decision else None
        )

    @app.post("/flagger/gate", response_model=models.GateAnswer, responses=gate_doc, tags=["interop"])
    async def flagger_default(request: Request, payload: models.FlaggerPayload) -> JSONResponse:
        """Flagger webhook (any type; ``metadata.hook`` names it, default ``rollout``). 200 passes;
        409/425 halt with the reason (Flagger passes only on <= 202)."""
        return await gate(request, payload, None)

    @app.post("/flagger/gate/{hook}", response_model=models.GateAnswer, responses=gate_doc, tags=["interop"])
    async def flagger_typed(request: Request, hook: str, payload: models.FlaggerPayload) -> JSONResponse:
        """Flagger webhook of type ``hook`` (``rollout``, ``pre-rollout``, ``confirm-promotion`` ...)."""
        return await gate(request, payload, hook)

    async def argo(namespace: str, name: str, canary_hash: str | None) -> models.ArgoAnswer:
        r = rollout_or_404(namespace, name)
        return argo_answer(namespace, name, r, current_verdict(r, config.verdict_max_age_s), canary_hash)

    @app.get(
        "/argo/{namespace}/{name}",
        response_model=models.ArgoAnswer,
        tags=["interop"],
        dependencies=[read_one],
    )
    async def argo_get(
        namespace: str, name: str, canary_hash: str | None = Query(None, alias="canaryHash", max_length=253)
    ) -> models.ArgoAnswer:
        """Argo Rollouts ``web`` metric: HTTP 200 with ``verdict`` = continue | pass | fail |
        inconclusive (strict JSON); 404 only for an unknown canary."""
        return await argo(namespace, name, canary_hash)

    @app.post(
        "/argo/{namespace}/{name}",
        response_model=models.ArgoAnswer,
        tags=["interop"],
        dependencies=[read_one],
    )
    async def argo_post(
        namespace: str, name: str, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> models.ArgoAnswer:
        """The same for ``method: POST`` with a ``jsonBody`` (its ``canaryHash`` is echoed)."""
        h = (body or {}).get("canaryHash")
        return await argo(namespace, name, str(h)[:253] if h is not None else None)

    # -- Prometheus -------------------------------------------------------------------------------

    prom = metrics_registry(registry, config)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["observability"],
        dependencies=[read_all],
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        """Prometheus metrics read from the registry at scrape time (and Flagger's gauges)."""
        return Response(generate_latest(prom), media_type=CONTENT_TYPE_LATEST)

    return app


def _running(source: Any) -> bool:
    """A source that says whether it serves (``ready`` event) is asked; others count as running."""
    ready = getattr(source, "ready", None)
    return ready.is_set() if isinstance(ready, asyncio.Event) else True


def _notice_dict(notice: Notice) -> dict[str, Any]:
    return {
        "kind": notice.kind,
        "namespace": notice.namespace,
        "name": notice.name,
        "at": notice.at,
        "data": notice.data,
    }


def _sse(kind: str, seq: int, body: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(strict(body), allow_nan=False, separators=(",", ":")), event=kind, id=str(seq)
    )
