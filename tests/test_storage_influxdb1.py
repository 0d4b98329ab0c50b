"""The influxdb1 backend on partial rows: recorded InfluxDB 1.x answers and a real influxd.

A reader querying while a batch is written can see a point with some fields missing; the
server returns null for them. read_range once raised KeyError: None on such a row, and a good
quality without its value reached the analytics as a GOOD NaN.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from dcim.config.storage import InfluxDB1StorageConfig, WriteOptions
from dcim.storage.base import Aggregate, Bucket, Quality, Sample, SeriesKey
from dcim.storage.influxdb1 import InfluxDB1Storage
from dcim.storage.retry import StorageRejected
from tests import influxd

influxd_server = influxd.influxd_server
influx_database = influxd.influx_database

SITE = "cp5"
KEY = SeriesKey("pdu", "PDU-1", "kw")
NAN = math.nan


@dataclass
class QueryServer:
    """Answers each /query with the next queued JSON body and records the InfluxQL."""

    answers: list[Any] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.queries.append(str(form.get("q", "")))
        return web.json_response(self.answers.pop(0))


@pytest.fixture
async def server() -> AsyncIterator[QueryServer]:
    """A fake influxd /query on 127.0.0.1, port 0."""
    recorder = QueryServer()
    app = web.Application()
    app.router.add_post("/query", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


@pytest.fixture
async def storage(server: QueryServer) -> AsyncIterator[InfluxDB1Storage]:
    """The backend pointed at the fake server (no database creation)."""
    config = InfluxDB1StorageConfig(backend="influxdb1", url=server.url, database="d",
                                    create_database=False,
                                    write=WriteOptions(max_retries=0, retry_backoff_s=0.01))
    store = InfluxDB1Storage(config, site_id=SITE)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def answer(columns: list[str], values: list[list[Any]], **series: Any) -> dict[str, Any]:
    """One statement's result as InfluxDB 1.x sends it (epoch=ns)."""
    return {"results": [{"statement_id": 0, "series": [
        {"name": "pdu", "columns": columns, "values": values, **series}]}]}


def as_tuples(samples: list[Sample]) -> list[tuple[int, float | str, Quality]]:
    """(time, value or 'nan', quality): NaN compares equal this way."""
    return [(s.time_ns, "nan" if math.isnan(s.value) else s.value, s.quality) for s in samples]


# Rows of `SELECT "value", "quality"` and what each reads as; the first three are what
# influxd 1.6.7 returned for points written with only some of their fields.
RANGE_ROWS = [
    ([100, 1, 0], [(100, 1.0, Quality.GOOD)]),
    ([200, 2.5, None], [(200, 2.5, Quality.BAD)]),
    ([300, None, 2], [(300, "nan", Quality.BAD)]),
    ([300, None, 1], [(300, "nan", Quality.STALE)]),
    ([300, None, 0], [(300, "nan", Quality.BAD)]),
    ([400, None, None], []),
    ([500, 1.0, 7], [(500, 1.0, Quality.BAD)]),
    ([600, 1.0], [(600, 1.0, Quality.BAD)]),
    ([None, 1.0, 0], []),
    ([700, "12", 0], [(700, "nan", Quality.BAD)]),
    ([800, True, 0], [(800, "nan", Quality.BAD)]),
]


@pytest.mark.parametrize("row,want", RANGE_ROWS, ids=[
    "complete", "value-without-quality", "bad-quality-without-value",
    "stale-quality-without-value", "good-quality-without-value", "neither-field",
    "unknown-quality-code", "short-row", "no-time", "string-value", "boolean-value"])
async def test_read_range_partial_rows(storage: InfluxDB1Storage, server: QueryServer,
                                       row: list[Any], want: list[tuple[Any, ...]]) -> None:
    server.answers = [answer(["time", "value", "quality"], [row])]
    assert as_tuples(await storage.read_range(KEY, 0, 10_000)) == want


async def test_read_range_good_only_drops_a_good_quality_without_its_value(
        storage: InfluxDB1Storage, server: QueryServer) -> None:
    # the server filters on quality = 0 only, so a half-written good point comes back
    server.answers = [answer(["time", "value", "quality"], [[100, 1.5, 0], [200, None, 0]])]
    got = await storage.read_range(KEY, 0, 10_000, good_only=True)
    assert got == [Sample(KEY, 100, 1.5)]
    assert '"quality" = 0' in server.queries[0]


