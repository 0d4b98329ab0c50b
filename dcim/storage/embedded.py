"""Embedded backend: SQLite in WAL mode, driven from one worker thread so the event loop never blocks."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from dcim.storage.base import (
    Aggregate, Bucket, Sample, SampleColumns, SeriesKey, StorageError, sample_from_row,
)
from dcim.storage.buckets import bucket_starts, fill_buckets
from dcim.config.storage import EmbeddedStorageConfig
from dcim.storage.lineprotocol import InvalidSeriesKey, validate_series_key
from dcim.storage.retry import StorageRejected
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    UNIQUE (measurement, device, point)
);
CREATE TABLE IF NOT EXISTS samples (
    series_id INTEGER NOT NULL REFERENCES series (id),
    time_ns INTEGER NOT NULL,
    value REAL,
    quality INTEGER NOT NULL,
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
"""

RETENTION_INTERVAL_S = 3600.0
NS_PER_DAY = 86_400 * 10**9

# SQL aggregate per function; first and last use SQLite's documented "bare column with
# min()/max()" rule: the bare value comes from the row holding the min or max time.
_AGGREGATE_SQL: dict[Aggregate, str] = {
    Aggregate.MEAN: "AVG(value)",
    Aggregate.MIN: "MIN(value)",
    Aggregate.MAX: "MAX(value)",
    Aggregate.SUM: "SUM(value)",
    Aggregate.COUNT: "COUNT(value)",
    Aggregate.FIRST: "value, MIN(time_ns)",
    Aggregate.LAST: "value, MAX(time_ns)",
}


