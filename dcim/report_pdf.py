"""The availability report as a PDF for auditors, with the same figures as the JSON and CSV.

Pages: a title page (site, period, time zone, generated at, software version); the summary
table of every system per section (the roll-up first), formatted by the same helpers as the
Markdown report; charts (availability per section, the incident timeline); every incident
with its alarm journal events; the planned maintenance; and the evidence (the store and how
many series and samples the figures rest on, coverage per section, the site file's and the
journal head's SHA-256, the Markdown report's fingerprint and the SHA-256 of the companion
JSON, CSV and Markdown files as `companion_texts` writes them). Beside the PDF goes
`<pdf>.sha256` with the PDF's own SHA-256 (in `sha256sum` format, so `sha256sum -c` checks it).

Drawn with matplotlib (`PdfPages`, figures made without pyplot). Text is laid out on a
monospace grid, so columns line up and `pdftotext -layout` gives the tables back as tables.
The PDF's CreationDate is the report's generation time and nothing else in it depends on the
clock, so two renders of one report are the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dcim
from dcim.analytics.availability import MIN_COVERAGE, SystemAvailability
from dcim.logs import escape_text
from dcim.reports import (NOT_ENOUGH, AvailabilityReport, _dur, _event_text, _local, _pct,
                          render_csv, render_markdown, report_json)

NS = 1_000_000_000
PAGE_W_IN, PAGE_H_IN = 11.69, 8.27  # A4 landscape
MARGIN_IN = 0.5
FONT_PT = 7.5
LINE_IN = FONT_PT * 1.4 / 72
CHAR_IN = FONT_PT * 0.6 / 72  # DejaVu Sans Mono advances 0.6 em
WIDTH_CHARS = int((PAGE_W_IN - 2 * MARGIN_IN) / CHAR_IN)
TOP_IN = PAGE_H_IN - 0.75  # below the running head
BOTTOM_IN = 0.55  # above the footer
MAX_BARS = 24  # systems per section in the availability chart
MAX_TIMELINE_ROWS = 40
FINGERPRINT = "Report fingerprint (sha256 of every line above this one): "
COLUMNS = (("system", 22), ("kind", 27), ("availability", 16), ("excl. planned", 16),
           ("coverage", 10), ("unpl. down", 11), ("planned down", 13), ("degraded", 10),
           ("failures", 9), ("MTBF", 9), ("MTTR", 9))  # the least width of each column
MAX_NAME = 40  # a system's name is shortened (ending in ~) only beyond this
COLOURS = {"down": "#c0392b", "degraded": "#e6a23c"}


def text(value: object) -> str:
    """A string from outside (site file, journal, maintenance log) as one printable line."""
    return escape_text(str(value))


def companion_texts(report: AvailabilityReport) -> dict[str, str]:
    """The Markdown, JSON and CSV files of a report, byte for byte as they are written."""
    return {"md": render_markdown(report),
            "json": json.dumps(report_json(report), indent=2) + "\n",
            "csv": render_csv(report)}


def markdown_fingerprint(markdown: str) -> str:
    """The fingerprint the Markdown report ends with (sha256 of its text above that line)."""
    body, _, tail = markdown.rpartition(FINGERPRINT)
    return tail.strip() if body else hashlib.sha256(markdown.encode()).hexdigest()


def sha256_hex(data: str | bytes) -> str:
    """SHA-256 of a text (UTF-8) or of bytes, as hex."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def column_widths(report: AvailabilityReport) -> tuple[int, ...]:
    """The summary table's column widths: the system and kind columns as wide as the longest
    name (up to MAX_NAME), so the page shows every name whole."""
    systems = [a for s in report.sections for a in ([s.rollup] if s.rollup else []) + s.systems]
    name = max([len(text(a.system)) + 2 for a in systems] + [COLUMNS[0][1]])
    kind = max([len(text(a.kind)) + 1 for a in systems] + [15])
    return (min(name, MAX_NAME), min(kind, 28), *(w for _, w in COLUMNS[2:]))


def figures_row(a: SystemAvailability, widths: Sequence[int]) -> str:
    """One system's row of the summary table, with the Markdown report's formatting."""
    shown = [_pct(a.availability), _pct(a.availability_unplanned)] if a.enough_data \
        else [NOT_ENOUGH, NOT_ENOUGH]
    cells = [text(a.system), text(a.kind), *shown,
             f"{a.coverage * 100:.1f} %", _dur(a.down_unplanned_s), _dur(a.down_planned_s),
             _dur(a.degraded_s), str(a.failures), _dur(a.mtbf_s), _dur(a.mttr_s)]
    return _row(cells, widths)


