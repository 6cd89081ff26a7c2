"""``canary-stream controller``: the in-cluster controller in one asyncio process -- Kubernetes
watches and Rollouts (controller/kube_controller.py), the telemetry sources and the aggregator
(as ``canary-stream run`` has them), and the verdict API when that module is installed.

Every flag has an environment variable (``CANARY_STREAM_<FLAG>``); defaults work in a pod (service
account, leader election on a Lease in the pod's namespace) and against a kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from canary_stream import eventloop
from canary_stream.controller.scheduler import RolloutOptions

log = logging.getLogger("canary_stream.controller")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"CANARY_STREAM_{name}", default)


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"CANARY_STREAM_{name}: {raw!r} is not a number") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``controller`` subcommand."""
    p = sub.add_parser(
        "controller",
        help="run the Kubernetes controller (watches, rollouts, sources, API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k = p.add_argument_group("kubernetes")
    k.add_argument(
        "--kubeconfig", default=_env("KUBECONFIG"), help="default: $KUBECONFIG, in-cluster, ~/.kube/config"
    )
    k.add_argument("--context", default=_env("CONTEXT"))
    k.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        help="watch only this namespace (repeatable; env: comma-separated). Default: all",
    )
    k.add_argument(
        "--flagger",
        action="store_true",
        default=_env("FLAGGER") == "true",
        help="also reconcile flagger.app/v1beta1 Canaries (migrating without Flagger running)",
    )
    k.add_argument(
        "--mesh-provider",
        default=_env("MESH_PROVIDER", "istio"),
        help="provider of Canaries without spec.provider (istio, linkerd, gatewayapi:v1, kubernetes ...)",
    )
    k.add_argument(
        "--min-interval",
        type=float,
        default=_env_float("MIN_INTERVAL", 1.0),
        metavar="S",
        help="shortest analysis interval honoured (Flagger: 10)",
    )
    k.add_argument(
        "--finalise-delay",
        type=float,
        default=_env_float("FINALISE_DELAY", -1.0),
        metavar="S",
        help="Finalising -> Succeeded after S seconds (default: one analysis interval, Flagger's tick)",
    )
    e = p.add_argument_group("leader election")
    e.add_argument("--no-leader-election", action="store_true", default=_env("LEADER_ELECTION") == "false")
    e.add_argument("--lease-name", default=_env("LEASE_NAME", "canary-stream-controller"))
    e.add_argument("--lease-namespace", default=_env("LEASE_NAMESPACE", "canary-stream"))
    e.add_argument("--identity", default=_env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    e.add_argument("--lease-duration", type=float, default=_env_float("LEASE_DURATION", 15.0))
    e.add_argument("--renew-deadline", type=float, default=_env_float("RENEW_DEADLINE", 10.0))
    e.add_argument("--retry-period", type=float, default=_env_float("RETRY_PERIOD", 2.0))
    a = p.add_argument_group("verdict API")
    a.add_argument("--api", default=_env("API", "0.0.0.0:8080"), metavar="[HOST:]PORT", help="'' to disable")
    a.add_argument(
        "--api-auth", default=_env("API_AUTH", "kubernetes"), choices=["kubernetes", "token-file", "none"]
    )
    a.add_argument("--api-token-file", default=_env("API_TOKEN_FILE"))
    s = p.add_argument_group(
        "telemetry sources (as in `canary-stream run`; none: analysis by dwell time only)"
    )
    s.add_argument(
        "--config", default=_env("CONFIG"), metavar="FILE", help="YAML with `kafka:` / `http:` / `als:`"
    )
    s.add_argument("--file", action="append", default=[], metavar="GLOB")
    s.add_argument("--from-start", action="store_true")
    s.add_argument("--stdin", action="store_true")
    s.add_argument(
        "--http", default=_env("HTTP"), metavar="[HOST:]PORT", help="POST /ingest (e.g. 0.0.0.0:8087)"
    )
    s.add_argument(
        "--als", default=_env("ALS"), metavar="[HOST:]PORT", help="Envoy gRPC access logs (e.g. 0.0.0.0:9001)"
    )
    s.add_argument("--http-envelope-key", default=None)
    s.add_argument("--http-max-body", type=int, default=None)
    s.add_argument("--http-ack", choices=["folded", "queued"], default=None)
    s.add_argument("--kafka-bootstrap", default=_env("KAFKA_BOOTSTRAP"))
    s.add_argument("--kafka-topic", action="append", default=[])
    s.add_argument("--kafka-group", default=None)
    s.add_argument("--kafka-envelope-key", default=None)
    s.add_argument("--kafka-from-earliest", action="store_true")
    n = p.add_argument_group(
        "alerts", "Flagger's global notifier: every alert of a Canary without analysis.alerts"
    )
    n.add_argument("--slack-url", default=_env("SLACK_URL"), help="Slack incoming-webhook URL")
    n.add_argument("--slack-token", default=_env("SLACK_TOKEN"), help="bearer token for --slack-url")
    n.add_argument("--slack-channel", default=_env("SLACK_CHANNEL", "general"))
    n.add_argument("--slack-user", default=_env("SLACK_USER", "flagger"))
    n.add_argument("--slack-proxy-url", default=_env("SLACK_PROXY_URL"))
    n.add_argument("--msteams-url", default=_env("MSTEAMS_URL"), help="Teams webhook URL (if no --slack-url)")
    n.add_argument("--msteams-proxy-url", default=_env("MSTEAMS_PROXY_URL"))
    n.add_argument(
        "--cluster-name", default=_env("CLUSTER_NAME", ""), help='a "Cluster" field in every alert'
    )
    n.add_argument(
        "--event-webhook",
        default=_env("EVENT_WEBHOOK_URL"),
        help="the events of Canaries without an event webhook are POSTed here (Flagger's -event-webhook)",
    )
    g = p.add_argument_group("aggregator")
    g.add_argument("--format", default=_env("FORMAT", "auto"))
    g.add_argument("--default-version", default=None)
    g.add_argument("--flagger-success", action="store_true")
    g.add_argument("--max-line-bytes", type=int, default=64 * 1024)
    g.add_argument("--ring-secs", type=int, default=600)
    g.add_argument("--stats-interval", type=float, default=60.0, metavar="S")
    g.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    p.set_defaults(func=cmd_controller)


def namespaces_of(args: argparse.Namespace) -> tuple[str, ...]:
    """--namespace flags, else CANARY_STREAM_NAMESPACES (comma-separated), else all."""
    if args.namespace:
        return tuple(args.namespace)
    return tuple(n.strip() for n in (_env("NAMESPACES") or "").split(",") if n.strip())


def global_notifier(args: argparse.Namespace) -> Any:
    """The notifier --slack-url (first) or --msteams-url names, as Flagger picks it; None without
    either. ValueError naming the flag for a URL that is not http(s)."""
    from canary_stream.controller.alerts import ProviderTarget

    for flag, url, proxy in (
        ("--slack-url", args.slack_url, args.slack_proxy_url),
        ("--msteams-url", args.msteams_url, args.msteams_proxy_url),
    ):
        if not url:
            continue
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"{flag}: {url!r} is not an http(s) URL")
        if flag == "--slack-url":
            return ProviderTarget(
                "slack", url, args.slack_token or "", proxy or "", args.slack_user, args.slack_channel
            )
        return ProviderTarget("msteams", url, "", proxy or "")
    return None


