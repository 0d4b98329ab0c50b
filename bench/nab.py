"""NAB's standard-profile scorer, written for dcim, and a runner of the generic detector on it.

Rules (NAB's README and its scorer): the first min(floor(0.15 n), 750) rows are probation and
not scored; a window's earliest detection scores 2*sigmoid(-5*pos) - 1 scaled to 1 at the
window's left edge, pos = -(right - i + 1) / width; later detections in the window count for
nothing; a detection outside every window costs fp_weight * that sigmoid of its distance past
the previous window's right edge in widths (-fp_weight when no window came before it); a window
without a detection costs fn_weight. Normalised: 100 * (S - S_null) / (S_perfect - S_null).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcim.analytics.anomaly_base import FloatArray, IntArray

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "nab" / "corpus"


@dataclass(frozen=True, slots=True)
class Profile:
    """Weights of a NAB application profile (standard by default)."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = Profile()


@dataclass(slots=True)
class NabFile:
    """One corpus file: name, times (ns), values and its windows as (first, last) row indices."""

    name: str
    times_ns: IntArray
    values: FloatArray
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def probation(self) -> int:
        """Rows of the probationary period."""
        return probation_rows(len(self.values))


@dataclass(frozen=True, slots=True)
class FileScore:
    """Raw NAB score of one file and its counts."""

    raw: float
    tp: int
    fp: int
    fn: int
    windows: int

    @property
    def normalised(self) -> float:
        """100 * (S + w) / (2 w) with w windows (raw score when w = 0), as NAB's README."""
        return 100.0 * (self.raw + self.windows) / (2 * self.windows) if self.windows else self.raw


def probation_rows(n: int) -> int:
    """min(floor(0.15 n), 0.15 * 5000)."""
    return int(min(math.floor(0.15 * n), 750))


def scaled_sigmoid(pos: float) -> float:
    """2 * sigmoid(-5 pos) - 1; -1 from pos 3 on (far past a window)."""
    if pos >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def score_file(n_rows: int, windows: Sequence[tuple[int, int]], detections: Sequence[int],
               profile: Profile = STANDARD) -> FileScore:
    """Raw score of detections (row indices) against windows (first, last row, inclusive)."""
    start = probation_rows(n_rows)
    wins = sorted(windows)
    best: dict[int, float] = {j: -profile.fn for j, (lo, hi) in enumerate(wins) if hi >= start}
    fp_sum, fp = 0.0, 0
    for i in sorted(set(detections)):
        if i < start or i >= n_rows:
            continue
        inside = [j for j, (lo, hi) in enumerate(wins) if lo <= i <= hi]
        if inside:
            lo, hi = wins[inside[0]]
            width = hi - lo + 1
            s = scaled_sigmoid(-(hi - i + 1) / width) * profile.tp / MAX_TP
            best[inside[0]] = max(best[inside[0]], s)
            continue
        before = [(lo, hi) for lo, hi in wins if hi < i]
        if before:
            lo, hi = before[-1]
            pos = abs(hi - i) / max(hi - lo, 1)  # NAB: / (width - 1)
        else:
            pos = 3.0
        fp_sum += scaled_sigmoid(pos) * profile.fp
        fp += 1
    tp = sum(1 for v in best.values() if v > -profile.fn)
    return FileScore(sum(best.values()) + fp_sum, tp, fp, len(best) - tp, len(best))


def normalised_total(scores: Sequence[FileScore], profile: Profile = STANDARD) -> float:
    """100 * (S - S_null) / (S_perfect - S_null) over the corpus (perfect: each window at its start)."""
    raw = sum(s.raw for s in scores)
    null = -profile.fn * sum(s.windows for s in scores)
    perfect = profile.tp * sum(s.windows for s in scores)
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else raw


def _ns(stamp: str) -> int:
    """NAB's local wall-time stamp to integer ns (no zone: only differences matter)."""
    return int(np.datetime64(stamp.replace(" ", "T"), "ns").astype(np.int64))


def load_corpus(corpus: Path = CORPUS, only: Sequence[str] | None = None) -> list[NabFile]:
    """Every labelled file of the corpus (or those whose name contains one of `only`)."""
    wins = json.loads((corpus / "combined_windows.json").read_text())
    out = []
    for name in sorted(wins):
        if only and not any(o in name for o in only):
            continue
        with (corpus / name).open() as f:
            rows = list(csv.reader(f))[1:]
        t = np.array([_ns(r[0]) for r in rows], dtype=np.int64)
        v = np.array([float(r[1]) for r in rows], dtype=np.float64)
        idx = []
        for a, b in wins[name]:
            lo = int(np.searchsorted(t, _ns(a), "left"))
            hi = int(np.searchsorted(t, _ns(b), "right")) - 1
            idx.append((lo, hi))
        out.append(NabFile(name, t, v, idx))
    return out


Detect = Callable[[NabFile, FloatArray, float], list[int]]


def sweep(files: Sequence[NabFile], scores: Sequence[FloatArray], detect: Detect,
          thresholds: Sequence[float]) -> tuple[float, float]:
    """(best threshold, its normalised corpus score) over candidate thresholds."""
    best = (math.nan, -math.inf)
    for thr in thresholds:
        tot = normalised_total([score_file(len(f.values), f.windows, detect(f, s, thr))
                                for f, s in zip(files, scores)])
        if tot > best[1]:
            best = (thr, tot)
    return best


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
