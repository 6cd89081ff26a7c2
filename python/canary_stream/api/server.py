"""Serve the API with uvicorn inside the running event loop (no signal handlers of its own: the
process owns SIGINT/SIGTERM), stopping gracefully when cancelled or when ``stop`` is set."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening non-blocking socket (port 0: any free port)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    app: FastAPI,
    host: str,
    port: int,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    graceful_shutdown_s: float = 5.0,
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set or the task is cancelled; then stop
    accepting, end open event streams (``app.state.stopping``) and let requests in flight finish
    (up to ``graceful_shutdown_s``). ``ready`` is set once listening; the bound port is
    ``app.state.port`` (useful with port 0)."""
    own = sock is None
    listener = bind(host, port) if sock is None else sock
    app.state.port = int(listener.getsockname()[1])
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=max(1, int(graceful_shutdown_s)),
            server_header=False,
        )
    )
    stopping: asyncio.Event | None = getattr(app.state, "stopping", None)

    async def watch_stop() -> None:
        if stop is None:
            return
        await stop.wait()
        if stopping is not None:
            stopping.set()
        server.should_exit = True

    watcher = asyncio.create_task(watch_stop())
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if ready is not None and server.started:
            ready.set()
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        if stopping is not None:
            stopping.set()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        raise
    finally:
        watcher.cancel()
        if own:
            listener.close()
