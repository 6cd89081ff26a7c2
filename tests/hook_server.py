"""A real HTTP server on 127.0.0.1 that records every POST (path, JSON body, headers) and answers
each path with scripted replies: the webhook and alert receivers of the tests (fixture `server`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    content_type: str
    at: float
    headers: dict[str, str] = field(default_factory=dict)


class HookServer:
    """Records every POST; answers each path with its scripted replies (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Request(
                            self.path,
                            json.loads(raw or b"{}"),
                            self.headers.get("Content-Type", ""),
                            time.time(),
                            dict(self.headers.items()),
                        )
                    )
                    script = server.replies.get(self.path, [Reply()])
                    reply = script.pop(0) if len(script) > 1 else script[0]
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def answer(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self.replies[path] = list(replies)

    def calls(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def server() -> Iterator[HookServer]:
    s = HookServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
