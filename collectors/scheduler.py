"""Polling on a steady cadence aligned to wall-clock boundaries (a 5 s poll at :00, :05 ...).

Two redundant collectors of the same devices therefore stamp the same times. A cycle that
overruns its interval is counted and the boundaries it covered are skipped: cycles never
pile up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def next_boundary(now_s: float, interval_s: float) -> float:
    """The first multiple of interval_s strictly after now_s (epoch-aligned)."""
    return (math.floor(now_s / interval_s) + 1) * interval_s


@dataclass
class CadenceStats:
    """Counters of one cadence."""

    cycles: int = 0
    overruns: int = 0  # cycles that took longer than the interval
    missed: int = 0  # boundaries skipped because a cycle was still running
    errors: int = 0  # cycles that raised (logged with their traceback)
    last_duration_s: float = 0.0
    max_duration_s: float = 0.0


class Cadence:
    """Calls `cycle(boundary_s)` at every interval boundary until stopped."""

    def __init__(self, interval_s: float, cycle: Callable[[float], Awaitable[None]], *,
                 name: str = "", clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if interval_s <= 0:
            raise ValueError("interval must be positive")
        self.interval_s = interval_s
        self._cycle = cycle
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self.stats = CadenceStats()

    async def run(self) -> None:
        """Run forever (cancel to stop)."""
        boundary = next_boundary(self._clock(), self.interval_s)
        task = asyncio.current_task()
        while True:
            await self._sleep(max(0.0, boundary - self._clock()))
            started = self._clock()
            try:
                await self._cycle(boundary)
            except Exception:  # a bug in one cycle must not end the cadence for good
                self.stats.errors += 1
                log.exception("poll cycle failed", extra={"cadence": self.name})
            if task is not None and task.cancelling():
                # Python 3.11's wait_for (inside pymodbus) can swallow a cancel that arrives
                # as its answer does; the request stays pending on the task, so honour it.
                raise asyncio.CancelledError()
            finished = self._clock()
            duration = finished - started
            self.stats.cycles += 1
            self.stats.last_duration_s = duration
            self.stats.max_duration_s = max(self.stats.max_duration_s, duration)
            upcoming = boundary + self.interval_s
            if finished >= upcoming:
                skipped = math.floor((finished - upcoming) / self.interval_s) + 1
                self.stats.overruns += 1
                self.stats.missed += skipped
                if self.stats.overruns == 1 or self.stats.overruns % 100 == 0:
                    log.warning("poll cycle overran its interval", extra={
                        "cadence": self.name, "interval_s": self.interval_s,
                        "duration_s": round(duration, 3), "missed_total": self.stats.missed})
                upcoming += skipped * self.interval_s
            boundary = upcoming


def cadences_by_interval(members: list[T], interval_of: Callable[[T], float],
                         make_cycle: Callable[[list[T]], Callable[[float], Awaitable[None]]], *,
                         name: str, clock: Callable[[], float] = time.time) -> list[Cadence]:
    """One Cadence per distinct interval, each cycling over the members with that interval."""
    out = []
    for interval in sorted({interval_of(m) for m in members}):
        group = [m for m in members if interval_of(m) == interval]
        out.append(Cadence(interval, make_cycle(group), name=f"{name}/{interval:g}s", clock=clock))
    return out


def start_cadences(members: list[T], interval_of: Callable[[T], float],
                   make_cycle: Callable[[list[T]], Callable[[float], Awaitable[None]]], *,
                   name: str, clock: Callable[[], float] = time.time,
                   ) -> tuple[list[Cadence], list[asyncio.Task[None]]]:
    """cadences_by_interval, each already running in a task named after it."""
    cadences = cadences_by_interval(members, interval_of, make_cycle, name=name, clock=clock)
    return cadences, [asyncio.create_task(c.run(), name=c.name) for c in cadences]

