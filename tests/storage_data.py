"""Generated sample sets and numpy reference aggregates for the storage tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcim.storage.base import Aggregate, Bucket, Quality, Sample, SeriesKey

T0_NS = 1_700_000_000_123_456_789  # not aligned to anything, on purpose
SERIES = [
    SeriesKey("ups_module", "UPS-A1", "output_kw"),
    SeriesKey("pdu", "PDU 2,B=3", "phase l1 current"),  # characters that line protocol escapes
    SeriesKey("crah", "CRAH-ü-07", "supply_temp_c"),  # unicode
    SeriesKey("rack monitor", 'R"12\'', "inlet=temp"),  # quotes for InfluxQL
    SeriesKey("pdu", "PDU-1", "energy_kwh"),
]


@dataclass(frozen=True)
class SeriesData:
    """Arrays of one generated series."""

    key: SeriesKey
    times: np.ndarray  # int64 ns, increasing
    values: np.ndarray  # float64
    qualities: np.ndarray  # int

    def samples(self) -> list[Sample]:
        """As Sample objects, oldest first."""
        return [Sample(self.key, int(t), float(v), Quality(int(q)))
                for t, v, q in zip(self.times, self.values, self.qualities, strict=True)]


def generate(total: int = 10_000, seed: int = 7) -> list[SeriesData]:
    """Irregular times with a long gap (empty buckets), ~15 % stale or bad samples."""
    rng = np.random.default_rng(seed)
    per_series = total // len(SERIES)
    data = []
    for i, key in enumerate(SERIES):
        steps = rng.integers(1, 2_000_000_000, size=per_series)  # up to 2 s apart, ns resolution
        steps[per_series // 2] = 300 * 10**9  # a five-minute hole
        times = T0_NS + i + np.cumsum(steps)
        values = rng.normal(100.0 * (i + 1), 25.0, size=per_series)
        values[::97] = rng.uniform(-1e9, 1e9, size=len(values[::97]))  # large and negative
        qualities = rng.choice([0, 0, 0, 0, 0, 0, 1, 2], size=per_series)
        data.append(SeriesData(key, times.astype(np.int64), values, qualities))
    return data


_NUMPY_FN = {
    Aggregate.MEAN: lambda v: float(np.mean(v)),
    Aggregate.MIN: lambda v: float(np.min(v)),
    Aggregate.MAX: lambda v: float(np.max(v)),
    Aggregate.SUM: lambda v: float(np.sum(v)),
    Aggregate.COUNT: lambda v: float(len(v)),
    Aggregate.FIRST: lambda v: float(v[0]),
    Aggregate.LAST: lambda v: float(v[-1]),
}


def expected_buckets(data: SeriesData, start_ns: int, end_ns: int, every_ns: int,
                     fn: Aggregate) -> list[Bucket]:
    """Reference buckets computed with numpy from the generated arrays."""
    keep = (data.times >= start_ns) & (data.times < end_ns) & (data.qualities == 0)
    times, values = data.times[keep], data.values[keep]
    starts = (times // every_ns) * every_ns
    first = (start_ns // every_ns) * every_ns
    buckets = []
    for b in range(first, end_ns, every_ns):
        in_bucket = values[starts == b]
        if len(in_bucket):
            buckets.append(Bucket(b, _NUMPY_FN[fn](in_bucket), len(in_bucket)))
        else:
            buckets.append(Bucket(b, None, 0))
    return buckets
