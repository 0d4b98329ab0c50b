"""Building blocks of the generic detector: a mirrored ring buffer and a tail calibrator.

The calibrator turns a raw statistic into a tail probability over the statistic's own recent
history (the idea of HTM's anomaly likelihood, with the tail of SPOT / peaks-over-threshold):
below the tail threshold the empirical rank, above it an exponential tail fitted to the
excesses. A score of 1 - p then means the same on every series, whatever the statistic's scale.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
from numpy.typing import NDArray

from dcim.analytics.anomaly_base import FloatArray


MIN_TAIL = 20  # fewest points an exponential tail is fitted to


class Ring:
    """Fixed-capacity ring of floats whose last k values are always one contiguous view."""

    __slots__ = ("buf", "cap", "i", "n")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, int(cap))
        self.buf = np.zeros(2 * self.cap)
        self.i = 0
        self.n = 0

    def push(self, x: float) -> None:
        """Append one value (the oldest drops out when full)."""
        self.buf[self.i] = x
        self.buf[self.i + self.cap] = x
        self.i = (self.i + 1) % self.cap
        if self.n < self.cap:
            self.n += 1

    def last(self, k: int) -> FloatArray:
        """The last min(k, n) values, oldest first (a view: copy before keeping)."""
        k = min(k, self.n)
        end = self.i + self.cap
        return self.buf[end - k:end]

    def ago(self, k: int) -> float:
        """The value pushed k pushes ago (1 = the latest); NaN when not held."""
        if k < 1 or k > self.n:
            return math.nan
        return float(self.buf[self.i + self.cap - k])


class Window:
    """Fixed-capacity circular buffer of float32 whose order does not matter (sorts, medians)."""

    __slots__ = ("buf", "cap", "i", "n")

    def __init__(self, cap: int) -> None:
        self.cap = max(1, int(cap))
        self.buf = np.zeros(self.cap, dtype=np.float32)
        self.i = 0
        self.n = 0

    def push(self, x: float) -> None:
        """Add one value (overwrites the oldest when full)."""
        self.buf[self.i] = x
        self.i = (self.i + 1) % self.cap
        if self.n < self.cap:
            self.n += 1

    def values(self) -> NDArray[np.float32]:
        """The values held, in no particular order (a view)."""
        return self.buf[:self.n] if self.n < self.cap else self.buf


class TailCalibrator:
    """Tail probability P(stat >= x) under the statistic's own recent history."""

    __slots__ = ("beta", "beta_floor", "min_n", "q", "ring", "since", "sorted", "tail", "u")

    def __init__(self, cap: int, min_n: int, beta_floor: float, tail: float = 0.05) -> None:
        self.ring = Window(cap)
        self.min_n = min_n
        self.beta_floor = beta_floor
        self.tail = tail
        self.sorted: NDArray[np.float32] | None = None
        self.u = math.inf
        self.beta = beta_floor
        self.q = 1.0
        self.since = 0

    def p(self, x: float) -> float:
        """Tail probability of x (1.0 while the history is too short)."""
        s = self.sorted
        if s is None or not math.isfinite(x):
            return 1.0
        n = s.size
        if x > self.u:
            return self.q * math.exp(-(x - self.u) / self.beta)
        k = n - int(s.searchsorted(x))
        return (k + 1) / (n + 1)

    def push(self, x: float) -> None:
        """Add one value of the statistic; refit now and then (cost amortised)."""
        if not math.isfinite(x):
            return
        self.ring.push(x)
        self.since += 1
        n = self.ring.n
        if n >= self.min_n and self.since >= max(8, n // 64):
            self.refit()

    def refit(self) -> None:
        """Sort the history, place the tail threshold and fit the exponential excess."""
        self.since = 0
        s = np.sort(self.ring.values())
        n = s.size
        k = max(int(self.tail * n), MIN_TAIL)  # the excesses the tail is fitted to
        u = float(s[max(0, n - 1 - k)])
        ex = s[s > u] - u
        self.u = u
        self.q = (ex.size + 1) / (n + 1)
        self.beta = max(float(ex.mean()) if ex.size else 0.0, self.beta_floor)
        self.sorted = s


class Profile:
    """Mean of a series per coarse time bucket over a bounded span (a week and some days).

    The daily and weekly patterns of any series, at any sampling interval, in a few thousand
    floats: a 1-minute series' week is 10,080 samples, its 15-minute profile 672 buckets. Slots
    are keyed by the absolute bucket number, so a gap simply leaves buckets empty (NaN).
    """

    __slots__ = ("count", "n", "total", "which", "width_ns")

    def __init__(self, width_s: float, span_s: float) -> None:
        self.width_ns = max(1, int(round(width_s * 1e9)))
        self.n = max(2, int(math.ceil(span_s / width_s)) + 2)
        # arrays of machine numbers: 24 bytes a bucket, not the 100 of lists of Python objects
        self.which = array("q", [-1]) * self.n
        self.total = array("d", [0.0]) * self.n
        self.count = array("q", [0]) * self.n

    def bucket(self, t_ns: int) -> int:
        """The bucket a time falls in."""
        return int(t_ns) // self.width_ns

    def add(self, t_ns: int, x: float) -> None:
        """Count one finite value into its bucket (a bucket older than the span is reused)."""
        b = int(t_ns) // self.width_ns
        i = b % self.n
        if self.which[i] != b:
            self.which[i], self.total[i], self.count[i] = b, 0.0, 0
        self.total[i] += x
        self.count[i] += 1

    def fill(self, times_ns: NDArray[np.int64], values: FloatArray) -> None:
        """Count a history in at once (what `add` per sample would do, vectorised)."""
        ok = np.isfinite(values)
        if not ok.any():
            return
        b = np.asarray(times_ns, dtype=np.int64)[ok] // self.width_ns
        v = np.asarray(values, dtype=np.float64)[ok]
        keep = b > b.max() - self.n  # what the ring can still hold
        b, v = b[keep], v[keep]
        uniq, inv = np.unique(b, return_inverse=True)
        sums = np.bincount(inv, weights=v)
        counts = np.bincount(inv)
        for bi, s, c in zip(uniq.tolist(), sums.tolist(), counts.tolist()):
            i = bi % self.n
            if self.which[i] != bi:
                self.which[i], self.total[i], self.count[i] = bi, 0.0, 0
            self.total[i] += s
            self.count[i] += int(c)

    def mean(self, b: int) -> float:
        """Mean of bucket b; NaN when it is not held or empty."""
        i = b % self.n
        if self.which[i] != b or self.count[i] == 0:
            return math.nan
        return self.total[i] / self.count[i]

    def means(self, b0: int, b1: int) -> list[float]:
        """Finite means of the buckets b0 .. b1 - 1."""
        n, which, total, count = self.n, self.which, self.total, self.count
        out = []
        for b in range(b0, b1):
            i = b % n
            if which[i] == b and count[i]:
                out.append(total[i] / count[i])
        return out

    def lag_correlation(self, lag: int, least_pairs: int = 32) -> float:
        """Correlation of the bucket means with those `lag` buckets before, over the span held:
        how much of a pattern repeats at that period (near 0 on noise, near 1 on a daily or
        weekly shape; a trend counts too, and a day-old change is then the usual one). NaN
        with too few pairs."""
        which = np.frombuffer(self.which, dtype=np.int64)
        if not (which >= 0).any():
            return math.nan
        last = int(which.max())
        b = np.arange(last - self.n + 1, last + 1)
        i = b % self.n
        held = (which[i] == b) & (np.frombuffer(self.count, dtype=np.int64)[i] > 0)
        m = np.where(held, np.frombuffer(self.total)[i] / np.maximum(
            np.frombuffer(self.count, dtype=np.int64)[i], 1), np.nan)
        d = m
        if lag >= d.size:
            return math.nan
        x, y = d[lag:], d[:-lag]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < least_pairs:
            return math.nan
        x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
        den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
        return float((x * y).sum()) / den if den > 0 else math.nan
