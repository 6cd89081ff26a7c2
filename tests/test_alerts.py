"""Alerts (`analysis.alerts` -> AlertProvider): who receives what, the payloads Flagger's notifiers
post, the sender against a real HTTP server on 127.0.0.1, and the points of a rollout that alert
(the controller's AlertProvider and Secret lookup is in test_kube_controller.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.controller.alerts import (
    AlertSender,
    Field,
    ProviderTarget,
    admits,
    metadata_fields,
    payload,
)
from canary_stream.controller.phases import Phase
from canary_stream.spec.model import Canary
from hook_server import HookServer, Reply
from test_scheduler import ScriptedAnalyzer, envs, make_canary, start  # noqa: F401  (envs is a fixture)

FIELDS = [Field("Target", "Deployment/podinfo.test")]


@pytest.mark.parametrize(
    ("alert", "info", "warn", "error"),
    [("info", True, True, True), ("warn", False, True, True), ("error", False, False, True)],
)
def test_severity_filter_is_flaggers(alert: str, info: bool, warn: bool, error: bool) -> None:
    assert (admits(alert, "info"), admits(alert, "warn"), admits(alert, "error")) == (info, warn, error)


def test_slack_payload_is_an_attachment_red_on_error() -> None:
    url, body = payload(
        ProviderTarget("slack", "https://hooks.slack.test/x"), "podinfo", "test", "hi", FIELDS, "error"
    )
    assert url == "https://hooks.slack.test/x"
    assert body["channel"] == "general" and body["username"] == "flagger" and body["icon_emoji"] == ":rocket:"
    (a,) = body["attachments"]
    assert a == {
        "color": "danger",
        "author_name": "podinfo.test",
        "text": "hi",
        "mrkdwn_in": ["text"],
        "fields": [{"title": "Target", "value": "Deployment/podinfo.test", "short": False}],
    }
    assert (
        payload(ProviderTarget("slack", "u"), "p", "n", "m", [], "info")[1]["attachments"][0]["color"]
        == "good"
    )


def test_discord_posts_slack_format_to_the_slack_endpoint_and_rocket_uses_its_colours() -> None:
    url, body = payload(
        ProviderTarget("discord", "https://discord.test/api/webhooks/1/abc"), "p", "n", "m", [], "info"
    )
    assert url == "https://discord.test/api/webhooks/1/abc/slack" and "attachments" in body
    url, _ = payload(ProviderTarget("discord", "https://discord.test/h/slack"), "p", "n", "m", [], "info")
    assert url == "https://discord.test/h/slack"
    _, body = payload(ProviderTarget("rocket", "https://rocket.test/h"), "p", "n", "m", [], "error")
    assert body["attachments"][0]["color"] == "#FF0000"


def test_msteams_and_gchat_cards() -> None:
    _, teams = payload(
        ProviderTarget("msteams", "https://teams.test/h"), "podinfo", "test", "hi", FIELDS, "info"
    )
    assert (
        teams["@type"] == "MessageCard"
        and teams["themeColor"] == "0076D7"
        and teams["summary"] == "podinfo.test"
    )
    assert teams["sections"] == [
        {
            "activityTitle": "hi",
            "activitySubtitle": "podinfo.test",
            "facts": [{"name": "Target", "value": "Deployment/podinfo.test"}],
        }
    ]
    _, chat = payload(ProviderTarget("gchat", "https://chat.test/h"), "podinfo", "test", "hi", FIELDS, "info")
    (card,) = chat["cards"]
    assert card["header"]["subtitle"] == "podinfo.test"
    texts = [s["widgets"][0]["textParagraph"]["text"] for s in card["sections"]]
    assert texts == [
        "<font color=#848484><strong>hi</strong></font>",
        "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>",
    ]


def test_an_unknown_provider_type_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.type"):
        payload(ProviderTarget("pagerduty", "u"), "p", "n", "m", [], "info")


def test_metadata_fields_describe_the_strategy() -> None:
    canary = make_canary({"stepWeight": 10, "maxWeight": 50})
    assert [(f.name, f.value) for f in metadata_fields(canary, 5)] == [
        ("Target", "Deployment/podinfo.test"),
        ("Failed checks threshold", "5"),
        ("Progress deadline", "600s"),
        ("Traffic routing", "Weight step: 10 max: 50"),
    ]
    ladder = make_canary({"stepWeights": [5, 20, 60]})
    assert metadata_fields(ladder, 5)[-1].value == "Weight steps: 5,20,60 max: 60"
    ab = make_canary({"iterations": 3, "match": [{"headers": {"x-canary": {"exact": "on"}}}]})
    assert metadata_fields(ab, 5)[-1].value == "A/B Testing"
    assert metadata_fields(make_canary({"iterations": 3}), 5)[-1].value == "Blue/Green"


def alerting_canary(*alerts: tuple[str, str]) -> Canary:
    return make_canary(
        {
            "stepWeight": 10,
            "maxWeight": 20,
            "alerts": [{"name": n, "severity": sev, "providerRef": {"name": n}} for n, sev in alerts],
        }
    )


async def test_the_sender_posts_admitted_alerts_with_the_token_and_survives_failures(
    server: HookServer,
) -> None:
    targets = {
        "team": ProviderTarget("slack", server.url("/team"), token="s3cret", channel="deploys"),
        "oncall": ProviderTarget("msteams", server.url("/oncall")),
        "broken": ProviderTarget("slack", server.url("/broken")),
    }
    server.answer("/broken", Reply(500, "no"))
    asked: list[tuple[str, str, str]] = []

    async def resolve(namespace: str, name: str, group: str) -> ProviderTarget:
        asked.append((namespace, name, group))
        if name == "missing":
            raise LookupError("AlertProvider missing.test not found")
        return targets[name]

    canary = alerting_canary(("team", "info"), ("oncall", "error"), ("broken", "warn"), ("missing", "info"))
    async with httpx.AsyncClient() as client:
        sender = AlertSender(resolve, client)
        sender.alert(canary, "New revision detected, progressing canary analysis.", "info", FIELDS)
        sender.alert(canary, "Failed checks threshold reached 5", "error", [])
        await sender.drain()
    (first, second) = server.calls("/team")
    assert first.headers.get("Authorization") == "Bearer s3cret"
    assert first.body["channel"] == "deploys"
    assert first.body["attachments"][0]["text"] == "New revision detected, progressing canary analysis."
    assert second.body["attachments"][0]["color"] == "danger"
    (teams,) = server.calls("/oncall")  # error only
    assert teams.body["sections"][0]["activityTitle"] == "Failed checks threshold reached 5"
    assert len(server.calls("/broken")) == 1  # warn takes the error, not the info
    assert sender.sent == 3 and sender.failed == 3  # the 500 once, the missing provider twice
    assert ("test", "team", "flagger.app") in asked


async def test_a_canary_without_alerts_goes_to_the_global_notifier_with_the_cluster(
    server: HookServer,
) -> None:
    async def resolve(namespace: str, name: str, group: str) -> ProviderTarget:
        raise AssertionError("no AlertProvider is looked up for the global notifier")

    async with httpx.AsyncClient() as client:
        sender = AlertSender(
            resolve, client, fallback=ProviderTarget("msteams", server.url("/global")), cluster_name="prod-eu"
        )
        sender.alert(make_canary({"stepWeight": 10}), "Rolling back manual webhook invoked", "warn", FIELDS)
        sender.alert(alerting_canary(("team", "error")), "not for the global notifier", "info", [])
        await sender.drain()
    (call,) = server.calls("/global")
    facts = call.body["sections"][0]["facts"]
    assert facts[0] == {"name": "Cluster", "value": "prod-eu"} and facts[1]["name"] == "Target"
    assert call.body["sections"][0]["activityTitle"] == "Rolling back manual webhook invoked"


async def test_alerts_reach_a_channel_in_the_order_they_were_raised(server: HookServer) -> None:
    server.answer("/team", Reply(200, "ok", delay=0.3), Reply(200, "ok"))

    async def resolve(namespace: str, name: str, group: str) -> ProviderTarget:
        return ProviderTarget("slack", server.url("/team"))

    canary = alerting_canary(("team", "info"))
    async with httpx.AsyncClient() as client:
        sender = AlertSender(resolve, client)
        for i in range(3):
            sender.alert(canary, f"message {i}", "info", [])
        await sender.drain()
    calls = server.calls("/team")
    assert [c.body["attachments"][0]["text"] for c in calls] == ["message 0", "message 1", "message 2"]
    assert calls[1].at - calls[0].at >= 0.25  # the second waited for the (slow) first


@dataclass
class RecordingAlerts:
    sent: list[tuple[str, str, list[Field]]] = field(default_factory=list)

    def alert(self, canary: Canary, message: str, severity: str, fields: list[Field]) -> None:
        self.sent.append((message, severity, fields))

    def messages(self) -> list[tuple[str, str]]:
        return [(m, s) for m, s, _ in self.sent]


async def test_a_rollout_alerts_at_flaggers_points(envs: list[Any]) -> None:  # noqa: F811
    alerts = RecordingAlerts()
    env = await start(envs, {"stepWeight": 10, "maxWeight": 20}, alerts=alerts)
    assert alerts.messages() == [("New Deployment detected, initialization completed.", "info")]
    assert [f.name for f in alerts.sent[0][2]] == [
        "Target",
        "Failed checks threshold",
        "Progress deadline",
        "Traffic routing",
    ]
    env.release("podinfo:2")
    await env.run_until(Phase.SUCCEEDED)
    assert alerts.messages()[1:] == [
        ("New revision detected, progressing canary analysis.", "info"),
        ("Canary analysis completed successfully, promotion finished.", "info"),
    ]


async def test_a_failed_analysis_alerts_an_error(envs: list[Any]) -> None:  # noqa: F811
    alerts = RecordingAlerts()
    analyzer = ScriptedAnalyzer(Decision.CONTINUE)
    env = await start(envs, {"stepWeight": 10, "maxWeight": 50}, analyzer=analyzer, alerts=alerts)
    env.release("podinfo:2")
    await env.run_for(1)
    env.rollout.on_verdict(Verdict(Decision.FAIL, env.clock.now(), ("error rate 5%",)))
    await env.rollout.settle()
    assert env.rollout.status.phase == Phase.FAILED
    severities = {s for m, s in alerts.messages() if "initialization" not in m and "New revision" not in m}
    assert severities == {"error"}


async def test_a_gate_alerts_a_warning_unless_muted(envs: list[Any], server: HookServer) -> None:  # noqa: F811
    server.answer("/gate", Reply(403, "Forbidden"))
    for mute, expected in ((False, [("Canary promotion is waiting for approval.", "warn")]), (True, [])):
        alerts = RecordingAlerts()
        hooks = [{"name": "gate", "type": "confirm-promotion", "url": server.url("/gate"), "muteAlert": mute}]
        env = await start(envs, {"stepWeight": 50, "maxWeight": 50, "webhooks": hooks}, alerts=alerts)
        env.release("podinfo:2")
        await env.run_until(Phase.WAITING_PROMOTION)
        assert [x for x in alerts.messages() if x[1] == "warn"] == expected
