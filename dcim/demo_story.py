"""The demo's incident timeline: a few real faults played on the live plant, one line each.

`dcim demo` plays STORY through the simulator's own fault injection (the same path as
`dcim fault inject` and scenario files), so what the dashboard shows comes from the whole
chain: the plant's physics, the wire, the collectors, the live state, the alarms and the
notifications. `--story-speed` compresses the timeline (tests play it in seconds);
`--no-story` leaves the plant alone.

The player is told how to inject (a callable), how to read the clock and how to wait, so a
test moves its clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from dcim.simulators.faults import FaultSpec


@dataclass(frozen=True)
class StoryStep:
    """One incident: a fault from `at_s` after the start for `duration_s`, with what is said
    when it begins and when it ends."""

    at_s: float
    duration_s: float
    kind: str
    target: str
    begins: str
    ends: str
    point: str | None = None
    params: tuple[tuple[str, float], ...] = ()

    def spec(self, speed: float = 1.0) -> FaultSpec:
        """The fault, its offsets divided by speed (a compressed timeline)."""
        return FaultSpec.model_validate({
            "kind": self.kind, "target": self.target, "point": self.point,
            "at": self.at_s / speed, "duration": self.duration_s / speed,
            "params": dict(self.params)})


# The reference site's incidents (config/cyberport5.yaml): all begin within 7 minutes.
STORY: tuple[StoryStep, ...] = (
    StoryStep(60.0, 240.0, "ups_module_trip", "UPS-A2",
              "UPS module UPS-A2 trips: UPS A carries the load on four modules, N+1 lost",
              "UPS-A2 back on line (its trip alarm stays latched until reset)"),
    StoryStep(180.0, 480.0, "crah_trip", "CRAH-H2-3",
              "CRAH-H2-3 fails: racks near it in hall 2 warm up",
              "CRAH-H2-3 runs again; hall 2 cools down"),
    # the sensor check needs 1 K off its neighbours, then 10 minutes more (its on-delay)
    StoryStep(240.0, 1500.0, "drift", "RM-H1-C05",
              "the middle inlet sensor of rack H1-C05 starts drifting up (anomaly detection)",
              "the H1-C05 inlet sensor reads true again", point="inlet_temp_middle_c",
              params=(("rate_per_h", 18.0),)),
    StoryStep(420.0, 240.0, "utility_loss", "UTIL-A",
              "utility feed A lost: generators start, ATS-A transfers side A to them",
              "utility feed A restored: side A back on the utility"),
)


def timeline(steps: Sequence[StoryStep], speed: float = 1.0) -> list[tuple[float, str]]:
    """(seconds after the start, line) of every beginning and end, in time order."""
    events = [(s.at_s / speed, s.begins) for s in steps]
    events += [((s.at_s + s.duration_s) / speed, s.ends) for s in steps]
    return sorted(events, key=lambda e: e[0])


def offset_text(offset_s: float) -> str:
    """+m:ss of an offset."""
    whole = int(round(offset_s))
    return f"+{whole // 60}:{whole % 60:02d}"


class StoryPlayer:
    """Schedules the story's faults at once (the simulator starts and ends them on its own
    clock) and prints each step as it comes."""

    def __init__(self, inject: Callable[[FaultSpec], Any], steps: Sequence[StoryStep] = STORY,
                 *, speed: float = 1.0, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if speed <= 0:
            raise ValueError(f"the story's speed must be above 0, not {speed:g}")
        self._inject, self.steps, self.speed = inject, tuple(steps), speed
        self._out, self._clock, self._sleep = out, clock, sleep
        self.told: list[str] = []  # the lines printed so far

    def _say(self, line: str) -> None:
        out = self._out
        if out is None:
            return
        # a line of its own above the status line, which a terminal rewrites in place
        out.write(("\r\x1b[K" if out.isatty() else "") + line + "\n")
        out.flush()

    async def play(self) -> None:
        """Inject every fault now (each with its delay), then tell the steps in time."""
        start = self._clock()
        for step in self.steps:
            self._inject(step.spec(self.speed))
        events = timeline(self.steps, self.speed)
        end = offset_text(events[-1][0] * self.speed) if events else "+0:00"
        self._say(f"story: {len(self.steps)} incidents until {end}"
                  + (f" (played {self.speed:g}x faster)" if self.speed != 1 else "")
                  + "; --no-story for a quiet plant")
        for offset_s, text in events:
            wait = start + offset_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
            line = f"story {offset_text(offset_s * self.speed)} {text}"
            self.told.append(line)
            self._say(line)
