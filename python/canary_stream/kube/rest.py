"""Plain-JSON calls to the API server over a kubernetes-asyncio ApiClient: objects stay dicts (no
model (de)serialisation, no content-type traps), every call goes through `Kube.request`, which
counts requests by verb (the benchmark's "API requests per step")."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type: group ("" for core), version and plural."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        """`/api[s]/...[/namespaces/NS]/PLURAL[/NAME[/SUB]]`."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if sub:
                base += f"/{sub}"
        return base


DEPLOYMENTS = Resource("apps", "v1", "deployments")
DAEMONSETS = Resource("apps", "v1", "daemonsets")
CONFIGMAPS = Resource("", "v1", "configmaps")
SECRETS = Resource("", "v1", "secrets")
PODS = Resource("", "v1", "pods")
SERVICES = Resource("", "v1", "services")
INGRESSES = Resource("networking.k8s.io", "v1", "ingresses")
LEASES = Resource("coordination.k8s.io", "v1", "leases")
EVENTS = Resource("events.k8s.io", "v1", "events")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers")
SCALED_OBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects")


class Gone(ApiException):
    """The resourceVersion is too old (HTTP 410): re-list."""

    def __init__(self, reason: str) -> None:
        super().__init__(status=410, reason=reason)


async def raise_for_status(resp: Any) -> None:
    """Raise ApiException (Gone for 410) for a non-2xx response."""
    if 200 <= resp.status <= 299:
        return
    body = await resp.read()
    resp.release()
    try:
        doc = json.loads(body)
        reason = f"{doc.get('reason')}: {doc.get('message')}"
    except ValueError:
        reason = body[:200].decode(errors="replace")
    if resp.status == 410:
        raise Gone(reason)
    raise ApiException(status=resp.status, reason=reason)


class Kube:
    """JSON requests through `api` (its host, TLS and token). `counts` tallies requests by verb
    (WATCH for watch requests)."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.counts: Counter[str] = Counter()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> Any:
        """The raw aiohttp response (status checked): for streams."""
        params = [(k, _q(v)) for k, v in (query or {}).items() if v is not None]
        self.counts["WATCH" if (query or {}).get("watch") else method] += 1
        resp = await self.api.call_api(
            path,
            method,
            query_params=params,
            header_params={"Content-Type": content_type, "Accept": JSON},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        await raise_for_status(resp)
        return resp

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON body; non-2xx raise ApiException."""
        resp = await self.raw(
            method, path, body=body, query=query, content_type=content_type, timeout=timeout
        )
        try:
            data = await resp.read()
        finally:
            resp.release()
        return json.loads(data) if data else None

    async def get(
        self, res: Resource, namespace: str, name: str, sub: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            doc: dict[str, Any] = await self.request("GET", res.path(namespace, name, sub))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return doc

    async def list(self, res: Resource, namespace: str | None = None, **query: Any) -> dict[str, Any]:
        """A list (`items`, `metadata.resourceVersion`)."""
        doc: dict[str, Any] = await self.request("GET", res.path(namespace), query=query)
        return doc

    async def create(self, res: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request("POST", res.path(namespace), body=body)
        return doc

    async def replace(self, res: Resource, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = await self.request("PUT", res.path(namespace, name), body=body)
        return doc

    async def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        sub: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        """A JSON merge patch (default) of the object or its subresource."""
        doc: dict[str, Any] = await self.request(
            "PATCH", res.path(namespace, name, sub), body=body, content_type=content_type
        )
        return doc

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", res.path(namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def total(self) -> int:
        """Requests so far."""
        return sum(self.counts.values())


def _q(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v
