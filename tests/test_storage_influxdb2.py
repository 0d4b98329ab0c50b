"""The influxdb2 backend against a recording HTTP server (no 2.x server installs here)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from dcim.storage.base import Aggregate, Bucket, Quality, Sample, SeriesKey, StorageError
from dcim.config.storage import InfluxDB2StorageConfig, WriteOptions
from dcim.storage.influxdb2 import InfluxDB2Storage, parse_annotated_csv, parse_rfc3339_ns
from dcim.storage.retry import StorageRejected, StorageUnavailable

TOKEN = "s3cret-token"
SITE = "cp5"
KEY = SeriesKey("pdu", "PDU 1,A", "current=l1")
T0 = 1_700_000_000_000_000_000


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingServer:
    """Records requests; answers writes with 204 and queries with the next queued CSV."""

    requests: list[Recorded] = field(default_factory=list)
    csv_answers: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # forced statuses, consumed first
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      dict(request.headers), body))
        if self.statuses:
            status = self.statuses.pop(0)
            return web.json_response({"code": "invalid", "message": f"forced {status}"}, status=status)
        if request.path == "/api/v2/write":
            return web.Response(status=204)
        if request.path == "/api/v2/query":
            return web.Response(text=self.csv_answers.pop(0), content_type="text/csv")
        return web.Response(status=404)


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    """A recording server on 127.0.0.1, port 0."""
    recorder = RecordingServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.url = f"http://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


@pytest.fixture
async def storage(server: RecordingServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InfluxDB2Storage]:
    """The backend pointed at the recording server."""
    monkeypatch.setenv("TEST_INFLUX_TOKEN", TOKEN)
    config = InfluxDB2StorageConfig(
        backend="influxdb2", url=server.url, org="my org", bucket="dcim/autogen",
        token_env="TEST_INFLUX_TOKEN", write=WriteOptions(max_retries=2, retry_backoff_s=0.01),
    )
    store = InfluxDB2Storage(config, site_id=SITE)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def test_write_request(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    await storage.write([Sample(KEY, T0, 1.5), Sample(KEY, T0 + 7, -2.0, Quality.STALE)])
    (req,) = server.requests
    assert (req.method, req.path) == ("POST", "/api/v2/write")
    assert req.query == {"org": "my org", "bucket": "dcim/autogen", "precision": "ns"}
    assert req.headers["Authorization"] == f"Token {TOKEN}"
    assert req.body.decode().split("\n") == [
        rf"pdu,device=PDU\ 1\,A,point=current\=l1,site=cp5 value=1.5,quality=0i {T0}",
        rf"pdu,device=PDU\ 1\,A,point=current\=l1,site=cp5 value=-2.0,quality=1i {T0 + 7}",
    ]


async def test_5xx_is_retried_then_succeeds(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    server.statuses = [503, 500]
    await storage.write([Sample(KEY, T0, 1.0)])
    assert len(server.requests) == 3


async def test_5xx_gives_up_with_storage_error(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    server.statuses = [503, 503, 503]
    with pytest.raises(StorageUnavailable, match=r"HTTP 503.*forced 503"):
        await storage.write([Sample(KEY, T0, 1.0)])


async def test_4xx_is_not_retried(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    server.statuses = [422]
    with pytest.raises(StorageRejected, match=rf"{server.url}.*HTTP 422.*forced 422"):
        await storage.write([Sample(KEY, T0, 1.0)])
    assert len(server.requests) == 1


def csv_table(datatypes: str, header: str, rows: list[str], group: str | None = None) -> str:
    n = header.count(",")
    return (f"#datatype,{datatypes}\n#group,{group or ','.join(['false'] * n)}\n#default,{',' * (n - 1)}\n"
            f"{header}\n" + "".join(r + "\n" for r in rows) + "\n")


async def test_read_range_flux_and_parsing(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    server.csv_answers = [csv_table(
        "string,long,dateTime:RFC3339Nano,double,long", ",result,table,_time,value,quality",
        [",_result,0,2023-11-14T22:13:20.000000001Z,1.25,0",
         ",_result,0,2023-11-14T22:13:21Z,,2"])]
    got = await storage.read_range(KEY, T0, T0 + 10**10, good_only=False)
    assert got[0] == Sample(KEY, T0 + 1, 1.25, Quality.GOOD)
    assert (got[1].time_ns, got[1].quality) == (T0 + 10**9, Quality.BAD) and got[1].value != got[1].value
    (req,) = server.requests
    assert req.path == "/api/v2/query" and req.query == {"org": "my org"}
    assert req.headers["Authorization"] == f"Token {TOKEN}"
    sent = json.loads(req.body)
    assert sent["dialect"]["dateTimeFormat"] == "RFC3339Nano"
    flux = sent["query"]
    assert 'from(bucket: "dcim/autogen")' in flux
    assert f"range(start: time(v: {T0}), stop: time(v: {T0 + 10**10}))" in flux
    assert ('r._measurement == "pdu" and r.device == "PDU 1,A" and r.point == "current=l1"'
            ' and r.site == "cp5"') in flux
    assert "pivot(" in flux and "r.quality == 0" not in flux


async def test_read_aggregate_flux_and_parsing(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    s = 10**9
    start = T0 + 5 * s  # the first window's _start comes back clipped to this
    agg_rows = [f",agg,0,{t},{v}" for t, v in [
        ("2023-11-14T22:13:25Z", "2.5"), ("2023-11-14T22:13:30Z", ""), ("2023-11-14T22:14:00Z", "4")]]
    count_rows = [f",count,0,{t},{v}" for t, v in [
        ("2023-11-14T22:13:25Z", "2"), ("2023-11-14T22:13:30Z", "0"), ("2023-11-14T22:14:00Z", "1")]]
    server.csv_answers = [
        csv_table("string,long,dateTime:RFC3339Nano,double", ",result,table,_time,_value", agg_rows)
        + csv_table("string,long,dateTime:RFC3339Nano,long", ",result,table,_time,_value", count_rows)]
    got = await storage.read_aggregate(KEY, start, T0 + 50 * s, 10 * s, Aggregate.MAX)
    assert got == [Bucket(T0, 2.5, 2), Bucket(T0 + 10 * s, None, 0), Bucket(T0 + 20 * s, None, 0),
                   Bucket(T0 + 30 * s, None, 0), Bucket(T0 + 40 * s, 4.0, 1)]
    flux = json.loads(server.requests[0].body)["query"]
    assert "r.quality == 0 and exists r.value" in flux
    assert 'aggregateWindow(every: 10000000000ns, fn: max, createEmpty: true, timeSrc: "_start")' in flux
    assert 'aggregateWindow(every: 10000000000ns, fn: count, createEmpty: true, timeSrc: "_start")' in flux
    assert 'yield(name: "agg")' in flux and 'yield(name: "count")' in flux


async def test_read_latest_takes_newest_row(storage: InfluxDB2Storage, server: RecordingServer) -> None:
    other = SeriesKey("crah", "CRAH-1", "supply_temp_c")
    server.csv_answers = [csv_table(
        "string,long,dateTime:RFC3339Nano,string,string,string,double,long",
        ",result,table,_time,_measurement,device,point,value,quality",
        [",_result,0,2023-11-14T22:13:20Z,pdu,\"PDU 1,A\",current=l1,3.5,",  # older value only
         ",_result,0,2023-11-14T22:13:30Z,pdu,\"PDU 1,A\",current=l1,,2",
         ",_result,1,2023-11-14T22:13:25Z,crah,CRAH-1,supply_temp_c,18.5,0"])]
    got = await storage.read_latest([KEY, other])
    assert got[other] == Sample(other, T0 + 5 * 10**9, 18.5, Quality.GOOD)
    assert (got[KEY].time_ns, got[KEY].quality) == (T0 + 10 * 10**9, Quality.BAD)
    flux = json.loads(server.requests[0].body)["query"]
    assert "last()" in flux and 'r._measurement == "crah"' in flux


def test_flux_error_table_raises() -> None:
    text = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,boom,897\n"
    with pytest.raises(StorageError, match="boom"):
        list(parse_annotated_csv(text))


@pytest.mark.parametrize("text,ns", [
    ("1970-01-01T00:00:00Z", 0),
    ("2023-11-14T22:13:20.000000001Z", T0 + 1),
    ("2023-11-14T22:13:20.5Z", T0 + 500_000_000),
])
def test_parse_rfc3339_ns(text: str, ns: int) -> None:
    assert parse_rfc3339_ns(text) == ns


async def test_partial_and_odd_rows_never_raise(storage: InfluxDB2Storage,
                                                server: RecordingServer) -> None:
    """Rows with a field missing, an unknown quality code, a value that is not a number or
    no time read by the rules every backend shares (dcim.storage.base.sample_from_row)."""
    range_rows = [",_result,0,2023-11-14T22:13:20Z,1.25,0",
                  ",_result,0,2023-11-14T22:13:21Z,,0",  # good quality, value not there
                  ",_result,0,2023-11-14T22:13:22Z,3.5,",  # value, quality not there
                  ",_result,0,2023-11-14T22:13:23Z,4.5,7",  # unknown quality code
                  ",_result,0,2023-11-14T22:13:24Z,abc,0",  # not a number
                  ",_result,0,,1.0,0",  # no time
                  ",_result,0,2023-11-14T22:13:26Z,,"]  # neither field
    table = csv_table("string,long,dateTime:RFC3339Nano,double,long",
                      ",result,table,_time,value,quality", range_rows)
    server.csv_answers = [table, table]
    got = await storage.read_range(KEY, T0, T0 + 10**10)
    s = 10**9
    assert [(x.time_ns - T0, x.quality) for x in got] == [
        (0, Quality.GOOD), (s, Quality.BAD), (2 * s, Quality.BAD), (3 * s, Quality.BAD),
        (4 * s, Quality.BAD)]
    assert [x.value for x in got][2:4] == [3.5, 4.5] and got[1].value != got[1].value
    assert await storage.read_range(KEY, T0, T0 + 10**10, good_only=True) == [got[0]]
    server.csv_answers = [
        csv_table("string,long,dateTime:RFC3339Nano,double", ",result,table,_time,_value",
                  [",agg,0,2023-11-14T22:13:20Z,x", ",agg,0,,1"])
        + csv_table("string,long,dateTime:RFC3339Nano,long", ",result,table,_time,_value",
                    [",count,0,2023-11-14T22:13:20Z,2", ",count,0,,1"])]
    assert await storage.read_aggregate(KEY, T0, T0 + 10 * s, 10 * s, Aggregate.MEAN) == [
        Bucket(T0, None, 2)]
