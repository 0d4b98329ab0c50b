"""What every protocol collector shares: the contract, point state and quality, backoff.

A collector owns the devices behind one gateway. It turns device answers into samples and
hands them to a sink (normally the durable store-and-forward); it never writes to a device
unless a point is marked writable in the config.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from dcim.storage.base import Quality, Sample, SeriesKey

log = logging.getLogger(__name__)


class SampleSink(Protocol):
    """Where collectors put samples (StoreAndForward, BatchWriter, a list in tests)."""

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        """Accept samples without blocking."""


class Collector(Protocol):
    """The contract of a protocol collector: start, collect in the background, close."""

    async def start(self) -> None:
        """Connect and begin collecting (returns once running)."""

    async def close(self) -> None:
        """Stop collecting and release connections."""


class DeviceStatus(str, enum.Enum):
    """A device's state as the dashboard shows it."""

    UP = "up"
    STALE = "stale"
    DOWN = "down"


@dataclass(slots=True)
class PointState:
    """The last known value of a point, with its quality and age."""

    series: SeriesKey
    value: float = float("nan")
    quality: Quality = Quality.BAD
    good_time_ns: int | None = None  # time of the last good value
    time_ns: int | None = None  # time of the last sample of any quality


@dataclass
class Backoff:
    """Exponential backoff with full jitter, per device: 1 s, 2 s, 4 s ... capped."""

    base_s: float = 1.0
    cap_s: float = 60.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """A success: start over."""
        self.failures = 0


@dataclass
class DeviceHealth:
    """Counters of one device, for the dashboard and Prometheus."""

    device_id: str
    gateway: str
    status: DeviceStatus = DeviceStatus.STALE
    polls: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    last_ok_ns: int | None = None
    latency_s: float = 0.0  # last poll's round trip
    latency_ewma_s: float = 0.0
    skipped_backoff: int = 0
    next_attempt_s: float = 0.0

    def ok(self, t_ns: int, latency_s: float) -> None:
        """A good poll."""
        self.polls += 1
        self.consecutive_errors = 0
        self.last_ok_ns = t_ns
        self.status = DeviceStatus.UP
        self.latency_s = latency_s
        self.latency_ewma_s = latency_s if self.latency_ewma_s == 0 else (
            0.8 * self.latency_ewma_s + 0.2 * latency_s)

    def failed(self, error: str) -> bool:
        """A failed poll; returns True when this is the first of a run (log it once)."""
        self.polls += 1
        self.errors += 1
        self.consecutive_errors += 1
        self.last_error = error
        self.status = DeviceStatus.DOWN
        return self.consecutive_errors == 1


class PointTable:
    """Point states of one device and the samples a poll (or a failed poll) produces."""

    def __init__(self, series: dict[str, SeriesKey], stale_after_ns: int):
        self.states = {name: PointState(key) for name, key in series.items()}
        self._items = list(self.states.items())  # iterated every poll
        self.stale_after_ns = stale_after_ns

    def good(self, values: dict[str, float | str | None], t_ns: int) -> list[Sample]:
        """Samples of a successful poll: a value is good, a missing one (not implemented) bad."""
        out = []
        append = out.append
        get = values.get
        good, bad, nan = Quality.GOOD, Quality.BAD, float("nan")
        for name, state in self._items:
            value = get(name)
            if value.__class__ is float or value.__class__ is int:
                state.value = value  # type: ignore[assignment]
                state.quality = good
                state.good_time_ns = state.time_ns = t_ns
                append(Sample(state.series, t_ns, value, good))  # type: ignore[arg-type]
            elif value is None:
                state.quality = bad
                state.time_ns = t_ns
                append(Sample(state.series, t_ns, nan, bad))
            elif isinstance(value, str):
                continue
            else:
                state.value = value
                state.quality = good
                state.good_time_ns = state.time_ns = t_ns
                append(Sample(state.series, t_ns, value, good))
        return out

    def failed(self, t_ns: int, quality: Quality = Quality.BAD) -> list[Sample]:
        """Samples when no fresh value came: last good value kept, quality bad or stale."""
        out = []
        for state in self.states.values():
            q = quality
            if q is Quality.STALE and state.good_time_ns is not None and \
                    t_ns - state.good_time_ns < self.stale_after_ns:
                continue  # not yet stale: nothing to write this cycle
            state.quality = q
            state.time_ns = t_ns
            out.append(Sample(state.series, t_ns, state.value, q))
        return out
