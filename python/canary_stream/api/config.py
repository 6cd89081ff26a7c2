"""Settings of the verdict API (who may read, who may act, limits, readiness)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AuthMode = Literal["token-file", "kubernetes", "none"]


class ApiConfigError(ValueError):
    """A setting is invalid; the message starts with the field's name."""


@dataclass(frozen=True)
class ApiConfig:
    """How the API checks callers and what it accepts.

    ``auth``: ``token-file`` (bearer tokens listed one per line in ``token_file``; none listed or no
    file = every mutating call is refused), ``kubernetes`` (TokenReview + SubjectAccessReview of
    ``sar_verb`` on the Canary), or ``none`` (no checks: local demos only). ``read_auth`` closes the
    read endpoints too (interop endpoints included; Flagger cannot send a token, see the docs)."""

    auth: AuthMode = "token-file"
    token_file: str | None = None
    read_auth: bool = False
    #: kubernetes mode: the verb the caller needs on ``canaries`` to act; reads need ``get``/``list``.
    sar_verb: str = "update"
    #: API group of the Canary resource for SubjectAccessReview; None: the Canary's own group
    #: (``flagger.app`` or ``canary-stream.dev``).
    sar_group: str | None = None
    sar_resource: str = "canaries"
    #: kubernetes mode, how to reach the apiserver: explicit host + token (+ CA), else kubeconfig
    #: (``kubeconfig``, or the default one), else in-cluster.
    kube_host: str | None = None
    kube_token: str | None = None
    kube_ca_file: str | None = None
    kubeconfig: str | None = None
    #: A positive review is reused this long (the answer to the same token, verb and namespace).
    auth_cache_s: float = 10.0
    max_body_bytes: int = 64 * 1024
    #: /readyz also needs running telemetry sources / leadership.
    ready_requires_sources: bool = True
    ready_requires_leader: bool = False
    #: Window of the live per-version gauges on /metrics.
    metrics_window_s: float = 30.0
    #: A verdict older than this counts as no data for the gates (None: no limit).
    verdict_max_age_s: float | None = None
    sse_ping_s: float = 15.0
    sse_queue: int = 1000

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ApiConfigError(f"{name}: {why}")

        if self.auth not in ("token-file", "kubernetes", "none"):
            fail("auth", f"expected token-file, kubernetes or none, got {self.auth!r}")
        if self.auth == "kubernetes" and self.kube_host is not None and not self.kube_token:
            fail("kube_token", "required with kube_host")
        if not self.sar_verb:
            fail("sar_verb", "must not be empty")
        if not 1 <= self.max_body_bytes <= 64 * 1024 * 1024:
            fail("max_body_bytes", f"must be between 1 and 67108864, got {self.max_body_bytes}")
        if not 1.0 <= self.metrics_window_s <= 86_400:
            fail("metrics_window_s", f"must be between 1 and 86400 seconds, got {self.metrics_window_s}")
        if self.auth_cache_s < 0:
            fail("auth_cache_s", "must not be negative")
        if self.verdict_max_age_s is not None and self.verdict_max_age_s <= 0:
            fail("verdict_max_age_s", "must be positive")
        if self.sse_ping_s <= 0:
            fail("sse_ping_s", "must be positive")
        if self.sse_queue < 1:
            fail("sse_queue", "must be at least 1")
