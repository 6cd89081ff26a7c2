"""Webhooks against a real HTTP server on 127.0.0.1: payload shape, response rule, timeout, retries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from canary_stream.controller.phases import Phase
from canary_stream.controller.webhooks import (
    HookType,
    WebhookClient,
    backoff,
    event_metadata,
    hook_timeout,
    payload,
)
from canary_stream.spec.model import Webhook
from hook_server import HookServer, Reply


def hook(server: HookServer, path: str, kind: str = "rollout", **kw: Any) -> Webhook:
    return Webhook(type=kind, name=path.strip("/") or "root", url=server.url(path), **kw)


def fast_client() -> WebhookClient:
    return WebhookClient(retry_wait_min=0.01, retry_wait_max=0.05)


async def test_payload_shape_and_content_type(server: HookServer) -> None:
    client = fast_client()
    h = hook(server, "/gate", "confirm-rollout", metadata={"cmd": "hey -z 1m"})
    result = await client.call(h, payload("podinfo", "test", Phase.INITIALIZED, "abc123", h.metadata))
    await client.aclose()
    assert result.ok and result.status == 200 and result.attempts == 1
    (req,) = server.calls("/gate")
    assert req.content_type.startswith("application/json")
    assert req.body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Initialized",
        "checksum": "abc123",
        "metadata": {"cmd": "hey -z 1m"},
    }


async def test_metadata_omitted_when_empty(server: HookServer) -> None:
    client = fast_client()
    await client.call(hook(server, "/p"), payload("podinfo", "test", Phase.PROGRESSING, "c"))
    await client.aclose()
    assert "metadata" not in server.calls("/p")[0].body


@pytest.mark.parametrize(
    ("status", "ok"), [(200, True), (201, True), (202, True), (204, False), (403, False)]
)
async def test_success_iff_status_at_most_202(server: HookServer, status: int, ok: bool) -> None:
    server.answer("/s", Reply(status, "nope" if not ok else ""))
    client = fast_client()
    result = await client.call(hook(server, "/s"), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert result.ok is ok
    assert result.status == status


async def test_403_is_denied_with_body_as_error_and_not_retried(server: HookServer) -> None:
    server.answer("/gate/halt", Reply(403, "Forbidden: gate closed"))
    client = fast_client()
    result = await client.call(hook(server, "/gate/halt", retries=3), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert not result.ok
    assert result.error == "Forbidden: gate closed"
    assert len(server.calls("/gate/halt")) == 1


async def test_500_then_200_succeeds_with_retries(server: HookServer) -> None:
    server.answer("/flaky", Reply(500, "boom"), Reply(200))
    client = fast_client()
    result = await client.call(hook(server, "/flaky", retries=2), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert result.ok and result.attempts == 2
    assert len(server.calls("/flaky")) == 2


async def test_500_without_retries_fails_after_one_attempt(server: HookServer) -> None:
    server.answer("/down", Reply(500, "boom"))
    client = fast_client()
    result = await client.call(hook(server, "/down"), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert not result.ok and result.attempts == 1
    assert "giving up after 1 attempt(s)" in result.error and "boom" in result.error


async def test_retries_exhausted_on_503_and_429(server: HookServer) -> None:
    server.answer("/busy", Reply(503, "busy"), Reply(429, "slow down"), Reply(503, "busy"))
    client = fast_client()
    result = await client.call(hook(server, "/busy", retries=2), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert not result.ok and result.attempts == 3
    assert len(server.calls("/busy")) == 3


async def test_501_is_not_retried(server: HookServer) -> None:
    server.answer("/ni", Reply(501, "not implemented"))
    client = fast_client()
    result = await client.call(hook(server, "/ni", retries=3), payload("a", "b", "Progressing", "c"))
    await client.aclose()
    assert not result.ok and len(server.calls("/ni")) == 1
    assert result.error == "not implemented"


async def test_timeout_fails_and_is_retried(server: HookServer) -> None:
    server.answer("/slow", Reply(200, delay=0.5))
    client = fast_client()
    started = time.monotonic()
    result = await client.call(hook(server, "/slow", timeout="100ms", retries=1), payload("a", "b", "x", "c"))
    elapsed = time.monotonic() - started
    await client.aclose()
    assert not result.ok and result.attempts == 2
    assert "timed out" in result.error
    assert elapsed < 0.45  # two 100 ms attempts, not the server's 500 ms


async def test_connection_refused_is_a_failure(server: HookServer) -> None:
    port = server.httpd.server_address[1]
    server.httpd.shutdown()
    server.httpd.server_close()
    client = fast_client()
    h = Webhook(name="gone", url=f"http://127.0.0.1:{port}/", retries=1)
    result = await client.call(h, payload("a", "b", "x", "c"))
    await client.aclose()
    assert not result.ok and result.attempts == 2 and result.status is None


async def test_group_runs_in_spec_order_and_stops_at_first_failure(server: HookServer) -> None:
    server.answer("/two", Reply(500, "second failed"))
    hooks = [
        hook(server, "/one", "pre-rollout"),
        hook(server, "/skipped-type", "rollout"),
        hook(server, "/two", "pre-rollout"),
        hook(server, "/three", "pre-rollout"),
    ]
    client = fast_client()
    result = await client.run(hooks, HookType.PRE_ROLLOUT, "podinfo", "test", Phase.PROGRESSING, "c")
    await client.aclose()
    assert not result.ok and result.hook == "two"
    assert [r.path for r in server.requests] == ["/one", "/two"]


async def test_empty_type_means_rollout(server: HookServer) -> None:
    hooks = [Webhook(type="", name="load", url=server.url("/load"))]
    client = fast_client()
    result = await client.run(hooks, HookType.ROLLOUT, "podinfo", "test", Phase.PROGRESSING, "c")
    await client.aclose()
    assert result.ok and len(server.calls("/load")) == 1


async def test_event_hook_payload(server: HookServer) -> None:
    hooks = [hook(server, "/ev", "event", metadata={"eventType": "mine", "team": "a"})]
    client = fast_client()
    results = await client.run_event(
        hooks,
        "podinfo",
        "test",
        Phase.PROGRESSING,
        "c",
        "Advance podinfo.test canary weight 10",
        "Normal",
        1.5,
    )
    await client.aclose()
    assert [r.ok for r in results] == [True]
    body = server.calls("/ev")[0].body
    assert body["phase"] == "Progressing"
    assert body["metadata"] == {
        "eventMessage": "Advance podinfo.test canary weight 10",
        "eventType": "Normal",  # the user's colliding key does not win
        "timestamp": "1500",
        "team": "a",
    }


def test_timeout_parsing_and_backoff() -> None:
    assert hook_timeout(Webhook(name="a", url="http://x", timeout="1m30s")) == 90.0
    assert hook_timeout(Webhook.model_construct(name="a", url="http://x", timeout="")) == 10.0
    assert hook_timeout(Webhook(name="a", url="http://x")) == 10.0
    assert [backoff(i, 1.0, 30.0) for i in range(6)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert backoff(0, 1.0, 30.0, retry_after="7") == 7.0
    assert event_metadata({}, "m", "Warning", 2.0)["timestamp"] == "2000"
