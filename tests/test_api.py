"""The verdict API on a real uvicorn server over in-memory rollouts driven by the simulator (real
aggregator, judge and scheduler): reads, live windows, strict JSON, manual control, limits,
errors without stack traces, readiness, SSE."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest

from api_support import add_sim, demo_canary, served, simulated
from canary_stream.analysis.verdict import Decision, Verdict, VersionFigures
from canary_stream.analysis.verdict import TestResult as Check
from canary_stream.api import ApiConfig, ApiConfigError
from canary_stream.api.views import parse_window
from canary_stream.controller.phases import Phase
from canary_stream.registry import Registry
from canary_stream.sources.base import SourceStats


def strict_json(text: str) -> Any:
    """Parse as Go's encoding/json would: NaN / Infinity are errors."""

    def reject(const: str) -> Any:
        raise ValueError(f"non-standard JSON constant {const}")

    return json.loads(text, parse_constant=reject)


async def test_reads_show_phase_weights_verdict_and_windows() -> None:
    async with simulated() as sims, served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
        rollout = sims.sim().rollout
        listing = strict_json((await c.get("/api/v1/canaries")).text)
        assert [(i["namespace"], i["name"]) for i in listing["items"]] == [("test", "podinfo")]
        item = listing["items"][0]
        assert item["phase"] == "Progressing"
        assert item["canary_weight"] == rollout.status.canary_weight > 0
        assert item["primary_weight"] == 100 - item["canary_weight"]
        assert item["target"] == "podinfo.test"

        r = await c.get("/api/v1/canaries/test/podinfo")
        assert r.status_code == 200
        d = strict_json(r.text)
        v = rollout.last_verdict
        assert v is not None
        assert d["verdict"]["decision"] == v.decision.value == d["decision"]
        assert d["verdict"]["reasons"] == list(v.reasons) and d["verdict"]["reasons"]
        versions = {f["version"]: f for f in d["verdict"]["versions"]}
        assert versions["canary"]["requests"] == next(f.requests for f in v.versions if f.version == "canary")
        assert versions["primary"]["requests"] > versions["canary"]["requests"] > 0
        tests = {t["name"]: t for t in d["verdict"]["tests"]}
        assert "error-rate-harm" in tests and tests["error-rate-harm"]["statistic"] is not None
        assert "request-success-rate" in tests
        assert d["verdict"]["figures_window_s"] == 30.0
        # The spec's metrics both use 30s: one analysis window, both versions with sample sizes.
        assert [w["window_s"] for w in d["windows"]] == [30.0]
        assert sorted(w["version"] for w in d["windows"][0]["versions"]) == ["canary", "primary"]
        assert d["status"]["phase"] == "Progressing" and d["status"]["canaryWeight"] == item["canary_weight"]
        assert [t["phase"] for t in d["transitions"]][-1] == "Progressing"
        assert d["weights"][-1]["canary_weight"] == item["canary_weight"]

        verdict = strict_json((await c.get("/api/v1/canaries/test/podinfo/verdict")).text)
        assert verdict == d["verdict"]
        assert (await c.get("/api/v1/canaries/test/nope")).status_code == 404
        missing = strict_json((await c.get("/api/v1/canaries/test/nope/verdict")).text)
        assert missing["error"] == "not found" and "test/nope" in missing["detail"]