class EmbeddedStorage:
    """Storage in one SQLite file (WAL, synchronous=NORMAL); one file holds one site."""

    def __init__(
        self,
        config: EmbeddedStorageConfig,
        *,
        site_id: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.site_id = site_id
        self._clock_ns = clock_ns
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # used by the worker thread only
        self._series_ids: dict[SeriesKey, int] = {}  # worker thread only
        self._retention_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the database file and apply retention once."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcim-sqlite")
        await self._run(self._open)
        if self.config.retention_days is not None:
            await self.apply_retention()
            self._retention_task = asyncio.create_task(self._retention_loop())

    async def close(self) -> None:
        """Stop the retention task, close the database and the worker thread."""
        if self._retention_task is not None:
            await cancel_task(self._retention_task)
            self._retention_task = None
        if self._executor is not None:
            await self._run(self._close_db)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StorageError("embedded storage is not started")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.config.path}: {exc}") from exc

    def _open(self) -> None:
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # the site's history: readable by dcim's account only
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(path, isolation_level=None)  # transactions handled explicitly
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        self._series_ids = {
            SeriesKey(m, d, p): i for i, m, d, p in db.execute("SELECT id, measurement, device, point FROM series")
        }
        self._db = db

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("embedded storage is closed")
        return self._db

    # -- retention -----------------------------------------------------------------------

    async def apply_retention(self) -> int:
        """Delete samples older than retention_days; returns how many were deleted."""
        if self.config.retention_days is None:
            return 0
        cutoff = self._clock_ns() - self.config.retention_days * NS_PER_DAY
        deleted = await self._run(self._delete_before, cutoff)
        if deleted:
            log.info("retention applied", extra={"deleted": deleted, "cutoff_ns": cutoff})
        return deleted

    def _delete_before(self, cutoff_ns: int) -> int:
        db = self._conn()
        total = 0
        for (series_id,) in db.execute("SELECT id FROM series").fetchall():
            cur = db.execute("DELETE FROM samples WHERE series_id = ? AND time_ns < ?", (series_id, cutoff_ns))
            total += cur.rowcount
        return total

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL_S)
            try:
                await self.apply_retention()
            except StorageError as exc:
                log.warning("retention failed", extra={"error": str(exc)})

    # -- writes --------------------------------------------------------------------------

    async def write(self, samples: Sequence[Sample]) -> None:
        """Write a batch in one transaction; same series and time overwrites."""
        if samples:
            await self._run(self._write, samples)

    def _series_id(self, db: sqlite3.Connection, series: SeriesKey) -> int:
        series_id = self._series_ids.get(series)
        if series_id is None:
            try:
                validate_series_key(series)
            except InvalidSeriesKey as exc:
                raise StorageRejected(str(exc)) from exc
            db.execute(
                "INSERT OR IGNORE INTO series (measurement, device, point) VALUES (?, ?, ?)",
                (series.measurement, series.device, series.point),
            )
            (series_id,) = db.execute(
                "SELECT id FROM series WHERE measurement = ? AND device = ? AND point = ?",
                (series.measurement, series.device, series.point),
            ).fetchone()
            self._series_ids[series] = series_id
        return series_id

    def _write(self, samples: Sequence[Sample]) -> None:
        db = self._conn()
        ids = self._series_ids
        rows = []
        cols = SampleColumns.of(samples)  # collectors hand over columns: no Sample objects
        for series, time_ns, value, quality in zip(cols.keys, cols.times, cols.values,
                                                   cols.qualities):
            series_id = ids.get(series)
            if series_id is None:
                series_id = self._series_id(db, series)
            # Non-finite values are stored as NULL, as the InfluxDB backends store none.
            rows.append((series_id, time_ns, value if value - value == 0.0 else None, int(quality)))
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)", rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- reads ---------------------------------------------------------------------------

    def _known_id(self, series: SeriesKey) -> int | None:
        return self._series_ids.get(series)

    async def read_range(
        self, series: SeriesKey, start_ns: int, end_ns: int, *, good_only: bool = False
    ) -> list[Sample]:
        """Raw samples with start_ns <= time < end_ns, oldest first."""
        return await self._run(self._read_range, series, start_ns, end_ns, good_only)

    def _read_range(self, series: SeriesKey, start_ns: int, end_ns: int, good_only: bool) -> list[Sample]:
        series_id = self._known_id(series)
        if series_id is None:
            return []
        sql = "SELECT time_ns, value, quality FROM samples WHERE series_id = ? AND time_ns >= ? AND time_ns < ?"
        if good_only:  # a good quality without a value reads as BAD (sample_from_row)
            sql += " AND quality = 0 AND value IS NOT NULL"
        rows = self._conn().execute(sql + " ORDER BY time_ns", (series_id, start_ns, end_ns))
        samples = [sample_from_row(series, t, v, q) for t, v, q in rows]
        return [s for s in samples if s is not None]

    async def read_aggregate(
        self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int, fn: Aggregate
    ) -> list[Bucket]:
        """Good samples aggregated into epoch-aligned buckets of every_ns, empty buckets included."""
        bucket_starts(start_ns, end_ns, every_ns)  # validates before touching the database
        found = await self._run(self._read_aggregate, series, start_ns, end_ns, every_ns, fn)
        return fill_buckets(start_ns, end_ns, every_ns, found)

    def _read_aggregate(
        self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int, fn: Aggregate
    ) -> dict[int, tuple[float | None, int]]:
        series_id = self._known_id(series)
        if series_id is None:
            return {}
        # ((t % e) + e) % e is the non-negative remainder, so buckets align to the epoch
        # the way InfluxDB's GROUP BY time() does, also before 1970.
        sql = (
            f"SELECT time_ns - ((time_ns % :e) + :e) % :e AS b, COUNT(value), {_AGGREGATE_SQL[fn]}"
            " FROM samples WHERE series_id = :s AND time_ns >= :start AND time_ns < :end"
            " AND quality = 0 AND value IS NOT NULL GROUP BY b"
        )
        params = {"e": every_ns, "s": series_id, "start": start_ns, "end": end_ns}
        found: dict[int, tuple[float | None, int]] = {}
        for row in self._conn().execute(sql, params):
            value = row[2]
            found[row[0]] = (None if value is None else float(value), row[1])
        return found

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        """The newest sample of each series that has one."""
        return await self._run(self._read_latest, list(series))

    def _read_latest(self, series: list[SeriesKey]) -> dict[SeriesKey, Sample]:
        db = self._conn()
        latest: dict[SeriesKey, Sample] = {}
        for key in series:
            series_id = self._known_id(key)
            if series_id is None:
                continue
            row = db.execute(
                "SELECT time_ns, value, quality FROM samples WHERE series_id = ? ORDER BY time_ns DESC LIMIT 1",
                (series_id,),
            ).fetchone()
            sample = None if row is None else sample_from_row(key, *row)
            if sample is not None:
                latest[key] = sample
        return latest
