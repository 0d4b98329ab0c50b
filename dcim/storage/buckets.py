"""Epoch-aligned bucket arithmetic shared by every backend (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping

from dcim.storage.base import Bucket

# A guard against a typo such as every_ns=1 over a year: the list would not fit in memory.
MAX_BUCKETS = 1_000_000


def bucket_start(time_ns: int, every_ns: int) -> int:
    """Start of the epoch-aligned bucket holding time_ns (floor, also before 1970)."""
    return time_ns - time_ns % every_ns  # Python's % is non-negative for a positive divisor


def bucket_starts(start_ns: int, end_ns: int, every_ns: int) -> range:
    """Starts of every bucket from the one holding start_ns up to (not including) end_ns."""
    if every_ns <= 0:
        raise ValueError(f"every_ns must be positive, got {every_ns}")
    first = bucket_start(start_ns, every_ns)
    starts = range(first, end_ns if end_ns > start_ns else first, every_ns)
    if len(starts) > MAX_BUCKETS:
        raise ValueError(
            f"{len(starts)} buckets of {every_ns} ns between {start_ns} and {end_ns}: "
            f"more than {MAX_BUCKETS}; use a larger every_ns"
        )
    return starts


def fill_buckets(
    start_ns: int, end_ns: int, every_ns: int, found: Mapping[int, tuple[float | None, int]]
) -> list[Bucket]:
    """Complete list of buckets; found maps an aligned start to (value, good-sample count)."""
    buckets = []
    for start in bucket_starts(start_ns, end_ns, every_ns):
        value, count = found.get(start, (None, 0))
        buckets.append(Bucket(start, value if count else None, count))
    return buckets
