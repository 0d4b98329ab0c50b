"""InfluxDB 2.x / 3.x (and 1.8+ compatibility) backend through influxdb-client's async API and Flux."""

from __future__ import annotations

import calendar
import csv
import io
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.query_api_async import QueryApiAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.dialect import Dialect
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from dcim.storage.base import (
    Aggregate, Bucket, Quality, Sample, SeriesKey, StorageError, sample_from_row,
)
from dcim.storage.buckets import bucket_start, bucket_starts, fill_buckets
from dcim.config.storage import InfluxDB2StorageConfig
from dcim.storage.lineprotocol import InvalidSeriesKey, LineBuilder, flux_string
from dcim.storage.retry import StorageRejected, TransientError, excerpt, with_retries

log = logging.getLogger(__name__)

T = TypeVar("T")

# The client's default dialect asks for RFC3339 times; RFC3339Nano keeps nanoseconds, which
# the contract promises and which the client's own CSV parser (datetime, microseconds) would lose.
DIALECT = Dialect(header=True, delimiter=",", comment_prefix="#",
                  annotations=["datatype", "group", "default"], date_time_format="RFC3339Nano")
LATEST_SERIES_PER_QUERY = 200


class InfluxDB2Storage:
    """Storage in an InfluxDB 2.x/3.x bucket (same schema as the 1.x backend)."""

    def __init__(self, config: InfluxDB2StorageConfig, *, site_id: str) -> None:
        self.config = config
        self.site_id = site_id
        self.url = str(config.url).rstrip("/")
        self._lines = LineBuilder(site_id)
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._query_api: QueryApiAsync | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the async client (it must be created inside the running loop)."""
        token = os.environ.get(self.config.token_env)
        if not token:
            log.warning("influxdb2 token missing", extra={"token_env": self.config.token_env})
        self._client = InfluxDBClientAsync(
            url=self.url, token=token or "", org=self.config.org,
            timeout=int(self.config.write.timeout_s * 1000),
        )
        self._write_api = self._client.write_api()
        self._query_api = self._client.query_api()

    async def close(self) -> None:
        """Close the client's HTTP session."""
        if self._client is not None:
            await self._client.close()
            self._client = self._write_api = self._query_api = None

    # -- requests ------------------------------------------------------------------------

    async def _call(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        """One client call with retries on connection errors, timeouts, 429 and 5xx."""
        shown = f"{what} {self.url} (org {self.config.org!r}, bucket {self.config.bucket!r})"

        async def attempt() -> T:
            try:
                return await request()
            except ApiException as exc:
                status = exc.status or 0
                message = f"{shown} -> HTTP {status}: {excerpt(exc.body) or exc.reason}"
                if status >= 500 or status == 429:
                    raise TransientError(message) from exc
                raise StorageRejected(message) from exc
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                raise TransientError(f"{shown}: {type(exc).__name__}: {exc}") from exc
            except InfluxDBError as exc:
                raise StorageError(f"{shown}: {exc}") from exc

        write = self.config.write
        return await with_retries(attempt, retries=write.max_retries,
                                  first_backoff_s=write.retry_backoff_s, what=shown)

    async def write(self, samples: Sequence[Sample]) -> None:
        """Write a batch as line protocol to /api/v2/write (precision ns)."""
        if not samples:
            return
        if self._write_api is None:
            raise StorageError("influxdb2 storage is not started")
        try:
            body = self._lines.build(samples)
        except (InvalidSeriesKey, KeyError) as exc:
            raise StorageRejected(f"cannot write batch: {exc}") from exc
        api = self._write_api
        await self._call("write", lambda: api.write(
            bucket=self.config.bucket, org=self.config.org, record=body,
            write_precision=WritePrecision.NS))  # type: ignore[arg-type]  # a str constant

    async def query_csv(self, flux: str) -> list[dict[str, str]]:
        """Run a Flux query; rows of every table as dicts of column -> raw CSV text."""
        if self._query_api is None:
            raise StorageError("influxdb2 storage is not started")
        api = self._query_api
        text = await self._call("query", lambda: api.query_raw(flux, org=self.config.org, dialect=DIALECT))
        return list(parse_annotated_csv(text))

    # -- Flux ----------------------------------------------------------------------------

    def _source(self, start_ns: int, end_ns: int | None) -> str:
        stop = f", stop: time(v: {end_ns})" if end_ns is not None else ""
        return (f"from(bucket: {flux_string(self.config.bucket)})\n"
                f"  |> range(start: time(v: {start_ns}){stop})\n")

    def _match(self, series: SeriesKey) -> str:
        return (f"r._measurement == {flux_string(series.measurement)}"
                f" and r.device == {flux_string(series.device)}"
                f" and r.point == {flux_string(series.point)}")

    def _series_rows(self, series: SeriesKey, start_ns: int, end_ns: int) -> str:
        return (
            self._source(start_ns, end_ns)
            + f"  |> filter(fn: (r) => {self._match(series)} and r.site == {flux_string(self.site_id)})\n"
            + '  |> filter(fn: (r) => r._field == "value" or r._field == "quality")\n'
            + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        )

    def range_flux(self, series: SeriesKey, start_ns: int, end_ns: int, good_only: bool) -> str:
        """Flux for read_range."""
        good = "  |> filter(fn: (r) => r.quality == 0)\n" if good_only else ""
        return (self._series_rows(series, start_ns, end_ns) + good
                + '  |> keep(columns: ["_time", "value", "quality"])\n'
                + '  |> sort(columns: ["_time"])\n')

    def aggregate_flux(self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int,
                       fn: Aggregate) -> str:
        """Flux for read_aggregate: the function and count over good samples, two yields."""
        return (
            "data = " + self._series_rows(series, start_ns, end_ns)
            + "  |> filter(fn: (r) => r.quality == 0 and exists r.value)\n"
            + '  |> keep(columns: ["_start", "_stop", "_time", "value"])\n'
            + '  |> rename(columns: {value: "_value"})\n'
            + f"data |> aggregateWindow(every: {every_ns}ns, fn: {fn.value}, createEmpty: true,"
            + ' timeSrc: "_start") |> yield(name: "agg")\n'
            + f"data |> aggregateWindow(every: {every_ns}ns, fn: count, createEmpty: true,"
            + ' timeSrc: "_start") |> yield(name: "count")\n'
        )

    def latest_flux(self, keys: Sequence[SeriesKey]) -> str:
        """Flux for read_latest: last value and last quality of each series, pivoted."""
        match = " or ".join(f"({self._match(k)})" for k in keys)
        return (
            self._source(0, None)
            + f"  |> filter(fn: (r) => r.site == {flux_string(self.site_id)} and ({match}))\n"
            + '  |> filter(fn: (r) => r._field == "value" or r._field == "quality")\n'
            + "  |> last()\n"
            + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
            + '  |> keep(columns: ["_time", "_measurement", "device", "point", "value", "quality"])\n'
        )

    # -- reads ---------------------------------------------------------------------------

    async def read_range(
        self, series: SeriesKey, start_ns: int, end_ns: int, *, good_only: bool = False
    ) -> list[Sample]:
        """Raw samples with start_ns <= time < end_ns, oldest first."""
        rows = await self.query_csv(self.range_flux(series, start_ns, end_ns, good_only))
        samples = []
        for r in rows:
            sample = _sample(series, r)
            # a good quality without its value reads as BAD: not for good_only
            if sample is not None and (not good_only or sample.quality is Quality.GOOD):
                samples.append(sample)
        samples.sort(key=lambda s: s.time_ns)
        return samples

    async def read_aggregate(
        self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int, fn: Aggregate
    ) -> list[Bucket]:
        """Good samples aggregated into epoch-aligned buckets of every_ns, empty buckets included."""
        bucket_starts(start_ns, end_ns, every_ns)  # validates the arguments
        rows = await self.query_csv(self.aggregate_flux(series, start_ns, end_ns, every_ns, fn))
        values: dict[int, float | None] = {}
        counts: dict[int, int] = {}
        for r in rows:
            time_ns = _time_ns(r)
            if time_ns is None:
                continue
            # The first window's _start is clipped to the range start: realign it.
            start = bucket_start(time_ns, every_ns)
            raw = _number(r.get("_value"))
            if r.get("result") == "count":
                counts[start] = int(raw) if raw is not None and math.isfinite(raw) else 0
            else:
                values[start] = raw if raw is not None and math.isfinite(raw) else None
        found = {start: (values.get(start), n) for start, n in counts.items()}
        return fill_buckets(start_ns, end_ns, every_ns, found)

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        """The newest sample of each series that has one."""
        keys = list(dict.fromkeys(series))
        wanted = set(keys)
        latest: dict[SeriesKey, Sample] = {}
        for i in range(0, len(keys), LATEST_SERIES_PER_QUERY):
            for r in await self.query_csv(self.latest_flux(keys[i : i + LATEST_SERIES_PER_QUERY])):
                key = SeriesKey(r.get("_measurement", ""), r.get("device", ""), r.get("point", ""))
                if key not in wanted or not r.get("quality"):
                    continue  # a row holding only an older value, without its quality
                sample = _sample(key, r)
                if sample is not None and (key not in latest
                                           or sample.time_ns > latest[key].time_ns):
                    latest[key] = sample
        return latest


def _number(raw: str | None) -> float | None:
    """A CSV cell as a number; None when empty or not a number."""
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def _time_ns(row: dict[str, str]) -> int | None:
    """The row's _time in ns; None when missing or not an RFC3339 UTC time."""
    try:
        return parse_rfc3339_ns(row.get("_time", ""))
    except (StorageError, ValueError):
        return None


def _sample(series: SeriesKey, row: dict[str, str]) -> Sample | None:
    """The sample of one pivoted row (value and quality columns), by the shared row rules."""
    quality = _number(row.get("quality"))
    code = int(quality) if quality is not None and quality.is_integer() else quality
    return sample_from_row(series, _time_ns(row), _number(row.get("value")), code)


def parse_rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch from an RFC3339 UTC time such as 2024-01-01T00:00:00.5Z."""
    if not text.endswith("Z"):
        raise StorageError(f"expected a UTC time ending in Z, got {text!r}")
    base, _, fraction = text[:-1].partition(".")
    seconds = calendar.timegm(datetime.fromisoformat(base).timetuple())
    return seconds * 1_000_000_000 + int((fraction + "000000000")[:9])


def parse_annotated_csv(text: str) -> Iterator[dict[str, str]]:
    """Rows of Flux's annotated CSV (several tables, annotation rows, blank separators)."""
    header: list[str] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row or all(not cell for cell in row):
            header = None  # a blank line ends a table; the next one brings its own header
            continue
        if row[0].startswith("#"):
            header = None
            continue
        if header is None:
            header = row
            if "error" in header and "reference" in header:
                header = ["error-table", *header[1:]]
            continue
        record = dict(zip(header, row, strict=False))
        if "error-table" in record:
            raise StorageError(f"Flux query failed: {record.get('error', '')}")
        yield record
