"""The running live state: taps the collectors' samples, rebuilds the snapshot after each cycle.

`LiveState` sits between the collectors and the durable store-and-forward: every `add` keeps
the newest value of each series in memory, hands the samples on unchanged, and schedules a
rebuild. Rebuilds are coalesced (at most one per `min_interval_s`), so a burst of cycles
ending together costs one build. Readers wait on `version` or read `current()`; nobody waits
on storage. What the state derives (live PUE, redundancy, unit transitions, each rack's live
feeds) goes back into the same sink as samples, so it is buffered durably like everything else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from dcim.analytics.availability import FEED_DEAD_KW
from dcim.analytics.pue import SiteFigures, periods, site_figures
from dcim.analytics.redundancy import RedundancyReport
from dcim.collectors.base import DeviceHealth, SampleSink
from dcim.live.build import LivePlan, build_state, plan, transitions
from dcim.live.source import Version
from dcim.live.state import Collection, SiteState, Transition
from dcim.site import Site
from dcim.storage.base import Quality, Sample, SampleColumns, SeriesKey, Storage
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)

NS = 1_000_000_000
MEASUREMENT = "analytics"  # derived series, device = the site id
TRANSITIONS = "transition"  # one series per (unit or group, what); value code, see below
STATE_CODE = {"up": 1.0, "down": 0.0, "unknown": -1.0}
# a rack's feeds (`transition/<rack>/feeds`, rack_monitor feed_<side>_power_kw): a bit mask,
# bit i when feed i is live, bit i + len(FEED_SIDES) when it is dead, neither without a good
# reading. Not a count of live feeds: the report paints each feed on its own (live for any
# step it was live in part, the MAX of its power) and tells one feed dead (degraded) from one
# feed unknown (up) and both dead (down) from no reading (unknown), as it does from samples
FEED_SIDES = ("a", "b")
FEEDS = "feeds"
LIVE_WINDOW_NS = 15 * 60 * NS
ENERGY_KEEP_NS = LIVE_WINDOW_NS + 10 * 60 * NS  # a little before the window: edge interpolation
PUE_EVERY_S = 5.0  # live PUE over 15 min moves slowly: recomputed at most this often
REDUNDANCY_EVERY_S = 5.0  # with the same down set, loads only move N slowly
# every unit state and verdict is stored again this often, changed or not: a report reading
# the transitions then never carries a state further than this past a sample it missed
RESTATE_EVERY_S = 3600.0


class LiveState:
    """The site's live state, fed by the collectors (a SampleSink in front of the real sink).

    `health` gives the collectors' device health; without it (a backfill, a replay, a test of
    values alone) every value is taken as live."""

    def __init__(self, site: Site, sink: SampleSink | None, *,
                 health: Callable[[], Mapping[str, DeviceHealth]] | None = None,
                 collection: Callable[[], Collection] = Collection,
                 analytics: Callable[[], tuple[SiteFigures | None, Sequence[Any]]] | None = None,
                 history: Storage | None = None, min_interval_s: float = 0.2,
                 store_every_s: float = 60.0, pue_every_s: float = PUE_EVERY_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.plan: LivePlan = plan(site)
        self._sink = sink
        self._health = health
        self._collection = collection
        self._analytics = analytics
        self._history = history
        self.min_interval_s = min_interval_s
        self.store_every_s = store_every_s
        self.pue_every_s = pue_every_s
        self._clock = clock
        self._raw: dict[SeriesKey, tuple[int, float, Quality]] = {}
        self._energy: dict[SeriesKey, deque[tuple[int, float, int]]] = {
            k: deque() for k in self.plan.energy_keys}
        self._pue: tuple[float, SiteFigures | None] = (-math.inf, None)
        self._redundancy: tuple[float, frozenset[str], RedundancyReport] | None = None
        self._stored_at = -math.inf
        self._restated_at = -math.inf
        self.version = Version()
        self._state = build_state(self.plan, {}, None if health is None else {}, seq=0,
                                  now_ns=int(clock() * NS))
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seeder: asyncio.Task[None] | None = None
        self._begin = getattr(sink, "begin_cycle", None)
        self.builds = 0
        self.build_s = 0.0  # time spent building, for the metrics
        self.transitions: deque[Transition] = deque(maxlen=1000)  # the newest, for readers
        self._feeds: dict[str, str] | None = None  # each rack's feeds at the last build

    # -- the sink side -----------------------------------------------------------------------

    def begin_cycle(self, tag: str, expected: int) -> None:
        """Passed on to the sink (the durable buffer marks the cycle)."""
        if self._begin is not None:
            self._begin(tag, expected)

    def add(self, samples: Sample | Iterable[Sample], *, cycle: str | None = None) -> None:
        """Keep the newest value of each series, hand the samples on, schedule a rebuild."""
        cols = SampleColumns.of([samples] if isinstance(samples, Sample) else samples)
        self._raw.update(zip(cols.keys, zip(cols.times, cols.values, cols.qualities)))
        if self._sink is not None:
            if cycle is not None:
                self._sink.add(cols, cycle=cycle)  # type: ignore[call-arg]
            else:
                self._sink.add(cols)
        self._dirty.set()

    def note(self, samples: Sample | Iterable[Sample]) -> None:
        """Newest values for the live state only, not for storage: an OPC UA data change seen
        between two sampling boundaries (the boundary sample is what gets stored)."""
        cols = SampleColumns.of([samples] if isinstance(samples, Sample) else samples)
        self._raw.update(zip(cols.keys, zip(cols.times, cols.values, cols.qualities)))
        self._dirty.set()

    # -- readers -----------------------------------------------------------------------------

    def current(self) -> SiteState:
        """The newest snapshot."""
        return self._state

    def value(self, key: SeriesKey) -> Sample | None:
        """The newest sample of any collected series (not only those the state reads)."""
        raw = self._raw.get(key)
        return None if raw is None else Sample(key, raw[0], raw[1], raw[2])

    # -- building ----------------------------------------------------------------------------

    def _values(self) -> dict[SeriesKey, Sample]:
        get = self._raw.get
        return {k: Sample(k, *v) for k in self.plan.keys if (v := get(k)) is not None}

    def _note_energy(self, values: Mapping[SeriesKey, Sample], now_ns: int) -> None:
        for key, ring in self._energy.items():
            s = values.get(key)
            if s is not None and (not ring or ring[-1][0] < s.time_ns):
                ring.append((s.time_ns, s.value, int(s.quality)))
            while ring and ring[0][0] < now_ns - ENERGY_KEEP_NS:
                ring.popleft()

    def _pue_live(self, now_ns: int) -> SiteFigures | None:
        now_s = now_ns / NS
        if now_s - self._pue[0] < self.pue_every_s or self.plan.meters is None:
            return self._pue[1]
        data = {k: (np.array([r[0] for r in ring], dtype=np.int64),
                    np.array([r[1] for r in ring], dtype=float),
                    np.array([r[2] for r in ring], dtype=np.int64))
                for k, ring in self._energy.items()}
        window = periods("live", now_ns, self.plan.timezone)
        try:
            figures = site_figures(self.site, data, window.start_ns, window.end_ns,
                                   meters=self.plan.meters)
        except (ValueError, ArithmeticError) as exc:
            log.warning("live PUE could not be computed", extra={"error": str(exc)})
            figures = None
        self._pue = (now_s, figures)
        return figures

    def rebuild(self, now_ns: int | None = None) -> SiteState:
        """Build a new snapshot now (synchronous; the background task calls this)."""
        started = time.perf_counter()
        now_ns = now_ns if now_ns is not None else int(self._clock() * NS)
        values = self._values()
        self._note_energy(values, now_ns)
        health = None if self._health is None else \
            {d: replace(h) for d, h in self._health().items()}
        today, anomalies = self._analytics() if self._analytics is not None else (None, ())
        cached = None
        if self._redundancy is not None and now_ns / NS - self._redundancy[0] < REDUNDANCY_EVERY_S:
            cached = (self._redundancy[1], self._redundancy[2])
        before = self._state
        state = build_state(self.plan, values, health, seq=before.seq + 1, now_ns=now_ns,
                            collection=self._collection(), pue_live=self._pue_live(now_ns),
                            pue_today=today, anomalies=anomalies, redundancy_for=cached)
        if state.redundancy is not None and (cached is None or cached[1] is not state.redundancy):
            self._redundancy = (now_ns / NS, state.down, state.redundancy)
        changes = transitions(before if before.seq > 0 else None, state)
        feeds = rack_feeds(self.plan, state.values)
        changes += feed_transitions(self._feeds, feeds, now_ns)
        self._feeds = feeds
        self._state = state
        self.transitions.extend(changes)
        self._store(state, changes, now_ns)
        self.builds += 1
        self.build_s += time.perf_counter() - started
        self.version.bump()
        for t in changes:
            log.log(transition_level(t), "%s %s: %s -> %s", t.subject, t.what, t.before,
                    t.after, extra={"subject": t.subject, "what": t.what, "before": t.before,
                                    "after": t.after, "why": t.why})
        return state

    def _store(self, state: SiteState, changes: Sequence[Transition], now_ns: int) -> None:
        """Transitions at once (and every state again each RESTATE_EVERY_S), the derived
        series every store_every_s, into the sink."""
        if self._sink is None:
            return
        if now_ns / NS - self._restated_at >= RESTATE_EVERY_S:
            if self._restated_at > -math.inf:  # the first snapshot's changes are every state
                changed = {(t.subject, t.what) for t in changes}
                every = [*transitions(None, state),
                         *feed_transitions(None, self._feeds or {}, state.time_ns)]
                changes = [*changes, *(t for t in every if (t.subject, t.what) not in changed)]
            self._restated_at = now_ns / NS
        out = [Sample(SeriesKey(TRANSITIONS, t.subject, t.what), t.time_ns, transition_code(t))
               for t in changes]
        if now_ns / NS - self._stored_at >= self.store_every_s:
            self._stored_at = now_ns / NS
            out += derived_samples(state, now_ns)
        if out:
            self._sink.add(out)

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the first snapshot and rebuild on every change from now on; the live PUE
        window is seeded from history (if a store was given) in the background."""
        self.rebuild()
        self._task = asyncio.create_task(self._run(), name="dcim-live-state")
        if self._history is not None and self.plan.energy_keys:
            self._seeder = asyncio.create_task(self._seed(self._history), name="dcim-live-seed")

    async def _seed(self, storage: Storage, timeout_s: float = 60.0) -> None:
        """The energy counters of the last minutes from the store, merged under what the
        collectors brought meanwhile: PUE is live from the start instead of after 15 minutes.
        Best effort: a slow or failing store only delays live PUE, it never blocks anything."""
        end_ns = int(self._clock() * NS)
        try:
            async with asyncio.timeout(timeout_s):
                for key in self.plan.energy_keys:
                    rows = await storage.read_range(key, end_ns - ENERGY_KEEP_NS, end_ns + 1)
                    ring = self._energy[key]
                    first = ring[0][0] if ring else end_ns + 1
                    older = [(r.time_ns, r.value, int(r.quality)) for r in rows
                             if r.time_ns < first and math.isfinite(r.value)]
                    ring.extendleft(reversed(older))
            self._pue = (-math.inf, self._pue[1])  # recompute at the next build
            self.poke()
        except Exception as exc:  # the live path never waits on storage
            log.info("live PUE starts without history", extra={
                "error": f"{type(exc).__name__}: {exc}"})

    async def _run(self) -> None:
        last_error = ""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                self.rebuild()
                last_error = ""
            except Exception as exc:  # one bad build must not stop the live state
                error = f"{type(exc).__name__}: {exc}"
                if error != last_error:
                    log.exception("live state build failed")
                last_error = error
            await asyncio.sleep(self.min_interval_s)

    def poke(self) -> None:
        """Ask for a rebuild without new samples (health or the store changed)."""
        self._dirty.set()

    async def close(self) -> None:
        """Stop rebuilding; the last snapshot stays readable."""
        await cancel_task(self._seeder)
        await cancel_task(self._task)
        self._task = self._seeder = None


