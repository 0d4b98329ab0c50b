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

Every string the report did not write itself (names and ids from the site file, operators'
comments from the journal, reasons and tickets from the maintenance log, paths) is escaped
where it is embedded: for Markdown, HTML (`<script>`, `<img onerror=...>`) and Markdown
syntax (table bars, emphasis, links) shows as text; for CSV, a cell that a spreadsheet would
run as a formula (=, +, -, @, tab, CR first) gets a leading apostrophe (OWASP CSV injection).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import AlarmEvent
from dcim.logs import escape_text
from dcim.analytics.availability import (MIN_COVERAGE, UTILITY_LOST_KW, Incident,
                                         SystemAvailability, combined, flag_states,
                                         group_states, planned_mask, rack_states,
                                         single_feed_states, summarize, unit_states)
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
    """Reads per-step aggregates, aligned on one time axis, with a progress bar."""

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

    async def read(self, key: SeriesKey, fn: Aggregate) -> np.ndarray:
        values, times, count = await _steps(self.storage, key, self.start_ns, self.end_ns,
                                            self.step_ns, fn)
        self.samples += count
        self.series += 1
        self._bar.update(1)
        out = np.full(self.times.size, np.nan)
        idx = ((times - self.start_ns) // self.step_ns).astype(np.int64)
        ok = (idx >= 0) & (idx < out.size)
        out[idx[ok]] = values[ok]
        return out

    def close(self) -> None:
        self._bar.close()


def _groups_design(site: Site) -> dict[str, str]:
    return {g.id: g.design for g in site.config.redundancy_groups}


async def build_availability(site: Site, storage: Storage, start_ns: int, end_ns: int, *,
                             step_s: float = 60.0, planned: Sequence[PlannedWindow] = (),
                             journal: AlarmJournal | None = None, progress: bool = False,
                             clock: Any = time.time) -> AvailabilityReport:
    """Read the store and the journal and compute the availability of every system."""
    if end_ns <= start_ns:
        raise ValueError("the period must end after it starts")
    step_ns = int(step_s * NS)
    units: dict[str, SiteDevice] = {}  # component id -> the device with its status word
    for device in site.devices.values():
        if any(p.name == "unit_status" for p in device.profile.points) and (
                device.monitors in site.electrical or device.monitors in site.mechanical):
            units.setdefault(device.monitors, device)
    utilities = [d for d in site.devices_of_type("meter")
                 if (c := site.electrical.get(d.monitors)) is not None and c.type == "utility_feed"
                 and any(p.name == "power_kw" for p in d.profile.points)]
    designs = _groups_design(site)
    total = len(units) + len(utilities) + 2 * len(site.racks) + 2 * len(designs) + 1
    reader = _Reader(storage, start_ns, end_ns, step_ns, total, progress)
    times = reader.times

    def windows(unit: str) -> np.ndarray:
        return planned_mask(times, step_ns, [(w.start_ns, w.end_ns) for w in planned
                                             if w.unit == unit])

    def done(name: str, kind: str, codes: np.ndarray, down: str,
             degraded: str = "degraded") -> SystemAvailability:
        return summarize(name, kind, times, step_s, codes, planned=windows(name),
                         cause_down=down, cause_degraded=degraded, start_ns=start_ns,
                         end_ns=end_ns)

    try:
        power: list[SystemAvailability] = []
        cooling: list[SystemAvailability] = []
        utility_codes: dict[str, np.ndarray] = {}
        for device in utilities:
            kw = await reader.read(device.series("power_kw"), Aggregate.MAX)
            codes = np.where(kw < UTILITY_LOST_KW, 2, 0).astype(np.int8)
            codes[~np.isfinite(kw)] = 3
            utility_codes[device.monitors] = codes
            power.append(done(device.monitors, "utility_feed", codes,
                              f"utility lost: {device.id} read under {UTILITY_LOST_KW:g} kW"))
        unit_codes: dict[str, np.ndarray] = {}
        for row in power:  # the utility feeds so far
            unit_codes[row.system] = utility_codes[row.system]
        for cid, device in sorted(units.items()):
            status = await reader.read(device.series("unit_status"), Aggregate.MAX)
            comp: Any = site.electrical.get(cid) or site.mechanical.get(cid)
            codes = unit_states(status)
            unit_codes[cid] = codes
            row = done(cid, comp.type, codes,
                       f"tripped: {device.id} unit_status reported 3 or more")
            (power if comp.type in POWER_TYPES else cooling).append(row)
        racks: list[SystemAvailability] = []
        for rack in site.racks.values():
            monitor = f"RM-{rack.id}"
            a = await reader.read(SeriesKey("rack_monitor", monitor, "feed_a_power_kw"),
                                  Aggregate.MAX)
            b = await reader.read(SeriesKey("rack_monitor", monitor, "feed_b_power_kw"),
                                  Aggregate.MAX)
            codes = rack_states(a, b) if not rack.single_corded else single_feed_states(a)
            racks.append(done(rack.id, "rack", codes, "no power on any feed",
                              f"on one feed ({rack.feed_a} / {rack.feed_b})"))
        redundancy: list[SystemAvailability] = []
        derived = derive_redundancy(site, unit_codes, times.size)
        for gid, design in sorted(designs.items()):
            avail = await reader.read(SeriesKey(ANALYTICS, site.id, f"redundancy_{gid}_available"),
                                      Aggregate.MIN)
            need = await reader.read(SeriesKey(ANALYTICS, site.id, f"redundancy_{gid}_needed"),
                                     Aggregate.MAX)
            # the analytics' stored figures (at the measured load) where they exist; elsewhere
            # the group's level from the units' own states at the design load
            d_avail, d_need = derived.groups.get(gid, (avail, need))
            stored = np.isfinite(avail) & np.isfinite(need)
            avail, need = np.where(stored, avail, d_avail), np.where(stored, need, d_need)
            redundancy.append(done(gid, f"group {design}", group_states(avail, need, design),
                                   "below N: load at risk", f"below its {design} design"))
        cm = await reader.read(SeriesKey(ANALYTICS, site.id, "concurrently_maintainable"),
                               Aggregate.MIN)
        cm = np.where(np.isfinite(cm), cm, derived.concurrently_maintainable)
        redundancy.append(done("Tier III", "concurrent maintainability", flag_states(cm),
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
        evidence=_evidence(site, storage, reader, journal))
    if journal is not None:
        _attach_events(report, site, journal)
    return report


@dataclass
class DerivedRedundancy:
    """Group levels and Tier III per step, worked out from the units' states."""

    groups: dict[str, tuple[np.ndarray, np.ndarray]]  # group -> (available, needed)
    concurrently_maintainable: np.ndarray  # 1.0 / 0.0, NaN where no unit state is known
    distinct_states: int


def derive_redundancy(site: Site, unit_codes: dict[str, np.ndarray],
                      steps: int) -> DerivedRedundancy:
    """Redundancy per step from which units were down, at the design load: the analysis runs
    once per distinct set of down units (a week holds a handful), not once per step."""
    from dcim.analytics.redundancy import analyse
    from dcim.analytics.topology import compile_topology

    ids = sorted(unit_codes)
    groups: dict[str, tuple[np.ndarray, np.ndarray]] = {
        g.id: (np.full(steps, np.nan), np.full(steps, np.nan))
        for g in site.config.redundancy_groups}
    cm = np.full(steps, np.nan)
    if not ids or steps == 0:
        return DerivedRedundancy(groups, cm, 0)
    matrix = np.vstack([unit_codes[i] for i in ids])  # (units, steps)
    known = (matrix != 3).any(axis=0)
    keys = [tuple(np.flatnonzero(matrix[:, k] == 2).tolist()) for k in range(steps)]
    topo = compile_topology(site)
    reports: dict[tuple[int, ...], Any] = {}
    for k, key in enumerate(keys):
        if not known[k]:
            continue
        report = reports.get(key)
        if report is None:
            report = reports[key] = analyse(topo, {ids[i]: False for i in key},
                                            on_generators=False)
        for g in report.groups:
            if g.id in groups:
                groups[g.id][0][k], groups[g.id][1][k] = g.available, g.needed
        cm[k] = 1.0 if report.concurrently_maintainable else 0.0
    return DerivedRedundancy(groups, cm, len(reports))


def _evidence(site: Site, storage: Storage, reader: _Reader,
              journal: AlarmJournal | None) -> dict[str, Any]:
    out: dict[str, Any] = {"series_read": reader.series, "good_samples": reader.samples,
                           "store": site.config.storage.backend}
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


# ------------------------------------------------------------------ rendering

def _local(ns: int, tz: str) -> str:
    return datetime.fromtimestamp(ns / NS, timezone.utc).astimezone(ZoneInfo(tz)).strftime(
        "%Y-%m-%d %H:%M")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.4f} %"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
# Markdown punctuation that can start syntax anywhere in a line (CommonMark lets any ASCII
# punctuation be backslash-escaped); '_' only matters at a word's edge (GFM), so ups_module
# stays as it is
_MD_SYNTAX = re.compile(r"[\\`*\[\]{}|#~!]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def md(value: object) -> str:
    """A string from outside (config, journal, maintenance log) as inert Markdown text: one
    line, unprintable characters shown as escapes, HTML and Markdown syntax escaped."""
    text = escape_text(str(value))  # newlines, terminal escapes, bidi overrides: visible
    text = _MD_SYNTAX.sub(lambda m: "\\" + m.group(0), text)
    return "".join(_HTML.get(ch, ch) for ch in text)


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (OWASP)."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _event_text(e: AlarmEvent, tz: str, esc: Callable[[object], str] = str) -> str:
    who = "" if e.user == "system" else f" by {esc(e.user)}"
    note = f" ({esc(e.comment)})" if e.comment else ""
    return f"#{e.seq} {_local(e.time_ns, tz)} {e.action.value} {esc(e.alarm_id)}{who}{note}"


NOT_ENOUGH = "not enough data"


def _figures(a: SystemAvailability) -> str:
    """A system's row after its name (the same text for systems with the same figures)."""
    shown = [_pct(a.availability), _pct(a.availability_unplanned)] if a.enough_data \
        else [NOT_ENOUGH, NOT_ENOUGH]
    return (f"{md(a.kind)} | {shown[0]} | {shown[1]} | {a.coverage * 100:.1f} % | "
            f"{_dur(a.down_unplanned_s)} | {_dur(a.down_planned_s)} | "
            f"{_dur(a.degraded_s)} | {a.failures} | {_dur(a.mtbf_s)} | {_dur(a.mttr_s)} |")


def _summary_rows(systems: Iterable[SystemAvailability]) -> list[str]:
    return [f"| {md(a.system)} | {_figures(a)}" for a in systems]


MAX_LISTED = 40  # distinct rows listed under a roll-up


def _names(group: Sequence[SystemAvailability], most: int = 12) -> str:
    if len(group) == 1:
        return md(group[0].system)
    more = f" and {len(group) - most} more" if len(group) > most else ""
    return f"{len(group)} systems: {', '.join(md(a.system) for a in group[:most])}{more}"


def _span_pct(values: Sequence[float]) -> str:
    low, high = min(values) * 100, max(values) * 100
    return f"{low:.1f} %" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f} to {high:.1f} %"


def _rollup(section: Section, rollup: SystemAvailability) -> tuple[list[str], list[str]]:
    """(the lines above a roll-up's table, its rows): the roll-up, then each distinct row of
    the systems with a deficit, least available first; the rest said in one line."""
    systems = section.systems
    short = [a for a in systems if a.deficit]
    rest = [a for a in systems if not a.deficit]
    lines = [f"{len(systems)} systems; the roll-up is their mean."]
    if not rollup.enough_data:
        lines.append(f"Not enough data: the store covers {rollup.coverage * 100:.1f} % of the "
                     f"period (at least {MIN_COVERAGE:.0%} for an availability figure).")
    if rest:
        known = [a for a in rest if a.known_s > 0]
        every = "All" if not short else "The other"
        coverage = _span_pct([a.coverage for a in known]) if known else ""
        what = (f"{every} {len(rest)} without downtime or degraded time: "
                + (f"{len(known)} at 100 % where known, coverage {coverage}" if known
                   else "no data"))
        if known and len(known) < len(rest):
            what += f"; {len(rest) - len(known)} without data"
        lines.append(what + ".")
    groups: dict[str, list[SystemAvailability]] = {}
    short.sort(key=lambda a: (a.availability if a.availability is not None else -1,
                              -a.degraded_s, a.system))
    for a in short:
        groups.setdefault(_figures(a), []).append(a)
    if groups:
        cut = (f" (the {MAX_LISTED} least available; the JSON and CSV list every one)"
               if len(groups) > MAX_LISTED else "")
        lines.append(f"Listed: the {len(short)} with downtime or degraded time, least available "
                     f"first, systems with the same figures in one row{cut}.")
    rows = [f"| {md(rollup.system)} | {_figures(rollup)}"] + [
        f"| {_names(group)} | {figures}" for figures, group in list(groups.items())[:MAX_LISTED]]
    return lines, rows


def _grouped(incidents: Sequence[Incident]) -> list[list[Incident]]:
    """Rack incidents with the same state, times, planning and cause in one row (a PDU that
    opens puts all its racks on one feed at once); every other incident alone."""
    rows: list[list[Incident]] = []
    index: dict[tuple[object, ...], int] = {}
    for i in incidents:
        key = (i.state, i.start_ns, i.end_ns, i.planned, i.cause)
        if i.cause.startswith(("on one feed", "no power")) and key in index:
            rows[index[key]].append(i)
            continue
        if i.cause.startswith(("on one feed", "no power")):
            index[key] = len(rows)
        rows.append([i])
    return rows


def render_markdown(report: AvailabilityReport) -> str:
    """The report for people: summary tables, incidents with their evidence, definitions."""
    tz = report.timezone
    lines = [f"# Availability: {md(report.site_name)} ({md(report.site_id)})", "",
             f"Period {_local(report.start_ns, tz)} to {_local(report.end_ns, tz)} ({md(tz)}), "
             f"{_dur((report.end_ns - report.start_ns) / NS)}; resolution {report.step_s:g} s; "
             f"generated {_local(report.generated_ns, tz)}.", ""]
    if not report.enough_data:
        lines += [f"Not enough data: the store covers {report.coverage * 100:.1f} % of the "
                  f"period on average (at least {MIN_COVERAGE:.0%} for an availability "
                  "figure); the figures below say so system by system.", ""]
    head = ("| system | kind | availability | excl. planned | coverage | unplanned down | "
            "planned down | degraded | failures | MTBF | MTTR |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for section in report.sections:
        if not section.systems:
            continue
        lines += [f"## {section.title}", ""]
        if section.rollup is not None:
            above, rows = _rollup(section, section.rollup)
            lines += [" ".join(above), ""]
        else:
            rows = _summary_rows(section.systems)
        lines += [head, rule] + rows + [""]
    incidents = report.incidents()
    lines += ["## Incidents", ""]
    if not incidents:
        lines += ["None in the period.", ""]
    else:
        lines += ["| system | state | start | end | duration | planned | cause | alarm journal |",
                  "|---|---|---|---|---:|---|---|---|"]
        for group in _grouped(incidents):
            i = group[0]
            events = "<br>".join(_event_text(e, tz, md) for e in report.events_of(i)[:8]) or "-"
            names = md(i.system) if len(group) == 1 else \
                f"{len(group)} racks: {', '.join(md(g.system) for g in group[:12])}" \
                + (f" and {len(group) - 12} more" if len(group) > 12 else "")
            lines.append(f"| {names} | {i.state} | {_local(i.start_ns, tz)} | "
                         f"{_local(i.end_ns, tz)} | {_dur(i.duration_s)} | "
                         f"{'yes' if i.planned else 'no'} | {md(i.cause)} | {events} |")
        lines.append("")
    if report.planned:
        lines += ["## Planned maintenance (from the maintenance log)", "",
                  "| unit | start | end | reason | ticket |", "|---|---|---|---|---|"]
        lines += [f"| {md(w.unit)} | {_local(w.start_ns, tz)} | {_local(w.end_ns, tz)} | "
                  f"{md(w.reason)} | {md(w.ticket) if w.ticket else '-'} |"
                  for w in report.planned] + [""]
    ev = report.evidence
    lines += ["## Evidence", "",
              f"- store: {md(ev.get('store'))} {md(ev.get('store_path', ''))}; "
              f"{ev['series_read']:,} "
              f"series read, {ev['good_samples']:,} good samples behind these figures"]
    if "site_file" in ev:
        lines.append(f"- site file: {md(ev['site_file'])} (sha256 {ev['site_file_sha256']})")
    journal = ev.get("journal")
    if journal is not None:
        state = "intact" if journal["chain_ok"] else \
            f"BROKEN: {md(journal.get('problem') or 'at event #' + str(journal['first_bad_seq']))}"
        lines.append(f"- alarm journal: {md(journal['path'])}, {journal['events']:,} events, hash "
                     f"chain {state}; head #{journal['head_seq']} {journal['head_sha256']}")
    else:
        lines.append("- alarm journal: not given (incidents are listed without alarm events)")
    lines += ["", "## Definitions", "",
              "- Availability = serving time / known time, where serving is up or degraded; "
              "\"excl. planned\" leaves planned downtime out of both.",
              "- Coverage = known time / period. A step without a good sample is unknown, never "
              f"counted as up; under {MIN_COVERAGE:.0%} coverage the availability reads "
              f"\"{NOT_ENOUGH}\".",
              "- A rack is down when no feed carries load (every feed under "
              "0.05 kW for a whole step), degraded on one feed; a unit is down while its status "
              "word reports a trip; a redundancy group is down below N and degraded below its "
              "design level; the site is degraded while not concurrently maintainable.",
              "- MTBF = serving time / unplanned failures; MTTR = unplanned downtime / unplanned "
              "failures. Durations are multiples of the resolution.", ""]
    body = "\n".join(lines) + "\n"
    return body + "Report fingerprint (sha256 of every line above this one): " \
        f"{hashlib.sha256(body.encode()).hexdigest()}\n"


def _system_json(a: SystemAvailability) -> dict[str, Any]:
    return {"system": a.system, "kind": a.kind, "availability": a.availability,
            "availability_excluding_planned": a.availability_unplanned,
            "coverage": a.coverage, "up_s": a.up_s, "degraded_s": a.degraded_s,
            "down_planned_s": a.down_planned_s, "down_unplanned_s": a.down_unplanned_s,
            "unknown_s": a.unknown_s, "failures": a.failures, "mtbf_s": a.mtbf_s,
            "mttr_s": a.mttr_s, "enough_data": a.enough_data}


def report_json(report: AvailabilityReport) -> dict[str, Any]:
    """The report as data (every system, every incident with its alarm events)."""
    return {
        "site": {"id": report.site_id, "name": report.site_name, "timezone": report.timezone},
        "period": {"start_ns": report.start_ns, "end_ns": report.end_ns,
                   "start_local": _local(report.start_ns, report.timezone),
                   "end_local": _local(report.end_ns, report.timezone),
                   "resolution_s": report.step_s, "coverage": report.coverage,
                   "enough_data": report.enough_data, "min_coverage": MIN_COVERAGE},
        "generated_ns": report.generated_ns,
        "sections": [{"title": s.title,
                      "rollup": _system_json(s.rollup) if s.rollup else None,
                      "systems": [_system_json(a) for a in s.systems]} for s in report.sections],
        "incidents": [{"system": i.system, "state": i.state, "start_ns": i.start_ns,
                       "end_ns": i.end_ns, "duration_s": i.duration_s, "planned": i.planned,
                       "cause": i.cause,
                       "alarm_events": [{"seq": e.seq, "time_ns": e.time_ns,
                                         "alarm_id": e.alarm_id, "action": e.action.value,
                                         "user": e.user, "comment": e.comment}
                                        for e in report.events_of(i)]}
                      for i in report.incidents()],
        "planned": [{"unit": w.unit, "start_ns": w.start_ns, "end_ns": w.end_ns,
                     "reason": w.reason, "ticket": w.ticket} for w in report.planned],
        "evidence": report.evidence,
    }


def render_csv(report: AvailabilityReport) -> str:
    """The incidents as CSV (one row each), for spreadsheets and ticket systems."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["system", "state", "start_local", "end_local", "duration_s", "planned",
                     "cause", "alarm_events"])
    for i in report.incidents():
        events = "; ".join(_event_text(e, report.timezone) for e in report.events_of(i))
        writer.writerow([csv_cell(v) for v in (
            i.system, i.state, _local(i.start_ns, report.timezone),
            _local(i.end_ns, report.timezone), f"{i.duration_s:.0f}",
            "yes" if i.planned else "no", i.cause, events)])
    return out.getvalue()


def plot_timeline(report: AvailabilityReport, path: str | Path, max_rows: int = 40) -> Path:
    """A timeline of every system with an incident: down red, degraded amber (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted({i.system for i in report.incidents()})[:max_rows]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * max(1, len(rows))))
    span_h = (report.end_ns - report.start_ns) / NS / 3600
    colours = {"down": "#c0392b", "degraded": "#e6a23c"}
    for y, name in enumerate(rows):
        for i in report.incidents():
            if i.system == name:
                ax.barh(y, i.duration_s / 3600, left=(i.start_ns - report.start_ns) / NS / 3600,
                        color=colours[i.state], hatch="//" if i.planned else None,
                        edgecolor="#555" if i.planned else None)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlim(0, span_h)
    ax.invert_yaxis()
    ax.set_xlabel(f"hours from {_local(report.start_ns, report.timezone)} ({report.timezone})")
    name = report.site_name.replace("$", r"\$")  # no mathtext from a site name
    ax.set_title(f"{name}: incidents (red down, amber degraded, hatched planned)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["AvailabilityReport", "MaintenanceLogError", "PlannedWindow", "build_availability",
           "load_planned", "plot_timeline", "render_csv", "render_markdown", "report_json"]
