"""/metrics on a real server, parsed with prometheus_client's text parser: canary, verdict,
per-version, source and Flagger-compatible families with the registry's values; the Grafana
dashboard uses only metric names the scrape has."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api_support import add_sim, demo_canary, served, simulated
from canary_stream.api.metrics import flagger_status
from canary_stream.controller.phases import Phase
from canary_stream.sources.base import SourceStats

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "canary-stream.json"
METRIC = re.compile(r"\b((?:canary_stream|flagger)_[a-z0-9_]+)\b")


class FakeSource:
    """A source as the registry holds it: only its counters matter to /metrics."""

    def __init__(self) -> None:
        self.stats = SourceStats("kafka")
        self.stats.events, self.stats.lines, self.stats.bytes, self.stats.lag = 900, 1000, 123_456, 42
        self.stats.waits = 3
        self.stats.malformed = {"truncated": 60, "dropped_late": 40}

    async def run(self, queue: Any) -> None: ...

    def stop(self) -> None: ...


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    return scrape[(metric, frozenset(labels.items()))]


async def scrape_text(url: str) -> str:
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_metrics_reflect_the_registry() -> None:
    async with simulated() as sims:
        sims.registry.sources.append(FakeSource())
        other = await add_sim(sims, demo_canary("other", "prod"), progress=False)
        async with served(sims.registry) as url:
            rollout = sims.sim().rollout
            text = await scrape_text(url)
            m = samples(text)
            ns = {"name": "podinfo", "namespace": "test"}
            assert value(m, "canary_stream_canary_phase", **ns, phase="Progressing") == 1
            assert value(m, "canary_stream_canary_phase", **ns, phase="Failed") == 0
            assert (
                value(m, "canary_stream_canary_phase", name="other", namespace="prod", phase="Initialized")
                == 1
            )
            w = rollout.status.canary_weight
            assert value(m, "canary_stream_canary_weight", **ns, version="canary") == w > 0
            assert value(m, "canary_stream_canary_weight", **ns, version="primary") == 100 - w
            v = rollout.last_verdict
            assert v is not None
            for d in ("continue", "pass", "fail", "inconclusive"):
                assert value(m, "canary_stream_canary_verdict", **ns, decision=d) == (
                    1 if d == v.decision.value else 0
                )
            assert value(m, "canary_stream_canary_failed_checks", **ns) == rollout.status.failed_checks
            harm = next(t for t in v.tests if t.name == "error-rate-harm")
            assert (
                value(m, "canary_stream_verdict_test_statistic", **ns, test="error-rate-harm")
                == harm.statistic
            )
            canary_fig = next(f for f in v.versions if f.version == "canary")
            assert value(m, "canary_stream_verdict_requests", **ns, version="canary") == canary_fig.requests
            live = {s.version: s for s in sims.sim().aggregator.snapshot(30.0, target="podinfo.test")}
            assert (
                value(m, "canary_stream_version_requests", **ns, version="primary")
                == live["primary"].requests
            )
            assert value(m, "canary_stream_version_rps", **ns, version="primary") == live["primary"].rps
            ratio = value(m, "canary_stream_version_success_ratio", **ns, version="primary")
            assert abs(ratio - (live["primary"].success_rate or 0) / 100) < 1e-9
            p99 = value(m, "canary_stream_version_latency_seconds", **ns, version="canary", quantile="0.99")
            assert abs(p99 - (live["canary"].p99_ms or 0) / 1000) < 1e-9
            # sources
            assert value(m, "canary_stream_source_events_total", source="kafka") == 900
            assert value(m, "canary_stream_source_lag", source="kafka") == 42
            assert value(m, "canary_stream_source_malformed_total", source="kafka", reason="truncated") == 60
            assert (
                "canary_stream_source_malformed_total",
                frozenset({("source", "kafka"), ("reason", "dropped_late")}),
            ) not in m
            assert value(m, "canary_stream_source_dropped_late_total", source="kafka") == 40
            assert value(m, "canary_stream_source_backpressure_waits_total", source="kafka") == 3
            assert value(m, "canary_stream_aggregator_lines_total") == sims.sim().aggregator.totals().lines
            # Flagger's families: labelled by the target, its status values, weights per workload.
            assert value(m, "flagger_canary_status", name="podinfo", namespace="test") == 0
            assert value(m, "flagger_canary_status", name="other", namespace="prod") == 1
            assert value(m, "flagger_canary_weight", workload="podinfo", namespace="test", type="canary") == w
            assert (
                value(
                    m, "flagger_canary_weight", workload="podinfo-primary", namespace="test", type="primary"
                )
                == 100 - w
            )
            assert value(m, "flagger_canary_total", namespace="test") == 1
            assert value(m, "flagger_canary_total", namespace="prod") == 1
            labels = {
                "name": "podinfo",
                "namespace": "test",
                "deployment_strategy": "canary",
                "analysis_status": "completed",
            }
            assert value(m, "flagger_canary_failures_total", **labels) == 0
            # A rollback moves the gauges and counts a failure.
            async with httpx.AsyncClient() as c:
                assert (await c.post(url + "/api/v1/canaries/test/podinfo/abort")).status_code == 202
            await rollout.settle()
            m = samples(await scrape_text(url))
            assert value(m, "flagger_canary_status", name="podinfo", namespace="test") == 2
            assert value(m, "flagger_canary_failures_total", **labels) == 1
            assert value(m, "canary_stream_canary_phase", **ns, phase="Failed") == 1
            assert value(m, "flagger_canary_weight", workload="podinfo", namespace="test", type="canary") == 0
            assert other.rollout.status.phase == Phase.INITIALIZED


def test_flagger_status_values() -> None:
    assert flagger_status(Phase.PROGRESSING) == 0
    assert flagger_status(Phase.FAILED) == 2
    for p in (
        Phase.SUCCEEDED,
        Phase.INITIALIZED,
        Phase.WAITING,
        Phase.PROMOTING,
        Phase.WAITING_PROMOTION,
        None,
    ):
        assert flagger_status(p) == 1


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    return exprs


async def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    async with simulated() as sims:
        sims.registry.sources.append(FakeSource())
        async with served(sims.registry) as url:
            scraped = {name for name, _ in samples(await scrape_text(url))}
    used: set[str] = set()
    for e in exprs:
        names = set(METRIC.findall(e))
        assert names, f"no canary-stream metric in {e!r}"
        used |= names
    missing = sorted(used - scraped)
    assert not missing, f"dashboard metrics not in the scrape: {missing}"
    # Side by side: both versions' rps, success rate and p50/p90/p99.
    text = json.dumps(json.loads(DASHBOARD.read_text()))
    for version in ("primary", "canary"):
        assert f'version=\\"{version}\\",quantile=\\"0.99\\"' in text
    assert {
        "canary_stream_version_rps",
        "canary_stream_version_success_ratio",
        "canary_stream_canary_verdict",
        "canary_stream_canary_weight",
        "canary_stream_source_events_total",
    } <= used