def transition_level(t: Transition) -> int:
    """How loud a transition is logged: a unit going down, a rack feed going dead or a verdict
    lost is a WARNING, their return INFO; units or feeds becoming known or unknown are DEBUG
    (comm loss logs itself)."""
    if t.before is None:
        return logging.DEBUG
    if t.what == FEEDS:
        dead = [sum(1 for part in text.split(", ") if part.endswith(" dead"))
                for text in (t.before, t.after)]
        return logging.WARNING if dead[1] > dead[0] else \
            logging.INFO if dead[1] < dead[0] else logging.DEBUG
    if t.what == "state":
        if t.after == "down":
            return logging.WARNING
        return logging.INFO if t.before == "down" else logging.DEBUG
    return logging.INFO if transition_code(t) else logging.WARNING


def transition_code(t: Transition) -> float:
    """A transition as a stored value: unit state up 1, down 0, unknown -1; a rack's feeds as
    their bit mask (FEED_SIDES); verdicts 1 when held."""
    if t.what == "state":
        return STATE_CODE[t.after]
    if t.what == FEEDS:
        code = 0
        for part in t.after.split(", "):
            side, word = part.split(" ")
            i = FEED_SIDES.index(side)
            code |= (1 << i if word == "live" else 0) | \
                (1 << (i + len(FEED_SIDES)) if word == "dead" else 0)
        return float(code)
    return 1.0 if t.after == "true" or t.after.startswith("meets") else 0.0


