"""The alarm service: evaluates conditions on a cadence, journals, hands events to notifications.

It reads what the rest of the system already knows (collector health, the store's newest
unit states, the last analytics run, the forwarder's outage clock) and never polls devices
itself. Operator actions (acknowledge, shelve, ...) go through it too, so every action is
journaled and notifications learn of it at once (an acknowledgement stops escalation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from dcim.alarm_sources import conditions
from dcim.alarm_types import AlarmEvent
from dcim.alarms import AlarmEngine
from dcim.analysis import status_keys, unit_states_from_latest
from dcim.collectors.base import DeviceHealth
from dcim.site import Site
from dcim.storage.base import Storage
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where alarm events go after the journal (the notifier)."""

    def submit(self, events: Sequence[AlarmEvent]) -> int: ...


class AlarmService:
    """Evaluates alarms every interval; the engine, journal and notifier are passed in."""

    def __init__(self, site: Site, engine: AlarmEngine, *,
                 health: Callable[[], Mapping[str, DeviceHealth]],
                 storage: Storage | None = None,
                 analysis: Callable[[], Any] = lambda: None,
                 forward_stats: Callable[[], Any] = lambda: None,
                 sink: EventSink | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.site, self.engine = site, engine
        self._health, self._storage, self._analysis = health, storage, analysis
        self._forward_stats, self.sink, self._clock = forward_stats, sink, clock
        self._keys = status_keys(site)
        self._down: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self.evaluations = 0

    async def evaluate_once(self, now_ns: int | None = None) -> list[AlarmEvent]:
        """One evaluation: gather conditions, update alarms, journal and hand on the events."""
        now_ns = now_ns if now_ns is not None else int(self._clock() * 1e9)
        if self._storage is not None:
            try:
                latest = await self._storage.read_latest(self._keys)
                self._down = [c for c, up in unit_states_from_latest(self.site, latest).items()
                              if not up]
            except Exception as exc:  # keep the last known unit states; the outage alarms itself
                log.warning("alarm evaluation could not read unit states",
                            extra={"error": f"{type(exc).__name__}: {exc}"})
        backend = self.site.config.storage.backend
        found, suppress = conditions(self.site, health=self._health(), down=self._down,
                                     analysis=self._analysis(), storage=self._forward_stats(),
                                     backend=backend)
        events = self.engine.evaluate(found, now_ns, suppress=suppress)
        self.evaluations += 1
        self._hand_on(events)
        return events

    def _hand_on(self, events: Sequence[AlarmEvent]) -> None:
        if events and self.sink is not None:
            self.sink.submit(events)

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

    def remove_from_service(self, alarm_id: str, user: str, reason: str) -> AlarmEvent:
        """Take an alarm out of service."""
        return self._done(self.engine.remove_from_service(alarm_id, user, self._now(), reason))

    def return_to_service(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Return an alarm to service."""
        return self._done(self.engine.return_to_service(alarm_id, user, self._now(), comment))

    def _now(self) -> int:
        return int(self._clock() * 1e9)

    def _done(self, event: AlarmEvent) -> AlarmEvent:
        self._hand_on([event])
        return event

    async def start(self) -> None:
        """Evaluate every evaluate_interval_s until closed."""
        self._task = asyncio.create_task(self._run(), name="alarms")

    async def _run(self) -> None:
        interval = self.engine.config.evaluate_interval_s
        while True:
            try:
                await self.evaluate_once()
            except Exception:  # one bad evaluation must not stop alarming
                log.exception("alarm evaluation failed")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Stop evaluating; keep pending timers and flags in the journal for the next start."""
        await cancel_task(self._task)
        self._task = None
        if self.engine.journal is not None:
            self.engine.journal.save_alarms(self.engine.alarms)
