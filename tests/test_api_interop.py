"""Flagger and Argo Rollouts as clients, on a real server: the requests Flagger's webhook client
sends (the project's Flagger-compatible WebhookClient and the literal payload) and the answer it
acts on (the status code), and Argo's `web` provider requests as the AnalysisTemplates in
docs/argo-rollouts.md configure them, read through their jsonPath and conditions as Argo's
evaluator classifies a measurement."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from api_support import Sims, add_sim, demo_canary, served, simulated
from canary_stream.analysis.verdict import Decision
from canary_stream.controller.phases import Phase
from canary_stream.controller.webhooks import HookType, WebhookClient, payload
from canary_stream.registry import Registry, direct_commander
from canary_stream.spec.model import Webhook

DOCS = Path(__file__).resolve().parent.parent / "docs" / "argo-rollouts.md"
CHECKSUM = "6b5d8f4c9"


# -- Flagger --------------------------------------------------------------------------------------


async def flagger_asks(
    url: str,
    kind: HookType,
    name: str = "podinfo",
    namespace: str = "test",
    path: str | None = None,
    metadata: dict[str, str] | None = None,
) -> tuple[bool, int | None]:
    """One hook of ``kind`` through the Flagger-compatible client: (passed, status)."""
    hook = Webhook(
        name="streaming-judge",
        type=kind.value,
        url=f"{url}{path or '/flagger/gate/' + kind.value}",
        metadata=metadata or {},
    )
    client = WebhookClient()
    try:
        # Flagger's payload for this hook type (pre-rollout, rollout and the confirm-* hooks send
        # Progressing; rollback the current phase, Progressing here).
        result = await client.call(hook, payload(name, namespace, Phase.PROGRESSING, CHECKSUM, hook.metadata))
    finally:
        await client.aclose()
    return result.ok, result.status


async def wait_for_decision(sims: Sims, decision: Decision, limit: int = 120) -> None:
    rollout = sims.sim().rollout
    for _ in range(limit):
        v = rollout.last_verdict
        if v is not None and v.decision == decision:
            return
        await sims.seconds(1)
    raise AssertionError(f"no {decision.value} verdict in {limit} s: {rollout.last_verdict}")


async def test_flagger_gate_while_evidence_accrues() -> None:
    async with simulated() as sims, served(sims.registry) as url:
        rollout = sims.sim().rollout
        rollout.pause()  # hold the step so the verdict we look at stays the current one
        await rollout.settle()
        await sims.seconds(1)
        v = rollout.last_verdict
        assert v is not None and v.decision == Decision.CONTINUE, v
        assert await flagger_asks(url, HookType.ROLLOUT) == (True, 200)
        assert await flagger_asks(url, HookType.PRE_ROLLOUT) == (True, 200)
        assert await flagger_asks(url, HookType.CONFIRM_PROMOTION) == (False, 425)
        assert await flagger_asks(url, HookType.CONFIRM_TRAFFIC_INCREASE) == (False, 425)
        assert await flagger_asks(url, HookType.ROLLBACK) == (False, 409)  # 200 would roll back
        assert await flagger_asks(url, HookType.POST_ROLLOUT) == (True, 200)
        # Without a type in the URL: metadata `hook`, or Flagger's default, `rollout`. The load
        # tester's `type: cmd` is not a hook type and is ignored.
        assert await flagger_asks(url, HookType.ROLLOUT, path="/flagger/gate") == (True, 200)
        assert await flagger_asks(
            url, HookType.CONFIRM_PROMOTION, path="/flagger/gate", metadata={"hook": "confirm-promotion"}
        ) == (False, 425)
        assert await flagger_asks(
            url,
            HookType.ROLLOUT,
            path="/flagger/gate",
            metadata={"type": "cmd", "cmd": "hey -z 1m http://podinfo-canary.test:9898/"},
        ) == (True, 200)
        # The Flagger canary may be named differently: metadata points at ours.
        assert await flagger_asks(
            url,
            HookType.ROLLOUT,
            name="podinfo-flagger",
            namespace="apps",
            metadata={"canary": "test/podinfo"},
        ) == (True, 200)
        assert await flagger_asks(url, HookType.ROLLOUT, name="nope") == (False, 404)
        assert await flagger_asks(url, HookType.ROLLOUT, path="/flagger/gate/bogus") == (False, 400)
        # The literal payload and the body Flagger would put into its event.
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{url}/flagger/gate/confirm-promotion",
                json={"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": CHECKSUM},
            )
        assert r.status_code == 425
        body = json.loads(r.text)
        assert body["allowed"] is False and body["decision"] == "continue"
        assert body["reason"].startswith("not passed yet: ")
        assert rollout.status.phase == Phase.PROGRESSING  # asking changes nothing


async def test_flagger_gate_passes_promotion_only_on_pass() -> None:
    async with simulated() as sims, served(sims.registry) as url:
        sims.sim().rollout.pause()
        await wait_for_decision(sims, Decision.PASS)
        assert await flagger_asks(url, HookType.CONFIRM_PROMOTION) == (True, 200)
        assert await flagger_asks(url, HookType.CONFIRM_TRAFFIC_INCREASE) == (True, 200)
        assert await flagger_asks(url, HookType.ROLLOUT) == (True, 200)
        assert await flagger_asks(url, HookType.ROLLBACK) == (False, 409)


async def test_flagger_gate_halts_and_rolls_back_a_failing_canary() -> None:
    async with simulated(canary_error_rate=0.2) as sims, served(sims.registry) as url:
        rollout = sims.sim().rollout
        for _ in range(120):
            if rollout.status.phase == Phase.FAILED:
                break
            await sims.seconds(1)
        assert rollout.status.phase == Phase.FAILED
        assert rollout.last_verdict is not None and rollout.last_verdict.decision == Decision.FAIL
        assert await flagger_asks(url, HookType.ROLLOUT) == (False, 409)
        assert await flagger_asks(url, HookType.CONFIRM_PROMOTION) == (False, 409)
        assert await flagger_asks(url, HookType.PRE_ROLLOUT) == (False, 409)
        # A new revision after the failure may start: the primary's traffic is the baseline.
        assert await flagger_asks(url, HookType.CONFIRM_ROLLOUT) == (True, 200)
        assert await flagger_asks(url, HookType.ROLLBACK) == (True, 200)  # Flagger rolls back
        async with httpx.AsyncClient() as c:
            literal = {"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": CHECKSUM}
            r = await c.post(f"{url}/flagger/gate/rollout", json=literal)
        body = json.loads(r.text)
        assert body["decision"] == "fail" and body["reason"].startswith("canary failed: ")


async def test_flagger_gate_halts_without_data() -> None:
    registry = Registry()
    registry.commander = direct_commander(registry)
    sims = Sims(registry)
    try:
        await add_sim(sims, demo_canary(), progress=False)  # Initialized: no run, no verdict
        async with served(registry) as url:
            assert await flagger_asks(url, HookType.ROLLOUT) == (False, 425)
            assert await flagger_asks(url, HookType.CONFIRM_PROMOTION) == (False, 425)
            assert await flagger_asks(url, HookType.PRE_ROLLOUT) == (True, 200)  # the primary has traffic
            registry.aggregator = None
            assert await flagger_asks(url, HookType.PRE_ROLLOUT) == (False, 425)
    finally:
        await sims.close()


# -- Argo Rollouts ----------------------------------------------------------------------------------


def templates() -> dict[str, dict[str, Any]]:
    """The AnalysisTemplates of docs/argo-rollouts.md by name."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    docs = [yaml.safe_load(b) for b in blocks]
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == "AnalysisTemplate"}