async def test_live_metrics_over_the_callers_window() -> None:
    async with simulated() as sims, served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
        agg = sims.sim().aggregator
        for window, seconds in (("10s", 10.0), ("1m", 60.0), ("25", 25.0)):
            r = await c.get("/api/v1/canaries/test/podinfo/metrics", params={"window": window})
            assert r.status_code == 200, r.text
            body = strict_json(r.text)
            assert body["window_s"] == seconds and body["target"] == "podinfo.test"
            expected = {s.version: s.requests for s in agg.snapshot(seconds, target="podinfo.test")}
            assert {v["version"]: v["requests"] for v in body["versions"]} == expected
        ten = strict_json((await c.get("/api/v1/canaries/test/podinfo/metrics?window=10s")).text)
        minute = strict_json((await c.get("/api/v1/canaries/test/podinfo/metrics?window=1m")).text)
        p10 = next(v for v in ten["versions"] if v["version"] == "primary")
        p60 = next(v for v in minute["versions"] if v["version"] == "primary")
        assert p60["requests"] > p10["requests"] > 0
        for bad in ("0s", "-5s", "abc", "100000s", "nan", "1e9"):
            r = await c.get("/api/v1/canaries/test/podinfo/metrics", params={"window": bad})
            assert r.status_code == 400, (bad, r.text)
            assert strict_json(r.text)["detail"].startswith("window:")


def test_parse_window() -> None:
    assert parse_window("30s", 600) == 30.0
    assert parse_window(" 2m ", 600) == 120.0
    assert parse_window("1.5", 600) == 1.5
    for bad in ("", "0.5", "601s", "inf", "1x"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad, 600)


async def test_non_finite_numbers_are_null_in_every_answer() -> None:
    async with simulated() as sims, served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
        rollout = sims.sim().rollout
        nan, inf = math.nan, math.inf
        rollout.last_verdict = Verdict(
            Decision.CONTINUE,
            sims.sim().clock.now(),
            ("odd numbers",),
            versions=(VersionFigures("canary", 10, 1, nan, inf, -inf, nan, None),),
            tests=(Check("error-rate-harm", Decision.CONTINUE, statistic=nan, boundary=inf, alpha=0.01),),
            canary_share=nan,
            expected_share=inf,
            extra={"figures_window_s": nan, "nested": [inf, {"x": -inf}]},
        )
        for path in (
            "/api/v1/canaries/test/podinfo",
            "/api/v1/canaries/test/podinfo/verdict",
            "/argo/test/podinfo",
            "/api/v1/canaries",
        ):
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text)
            strict_json(r.text)  # raises on NaN / Infinity
        v = strict_json((await c.get("/api/v1/canaries/test/podinfo/verdict")).text)
        assert v["versions"][0]["success_rate"] is None and v["versions"][0]["p50_ms"] is None
        assert v["tests"][0]["statistic"] is None and v["tests"][0]["boundary"] is None
        assert v["tests"][0]["alpha"] == 0.01
        assert v["canary_share"] is None and v["expected_share"] is None
        assert v["extra"]["nested"] == [None, {"x": None}]
        argo = strict_json((await c.get("/argo/test/podinfo")).text)
        assert argo["successRate"] is None and argo["evidence"]["error-rate-harm"]["statistic"] is None
        metrics = (await c.get("/metrics")).text
        assert "NaN" not in metrics and "Inf" not in metrics


async def test_manual_commands_reach_the_rollout() -> None:
    async with simulated() as sims, served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
        sim = sims.sim()
        base = "/api/v1/canaries/test/podinfo"
        r = await c.post(base + "/pause")
        assert r.status_code == 202 and strict_json(r.text)["command"] == "pause"
        await sim.rollout.settle()
        assert sim.rollout.paused
        assert (await c.post(base + "/resume")).status_code == 202
        await sim.rollout.settle()
        assert not sim.rollout.paused
        r = await c.post(base + "/set-weight", json={"weight": 35})
        assert r.status_code == 202, r.text
        await sim.rollout.settle()
        assert sim.rollout.status.canary_weight == 35 and sim.routes.canary_weight == 35
        for bad in ({"weight": 101}, {"weight": -1}, {"weight": "x"}, {}, {"weight": 5, "extra": 1}):
            assert (await c.post(base + "/set-weight", json=bad)).status_code == 422, bad
        assert sim.rollout.status.canary_weight == 35
        assert (await c.post("/api/v1/canaries/test/nope/abort")).status_code == 404
        assert (await c.post(base + "/abort")).status_code == 202
        await sim.rollout.settle()
        assert sim.rollout.status.phase == Phase.FAILED and sim.routes.canary_weight == 0


