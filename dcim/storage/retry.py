"""Error kinds and the retry loop the network backends share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dcim.storage.base import StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Retry delays double from retry_backoff_s up to this ceiling.
MAX_BACKOFF_S = 30.0
# How much of a server's error body goes into an exception message.
BODY_EXCERPT_CHARS = 500


class StorageRejected(StorageError):
    """The server refused the request (4xx, bad data): sending it again cannot succeed."""


class StorageUnavailable(StorageError):
    """Connection failure, timeout or 5xx after every retry: worth trying again later."""


class TransientError(Exception):
    """One failed attempt that may succeed when repeated (raised inside a backend only)."""


def excerpt(body: str | bytes | None) -> str:
    """The start of a server's answer, for error messages."""
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "..."


def backoff_s(first_s: float, attempt: int) -> float:
    """Delay before retry number `attempt` (0-based): first_s doubled each time, capped."""
    return min(first_s * (2**attempt), MAX_BACKOFF_S)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    first_backoff_s: float,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run attempt(); repeat it on TransientError with backoff; StorageUnavailable when out of retries."""
    for n in range(retries + 1):
        try:
            return await attempt()
        except TransientError as exc:
            if n == retries:
                raise StorageUnavailable(f"{what}: gave up after {retries + 1} attempts: {exc}") from exc
            delay = backoff_s(first_backoff_s, n)
            log.debug(
                "storage request failed, retrying",
                extra={"what": what, "attempt": n + 1, "retry_in_s": delay, "error": str(exc)},
            )
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