def rack_feeds(p: LivePlan, values: Mapping[SeriesKey, Sample]) -> dict[str, str]:
    """Each monitored rack's feeds as the live values show them ("a live, b dead"): live from
    FEED_DEAD_KW up, dead below, unknown without a good reading (as the report reads them)."""
    out: dict[str, str] = {}
    for r in p.racks:
        parts = []
        for _, key in r.feeds:  # the rack monitor's feed_<side>_power_kw
            s = values.get(key)
            side = key.point.removeprefix("feed_").removesuffix("_power_kw")
            if s is None or s.quality is not Quality.GOOD or not math.isfinite(s.value):
                parts.append(f"{side} unknown")
            else:
                parts.append(f"{side} {'live' if s.value >= FEED_DEAD_KW else 'dead'}")
        if parts:
            out[r.id] = ", ".join(parts)
    return out


def feed_transitions(before: Mapping[str, str] | None, after: Mapping[str, str],
                     time_ns: int) -> list[Transition]:
    """Racks whose feeds changed between two builds (every rack when there is no before)."""
    old = before or {}
    return [Transition(time_ns, rack, FEEDS, old.get(rack), now)
            for rack, now in after.items() if before is None or old.get(rack) != now]


def derived_samples(state: SiteState, t: int) -> list[Sample]:
    """The stored analytics series of one snapshot (measurement `analytics`, device = site)."""
    out: list[Sample] = []

    def put(point: str, value: float | None) -> None:
        ok = value is not None and math.isfinite(value)
        out.append(Sample(SeriesKey(MEASUREMENT, state.site_id, point), t,
                          float(value) if ok else math.nan,  # type: ignore[arg-type]
                          Quality.GOOD if ok else Quality.BAD))

    live = state.pue_live
    if live is not None:
        put("pue_live", live.pue.value)
        put("pue_live_coverage", live.pue.coverage)
        put("ppue_cooling_live", live.ppue_cooling.value)
        put("ppue_distribution_live", live.ppue_distribution.value)
        put("dcie_live", live.dcie.value)
    put("it_kw_live", state.it_kw)
    put("facility_kw_live", state.facility_kw)
    report = state.redundancy
    if report is not None:
        for group in report.groups:
            put(f"redundancy_{group.id}_needed", group.needed)
            put(f"redundancy_{group.id}_available", group.available)
            put(f"redundancy_{group.id}_spare", group.available - group.needed)
        put("concurrently_maintainable", 1.0 if report.concurrently_maintainable else 0.0)
        put("fault_tolerant", 1.0 if report.fault_tolerant else 0.0)
        put("racks_on_one_feed", len(report.one_feed_racks))
        put("single_points_of_failure", len(report.single_points_of_failure))
    put("units_down", len(state.down))
    return out
