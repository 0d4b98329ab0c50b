"""Availability reports for auditors: per system and period, with the evidence behind them.

Reads the store (per-step aggregates of the series that say whether a system served) and the
alarm journal, computes availability with analytics/availability.py, and renders Markdown,
JSON, CSV (incidents) and an optional timeline plot. What is counted:

| section | system | down when | degraded when |
|---|---|---|---|
| IT load | every rack | both feeds carry nothing (a single-corded rack: its feed) | on one feed |
| Power, cooling | every unit with a status word | it reports a trip | - |
| Power | every utility feed | its meter reads under 1 kW | - |
| Redundancy | every group (stored by the analytics) | below N | below its design level |
| Redundancy | Tier III | - | not concurrently maintainable |

A step without a good sample is unknown, never up: coverage says how much of the period the
figures rest on, and below MIN_COVERAGE (90 %) a system's availability reads "not enough
data". Planned downtime comes from a maintenance log (`load_planned`). A roll-up lists only
the systems with a real deficit (downtime or degraded time), systems with the same figures
in one row; the rest are summed up in one line ("all 200 at 100 %").

Where the live state ran, unit states, redundancy verdicts and the rack feeds' PDUs come from
the transitions it recorded (dcim/report_transitions.py): a year reports in seconds. Steps
without them (history from before, a backfill without the live state) are read from the
samples as before; both give the same figures (tests/test_reports_transitions.py).

Rendering (Markdown, JSON, CSV, the timeline) lives in dcim/report_render.py and is
re-exported here. Every string the report did not write itself (names and ids from the site
file, operators' comments, reasons and tickets, paths) is escaped where it is embedded: for
Markdown, HTML (`<script>`, `<img onerror=...>`) and Markdown syntax show as text; for CSV, a
cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading
apostrophe (OWASP CSV injection).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import AlarmEvent
from dcim.analytics.availability import (DEGRADED, DOWN, MIN_COVERAGE, UNKNOWN, UP,
                                         UTILITY_LOST_KW, Incident, SystemAvailability,
                                         combined, flag_states, group_states, planned_mask,
                                         rack_states, single_feed_states, summarize,
                                         unit_states)
from dcim.report_render import (FORMULA_START, MAX_LISTED, NOT_ENOUGH, _dur, _event_text,
                                 _local, _pct, csv_cell, md, plot_timeline, render_csv,
                                 render_markdown, report_json)
from dcim.report_transitions import (FEEDS, LIVE_FIRST, WORST_FIRST, DerivedRedundancy, Recorded,
                                     derive_redundancy, feed_kw, rack_feed_states,
                                     read_recorded, transition_key, windows)
from dcim.site import Site
from dcim.site.model import SiteDevice
from dcim.storage.base import Aggregate, SeriesKey, Storage

log = logging.getLogger(__name__)

NS = 1_000_000_000
ANALYTICS = "analytics"
EVIDENCE_BEFORE_S = 600.0  # alarm events this long before an incident belong to it
EVIDENCE_AFTER_S = 3600.0  # ... and this long after (acknowledgements, resets)
POWER_TYPES = ("utility_feed", "generator", "transformer", "ats", "switchboard", "ups_module",
               "ups_system", "pdu")


# ------------------------------------------------------------------ the maintenance log

class PlannedEntry(BaseModel):
    """One planned maintenance window from the maintenance log."""

    model_config = ConfigDict(extra="forbid")

    unit: str = Field(description="the component, group or rack taken out")
    start: datetime = Field(description="site-local time, ISO 8601")
    end: datetime
    reason: str = Field(min_length=1)
    ticket: str = ""

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime, info: Any) -> datetime:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("end must be after start")
        return end


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """A planned maintenance window in ns."""

    unit: str
    start_ns: int
    end_ns: int
    reason: str
    ticket: str = ""


class MaintenanceLogError(ValueError):
    """A maintenance log that cannot be used, naming the file, entry and field."""


def open_journal(site: Site, path: str | None) -> AlarmJournal | None:
    """The alarm journal a report reads (the site's by default); None, with a note on stderr,
    when there is none: incidents are then listed without alarm events."""
    import sys

    journal_path = path or site.config.alarms.journal_file(site.id)
    if Path(journal_path).exists():
        return AlarmJournal(journal_path)
    print(f"note: no alarm journal at {journal_path}; incidents are listed without alarm "
          "events", file=sys.stderr)
    return None


def load_planned(path: str | Path, site: Site) -> list[PlannedWindow]:
    """Read a maintenance log (YAML list of unit, start, end, reason, ticket)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MaintenanceLogError(f"{path}: cannot read the maintenance log: {exc}") from None
    if not isinstance(data, list):
        raise MaintenanceLogError(f"{path}: expected a list of windows (unit, start, end, "
                                  f"reason), got {type(data).__name__}")
    tz = ZoneInfo(site.config.site.timezone)
    known = (set(site.electrical) | set(site.mechanical) | set(site.racks)
             | {g.id for g in site.config.redundancy_groups})
    out = []
    for i, item in enumerate(data):
        try:
            entry = PlannedEntry.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "entry"
            raise MaintenanceLogError(f"{path}: entry {i + 1}, {where}: {err['msg']}") from None
        if entry.unit not in known:
            raise MaintenanceLogError(f"{path}: entry {i + 1}, unit: {entry.unit!r} is not a "
                                      "component, group or rack of the site")

        def ns(t: datetime) -> int:
            return int((t if t.tzinfo else t.replace(tzinfo=tz)).timestamp() * NS)

        out.append(PlannedWindow(entry.unit, ns(entry.start), ns(entry.end), entry.reason,
                                 entry.ticket))
    return out


# ------------------------------------------------------------------ the report

@dataclass
class Section:
    """Systems of one kind, with an optional roll-up."""

    title: str
    systems: list[SystemAvailability]
    rollup: SystemAvailability | None = None


@dataclass
class AvailabilityReport:
    """Everything an availability report says, before rendering."""

    site_id: str
    site_name: str
    timezone: str
    start_ns: int
    end_ns: int
    step_s: float
    generated_ns: int
    sections: list[Section]
    planned: list[PlannedWindow]
    evidence: dict[str, Any]
    events: dict[tuple[str, int, str], list[AlarmEvent]] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """The mean coverage of every system: how much of the period the store covers."""
        covered = [a.coverage for s in self.sections for a in s.systems]
        return sum(covered) / len(covered) if covered else 0.0

    @property
    def enough_data(self) -> bool:
        """Whether the store covers enough of the period (MIN_COVERAGE) for the figures."""
        return self.coverage >= MIN_COVERAGE - 1e-12

    def incidents(self) -> list[Incident]:
        """Every incident of every section, oldest first."""
        return sorted((i for s in self.sections for a in s.systems for i in a.incidents),
                      key=lambda i: (i.start_ns, i.system))

    def events_of(self, incident: Incident) -> list[AlarmEvent]:
        """The alarm journal events that belong to an incident."""
        return self.events.get((incident.system, incident.start_ns, incident.state), [])


async def _rack_codes(rack: Any, reader: _Reader, recorded: Recorded,
                     gaps: Callable[[np.ndarray], list[tuple[int, int]]]) -> np.ndarray:
    """A rack's codes: from its own recorded feeds where the live state wrote them (a rack that
    loses one feed while its PDU serves the others), else from its PDUs' recorded states where
    the live state speaks for both feeds, from its rack monitor's feed readings elsewhere."""
    own = recorded.mask(transition_key(rack.id, FEEDS))
    if own.all():  # its own feeds speak for the whole period
        reader.skip()
        return rack_feed_states(recorded, rack.id, single_corded=rack.single_corded)
    pdus = tuple(p for p in (rack.feed_a, rack.feed_b) if p)[:1 if rack.single_corded else 2]
    keys = [transition_key(p) for p in pdus]
    mask = recorded.mask(keys[0])
    for key in keys[1:]:
        mask = mask & recorded.mask(key)
    live = _racks_on(recorded, pdus) if mask.any() else None
    if own.any():  # history recorded before the feeds were is still read from the PDUs
        feeds = rack_feed_states(recorded, rack.id, single_corded=rack.single_corded)
        live = feeds if live is None else np.where(own, feeds, live).astype(np.int8)
        mask = mask | own
    if live is not None and mask.all():  # nothing to read from the samples
        reader.skip()
        return live
    monitor = f"RM-{rack.id}"
    a = await reader.read(SeriesKey("rack_monitor", monitor, "feed_a_power_kw"), Aggregate.MAX,
                          gaps(mask))
    b = await reader.read(SeriesKey("rack_monitor", monitor, "feed_b_power_kw"), Aggregate.MAX,
                          gaps(mask))
    codes = rack_states(a, b) if not rack.single_corded else single_feed_states(a)
    return codes if live is None else np.where(mask, live, codes).astype(np.int8)


def _racks_on(recorded: Recorded, pdus: tuple[str, ...]) -> np.ndarray:
    """The state of a rack fed by these PDUs, from their recorded states (racks on the same
    PDUs share one array: read-only)."""
    memo = recorded.racks.get(pdus)
    if memo is None:
        feeds = [feed_kw(recorded.codes(transition_key(p), LIVE_FIRST)) for p in pdus]
        memo = rack_states(feeds[0], feeds[1]) if len(feeds) == 2 else \
            single_feed_states(feeds[0])
        memo.flags.writeable = False
        recorded.racks[pdus] = memo
    return memo


async def _steps(storage: Storage, key: SeriesKey, start_ns: int, end_ns: int, step_ns: int,
                 fn: Aggregate) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-step aggregate (NaN where no good sample) and the number of good samples."""
    buckets = await storage.read_aggregate(key, start_ns, end_ns, step_ns, fn)
    values = np.full(len(buckets), np.nan)
    for i, b in enumerate(buckets):
        if b.value is not None:
            values[i] = b.value
    return values, np.array([b.start_ns for b in buckets], dtype=np.int64), \
        sum(b.count for b in buckets)


class _Reader:
    """Reads per-step aggregates, aligned on one time axis, with a progress bar; only over
    the spans it is given (where the live state's transitions do not speak)."""

    def __init__(self, storage: Storage, start_ns: int, end_ns: int, step_ns: int,
                 total: int, progress: bool) -> None:
        from tqdm import tqdm

        self.storage, self.step_ns = storage, step_ns
        self.start_ns = start_ns - start_ns % step_ns  # epoch-aligned, as the store aligns
        self.end_ns = end_ns
        n = -(-(end_ns - self.start_ns) // step_ns)
        self.times = self.start_ns + np.arange(n, dtype=np.int64) * step_ns
        self.samples = 0
        self.series = 0
        self._bar = tqdm(total=total, desc="reading", unit="series", disable=not progress)

    async def read(self, key: SeriesKey, fn: Aggregate,
                   spans: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        out = np.full(self.times.size, np.nan)
        spans = [(self.start_ns, self.end_ns)] if spans is None else spans
        for lo, hi in spans:
            values, times, count = await _steps(self.storage, key, lo, min(hi, self.end_ns),
                                                self.step_ns, fn)
            self.samples += count
            idx = ((times - self.start_ns) // self.step_ns).astype(np.int64)
            ok = (idx >= 0) & (idx < out.size)
            out[idx[ok]] = values[ok]
        self.series += 1 if spans else 0
        self._bar.update(1)
        return out

    def skip(self, series: int = 2) -> None:
        """Series not read (the transitions speak for every step): counted on the bar."""
        self._bar.update(series)

    def close(self) -> None:
        self._bar.close()


def _groups_design(site: Site) -> dict[str, str]:
    return {g.id: g.design for g in site.config.redundancy_groups}


def _status_units(site: Site) -> dict[str, SiteDevice]:
    units: dict[str, SiteDevice] = {}  # component id -> the device with its status word
    for device in site.devices.values():
        if any(p.name == "unit_status" for p in device.profile.points) and (
                device.monitors in site.electrical or device.monitors in site.mechanical):
            units.setdefault(device.monitors, device)
    return units


async def build_availability(site: Site, storage: Storage, start_ns: int, end_ns: int, *,
                             step_s: float = 60.0, planned: Sequence[PlannedWindow] = (),
                             journal: AlarmJournal | None = None, progress: bool = False,
                             clock: Any = time.time,
                             source: str = "auto") -> AvailabilityReport:
    """Read the store and the journal and compute the availability of every system
    (source "auto": the live state's transitions where recorded, samples elsewhere;
    "samples": every figure from the samples)."""
    if end_ns <= start_ns:
        raise ValueError("the period must end after it starts")
    if source not in ("auto", "samples"):
        raise ValueError(f"source: expected 'auto' or 'samples', got {source!r}")
    step_ns = int(step_s * NS)
    units = _status_units(site)
    utilities = [d for d in site.devices_of_type("meter")
                 if (c := site.electrical.get(d.monitors)) is not None and c.type == "utility_feed"
                 and any(p.name == "power_kw" for p in d.profile.points)]
    designs = _groups_design(site)
    total = len(units) + len(utilities) + 2 * len(site.racks) + 2 * len(designs) + 1
    reader = _Reader(storage, start_ns, end_ns, step_ns, total, progress)
    times = reader.times
    pdus = sorted({p for r in site.racks.values() for p in (r.feed_a, r.feed_b) if p})
    keys = [transition_key(c) for c in [*units, *(d.monitors for d in utilities), *pdus]]
    keys += [transition_key(g, "meets_design") for g in designs]
    keys += [transition_key(r, FEEDS) for r in site.racks]
    keys.append(transition_key(site.id, "concurrently_maintainable"))
    recorded = Recorded(times, step_ns, np.zeros(times.size, dtype=bool))
    if source == "auto":
        recorded = await read_recorded(storage, site.id, keys, times, step_ns, end_ns)

    def gaps(mask: np.ndarray) -> list[tuple[int, int]]:
        return windows(times, step_ns, ~mask)

    def windows_of(unit: str) -> np.ndarray:
        return planned_mask(times, step_ns, [(w.start_ns, w.end_ns) for w in planned
                                             if w.unit == unit])

    def done(name: str, kind: str, codes: np.ndarray, down: str,
             degraded: str = "degraded") -> SystemAvailability:
        return summarize(name, kind, times, step_s, codes, planned=windows_of(name),
                         cause_down=down, cause_degraded=degraded, start_ns=start_ns,
                         end_ns=end_ns)

    async def unit(key: SeriesKey, tkey: SeriesKey, order: Sequence[int],
                   states: Any) -> np.ndarray:
        """A unit's codes: recorded where the live state speaks, from the samples elsewhere."""
        mask = recorded.mask(tkey)
        if mask.all():  # nothing to read from the samples
            reader.skip(1)
            return recorded.codes(tkey, order)
        codes = states(await reader.read(key, Aggregate.MAX, gaps(mask)))
        if mask.any():
            codes = np.where(mask, recorded.codes(tkey, order), codes).astype(np.int8)
        return codes

    def utility_states(kw: np.ndarray) -> np.ndarray:
        codes = np.where(kw < UTILITY_LOST_KW, DOWN, UP).astype(np.int8)
        codes[~np.isfinite(kw)] = UNKNOWN
        return codes

    try:
        power: list[SystemAvailability] = []
        cooling: list[SystemAvailability] = []
        unit_codes: dict[str, np.ndarray] = {}
        for device in utilities:
            codes = await unit(device.series("power_kw"), transition_key(device.monitors),
                               LIVE_FIRST, utility_states)
            unit_codes[device.monitors] = codes
            power.append(done(device.monitors, "utility_feed", codes,
                              f"utility lost: {device.id} read under {UTILITY_LOST_KW:g} kW"))
        for cid, device in sorted(units.items()):
            comp: Any = site.electrical.get(cid) or site.mechanical.get(cid)
            codes = await unit(device.series("unit_status"), transition_key(cid), WORST_FIRST,
                               unit_states)
            unit_codes[cid] = codes
            row = done(cid, comp.type, codes,
                       f"tripped: {device.id} unit_status reported 3 or more")
            (power if comp.type in POWER_TYPES else cooling).append(row)
        racks: list[SystemAvailability] = []
        for rack in site.racks.values():
            racks.append(done(rack.id, "rack", await _rack_codes(rack, reader, recorded, gaps),
                              "no power on any feed",
                              f"on one feed ({rack.feed_a} / {rack.feed_b})"))
        redundancy: list[SystemAvailability] = []
        derived = derive_redundancy(site, unit_codes, times.size)
        for gid, design in sorted(designs.items()):
            tkey = transition_key(gid, "meets_design")
            mask = recorded.mask(tkey)
            # the live state's verdict where it held; where not, the stored levels tell
            # below N (down) from below design (degraded)
            met = mask & (recorded.codes(tkey, WORST_FIRST, not_held=DEGRADED) == UP) \
                if mask.any() else mask
            avail = await reader.read(SeriesKey(ANALYTICS, site.id, f"redundancy_{gid}_available"),
                                      Aggregate.MIN, gaps(met))
            need = await reader.read(SeriesKey(ANALYTICS, site.id, f"redundancy_{gid}_needed"),
                                     Aggregate.MAX, gaps(met))
            # the analytics' stored figures (at the measured load) where they exist; elsewhere
            # the group's level from the units' own states at the design load
            stored = np.isfinite(avail) & np.isfinite(need)
            d_avail, d_need = derived.group(gid, ~met & ~stored) or (avail, need)
            avail, need = np.where(stored, avail, d_avail), np.where(stored, need, d_need)
            codes = np.full(times.size, UP, dtype=np.int8)
            codes[~met] = group_states(avail[~met], need[~met], design)
            redundancy.append(done(gid, f"group {design}", codes,
                                   "below N: load at risk", f"below its {design} design"))
        tkey = transition_key(site.id, "concurrently_maintainable")
        mask = recorded.mask(tkey)
        cm = await reader.read(SeriesKey(ANALYTICS, site.id, "concurrently_maintainable"),
                               Aggregate.MIN, gaps(mask))
        cm = np.where(np.isfinite(cm), cm,
                      derived.concurrently_maintainable(~mask & ~np.isfinite(cm)))
        codes = flag_states(cm)
        if mask.any():
            codes = np.where(mask, recorded.codes(tkey, WORST_FIRST, not_held=DEGRADED),
                             codes).astype(np.int8)
        redundancy.append(done("Tier III", "concurrent maintainability", codes,
                               "-", "not concurrently maintainable"))
    finally:
        reader.close()
    sections = [Section("IT load", racks, combined("all racks", "IT load", racks) if racks
                        else None),
                Section("Power", power), Section("Cooling", cooling),
                Section("Redundancy", redundancy)]
    report = AvailabilityReport(
        site_id=site.id, site_name=site.config.site.name, timezone=site.config.site.timezone,
        start_ns=start_ns, end_ns=end_ns, step_s=step_s, generated_ns=int(clock() * NS),
        sections=sections, planned=list(planned),
        evidence=_evidence(site, storage, reader, journal, recorded))
    if journal is not None:
        _attach_events(report, site, journal)
    return report


def _evidence(site: Site, storage: Storage, reader: _Reader, journal: AlarmJournal | None,
              recorded: Recorded) -> dict[str, Any]:
    out: dict[str, Any] = {"series_read": reader.series, "good_samples": reader.samples,
                           "store": site.config.storage.backend,
                           "live_state": {"covered": float(recorded.covered.mean())
                                          if recorded.covered.size else 0.0,
                                          "heartbeats": recorded.heartbeats,
                                          "transition_series": len(recorded.changes),
                                          "transitions": recorded.transitions}}
    path = getattr(site.config.storage, "path", None)
    if path:
        out["store_path"] = str(path)
    if site.source is not None and site.source.exists():
        out["site_file"] = str(site.source)
        out["site_file_sha256"] = hashlib.sha256(site.source.read_bytes()).hexdigest()
    if journal is not None:
        check = journal.verify()
        seq, head = journal.head()
        out["journal"] = {"path": str(journal.path), "events": check.events,
                          "chain_ok": check.ok, "first_bad_seq": check.first_bad_seq,
                          "problem": (check.problems[0] if check.problems else check.reason)
                          if not check.ok else "",
                          "head_seq": seq, "head_sha256": head}
    return out


def _related(site: Site, system: str) -> tuple[set[str], tuple[str, ...]]:
    """Alarm ids (exact) and id prefixes that concern a system."""
    exact: set[str] = {f"unit:{system}:down"}
    prefixes: list[str] = [f"redundancy:{system}:"]
    if system == "Tier III":
        exact.add("redundancy:site:not_concurrently_maintainable")
    for device in site.devices.values():
        if device.monitors == system:
            exact.add(f"device:{device.id}:comm")
            prefixes.append(f"anomaly:status:{device.id}")
    rack = site.racks.get(system)
    if rack is not None:  # a rack's power comes through its PDUs
        exact |= {"redundancy:racks_without_power", "redundancy:racks_on_one_feed"}
        exact |= {f"unit:{pdu}:down" for pdu in (rack.feed_a, rack.feed_b) if pdu}
    return exact, tuple(prefixes)


def _attach_events(report: AvailabilityReport, site: Site, journal: AlarmJournal) -> None:
    events = journal.events(report.start_ns - int(EVIDENCE_BEFORE_S * NS),
                            report.end_ns + int(EVIDENCE_AFTER_S * NS))
    for incident in report.incidents():
        exact, prefixes = _related(site, incident.system)
        lo = incident.start_ns - int(EVIDENCE_BEFORE_S * NS)
        hi = incident.end_ns + int(EVIDENCE_AFTER_S * NS)
        report.events[(incident.system, incident.start_ns, incident.state)] = [
            e for e in events if lo <= e.time_ns <= hi
            and (e.alarm_id in exact or e.alarm_id.startswith(prefixes))]


__all__ = ["DerivedRedundancy", "FORMULA_START", "MAX_LISTED", "NOT_ENOUGH", "AvailabilityReport",
           "MaintenanceLogError", "PlannedWindow", "Section", "_dur", "_event_text", "_local",
           "_pct", "build_availability", "csv_cell", "derive_redundancy", "load_planned", "md", "plot_timeline",
           "render_csv", "render_markdown", "report_json"]
