"""InfluxDB 1.x backend: line protocol to /write and InfluxQL on /query, over plain aiohttp."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp

from dcim.storage.base import (
    Aggregate, Bucket, Quality, Sample, SeriesKey, StorageError, sample_from_row,
)
from dcim.storage.buckets import bucket_start, bucket_starts, fill_buckets
from dcim.config.storage import InfluxDB1StorageConfig
from dcim.storage.lineprotocol import InvalidSeriesKey, LineBuilder, influxql_ident, influxql_string
from dcim.storage.retry import (
    StorageRejected, StorageUnavailable, TransientError, excerpt, with_retries,
)

log = logging.getLogger(__name__)

# Rows asked for per read_range query; a server's max-row-limit may cut a page shorter,
# which the paging loop notices through the "partial" flag.
PAGE_ROWS = 50_000
LARGE_BODY = 1 << 20  # bytes: larger write bodies are streamed
# Series per read_latest statement, to keep the WHERE clause of one statement modest.
LATEST_SERIES_PER_STATEMENT = 200


class InfluxDB1Storage:
    """Storage in an InfluxDB 1.x database (measurement per device type, tags site/device/point)."""

    def __init__(self, config: InfluxDB1StorageConfig, *, site_id: str) -> None:
        self.config = config
        self.site_id = site_id
        self.base_url = str(config.url).rstrip("/")
        self._lines = LineBuilder(site_id)
        self._session: aiohttp.ClientSession | None = None
        self._database_ready = False
        self._auth: dict[str, str] = {}
        if config.username is not None:
            password = os.environ.get(config.password_env, "") if config.password_env else ""
            self._auth = {"u": config.username, "p": password}
        self._write_params = {"db": config.database, "precision": "ns", **self._auth}
        if config.retention_policy is not None:
            self._write_params["rp"] = config.retention_policy
        self._from_prefix = (
            f"{influxql_ident(config.retention_policy)}." if config.retention_policy is not None else ""
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session and create the database if configured to."""
        timeout = aiohttp.ClientTimeout(total=self.config.write.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._database_ready = not self.config.create_database
        if self.config.create_database:
            try:
                await self._create_database()
            except StorageUnavailable as exc:
                # influxd is down at start: the first write creates the database instead,
                # so an outage at start-up is buffered like any other.
                log.warning("cannot create the database yet; will retry on first write",
                            extra={"url": self.base_url, "error": str(exc)})

    async def _create_database(self) -> None:
        await self.query(f"CREATE DATABASE {influxql_ident(self.config.database)}")
        self._database_ready = True

    async def close(self) -> None:
        """Close the HTTP session (nothing is buffered here; see BatchWriter)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ----------------------------------------------------------------------------

    async def _post(self, path: str, params: dict[str, str], data: bytes | None = None,
                    form: dict[str, str] | None = None) -> bytes:
        """POST with retries on connection errors, timeouts and 5xx; StorageRejected on 4xx."""
        if self._session is None:
            raise StorageError("influxdb1 storage is not started")
        session = self._session
        url = f"{self.base_url}{path}"
        shown = f"{url}?db={self.config.database}"  # never show u/p

        async def attempt() -> bytes:
            # aiohttp warns (and copies in the event loop) for raw bodies over 1 MiB, such as a
            # backfill's 100,000-sample batches: hand it a stream, new for every attempt
            payload: Any = io.BytesIO(data) if data is not None and len(data) > LARGE_BODY \
                else data
            try:
                async with session.post(url, params=params,
                                        data=payload if form is None else form) as resp:
                    body = await resp.read()
                    if resp.status < 300:
                        return body
                    message = f"POST {shown} -> HTTP {resp.status}: {excerpt(body)}"
                    if resp.status >= 500:
                        raise TransientError(message)
                    raise StorageRejected(message)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                raise TransientError(f"POST {shown}: {type(exc).__name__}: {exc}") from exc

        write = self.config.write
        return await with_retries(attempt, retries=write.max_retries,
                                  first_backoff_s=write.retry_backoff_s, what=f"POST {shown}")

    async def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL (statements separated by ';'); one result dict per statement."""
        params = {"db": self.config.database, "epoch": "ns", **self._auth}
        body = await self._post("/query", params, form={"q": influxql})
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise StorageRejected(f"{self.base_url}/query: not JSON: {excerpt(body)}") from exc
        if not isinstance(answer, dict):
            raise StorageRejected(f"{self.base_url}/query: unexpected answer {excerpt(body)}")
        if "error" in answer:
            raise StorageRejected(f"{self.base_url}/query: {answer['error']} (query: {influxql[:200]})")
        results: list[dict[str, Any]] = answer.get("results") or []
        for result in results:
            if "error" in result:
                raise StorageRejected(f"{self.base_url}/query: {result['error']} (query: {influxql[:200]})")
        return results

    async def _query_one(self, influxql: str) -> dict[str, Any]:
        """The result of a single-statement query (empty when the server gave none)."""
        results = await self.query(influxql)
        return results[0] if results else {}

    # -- writes --------------------------------------------------------------------------

    async def write(self, samples: Sequence[Sample]) -> None:
        """Write a batch as one /write request (line protocol, ns precision)."""
        if not samples:
            return
        try:
            body = self._lines.build(samples).encode()
        except (InvalidSeriesKey, KeyError) as exc:
            raise StorageRejected(f"cannot write batch: {exc}") from exc
        if not self._database_ready:
            await self._create_database()
        try:
            await self._post("/write", self._write_params, data=body)
        except StorageRejected as exc:
            if "database not found" not in str(exc) or not self.config.create_database:
                raise
            # dropped or never created (influxd was down at start): create it and retry once
            await self._create_database()
            await self._post("/write", self._write_params, data=body)

    # -- reads ---------------------------------------------------------------------------

    def _where_series(self, series: SeriesKey) -> str:
        return (
            f"{influxql_ident('site')} = {influxql_string(self.site_id)}"
            f" AND {influxql_ident('device')} = {influxql_string(series.device)}"
            f" AND {influxql_ident('point')} = {influxql_string(series.point)}"
        )

    def _from(self, measurement: str) -> str:
        return self._from_prefix + influxql_ident(measurement)

    async def read_range(
        self, series: SeriesKey, start_ns: int, end_ns: int, *, good_only: bool = False
    ) -> list[Sample]:
        """Raw samples with start_ns <= time < end_ns, oldest first (paged)."""
        samples: list[Sample] = []
        quality_filter = ' AND "quality" = 0' if good_only else ""
        cursor = start_ns
        while cursor < end_ns:
            q = (
                f'SELECT "value", "quality" FROM {self._from(series.measurement)}'
                f" WHERE {self._where_series(series)}{quality_filter}"
                f" AND time >= {cursor} AND time < {end_ns} ORDER BY time ASC LIMIT {PAGE_ROWS}"
            )
            result = await self._query_one(q)
            rows = _rows(result, 3)
            for t, v, quality in rows:
                sample = sample_from_row(series, t, v, quality)
                # a good quality whose value is not (yet) there reads as BAD: not for good_only
                if sample is not None and (not good_only or sample.quality is Quality.GOOD):
                    samples.append(sample)
            last_ns = next((row[0] for row in reversed(rows) if _is_int(row[0])), None)
            if last_ns is None or (len(rows) < PAGE_ROWS and not result.get("partial")):
                break
            cursor = last_ns + 1
        return samples

    async def read_aggregate(
        self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int, fn: Aggregate
    ) -> list[Bucket]:
        """Good samples aggregated into epoch-aligned buckets of every_ns, empty buckets included."""
        bucket_starts(start_ns, end_ns, every_ns)  # validates the arguments
        q = (
            f'SELECT {fn.value}("value") AS "agg", count("value") AS "n"'
            f" FROM {self._from(series.measurement)}"
            f' WHERE "quality" = 0 AND {self._where_series(series)}'
            f" AND time >= {start_ns} AND time < {end_ns}"
            f" GROUP BY time({every_ns}ns) fill(none)"
        )
        result = await self._query_one(q)
        found: dict[int, tuple[float | None, int]] = {}
        for t, agg, n in _rows(result, 3):
            # count() is an integer; a bucket without one (a partial row) holds no good sample
            if not _is_int(t) or not _is_int(n) or n <= 0:
                continue
            # InfluxDB labels the first bucket with its aligned start, which may precede start_ns.
            found[bucket_start(t, every_ns)] = (_finite(agg), n)
        return fill_buckets(start_ns, end_ns, every_ns, found)

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        """The newest sample of each series: one statement per measurement, all in one request."""
        by_measurement: dict[str, list[SeriesKey]] = {}
        for key in series:
            by_measurement.setdefault(key.measurement, []).append(key)
        statements: list[tuple[str, str]] = []
        for measurement, keys in by_measurement.items():
            for i in range(0, len(keys), LATEST_SERIES_PER_STATEMENT):
                chunk = keys[i : i + LATEST_SERIES_PER_STATEMENT]
                match = " OR ".join(
                    f"({influxql_ident('device')} = {influxql_string(k.device)}"
                    f" AND {influxql_ident('point')} = {influxql_string(k.point)})"
                    for k in chunk
                )
                # last() of quality, which every sample carries (value is absent when it was
                # not finite), selects the newest point; "value" comes from that same point.
                statements.append((measurement, (
                    f'SELECT last("quality") AS "quality", "value" FROM {self._from(measurement)}'
                    f" WHERE {influxql_ident('site')} = {influxql_string(self.site_id)} AND ({match})"
                    f' GROUP BY "device", "point"'
                )))
        if not statements:
            return {}
        wanted = {(k.measurement, k.device, k.point) for keys in by_measurement.values() for k in keys}
        results = await self.query(";".join(q for _, q in statements))
        latest: dict[SeriesKey, Sample] = {}
        # zip without strict: a statement the server left unanswered gives no samples
        for (measurement, _), result in zip(statements, results):
            for s in result.get("series") or []:
                tags = s.get("tags") or {}
                key = SeriesKey(measurement, tags.get("device", ""), tags.get("point", ""))
                if (key.measurement, key.device, key.point) not in wanted or not s.get("values"):
                    continue
                row = dict(zip(s.get("columns") or [], s["values"][0]))
                sample = sample_from_row(key, row.get("time"), row.get("value"),
                                         row.get("quality"))
                if sample is not None:
                    latest[key] = sample
        return latest


def _rows(result: dict[str, Any], width: int) -> list[list[Any]]:
    """Rows of a single-series result (time, then columns in SELECT order), each padded or cut
    to width with None, or none."""
    series = result.get("series")
    if not series:
        return []
    rows: list[list[Any]] = series[0].get("values") or []
    if all(len(row) == width for row in rows):
        return rows
    pad = [None] * width
    return [(list(row) + pad)[:width] for row in rows]


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finite(x: object) -> float | None:
    """x as a float when it is a finite number, else None."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return None
    try:
        number = float(x)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None
