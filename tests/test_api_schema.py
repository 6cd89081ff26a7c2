"""schemathesis against the published OpenAPI schema of a real server over simulated rollouts: no
server errors, and every answer conforms to the schema (status code, content type, body; invalid
requests too: no server error, a listed status code). Every
generated case is sent twice: as generated (mostly unknown canaries) and aimed at a real canary.
SCHEMATHESIS_EXAMPLES sets the examples per operation (default 15)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_support import Sims, add_sim, demo_canary, served
from canary_stream.api import ApiConfig
from canary_stream.registry import Registry, direct_commander

T = TypeVar("T")
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Invalid requests: still never a server error, and the answer is one the schema lists.
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


class Background:
    """An event loop in a thread: the server and the rollouts live there, the synchronous
    schemathesis client calls it over HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live_api() -> Iterator[str]:
    bg = Background()
    registry = Registry()
    registry.commander = direct_commander(registry)
    sims = Sims(registry)

    async def start() -> None:
        await add_sim(sims, demo_canary())
        await add_sim(sims, demo_canary("idle", "prod"), progress=False)

    bg.run(start())
    server = served(registry, ApiConfig(auth="none", ready_requires_sources=False))
    url = bg.run(server.__aenter__())
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            bg.run(server.__aexit__(None, None, None))
        bg.run(sims.close())
        bg.close()


def _send(case: Any, base_url: str, checks: list[Any]) -> None:
    response = case.call(base_url=base_url, timeout=30)
    case.validate_response(response, checks=checks)


def conformance(strategy: Any, checks: list[Any], base_url: str) -> Any:
    """A Hypothesis test sending ``strategy``'s cases as generated and aimed at a real canary."""

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        _send(case, base_url, checks)
        aimed = False
        if case.path_parameters and {"namespace", "name"} <= case.path_parameters.keys():
            case.path_parameters.update(namespace="test", name="podinfo")
            aimed = True
        if isinstance(case.body, dict) and {"name", "namespace"} <= case.body.keys():
            case.body.update(name="podinfo", namespace="test")
            aimed = True
        if aimed:
            _send(case, base_url, checks)

    return check


def test_schema_conformance(live_api: str) -> None:
    # Event streams never end: they have their own tests.
    api = schemathesis.openapi.from_url(live_api + "/openapi.json").exclude(path_regex=r"/events$")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        conformance(operation.as_strategy(), CHECKS, live_api)()
        negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        # An operation without parameters or body has nothing to make invalid.
        with contextlib.suppress(Unsatisfiable):
            conformance(negative, NEGATIVE_CHECKS, live_api)()


def test_schema_is_published(live_api: str) -> None:
    import httpx

    doc = httpx.get(live_api + "/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/api/v1/canaries",
        "/api/v1/canaries/{namespace}/{name}",
        "/api/v1/canaries/{namespace}/{name}/metrics",
        "/api/v1/canaries/{namespace}/{name}/set-weight",
        "/flagger/gate",
        "/argo/{namespace}/{name}",
        "/metrics",
        "/readyz",
    ):
        assert path in paths, path
    argo = paths["/argo/{namespace}/{name}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert argo["$ref"].endswith("/ArgoAnswer")
    verdict = doc["components"]["schemas"]["ArgoAnswer"]["properties"]["verdict"]
    assert set(verdict["enum"]) == {"continue", "pass", "fail", "inconclusive"}