def _cut(cell: str, width: int) -> str:
    """A cell that leaves at least one space before the next column (shortened with ~)."""
    return cell if len(cell) < width else cell[:width - 2] + "~"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    out = []
    for width, cell in zip(widths, cells, strict=True):
        out.append(_cut(cell, width).ljust(width))
    return "".join(out).rstrip()


class _Document:
    """Pages of monospace lines and charts, written one after another to a PdfPages."""

    def __init__(self, pdf: Any, head: str, foot: str) -> None:
        self.pdf, self.head, self.foot = pdf, head, foot
        self.fig: Any = None
        self.y = TOP_IN
        self.page = 0

    def new_page(self) -> Any:
        """Close the current page and start one with the running head and footer."""
        from matplotlib.figure import Figure

        self.close_page()
        self.page += 1
        self.fig = Figure(figsize=(PAGE_W_IN, PAGE_H_IN))
        self._put(MARGIN_IN, PAGE_H_IN - 0.4, self.head, size=8, colour="#555")
        self._put(MARGIN_IN, 0.3, f"{self.foot}  -  page {self.page}", size=7, colour="#555")
        self.y = TOP_IN
        return self.fig

    def close_page(self) -> None:
        """Write the current page, if any."""
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    def _put(self, x_in: float, y_in: float, s: str, *, size: float = FONT_PT,
             bold: bool = False, colour: str = "black", mono: bool = True) -> None:
        self.fig.text(x_in / PAGE_W_IN, y_in / PAGE_H_IN, s, fontsize=size, va="top",
                      ha="left", family="monospace" if mono else "sans-serif",
                      weight="bold" if bold else "normal", color=colour, parse_math=False)

    def room(self, lines: int) -> None:
        """Start a new page unless this many lines still fit on the current one."""
        if self.fig is None or self.y - lines * LINE_IN < BOTTOM_IN:
            self.new_page()

    def heading(self, title: str) -> None:
        """A section heading, kept with at least a few lines after it."""
        self.room(6)
        if self.y < TOP_IN:
            self.y -= LINE_IN * 0.8
        self._put(MARGIN_IN, self.y, title, size=12, bold=True, mono=False)
        self.y -= LINE_IN * 2.2

    def line(self, s: str = "", *, bold: bool = False, indent: int = 0,
             repeat: str | None = None) -> None:
        """One line of text, wrapped to the page width; `repeat` heads a continued table."""
        width = WIDTH_CHARS - indent
        for part in textwrap.wrap(s, width, subsequent_indent="  ", break_on_hyphens=False) \
                or [""]:
            if self.fig is None or self.y - LINE_IN < BOTTOM_IN:
                self.new_page()
                if repeat:
                    self._put(MARGIN_IN, self.y, repeat, bold=True)
                    self.y -= LINE_IN
            self._put(MARGIN_IN + indent * CHAR_IN, self.y, part, bold=bold)
            self.y -= LINE_IN

    def table(self, header: str, rows: Sequence[str], *, bold_first: bool = False) -> None:
        """A table whose header is repeated on every page it runs onto."""
        self.room(3)
        self.line(header, bold=True)
        for k, row in enumerate(rows):
            self.line(row, bold=bold_first and k == 0, repeat=header)
        self.y -= LINE_IN

    def chart_page(self) -> Any:
        """A fresh page for a chart; the caller adds axes to the returned figure."""
        return self.new_page()


@contextmanager
def _pdf_pages(path: Path, report: AvailabilityReport) -> Iterator[Any]:
    import matplotlib
    # Figures are made without pyplot and drawn by the PDF backend itself: no GUI backend is
    # chosen and the process's matplotlib backend is left as it was
    from matplotlib.backends.backend_pdf import PdfPages

    created = datetime.fromtimestamp(report.generated_ns // NS, timezone.utc)
    metadata = {"Title": f"Availability: {text(report.site_name)} "
                         f"{_local(report.start_ns, report.timezone)} to "
                         f"{_local(report.end_ns, report.timezone)}",
                "Author": f"dcim {dcim.__version__}", "Subject": "Availability report",
                "Creator": f"dcim {dcim.__version__}", "CreationDate": created,
                "ModDate": created}
    # TrueType subsets keep the text extractable (Type 3 glyph names are not always mapped)
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "sans-serif",
                                "font.sans-serif": ["DejaVu Sans"],
                                "font.monospace": ["DejaVu Sans Mono"], "hatch.linewidth": 0.6,
                                "pdf.compression": 6}):
        with PdfPages(path, metadata=metadata) as pdf:
            yield pdf


