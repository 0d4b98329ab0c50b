"""BatchWriter: batching, retries, order, and an InfluxDB outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dcim.storage.base import Sample, SeriesKey, StorageError
from dcim.config.storage import EmbeddedStorageConfig, InfluxDB1StorageConfig, WriteOptions
from dcim.storage.embedded import EmbeddedStorage
from dcim.storage.influxdb1 import InfluxDB1Storage
from dcim.storage.lineprotocol import InvalidSeriesKey
from dcim.storage.retry import StorageRejected
from dcim.storage.writer import BatchWriter
from tests import influxd
from tests.influxd import InfluxdProcess, free_port

influxd_process = influxd.influxd_process

KEY = SeriesKey("ups_module", "UPS-1", "load_pct")
T0 = 1_700_000_000_000_000_000


class FlakyStorage(EmbeddedStorage):
    """The embedded backend, failing the first `failures` writes (or rejecting them)."""

    def __init__(self, path: Path, failures: int, reject: bool = False) -> None:
        super().__init__(EmbeddedStorageConfig(path=str(path)), site_id="t")
        self.failures = failures
        self.reject = reject
        self.batches: list[int] = []

    async def write(self, samples: Sequence[Sample]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise (StorageRejected if self.reject else StorageError)("injected failure")
        self.batches.append(len(samples))
        await super().write(samples)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def samples(n: int, offset: int = 0) -> list[Sample]:
    return [Sample(KEY, T0 + offset + i, float(offset + i)) for i in range(n)]


@pytest.mark.parametrize("failures", [0, 1, 3, 7, 20], ids=lambda n: f"fails-{n}")
async def test_nothing_lost_and_order_kept(tmp_path: Path, failures: int) -> None:
    store = FlakyStorage(tmp_path / "w.sqlite", failures)
    await store.start()
    options = WriteOptions(batch_size=100, max_retries=2, retry_backoff_s=0.01)
    writer = BatchWriter(store, options, sleep=no_sleep)
    for chunk in range(10):
        writer.add(samples(37, chunk * 37))
    writer.add(samples(1, 370)[0])
    while writer.pending:
        await writer.flush()
    assert writer.written == 371 and writer.pending == 0
    assert writer.failed_attempts == failures
    assert store.batches[:3] == [100, 100, 100]
    assert await store.read_range(KEY, 0, 2**62) == samples(371)
    await writer.close()
    await store.close()


async def test_failed_batch_stays_pending(tmp_path: Path) -> None:
    store = FlakyStorage(tmp_path / "w.sqlite", failures=3)
    await store.start()
    writer = BatchWriter(store, WriteOptions(batch_size=10, max_retries=2, retry_backoff_s=0.01),
                         sleep=no_sleep)
    writer.add(samples(25))
    assert await writer.flush() is False
    assert (writer.pending, writer.written, writer.failed_attempts) == (25, 0, 3)
    assert await writer.flush() is True
    assert (writer.pending, writer.written) == (0, 25)
    await store.close()


async def test_rejected_batch_is_counted_not_retried(tmp_path: Path) -> None:
    store = FlakyStorage(tmp_path / "w.sqlite", failures=1, reject=True)
    await store.start()
    writer = BatchWriter(store, WriteOptions(batch_size=10, max_retries=5), sleep=no_sleep)
    writer.add(samples(15))
    assert await writer.flush() is True
    assert (writer.rejected, writer.written, writer.pending) == (10, 5, 0)
    await store.close()


async def test_invalid_key_raises_at_add(tmp_path: Path) -> None:
    writer = BatchWriter(FlakyStorage(tmp_path / "w.sqlite", 0), WriteOptions())
    with pytest.raises(InvalidSeriesKey, match="device is empty"):
        writer.add(Sample(SeriesKey("pdu", "", "x"), T0, 1.0))
    assert writer.pending == 0


async def test_background_flush_by_size_and_interval(tmp_path: Path) -> None:
    store = FlakyStorage(tmp_path / "w.sqlite", 0)
    await store.start()
    writer = BatchWriter(store, WriteOptions(batch_size=50, flush_interval_s=0.05))
    await writer.start()
    writer.add(samples(50))  # a full batch wakes the flusher at once
    writer.add(samples(3, 50))  # the rest goes at the next interval
    for _ in range(200):
        if writer.written == 53:
            break
        await asyncio.sleep(0.01)
    assert writer.written == 53
    writer.add(samples(2, 53))
    await writer.close()  # flushes
    assert writer.written == 55
    assert await store.read_range(KEY, 0, 2**62) == samples(55)
    await store.close()


@pytest.mark.influxdb
async def test_outage_samples_arrive_after_restart(influxd_process: InfluxdProcess) -> None:
    config = InfluxDB1StorageConfig(
        backend="influxdb1", url=influxd_process.url, database="outage",
        write=WriteOptions(batch_size=20, flush_interval_s=0.05, max_retries=1, retry_backoff_s=0.02),
    )
    store = InfluxDB1Storage(config, site_id="t")
    await store.start()
    writer = BatchWriter(store, config.write)
    await writer.start()
    writer.add(samples(30))
    await _until(lambda: writer.written == 30)

    await asyncio.to_thread(influxd_process.stop)
    writer.add(samples(70, 30))
    await _until(lambda: writer.failed_attempts >= 4)
    assert writer.pending == 70

    await asyncio.to_thread(influxd_process.start)
    await _until(lambda: writer.pending == 0, timeout_s=15)
    await writer.close()
    assert writer.written == 100
    assert await store.read_range(KEY, 0, 2**62) == samples(100)
    await store.close()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_unreachable_server_gives_storage_error() -> None:
    port = free_port()  # nothing listens there
    config = InfluxDB1StorageConfig(backend="influxdb1", url=f"http://127.0.0.1:{port}", create_database=False,
                                    write=WriteOptions(max_retries=1, retry_backoff_s=0.01))
    store = InfluxDB1Storage(config, site_id="t")
    await store.start()
    with pytest.raises(StorageError, match=rf"127.0.0.1:{port}/write.*gave up after 2 attempts"):
        await store.write(samples(1))
    await store.close()
