"""Rendering of availability reports: Markdown for people, JSON as data, CSV of the incidents
and a PNG timeline. Pure functions of an `AvailabilityReport` (dcim/reports.py builds it).

Every string the report did not write itself is escaped where it is embedded: for Markdown,
HTML and Markdown syntax show as text (`md`); for CSV, a cell a spreadsheet would run as a
formula gets a leading apostrophe (`csv_cell`, OWASP CSV injection).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dcim.alarms.types import AlarmEvent
from dcim.analytics.availability import MIN_COVERAGE, Incident, SystemAvailability
from dcim.logs import escape_text

if TYPE_CHECKING:
    from dcim.reports import AvailabilityReport, Section

NS = 1_000_000_000

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
    live = ev.get("live_state")
    if live and live.get("covered"):
        lines.append(f"- live state: ran over {live['covered'] * 100:.1f} % of the period "
                     f"({live['heartbeats']:,} heartbeats); unit states and verdicts there "
                     f"come from its {live['transitions']:,} recorded transitions "
                     f"({live['transition_series']} series), the rest from the samples")
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


__all__ = ["FORMULA_START", "MAX_LISTED", "NOT_ENOUGH", "csv_cell", "md", "plot_timeline",
           "render_csv", "render_markdown", "report_json"]
