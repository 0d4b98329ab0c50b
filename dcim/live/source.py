"""The narrow interfaces the readers of the live state get (the dashboard, alarms, tools)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from dcim.alarms.types import Alarm, AlarmEvent
from dcim.live.state import SiteState


class Version:
    """A counter that readers can wait on: bumped on every change they should see."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Event()

    def bump(self) -> int:
        """Record a change and wake every waiter; returns the new value."""
        self.value += 1
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        return self.value

    async def wait_past(self, seen: int, timeout_s: float | None = None) -> int:
        """Return once the value is past `seen` (at once if it already is); TimeoutError."""
        while self.value <= seen:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        return self.value


class StateSource(Protocol):
    """Where readers get the newest snapshot, and learn that there is a newer one."""

    version: Version  # bumped with every new snapshot

    def current(self) -> SiteState:
        """The newest snapshot (never None once started)."""


class AlarmView(Protocol):
    """The alarms a reader may show and the operator actions it may take (all journaled)."""

    version: Version  # bumped whenever an alarm changes (evaluation or operator action)

    def active(self) -> list[Alarm]:
        """Alarms not in the normal state, plus hidden ones (shelved, out of service)."""

    def history(self, start_ns: int, end_ns: int, alarm_id: str | None = None,
                limit: int = 1000) -> Sequence[AlarmEvent]:
        """Journal events in a time range, oldest first."""

    def acknowledge(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Acknowledge (AlarmError when the state does not allow it)."""

    def shelve(self, alarm_id: str, user: str, duration_s: float, reason: str) -> AlarmEvent:
        """Shelve for at most the configured shift."""

    def unshelve(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Unshelve before expiry."""

    def reset(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Reset a latched alarm whose condition is gone."""

    def remove_from_service(self, alarm_id: str, user: str, reason: str,
                            duration_s: float) -> AlarmEvent:
        """Take out of service until duration_s from now (at most the configured maximum)."""

    def return_to_service(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Return to service."""
