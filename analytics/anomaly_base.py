"""Shared pieces of the anomaly layers: the Anomaly record, series arrays, runs and hysteresis."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from dcim.storage.base import Quality, SeriesKey

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

LAYERS = ("envelope", "rate", "robust", "model", "sensor")
SEVERITIES = ("low", "medium", "high", "critical")
NS = 1_000_000_000
HK = ZoneInfo("Asia/Hong_Kong")


@dataclass(frozen=True, slots=True)
class SeriesData:
    """One series as arrays: times (ns, increasing), values (NaN = missing), optional quality."""

    times_ns: IntArray
    values: FloatArray
    quality: NDArray[np.int8] | None = None

    def good_values(self) -> FloatArray:
        """Values with BAD/STALE samples set to NaN."""
        if self.quality is None:
            return self.values
        return np.where(self.quality == Quality.GOOD, self.values, np.nan)


Batch = dict[SeriesKey, SeriesData]


@dataclass(slots=True)
class Anomaly:
    """One anomaly episode: which series, since when, how far from normal, and why."""

    series: SeriesKey
    layer: str
    kind: str
    since_ns: int
    last_ns: int
    raised_ns: int  # when a causal detector could first raise it (since + on-delay/window)
    value: float
    expected: float | tuple[float, float] | None
    score: float
    severity: str
    message: str = ""
    context: dict[str, float] = field(default_factory=dict)
    # 0-1, how sure the layer is that this is not normal operation: 1 for a limit crossed or a
    # state the device reports, calibrated for the generic layer, from the threshold ratio for
    # the other statistical layers (ratio_confidence); alarms below a site's
    # alarms.anomaly.page_min_confidence are not paged
    confidence: float = 1.0


def label(series: SeriesKey) -> str:
    """'RM-H1-A02 inlet_temp_middle_c' from a SeriesKey."""
    return f"{series.device} {series.point}"


def clock(time_ns: int, tz: ZoneInfo = HK) -> str:
    """Local HH:MM of a time in ns."""
    return datetime.fromtimestamp(time_ns / NS, timezone.utc).astimezone(tz).strftime("%H:%M")


def fmt_expected(expected: float | tuple[float, float] | None) -> str:
    """'27.0' or '18.0-27.0' or '?'."""
    if expected is None:
        return "?"
    if isinstance(expected, tuple):
        return f"{expected[0]:.1f}-{expected[1]:.1f}"
    return f"{expected:.1f}"


def runs(mask: BoolArray) -> list[tuple[int, int]]:
    """(first, last) index pairs of the True runs of a boolean array (last inclusive)."""
    if mask.size == 0:
        return []
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def hysteresis(on: BoolArray, off: BoolArray) -> BoolArray:
    """Latched state: set where `on`, reset where `off`, held in between (starts reset)."""
    event = np.where(on, 1, np.where(off, 0, -1))
    idx = np.where(event >= 0, np.arange(event.size), -1)
    last = np.maximum.accumulate(idx) if idx.size else idx
    state = np.where(last >= 0, event[np.maximum(last, 0)], 0)
    return state.astype(bool)


def episodes(times_ns: IntArray, mask: BoolArray, on_delay_s: float,
             merge_gap_s: float = 0.0) -> list[tuple[int, int, int]]:
    """(first, last, raise) indices of runs lasting >= on_delay_s; runs closer than merge_gap_s merge."""
    pairs = runs(mask)
    if merge_gap_s > 0 and pairs:
        merged = [pairs[0]]
        for a, b in pairs[1:]:
            if (times_ns[a] - times_ns[merged[-1][1]]) / NS <= merge_gap_s:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        pairs = merged
    out = []
    delay_ns = int(on_delay_s * NS)
    for a, b in pairs:
        if times_ns[b] - times_ns[a] >= delay_ns:
            k = int(np.searchsorted(times_ns, times_ns[a] + delay_ns))
            out.append((a, b, min(k, b)))
    return out


def median_step_s(times_ns: IntArray) -> float:
    """The typical sampling interval of a series, in seconds (60 when it cannot tell)."""
    steps = np.diff(times_ns)
    steps = steps[steps > 0]  # repeated timestamps are not a zero interval
    if steps.size == 0:
        return 60.0
    return float(np.median(steps)) / NS


def window_samples(times_ns: IntArray, window_s: float, min_samples: int = 1) -> int:
    """How many samples a window of window_s spans at the series' typical interval, at least
    min_samples (an hourly series must not get a one-sample window)."""
    return max(1, min_samples, int(round(window_s / median_step_s(times_ns))))


def ratio_confidence(ratio: float) -> float:
    """Confidence of a statistical layer from its score / threshold: 0.5 at the threshold,
    0.875 at twice it, 0.97 at four times (a rule, not a calibrated probability)."""
    r = max(float(ratio), 1.0) if np.isfinite(ratio) else 1.0
    return 1.0 - 0.5 / (r * r)


def ffill(values: FloatArray) -> FloatArray:
    """Forward-fill NaNs (leading NaNs take the first finite value)."""
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values.copy()
    idx = np.where(ok, np.arange(values.size), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(ok)[0])
    idx[idx < 0] = first
    return values[idx]


def severity_for(score: float, low: float, medium: float, high: float) -> str:
    """ISA-style priority from a score and three increasing thresholds."""
    if score >= high:
        return "critical"
    if score >= medium:
        return "high"
    if score >= low:
        return "medium"
    return "low"