def render_pdf(report: AvailabilityReport, path: str | Path, *,
               companions: dict[str, str] | None = None) -> Path:
    """Write the report as a multi-page PDF and `<path>.sha256` beside it; return the path.
    `companions` (from `companion_texts`) are the files whose SHA-256 the evidence lists."""
    path = Path(path)
    if companions is None:
        companions = companion_texts(report)
    elif "md" not in companions:  # the fingerprint is the Markdown report's
        companions = {"md": render_markdown(report), **companions}
    tz = report.timezone
    period = f"{_local(report.start_ns, tz)} to {_local(report.end_ns, tz)} ({text(tz)})"
    with _pdf_pages(path, report) as pdf:
        doc = _Document(pdf, f"Availability report  -  {text(report.site_name)} "
                             f"({text(report.site_id)})  -  {period}",
                        f"dcim {dcim.__version__}, generated {_local(report.generated_ns, tz)} "
                        f"{text(tz)}")
        _title_page(doc, report, period, companions)
        _summary(doc, report)
        _availability_chart(doc, report)
        _timeline_chart(doc, report)
        _incidents(doc, report)
        _planned(doc, report)
        _evidence(doc, report, companions)
        doc.close_page()
    digest = sha256_hex(path.read_bytes())
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n")
    return path


def _title_page(doc: _Document, report: AvailabilityReport, period: str,
                companions: dict[str, str]) -> None:
    tz = report.timezone
    fig = doc.new_page()
    fig.text(MARGIN_IN / PAGE_W_IN, 0.78, "Availability report", fontsize=26, weight="bold",
             parse_math=False)
    name = textwrap.shorten(f"{text(report.site_name)} ({text(report.site_id)})", 90)
    fig.text(MARGIN_IN / PAGE_W_IN, 0.71, name, fontsize=16, parse_math=False)
    doc.y = PAGE_H_IN * 0.62
    generated = datetime.fromtimestamp(report.generated_ns / NS, timezone.utc)
    for label, value in (
            ("Site", f"{text(report.site_name)} ({text(report.site_id)})"),
            ("Period", period),
            ("Length", f"{_dur((report.end_ns - report.start_ns) / NS)}; resolution "
                       f"{report.step_s:g} s"),
            ("Time zone", f"{text(tz)} (every time in this report is site-local)"),
            ("Generated", f"{_local(report.generated_ns, tz)} {text(tz)} "
                          f"({generated:%Y-%m-%d %H:%M:%S} UTC)"),
            ("Software", f"dcim {dcim.__version__}"),
            ("Systems", f"{sum(len(s.systems) for s in report.sections)} in "
                        f"{sum(1 for s in report.sections if s.systems)} sections; "
                        f"{len(report.incidents())} incidents"),
            ("Fingerprint", f"{markdown_fingerprint(companions['md'])} (of the Markdown report, "
                            "as it ends)"),
            ("PDF SHA-256", "in the .sha256 file beside this PDF (a file cannot hold its own)")):
        doc.line(f"{label:<13}{value}")
    covered = [a.coverage for s in report.sections for a in s.systems]
    if covered and sum(covered) / len(covered) < MIN_COVERAGE:
        doc.line()
        doc.line(f"Not enough data: the store covers {sum(covered) / len(covered) * 100:.1f} % "
                 f"of the period on average (at least {MIN_COVERAGE:.0%} for an availability "
                 "figure); the figures say so system by system.", bold=True)
    doc.line()
    doc.line("Contents: summary per section; availability per section (chart); incident "
             "timeline (chart); incidents with their alarm events; planned maintenance; "
             "evidence and definitions.")


def _summary(doc: _Document, report: AvailabilityReport) -> None:
    widths = column_widths(report)
    header = _row([name for name, _ in COLUMNS], widths)
    doc.new_page()
    for section in report.sections:
        if not section.systems:
            continue
        doc.heading(f"Summary: {section.title}")
        rows = [figures_row(a, widths) for a in section.systems]
        if section.rollup is not None:
            doc.line(f"{len(section.systems)} systems; the first row is their roll-up (the "
                     "mean); every system follows.")
            rows.insert(0, figures_row(section.rollup, widths))
        doc.table(header, rows, bold_first=section.rollup is not None)


