"""The simulated mesh, the engine's wiring, the Flagger baseline and the simulate command."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from typing import Any

import pytest

from canary_stream.analysis.verdict import Decision, Verdict
from canary_stream.core import Aggregator, AggregatorConfig, VersionStats, parse_lines
from canary_stream.router.base import Routes
from canary_stream.sim import simulate_cmd
from canary_stream.sim.engine import run_simulation, simulate
from canary_stream.sim.flagger_baseline import run_flagger
from canary_stream.sim.mesh import Latency, MeshConfig, SimulatedMesh
from canary_stream.spec.load import load_canary
from canary_stream.spec.model import Canary

T0 = 1_767_225_600
PODINFO = "python/canary_stream/sim/specs/podinfo.yaml"


@pytest.fixture(scope="module")
def podinfo() -> Canary:
    return load_canary(PODINFO)


def run_mesh(
    cfg: MeshConfig, routes: Routes, seconds: int, seed: int = 1
) -> tuple[SimulatedMesh, dict[str, VersionStats]]:
    mesh = SimulatedMesh(cfg, seed=seed)
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    for s in range(seconds):
        res = agg.feed(mesh.emit(T0 + s, routes), now_ms=0)
        assert res.accepted == res.lines
    return mesh, {s.version: s for s in agg.snapshot(None, target="podinfo.test")}


def test_lines_are_istio_json_the_core_attributes() -> None:
    mesh = SimulatedMesh(MeshConfig(rps=200, canary_error_rate=0.5), seed=3)
    data = mesh.emit(T0 + 7, Routes(50, 50))
    lines = data.splitlines()
    assert len(lines) == sum(mesh.events.requests.values())
    stamps = []
    for line in lines:
        d = json.loads(line)
        assert d["start_time"].startswith("2026-01-01T00:00:07.") and d["start_time"].endswith("Z")
        assert isinstance(d["response_code"], int) and isinstance(d["duration"], int)
        assert d["upstream_cluster"] in (
            "outbound|9898||podinfo-canary.test.svc.cluster.local",
            "outbound|9898||podinfo-primary.test.svc.cluster.local",
        )
        stamps.append(d["start_time"])
    assert stamps == sorted(stamps)
    parsed = parse_lines(data, "istio-json")
    assert all(p["ok"] for p in parsed)
    assert {p["status"] for p in parsed} >= {200, 500, 503}


def test_weights_error_rates_and_latency_reach_the_aggregator() -> None:
    cfg = MeshConfig(rps=2000, primary_error_rate=0.01, canary_error_rate=0.1,
                     latency=Latency(20, 80), latency_factor=2.0)  # fmt: skip
    _, by = run_mesh(cfg, Routes(80, 20), 20)
    total = by["primary"].requests + by["canary"].requests
    assert abs(total - 40_000) < 5 * math.sqrt(40_000)
    share = by["canary"].requests / total
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / total)
    assert by["primary"].status_5xx / by["primary"].requests == pytest.approx(0.01, abs=0.003)
    assert by["canary"].status_5xx / by["canary"].requests == pytest.approx(0.1, abs=0.015)
    p, c = by["primary"], by["canary"]
    assert p.p99_ms is not None and c.p99_ms is not None and p.p50_ms is not None
    assert p.p50_ms == pytest.approx(20, rel=0.1) and p.p99_ms == pytest.approx(80, rel=0.15)
    assert c.p99_ms / p.p99_ms == pytest.approx(2.0, rel=0.15)


def test_mirror_copies_count_for_the_canary_and_live_traffic_stays_on_primary() -> None:
    mesh, by = run_mesh(MeshConfig(rps=1000), Routes(100, 0, mirrored=True, mirror_weight=30), 10)
    assert mesh.events.requests["canary"] == 0
    assert by["canary"].requests == mesh.events.requests["mirror"]
    assert by["canary"].requests / by["primary"].requests == pytest.approx(0.3, abs=0.03)
    shadow = SimulatedMesh(MeshConfig(rps=50), seed=2).emit(T0, Routes(100, 0, mirrored=True))
    authorities = {json.loads(x)["authority"] for x in shadow.splitlines()}
    assert authorities == {"podinfo.test:9898", "podinfo.test:9898-shadow"}


def test_ab_match_share_limits_the_canary_route_to_matching_users() -> None:
    _, by = run_mesh(MeshConfig(rps=1000, match_share=0.25), Routes(0, 100), 10)
    share = by["canary"].requests / (by["canary"].requests + by["primary"].requests)
    assert share == pytest.approx(0.25, abs=0.03)


def test_fault_starts_at_the_given_weight() -> None:
    mesh = SimulatedMesh(
        MeshConfig(rps=1000, primary_error_rate=0.0, canary_error_rate=1.0, fault_at_weight=30)
    )
    before = mesh.emit(T0, Routes(80, 20))
    assert b'"response_code":5' not in before and mesh.events.first_fault_request is None
    after = mesh.emit(T0 + 1, Routes(70, 30))
    canary_lines = [x for x in after.splitlines() if b"podinfo-canary" in x]
    assert canary_lines and all(json.loads(x)["response_code"] >= 500 for x in canary_lines)
    assert mesh.events.first_fault_request is not None and mesh.events.first_fault_request >= T0 + 1
    assert mesh.events.first_canary_request is not None and mesh.events.first_canary_request < T0 + 1


def test_same_seed_same_bytes() -> None:
    a = SimulatedMesh(MeshConfig(rps=300), seed=9).emit(T0, Routes(90, 10))
    b = SimulatedMesh(MeshConfig(rps=300), seed=9).emit(T0, Routes(90, 10))
    c = SimulatedMesh(MeshConfig(rps=300), seed=8).emit(T0, Routes(90, 10))
    assert a == b and a != c


# -- Flagger's algorithm ---------------------------------------------------------------------------


def test_flagger_promotes_a_healthy_canary_one_step_per_interval(podinfo: Canary) -> None:
    r = run_flagger(podinfo, MeshConfig(rps=200), seed=1)
    assert r.phase == "Succeeded"
    assert [w for _, w in r.weights] == [0, 10, 20, 30, 40, 50, 0]
    steps = [t for t, w in r.weights if w > 0]
    assert all(b - a == 60 for a, b in itertools.pairwise(steps))


def test_flagger_rolls_back_threshold_plus_one_intervals_after_the_first_shift(podinfo: Canary) -> None:
    r = run_flagger(podinfo, MeshConfig(rps=1000, canary_error_rate=0.05), seed=1)
    assert r.phase == "Failed" and "success rate" in r.reason
    assert [w for _, w in r.weights] == [0, 10, 0]  # the weight never advances after a failed check
    # five failed checks (one per interval from the first analysis), rollback at the start of the sixth tick
    assert r.rollback_after_fault_s == pytest.approx(360, abs=1.5)
    assert sum(1 for v in r.verdicts if not v["ok"]) == 5


def test_flagger_counts_no_data_as_a_failed_check(podinfo: Canary) -> None:
    r = run_flagger(podinfo, MeshConfig(rps=0.001), seed=1, max_s=3600)
    assert r.phase == "Failed" and "no values found" in r.reason


# -- the engine, with a stand-in judge (the real one is tested below when present) -------------------


class ThresholdJudge:
    """Pass after 200 canary requests in the step with < 1 % errors; fail above 3 %."""

    def __init__(self, canary: Canary, agg: Aggregator, target: str) -> None:
        self.agg, self.target, self.start = agg, target, 0.0
        self.steps: list[tuple[float, Routes]] = []

    def start_step(self, at: float, routes: Routes) -> None:
        self.start = at
        self.steps.append((at, routes))

    def verdict(self, now: float) -> Verdict:
        window = max(1.0, now - self.start)
        snap = self.agg.snapshot(window, end_ms=int(now * 1000), target=self.target)
        c = next((s for s in snap if s.version == "canary"), None)
        if c is None or c.requests < 200:
            return Verdict(Decision.CONTINUE, now, ("not enough canary requests",))
        rate = c.status_5xx / c.requests
        if rate > 0.03:
            return Verdict(Decision.FAIL, now, (f"canary error rate {rate:.1%}",))
        return Verdict(Decision.PASS if rate < 0.01 else Decision.CONTINUE, now, ("ok",))


def test_engine_promotes_a_healthy_canary_along_the_spec_weights(podinfo: Canary) -> None:
    r = run_simulation(podinfo, MeshConfig(rps=200), seed=2, analyzer=ThresholdJudge)
    assert r.phase == "Succeeded" and not r.rolled_back
    assert [w for _, w in r.weights] == [0, 10, 20, 30, 40, 50, 0]
    # each step dwells at least the interval (1m)
    steps = [t for t, w in r.weights[1:-1]]
    assert all(b - a >= 60 for a, b in itertools.pairwise(steps))
    assert r.decision_s is not None and r.decision_s > 5 * 60
    assert r.lines > 200 * 5 * 60


def test_engine_rolls_back_on_a_fail_verdict_without_waiting_for_the_interval(podinfo: Canary) -> None:
    r = run_simulation(podinfo, MeshConfig(rps=1000, canary_error_rate=0.2), seed=2, analyzer=ThresholdJudge)
    assert r.phase == "Failed" and "error rate" in r.reason
    assert r.first_fault_s == 0.0
    assert r.rollback_after_fault_s is not None and r.rollback_after_fault_s < 10
    assert r.weights[-1][1] == 0 and max(w for _, w in r.weights) == 10


async def test_engine_sees_a_fault_that_starts_at_a_later_weight(podinfo: Canary) -> None:
    cfg = MeshConfig(rps=1000, canary_error_rate=0.2, fault_at_weight=30)
    r = await simulate(podinfo, cfg, seed=3, analyzer=ThresholdJudge)
    assert r.phase == "Failed" and max(w for _, w in r.weights) == 30
    assert r.first_fault_s is not None and r.first_fault_s > 115
    assert r.rollback_after_fault_s is not None and 0 < r.rollback_after_fault_s < 10


# -- the command -------------------------------------------------------------------------------------


def run_cmd(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    simulate_cmd.register(p.add_subparsers())
    args = p.parse_args(["simulate", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_simulate_json_with_flagger_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cmd(["--spec", PODINFO, "--rps", "1000", "--canary-error-rate", "0.05",
                         "--baseline", "flagger", "--json"], capsys)  # fmt: skip
    d: dict[str, Any] = json.loads(out)
    assert code == 0
    assert {"phase", "decision_s", "first_fault_s", "rollback_after_fault_s", "weights", "verdicts"} <= set(d)
    assert d["phase"] == "Failed" and d["weights"][-1][1] == 0
    assert d["rollback_after_fault_s"] == pytest.approx(360, abs=1.5)


def test_simulate_rejects_a_missing_spec(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    p = argparse.ArgumentParser()
    simulate_cmd.register(p.add_subparsers())
    args = p.parse_args(["simulate", "--spec", str(tmp_path / "nope.yaml")])
    assert args.func(args) == 2
    assert "canary-stream simulate:" in capsys.readouterr().err


def test_simulate_with_the_streaming_judge(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("canary_stream.analysis.analyzer")
    code, out = run_cmd(["--spec", PODINFO, "--rps", "1000", "--canary-error-rate", "0.05", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["phase"] == "Failed"
    assert d["rollback_after_fault_s"] is not None and d["rollback_after_fault_s"] <= 10


def test_demo_view_says_the_traffic_is_simulated(podinfo: Canary) -> None:
    from rich.console import Console

    from canary_stream.sim import demo
    from canary_stream.sim.engine import build

    sim = build(podinfo, MeshConfig(rps=100), analyzer=ThresholdJudge)
    sim.emit()
    console = Console(record=True, width=120)
    console.print(demo._view(sim, "healthy release"))
    text = console.export_text()
    assert "SIMULATED TRAFFIC" in text and "primary 100%" in text and "primary" in text
    assert demo.demo_spec_path().endswith("podinfo-fast.yaml")
    assert load_canary(demo.demo_spec_path()).spec.analysis is not None