def controller_config(args: argparse.Namespace) -> Any:
    """The ControllerConfig the flags ask for (ValueError naming the setting when invalid)."""
    from canary_stream.controller.kube_controller import ControllerConfig
    from canary_stream.kube.lease import LeaseConfig
    from canary_stream.kube.objects import FLAGGER_GROUP, OWN_GROUP

    lease = None
    if not args.no_leader_election:
        lease = LeaseConfig(
            args.lease_name,
            args.lease_namespace,
            args.identity,
            args.lease_duration,
            args.renew_deadline,
            args.retry_period,
        )
        lease.check()
    if args.min_interval <= 0:
        raise ValueError("--min-interval: must be positive")
    return ControllerConfig(
        namespaces=namespaces_of(args),
        groups=(OWN_GROUP, FLAGGER_GROUP) if args.flagger else (OWN_GROUP,),
        lease=lease,
        options=RolloutOptions(
            min_interval_s=args.min_interval,
            finalise_delay_s=args.finalise_delay if args.finalise_delay >= 0 else None,
            event_webhook=args.event_webhook or None,
        ),
        mesh_provider=args.mesh_provider,
        global_notifier=global_notifier(args),
        cluster_name=args.cluster_name,
    )


def _has_sources(args: argparse.Namespace) -> bool:
    return bool(args.file or args.stdin or args.http or args.kafka_topic or args.config)


def cmd_controller(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = controller_config(args)
        sources: list[Any] = []
        aggregator = None
        if _has_sources(args):
            from canary_stream.run_cmd import build_aggregator, build_sources

            sources = build_sources(args)
            aggregator = build_aggregator(args)
    except ValueError as exc:
        print(f"canary-stream controller: {exc}", file=sys.stderr)
        return 2
    return eventloop.run(_main(args, config, sources, aggregator))


async def _main(args: argparse.Namespace, config: Any, sources: list[Any], aggregator: Any) -> int:
    from canary_stream.controller.kube_controller import KubeController
    from canary_stream.kube.config import load_client
    from canary_stream.kube.rest import Kube
    from canary_stream.registry import Registry

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    api = await load_client(args.kubeconfig, args.context)
    registry = Registry(aggregator=aggregator, sources=sources)
    controller = KubeController(Kube(api), registry, config)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(controller.run(stop), name="controller")]
    if sources:
        from canary_stream.run_cmd import run_pipeline

        tasks.append(
            asyncio.create_task(
                run_pipeline(sources, aggregator, stop=stop, stats_interval=args.stats_interval)
            )
        )
    else:
        log.warning("no telemetry source: steps advance on their dwell time and webhooks only")
    if args.api:
        api_task = _api_task(args, registry, stop)
        if api_task is not None:
            tasks.append(api_task)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                log.error("%s failed: %r", t.get_name(), t.exception())
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
                return 1
    finally:
        with contextlib.suppress(Exception):
            await api.close()
    return 0


def _api_task(args: argparse.Namespace, registry: Any, stop: asyncio.Event) -> asyncio.Task[Any] | None:
    """The verdict API, if `canary_stream.api` is installed."""
    try:
        app_mod = importlib.import_module("canary_stream.api.app")
        config_mod = importlib.import_module("canary_stream.api.config")
        server_mod = importlib.import_module("canary_stream.api.server")
    except ImportError:
        log.info("canary_stream.api not available: no verdict API served")
        return None
    host, _, port = args.api.rpartition(":")
    # With leader election, only the leader is ready: the Service sends pushed telemetry (and API
    # calls) to the replica whose aggregator the rollouts read.
    cfg = config_mod.ApiConfig(
        auth=args.api_auth,
        token_file=args.api_token_file,
        kubeconfig=args.kubeconfig,
        ready_requires_sources=bool(registry.sources),
        ready_requires_leader=not args.no_leader_election,
    )
    app = app_mod.create_app(registry, cfg)
    return asyncio.create_task(server_mod.serve(app, host or "0.0.0.0", int(port), stop=stop), name="api")
