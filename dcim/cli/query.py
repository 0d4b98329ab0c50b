"""CLI verb `dcim query`: read stored samples back, on every backend, through the Storage
contract only (read_latest, read_range, read_aggregate).

`dcim query DEVICE` lists every point of the device with its newest value; `dcim query
DEVICE.POINT` prints the point's samples over a period, raw or aggregated per `--every`.
The pure parts (target lookup, time parsing, cleaning and rendering) are functions of their
inputs; `run_query` is the only part that reads the store.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import difflib
import io
import json
import math
import sys
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dcim.storage.base import Aggregate, Quality, SeriesKey, Storage

if TYPE_CHECKING:
    from dcim.site import Site

NS = 1_000_000_000
MAX_BUCKETS = 100_000  # per aggregated query: beyond this the range or --every is a mistake
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula

Cell = str | float | int | None


class QueryError(ValueError):
    """A query that cannot be run as asked (exit 2); the message says why and what would do."""


@dataclass(frozen=True, slots=True)
class Target:
    """What to query: a device, or one point of it."""

    device: str
    point: str | None = None


@dataclass
class Table:
    """The answer: named columns, rows of cells, and what the rows are of (for JSON)."""

    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    meta: dict[str, Any] = field(default_factory=dict)


def close_matches(kind: str, name: str, choices: Sequence[str], where: str = "") -> str:
    """The message for an unknown name: its close matches (difflib), or every choice when
    there are few."""
    near = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    text = f"unknown {kind} {clean(name)!r}{where}"
    if near:
        return f"{text}; did you mean {', '.join(near)}?"
    if len(choices) <= 12:
        return f"{text}; known: {', '.join(choices)}"
    return text


def parse_target(text: str, points: Mapping[str, Mapping[str, str]]) -> Target:
    """DEVICE or DEVICE.POINT against the site's device -> point -> unit map (QueryError
    naming close matches). Device ids may hold dots, so a whole known id wins."""
    if text in points:
        return Target(text)
    device, dot, point = text.rpartition(".")
    if dot and device in points:
        if point not in points[device]:
            raise QueryError(close_matches("point", point, list(points[device]),
                                           f" of {device}"))
        return Target(device, point)
    raise QueryError(close_matches("device", device if dot else text, list(points)))


def parse_duration_s(text: str) -> float:
    """'90s', '30m', '1h', '7d' -> seconds (ValueError otherwise)."""
    from dcim.durations import parse_duration

    return parse_duration(text)


def parse_time(text: str, now_ns: int, tz: tzinfo) -> int:
    """A duration before now ('1h', '7d') or an ISO 8601 time (in tz when it has no offset)
    -> ns since the epoch; QueryError when it is neither."""
    try:
        seconds = parse_duration_s(text)
    except ValueError:
        pass
    else:
        if seconds * NS > now_ns:
            raise QueryError(f"{clean(text)} before now is before 1970")
        return now_ns - int(seconds * NS)
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"expected a duration (30m, 1h, 7d) or an ISO 8601 time "
                         f"(2026-12-01T08:00), got {clean(text)!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=tz)
    return int(stamp.timestamp()) * NS + stamp.microsecond * 1000


def format_time(time_ns: int, tz: tzinfo) -> str:
    """ISO 8601 in tz with its offset; milliseconds only when the time has them."""
    stamp = datetime.fromtimestamp(time_ns // NS, tz).replace(
        microsecond=(time_ns % NS) // 1000)
    return stamp.isoformat(timespec="milliseconds" if time_ns % NS else "seconds")


def clean(text: str) -> str:
    """text with control and format characters (escapes, bidi overrides, newlines) written
    as \\uXXXX, so nothing stored reaches a terminal as a command."""
    if text.isprintable():
        return text
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                   else c for c in text)


def csv_cell(cell: Cell) -> str:
    """One CSV cell: text cleaned and, when a spreadsheet would run it as a formula, led by
    an apostrophe; numbers as Python writes them (shortest exact), NaN and None empty."""
    if cell is None:
        return ""
    if isinstance(cell, float):
        return repr(cell) if math.isfinite(cell) else ""
    if isinstance(cell, int):
        return str(cell)
    text = clean(cell)
    return "'" + text if cell.startswith(FORMULA_STARTS) else text


def _table_cell(cell: Cell) -> str:
    if cell is None or (isinstance(cell, float) and not math.isfinite(cell)):
        return "-"
    if isinstance(cell, float):
        return format(cell, ".12g")
    return clean(str(cell))


def _json_cell(cell: Cell) -> Cell:
    if isinstance(cell, float) and not math.isfinite(cell):
        return None  # JSON has no NaN
    return cell


def render(table: Table, fmt: str) -> str:
    """The table as 'table' (aligned, for people), 'csv' or 'json'."""
    if fmt == "json":
        rows = [{c: _json_cell(v) for c, v in zip(table.columns, row)} for row in table.rows]
        return json.dumps({**table.meta, "rows": rows}, indent=2, ensure_ascii=True) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows([csv_cell(v) for v in row] for row in table.rows)
        return out.getvalue()
    cells = [list(table.columns)] + [[_table_cell(v) for v in row] for row in table.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in table.rows)
               for i in range(len(table.columns))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w)
                       for c, w, num in zip(r, widths, numeric)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def _quality(q: Quality) -> str:
    return q.name.lower()


@dataclass(frozen=True)
class Period:
    """The rows asked of one point: [start_ns, end_ns), raw or aggregated."""

    start_ns: int
    end_ns: int
    every_ns: int | None = None
    fn: Aggregate = Aggregate.MEAN
    limit: int | None = None  # keep the newest rows only


def check_period(period: Period, max_buckets: int = MAX_BUCKETS) -> None:
    """QueryError when the period is empty or would make too many buckets."""
    if period.end_ns <= period.start_ns:
        raise QueryError("--since must be before --until")
    if period.every_ns is not None:
        if period.every_ns < 1_000_000:
            raise QueryError("--every must be at least 1ms")
        buckets = (period.end_ns - period.start_ns) // period.every_ns + 1
        if buckets > max_buckets:
            raise QueryError(f"{buckets} buckets of --every over the period, more than "
                             f"{max_buckets}: raise --every or shorten --since/--until")


async def run_query(storage: Storage, target: Target, measurement: str,
                    units: Mapping[str, str], period: Period, tz: tzinfo) -> Table:
    """The table of a device's newest values, or of one point's rows over the period."""
    if target.point is None:
        keys = {p: SeriesKey(measurement, target.device, p) for p in units}
        latest = await storage.read_latest(keys.values())
        rows: list[tuple[Cell, ...]] = []
        for name, key in keys.items():
            s = latest.get(key)
            rows.append((name, s.value if s else None, units[name] or None,
                         _quality(s.quality) if s else None,
                         format_time(s.time_ns, tz) if s else None))
        return Table(("point", "value", "unit", "quality", "time"), rows,
                     {"device": target.device})
    key = SeriesKey(measurement, target.device, target.point)
    meta: dict[str, Any] = {
        "device": target.device, "point": target.point, "unit": units[target.point] or None,
        "since": format_time(period.start_ns, tz), "until": format_time(period.end_ns, tz)}
    if period.every_ns is None:
        samples = await storage.read_range(key, period.start_ns, period.end_ns)
        if period.limit is not None:
            samples = samples[-period.limit:] if period.limit else []
        rows = [(format_time(s.time_ns, tz), s.value, _quality(s.quality)) for s in samples]
        return Table(("time", "value", "quality"), rows, meta)
    buckets = await storage.read_aggregate(key, period.start_ns, period.end_ns,
                                           period.every_ns, period.fn)
    if period.limit is not None:
        buckets = buckets[-period.limit:] if period.limit else []
    meta |= {"agg": period.fn.value, "every_s": period.every_ns / NS}
    rows = [(format_time(b.start_ns, tz), b.value, b.count) for b in buckets]
    return Table(("time", "value", "count"), rows, meta)


def site_points(site: Site) -> dict[str, dict[str, str]]:
    """device -> point -> unit ('' without one) of a loaded Site."""
    return site.point_units()


async def _query(args: argparse.Namespace) -> int:
    from dcim.site import load_site
    from dcim.storage.factory import open_storage

    site = load_site(args.site)
    tz = ZoneInfo(site.config.site.timezone)
    points = site_points(site)
    target = parse_target(args.target, points)
    now_ns = time.time_ns()
    every_ns = None
    if args.every is not None:
        try:
            every_ns = int(parse_duration_s(args.every) * NS)
        except ValueError as exc:
            raise QueryError(f"--every: {exc}") from None
    elif args.agg is not None:
        raise QueryError("--agg needs --every (the bucket width, such as --every 1m)")
    period = Period(parse_time(args.since, now_ns, tz),
                    parse_time(args.until, now_ns, tz) if args.until else now_ns + 1,
                    every_ns, Aggregate(args.agg or "mean"), args.limit)
    if target.point is not None:
        check_period(period)
    elif args.every is not None or args.limit is not None:
        raise QueryError("--every and --limit need DEVICE.POINT (DEVICE alone shows the "
                         "newest value of each point)")
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    try:
        table = await run_query(storage, target, site.devices[target.device].device_type,
                                points[target.device], period, tz)
    finally:
        await storage.close()
    sys.stdout.write(render(table, args.format))
    if not table.rows and args.format == "table":
        print(f"no samples of {args.target} between {table.meta.get('since')} and "
              f"{table.meta.get('until')}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from dcim.site import ConfigError
    from dcim.storage.base import StorageError

    try:
        return asyncio.run(_query(args))
    except QueryError as exc:
        print(f"dcim query: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, StorageError) as exc:
        print(exc, file=sys.stderr)
        return 1


def _limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("--limit must be 0 or more")
    return value


def add_parsers(sub: Any) -> None:
    """Add `dcim query` to the top-level subparsers."""
    q = sub.add_parser(
        "query", help="read stored samples back: a device's newest values, a point's history",
        description="Read the store of a site (any backend). DEVICE alone lists every point of "
                    "the device with its newest value, unit, quality and time; DEVICE.POINT "
                    "prints the point's samples from --since to --until, raw or aggregated "
                    "per --every. Times print in the site's timezone with their offset. An "
                    "unknown device or point exits 2 naming the close matches.")
    q.add_argument("target", metavar="DEVICE[.POINT]", help="device id, or device.point")
    q.add_argument("site", nargs="?", default="config/cyberport5.yaml", help="site YAML file")
    q.add_argument("--since", default="1h",
                   help="start: a duration before now (30m, 1h, 7d) or an ISO 8601 time, "
                        "site-local unless it has an offset (default 1h)")
    q.add_argument("--until", default=None, help="end, as --since (default: now)")
    q.add_argument("--every", default=None, metavar="SPAN",
                   help="aggregate into buckets this wide (1m, 15m, 1h), aligned to the epoch")
    q.add_argument("--agg", choices=[a.value for a in Aggregate], default=None,
                   help="aggregate of the good samples per bucket (default mean)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table for people; csv (formula-safe) or json for tools")
    q.add_argument("--limit", type=_limit, default=None, metavar="N",
                   help="print only the newest N rows")
    q.set_defaults(func=_run)