async def test_commands_without_a_commander_are_503() -> None:
    async with simulated() as sims:
        sims.registry.commander = None
        async with served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
            r = await c.post("/api/v1/canaries/test/podinfo/promote")
            assert r.status_code == 503 and strict_json(r.text)["error"] == "unavailable"
            assert sims.sim().rollout.status.phase == Phase.PROGRESSING


async def test_body_limit_is_413_and_nothing_changes() -> None:
    async with (
        simulated() as sims,
        served(sims.registry, ApiConfig(auth="none", max_body_bytes=64)) as url,
        httpx.AsyncClient(base_url=url) as c,
    ):
        weight = sims.sim().rollout.status.canary_weight
        big = b'{"weight": 50' + b" " * 200 + b"}"
        r = await c.post("/api/v1/canaries/test/podinfo/set-weight", content=big)
        assert r.status_code == 413 and strict_json(r.text)["error"] == "body too large"

        async def chunks() -> Any:  # no Content-Length: counted while reading
            yield b'{"weight": 50'
            for _ in range(10):
                yield b" " * 20
            yield b"}"

        r = await c.post("/api/v1/canaries/test/podinfo/set-weight", content=chunks())
        assert r.status_code == 413
        r = await c.post(
            "/flagger/gate", content=b'{"name":"podinfo","namespace":"test","x":"' + b"a" * 100 + b'"}'
        )
        assert r.status_code == 413
        await sims.sim().rollout.settle()
        assert sims.sim().rollout.status.canary_weight == weight


