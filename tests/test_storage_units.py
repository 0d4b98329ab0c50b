"""Pure parts of storage: line protocol, quoting, bucket alignment, retention, factory."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dcim.storage.base import Quality, Sample, SeriesKey, StorageError, sample_from_row
from dcim.storage.buckets import MAX_BUCKETS, bucket_start, bucket_starts
from dcim.config.storage import (
    EmbeddedStorageConfig,
    InfluxDB1StorageConfig,
    InfluxDB2StorageConfig,
)
from dcim.storage.embedded import NS_PER_DAY, EmbeddedStorage
from dcim.storage.factory import open_storage
from dcim.storage.influxdb1 import InfluxDB1Storage
from dcim.storage.influxdb2 import InfluxDB2Storage
from dcim.storage.lineprotocol import (
    InvalidSeriesKey,
    LineBuilder,
    flux_string,
    influxql_ident,
    influxql_string,
)
from dcim.storage.retry import backoff_s


@pytest.mark.parametrize(
    "key,site,prefix",
    [
        (SeriesKey("pdu", "PDU-1", "kw"), "cp5", "pdu,device=PDU-1,point=kw,site=cp5"),
        (SeriesKey("ups module", "a,b", "c=d"), "s 1", r"ups\ module,device=a\,b,point=c\=d,site=s\ 1"),
        (SeriesKey("m=1,x", "é ✓", "x"), "s", r"m=1\,x,device=é\ ✓,point=x,site=s"),
        (SeriesKey("m", 'q"t\'', "a\\b"), "s", "m,device=q\"t',point=a\\b,site=s"),
    ],
    ids=["plain", "spaces-commas-equals", "measurement-keeps-equals", "quotes-backslash"],
)
def test_line_prefix_escaping(key: SeriesKey, site: str, prefix: str) -> None:
    assert LineBuilder(site).prefix(key) == prefix


@pytest.mark.parametrize(
    "sample,line",
    [
        (Sample(SeriesKey("m", "d", "p"), 5, 1.0), "m,device=d,point=p,site=s value=1.0,quality=0i 5"),
        (Sample(SeriesKey("m", "d", "p"), 5, -1e-7, Quality.STALE),
         "m,device=d,point=p,site=s value=-1e-07,quality=1i 5"),
        (Sample(SeriesKey("m", "d", "p"), 5, 3, Quality.BAD), "m,device=d,point=p,site=s value=3.0,quality=2i 5"),
        (Sample(SeriesKey("m", "d", "p"), 5, float("nan"), Quality.BAD), "m,device=d,point=p,site=s quality=2i 5"),
        (Sample(SeriesKey("m", "d", "p"), 5, float("-inf")), "m,device=d,point=p,site=s quality=0i 5"),
    ],
    ids=["float", "tiny-negative", "int-value", "nan", "inf"],
)
def test_line_fields(sample: Sample, line: str) -> None:
    assert LineBuilder("s").build([sample]) == line


@pytest.mark.parametrize(
    "key,message",
    [
        (SeriesKey("", "d", "p"), "measurement is empty"),
        (SeriesKey("m", "", "p"), "device is empty"),
        (SeriesKey("m", "d", "a\nb"), "line break"),
        (SeriesKey("m", "d\\", "p"), "backslash"),
    ],
)
def test_invalid_keys(key: SeriesKey, message: str) -> None:
    with pytest.raises(InvalidSeriesKey, match=message):
        LineBuilder("s").prefix(key)


@pytest.mark.parametrize(
    "fn,text,quoted",
    [
        (influxql_ident, 'a"b\\c', '"a\\"b\\\\c"'),
        (influxql_string, "it's \\", "'it\\'s \\\\'"),
        (flux_string, 'say "${x}" \\', '"say \\"\\${x}\\" \\\\"'),
    ],
    ids=["influxql-ident", "influxql-string", "flux-string"],
)
def test_query_quoting(fn: object, text: str, quoted: str) -> None:
    assert callable(fn) and fn(text) == quoted


@pytest.mark.parametrize(
    "t,every,start",
    [(0, 10, 0), (9, 10, 0), (10, 10, 10), (-1, 10, -10), (-10, 10, -10), (1_700_000_000_123, 60, 1_700_000_000_100)],
)
def test_bucket_start_aligns_to_epoch(t: int, every: int, start: int) -> None:
    assert bucket_start(t, every) == start


def test_bucket_starts_range_and_guard() -> None:
    assert list(bucket_starts(15, 40, 10)) == [10, 20, 30]
    assert list(bucket_starts(15, 15, 10)) == []
    with pytest.raises(ValueError, match="positive"):
        bucket_starts(0, 10, 0)
    with pytest.raises(ValueError, match="more than"):
        bucket_starts(0, MAX_BUCKETS + 1, 1)


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(0.2, n) for n in range(4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff_s(0.2, 50) == 30.0


def test_factory_picks_backend(tmp_path: Path) -> None:
    assert isinstance(open_storage(EmbeddedStorageConfig(path=str(tmp_path / "x.sqlite")), site_id="s"),
                      EmbeddedStorage)
    assert isinstance(open_storage(InfluxDB1StorageConfig(backend="influxdb1", url="http://127.0.0.1:1"),
                                   site_id="s"), InfluxDB1Storage)
    assert isinstance(open_storage(InfluxDB2StorageConfig(backend="influxdb2", url="http://127.0.0.1:1",
                                                          org="o", bucket="b"), site_id="s"), InfluxDB2Storage)


async def test_embedded_retention(tmp_path: Path) -> None:
    now = 100 * NS_PER_DAY
    config = EmbeddedStorageConfig(path=str(tmp_path / "r.sqlite"), retention_days=7)
    key = SeriesKey("pdu", "a", "b")
    store = EmbeddedStorage(config, site_id="s", clock_ns=lambda: now)
    await store.start()
    await store.write([Sample(key, now - 8 * NS_PER_DAY, 1.0), Sample(key, now - 6 * NS_PER_DAY, 2.0)])
    assert await store.apply_retention() == 1
    assert [s.value for s in await store.read_range(key, 0, 2**62)] == [2.0]
    await store.close()
    # Retention also runs on start, and the series ids survive a reopen.
    store = EmbeddedStorage(config, site_id="s", clock_ns=lambda: now + 2 * NS_PER_DAY)
    await store.start()
    assert await store.read_range(key, 0, 2**62) == []
    await store.write([Sample(key, now, 3.0)])
    assert await store.read_latest([key]) == {key: Sample(key, now, 3.0)}
    await store.close()


async def test_embedded_file_is_wal(tmp_path: Path) -> None:
    import sqlite3

    store = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "w.sqlite")), site_id="s")
    await store.start()
    await store.close()
    with sqlite3.connect(tmp_path / "w.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    with pytest.raises(StorageError, match="not started"):
        await store.write([Sample(SeriesKey("m", "d", "p"), 1, 1.0)])


def test_numpy_and_bool_values_are_written_as_floats() -> None:
    import numpy as np

    key = SeriesKey("m", "d", "p")
    lines = LineBuilder("s").build([Sample(key, 1, np.float64(2.5)), Sample(key, 2, True)])  # type: ignore[arg-type]
    assert lines.split("\n") == ["m,device=d,point=p,site=s value=2.5,quality=0i 1",
                                 "m,device=d,point=p,site=s value=1.0,quality=0i 2"]


def test_line_protocol_of_a_batch_is_each_sample_formatted_alone() -> None:
    """Columns built by maps and the value-text cache give, batch after batch, the lines of
    formatting each sample on its own (zero's sign and non-finite values included)."""
    keys = [SeriesKey("m", f"d{i}", "p") for i in range(4)]
    values = [0.0, -0.0, 230.5, 0.1 + 0.2, float("nan"), float("inf"), 1e-7, 2305 / 10, -0.0, 0.0]
    batch = [Sample(keys[i % 4], 1_000 + i // 3, v, Quality(i % 3)) for i, v in enumerate(values)]

    def alone(s: Sample) -> str:
        head = f"m,device={s.series.device},point=p,site=s"
        if s.value - s.value == 0.0:
            return f"{head} value={s.value!r},quality={int(s.quality)}i {s.time_ns}"
        return f"{head} quality={int(s.quality)}i {s.time_ns}"

    builder = LineBuilder("s")
    for _ in range(2):  # the second time from the caches
        assert builder.build(batch) == "\n".join(map(alone, batch))
        assert builder.build(batch[::-1]) == "\n".join(map(alone, batch[::-1]))


_K = SeriesKey("m", "d", "p")
_NAN = "nan"


@pytest.mark.parametrize("time_ns,value,quality,want", [
    (5, 1.5, 0, (1.5, Quality.GOOD)),
    (5, 2, 1, (2.0, Quality.STALE)),
    (5, 2.5, None, (2.5, Quality.BAD)),
    (5, None, 2, (_NAN, Quality.BAD)),
    (5, None, 1, (_NAN, Quality.STALE)),
    (5, None, 0, (_NAN, Quality.BAD)),
    (5, math.inf, 0, (_NAN, Quality.BAD)),
    (5, math.nan, 1, (_NAN, Quality.STALE)),
    (5, 1.0, 9, (1.0, Quality.BAD)),
    (5, 1.0, 0.0, (1.0, Quality.BAD)),
    (5, 1.0, True, (1.0, Quality.BAD)),
    (5, "1.0", 0, (_NAN, Quality.BAD)),
    (5, 10**400, 0, (_NAN, Quality.BAD)),
    (5, None, None, None),
    (None, 1.0, 0, None),
    ("5", 1.0, 0, None),
], ids=["good", "int-value-stale", "no-quality", "no-value-bad", "no-value-stale",
        "no-value-good", "inf-good", "nan-stale", "unknown-code", "float-code", "bool-code",
        "string-value", "huge-int", "neither", "no-time", "string-time"])
def test_sample_from_row(time_ns: object, value: object, quality: object,
                         want: tuple[float | str, Quality] | None) -> None:
    """Every backend reads a stored row by these rules; a partial row never raises."""
    got = sample_from_row(_K, time_ns, value, quality)
    if want is None:
        assert got is None
        return
    assert got is not None and got.time_ns == 5 and got.quality is want[1]
    assert (_NAN if math.isnan(got.value) else got.value) == want[0]
