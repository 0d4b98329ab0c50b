"""Availability reports at audit scale: a week, a month and a year of the reference site at
1-minute resolution, from the live state's transitions, against the sample-based path.

Run: .venv/bin/python bench/reports.py [--days 365] [--rebuild] [--influxd]

The history is built once (not timed) and cached in var/bench/reports-v2/ (an embedded store;
v1 had neither the racks' feeds nor the hourly restatements). It holds what the report reads,
as the running system would have stored it:
- for the whole period, the live state's records, made by its own code (dcim/live: the
  snapshot's `transitions`, `rack_feeds`, `feed_transitions`, `transition_code`) from a
  snapshot per set of units down: its heartbeat `analytics/<site>/units_down` every minute
  (525,600 samples a year); the transitions of its 74 units (`transition/<unit>/state`), the
  11 redundancy groups' verdicts, Tier III and fault tolerance, and the 200 racks' feeds
  (`transition/<rack>/feeds`, a feed from a PDU down reads 0 kW); every one of them again each
  RESTATE_EVERY_S (a build a minute: on the hour), as the live state restates them, some 2.5
  million rows a year; with the group levels (`redundancy_<group>_available|needed`) stored
  for the minutes any verdict is lost (the report reads them there to tell below N from below
  design);
- for the first week only, every per-minute sample the sample-based path reads: the status
  words, the utility meters' power, both feeds of the 200 racks, the group levels and Tier III
  (466 series, 4.7 million samples). Writing that for a year (245 million) is out of reach here,
  so the sample path is timed on the week only.
Incidents: five a week at seeded random times (a UPS module trip of 25 min, a CRAH trip of
40 min, a PDU breaker open for 12 min, a chiller trip of 3 h, a utility feed lost for 8 min),
their targets rotating; the groups' verdicts and Tier III follow from the redundancy analysis
of the units down (analytics/redundancy.py, design load).

Timed: the report (`build_availability`) over the first week by both paths (and whether their
figures are equal), then the first month, the last month (after eleven months of
restatements: `read_recorded` reads a window of them) and the year by the transition path;
wall time, and peak memory from tracemalloc (Python objects and numpy arrays) in a second
run. With --influxd, the live state's records (not the first week's samples) also go into a
real influxd 1.x (Debian's, started here on 127.0.0.1, data kept in
var/bench/reports-v2/influxd/) and the transition path is timed against it too. Prints
figures only; docs/performance.md keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import numpy as np
from _common import REPO, machine, table  # noqa: I001  (puts the repo on sys.path)

from dcim.analytics.redundancy import analyse
from dcim.analytics.topology import compile_topology
from dcim.config.storage import EmbeddedStorageConfig, InfluxDB1StorageConfig
from dcim.live.build import build_state, plan, transitions
from dcim.live.service import (RESTATE_EVERY_S, TRANSITIONS, feed_transitions, rack_feeds,
                               transition_code)
from dcim.live.state import SiteState, Transition
from dcim.reports import AvailabilityReport, build_availability
from dcim.site import Site, load_site
from dcim.storage.base import Quality, Sample, SeriesKey, Storage
from dcim.storage.embedded import EmbeddedStorage
from dcim.storage.factory import open_storage

S = 1_000_000_000
M = 60 * S
T0 = 1_767_196_800 * S  # 2026-01-01 00:00 Hong Kong (UTC+8)
CACHE = REPO / "var" / "bench" / "reports-v2"  # v1: no rack feeds, no restatements
WEEK_MIN = 7 * 1440
RESTATE_MIN = int(RESTATE_EVERY_S // 60)  # the live state restates every state this often
RACK_FEED_KW = 2.5  # what a live rack feed reads
INCIDENTS = (("ups_module", 25), ("crah", 40), ("pdu", 12), ("chiller", 180),
             ("utility_feed", 8))  # (what, minutes), five a week


def targets(site: Site) -> dict[str, list[str]]:
    """The units each kind of incident rotates over."""
    every = [(c, comp.type) for c, comp in site.electrical.items()] + \
        [(c, comp.type) for c, comp in site.mechanical.items()]
    return {kind: sorted(c for c, t in every if t == kind) for kind, _ in INCIDENTS}


def schedule(site: Site, days: int, seed: int = 13) -> list[tuple[int, int, str]]:
    """(start minute, end minute, unit) of every incident, five a week at random times."""
    rng = np.random.default_rng(seed)
    units = targets(site)
    out = []
    for week in range(-(-days // 7)):
        for n, (kind, minutes) in enumerate(INCIDENTS):
            start = week * WEEK_MIN + int(rng.integers(0, WEEK_MIN - minutes))
            pool = units[kind]
            if start + minutes <= days * 1440:
                out.append((start, start + minutes, pool[(week + n) % len(pool)]))
    return sorted(out)


def timeline(site: Site, incidents: list[tuple[int, int, str]], days: int
             ) -> list[tuple[int, frozenset[str]]]:
    """(minute, units down from then on) at every change."""
    edges: dict[int, list[tuple[str, int]]] = {0: []}
    for a, b, unit in incidents:
        edges.setdefault(a, []).append((unit, 1))
        edges.setdefault(b, []).append((unit, -1))
    count: dict[str, int] = {}
    out = []
    for minute in sorted(edges):
        for unit, d in edges[minute]:
            count[unit] = count.get(unit, 0) + d
        if minute < days * 1440:
            out.append((minute, frozenset(u for u, c in count.items() if c > 0)))
    return out


class History:
    """Writes the bench's history into a store, in batches."""

    def __init__(self, store: Storage) -> None:
        self.store, self.written = store, 0
        self.batch: list[Sample] = []

    async def put(self, key: SeriesKey, minute: int, value: float) -> None:
        self.batch.append(Sample(key, T0 + minute * M, float(value), Quality.GOOD))
        if len(self.batch) >= 100_000:
            await self.flush()

    async def flush(self) -> None:
        await self.store.write(self.batch)
        self.written += len(self.batch)
        self.batch = []


