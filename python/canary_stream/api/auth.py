"""Who may call the API: bearer tokens from a file (compared in constant time), or Kubernetes
TokenReview + SubjectAccessReview against a verb on the Canary (kubernetes-asyncio)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from canary_stream.api.config import ApiConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Access:
    """What a call needs: ``verb`` on canaries in ``namespace`` (``None``: every namespace),
    optionally one canary ``name`` whose API group is ``group``."""

    verb: str
    namespace: str | None = None
    name: str | None = None
    group: str | None = None


class Denied(Exception):
    """The call is refused: ``status`` 401 (no or bad credentials) or 403 (no permission)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Authorizer(Protocol):
    """Checks a bearer token (None when the request had none) for an access; raises Denied."""

    async def check(self, token: str | None, access: Access) -> str:
        """The caller's name when allowed."""

    async def close(self) -> None: ...


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class AllowAll:
    """``auth: none``: every call is allowed (local demos)."""

    async def check(self, token: str | None, access: Access) -> str:
        return "anonymous"

    async def close(self) -> None:
        return None


class TokenFile:
    """Tokens listed one per line (``#`` comments and blank lines ignored), re-read when the file
    changes (rotation without a restart). Every listed token is compared, in constant time, so
    the answer time does not tell which one came close. No file or no token: nothing is allowed."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._tokens: tuple[bytes, ...] = ()
        self._stamp: tuple[float, int] | None = None

    def _load(self) -> tuple[bytes, ...]:
        if self.path is None:
            return ()
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp is not None:
                log.warning("token file %s is gone: refusing every token", self.path)
            self._tokens, self._stamp = (), None
            return ()
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            with open(self.path, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f]
            self._tokens = tuple(ln.encode() for ln in lines if ln and not ln.startswith("#"))
            self._stamp = stamp
        return self._tokens

    async def check(self, token: str | None, access: Access) -> str:
        if token is None:
            raise Denied(401, "a bearer token is required")
        given = token.encode()
        match = False
        for known in self._load():
            match |= hmac.compare_digest(given, known)
        if not match:
            raise Denied(401, "invalid token")
        return "token"

    async def close(self) -> None:
        return None


class KubernetesAuth:
    """TokenReview authenticates the caller's token; SubjectAccessReview asks whether that user
    may ``access.verb`` the ``canaries`` resource (in the Canary's group unless ``sar_group`` is
    set) in the namespace. Positive answers are cached for ``auth_cache_s``."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._cache: dict[tuple[str, str, str | None, str | None, str | None], tuple[float, str]] = {}

    async def _api(self) -> Any:
        from kubernetes_asyncio import client, config

        async with self._lock:
            if self._client is None:
                cfg = self.config
                if cfg.kube_host is not None:
                    conf = client.Configuration(host=cfg.kube_host)
                    conf.api_key = {"BearerToken": cfg.kube_token or ""}
                    conf.api_key_prefix = {"BearerToken": "Bearer"}
                    if cfg.kube_ca_file:
                        conf.ssl_ca_cert = cfg.kube_ca_file
                    self._client = client.ApiClient(conf)
                else:
                    conf = client.Configuration()
                    try:
                        await config.load_kube_config(config_file=cfg.kubeconfig, client_configuration=conf)
                    except Exception:  # no kubeconfig: we run in a pod
                        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
                    self._client = client.ApiClient(conf)
            return self._client

    async def check(self, token: str | None, access: Access) -> str:
        from kubernetes_asyncio import client

        if token is None:
            raise Denied(401, "a bearer token is required")
        digest = hashlib.sha256(token.encode()).hexdigest()
        group = self.config.sar_group or access.group or ""
        key = (digest, access.verb, access.namespace, access.name, group)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        api = await self._api()
        try:
            review = await client.AuthenticationV1Api(api).create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
            )
        except client.ApiException as e:
            log.error("TokenReview failed: %s %s", e.status, e.reason)
            raise Denied(503, "cannot reach the Kubernetes API to review the token") from None
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            raise Denied(401, "invalid token")
        user = status.user
        attrs = client.V1ResourceAttributes(
            verb=access.verb,
            group=group,
            resource=self.config.sar_resource,
            namespace=access.namespace or "",
            name=access.name or "",
        )
        sar = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user.username,
                uid=user.uid,
                groups=user.groups,
                extra=user.extra,
                resource_attributes=attrs,
            )
        )
        try:
            answer = await client.AuthorizationV1Api(api).create_subject_access_review(sar)
        except client.ApiException as e:
            log.error("SubjectAccessReview failed: %s %s", e.status, e.reason)
            raise Denied(503, "cannot reach the Kubernetes API to review the access") from None
        where = f"namespace {access.namespace}" if access.namespace else "all namespaces"
        if answer.status is None or not answer.status.allowed:
            raise Denied(
                403,
                f"{user.username} may not {access.verb} {self.config.sar_resource}.{group} in {where}",
            )
        if self.config.auth_cache_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self.config.auth_cache_s, str(user.username))
        return str(user.username)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def authorizer_for(config: ApiConfig) -> Authorizer:
    """The Authorizer of ``config.auth``."""
    if config.auth == "none":
        return AllowAll()
    if config.auth == "kubernetes":
        return KubernetesAuth(config)
    return TokenFile(config.token_file)
