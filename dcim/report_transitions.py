"""Availability states from the transitions the live state recorded, not from every sample.

The live state (dcim/live/service.py) writes a sample of `transition/<unit>/state` each time a
unit's state changes (up 1, down 0, unknown -1), `transition/<group>/meets_design` and
`transition/<site>/concurrently_maintainable` each time a verdict changes (1 held, 0 not), and
its derived series every `analytics_interval_s`, among them `analytics/<site>/units_down`. That
last one is the heartbeat: where it is stored, the live state was running, so a unit without a
new transition kept its state. A year of one site is a few thousand transitions and 525,600
heartbeats instead of some 250 million per-minute aggregates.

The states are put on the report's step grid the way the per-step aggregates would put them
(`paint`): a status word counts a step down when the unit was down during any part of it (the
MAX of the status word), a meter or a rack feed counts it live when the feed was live during
any part of it (the MAX of the power). On a history sampled on the step grid both give the
same codes; otherwise they differ by at most one step at each end of an incident.

A system speaks through its transitions only over the steps the heartbeat covers and after its
first recorded transition (`Recorded.mask`); everywhere else the report reads the samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dcim.analytics.anomaly_base import runs
from dcim.analytics.availability import DEGRADED, DOWN, UNKNOWN, UP, BoolArray, Codes
from dcim.storage.base import SeriesKey, Storage

NS = 1_000_000_000
TRANSITIONS = "transition"  # as dcim/live/service.py writes them
HEARTBEAT = ("analytics", "units_down")  # stored by the live state every analytics interval
HEARTBEAT_GAP = 2.5  # a gap longer than this many usual intervals: the live state was not running
READ_CHUNK_NS = 7 * 86400 * NS  # heartbeats read a week at a time: memory stays bounded
STATE_CODES = {1.0: UP, 0.0: DOWN, -1.0: UNKNOWN}
# which state a step takes when several held during it, first wins
WORST_FIRST = (DOWN, DEGRADED, UP)  # a status word's MAX, a group level's MIN, a flag's MIN
LIVE_FIRST = (UP, DOWN)  # a power reading's MAX: live if live at any moment of the step


def paint(times_ns: NDArray[np.int64], step_ns: int, change_ns: NDArray[np.int64],
          codes: Codes, order: Sequence[int]) -> Codes:
    """Per-step codes of a piecewise-constant state that takes codes[i] at change_ns[i]:
    where several held during one step, the first of `order` wins; UNKNOWN before the first
    change and for codes not in `order`."""
    n = times_ns.size
    out = np.full(n, UNKNOWN, dtype=np.int8)
    if n == 0 or change_ns.size == 0:
        return out
    t0 = int(times_ns[0])
    ends = np.append(change_ns[1:], np.int64(t0 + n * step_ns))
    first = np.clip((change_ns - t0) // step_ns, 0, n)
    last = np.clip(-(-(ends - t0) // step_ns), 0, n)  # exclusive: every step [start, end) touches
    for code in reversed(order):  # the most important last, so it overwrites
        sel = (codes == code) & (last > first)
        if not sel.any():
            continue
        edges = np.zeros(n + 1, dtype=np.int32)
        np.add.at(edges, first[sel], 1)
        np.add.at(edges, last[sel], -1)
        out[np.cumsum(edges[:-1]) > 0] = code
    return out


def windows(times_ns: NDArray[np.int64], step_ns: int,
            mask: BoolArray) -> list[tuple[int, int]]:
    """The [start, end) spans of the steps where mask holds, in ns."""
    return [(int(times_ns[a]), int(times_ns[b]) + step_ns) for a, b in runs(mask)]


@dataclass
class Recorded:
    """What the live state recorded over one report's step grid."""

    times_ns: NDArray[np.int64]
    step_ns: int
    covered: BoolArray  # steps during which the live state ran (its heartbeat)
    heartbeats: int = 0
    changes: dict[SeriesKey, tuple[NDArray[np.int64], NDArray[np.float64]]] = \
        field(default_factory=dict)
    _painted: dict[tuple[SeriesKey, tuple[int, ...], int, int], Codes] = \
        field(default_factory=dict, repr=False)

    @property
    def any(self) -> bool:
        """Whether the live state ran during any step of the period."""
        return bool(self.covered.any())

    @property
    def transitions(self) -> int:
        """Transitions read (those before the period included: they give the starting state)."""
        return sum(t.size for t, _ in self.changes.values())

    def mask(self, key: SeriesKey) -> BoolArray:
        """Steps this series' transitions speak for: covered and after its first one."""
        times, _ = self.changes.get(key, (np.empty(0, dtype=np.int64), np.empty(0)))
        if times.size == 0:
            return np.zeros(self.times_ns.size, dtype=bool)
        return self.covered & (self.times_ns + self.step_ns > times[0])

    def codes(self, key: SeriesKey, order: Sequence[int], *, held: int = UP,
              not_held: int = DOWN) -> Codes:
        """Per-step codes of one series (a unit state, or a verdict as held / not_held)."""
        memo = (key, tuple(order), held, not_held)  # a PDU feeds many racks: painted once
        if memo in self._painted:
            return self._painted[memo]
        times, values = self.changes.get(key, (np.empty(0, dtype=np.int64), np.empty(0)))
        if key.point == "state":
            codes = np.array([STATE_CODES.get(float(v), UNKNOWN) for v in values], dtype=np.int8)
        else:
            codes = np.where(values >= 0.5, held, not_held).astype(np.int8)
        out = paint(self.times_ns, self.step_ns, times, codes, order)
        out[~self.covered] = UNKNOWN
        self._painted[memo] = out
        return out


