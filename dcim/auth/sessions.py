"""Server-side sessions: a random id in an HttpOnly cookie, the rest in memory here.

A session ends after `idle_s` without a request or `max_s` after sign-in, whichever comes
first, at sign-out, and when dcim restarts (everyone signs in again). Each carries its own
CSRF token, which the page sends back in a header on every POST.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 10_000  # sign-in is rate limited; this bounds memory whatever happens


@dataclass(slots=True)
class Session:
    """One signed-in browser."""

    id: str
    user: str
    csrf: str
    created_s: float
    seen_s: float


class Sessions:
    """The open sessions, with idle and absolute expiry; the clock is passed in."""

    def __init__(self, idle_s: float, max_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle_s, self.max_s, self._clock = idle_s, max_s, clock
        self._open: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._open)

    def create(self, user: str) -> Session:
        """A new session for a user who just signed in."""
        now = self._clock()
        self._purge(now)
        if len(self._open) >= MAX_SESSIONS:  # the one least recently used goes
            del self._open[min(self._open.values(), key=lambda s: s.seen_s).id]
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        self._open[session.id] = session
        return session

    def get(self, session_id: str, touch: bool = True) -> Session | None:
        """The live session of an id (its idle time restarts), or None."""
        session = self._open.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._open[session_id]
            return None
        if touch:
            session.seen_s = now
        return session

    def drop(self, session_id: str) -> None:
        """End a session (sign-out)."""
        self._open.pop(session_id, None)

    def drop_user(self, user: str) -> int:
        """End every session of a user; how many there were."""
        ids = [s.id for s in self._open.values() if s.user == user]
        for session_id in ids:
            del self._open[session_id]
        return len(ids)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen_s > self.idle_s or now - session.created_s > self.max_s

    def _purge(self, now: float) -> None:
        for session_id in [s.id for s in self._open.values() if self._expired(s, now)]:
            del self._open[session_id]