class LiveRecords:
    """What the live state writes for a set of units down, by its own code (dcim/live): the
    transitions between two snapshots, and every state again each RESTATE_EVERY_S."""

    def __init__(self, site: Site) -> None:
        self.plan = plan(site)
        self.base = build_state(self.plan, {}, None, seq=0, now_ns=T0)
        self.states: dict[frozenset[str], tuple[SiteState, dict[str, str]]] = {}

    def state(self, down: frozenset[str], report: Any) -> tuple[SiteState, dict[str, str]]:
        """The snapshot with `down` down (the rest up) and each rack's feeds as its monitor
        reads them then (a feed from a PDU down reads 0 kW)."""
        if down not in self.states:
            units = {u: replace(s, state="down" if u in down else "up")
                     for u, s in self.base.units.items()}
            values = {key: Sample(key, T0, 0.0 if pdu in down else RACK_FEED_KW, Quality.GOOD)
                      for r in self.plan.racks for pdu, key in r.feeds}
            self.states[down] = (replace(self.base, units=units, redundancy=report),
                                 rack_feeds(self.plan, values))
        return self.states[down]

    @staticmethod
    def rows(changes: list[Transition]) -> list[tuple[SeriesKey, float]]:
        """Transitions as the live state stores them."""
        return [(SeriesKey(TRANSITIONS, t.subject, t.what), transition_code(t)) for t in changes]


