"""``canary-stream promote|abort|pause|resume|status NAME [-n NS] [--weight N]``: manual control of a
Canary in a cluster. The commands set the Canary's annotations (controller/manual.py); the leading
controller carries them out and removes them. ``status`` prints the Canary's status."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from canary_stream.controller.scheduler import Command

COMMANDS = ("promote", "abort", "pause", "resume", "status")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the manual-control subcommands."""
    for name in COMMANDS:
        what = "print the status of" if name == "status" else f"{name}"
        p = sub.add_parser(name, help=f"{what} a Canary in the cluster (annotation read by the controller)")
        p.add_argument("name")
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("--kubeconfig", default=None)
        p.add_argument("--context", default=None)
        p.add_argument("--group", default="canary-stream.dev", help="flagger.app for Flagger Canaries")
        if name in ("pause", "resume"):
            p.add_argument("--weight", type=int, default=None, help="route this canary weight (0-100) first")
        if name == "status":
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_ctl, command=name)


def cmd_ctl(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_ctl(args))
    except (LookupError, ValueError) as exc:
        print(f"canary-stream {args.command}: {exc}", file=sys.stderr)
        return 1


async def _ctl(args: argparse.Namespace) -> int:
    from canary_stream.controller.manual import annotations_for
    from canary_stream.kube.config import load_client
    from canary_stream.kube.objects import VERSION
    from canary_stream.kube.rest import Kube, Resource

    api = await load_client(args.kubeconfig, args.context)
    try:
        kube = Kube(api)
        res = Resource(args.group, VERSION, "canaries")
        obj = await kube.get(res, args.namespace, args.name)
        if obj is None:
            raise LookupError(f"canary {args.namespace}/{args.name} not found ({args.group})")
        if args.command == "status":
            print_status(obj, args.json)
            return 0
        annotations: dict[str, str] = {}
        if getattr(args, "weight", None) is not None:
            annotations.update(annotations_for(Command.SET_WEIGHT, args.weight))
        annotations.update(annotations_for(Command(args.command)))
        await kube.patch(res, args.namespace, args.name, {"metadata": {"annotations": annotations}})
        print(f"canary {args.namespace}/{args.name}: {args.command} requested")
        return 0
    finally:
        await api.close()


def print_status(obj: dict[str, Any], as_json: bool) -> None:
    """The status, one field a line (or JSON)."""
    status = obj.get("status") or {}
    if as_json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return
    meta = obj.get("metadata") or {}
    print(f"canary {meta.get('namespace')}/{meta.get('name')}")
    for key in (
        "phase",
        "canaryWeight",
        "failedChecks",
        "iterations",
        "lastTransitionTime",
        "lastAppliedSpec",
    ):
        print(f"  {key}: {status.get(key, '')}")
    for c in status.get("conditions") or []:
        print(f"  condition {c.get('type')}={c.get('status')} ({c.get('reason')}): {c.get('message')}")
