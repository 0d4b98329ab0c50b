"""Availability of systems over a period, from states per time step (pure, numpy, no I/O).

Every system is a row of state codes, one per step (60 s by default) of the period:
UP, DEGRADED (serving, with redundancy lost), DOWN, UNKNOWN (no good data: the report says
so instead of counting it as up). From those:

- availability = (up + degraded) / (up + degraded + down), over the time the state is known;
  reported with all downtime and with planned downtime left out (planned windows come from
  the maintenance log), as auditors ask for both;
- coverage = known time / period: an availability measured on 60 % of the period says so,
  and one measured on less than MIN_COVERAGE of it is "not enough data" (`enough_data`);
- incidents: every run of DOWN (and, separately, DEGRADED) steps, with start, end, duration,
  whether it was planned, and its cause;
- MTBF = up time / unplanned failures, MTTR = unplanned down time / unplanned failures.

State rules per kind of system are the `*_states` functions; they take arrays of per-step
aggregates (NaN where a step holds no good sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dcim.analytics.anomaly_base import runs
from dcim.analytics.redundancy import meets_design

UP, DEGRADED, DOWN, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("up", "degraded", "down", "unknown")
NS = 1_000_000_000
# What a reading means, shared by the live analysis (dcim/analysis.py), the dashboard and reports
TRIPPED = 3.0  # unit_status at or above: tripped / faulted
FEED_DEAD_KW = 0.05  # a rack feed reading less carries no load
UTILITY_LOST_KW = 1.0  # a utility meter reading less: the feed is lost
MIN_COVERAGE = 0.9  # a known state over less of the period: too little for a figure

Codes = NDArray[np.int8]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def unit_states(status_max: FloatArray) -> Codes:
    """A unit from its status word (the worst per step): tripped is down, anything else up."""
    out = np.where(status_max >= TRIPPED, DOWN, UP).astype(np.int8)
    out[~np.isfinite(status_max)] = UNKNOWN
    return out


def rack_states(feed_a_kw: FloatArray, feed_b_kw: FloatArray,
                dead_kw: float = FEED_DEAD_KW) -> Codes:
    """A dual-corded rack from the most each feed carried per step: both dead is down, one
    dead is degraded (on one feed), both live is up; one live and one unknown is up."""
    a_known, b_known = np.isfinite(feed_a_kw), np.isfinite(feed_b_kw)
    a_live = a_known & (np.nan_to_num(feed_a_kw, nan=0.0) >= dead_kw)
    b_live = b_known & (np.nan_to_num(feed_b_kw, nan=0.0) >= dead_kw)
    a_dead, b_dead = a_known & ~a_live, b_known & ~b_live
    out = np.full(feed_a_kw.shape, UNKNOWN, dtype=np.int8)
    out[a_live | b_live] = UP
    out[(a_live & b_dead) | (b_live & a_dead)] = DEGRADED
    out[a_dead & b_dead] = DOWN
    return out


def single_feed_states(feed_kw: FloatArray, dead_kw: float = FEED_DEAD_KW) -> Codes:
    """A single-corded rack: its feed dead is down."""
    out = np.where(np.nan_to_num(feed_kw, nan=0.0) >= dead_kw, UP, DOWN).astype(np.int8)
    out[~np.isfinite(feed_kw)] = UNKNOWN
    return out


def group_states(available: FloatArray, needed: FloatArray, design: str) -> Codes:
    """A redundancy group from its stored available and needed units: below N is down,
    below the design level (no spare left) degraded."""
    known = np.isfinite(available) & np.isfinite(needed)
    out = np.full(available.shape, UNKNOWN, dtype=np.int8)
    have = available[known].astype(np.int64)
    need = needed[known].astype(np.int64)
    # a year of steps holds a handful of (have, need) pairs: judge each pair once
    pairs, inverse = np.unique(have * 65536 + need, return_inverse=True)
    verdict = np.array([DOWN if h < n else UP if meets_design(design, int(n), int(h))
                        else DEGRADED for h, n in zip(pairs // 65536, pairs % 65536)],
                       dtype=np.int8)
    if verdict.size:
        out[known] = verdict[inverse.ravel()]
    return out


def flag_states(flag: FloatArray) -> Codes:
    """A yes/no property (concurrently maintainable): no is degraded, never down."""
    out = np.where(flag >= 0.5, UP, DEGRADED).astype(np.int8)
    out[~np.isfinite(flag)] = UNKNOWN
    return out


def worst(*codes: Codes) -> Codes:
    """The worst known state per step (unknown only where every input is unknown)."""
    stack = np.vstack(codes)
    known = np.where(stack == UNKNOWN, -1, stack)
    best = known.max(axis=0)
    return np.where(best < 0, UNKNOWN, best).astype(np.int8)


def planned_mask(times_ns: NDArray[np.int64], step_ns: int,
                 windows: Sequence[tuple[int, int]]) -> BoolArray:
    """Steps that overlap a planned maintenance window [start, end)."""
    mask = np.zeros(times_ns.shape, dtype=bool)
    for start, end in windows:
        mask |= (times_ns < end) & (times_ns + step_ns > start)
    return mask


@dataclass(frozen=True, slots=True)
class Incident:
    """One run of down (or degraded) steps of one system."""

    system: str
    state: str  # "down" or "degraded"
    start_ns: int
    end_ns: int  # exclusive: the end of the last step
    planned: bool  # every step of it lies in a planned window
    cause: str

    @property
    def duration_s(self) -> float:
        """How long it lasted (a multiple of the step)."""
        return (self.end_ns - self.start_ns) / NS


@dataclass(frozen=True, slots=True)
class SystemAvailability:
    """What one system did over the period."""

    system: str
    kind: str
    start_ns: int
    end_ns: int
    step_s: float
    up_s: float
    degraded_s: float
    down_planned_s: float
    down_unplanned_s: float
    unknown_s: float
    incidents: tuple[Incident, ...]

    @property
    def known_s(self) -> float:
        """Time with a known state."""
        return self.up_s + self.degraded_s + self.down_planned_s + self.down_unplanned_s

    @property
    def coverage(self) -> float:
        """Share of the period with a known state."""
        period = (self.end_ns - self.start_ns) / NS
        return self.known_s / period if period > 0 else 0.0

    @property
    def enough_data(self) -> bool:
        """Whether the known time covers enough of the period (MIN_COVERAGE) for a figure."""
        return self.coverage >= MIN_COVERAGE - 1e-12

    @property
    def deficit(self) -> bool:
        """Whether it was ever down or degraded in the period (a real shortfall to rank)."""
        return self.down_planned_s + self.down_unplanned_s + self.degraded_s > 0

    @property
    def availability(self) -> float | None:
        """Serving time / known time, every downtime counted (None without data)."""
        return (self.up_s + self.degraded_s) / self.known_s if self.known_s > 0 else None

    @property
    def availability_unplanned(self) -> float | None:
        """Serving time / known time with planned downtime left out."""
        known = self.known_s - self.down_planned_s
        return (self.up_s + self.degraded_s) / known if known > 0 else None

    @property
    def failures(self) -> int:
        """Unplanned down incidents."""
        return sum(1 for i in self.incidents if i.state == "down" and not i.planned)

    @property
    def mtbf_s(self) -> float | None:
        """Mean time between unplanned failures (serving time / failures)."""
        return (self.up_s + self.degraded_s) / self.failures if self.failures else None

    @property
    def mttr_s(self) -> float | None:
        """Mean time to restore after an unplanned failure."""
        return self.down_unplanned_s / self.failures if self.failures else None


def summarize(system: str, kind: str, times_ns: NDArray[np.int64], step_s: float,
              codes: Codes, *, planned: BoolArray | None = None,
              cause_down: str = "down", cause_degraded: str = "degraded",
              start_ns: int | None = None, end_ns: int | None = None) -> SystemAvailability:
    """Times per state and the incidents of one system's state row (steps clipped to
    [start_ns, end_ns) when the period does not fall on step boundaries)."""
    step_ns = int(step_s * NS)
    planned = planned if planned is not None else np.zeros(codes.shape, dtype=bool)
    start = start_ns if start_ns is not None else (int(times_ns[0]) if times_ns.size else 0)
    end = end_ns if end_ns is not None else (int(times_ns[-1]) + step_ns if times_ns.size
                                             else start)
    # the last step may be partial: weigh every step by its length inside the period (a
    # year is half a million steps: one pass per figure, the edges worked out alone)
    per_state = np.array([np.count_nonzero(codes == k) for k in range(4)],
                         dtype=np.int64) * step_ns
    edge = np.flatnonzero((times_ns < start) | (times_ns + step_ns > end)) if times_ns.size \
        else np.empty(0, dtype=np.intp)
    short = step_ns - np.maximum(np.minimum(times_ns[edge] + step_ns, end)
                                 - np.maximum(times_ns[edge], start), 0)
    np.subtract.at(per_state, codes[edge].astype(np.intp), short)
    down = codes == DOWN
    down_planned_ns = 0
    if planned.any():
        lengths = np.full(codes.shape, step_ns, dtype=np.int64)
        lengths[edge] -= short
        down_planned_ns = int(lengths[down & planned].sum())
    incidents: list[Incident] = []
    for state, cause in (("down", cause_down), ("degraded", cause_degraded)):
        mask = down if state == "down" else codes == DEGRADED
        for a, b in runs(mask):
            incidents.append(Incident(
                system=system, state=state, start_ns=max(int(times_ns[a]), start),
                end_ns=min(int(times_ns[b]) + step_ns, end),
                planned=bool(planned[a:b + 1].all()), cause=cause))
    incidents.sort(key=lambda i: (i.start_ns, i.state))
    return SystemAvailability(
        system=system, kind=kind, start_ns=start, end_ns=end, step_s=step_s,
        up_s=int(per_state[UP]) / NS, degraded_s=int(per_state[DEGRADED]) / NS,
        down_planned_s=down_planned_ns / NS,
        down_unplanned_s=(int(per_state[DOWN]) - down_planned_ns) / NS,
        unknown_s=int(per_state[UNKNOWN]) / NS,
        incidents=tuple(incidents))


def combined(name: str, kind: str, parts: Sequence[SystemAvailability]) -> SystemAvailability:
    """Many systems as one (the IT load of every rack): times add up, incidents are kept."""
    if not parts:
        raise ValueError("combined() needs at least one system")
    first = parts[0]
    return SystemAvailability(
        system=name, kind=kind, start_ns=first.start_ns, end_ns=first.end_ns,
        step_s=first.step_s, up_s=sum(p.up_s for p in parts) / len(parts),
        degraded_s=sum(p.degraded_s for p in parts) / len(parts),
        down_planned_s=sum(p.down_planned_s for p in parts) / len(parts),
        down_unplanned_s=sum(p.down_unplanned_s for p in parts) / len(parts),
        unknown_s=sum(p.unknown_s for p in parts) / len(parts),
        incidents=tuple(sorted((i for p in parts for i in p.incidents),
                               key=lambda i: (i.start_ns, i.system))))
