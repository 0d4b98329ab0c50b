"""The alarm service: evaluates the live state as soon as it changes, journals, hands events on.

It reads one thing, the live snapshot (dcim/live/state.py), and evaluates it as soon as a new
one is built (each collector cycle that ends), so a trip is alarmed within the cycle that saw
it, whatever the store is doing. A timer re-evaluates every `evaluate_interval_s` as well, for
on/off-delays and the expiry of shelving and out of service when nothing changes. It never
polls devices or reads the store itself. Operator actions (acknowledge, shelve, ...) go through it too, so every action
is journaled and notifications learn of it at once (an acknowledgement stops escalation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.sources import conditions
from dcim.alarms.types import Alarm, AlarmEvent
from dcim.live.source import StateSource, Version
from dcim.live.state import SiteState
from dcim.site import Site
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where alarm events go after the journal (the notifier)."""

    def submit(self, events: Sequence[AlarmEvent]) -> int: ...


class AlarmService:
    """Evaluates alarms on every new live snapshot; engine, journal and notifier passed in."""

    def __init__(self, site: Site, engine: AlarmEngine, state: StateSource, *,
                 backend: str = "storage", sink: EventSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.site, self.engine, self.state = site, engine, state
        self.backend, self.sink, self._clock = backend, sink, clock
        self._task: asyncio.Task[None] | None = None
        self.version = Version()  # bumped whenever an alarm changed (for the dashboard)
        self.evaluations = 0
        self.last_seq = -1  # the live snapshot last evaluated
        self._last_error = ""

    def evaluate(self, snapshot: SiteState, now_ns: int | None = None) -> list[AlarmEvent]:
        """One evaluation of a snapshot: conditions, alarm updates, journal, notifications."""
        now_ns = now_ns if now_ns is not None else self._now()
        found, by = conditions(self.site, snapshot, backend=self.backend)
        events = self.engine.evaluate(found, now_ns, suppress_by=by)
        self.evaluations += 1
        self.last_seq = snapshot.seq
        self._hand_on(events)
        return events

    async def evaluate_once(self, now_ns: int | None = None) -> list[AlarmEvent]:
        """Evaluate the newest snapshot now."""
        return self.evaluate(self.state.current(), now_ns)

    def _hand_on(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        self.version.bump()
        if self.sink is not None:
            self.sink.submit(events)

    # readers
    def active(self) -> list[Alarm]:
        """Alarms not normal, and hidden ones (see AlarmEngine.active)."""
        return self.engine.active()

    def history(self, start_ns: int, end_ns: int, alarm_id: str | None = None,
                limit: int = 1000) -> Sequence[AlarmEvent]:
        """Journal events in a range, oldest first (empty without a journal)."""
        if self.engine.journal is None:
            return []
        return self.engine.journal.events(start_ns, end_ns, alarm_id=alarm_id, limit=limit)

    # operator actions: journaled by the engine, then handed on like any event
    def acknowledge(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Acknowledge an alarm (see AlarmEngine.acknowledge)."""
        return self._done(self.engine.acknowledge(alarm_id, user, self._now(), comment))

    def shelve(self, alarm_id: str, user: str, duration_s: float, reason: str) -> AlarmEvent:
        """Shelve an alarm for at most the configured shift."""
        return self._done(self.engine.shelve(alarm_id, user, self._now(), duration_s, reason))

    def unshelve(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Unshelve before expiry."""
        return self._done(self.engine.unshelve(alarm_id, user, self._now(), comment))

    def reset(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Reset a latched alarm whose condition is gone."""
        return self._done(self.engine.reset(alarm_id, user, self._now(), comment))

    def remove_from_service(self, alarm_id: str, user: str, reason: str,
                            duration_s: float) -> AlarmEvent:
        """Take an alarm out of service for duration_s (at most max_out_of_service_s)."""
        return self._done(self.engine.remove_from_service(alarm_id, user, self._now(), reason,
                                                          duration_s))

    def return_to_service(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Return an alarm to service."""
        return self._done(self.engine.return_to_service(alarm_id, user, self._now(), comment))

    def _now(self) -> int:
        return int(self._clock() * 1e9)

    def _done(self, event: AlarmEvent) -> AlarmEvent:
        self._hand_on([event])
        return event

    async def start(self) -> None:
        """Evaluate each new snapshot, and every evaluate_interval_s, until closed."""
        self._task = asyncio.create_task(self._run(), name="dcim-alarms")

    async def _run(self) -> None:
        interval = self.engine.config.evaluate_interval_s
        seen = -1
        while True:
            try:
                seen = await self.state.version.wait_past(seen, interval)
            except TimeoutError:
                pass  # nothing new: evaluate anyway, for delays and expiries
            try:
                self.evaluate(self.state.current())
                self._last_error = ""
            except Exception as exc:  # one bad evaluation must not stop alarming
                error = f"{type(exc).__name__}: {exc}"
                if error != self._last_error:  # once per distinct failure, not every cycle
                    log.exception("alarm evaluation failed")
                self._last_error = error

    async def close(self) -> None:
        """Stop evaluating; keep pending timers and flags in the journal for the next start."""
        await cancel_task(self._task)
        self._task = None
        if self.engine.journal is not None:
            self.engine.journal.save_alarms(self.engine.alarms)
