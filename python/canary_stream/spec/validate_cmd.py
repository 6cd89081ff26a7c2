"""`canary-stream validate FILE [--json]`: check a Canary manifest and print its planned schedule."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from canary_stream.spec.duration import format_duration
from canary_stream.spec.errors import FieldError, SpecError
from canary_stream.spec.load import load_documents
from canary_stream.spec.model import Canary, Strategy
from canary_stream.spec.schedule import Schedule, Step, plan

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `validate` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "validate",
        help="check a Canary manifest (Flagger's or canary-stream's) and print the planned schedule",
        description="Load a Canary (and any MetricTemplates) from FILE, list every error with its field "
        "path, and print the strategy and the planned schedule. Exit 0 when valid, 1 when invalid, "
        "2 when the file cannot be read.",
    )
    p.add_argument("file", type=Path, help="YAML file (several documents allowed)")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"strategy", "weights", "iterations", "mirror", "errors", ...}; '
        "a list of such objects when the file holds several canaries",
    )
    p.set_defaults(func=run)


def main(argv: Sequence[str]) -> int:
    """Run `validate` from an argument list (`["validate", FILE, "--json"]`), without the full CLI."""
    parser = argparse.ArgumentParser(prog="canary-stream")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    rc: int = args.func(args)
    return rc


def run(args: argparse.Namespace) -> int:
    """The subcommand: exit 0 valid, 1 invalid, 2 unreadable."""
    try:
        docs = load_documents(Path(args.file))
    except OSError as exc:
        return _report_errors(
            [FieldError("", f"cannot read {args.file}: {exc.strerror or exc}")], args.json, EXIT_UNREADABLE
        )
    except SpecError as exc:
        return _report_errors(exc.errors, args.json, EXIT_INVALID)
    if not docs.canaries:
        return _report_errors([FieldError("", "no Canary in this file")], args.json, EXIT_INVALID)
    if args.json:
        results = [_json_result(c, plan(c), docs.warnings_for(i)) for i, c in enumerate(docs.canaries)]
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        for i, c in enumerate(docs.canaries):
            print(_text_report(c, plan(c), docs.warnings_for(i)))
    return EXIT_OK


def _report_errors(errors: list[FieldError], as_json: bool, rc: int) -> int:
    if as_json:
        out = {
            "strategy": None,
            "weights": [],
            "iterations": 0,
            "mirror": False,
            "errors": [e.to_dict() for e in errors],
        }
        print(json.dumps(out, indent=2))
    else:
        n = len(errors)
        print(f"invalid: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
    return rc


def _json_result(canary: Canary, schedule: Schedule, warnings: list[FieldError]) -> dict[str, Any]:
    return {
        "name": canary.name,
        "namespace": canary.namespace,
        **schedule.to_dict(),
        "errors": [],
        "warnings": [w.to_dict() for w in warnings],
    }


def _text_report(canary: Canary, s: Schedule, warnings: list[FieldError]) -> str:
    a = canary.spec.analysis
    lines = [f"{canary.namespace}/{canary.name}: valid ({canary.api_version})", f"strategy: {s.strategy}"]
    if s.skip_analysis:
        lines.append("analysis skipped: promoted as soon as the canary is ready")
    elif a is not None:
        lines.append(
            f"interval: {format_duration(s.interval_s)} minimum dwell per step; "
            f"rollback after {a.max_failed_checks} failed check(s)"
        )
        lines.append("progressing: " + " -> ".join([*_steps_text(s.steps), "promote"]))
        if s.strategy is Strategy.CANARY:
            lines.append(f"max weight: {s.max_weight}%")
        lines.append("promoting: " + _promotion_text(s))
        lines.append(f"minimum analysis time: {format_duration(s.min_analysis_s)}")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def _steps_text(steps: list[Step]) -> list[str]:
    # Iterations that route the same way are collapsed: "#1-#10 100% of matching requests".
    out: list[str] = []
    run: tuple[str, int, int] | None = None  # (label, first iteration, last iteration)
    for step in steps:
        label = _step_label(step)
        if step.iteration is not None and run and run[0] == label and run[2] == step.iteration - 1:
            run = (label, run[1], step.iteration)
            continue
        if run:
            out.append(_iteration_run(*run))
            run = None
        if step.iteration is not None:
            run = (label, step.iteration, step.iteration)
        else:
            out.append(label)
    if run:
        out.append(_iteration_run(*run))
    return out


def _iteration_run(label: str, first: int, last: int) -> str:
    span = f"#{first}" if first == last else f"#{first}-#{last}"
    return f"{span} {label}"


def _step_label(step: Step) -> str:
    if step.mirrored:
        return "mirror"
    if step.iteration is not None and step.canary_weight == 0:
        return "0% (test traffic only)"
    where = " of matching requests" if step.route == "match" else ""
    return f"{step.canary_weight}%{where}"


def _promotion_text(s: Schedule) -> str:
    if not s.promotion_weights:
        return "no traffic shift (kubernetes provider), canary scaled down"
    if s.promotion_weights == [0]:
        return "all traffic to the primary at once"
    return "canary " + " -> ".join(f"{w}%" for w in s.promotion_weights)