async def build(site: Site, store: Storage, days: int, *,
                week_samples: bool = True) -> dict[str, Any]:
    """Write the history the report reads (see the module's docstring)."""
    started = time.perf_counter()
    topo = compile_topology(site)
    changes = timeline(site, schedule(site, days), days)
    reports: dict[frozenset[str], Any] = {}
    live = LiveRecords(site)
    restated: dict[frozenset[str], list[tuple[SeriesKey, float]]] = {}

    def analysis(down: frozenset[str]) -> Any:
        if down not in reports:
            reports[down] = analyse(topo, {u: False for u in down}, on_generators=False)
        return reports[down]

    out = History(store)
    beat = SeriesKey("analytics", site.id, "units_down")
    ends = [m for m, _ in changes[1:]] + [days * 1440]
    before: tuple[SiteState, dict[str, str]] | None = None
    for (minute, down), end in zip(changes, ends):
        report = analysis(down)
        state, feeds = live.state(down, report)
        if down not in restated:  # every state, as the live state restates them
            restated[down] = live.rows([*transitions(None, state),
                                        *feed_transitions(None, feeds, T0)])
        # the first snapshot writes every state, the later ones what changed
        changed = live.rows([*transitions(before[0] if before else None, state),
                             *feed_transitions(before[1] if before else None, feeds, T0)])
        for key, value in changed:
            await out.put(key, minute, value)
        written = {key for key, _ in changed}
        lost = not (all(g.meets_design for g in report.groups)
                    and report.concurrently_maintainable)
        for m in range(minute, end):  # heartbeat; group levels while a verdict is lost
            if m and m % RESTATE_MIN == 0:  # a build a minute: restated on the hour
                for key, value in restated[down]:
                    if m != minute or key not in written:
                        await out.put(key, m, value)
            await out.put(beat, m, len(down))
            if lost or m < WEEK_MIN:
                for g in report.groups:
                    await out.put(SeriesKey("analytics", site.id, f"redundancy_{g.id}_available"),
                                  m, g.available)
                    await out.put(SeriesKey("analytics", site.id, f"redundancy_{g.id}_needed"),
                                  m, g.needed)
                if m < WEEK_MIN:
                    await out.put(SeriesKey("analytics", site.id, "concurrently_maintainable"),
                                  m, float(report.concurrently_maintainable))
        before = (state, feeds)
    if week_samples:
        await _first_week_samples(site, out, changes)
    await out.flush()
    return {"samples": out.written, "incidents": len(schedule(site, days)),
            "build_s": time.perf_counter() - started}


async def _first_week_samples(site: Site, out: History,
                              changes: list[tuple[int, frozenset[str]]]) -> None:
    """Every per-minute sample the sample-based path reads, for the first week."""
    down_at = [frozenset[str]()] * WEEK_MIN
    for i, (minute, down) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else WEEK_MIN
        for m in range(minute, min(stop, WEEK_MIN)):
            down_at[m] = down
    for device in site.devices.values():
        points = {p.name for p in device.profile.points}
        comp = site.electrical.get(device.monitors)
        series = []
        if "unit_status" in points and (comp is not None or device.monitors in site.mechanical):
            series.append((device.series("unit_status"), 3.0, 0.0))
        if comp is not None and comp.type == "utility_feed" and "power_kw" in points:
            series.append((device.series("power_kw"), 0.0, 1500.0))
        for key, when_down, when_up in series:
            for m in range(WEEK_MIN):
                await out.put(key, m, when_down if device.monitors in down_at[m] else when_up)
    for rack in site.racks.values():
        for feed, pdu in (("a", rack.feed_a), ("b", rack.feed_b)):
            key = SeriesKey("rack_monitor", f"RM-{rack.id}", f"feed_{feed}_power_kw")
            for m in range(WEEK_MIN):
                await out.put(key, m, 0.0 if pdu in down_at[m] else RACK_FEED_KW)


def periods(days: int) -> list[tuple[str, tuple[int, int]]]:
    """The reports timed, (first day, end day): the last month reads a window of the
    transitions after eleven months of restatements, not all of them."""
    return [("week", (0, 7)), ("month", (0, 30)), ("last month", (days - 30, days)),
            ("year", (0, days))]


async def timed(run: Callable[[], Awaitable[AvailabilityReport]]
                ) -> tuple[float, float, AvailabilityReport]:
    """(wall seconds, peak MB from tracemalloc in a second run, the report)."""
    t = time.perf_counter()
    report = await run()
    wall = time.perf_counter() - t
    tracemalloc.start()
    await run()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return wall, peak, report


def same(a: AvailabilityReport, b: AvailabilityReport) -> bool:
    """Whether two reports give every system the same figures and incidents."""
    def rows(r: AvailabilityReport) -> list[tuple[object, ...]]:
        return [(x.system, x.up_s, x.degraded_s, x.down_planned_s, x.down_unplanned_s,
                 x.unknown_s, x.incidents) for s in r.sections for x in s.systems]
    return rows(a) == rows(b)


