"""`canary-stream simulate`: one rollout of a Canary spec over simulated traffic, in simulated time."""

from __future__ import annotations

import argparse
import json
import sys

from canary_stream.sim.engine import run_simulation
from canary_stream.sim.flagger_baseline import run_flagger
from canary_stream.sim.mesh import Latency, MeshConfig
from canary_stream.sim.result import SimResult
from canary_stream.spec.load import load_canary


def _rate(s: str) -> float:
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError("must be a fraction between 0 and 1 (0.05 = 5 %)")
    return v


def _positive(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `simulate` subcommand."""
    p = sub.add_parser(
        "simulate",
        help="run one rollout of a Canary spec over simulated traffic (simulated time)",
        description="Runs one rollout of the Canary in FILE against a simulated mesh: synthetic requests "
        "split by the router's weights, written as Istio JSON access-log lines and judged by the real "
        "aggregator and judge. The traffic is simulated; nothing touches a cluster.",
    )
    p.add_argument(
        "--spec", required=True, metavar="FILE", help="Canary YAML (flagger.app or canary-stream.dev)"
    )
    p.add_argument("--rps", type=_positive, default=100.0, help="total request rate, split by the weights")
    p.add_argument(
        "--primary-error-rate", type=_rate, default=0.001, metavar="P", help="fraction of primary 5xx"
    )
    p.add_argument("--canary-error-rate", type=_rate, default=None, metavar="P",
                   help="fraction of canary 5xx once its fault starts (default: the primary's)")  # fmt: skip
    p.add_argument("--latency-factor", type=_positive, default=1.0, metavar="F",
                   help="the canary's latency is F times the primary's once its fault starts")  # fmt: skip
    p.add_argument("--p50-ms", type=_positive, default=20.0, help="primary median latency (lognormal)")
    p.add_argument("--p99-ms", type=_positive, default=80.0, help="primary p99 latency (lognormal)")
    p.add_argument("--fault-at-weight", type=int, default=None, metavar="W",
                   help="the fault starts at canary weight W (default: at its first request)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=_positive, default=6 * 3600.0, help="simulated time limit")
    p.add_argument("--baseline", choices=["flagger"], default=None,
                   help="run Flagger's algorithm (fixed ticks, point estimates) instead of ours")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def mesh_config(args: argparse.Namespace) -> MeshConfig:
    """The simulated traffic the arguments describe."""
    if args.p99_ms <= args.p50_ms:
        raise ValueError("--p99-ms must be above --p50-ms")
    return MeshConfig(
        rps=args.rps,
        primary_error_rate=args.primary_error_rate,
        canary_error_rate=args.primary_error_rate
        if args.canary_error_rate is None
        else args.canary_error_rate,
        latency=Latency(args.p50_ms, args.p99_ms),
        latency_factor=args.latency_factor,
        fault_at_weight=args.fault_at_weight,
    )


def run(args: argparse.Namespace) -> int:
    """Run the rollout and print the outcome; exit 0 when it ran (whatever the phase)."""
    try:
        canary = load_canary(args.spec)
        config = mesh_config(args)
    except (OSError, ValueError) as e:
        print(f"canary-stream simulate: {e}", file=sys.stderr)
        return 2
    if args.baseline == "flagger":
        result = run_flagger(canary, config, seed=args.seed, max_s=args.max_seconds)
    else:
        result = run_simulation(canary, config, seed=args.seed, max_s=args.max_seconds)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(describe(result, "Flagger's algorithm" if args.baseline else "canary-stream"))
    return 0


def describe(r: SimResult, who: str) -> str:
    """A few human lines about one simulated rollout."""

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"

    lines = [
        f"{who}: {r.phase} (simulated traffic, {r.lines:,} log lines, {r.simulated_s:.0f}s simulated)",
        f"  decision {s(r.decision_s)} after the first canary request; first fault at {s(r.first_fault_s)}; "
        f"rollback {s(r.rollback_after_fault_s)} after it",
        "  weights: " + " ".join(f"{w}%@{t:.0f}s" for t, w in r.weights),
    ]
    if r.reason:
        lines.append(f"  why: {r.reason}")
    return "\n".join(lines)
