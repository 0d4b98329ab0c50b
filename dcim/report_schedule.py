"""Monthly availability reports: the previous calendar month, in the site's time zone.

`dcim report schedule SITE --out-dir reports` builds the availability report of the month
before the one it runs in (site-local: a UTC machine at 23:30 on 30 November is already in
December in Hong Kong, so it reports November) and writes, into `reports/2026-11/`:

    availability-<site>-2026-11.md / .json / .csv / .pdf, the PDF's .sha256, and SHA256SUMS

A month already written is left alone (exit 0, so a timer that catches up does not fail)
unless `--force`; the files appear together or not at all (written in a hidden temporary
folder, then renamed). Run it from a systemd timer (docs/reports-pdf.md) or cron.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from dcim.reports import AvailabilityReport
    from dcim.site import Site

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Month:
    """One calendar month in a time zone: [start, end) as aware site-local datetimes."""

    label: str  # YYYY-MM
    start: datetime
    end: datetime

    @property
    def start_ns(self) -> int:
        """The month's first instant, ns since the epoch."""
        return int(self.start.timestamp()) * NS

    @property
    def end_ns(self) -> int:
        """The next month's first instant, ns since the epoch."""
        return int(self.end.timestamp()) * NS


def month(year: int, number: int, tz: str) -> Month:
    """The calendar month `year-number` from local midnight on the 1st to the next 1st."""
    zone = ZoneInfo(tz)
    after = (year + 1, 1) if number == 12 else (year, number + 1)
    return Month(f"{year:04d}-{number:02d}", datetime(year, number, 1, tzinfo=zone),
                 datetime(*after, 1, tzinfo=zone))


def previous_month(now: datetime, tz: str) -> Month:
    """The calendar month before the one `now` (an aware time) falls in, in time zone tz."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone (a naive time is ambiguous)")
    local = now.astimezone(ZoneInfo(tz))
    return month(local.year - 1, 12, tz) if local.month == 1 else \
        month(local.year, local.month - 1, tz)


def parse_month(text: str, tz: str) -> Month:
    """A month given as YYYY-MM."""
    try:
        stamp = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"--month: expected YYYY-MM (such as 2026-11), got {text!r}") from None
    return month(stamp.year, stamp.month, tz)


def report_files(site_id: str, label: str) -> dict[str, str]:
    """The file names of one month's report, by kind (md, json, csv, pdf)."""
    return {kind: f"availability-{site_id}-{label}.{kind}" for kind in ("md", "json", "csv",
                                                                         "pdf")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `dcim report schedule`."""
    p.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
    p.add_argument("--out-dir", default="reports",
                   help="folder that gets one sub-folder per month (default reports)")
    p.add_argument("--month", default=None,
                   help="YYYY-MM to report instead of the previous month (site-local)")
    p.add_argument("--step", type=float, default=60.0, help="resolution in seconds (default 60)")
    p.add_argument("--planned", default=None,
                   help="maintenance log (YAML list of unit, start, end, reason, ticket)")
    p.add_argument("--journal", default=None, help="alarm journal (default: the site's)")
    p.add_argument("--force", action="store_true",
                   help="write the month again even when its folder exists")


DESCRIPTION = ("Availability report of the previous calendar month in the site's time zone "
               "(or --month), written as Markdown, JSON, CSV and PDF (with its SHA-256) into "
               "OUT_DIR/YYYY-MM/. A month already written is skipped unless --force. Meant "
               "for a monthly timer (docs/reports-pdf.md).")


def add_schedule_parser(kinds: Any) -> None:
    """Register `dcim report schedule` under the `dcim report` subparsers."""
    p = kinds.add_parser("schedule", help="the previous month's report as md/json/csv/pdf",
                         description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def schedule_main(argv: Sequence[str] | None = None, *,
                  clock: Callable[[], float] = time.time) -> int:
    """`dcim report schedule` as a function: parse argv, write the month, return the exit code."""
    p = argparse.ArgumentParser(prog="dcim report schedule", description=DESCRIPTION)
    add_arguments(p)
    return run(p.parse_args(argv), clock=clock)


def run(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """Write the month's report for parsed arguments; errors are printed, not raised."""
    from dcim.reports import MaintenanceLogError
    from dcim.site import ConfigError

    try:
        import matplotlib  # noqa: F401  (the PDF needs it: fail before reading a month)
    except ImportError:
        print("dcim report schedule needs matplotlib for the PDF (pip install matplotlib)",
              file=sys.stderr)
        return 1
    try:
        return asyncio.run(_schedule(args, clock))
    except (ConfigError, MaintenanceLogError, ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1


async def _schedule(args: argparse.Namespace, clock: Callable[[], float]) -> int:
    from dcim.report_pdf import companion_texts, render_pdf, sha256_hex
    from dcim.site import load_site

    site = load_site(args.site)
    tz = site.config.site.timezone
    now = datetime.fromtimestamp(clock(), timezone.utc)
    period = parse_month(args.month, tz) if args.month else previous_month(now, tz)
    if period.end > now:
        print(f"note: {period.label} has not ended yet in {tz}; the report covers it only up "
              "to now", file=sys.stderr)
    out_dir = Path(args.out_dir)
    final = out_dir / period.label
    if final.exists() and not args.force:
        print(f"{final} exists: {period.label} was already reported (--force writes it again)",
              file=sys.stderr)
        return 0
    report = await _build(site, args, period, clock)
    names = report_files(site.id, period.label)
    texts = companion_texts(report)
    work = out_dir / f".{period.label}.partial"
    if work.exists():
        shutil.rmtree(work)  # left by a run that died half-way
    work.mkdir(parents=True)
    for kind in ("md", "json", "csv"):
        (work / names[kind]).write_text(texts[kind])
    render_pdf(report, work / names["pdf"], companions=texts)
    sums = [f"{sha256_hex((work / n).read_bytes())}  {n}" for n in names.values()]
    (work / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    print(f"wrote {final}/ ({period.label}, {len(report.incidents())} incidents): "
          + ", ".join(names.values()), file=sys.stderr)
    return 0


async def _build(site: Site, args: argparse.Namespace, period: Month,
                 clock: Callable[[], float]) -> AvailabilityReport:
    """The availability report of the month, from the site's store and alarm journal."""
    from dcim.reports import build_availability, load_planned, open_journal
    from dcim.storage.factory import open_storage

    planned = load_planned(args.planned, site) if args.planned else []
    journal = open_journal(site, args.journal)
    end_ns = min(period.end_ns, int(clock() * NS))
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    try:
        return await build_availability(site, storage, period.start_ns, end_ns,
                                        step_s=args.step, planned=planned, journal=journal,
                                        progress=sys.stderr.isatty(), clock=clock)
    finally:
        await storage.close()
        if journal is not None:
            journal.close()


if __name__ == "__main__":
    sys.exit(schedule_main())

__all__ = ["Month", "add_schedule_parser", "month", "parse_month", "previous_month",
           "report_files", "schedule_main"]
