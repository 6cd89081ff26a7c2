"""Flagger's webhooks over httpx: the eight hook types, Flagger's JSON payload, per-hook timeout,
go-retryablehttp's retry policy and backoff, and the response rule (status <= 202 is success)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from canary_stream.controller.phases import Phase
from canary_stream.spec.duration import parse_duration
from canary_stream.spec.model import Webhook

DEFAULT_TIMEOUT_S = 10.0
RETRY_WAIT_MIN_S = 1.0  # go-retryablehttp defaults
RETRY_WAIT_MAX_S = 30.0


class HookType(StrEnum):
    """Flagger's webhook types."""

    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ROLLOUT = "rollout"
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    POST_ROLLOUT = "post-rollout"
    ROLLBACK = "rollback"
    EVENT = "event"


def hook_type(hook: Webhook) -> HookType:
    """The hook's type; an empty type means `rollout`."""
    return HookType(hook.type) if hook.type else HookType.ROLLOUT


def hook_timeout(hook: Webhook) -> float:
    """Per-attempt timeout: a Go duration, 10s when shorter than 2 characters (as Flagger does)."""
    if len(hook.timeout or "") < 2:
        return DEFAULT_TIMEOUT_S
    return parse_duration(hook.timeout)


def payload(
    name: str,
    namespace: str,
    phase: Phase | str,
    checksum: str,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Flagger's `CanaryWebhookPayload`; `metadata` omitted when empty."""
    body: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "phase": str(phase),
        "checksum": checksum,
    }
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def event_metadata(user: dict[str, str], message: str, event_type: str, at: float) -> dict[str, str]:
    """`event` hook metadata: eventMessage, eventType, timestamp (unix ms as a string), then the
    user's keys that do not collide."""
    meta = {"eventMessage": message, "eventType": event_type, "timestamp": str(int(at * 1000))}
    for k, v in user.items():
        meta.setdefault(k, v)
    return meta


@dataclass(frozen=True)
class HookResult:
    """Outcome of one hook (or of a group: the first failure, else success)."""

    ok: bool
    hook: str = ""
    status: int | None = None
    error: str = ""
    attempts: int = 0


def _retryable(status: int) -> bool:
    """go-retryablehttp's DefaultRetryPolicy on a response: 429, and 5xx except 501."""
    return status == 429 or (status >= 500 and status != 501)


def backoff(attempt: int, wait_min: float, wait_max: float, retry_after: str | None = None) -> float:
    """go-retryablehttp's DefaultBackoff: `Retry-After` seconds on 429/503 if given, else
    min * 2^attempt, capped at max."""
    if retry_after is not None and retry_after.isdigit():
        return min(float(retry_after), wait_max)
    return float(min(wait_min * (2**attempt), wait_max))


class WebhookClient:
    """Calls webhooks. `sleep` waits between retries (injectable so tests do not wait); `retry_wait_min`
    and `retry_wait_max` are go-retryablehttp's 1s / 30s."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_wait_min: float = RETRY_WAIT_MIN_S,
        retry_wait_max: float = RETRY_WAIT_MAX_S,
    ) -> None:
        self._client = client
        self._insecure: httpx.AsyncClient | None = None
        self._sleep = sleep
        self.retry_wait_min = retry_wait_min
        self.retry_wait_max = retry_wait_max

    def _http(self, disable_tls: bool) -> httpx.AsyncClient:
        if disable_tls:
            if self._insecure is None:
                self._insecure = httpx.AsyncClient(verify=False, follow_redirects=True)
            return self._insecure
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        for c in (self._client, self._insecure):
            if c is not None:
                await c.aclose()

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        """POST `body` to the hook with up to `hook.retries` retries. Success iff status <= 202; the
        response body is the error text otherwise."""
        timeout = hook_timeout(hook)
        http = self._http(hook.disable_tls)
        attempts = 0
        error = ""
        status: int | None = None
        for attempt in range(max(0, hook.retries) + 1):
            attempts += 1
            retry_after: str | None = None
            try:
                resp = await http.post(hook.url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                status, error = None, f"POST {hook.url} timed out after {timeout:g}s"
                retry = True
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                return HookResult(False, hook.name, None, f"POST {hook.url}: {exc}", attempts)
            except httpx.HTTPError as exc:
                status, error = None, f"POST {hook.url}: {exc}"
                retry = True
            else:
                status = resp.status_code
                if status <= 202:
                    return HookResult(True, hook.name, status, "", attempts)
                error = resp.text or f"status {status}"
                retry = _retryable(status)
                retry_after = resp.headers.get("Retry-After") if status in (429, 503) else None
            if not retry:
                return HookResult(False, hook.name, status, error, attempts)
            if attempt < hook.retries:
                await self._sleep(backoff(attempt, self.retry_wait_min, self.retry_wait_max, retry_after))
        # Only retryable failures get here: go-retryablehttp gives up with this message (the last
        # answer is kept for the human).
        error = f"POST {hook.url} giving up after {attempts} attempt(s): {error}"
        return HookResult(False, hook.name, status, error, attempts)

    async def run(
        self,
        hooks: Sequence[Webhook],
        kind: HookType,
        name: str,
        namespace: str,
        phase: Phase | str,
        checksum: str,
    ) -> HookResult:
        """Run the hooks of `kind` in spec order; the first failure stops the group. No hook of that
        kind = success."""
        for hook in hooks:
            if hook_type(hook) != kind:
                continue
            result = await self.call(hook, payload(name, namespace, phase, checksum, hook.metadata))
            if not result.ok:
                return result
        return HookResult(True)

    async def run_event(
        self,
        hooks: Sequence[Webhook],
        name: str,
        namespace: str,
        phase: Phase | str,
        checksum: str,
        message: str,
        event_type: str,
        at: float,
    ) -> list[HookResult]:
        """Send one event to every `event` hook (failures are only reported)."""
        results = []
        for hook in hooks:
            if hook_type(hook) != HookType.EVENT:
                continue
            meta = event_metadata(hook.metadata, message, event_type, at)
            results.append(await self.call(hook, payload(name, namespace, phase, checksum, meta)))
        return results
