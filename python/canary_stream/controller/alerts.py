"""Alerts (`analysis.alerts[]` → AlertProvider), as Flagger's pkg/controller/events.go `alert` and
pkg/notifier send them.

A rollout raises an alert at Flagger's points (initialised, new revision, waiting for approval,
rolled back, promoted, ...) with a severity. Each of the Canary's alerts whose severity admits it
(`info` takes everything, `warn` takes warn and error, `error` error only) is posted to its
AlertProvider: `slack`, `discord` (Slack format to `<address>/slack`) and `rocket` get Slack's
attachment payload, `msteams` a MessageCard, `gchat` a card, each as Flagger builds them. The
address (and a bearer token) may come from the provider's Secret (`address`, `token` keys).

Sending never holds up the rollout: posts run in the background with Flagger's 5 s timeout, in
the order they were raised for each destination, and a failure (provider or Secret missing,
refused, unreachable) is logged, as Flagger does.
A Canary without `analysis.alerts` posts every alert to the controller's global notifier when one
is set (Flagger's `-slack-url` / `-msteams-url` flags), and `-cluster-name` adds a "Cluster" field
to every alert."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from canary_stream.spec.model import Canary, Strategy

log = logging.getLogger(__name__)

SEVERITIES = ("info", "warn", "error")
PROVIDER_TYPES = ("slack", "msteams", "discord", "rocket", "gchat")
POST_TIMEOUT_S = 5.0  # Flagger's postMessage timeout


@dataclass(frozen=True)
class Field:
    name: str
    value: str


@dataclass(frozen=True)
class ProviderTarget:
    """Where and how one AlertProvider posts (Flagger's defaults: user `flagger`, channel `general`)."""

    type: str
    address: str
    token: str = ""
    proxy: str = ""
    username: str = "flagger"
    channel: str = "general"


def admits(alert_severity: str, severity: str) -> bool:
    """Whether an alert of `alert_severity` receives a message of `severity`."""
    if alert_severity == "info":
        return True
    return severity == alert_severity or (alert_severity == "warn" and severity == "error")


def _slack(
    target: ProviderTarget, subject: str, message: str, fields: list[Field], color: str
) -> dict[str, Any]:
    return {
        "channel": target.channel,
        "username": target.username,
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [
            {
                "color": color,
                "author_name": subject,
                "text": message,
                "mrkdwn_in": ["text"],
                "fields": [{"title": f.name, "value": f.value, "short": False} for f in fields],
            }
        ],
    }


def payload(
    target: ProviderTarget, workload: str, namespace: str, message: str, fields: list[Field], severity: str
) -> tuple[str, dict[str, Any]]:
    """(URL, JSON body) of one alert for `target`; ValueError naming the type when unknown."""
    subject = f"{workload}.{namespace}"
    error = severity == "error"
    if target.type in ("slack", "discord"):
        url = target.address
        if target.type == "discord" and not url.endswith("/slack"):
            parts = urlsplit(url)
            url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/slack"))
        return url, _slack(target, subject, message, fields, "danger" if error else "good")
    if target.type == "rocket":
        return target.address, _slack(target, subject, message, fields, "#FF0000" if error else "#0076D7")
    if target.type == "msteams":
        return target.address, {
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": "FF0000" if error else "0076D7",
            "summary": subject,
            "sections": [
                {
                    "activityTitle": message,
                    "activitySubtitle": subject,
                    "facts": [{"name": f.name, "value": f.value} for f in fields],
                }
            ],
        }
    if target.type == "gchat":
        sections = [
            {
                "widgets": [
                    {"textParagraph": {"text": f"<font color=#848484><strong>{message}</strong></font>"}}
                ]
            }
        ]
        sections += [
            {
                "widgets": [
                    {
                        "textParagraph": {
                            "text": f"{f.name}<br><font color=#848484><strong>{f.value}</strong></font>"
                        }
                    }
                ]
            }
            for f in fields
        ]
        header = {
            "title": "canary-stream",
            "subtitle": subject,
            "imageUrl": "https://flagger.app/favicon.png",
        }
        return target.address, {"cards": [{"header": header, "sections": sections}]}
    raise ValueError(
        f"spec.type: alert provider type {target.type!r} is not one of {', '.join(PROVIDER_TYPES)}"
    )


def metadata_fields(canary: Canary, threshold: int) -> list[Field]:
    """Flagger's alertMetadata: target, failed checks threshold, progress deadline, traffic routing."""
    ref = canary.spec.target_ref
    fields = [
        Field("Target", f"{ref.kind}/{ref.name}.{canary.namespace}"),
        Field("Failed checks threshold", str(threshold)),
        Field("Progress deadline", f"{canary.spec.progress_deadline_seconds}s"),
    ]
    strategy, a = canary.strategy(), canary.spec.analysis
    if strategy == Strategy.AB_TESTING:
        fields.append(Field("Traffic routing", "A/B Testing"))
    elif strategy == Strategy.BLUE_GREEN:
        fields.append(Field("Traffic routing", "Blue/Green"))
    elif a is not None and a.step_weight:
        fields.append(Field("Traffic routing", f"Weight step: {a.step_weight} max: {a.max_weight or 100}"))
    elif a is not None and a.step_weights:
        steps = ",".join(str(w) for w in a.step_weights)
        fields.append(Field("Traffic routing", f"Weight steps: {steps} max: {a.step_weights[-1]}"))
    return fields


class AlertSink(Protocol):
    """What a rollout raises alerts through."""

    def alert(self, canary: Canary, message: str, severity: str, fields: list[Field]) -> None: ...


#: (namespace, AlertProvider name, Canary API group) -> where it posts; LookupError when unusable.
Resolver = Callable[[str, str, str], Awaitable[ProviderTarget]]


class AlertSender:
    """Implements `AlertSink`: posts each admitted alert in its own task (see the module docs)."""

    def __init__(
        self,
        resolve: Resolver,
        client: httpx.AsyncClient | None = None,
        *,
        fallback: ProviderTarget | None = None,
        cluster_name: str = "",
    ) -> None:
        self.resolve = resolve
        self._client = client
        self.fallback = fallback
        self.cluster_name = cluster_name
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[tuple[str, str, str], asyncio.Task[None]] = {}  # newest post per destination
        self.sent = 0
        self.failed = 0

    def alert(self, canary: Canary, message: str, severity: str, fields: list[Field]) -> None:
        analysis = canary.spec.analysis
        group = canary.api_version.partition("/")[0]
        if self.cluster_name:
            fields = [Field("Cluster", self.cluster_name), *fields]
        alerts = analysis.alerts if analysis is not None else []
        if not alerts and self.fallback is not None:
            work = self._send(canary, self.fallback, message, severity, fields, "global notifier")
            self._spawn(("", "", "global"), work)
        for a in alerts:
            if not admits(a.severity or "info", severity):
                continue
            namespace = a.provider_ref.namespace or canary.namespace
            ref = (namespace, a.provider_ref.name, group)
            self._spawn(ref, self._post(canary, ref, message, severity, fields))

    def _spawn(self, key: tuple[str, str, str], work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background after the previous post to the same destination, so each
        channel gets a rollout's alerts in the order they were raised."""
        previous = self._last.get(key)

        async def in_turn() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await work

        task = asyncio.get_running_loop().create_task(in_turn())
        self._last[key] = task
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._last.get(key) is t:
                del self._last[key]

        task.add_done_callback(done)

    async def _post(
        self, canary: Canary, ref: tuple[str, str, str], message: str, severity: str, fields: list[Field]
    ) -> None:
        namespace, name, _ = ref
        who = f"alert provider {name}.{namespace}"
        try:
            target = await self.resolve(*ref)
        except Exception as exc:
            self._failed(canary, who, exc)
            return
        await self._send(canary, target, message, severity, fields, who)

    async def _send(
        self,
        canary: Canary,
        target: ProviderTarget,
        message: str,
        severity: str,
        fields: list[Field],
        who: str,
    ) -> None:
        try:
            url, body = payload(target, canary.name, canary.namespace, message, fields, severity)
            headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
            if target.proxy:
                async with httpx.AsyncClient(proxy=target.proxy, timeout=POST_TIMEOUT_S) as c:
                    r = await c.post(url, json=body, headers=headers)
            else:
                r = await self._http().post(url, json=body, headers=headers, timeout=POST_TIMEOUT_S)
            if not 200 <= r.status_code < 300:
                raise RuntimeError(f"bad response {r.status_code}: {r.text[:200]}")
            self.sent += 1
        except Exception as exc:
            self._failed(canary, who, exc)

    def _failed(self, canary: Canary, who: str, exc: Exception) -> None:
        self.failed += 1
        log.warning("%s for %s.%s: %s", who, canary.name, canary.namespace, exc)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def drain(self) -> None:
        """Wait for the posts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        if self._client is not None:
            await self._client.aclose()
