"""Session affinity state shared by the Istio and Gateway API routers (Flagger's
`analysis.sessionAffinity`): while the canary has weight, responses from it set a cookie and requests
carrying that cookie stay on the canary. Flagger keeps the cookies in the Canary's status; here they
live in annotations of the routing object, next to the routes that use them, so the router alone
owns its state (and a controller restart finds them)."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from canary_stream.router.kube_common import JsonObject
from canary_stream.spec.model import Canary

COOKIE_ANNOTATIONS = {
    "canary": "canary-stream.dev/session-affinity-cookie",
    "primary": "canary-stream.dev/primary-session-affinity-cookie",
    "previous": "canary-stream.dev/previous-session-affinity-cookie",
}
_LETTERS = string.ascii_letters


@dataclass(frozen=True)
class Cookies:
    """`name=value` of the running canary's cookie, of the primary's, and of the last run's (expired
    on sight once the canary is back at weight 0)."""

    canary: str | None = None
    primary: str | None = None
    previous: str | None = None

    @classmethod
    def of(cls, obj: JsonObject | None) -> Cookies:
        """The cookies recorded on a routing object (VirtualService, HTTPRoute)."""
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        return cls(*(annotations.get(COOKIE_ANNOTATIONS[k]) for k in ("canary", "primary", "previous")))

    def annotations(self) -> dict[str, str | None]:
        """Merge-patch annotations recording these cookies (None deletes)."""
        return {COOKIE_ANNOTATIONS[k]: getattr(self, k) for k in ("canary", "primary", "previous")}


def next_cookies(canary: Canary, current: Cookies, canary_weight: int) -> Cookies:
    """Flagger's cookie lifecycle: a canary weight > 0 keeps (or draws) the canary cookie and, with
    `primaryCookieName`, the primary's; back at 0 the canary cookie becomes the previous one."""
    affinity = canary.spec.analysis.session_affinity if canary.spec.analysis else None
    if affinity is None:
        return current
    if canary_weight == 0:
        return Cookies(None, current.primary, current.canary or current.previous)
    primary = current.primary
    if affinity.primary_cookie_name and primary is None:
        primary = f"{affinity.primary_cookie_name}={_random_value()}"
    return Cookies(current.canary or f"{affinity.cookie_name}={_random_value()}", primary, current.previous)


def _random_value() -> str:
    return "".join(secrets.choice(_LETTERS) for _ in range(10))


def cookie_regex(cookie: str) -> str:
    """The `Cookie` header regex that matches `name=value` (Flagger's `.*name.*value.*`)."""
    name, _, value = cookie.partition("=")
    return f".*{name}.*{value}.*"


def set_cookie(canary: Canary, cookie: str, max_age: int) -> str:
    """A `Set-Cookie` value with the spec's attributes (Flagger's BuildCookie)."""
    affinity = canary.spec.analysis.session_affinity if canary.spec.analysis else None
    assert affinity is not None
    out = f"{cookie}; Max-Age={max_age}"
    if affinity.domain:
        out += f"; Domain={affinity.domain}"
    if affinity.http_only:
        out += "; HttpOnly"
    if affinity.partitioned:
        out += "; Partitioned"
    if affinity.path:
        out += f"; Path={affinity.path}"
    if affinity.same_site:
        out += f"; SameSite={affinity.same_site}"
    if affinity.secure:
        out += "; Secure"
    return out


def sticky(canary: Canary) -> bool:
    """Session affinity applies: configured, and weighted routing (A/B routes carry no cookies)."""
    a = canary.spec.analysis
    return a is not None and a.session_affinity is not None and not a.match
