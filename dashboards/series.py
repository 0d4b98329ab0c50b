"""What /api/series may ask for: a stored point of the site's devices in a bounded window.

Pure: the query string in, a validated `SeriesRequest` (or ValueError saying what is wrong)
out. Names are looked up in the site's own devices and points, never passed on raw.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from dcim.durations import parse_duration
from dcim.storage.base import Aggregate, Bucket, Sample, SeriesKey

MAX_SERIES_ROWS = 10_000  # rows or buckets per /api/series answer (400 beyond)
MIN_SERIES_EVERY_NS = 1_000_000_000
SERIES_PARAMS = frozenset({"device", "point", "since", "until", "every", "agg"})


class SeriesStore(Protocol):
    """The two reads /api/series makes: a Storage's (dcim/storage/base.py)."""

    async def read_range(self, series: SeriesKey, start_ns: int, end_ns: int, *,
                         good_only: bool = False) -> list[Sample]:
        """Raw samples with start_ns <= time < end_ns, oldest first."""

    async def read_aggregate(self, series: SeriesKey, start_ns: int, end_ns: int,
                             every_ns: int, fn: Aggregate) -> list[Bucket]:
        """Good samples in epoch-aligned buckets of every_ns."""


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """One validated /api/series request: a series of the site and a bounded window."""

    key: SeriesKey
    unit: str
    start_ns: int
    end_ns: int
    every_ns: int | None  # None: raw samples
    fn: Aggregate


def series_request(query: Mapping[str, str],
                   points: Mapping[str, tuple[str, Mapping[str, str]]],
                   now_ns: int) -> SeriesRequest:
    """The request a query string asks for, or ValueError saying what is wrong. Names are
    looked up in the site's own devices and points; buckets are at most MAX_SERIES_ROWS."""
    extra = sorted(set(query) - SERIES_PARAMS)
    if extra:
        raise ValueError(f"unknown parameter {_shown(extra[0])}; "
                         f"known: {', '.join(sorted(SERIES_PARAMS))}")
    device, point = query.get("device", ""), query.get("point", "")
    if device not in points:
        raise ValueError(_unknown("device", device, list(points)))
    measurement, units = points[device]
    if point not in units:
        raise ValueError(_unknown("point", point, list(units), f" of {device}"))
    start_ns = _instant("since", query.get("since", "1h"), now_ns)
    end_ns = _instant("until", query["until"], now_ns) if "until" in query else now_ns + 1
    if end_ns <= start_ns:
        raise ValueError("since must be before until")
    every_ns = None
    if "every" in query:
        every_ns = int(_seconds("every", query["every"]) * 1e9)
        if every_ns < MIN_SERIES_EVERY_NS:
            raise ValueError("every must be at least 1s")
        buckets = -((start_ns - start_ns % every_ns - end_ns) // every_ns)  # ceil
        if buckets > MAX_SERIES_ROWS:
            raise ValueError(f"{buckets} buckets, more than {MAX_SERIES_ROWS}: raise every or "
                             "narrow since and until")
    elif "agg" in query:
        raise ValueError("agg needs every (the bucket width, such as every=1m)")
    names = [a.value for a in Aggregate]
    if query.get("agg", "mean") not in names:
        raise ValueError(f"agg must be one of {', '.join(names)}, not {_shown(query['agg'])}")
    return SeriesRequest(SeriesKey(measurement, device, point), units[point], start_ns, end_ns,
                         every_ns, Aggregate(query.get("agg", "mean")))


def _shown(text: str) -> str:
    """A client's text, quoted and cut short, for an error message."""
    return repr(text[:64] + ("..." if len(text) > 64 else ""))


def _unknown(kind: str, name: str, known: list[str], where: str = "") -> str:
    near = difflib.get_close_matches(name, known, n=5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return f"unknown {kind} {_shown(name)}{where}{hint}"


def _seconds(name: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"{name} must be a duration such as 30s, 15m, 2h or 7d, "
                         f"not {_shown(text)}") from None
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise ValueError(f"{name} must be at most 100 years")
    return seconds


def _instant(name: str, text: str, now_ns: int) -> int:
    """A duration before now ('6h') or an ISO 8601 time (UTC when it has no offset)."""
    try:
        parse_duration(text)
    except ValueError:
        pass
    else:
        return now_ns - int(_seconds(name, text) * 1e9)
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be a duration before now (6h) or an ISO 8601 time "
                         f"(2026-12-01T08:00:00+08:00), not {_shown(text)}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000
