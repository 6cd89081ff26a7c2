"""pytest plugin: a real kube-apiserver + etcd (infra/kube_apiserver.py) for integration tests.

Loaded from tests/conftest.py (``pytest_plugins``).

Fixtures:
  kube_cluster     one started ``KubeCluster`` per session (built with Go on first use, cached in
                   ~/.cache/canary-stream or $CANARY_STREAM_CACHE), with every CRD applied and
                   Established: tests/crds/upstream/**/*.yaml (Flagger, Istio, Gateway API, SMI) and
                   deploy/crds/*.yaml (ours) when that folder exists. Started only when a test asks.
  kube_api         a kubernetes_asyncio ``ApiClient`` as admin (system:masters), closed after the test
  kube_namespace   a fresh namespace name, created (never deleted: without kube-controller-manager
                   namespace deletion never finishes, so each test gets its own)

Helpers (import from ``kube_fixtures``):
  api_client_for(cluster, token)              ApiClient for a token (e.g. ``cluster.controller_token``,
                                              user ``canary-controller`` with no groups: RBAC applies)
  make_deployment_ready(api, namespace, name) play controller-manager + kubelet: status that passes
                                              Flagger's readiness checks
  make_deployment_stuck(api, namespace, name) Progressing=False, ProgressDeadlineExceeded
  create_namespace(api, prefix)               another fresh namespace

Every test that uses a kube fixture is marked ``kube`` (``-m "not kube"`` skips them), and a failing
one gets the tail of the apiserver's log in its report.

PYTEST_DONT_REWRITE (no asserts here; test modules may import it before pytest_plugins loads it)
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import pytest

if TYPE_CHECKING:  # imported lazily: kubernetes_asyncio takes ~2 s to import, and most tests need none
    from kubernetes_asyncio import client

_ROOT = Path(__file__).resolve().parent.parent
_INFRA = str(_ROOT / "infra")
if _INFRA not in sys.path:
    sys.path.insert(0, _INFRA)

from kube_apiserver import CONTROLLER_USER, KubeCluster, KubeInfraError, ensure_binaries, kube_version  # noqa: E402

__all__ = [
    "CONTROLLER_USER",
    "KubeCluster",
    "KubeInfraError",
    "api_client_for",
    "crd_files",
    "create_namespace",
    "ensure_binaries",
    "kube_version",
    "make_deployment_ready",
    "make_deployment_stuck",
]

KUBE_FIXTURES = ("kube_cluster", "kube_api", "kube_namespace")
UPSTREAM_CRDS = _ROOT / "tests" / "crds" / "upstream"
OWN_CRDS = _ROOT / "deploy" / "crds"


def crd_files() -> list[Path]:
    """Every CRD file the session cluster gets: the vendored upstream ones, then ours."""
    files = sorted(UPSTREAM_CRDS.rglob("*.yaml"))
    if OWN_CRDS.is_dir():
        files += sorted(OWN_CRDS.glob("*.yaml"))
    return files


@functools.cache
def _awaitable_api_client() -> type[client.ApiClient]:
    from kubernetes_asyncio import client

    class AwaitableApiClient(client.ApiClient):
        """An ApiClient that is also awaitable (``await api_client_for(...)`` returns it)."""

        def __await__(self) -> Generator[Any, None, Self]:
            return self._itself().__await__()

        async def _itself(self) -> Self:
            return self

    return AwaitableApiClient


def api_client_for(cluster: KubeCluster, token: str | None = None) -> client.ApiClient:
    """A kubernetes_asyncio ``ApiClient`` for ``cluster`` authenticated by ``token`` (admin if None).

    Call it inside a running event loop. Use ``async with api_client_for(...) as api:``, or close it;
    ``await api_client_for(...)`` also works.
    """
    return _awaitable_api_client()(configuration=cluster.client_configuration(token))


async def create_namespace(api: client.ApiClient, prefix: str = "t") -> str:
    """Create a namespace with a unique name and return the name."""
    from kubernetes_asyncio import client

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


async def _patch_status(api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> Any:
    # A JSON patch (list body) replacing the whole status: no stale conditions or counts survive
    # (a strategic merge would merge conditions by type and keep fields we leave out).
    from kubernetes_asyncio import client

    value = {k: v for k, v in status.items() if v is not None}
    return await client.AppsV1Api(api).patch_namespaced_deployment_status(
        name, namespace, [{"op": "add", "path": "/status", "value": value}]
    )


async def make_deployment_ready(api: client.ApiClient, namespace: str, name: str) -> Any:
    """Patch ``deployments/status`` as a finished rollout (what kube-controller-manager would write).

    observedGeneration = generation; replicas = updated = ready = available = spec.replicas;
    Available=True (MinimumReplicasAvailable), Progressing=True (NewReplicaSetAvailable). Returns the
    patched V1Deployment.
    """
    from kubernetes_asyncio import client

    dep = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
    status = {
        "observedGeneration": dep.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "unavailableReplicas": None,
        "conditions": [
            _condition(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            ),
            _condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            ),
        ],
    }
    return await _patch_status(api, namespace, name, status)


async def make_deployment_stuck(api: client.ApiClient, namespace: str, name: str) -> Any:
    """Patch ``deployments/status`` as a rollout past its progress deadline: observedGeneration =
    generation, no replica available, Available=False (MinimumReplicasUnavailable), Progressing=False
    (ProgressDeadlineExceeded). Returns the patched V1Deployment."""
    from kubernetes_asyncio import client

    dep = await client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
    status = {
        "observedGeneration": dep.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": None,
        "availableReplicas": None,
        "unavailableReplicas": replicas,
        "conditions": [
            _condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
            _condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{name}" has timed out progressing.',
            ),
        ],
    }
    return await _patch_status(api, namespace, name, status)


def _run_coroutine_sync(coro: Any) -> Any:
    """asyncio.run, also when called while an event loop runs in this thread (async test setup)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------------------------
# pytest hooks and fixtures


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kube: needs a real kube-apiserver + etcd (Go on first use; built and cached automatically)",
    )


@pytest.hookimpl(tryfirst=True)  # before the -m deselection
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in KUBE_FIXTURES):
            item.add_marker("kube")


_session_cluster: list[KubeCluster] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.failed
        and _session_cluster
        and any(n in getattr(item, "fixturenames", ()) for n in KUBE_FIXTURES)
    ):
        report.sections.append(("kube-apiserver log (tail)", _session_cluster[0].log_tail(40)))
    return report


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """One etcd + kube-apiserver for the session, every CRD applied and Established."""
    with KubeCluster() as cluster:
        _session_cluster.append(cluster)
        try:
            _run_coroutine_sync(cluster.apply_crds(crd_files()))
            yield cluster
        finally:
            _session_cluster.remove(cluster)


@pytest.fixture
async def kube_api(kube_cluster: KubeCluster) -> AsyncIterator[client.ApiClient]:
    """An admin ``ApiClient`` (system:masters), closed after the test."""
    async with api_client_for(kube_cluster) as api:
        yield api


@pytest.fixture
async def kube_namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> str:
    """A fresh namespace, created; named after the test so leftovers in a log are traceable."""
    prefix = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-") or "t"
    return await create_namespace(kube_api, prefix)
