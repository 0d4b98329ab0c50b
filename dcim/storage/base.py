"""The storage contract shared by every backend: samples in, ranges and latest values out."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload, runtime_checkable


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


class SampleColumns(Sequence[Sample]):
    """Samples held as four parallel lists: series keys, times, values, qualities.

    The same samples as a list of Sample objects (indexing, iteration, slicing and equality
    behave as for a sequence of Samples), without building an object per sample: the
    collectors produce their polls this way and the durable buffer and line protocol read
    the columns directly. Treat the lists as read-only once handed over.
    """

    __slots__ = ("keys", "times", "values", "qualities")

    def __init__(self, keys: list[SeriesKey], times: list[int], values: list[float],
                 qualities: list[Quality]) -> None:
        self.keys = keys
        self.times = times
        self.values = values
        self.qualities = qualities

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> SampleColumns:
        """Columns of any iterable of samples (the same object when already columns)."""
        if isinstance(samples, SampleColumns):
            return samples
        rows = samples if isinstance(samples, (list, tuple)) else list(samples)
        return cls([s.series for s in rows], [s.time_ns for s in rows],
                   [s.value for s in rows], [s.quality for s in rows])

    @classmethod
    def join(cls, parts: Sequence[SampleColumns]) -> SampleColumns:
        """One SampleColumns holding the parts in order."""
        if len(parts) == 1:
            return parts[0]
        keys: list[SeriesKey] = []
        times: list[int] = []
        values: list[float] = []
        qualities: list[Quality] = []
        for part in parts:
            keys += part.keys
            times += part.times
            values += part.values
            qualities += part.qualities
        return cls(keys, times, values, qualities)

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> SampleColumns: ...

    def __getitem__(self, index: int | slice) -> Sample | SampleColumns:
        if isinstance(index, slice):
            return SampleColumns(self.keys[index], self.times[index], self.values[index],
                                 self.qualities[index])
        return Sample(self.keys[index], self.times[index], self.values[index],
                      self.qualities[index])

    def __iter__(self) -> Iterator[Sample]:
        return map(Sample, self.keys, self.times, self.values, self.qualities)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleColumns):
            return (self.keys == other.keys and self.times == other.times
                    and self.values == other.values and self.qualities == other.qualities)
        if isinstance(other, (list, tuple)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleColumns({list(self)!r})"


@dataclass(frozen=True, slots=True)
class Bucket:
    """One interval of an aggregated read; value is None where the bucket holds no good sample."""

    start_ns: int
    value: float | None
    count: int


# Quality codes as stored; a code outside these reads as BAD (see sample_from_row).
QUALITY_CODES: dict[int, Quality] = {int(q): q for q in Quality}


def sample_from_row(series: SeriesKey, time_ns: object, value: object,
                    quality: object) -> Sample | None:
    """The sample a stored row stands for, or None when the row holds none; never raises.

    Every backend reads its rows through this, so a row means the same everywhere. Rows can
    be partial: InfluxDB 1.x returns null for the fields of a point it has not seen yet (a
    reader querying while a batch is written), and a field of another type (a conflict
    across shards) or an unknown quality code can come back from any server.

    - no integer time, or neither value nor quality: no sample (None);
    - a value that is missing, not a number or not finite reads as NaN, and NaN is never
      GOOD: a good quality without its value reads as BAD (non-finite values are written as
      their quality alone, so a stored NaN otherwise keeps its STALE or BAD);
    - a missing or unknown quality reads as BAD (the value is kept, not trusted).
    """
    if (type(value) is float and type(quality) is int and type(time_ns) is int
            and value - value == 0.0):  # the common row, decided in a few C-level checks
        return Sample(series, time_ns, value, QUALITY_CODES.get(quality, Quality.BAD))
    if value is None and quality is None:
        return None
    if not isinstance(time_ns, int) or isinstance(time_ns, bool):
        return None
    code = Quality.BAD
    if isinstance(quality, int) and not isinstance(quality, bool):
        code = QUALITY_CODES.get(quality, Quality.BAD)
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            pass
    if number - number == 0.0:  # finite
        return Sample(series, time_ns, number, code)
    return Sample(series, time_ns, math.nan, Quality.BAD if code is Quality.GOOD else code)


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
