"""List + watch, as kopf and client-go informers do: list (taking the list's resourceVersion),
then watch from it with bookmarks; on 410 Gone re-list and report the difference to the cache as
ADDED / MODIFIED / DELETED; on other errors back off and resume. Objects stay plain dicts (no model
deserialisation: cheap at thousands of objects)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from canary_stream.kube.rest import Gone, Kube, Resource
from canary_stream.kube.retry import Backoff, describe, is_transient

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
WATCH_BACKOFF = Backoff(0.5, 30.0)


@dataclass(frozen=True)
class WatchEvent:
    """`type` is ADDED, MODIFIED or DELETED; `object` the object as a dict (for DELETED: the last
    state seen)."""

    type: str
    object: dict[str, Any]


def key_of(obj: dict[str, Any]) -> Key:
    """(namespace, name) of an object."""
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def resource_version(obj: dict[str, Any]) -> str:
    """metadata.resourceVersion ('' when absent). Opaque: compare for equality only."""
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


class Informer:
    """A cache of one resource type (in one namespace, or all with `namespace=None`) kept current
    by list + watch. Iterate `events()` to receive the changes; `cache` holds the current objects
    by (namespace, name); `synced` is set once the first list has been delivered."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        timeout_s: int = 300,
        backoff: Backoff = WATCH_BACKOFF,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0
        self._stopped = False

    @property
    def name(self) -> str:
        return f"{self.resource.plural}@{self.namespace or '*'}"

    def stop(self) -> None:
        """End `events()` at its next wake-up."""
        self._stopped = True

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached object, if any."""
        return self.cache.get((namespace, name))

    async def events(self) -> AsyncIterator[WatchEvent]:
        """The changes, until `stop()`: first the listed objects, then the watch."""
        failures = 0
        need_list = True
        while not self._stopped:
            try:
                if need_list:
                    for ev in await self._relist():
                        yield ev
                    need_list = False
                    self.synced.set()
                async for ev in self._watch_once():
                    failures = 0
                    yield ev
            except Gone:
                log.info("%s: resourceVersion %s expired, re-listing", self.name, self.resource_version)
                need_list = True
            except asyncio.CancelledError:
                raise
            except (ApiException, ValueError, OSError, TimeoutError) as exc:
                delay = self.backoff.delay(failures)
                failures += 1
                log.warning("%s: watch failed (%s); again in %.1fs", self.name, describe(exc), delay)
                await asyncio.sleep(delay)
                # Not a network hiccup (403 while RBAC propagates, a bad line...): list afresh.
                need_list = need_list or not is_transient(exc)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = self.backoff.delay(failures)
                failures += 1
                log.warning("%s: watch failed (%s); again in %.1fs", self.name, describe(exc), delay)
                await asyncio.sleep(delay)

    def _query(self) -> dict[str, Any]:
        return {"labelSelector": self.label_selector}

    async def _relist(self) -> list[WatchEvent]:
        doc = await self.kube.list(self.resource, self.namespace, **self._query())
        self.relists += 1
        kind = (doc.get("kind") or "").removesuffix("List")
        fresh: dict[Key, dict[str, Any]] = {}
        for item in doc.get("items") or []:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", doc.get("apiVersion", self.resource.api_version))
            fresh[key_of(item)] = item
        out: list[WatchEvent] = []
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                out.append(WatchEvent("DELETED", old))
        for key, obj in fresh.items():
            prev = self.cache.get(key)
            self.cache[key] = obj
            if prev is None:
                out.append(WatchEvent("ADDED", obj))
            elif resource_version(prev) != resource_version(obj):
                out.append(WatchEvent("MODIFIED", obj))
        self.resource_version = str((doc.get("metadata") or {}).get("resourceVersion", ""))
        return out

    async def _watch_once(self) -> AsyncIterator[WatchEvent]:
        """One watch request, until the server ends it (timeoutSeconds) or it fails."""
        query = {
            **self._query(),
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": self.resource_version,
            "timeoutSeconds": self.timeout_s,
        }
        resp = await self.kube.raw("GET", self.resource.path(self.namespace), query=query,
                                   timeout=self.timeout_s + 30)  # fmt: skip
        try:
            while not self._stopped:
                line = await resp.content.readline()
                if not line:
                    return
                doc = json.loads(line)
                etype = doc.get("type")
                obj = doc.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    if code == 410:
                        raise Gone(obj.get("message", ""))
                    raise ApiException(status=code, reason=f"{obj.get('reason')}: {obj.get('message')}")
                rv = resource_version(obj)
                if rv:
                    self.resource_version = rv
                if etype == "BOOKMARK":
                    continue
                key = key_of(obj)
                if etype == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = obj
                yield WatchEvent(etype, obj)
        finally:
            resp.release()