def render(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\{\{args\.([\w-]+)\}\}", lambda m: args[m.group(1)], text)


def json_path(doc: Any, path: str) -> Any:
    """Kubernetes JSONPath, the forms the docs use: ``{$}`` and ``{$.a.b}``."""
    m = re.fullmatch(r"\{\$((?:\.[\w-]+)*)\}", path)
    assert m, f"unsupported jsonPath {path}"
    for key in filter(None, m.group(1).split(".")):
        doc = doc[key]
    return doc


def condition(expr: str, result: Any) -> bool:
    """expr-lang conditions of the docs' form: ``result.a.b == "x"`` joined by || and &&."""

    def atom(a: str) -> bool:
        m = re.fullmatch(r'\s*result((?:\.\w+)*)\s*(==|!=)\s*"([^"]*)"\s*', a)
        assert m, f"unsupported condition {a!r}"
        value = result
        for key in filter(None, m.group(1).split(".")):
            value = value[key]
        return (value == m.group(3)) == (m.group(2) == "==")

    return any(all(atom(a) for a in alt.split("&&")) for alt in expr.split("||"))


def classify(metric: dict[str, Any], result: Any) -> str:
    """Argo's per-measurement outcome (utils/evaluate: both, only success, only failure, neither)."""
    success, failure = metric.get("successCondition"), metric.get("failureCondition")
    failed = condition(failure, result) if failure else None
    passed = condition(success, result) if success else None
    if failed:
        return "Failed"
    if success and failure:
        return "Successful" if passed else "Inconclusive"
    if success:
        return "Successful" if passed else "Failed"
    return "Successful"


async def measure(url: str, template: dict[str, Any], args: dict[str, str], token: str | None = None) -> str:
    """One measurement as Argo's web provider takes it; the outcome Argo records."""
    metric = template["spec"]["metrics"][0]
    web = metric["provider"]["web"]
    target = render(web["url"], args).replace("http://canary-stream.canary-stream.svc:8080", url)
    headers = {h["key"]: render(h["value"], args) for h in web.get("headers", [])}
    method = web.get("method", "GET")
    body = None
    if "jsonBody" in web:
        body = render(json.dumps(web["jsonBody"]), args).encode()
        headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(timeout=web.get("timeoutSeconds") or 10) as c:
        r = await c.request(method, target, headers=headers, content=body)
    if not 200 <= r.status_code < 300:
        return "Error"

    def reject(const: str) -> Any:  # Go's encoding/json refuses NaN/Infinity
        raise ValueError(const)

    try:
        doc = json.loads(r.text, parse_constant=reject)
    except ValueError:
        pytest.fail(f"not strict JSON: Argo would fall back to plain text: {r.text[:200]}")
    result = json_path(doc, web.get("jsonPath", "{$}"))
    return classify(metric, result)


ARGS = {"namespace": "test", "canary": "podinfo", "canary-hash": "6d4f9c7b8", "api-token": "unused"}


def test_docs_templates_use_the_web_provider_fields() -> None:
    t = templates()
    assert set(t) == {"canary-stream-guard", "canary-stream-gate"}
    allowed = {
        "url",
        "method",
        "headers",
        "body",
        "jsonBody",
        "timeoutSeconds",
        "jsonPath",
        "insecure",
        "authentication",
    }
    for tpl in t.values():
        assert tpl["apiVersion"] == "argoproj.io/v1alpha1"
        metric = tpl["spec"]["metrics"][0]
        assert set(metric["provider"]["web"]) <= allowed
        assert metric["failureLimit"] == 0
    guard = t["canary-stream-guard"]["spec"]["metrics"][0]
    assert "successCondition" not in guard and "count" not in guard and guard["interval"] == "10s"
    gate = t["canary-stream-gate"]["spec"]["metrics"][0]
    assert gate["count"] == gate["inconclusiveLimit"] == 360 and gate["consecutiveSuccessLimit"] == 1


async def test_argo_guard_and_gate_follow_the_verdict() -> None:
    t = templates()
    guard, gate = t["canary-stream-guard"], t["canary-stream-gate"]
    async with simulated() as sims, served(sims.registry) as url:
        rollout = sims.sim().rollout
        rollout.pause()
        await rollout.settle()
        await sims.seconds(1)
        assert rollout.last_verdict is not None and rollout.last_verdict.decision == Decision.CONTINUE
        assert await measure(url, guard, ARGS) == "Successful"
        assert await measure(url, gate, ARGS) == "Inconclusive"
        async with httpx.AsyncClient() as c:  # both methods, hash echoed
            got = json.loads((await c.get(f"{url}/argo/test/podinfo", params={"canaryHash": "abc"})).text)
            posted = json.loads((await c.post(f"{url}/argo/test/podinfo", json={"canaryHash": "abc"})).text)
            assert got["canaryHash"] == posted["canaryHash"] == "abc"
            assert got["verdict"] == posted["verdict"] == "continue"
            assert got["canaryRequests"] > 0 and got["successRate"] is not None
            r = await c.get(f"{url}/argo/test/nope")
            assert r.status_code == 404 and json.loads(r.text)["error"] == "not found"
        assert await measure(url, guard, {**ARGS, "canary": "nope"}) == "Error"
        await wait_for_decision(sims, Decision.PASS)
        assert await measure(url, guard, ARGS) == "Successful"
        assert await measure(url, gate, ARGS) == "Successful"


async def test_argo_fail_is_sticky() -> None:
    t = templates()
    async with simulated(canary_error_rate=0.2) as sims, served(sims.registry) as url:
        rollout = sims.sim().rollout
        for _ in range(120):
            if rollout.status.phase == Phase.FAILED:
                break
            await sims.seconds(1)
        assert rollout.status.phase == Phase.FAILED
        assert await measure(url, t["canary-stream-guard"], ARGS) == "Failed"
        assert await measure(url, t["canary-stream-gate"], ARGS) == "Failed"
        # Asked late or twice (Argo's loose reconcile timing): still fail, while the run lasts.
        await sims.seconds(5)
        async with httpx.AsyncClient() as c:
            body = json.loads((await c.get(f"{url}/argo/test/podinfo")).text)
        assert body["verdict"] == "fail" and body["phase"] == "Failed" and body["reasons"]


async def test_argo_without_data_is_inconclusive_never_pass() -> None:
    t = templates()
    registry = Registry()
    sims = Sims(registry)
    try:
        await add_sim(sims, demo_canary(), progress=False)
        async with served(registry) as url:
            async with httpx.AsyncClient() as c:
                r = await c.get(f"{url}/argo/test/podinfo")
            assert r.status_code == 200 and json.loads(r.text)["verdict"] == "inconclusive"
            assert (
                await measure(url, t["canary-stream-guard"], ARGS) == "Successful"
            )  # the guard never blocks
            assert await measure(url, t["canary-stream-gate"], ARGS) == "Inconclusive"
    finally:
        await sims.close()