async def on_influxd(site: Site, days: int,
                     embedded_year: AvailabilityReport) -> list[list[object]]:
    """The transition path against a real influxd holding the live state's records."""
    from tests.influxd import InfluxdProcess, influxd_binary

    binary = influxd_binary()
    if binary is None:
        raise SystemExit("influxd not found: apt-get install -y influxdb")
    root = CACHE / "influxd"
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f"built-{days}d"
    influxd = InfluxdProcess(root, binary)
    influxd.start()
    store = open_storage(InfluxDB1StorageConfig(backend="influxdb1", url=influxd.url,
                                                database="bench_reports"), site_id=site.id)
    await store.start()
    rows: list[list[object]] = []
    try:
        if not marker.exists():
            built = await build(site, store, days, week_samples=False)
            marker.write_text(f"{built}\n")
            print(f"influxd: wrote {built['samples']:,} samples in {built['build_s']:.0f} s")
        def report(first: int, last: int) -> Callable[[], Awaitable[AvailabilityReport]]:
            return lambda: build_availability(site, store, T0 + first * 1440 * M,
                                              T0 + last * 1440 * M)

        for name, (first, period) in periods(days):
            wall, mb, new = await timed(report(first, period))
            rows.append([name, "transitions, influxd", wall, mb, new.evidence["series_read"],
                         new.evidence["good_samples"], len(new.incidents())])
            if name == "year":
                print("year: same figures from influxd as from the embedded store: "
                      f"{'yes' if same(new, embedded_year) else 'NO'}")
    finally:
        await store.close()
        influxd.stop()
    return rows


async def main(days: int, rebuild: bool, influxd: bool) -> None:
    site = load_site(REPO / "config" / "cyberport5.yaml")
    path = CACHE / f"store-{days}d.sqlite"
    if rebuild and CACHE.exists():
        shutil.rmtree(CACHE)
    fresh = not path.exists()
    CACHE.mkdir(parents=True, exist_ok=True)
    store = EmbeddedStorage(EmbeddedStorageConfig(path=str(path)), site_id=site.id)
    await store.start()
    try:
        if fresh:
            built = await build(site, store, days)
            print(f"built {path}: {built['samples']:,} samples, {built['incidents']} incidents, "
                  f"{built['build_s']:.0f} s")
        print(f"store {path} ({path.stat().st_size / 1e6:,.0f} MB); {machine()}")

        def report(first: int, last: int,
                   source: str) -> Callable[[], Awaitable[AvailabilityReport]]:
            return lambda: build_availability(site, store, T0 + first * 1440 * M,
                                              T0 + last * 1440 * M, source=source)

        rows: list[list[object]] = []
        old_s, old_mb, old = await timed(report(0, 7, "samples"))
        rows.append(["week", "samples (old), embedded", old_s, old_mb,
                     old.evidence["series_read"], old.evidence["good_samples"],
                     len(old.incidents())])
        for name, (first, period) in periods(days):
            wall, mb, new = await timed(report(first, period, "auto"))
            if name == "week":
                print(f"week: same figures by both paths: {'yes' if same(old, new) else 'NO'}")
            rows.append([name, "transitions, embedded", wall, mb, new.evidence["series_read"],
                         new.evidence["good_samples"], len(new.incidents())])
            year = new
    finally:
        await store.close()
    if influxd:
        rows += await on_influxd(site, days, year)
    for row in rows:
        row.append(old_s / float(row[2]))  # type: ignore[arg-type]
    print(table(["period", "path, store", "wall s", "peak MB", "series read", "samples read",
                 "incidents", "old path on the week / this"], rows))
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:,.0f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=365, help="length of the history (default 365)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached history")
    ap.add_argument("--influxd", action="store_true",
                    help="also time the transition path against a real influxd 1.x")
    args = ap.parse_args()
    asyncio.run(main(args.days, args.rebuild, args.influxd))
