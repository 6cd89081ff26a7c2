"""What the Istio, Gateway API and SMI routers share: one object named after the apex Service
(a VirtualService, an HTTPRoute, a TrafficSplit) holds the split and is its source of truth.

`reconcile` creates or updates it keeping the split it has, `get_routes` reads the split back,
`set_routes` writes it with one merge patch, `finalize` (revertOnDeletion) gives a taken-over
object its saved spec back or routes everything to the primary. A subclass says how its kind
reads and writes a split; session-affinity cookies are recorded on the object's annotations."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from canary_stream.router.base import Routes
from canary_stream.router.kube_common import (
    CustomResource,
    JsonObject,
    ServiceNames,
    apex_metadata,
    check_routes,
    is_owned_by,
    restore_original,
    service_names,
    stored_original_spec,
    upsert_spec,
)
from canary_stream.router.session import Cookies, next_cookies, sticky
from canary_stream.spec.model import Canary

INITIAL = Routes(100, 0)


class ApexObjectRouter(ABC):
    """Implements `Router` with one object `<apex>` of `kind` in `resource`."""

    kind: ClassVar[str]

    def __init__(self, resource: CustomResource) -> None:
        self.resource = resource

    @abstractmethod
    def routes_of(self, obj: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        """The split `obj` holds; LookupError (or ValueError) when it holds none."""

    @abstractmethod
    def spec_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        """The whole spec for `routes`."""

    @abstractmethod
    def patch_of(self, canary: Canary, routes: Routes, cookies: Cookies | None) -> JsonObject:
        """The merge patch `set_routes` sends for `routes`."""

    def sticky(self, canary: Canary) -> bool:
        """Whether the split keeps sessions on their side (cookies drawn per promotion step)."""
        return sticky(canary)

    def metadata(self, canary: Canary) -> tuple[dict[str, str], dict[str, str]]:
        """(labels, annotations) the object is given (`service.apex` metadata)."""
        return apex_metadata(canary)

    def routes_kept(self, existing: JsonObject, canary: Canary, names: ServiceNames) -> Routes:
        """The split `reconcile` keeps from the object it found (100/0 when it holds none)."""
        try:
            return self.routes_of(existing, canary, names)
        except (LookupError, ValueError):
            return INITIAL

    async def reconcile(self, canary: Canary) -> None:
        """Create or update the object, keeping the split it has; annotations other controllers
        set stay."""
        names = service_names(canary)
        existing = await self.resource.get(canary.namespace, names.apex)
        routes = INITIAL if existing is None else self.routes_kept(existing, canary, names)
        labels, annotations = self.metadata(canary)
        cookies: Cookies | None = None
        if self.sticky(canary):
            # the recorded cookies (drawn now if session affinity was added while weighted)
            cookies = next_cookies(canary, Cookies.of(existing), routes.canary_weight)
            annotations.update({k: v for k, v in cookies.annotations().items() if v is not None})
        await upsert_spec(
            self.resource,
            canary,
            self.kind,
            names.apex,
            self.spec_of(canary, routes, cookies),
            labels,
            annotations,
            existing,
        )

    async def get_routes(self, canary: Canary) -> Routes:
        """The split as the object has it now."""
        names = service_names(canary)
        obj = await self.resource.get(canary.namespace, names.apex)
        if obj is None:
            raise LookupError(f"{self.kind} {names.apex}.{canary.namespace} not found; reconcile first")
        return self.routes_of(obj, canary, names)

    def check(self, routes: Routes) -> None:
        """Refuse a split this kind cannot express (ValueError)."""
        check_routes(routes)

    async def set_routes(self, canary: Canary, routes: Routes) -> None:
        """One merge patch, no read first; with session affinity the cookies recorded on the
        object are read first (GET + merge patch)."""
        self.check(routes)
        apex = service_names(canary).apex
        cookies: Cookies | None = None
        if self.sticky(canary):
            current = await self.resource.get(canary.namespace, apex)
            cookies = next_cookies(canary, Cookies.of(current), routes.canary_weight)
        await self.resource.merge_patch(canary.namespace, apex, self.patch_of(canary, routes, cookies))

    async def finalize(self, canary: Canary) -> None:
        """revertOnDeletion: an object that existed before canary-stream gets its saved spec back;
        one canary-stream created routes everything to the primary (Kubernetes GC deletes it with
        the Canary)."""
        names = service_names(canary)
        obj = await self.resource.get(canary.namespace, names.apex)
        if obj is None:
            return
        original = stored_original_spec(obj)
        if original is not None and not is_owned_by(obj, canary):
            await restore_original(self.resource, obj, original)
            return
        await self.set_routes(canary, INITIAL)
