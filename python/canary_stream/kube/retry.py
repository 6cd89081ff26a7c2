"""API calls retried with backoff: transient failures (connection errors, timeouts, 429, 5xx) are
retried until they succeed, so a write is never lost to a flaky API server; anything else (a 4xx
that will not change by itself) is raised at once."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({0, 408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the same request may succeed later."""
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUS or exc.status is None
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError | OSError)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an API error, else None."""
    return exc.status if isinstance(exc, ApiException) else None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: `base * 2**n`, at most `cap` seconds."""

    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        return random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0 ** min(attempt, 30))


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int | None = None,
    backoff: Backoff = Backoff(),
    retry_on: Callable[[BaseException], bool] = is_transient,
) -> T:
    """Await `call()` until it succeeds. Transient errors are retried (forever by default, or
    `attempts` times in all); others propagate."""
    n = 0
    while True:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            n += 1
            if not retry_on(exc) or (attempts is not None and n >= attempts):
                raise
            delay = backoff.delay(n - 1)
            log.warning("%s failed (%s); retry %d in %.1fs", what, _short(exc), n, delay)
            await asyncio.sleep(delay)


def describe(exc: BaseException) -> str:
    """A short description of an API error (status and reason)."""
    return _short(exc)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return repr(exc)