async def test_read_range_pages_past_rows_without_fields(
        storage: InfluxDB1Storage, server: QueryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import dcim.storage.influxdb1

    monkeypatch.setattr(dcim.storage.influxdb1, "PAGE_ROWS", 2)
    server.answers = [answer(["time", "value", "quality"], [[100, 1.0, 0], [200, None, None]]),
                      answer(["time", "value", "quality"], [[300, 3.0, None]])]
    got = await storage.read_range(KEY, 0, 10_000)
    assert as_tuples(got) == [(100, 1.0, Quality.GOOD), (300, 3.0, Quality.BAD)]
    assert "time >= 201" in server.queries[1]  # the next page starts after the last row


@pytest.mark.parametrize("body", [
    {"results": []},
    {"results": [{"statement_id": 0}]},
    {"results": [{"statement_id": 0, "series": [{"name": "pdu", "columns": ["time"]}]}]},
    {},
], ids=["no-results", "no-series", "no-values", "empty-object"])
async def test_empty_answers_read_as_nothing(storage: InfluxDB1Storage, server: QueryServer,
                                            body: dict[str, Any]) -> None:
    server.answers = [body, body, body]
    assert await storage.read_range(KEY, 0, 10_000) == []
    assert await storage.read_latest([KEY]) == {}
    assert await storage.read_aggregate(KEY, 0, 20, 10, Aggregate.MEAN) == [
        Bucket(0, None, 0), Bucket(10, None, 0)]


async def test_top_level_error_is_rejected(storage: InfluxDB1Storage, server: QueryServer) -> None:
    server.answers = [{"error": "timeout"}]
    with pytest.raises(StorageRejected, match="timeout"):
        await storage.read_range(KEY, 0, 10_000)


async def test_read_latest_partial_rows(storage: InfluxDB1Storage, server: QueryServer) -> None:
    keys = [SeriesKey("pdu", f"PDU-{i}", "kw") for i in range(6)]
    columns = ["time", "quality", "value"]

    def series(i: int, values: list[list[Any]], cols: list[str] = columns) -> dict[str, Any]:
        return {"name": "pdu", "tags": {"device": f"PDU-{i}", "point": "kw"},
                "columns": cols, "values": values}

    server.answers = [{"results": [{"statement_id": 0, "series": [
        series(0, [[100, 0, 4.5]]),  # complete
        series(1, [[100, 0, None]]),  # good quality, value not there (yet)
        series(2, [[100, None, 4.5]]),  # quality not there (yet)
        series(3, []),  # no row at all
        series(4, [[100, 2]], ["time", "quality"]),  # no value column
        {"name": "pdu", "columns": columns, "values": [[100, 0, 1.0]]},  # no tags
    ]}]}]
    got = await storage.read_latest(keys)
    assert got[keys[0]] == Sample(keys[0], 100, 4.5)
    assert (got[keys[1]].quality, math.isnan(got[keys[1]].value)) == (Quality.BAD, True)
    assert got[keys[2]] == Sample(keys[2], 100, 4.5, Quality.BAD)
    assert (got[keys[4]].quality, math.isnan(got[keys[4]].value)) == (Quality.BAD, True)
    assert set(got) == {keys[0], keys[1], keys[2], keys[4]}


async def test_read_aggregate_partial_rows(storage: InfluxDB1Storage, server: QueryServer) -> None:
    server.answers = [answer(["time", "agg", "n"], [
        [0, 1.5, 2],  # complete
        [10, None, None],  # neither
        [20, 2.0, None],  # no count: not a bucket of good samples
        [30, None, 3],  # count without a value
        [None, 9.0, 1],  # no time
        [40, "x", 1],  # not a number
    ])]
    got = await storage.read_aggregate(KEY, 0, 50, 10, Aggregate.MEAN)
    assert got == [Bucket(0, 1.5, 2), Bucket(10, None, 0), Bucket(20, None, 0),
                   Bucket(30, None, 3), Bucket(40, None, 1)]


# ---------------------------------------------------------------- a real influxd

T0 = 1_700_000_000_000_000_000


@pytest.mark.influxdb
async def test_points_written_with_some_fields_read_back(influxd_server: str,
                                                         influx_database: str) -> None:
    """A partial row for real: points carrying only some fields are what a reader sees of a
    point whose other fields are not stored yet."""
    config = InfluxDB1StorageConfig(backend="influxdb1", url=influxd_server,
                                    database=influx_database)
    store = InfluxDB1Storage(config, site_id=SITE)
    await store.start()
    await store.write([Sample(KEY, T0, 1.0)])  # creates the database and the field types
    prefix = f"pdu,device={KEY.device},point={KEY.point},site={SITE}"
    lines = [f"{prefix} value=2.5 {T0 + 1}",  # value without quality
             f"{prefix} quality=0i {T0 + 2}",  # good quality without value
             f"{prefix} quality=1i {T0 + 3}",  # stale, value not finite
             f"{prefix} other=5.0 {T0 + 4}",  # neither field
             f"{prefix} value=4.0 {T0 + 5}"]  # the newest point, quality missing
    async with aiohttp.ClientSession() as http, http.post(
            f"{influxd_server}/write", params={"db": influx_database, "precision": "ns"},
            data="\n".join(lines)) as resp:
        assert resp.status == 204, await resp.text()
    try:
        got = await store.read_range(KEY, 0, 2**62)
        assert as_tuples(got) == [(T0, 1.0, Quality.GOOD), (T0 + 1, 2.5, Quality.BAD),
                                  (T0 + 2, "nan", Quality.BAD), (T0 + 3, "nan", Quality.STALE),
                                  (T0 + 5, 4.0, Quality.BAD)]
        assert await store.read_range(KEY, 0, 2**62, good_only=True) == [Sample(KEY, T0, 1.0)]
        # the newest point with a quality is T0 + 3 (last() of quality skips T0 + 5)
        latest = (await store.read_latest([KEY]))[KEY]
        assert (latest.time_ns, latest.quality, math.isnan(latest.value)) == (
            T0 + 3, Quality.STALE, True)
        buckets = await store.read_aggregate(KEY, T0, T0 + 10, 5, Aggregate.SUM)
        assert buckets == [Bucket(T0, 1.0, 1), Bucket(T0 + 5, None, 0)]
    finally:
        await store.close()

