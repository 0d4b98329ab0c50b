"""The Storage contract, run against every backend that has a real server here."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dcim.storage.base import Aggregate, Quality, Sample, SampleColumns, SeriesKey, Storage
from dcim.config.storage import EmbeddedStorageConfig, InfluxDB1StorageConfig, StorageConfig
from dcim.storage.factory import open_storage
from tests import influxd
from tests.storage_data import SERIES, T0_NS, SeriesData, expected_buckets, generate

SITE = "cyberport 5,hk=1"  # the site tag needs escaping too
SECOND = 10**9
EVERY_NS = [7 * SECOND + 3, 60 * SECOND, 900 * SECOND]
DATA = generate()

influxd_server = influxd.influxd_server
influx_database = influxd.influx_database


@pytest.fixture(params=["embedded", "influxdb1"])
def storage_config(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    """One configuration per backend; InfluxDB tests get a database of their own."""
    if request.param == "embedded":
        return EmbeddedStorageConfig(path=str(tmp_path / "dcim.sqlite"))
    return InfluxDB1StorageConfig(
        backend="influxdb1",
        url=request.getfixturevalue("influxd_server"),
        database=request.getfixturevalue("influx_database"),
    )


@pytest.fixture
async def storage(storage_config: StorageConfig) -> AsyncIterator[Storage]:
    """A started backend, closed after the test."""
    store = open_storage(storage_config, site_id=SITE)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


async def write_all(store: Storage, data: list[SeriesData], batch: int = 1000) -> None:
    """All generated samples, interleaved across series, in batches."""
    samples = sorted((s for d in data for s in d.samples()), key=lambda s: s.time_ns)
    for i in range(0, len(samples), batch):
        await store.write(samples[i : i + batch])


def assert_buckets_equal(actual: list, expected: list, fn: Aggregate) -> None:
    assert [b.start_ns for b in actual] == [b.start_ns for b in expected]
    assert [b.count for b in actual] == [b.count for b in expected]
    for a, e in zip(actual, expected, strict=True):
        if e.value is None:
            assert a.value is None, a
        elif fn in (Aggregate.MEAN, Aggregate.SUM):
            # Summation order differs between numpy, SQLite and InfluxDB.
            assert a.value == pytest.approx(e.value, rel=1e-9, abs=1e-6), (a, e)
        else:
            assert a.value == e.value, (a, e)


async def test_satisfies_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


async def test_round_trip_10000_samples(storage: Storage) -> None:
    await write_all(storage, DATA)
    for d in DATA:
        got = await storage.read_range(d.key, 0, 2**62)
        assert got == d.samples()


async def test_read_range_bounds_and_good_only(storage: Storage) -> None:
    await write_all(storage, DATA)
    d = DATA[1]
    start, end = int(d.times[100]), int(d.times[200])  # start inclusive, end exclusive
    got = await storage.read_range(d.key, start, end)
    assert got == d.samples()[100:200]
    good = await storage.read_range(d.key, start, end, good_only=True)
    assert good == [s for s in d.samples()[100:200] if s.quality is Quality.GOOD]
    assert await storage.read_range(SeriesKey("pdu", "nobody", "nothing"), 0, 2**62) == []


@pytest.mark.parametrize("fn", list(Aggregate), ids=[f.value for f in Aggregate])
async def test_aggregates_match_numpy(storage: Storage, fn: Aggregate) -> None:
    await write_all(storage, DATA)
    for d in DATA[:3]:
        start = int(d.times[0]) + 12_345  # not aligned: the first bucket starts before start_ns
        end = int(d.times[-1]) - 999
        for every in EVERY_NS:
            got = await storage.read_aggregate(d.key, start, end, every, fn)
            want = expected_buckets(d, start, end, every, fn)
            assert any(b.count == 0 for b in want) or every > 60 * SECOND
            assert_buckets_equal(got, want, fn)


async def test_aggregate_of_unknown_series_is_all_empty(storage: Storage) -> None:
    got = await storage.read_aggregate(SeriesKey("pdu", "x", "y"), 10, 3 * SECOND + 10, SECOND,
                                       Aggregate.MEAN)
    assert [(b.start_ns, b.value, b.count) for b in got] == [
        (0, None, 0), (SECOND, None, 0), (2 * SECOND, None, 0), (3 * SECOND, None, 0)]


async def test_read_latest(storage: Storage) -> None:
    await write_all(storage, DATA)
    missing = SeriesKey("crah", "CRAH-99", "supply_temp_c")
    latest = await storage.read_latest([d.key for d in DATA] + [missing])
    assert latest == {d.key: d.samples()[-1] for d in DATA}
    assert await storage.read_latest([]) == {}


async def test_same_time_overwrites(storage: Storage) -> None:
    key = SERIES[0]
    await storage.write([Sample(key, T0_NS, 1.0), Sample(key, T0_NS + 1, 2.0)])
    await storage.write([Sample(key, T0_NS, 3.5, Quality.STALE)])
    got = await storage.read_range(key, T0_NS, T0_NS + 2)
    assert got == [Sample(key, T0_NS, 3.5, Quality.STALE), Sample(key, T0_NS + 1, 2.0)]


@pytest.mark.parametrize(
    "key",
    [
        SeriesKey("ups module", "UPS A,1", "load=pct"),
        SeriesKey("pdu", "PDU \\ back", "p\\,q"),
        SeriesKey("crah", "空调-3", "温度 °C"),
        SeriesKey("m,=x", "a b=c,d", "'\"quoted\"'"),
        SeriesKey("emoji", "🔌", "⚡ kW"),
    ],
    ids=["spaces-commas-equals", "backslashes", "cjk", "everything", "emoji"],
)
async def test_awkward_names_round_trip(storage: Storage, key: SeriesKey) -> None:
    samples = [Sample(key, T0_NS + i, float(i) + 0.25, Quality.GOOD) for i in range(3)]
    await storage.write(samples)
    assert await storage.read_range(key, 0, 2**62) == samples
    assert await storage.read_latest([key]) == {key: samples[-1]}
    buckets = await storage.read_aggregate(key, T0_NS, T0_NS + 3, 2, Aggregate.SUM)
    assert sum(b.count for b in buckets) == 3


async def test_non_finite_values_read_back_as_nan(storage: Storage) -> None:
    key = SERIES[2]
    await storage.write([Sample(key, T0_NS, math.nan, Quality.BAD),
                         Sample(key, T0_NS + 1, math.inf, Quality.BAD),
                         Sample(key, T0_NS + 2, 5.0)])
    got = await storage.read_range(key, 0, 2**62)
    assert [(s.time_ns, s.quality) for s in got] == [
        (T0_NS, Quality.BAD), (T0_NS + 1, Quality.BAD), (T0_NS + 2, Quality.GOOD)]
    assert math.isnan(got[0].value) and math.isnan(got[1].value) and got[2].value == 5.0
    latest = await storage.read_latest([key])
    assert latest[key].value == 5.0


async def test_columns_write_as_the_same_samples(storage: Storage) -> None:
    """Collectors hand backends SampleColumns; every backend stores exactly those samples."""
    key_a, key_b = SERIES[0], SERIES[1]
    rows = [Sample(key_a, T0_NS, 1.25), Sample(key_b, T0_NS, 7.0, Quality.STALE),
            Sample(key_a, T0_NS + 1, math.nan, Quality.BAD), Sample(key_b, T0_NS + 1, 8.5)]
    await storage.write(SampleColumns.of(rows))
    got_a = await storage.read_range(key_a, 0, 2**62)
    assert [(s.time_ns, s.quality) for s in got_a] == [(T0_NS, Quality.GOOD), (T0_NS + 1, Quality.BAD)]
    assert got_a[0].value == 1.25 and math.isnan(got_a[1].value)
    assert await storage.read_range(key_b, 0, 2**62) == [rows[1], rows[3]]


async def test_a_value_less_sample_is_never_good(storage: Storage) -> None:
    """A good quality without a finite value (written so, or an InfluxDB point half stored
    when read) reads as BAD: analytics once summed such a GOOD NaN into a rack load."""
    key = SERIES[3]
    await storage.write([Sample(key, T0_NS, math.nan), Sample(key, T0_NS + 1, 2.0)])
    got = await storage.read_range(key, 0, 2**62)
    assert [(s.time_ns, s.quality) for s in got] == [(T0_NS, Quality.BAD), (T0_NS + 1, Quality.GOOD)]
    assert math.isnan(got[0].value)
    assert await storage.read_range(key, 0, 2**62, good_only=True) == [got[1]]
    await storage.write([Sample(key, T0_NS + 2, math.inf)])
    latest = (await storage.read_latest([key]))[key]
    assert (latest.time_ns, latest.quality, math.isnan(latest.value)) == (
        T0_NS + 2, Quality.BAD, True)
    buckets = await storage.read_aggregate(key, T0_NS, T0_NS + 3, 3, Aggregate.COUNT)
    assert sum(b.count for b in buckets) == 1