class _Broken:
    """An aggregator whose snapshot fails with a message that must not reach the caller."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def snapshot(self, *a: Any, **kw: Any) -> Any:
        raise RuntimeError("SECRET internal detail /etc/passwd")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_errors_carry_no_stack_trace() -> None:
    async with simulated() as sims, served(sims.registry) as url, httpx.AsyncClient(base_url=url) as c:
        sims.registry.aggregator = _Broken(sims.registry.aggregator)  # type: ignore[assignment]
        r = await c.get("/api/v1/canaries/test/podinfo/metrics?window=10s")
        assert r.status_code == 500
        assert r.headers["content-type"].startswith("application/json")
        assert strict_json(r.text) == {"error": "internal error", "detail": "see the server log"}
        assert "SECRET" not in r.text and "Traceback" not in r.text
        r = await c.get("/no/such/path")
        assert r.status_code == 404 and strict_json(r.text)["error"] == "not found"
        r = await c.post("/flagger/gate", content=b"{not json")
        assert r.status_code == 422 and "Traceback" not in r.text


async def test_readiness_follows_aggregator_sources_and_leadership() -> None:
    registry = Registry()
    leader = False
    registry.is_leader = lambda: leader
    cfg = ApiConfig(auth="none", ready_requires_leader=True)
    async with served(registry, cfg) as url, httpx.AsyncClient(base_url=url) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert strict_json(r.text)["checks"] == {"aggregator": False, "sources": False, "leader": False}

        class Source:
            stats = SourceStats("http")
            ready = asyncio.Event()

            async def run(self, queue: Any) -> None: ...

            def stop(self) -> None: ...

        from canary_stream.sim.engine import new_aggregator

        registry.aggregator = new_aggregator()
        src = Source()
        registry.sources.append(src)
        assert strict_json((await c.get("/readyz")).text)["checks"]["sources"] is False
        src.ready.set()
        leader = True
        r = await c.get("/readyz")
        assert r.status_code == 200 and strict_json(r.text)["ok"] is True
    relaxed = ApiConfig(auth="none", ready_requires_sources=False)
    async with served(registry, relaxed) as url, httpx.AsyncClient(base_url=url) as c:
        registry.sources.clear()
        assert (await c.get("/readyz")).status_code == 200


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ApiConfigError, match=r"^auth:"):
        ApiConfig(auth="ldap")  # type: ignore[arg-type]
    with pytest.raises(ApiConfigError, match=r"^max_body_bytes:"):
        ApiConfig(max_body_bytes=0)
    with pytest.raises(ApiConfigError, match=r"^metrics_window_s:"):
        ApiConfig(metrics_window_s=0.5)
    with pytest.raises(ApiConfigError, match=r"^kube_token:"):
        ApiConfig(auth="kubernetes", kube_host="https://127.0.0.1:6443")


async def _sse_events(response: httpx.Response, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif line == "" and data:
            await queue.put((event, strict_json(data)))
            event, data = "message", ""


async def _next(queue: asyncio.Queue[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    while True:
        event, data = await asyncio.wait_for(queue.get(), 10)
        if event == kind:
            return data


async def test_sse_streams_a_phase_change_per_canary_and_globally() -> None:
    async with simulated() as sims:
        other = await add_sim(sims, demo_canary("other", "prod"), progress=False)
        async with served(sims.registry) as url, httpx.AsyncClient(base_url=url, timeout=30) as c:
            one: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
            every: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
            async with (
                c.stream("GET", "/api/v1/canaries/test/podinfo/events") as r1,
                c.stream("GET", "/api/v1/events") as r2,
            ):
                assert r1.status_code == 200 and r1.headers["content-type"].startswith("text/event-stream")
                readers = [
                    asyncio.create_task(_sse_events(r1, one)),
                    asyncio.create_task(_sse_events(r2, every)),
                ]
                state = await _next(one, "state")
                assert (state["namespace"], state["name"]) == ("test", "podinfo")
                assert state["data"]["phase"] == "Progressing"
                states = {(await _next(every, "state"))["name"] for _ in range(2)}
                assert states == {"podinfo", "other"}
                # A change elsewhere is not on the per-canary stream, but is on the global one.
                other.rollout.pause()
                await other.rollout.settle()
                ev = await _next(every, "event")
                assert ev["name"] == "other" and "paused" in ev["data"]["message"]
                assert (await c.post("/api/v1/canaries/test/podinfo/abort")).status_code == 202
                seen: dict[str, dict[str, Any]] = {}
                while not {"phase", "weight"} <= seen.keys():
                    event, data = await asyncio.wait_for(one.get(), 10)
                    seen.setdefault(event, data)
                phase = seen["phase"]
                assert phase["data"] == {"phase": "Failed", "previous": "Progressing"}
                assert (phase["namespace"], phase["name"]) == ("test", "podinfo")
                # The rollback routed everything to the primary (published before the phase).
                assert seen["weight"]["data"] == {"canary_weight": 0, "primary_weight": 100}
                glob = await _next(every, "phase")
                assert glob["name"] == "podinfo" and glob["data"]["phase"] == "Failed"
                for t in readers:
                    t.cancel()
                await asyncio.gather(*readers, return_exceptions=True)


async def test_verdict_notices_on_the_stream() -> None:
    async with (
        simulated() as sims,
        served(sims.registry) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as c,
    ):
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        async with c.stream("GET", "/api/v1/canaries/test/podinfo/events") as r:
            reader = asyncio.create_task(_sse_events(r, queue))
            await _next(queue, "state")
            await sims.seconds(20)
            v = await _next(queue, "verdict")
            assert v["data"]["decision"] in ("continue", "pass", "fail", "inconclusive")
            assert isinstance(v["data"]["reasons"], list)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def test_stop_ends_open_streams() -> None:
    from canary_stream.api import create_app, serve

    async with simulated() as sims:
        app = create_app(sims.registry, ApiConfig(auth="none"))
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(app, "127.0.0.1", 0, ready=ready, stop=stop, graceful_shutdown_s=5))
        await ready.wait()
        base = f"http://127.0.0.1:{app.state.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as c, c.stream("GET", "/api/v1/events") as r:
            assert r.status_code == 200
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            stop.set()
            async for _ in r.aiter_lines():
                pass
            assert loop.time() - t0 < 4  # ended by us, not by uvicorn's graceful timeout
        await asyncio.wait_for(task, 10)
