"""What every protocol collector shares: the contract, point state and quality, backoff.

A collector owns the devices behind one gateway. It turns device answers into samples and
hands them to a sink (normally the durable store-and-forward); it never writes to a device
unless a point is marked writable in the config.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from dcim.storage.base import Quality, Sample, SampleColumns, SeriesKey

log = logging.getLogger(__name__)


@runtime_checkable
class CycleSink(Protocol):
    """A sink that marks cycles (StoreAndForward, LiveState): a cycle begun and not closed
    by its add is reported as lost when a crash cut it."""

    def begin_cycle(self, tag: str, expected: int) -> None:
        """Announce a cycle of at most `expected` samples, before its reads."""

    def add(self, samples: Sample | Iterable[Sample], *, cycle: str | None = None) -> None:
        """Accept samples without blocking; `cycle` closes the cycle begun with that tag."""


class PlainSink(Protocol):
    """A sink that only takes samples (BatchWriter, a list in tests)."""

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        """Accept samples without blocking."""


# Where collectors put samples. Call begin_cycle and add(cycle=) through CycleMarks, which
# falls back to a plain add for a sink without them.
SampleSink = CycleSink | PlainSink


def _no_begin(tag: str, expected: int) -> None:
    pass


class CycleMarks:
    """A sink's cycle markers, looked up once when a collector is built.

    `begin(tag, expected)` goes before a cycle's reads, `add(samples, tag)` delivers the
    cycle's samples and closes it (even when there are none). For a sink without
    `begin_cycle`, begin does nothing and add is the plain add, skipped when empty.
    """

    __slots__ = ("begin", "add")

    def __init__(self, sink: SampleSink):
        self.begin: Callable[[str, int], None]
        self.add: Callable[[Sequence[Sample], str], None]
        if isinstance(sink, CycleSink):
            marked = sink

            def add_closing(samples: Sequence[Sample], tag: str) -> None:
                marked.add(samples, cycle=tag)
            self.begin, self.add = marked.begin_cycle, add_closing
        else:
            plain = sink

            def add_plain(samples: Sequence[Sample], tag: str) -> None:
                if samples:
                    plain.add(samples)
            self.begin, self.add = _no_begin, add_plain


class Collector(Protocol):
    """The contract of a protocol collector: start, collect in the background, close."""

    async def start(self) -> None:
        """Connect and begin collecting (returns once running)."""

    async def close(self) -> None:
        """Stop collecting and release connections."""

    @property
    def gateway_down(self) -> bool:
        """True while none of the gateway's devices answers (after they have been tried)."""


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
    time_ns: int | None = None  # time of the device's last sample of any quality


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

    @property
    def connecting(self) -> bool:
        """Not answered once yet and no error yet: still starting up (shown as STALE)."""
        return self.last_ok_ns is None and not self.last_error and \
            self.status is DeviceStatus.STALE

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
    """Point states of one device and the samples a poll (or a failed poll) produces.

    Kept as columns (one list per attribute, in series order) rather than an object per
    point: a fully good poll, the common case, replaces whole columns in C-level list
    operations instead of four attribute stores per point.
    """

    def __init__(self, series: dict[str, SeriesKey], stale_after_ns: int):
        self.names = list(series)
        self.keys = list(series.values())
        n = len(self.keys)
        self.last_good: list[float] = [float("nan")] * n  # last good value per point
        self.good_ns: list[int | None] = [None] * n  # time of the last good value
        self.quality: list[Quality] = [Quality.BAD] * n  # quality of the last sample
        self.time_ns: int | None = None  # time of the last sample
        self.stale_after_ns = stale_after_ns
        self._all_good = [Quality.GOOD] * n

    @property
    def states(self) -> dict[str, PointState]:
        """Each point's state as an object (for inspection; not used while polling)."""
        return {name: PointState(key, value, q, good, self.time_ns)
                for name, key, value, q, good in zip(self.names, self.keys, self.last_good,
                                                     self.quality, self.good_ns)}

    def good_values(self, values: Sequence[float | None], t_ns: int) -> SampleColumns:
        """Samples of a successful poll from values in series order (None: not implemented).

        The collector's hot path: `values[i]` belongs to the i-th series; a None value gives
        a bad sample with NaN and keeps the point's last good value.
        """
        self.time_ns = t_ns
        n = len(self.keys)
        if None not in values:
            self.last_good = list(values)  # type: ignore[arg-type]
            self.good_ns = [t_ns] * n
            self.quality = self._all_good.copy()
            return SampleColumns(self.keys, [t_ns] * n,
                                 values if values.__class__ is list else list(values),  # type: ignore[arg-type]
                                 self._all_good)
        good, bad, nan = Quality.GOOD, Quality.BAD, float("nan")
        out_values: list[float] = []
        last_good, good_ns, quality = self.last_good, self.good_ns, self.quality
        for i, value in enumerate(values):
            if value is None:
                quality[i] = bad
                out_values.append(nan)
            else:
                last_good[i] = value
                good_ns[i] = t_ns
                quality[i] = good
                out_values.append(value)
        return SampleColumns(self.keys, [t_ns] * n, out_values, quality.copy())

    def failed(self, t_ns: int, quality: Quality = Quality.BAD) -> SampleColumns:
        """Samples when no fresh value came: last good value kept, quality bad or stale."""
        keys: list[SeriesKey] = []
        values: list[float] = []
        stale = quality is Quality.STALE
        for i, (key, value, good_ns) in enumerate(zip(self.keys, self.last_good, self.good_ns)):
            if stale and good_ns is not None and t_ns - good_ns < self.stale_after_ns:
                continue  # not yet stale: nothing to write this cycle
            self.quality[i] = quality
            keys.append(key)
            values.append(value)
        if keys:
            self.time_ns = t_ns
        return SampleColumns(keys, [t_ns] * len(keys), values, [quality] * len(keys))