async def _heartbeat(storage: Storage, key: SeriesKey, start_ns: int,
                     end_ns: int) -> NDArray[np.int64]:
    """Times of the heartbeat samples in [start_ns, end_ns), read a chunk at a time."""
    parts = []
    t = start_ns
    while t < end_ns:
        stop = min(end_ns, t + READ_CHUNK_NS)
        rows = await storage.read_range(key, t, stop)
        parts.append(np.fromiter((r.time_ns for r in rows), dtype=np.int64, count=len(rows)))
        t = stop
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def coverage(times_ns: NDArray[np.int64], step_ns: int, beats: NDArray[np.int64]) -> BoolArray:
    """Steps the live state ran during: from each heartbeat to the next, unless the gap is
    longer than HEARTBEAT_GAP usual intervals (it was stopped); the last one covers its step."""
    n = times_ns.size
    if n == 0 or beats.size == 0:
        return np.zeros(n, dtype=bool)
    gaps = np.diff(beats)
    usual = float(np.median(gaps)) if gaps.size else float(step_ns)
    ends = np.append(np.where(gaps <= HEARTBEAT_GAP * usual, beats[1:], beats[:-1] + 1),
                     beats[-1] + 1)
    # one segment per heartbeat, to the next one or, after a stop, to just past it
    t0 = int(times_ns[0])
    first = np.clip((beats - t0) // step_ns, 0, n)
    last = np.clip(-(-(ends - t0) // step_ns), 0, n)
    edges = np.zeros(n + 1, dtype=np.int32)
    ok = last > first
    np.add.at(edges, first[ok], 1)
    np.add.at(edges, last[ok], -1)
    return np.cumsum(edges[:-1]) > 0


async def read_recorded(storage: Storage, site_id: str, keys: Sequence[SeriesKey],
                        times_ns: NDArray[np.int64], step_ns: int, end_ns: int) -> Recorded:
    """The heartbeat over the period and every transition of `keys` up to its end (those
    before it give the state at its start)."""
    start = int(times_ns[0]) if times_ns.size else end_ns
    beat_key = SeriesKey(HEARTBEAT[0], site_id, HEARTBEAT[1])
    # a heartbeat just before the period covers its first step
    beats = await _heartbeat(storage, beat_key, start - step_ns - 3600 * NS, end_ns)
    covered = coverage(times_ns, step_ns, beats)
    recorded = Recorded(times_ns, step_ns, covered,
                        heartbeats=int(((beats >= start) & (beats < end_ns)).sum()))
    if not recorded.any:
        return recorded
    for key in keys:
        rows = await storage.read_range(key, 0, end_ns, good_only=True)
        if rows:
            recorded.changes[key] = (np.array([r.time_ns for r in rows], dtype=np.int64),
                                     np.array([r.value for r in rows], dtype=float))
    return recorded


def transition_key(subject: str, what: str = "state") -> SeriesKey:
    """The series the live state writes a subject's transitions to."""
    return SeriesKey(TRANSITIONS, subject, what)


__all__ = ["LIVE_FIRST", "WORST_FIRST", "Recorded", "coverage", "paint", "read_recorded",
           "transition_key", "windows"]
