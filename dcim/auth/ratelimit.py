"""A sliding-window rate limit per key (a user name, a client address)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000  # keys are chosen by clients (any name, many addresses): memory stays bounded


class RateLimit:
    """At most `limit` hits per key in any `window_s`; the clock is passed in."""

    def __init__(self, limit: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._hits: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until the key may act again (0: now)."""
        hits = self._recent(key, self._clock())
        if hits is None or len(hits) < self.limit:
            return 0.0
        return max(0.001, hits[0] + self.window_s - self._clock())

    def hit(self, key: str) -> None:
        """Count one event of the key."""
        now = self._clock()
        hits = self._recent(key, now)
        if hits is None:
            if len(self._hits) >= MAX_KEYS:
                self._forget_idle(now)
            hits = self._hits[key] = deque(maxlen=self.limit)
        hits.append(now)

    def forget_one(self, key: str) -> None:
        """Take back the key's newest hit (an attempt counted in advance that succeeded)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()
            if not hits:
                del self._hits[key]

    def clear(self, key: str) -> None:
        """Forget the key's events (a successful sign-in clears the user's failures)."""
        self._hits.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def _forget_idle(self, now: float) -> None:
        for key in list(self._hits):
            self._recent(key, now)
        while len(self._hits) >= MAX_KEYS:  # all busy: the oldest key goes
            del self._hits[next(iter(self._hits))]
