"""The storage contract shared by every backend: samples in, ranges and latest values out."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Quality(enum.IntEnum):
    """Quality of one sample, stored as an integer field next to the value."""

    GOOD = 0
    STALE = 1  # no fresh value after N intervals: value is the last good one
    BAD = 2  # device error: value is not meaningful


class Aggregate(str, enum.Enum):
    """Aggregation functions every backend implements with the same meaning."""

    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """Identity of one series: measurement (device type), device id, point name."""

    measurement: str
    device: str
    point: str


@dataclass(slots=True, unsafe_hash=True)
class Sample:
    """One value of one series at one instant (ns since the Unix epoch, UTC).

    A value object: never changed once made (collectors, the buffer and the forwarder share
    the same instances). Not `frozen` only because a frozen dataclass takes about 1.3 us to
    build against 0.2 us, and collectors build one per point per poll.
    """

    series: SeriesKey
    time_ns: int
    value: float
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Bucket:
    """One interval of an aggregated read; value is None where the bucket holds no good sample."""

    start_ns: int
    value: float | None
    count: int


class StorageError(Exception):
    """A backend could not complete a request (after its own retries)."""


@runtime_checkable
class Storage(Protocol):
    """The async interface that collectors, analytics, dashboards and reports use."""

    async def start(self) -> None:
        """Open connections, create the database or schema if needed."""

    async def close(self) -> None:
        """Flush what is pending and release resources."""

    async def write(self, samples: Sequence[Sample]) -> None:
        """Write a batch; raises StorageError when the batch could not be stored."""

    async def read_range(
        self, series: SeriesKey, start_ns: int, end_ns: int, *, good_only: bool = False
    ) -> list[Sample]:
        """Raw samples with start_ns <= time < end_ns, oldest first."""

    async def read_aggregate(
        self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int, fn: Aggregate
    ) -> list[Bucket]:
        """Good samples aggregated into epoch-aligned buckets of every_ns, empty buckets included."""

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        """The newest sample of each series that has one."""
