"""The per-record Python peer of the HTTP push source, for benches/test_bench_http_push.py.

The same transport as ours (Starlette on uvicorn, one process, one event loop), but the body is
handled the plain-Python way: split into lines, ``orjson.loads`` per line, and a dict of
(count, errors, durations) per (target, version) — what a small ingest service written in Python
would do. It answers 204 once the body is counted (like our ``ack="folded"``).

Usage: ``python benches/http_baseline_server.py PORT``; ``GET /stats`` returns ``{"events": N}``.
"""

from __future__ import annotations

import gzip
import sys
from collections import defaultdict

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

# (target, version) -> [requests, errors, durations]
counts: dict[tuple[str, str], list[object]] = defaultdict(lambda: [0, 0, []])
events = 0
malformed = 0


def _version(cluster: str) -> tuple[str, str]:
    """Istio's upstream cluster: ``outbound|9898|primary|podinfo.test.svc.cluster.local`` (subset)
    or ``outbound|80||podinfo-canary.test.svc.cluster.local`` (Service name suffix)."""
    parts = cluster.split("|")
    host = parts[-1]
    name, _, rest = host.partition(".")
    ns = rest.partition(".")[0]
    if len(parts) == 4 and parts[2]:
        return f"{name}.{ns}", parts[2]
    for suffix in ("-canary", "-primary"):
        if name.endswith(suffix):
            return f"{name[: -len(suffix)]}.{ns}", suffix[1:]
    return f"{name}.{ns}", ""


async def ingest(request: Request) -> Response:
    global events, malformed
    body = await request.body()
    if request.headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    for line in body.splitlines():
        if not line:
            continue
        try:
            rec = orjson.loads(line)
            key = _version(rec["upstream_cluster"])
            status = int(rec["response_code"])
            duration = float(rec["duration"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            malformed += 1
            continue
        slot = counts[key]
        slot[0] += 1  # type: ignore[operator]
        if status >= 500 or status == 0:
            slot[1] += 1  # type: ignore[operator]
        slot[2].append(duration)  # type: ignore[union-attr]
        events += 1
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    return JSONResponse({"events": events, "malformed": malformed})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/ingest", ingest, methods=["POST"]),
        Route("/stats", stats),
        Route("/healthz", health),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
