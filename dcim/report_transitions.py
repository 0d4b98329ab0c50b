"""Availability states from the transitions the live state recorded, not from every sample.

The live state (dcim/live/service.py) writes a sample of `transition/<unit>/state` each time a
unit's state changes (up 1, down 0, unknown -1), `transition/<rack>/feeds` each time one
of a rack's feeds changes (its monitor's feed readings as a bit mask: bit 0 / 1 feed a / b
live, bit 2 / 3 feed a / b dead, neither without a good reading),
`transition/<group>/meets_design` and `transition/<site>/concurrently_maintainable` each time a
verdict changes (1 held, 0 not), every one of them again each hour, and its derived series
every `analytics_interval_s`, among them `analytics/<site>/units_down`. That
last one is the heartbeat: where it is stored, the live state was running, so a unit without a
new transition kept its state. A year of one site is a few thousand transitions and 525,600
heartbeats instead of some 250 million per-minute aggregates.

The states are put on the report's step grid the way the per-step aggregates would put them
(`paint`): a status word counts a step down when the unit was down during any part of it (the
MAX of the status word), a meter or a rack feed counts it live when the feed was live during
any part of it (the MAX of the power). A rack's own feeds (`rack_feed_states`) are painted one
feed at a time and judged by the rule the samples are (`rack_states`), so a rack that loses one
of its own feeds while its PDU still serves the other racks is on one feed in both. On a
history sampled on the step grid both give the same codes; otherwise they differ by at most
one step at each end of an incident.

A system speaks through its transitions only over the steps the heartbeat covers and after its
first recorded transition (`Recorded.mask`); everywhere else the report reads the samples.
Since every state is restated hourly, `read_recorded` reads each transition series from an hour
and ten minutes before the report (from the beginning only for a series with nothing there).

Where neither the live state's verdicts nor the analytics' stored group levels exist (a
backfill, history from before), `derive_redundancy` works the groups' levels and Tier III out
from which units were down, at the design load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dcim.analytics.anomaly_base import runs
from dcim.analytics.availability import (DEGRADED, DOWN, UNKNOWN, UP, BoolArray, Codes,
                                         rack_states, single_feed_states)
from dcim.live.service import FEED_SIDES, FEEDS, RESTATE_EVERY_S, TRANSITIONS
from dcim.site import Site
from dcim.storage.base import SeriesKey, Storage

NS = 1_000_000_000
HEARTBEAT = ("analytics", "units_down")  # stored by the live state every analytics interval
HEARTBEAT_GAP = 2.5  # a gap longer than this many usual intervals: the live state was not running
# ... or longer than this at all: a live state rebuilt less often (a coarse backfill) records
# transitions too late to put them on a 1-minute grid, so its history is read from the samples
HEARTBEAT_MAX_GAP_NS = 150 * NS  # 2.5 x the default analytics_interval_s (60 s)
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
    racks: dict[tuple[str, ...], Codes] = field(default_factory=dict, repr=False)  # per PDUs
    # per distinct painting of a rack's own feeds: most racks never lose one and share it
    # (a year of 200 racks painted one by one: 5.6 s)
    rack_feeds: dict[bytes, Codes] = field(default_factory=dict, repr=False)

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
        t0 = int(self.times_ns[0]) if self.times_ns.size else 0
        first = min(max((int(times[0]) - t0) // self.step_ns, 0), self.times_ns.size)
        out = self.covered.copy()
        out[:first] = False
        return out

    def codes(self, key: SeriesKey, order: Sequence[int], *, held: int = UP,
              not_held: int = DOWN) -> Codes:
        """Per-step codes of one series (a unit state, or a verdict as held / not_held)."""
        times, values = self.changes.get(key, (np.empty(0, dtype=np.int64), np.empty(0)))
        if key.point == "state":
            codes = np.array([STATE_CODES.get(float(v), UNKNOWN) for v in values], dtype=np.int8)
        else:
            codes = np.where(values >= 0.5, held, not_held).astype(np.int8)
        out = paint(self.times_ns, self.step_ns, times, codes, order)
        out[~self.covered] = UNKNOWN
        return out

    def feed_codes(self, key: SeriesKey, side: int) -> Codes:
        """Per-step codes of one feed of a rack's recorded feeds (`transition/<rack>/feeds`):
        UP live, DOWN dead, UNKNOWN without a reading; live for every step it was live in part."""
        times, values = self.changes.get(key, (np.empty(0, dtype=np.int64), np.empty(0)))
        mask = values.astype(np.int64)
        codes = np.where((mask >> side) & 1, UP,
                         np.where((mask >> (side + len(FEED_SIDES))) & 1, DOWN, UNKNOWN))
        out = paint(self.times_ns, self.step_ns, times, codes.astype(np.int8), LIVE_FIRST)
        out[~self.covered] = UNKNOWN
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
    longer than HEARTBEAT_GAP usual intervals or HEARTBEAT_MAX_GAP_NS (it was stopped, or
    rebuilt too seldom to trust its transitions); the last one covers its step."""
    n = times_ns.size
    if n == 0 or beats.size == 0:
        return np.zeros(n, dtype=bool)
    gaps = np.diff(beats)
    usual = float(np.median(gaps)) if gaps.size else float(step_ns)
    running = gaps <= min(HEARTBEAT_GAP * usual, HEARTBEAT_MAX_GAP_NS)
    ends = np.append(np.where(running, beats[1:], beats[:-1] + 1),
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
    """The heartbeat over the period and the transitions of `keys` that give their states over
    it: those from RESTATE_EVERY_S (and a margin) before its start to its end, since the live
    state writes every state again that often, so one there gives the state at the start.

    A series with none from that window's start up to the period's start (history written
    before the live state restated, or by a live state stopped since) is read from time 0 for
    its last transition before the window: its state is carried from there, as every version
    before read it, and the heartbeat still decides where that state speaks. A live state
    running since that transition kept it (a restart writes every state again), so the
    figures do not depend on the window: it only spares reading years of restatements."""
    start = int(times_ns[0]) if times_ns.size else end_ns
    beat_key = SeriesKey(HEARTBEAT[0], site_id, HEARTBEAT[1])
    # a heartbeat just before the period covers its first step
    beats = await _heartbeat(storage, beat_key, start - step_ns - 3600 * NS, end_ns)
    covered = coverage(times_ns, step_ns, beats)
    recorded = Recorded(times_ns, step_ns, covered,
                        heartbeats=int(((beats >= start) & (beats < end_ns)).sum()))
    if not recorded.any:
        return recorded
    # the restatement waits for the next build after the hour: a few builds late at most
    since = start - int(RESTATE_EVERY_S * NS) - 10 * 60 * NS
    for key in keys:
        rows = await storage.read_range(key, since, end_ns, good_only=True)
        if not rows or rows[0].time_ns > start:  # no state in force at the start in the window
            rows = (await storage.read_range(key, 0, since, good_only=True))[-1:] + rows
        if rows:
            recorded.changes[key] = (np.array([r.time_ns for r in rows], dtype=np.int64),
                                     np.array([r.value for r in rows], dtype=float))
    return recorded


class DerivedRedundancy:
    """Group levels and Tier III per step, worked out from the units' states: one analysis per
    distinct set of units down, run only for the steps asked for, arrays made on demand."""

    def __init__(self, site: Site, steps: int,
                 spans: Sequence[tuple[int, int, tuple[str, ...]]]) -> None:
        self.site, self.steps, self.spans = site, steps, spans
        self._reports: dict[tuple[str, ...], Any] = {}
        self._topo: Any = None

    @property
    def distinct_states(self) -> int:
        """Analyses run so far (one per distinct set of units down)."""
        return len(self._reports)

    def _report(self, down: tuple[str, ...]) -> Any:
        from dcim.analytics.redundancy import analyse
        from dcim.analytics.topology import compile_topology

        if down not in self._reports:
            if self._topo is None:
                self._topo = compile_topology(self.site)
            self._reports[down] = analyse(self._topo, {u: False for u in down},
                                          on_generators=False)
        return self._reports[down]

    def _wanted(self, where: BoolArray | None) -> list[tuple[int, int, Any]]:
        return [(a, b, self._report(down)) for a, b, down in self.spans
                if where is None or where[a:b].any()]

    def group(self, gid: str, where: BoolArray | None = None
              ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        """(available, needed) per step of one group over the spans touching `where`, NaN
        elsewhere and where no unit state is known; None for a group the site lacks."""
        if gid not in {g.id for g in self.site.config.redundancy_groups}:
            return None
        avail, need = np.full(self.steps, np.nan), np.full(self.steps, np.nan)
        for a, b, report in self._wanted(where):
            for g in report.groups:
                if g.id == gid:
                    avail[a:b], need[a:b] = g.available, g.needed
        return avail, need

    def concurrently_maintainable(self, where: BoolArray | None = None) -> NDArray[np.float64]:
        """1.0 / 0.0 per step over the spans touching `where`, NaN elsewhere."""
        cm = np.full(self.steps, np.nan)
        for a, b, report in self._wanted(where):
            cm[a:b] = 1.0 if report.concurrently_maintainable else 0.0
        return cm


def derive_redundancy(site: Site, unit_codes: dict[str, Codes],
                      steps: int) -> DerivedRedundancy:
    """Redundancy per step from which units were down, at the design load: the analysis runs
    once per distinct set of down units (a week holds a handful), not once per step, and only
    when a step that needs it is asked for."""
    ids = sorted(unit_codes)
    if not ids or steps == 0:
        return DerivedRedundancy(site, steps, [])
    known = np.zeros(steps, dtype=bool)
    cuts = [np.zeros(1, dtype=np.int64)]
    for uid in ids:  # a unit at a time: memory stays one row, not units x steps
        codes = unit_codes[uid]
        known |= codes != UNKNOWN
        down = codes == DOWN
        cuts.append(np.flatnonzero(down[1:] != down[:-1]) + 1)
    cuts.append(np.flatnonzero(known[1:] != known[:-1]) + 1)
    starts = np.unique(np.concatenate(cuts))
    ends = np.r_[starts[1:], steps]
    spans = [(a, b, tuple(uid for uid in ids if unit_codes[uid][a] == DOWN))
             for a, b in zip(starts.tolist(), ends.tolist()) if known[a]]
    return DerivedRedundancy(site, steps, spans)


def rack_feed_states(recorded: Recorded, rack: str, *, single_corded: bool = False) -> Codes:
    """A rack's codes from its own recorded feeds, by the rule its feed readings are judged by
    (`rack_states`; a single-corded rack's: `single_feed_states` of feed a). They speak where
    `recorded.mask(transition_key(rack, FEEDS))` holds; racks whose feeds paint alike share
    one array: read-only."""
    key = transition_key(rack, FEEDS)
    times, values = recorded.changes.get(key, (np.empty(0, dtype=np.int64), np.empty(0)))
    # what `paint` sees, not the nanoseconds: the step each value starts in and the step the
    # one before it ends in (a restated, unchanged value left out: it paints nothing new)
    new = np.r_[True, values[1:] != values[:-1]] if values.size else np.zeros(0, dtype=bool)
    t0, n = (int(recorded.times_ns[0]) if recorded.times_ns.size else 0), recorded.times_ns.size
    at = times[new] - t0
    steps = np.clip(np.r_[at // recorded.step_ns, -(-at[1:] // recorded.step_ns)], 0, n)
    digest = hashlib.blake2b(steps.tobytes() + values[new].tobytes() + bytes([single_corded]),
                             digest_size=16).digest()
    memo = recorded.rack_feeds.get(digest)
    if memo is None:
        kw = [feed_kw(recorded.feed_codes(key, i)) for i in range(len(FEED_SIDES))]
        memo = single_feed_states(kw[0]) if single_corded else rack_states(kw[0], kw[1])
        memo.flags.writeable = False
        recorded.rack_feeds[digest] = memo
    return memo


def feed_kw(codes: Codes) -> NDArray[np.float64]:
    """Recorded feed codes as a feed reading, the MAX of its power: live 1 kW, dead 0, unknown
    NaN (what `rack_states` judges)."""
    return np.where(codes == UP, 1.0, np.where(codes == DOWN, 0.0, np.nan))


def transition_key(subject: str, what: str = "state") -> SeriesKey:
    """The series the live state writes a subject's transitions to."""
    return SeriesKey(TRANSITIONS, subject, what)


__all__ = ["FEEDS", "LIVE_FIRST", "WORST_FIRST", "DerivedRedundancy", "Recorded", "coverage",
           "derive_redundancy", "feed_kw", "paint", "rack_feed_states", "read_recorded", "transition_key",
           "windows"]
