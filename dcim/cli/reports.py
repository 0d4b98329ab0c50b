"""CLI verb of the reports: `dcim report availability` and `dcim report schedule`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

NS = 1_000_000_000


def _when(text: str, tz: str) -> int:
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=ZoneInfo(tz))
    return int(stamp.timestamp() * NS)


async def _availability(args: argparse.Namespace) -> int:
    from dcim.analytics.availability import MIN_COVERAGE
    from dcim.reports import (build_availability, load_planned, open_journal, plot_timeline,
                              render_csv, render_markdown, report_json)
    from dcim.site import load_site
    from dcim.storage.factory import open_storage

    site = load_site(args.site)
    tz = site.config.site.timezone
    end_ns = _when(args.to, tz) if args.to else time.time_ns()
    start_ns = _when(args.start, tz) if args.start else end_ns - int(args.days * 86400 * NS)
    if end_ns <= start_ns:
        print(f"--from ({args.start}) must be before --to ({args.to})", file=sys.stderr)
        return 2
    planned = load_planned(args.planned, site) if args.planned else []
    journal = open_journal(site, args.journal)
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    try:
        report = await build_availability(site, storage, start_ns, end_ns, step_s=args.step,
                                          planned=planned, journal=journal, source=args.source,
                                          progress=sys.stderr.isatty())
    finally:
        await storage.close()
        if journal is not None:
            journal.close()
    if not report.enough_data:
        print(f"note: not enough data: the store covers {report.coverage:.1%} of the period "
              "on average; availability figures read \"not enough data\" where a system's "
              f"coverage is under {MIN_COVERAGE:.0%} (docs/reports.md)", file=sys.stderr)
    if args.format == "pdf":
        from dcim.report_pdf import render_pdf

        render_pdf(report, args.output)
        print(f"wrote {args.output} and {args.output}.sha256 ({len(report.incidents())} "
              "incidents)", file=sys.stderr)
        return 0
    text: str
    if args.format == "json":
        text = json.dumps(report_json(report), indent=2) + "\n"
    elif args.format == "csv":
        text = render_csv(report)
    else:
        text = render_markdown(report)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({len(report.incidents())} incidents)", file=sys.stderr)
    if args.plot:
        try:
            plot_timeline(report, args.plot)
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 1
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from dcim.reports import MaintenanceLogError
    from dcim.site import ConfigError

    if args.format == "pdf" and args.output == "-":
        print("--format pdf needs -o FILE.pdf", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_availability(args))
    except (ConfigError, MaintenanceLogError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1


def add_parsers(sub: Any) -> None:
    """Add `dcim report availability|schedule` to the top-level subparsers."""
    r = sub.add_parser("report", help="reports for auditors (availability)",
                       description="Reports built from the store and the alarm journal.")
    kinds = r.add_subparsers(dest="report_kind", required=True, metavar="KIND")
    a = kinds.add_parser(
        "availability", help="uptime and availability per system and period, with evidence",
        description="Availability of every rack's IT load, every unit with a status word, the "
                    "utility feeds, the redundancy groups and Tier III concurrent "
                    "maintainability over a period, with planned and unplanned downtime apart, "
                    "MTBF/MTTR, data coverage, every incident with its alarm journal events, "
                    "and the evidence (store, site file hash, journal chain head).")
    a.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
    a.add_argument("--from", dest="start", default=None,
                   help="period start, ISO time, site-local unless it has an offset")
    a.add_argument("--to", default=None, help="period end (default: now)")
    a.add_argument("--days", type=float, default=30.0,
                   help="period length when --from is not given (default 30)")
    a.add_argument("--step", type=float, default=60.0,
                   help="resolution in seconds (default 60): durations are multiples of it")
    a.add_argument("--planned", default=None,
                   help="maintenance log (YAML list of unit, start, end, reason, ticket)")
    a.add_argument("--journal", default=None, help="alarm journal (default: the site's)")
    a.add_argument("--format", choices=("md", "json", "csv", "pdf"), default="md",
                   help="md: the report; json: everything as data; csv: the incidents; "
                        "pdf: the report with charts and evidence for auditors (needs -o)")
    a.add_argument("--source", choices=("auto", "samples"), default="auto",
                   help="auto: the live state's recorded transitions where it ran, samples "
                        "elsewhere (fast at audit scale); samples: re-aggregate every sample")
    a.add_argument("-o", "--output", default="-", help="output file (default stdout)")
    a.add_argument("--plot", default=None, help="also write a PNG timeline of the incidents")
    a.set_defaults(func=_run)
    from dcim.report_schedule import add_schedule_parser

    add_schedule_parser(kinds)