def _availability_chart(doc: _Document, report: AvailabilityReport) -> None:
    sections = [s for s in report.sections if s.systems]
    if not sections:
        return
    fig = doc.chart_page()
    fig.text(MARGIN_IN / PAGE_W_IN, TOP_IN / PAGE_H_IN, "Availability per section",
             fontsize=12, weight="bold", va="top", parse_math=False)
    cols = 2 if len(sections) > 1 else 1
    rows = -(-len(sections) // cols)
    grid = fig.add_gridspec(rows, cols, left=0.11, right=0.97, top=0.86, bottom=0.08,
                            hspace=0.35, wspace=0.45)
    for k, section in enumerate(sections):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        known = [a for a in section.systems if a.availability is not None and a.enough_data]
        known.sort(key=lambda a: (a.availability or 0.0, a.system))
        shown = ([section.rollup] if section.rollup and section.rollup.enough_data else []) \
            + known[:MAX_BARS - 1]
        values = [(a.availability or 0.0) * 100 for a in shown]
        names = [text(a.system) for a in shown]
        ax.barh(range(len(shown)), values, color=["#2e86c1" if a is section.rollup else
                                                  "#5d6d7e" for a in shown])
        ax.set_yticks(range(len(shown)), names, fontsize=6)
        ax.invert_yaxis()
        low = min(values, default=100.0)
        ax.set_xlim(max(0.0, low - max(0.5, (100 - low) * 0.15)), 100.0)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_xlabel("availability, %", fontsize=6)
        left_out = len(section.systems) - len(known[:MAX_BARS - 1])
        note = f"; {left_out} more not shown" if left_out else ""
        ax.set_title(f"{section.title}: least available first{note}", fontsize=8, loc="left")
        for y, a in enumerate(shown):  # the figure beside each bar short of 100 %
            if values[y] < 100.0:
                ax.text(values[y], y, f" {_pct(a.availability)}", va="center", ha="left",
                        fontsize=5.5, parse_math=False)
    doc.close_page()


def _timeline_chart(doc: _Document, report: AvailabilityReport) -> None:
    incidents = report.incidents()
    fig = doc.chart_page()
    fig.text(MARGIN_IN / PAGE_W_IN, TOP_IN / PAGE_H_IN, "Incident timeline", fontsize=12,
             weight="bold", va="top", parse_math=False)
    ax = fig.add_axes((0.14, 0.1, 0.83, 0.74))
    names = sorted({i.system for i in incidents})
    rows = names[:MAX_TIMELINE_ROWS]
    span_h = (report.end_ns - report.start_ns) / NS / 3600
    for y, name in enumerate(rows):
        for i in incidents:
            if i.system == name:
                ax.barh(y, i.duration_s / 3600, left=(i.start_ns - report.start_ns) / NS / 3600,
                        color=COLOURS[i.state], hatch="//" if i.planned else None,
                        edgecolor="#555" if i.planned else None)
    ax.set_yticks(range(len(rows)), [text(n) for n in rows], fontsize=6)
    ax.set_xlim(0, span_h)
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_xlabel(f"hours from {_local(report.start_ns, report.timezone)} "
                  f"({text(report.timezone)})", fontsize=7)
    more = f"; {len(names) - len(rows)} more systems in the table" if len(names) > len(rows) \
        else ""
    ax.set_title(f"red down, amber degraded, hatched planned{more}" if incidents
                 else "no incidents in the period", fontsize=8, loc="left")
    doc.close_page()


def _incidents(doc: _Document, report: AvailabilityReport) -> None:
    tz = report.timezone
    incidents = report.incidents()
    doc.new_page()
    doc.heading(f"Incidents ({len(incidents)})")
    if not incidents:
        doc.line("None in the period.")
        return
    doc.line("Every incident (the CSV has one row each), oldest first, with the alarm journal "
             "events that concern it: raised, acknowledged (by whom), cleared, reset.")
    doc.line()
    w = min(MAX_NAME, max([len(text(i.system)) + 2 for i in incidents] + [22]))
    header = (f"{'system':<{w}}{'state':<10}{'start':<18}{'end':<18}{'duration_s':>11}  "
              f"{'duration':<10}{'planned':<9}cause")
    doc.line(header, bold=True)
    for i in incidents:
        events = report.events_of(i)
        doc.room(1 + min(len(events), 3))
        doc.line(f"{_cut(text(i.system), w):<{w}}{i.state:<10}{_local(i.start_ns, tz):<18}"
                 f"{_local(i.end_ns, tz):<18}{i.duration_s:>11.0f}  {_dur(i.duration_s):<10}"
                 f"{'yes' if i.planned else 'no':<9}{text(i.cause)}", repeat=header)
        for e in events:
            doc.line(_event_text(e, tz, text), indent=4, repeat=header)
        if not events:
            doc.line("no alarm journal events", indent=4, repeat=header)


def _planned(doc: _Document, report: AvailabilityReport) -> None:
    if not report.planned:
        return
    tz = report.timezone
    doc.heading("Planned maintenance (from the maintenance log)")
    w = min(MAX_NAME, max([len(text(p.unit)) + 2 for p in report.planned] + [22]))
    header = f"{'unit':<{w}}{'start':<18}{'end':<18}{'ticket':<16}reason"
    doc.table(header, [f"{_cut(text(p.unit), w):<{w}}{_local(p.start_ns, tz):<18}"
                       f"{_local(p.end_ns, tz):<18}{_cut(text(p.ticket or '-'), 16):<16}"
                       f"{text(p.reason)}" for p in report.planned])


def _evidence_lines(report: AvailabilityReport, companions: dict[str, str]) -> list[str]:
    ev = report.evidence
    lines = [f"Store: {text(ev.get('store'))} {text(ev.get('store_path', ''))}".rstrip(),
             f"Series read: {ev['series_read']:,}; good samples behind these figures: "
             f"{ev['good_samples']:,}; resolution {report.step_s:g} s"]
    if "site_file" in ev:
        lines.append(f"Site file: {text(ev['site_file'])}")
        lines.append(f"Site file SHA-256: {ev['site_file_sha256']}")
    journal = ev.get("journal")
    if journal is not None:
        problem = journal.get("problem") or f"at event #{journal['first_bad_seq']}"
        state = "intact" if journal["chain_ok"] else f"BROKEN: {text(problem)}"
        lines += [f"Alarm journal: {text(journal['path'])}, {journal['events']:,} events, hash "
                  f"chain {state}",
                  f"Journal head: #{journal['head_seq']} SHA-256 {journal['head_sha256']}"]
    else:
        lines.append("Alarm journal: not given (incidents are listed without alarm events)")
    lines += ["", f"Markdown report fingerprint (sha256 of its text above the fingerprint "
                  f"line): {markdown_fingerprint(companions['md'])}"]
    names = {"md": "Markdown report", "json": "JSON report", "csv": "CSV of the incidents"}
    for kind, body in companions.items():
        lines.append(f"SHA-256 of the {names.get(kind, kind)} (.{kind}): {sha256_hex(body)}")
    return lines


def _evidence(doc: _Document, report: AvailabilityReport, companions: dict[str, str]) -> None:
    doc.heading("Evidence")
    for line in _evidence_lines(report, companions):
        doc.line(line)
    doc.line()
    header = (f"{'section':<16}{'systems':>8}{'enough data':>13}{'coverage min':>14}"
              f"{'coverage mean':>15}")
    rows = []
    for s in report.sections:
        if s.systems:
            cov = [a.coverage * 100 for a in s.systems]
            rows.append(f"{text(s.title)[:15]:<16}{len(s.systems):>8}"
                        f"{sum(a.enough_data for a in s.systems):>13}{min(cov):>12.1f} %"
                        f"{sum(cov) / len(cov):>13.1f} %")
    doc.line("Coverage (the share of the period with a known state) per section:")
    doc.table(header, rows)
    doc.heading("Definitions")
    for item in DEFINITIONS:
        doc.line(f"- {item}")


DEFINITIONS: tuple[str, ...] = (
    "Availability = serving time / known time, where serving is up or degraded; \"excl. "
    "planned\" leaves planned downtime out of both.",
    f"Coverage = known time / period. A step without a good sample is unknown, never counted "
    f"as up; under {MIN_COVERAGE:.0%} coverage the availability reads \"{NOT_ENOUGH}\".",
    "A rack is down when no feed carries load, degraded on one feed; a unit is down while its "
    "status word reports a trip; a redundancy group is down below N and degraded below its "
    "design level; the site is degraded while not concurrently maintainable.",
    "MTBF = serving time / unplanned failures; MTTR = unplanned downtime / unplanned failures. "
    "Durations are multiples of the resolution.",
    "The figures are those of the JSON, CSV and Markdown files of the same report; their SHA-256 "
    "are listed above.",
)

__all__ = ["companion_texts", "figures_row", "markdown_fingerprint", "render_pdf", "sha256_hex"]
