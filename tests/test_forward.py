"""StoreAndForward: order and retries, rejected samples, close/reopen, a real influxd outage, SIGKILL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.storage.base import Aggregate, Bucket, Sample, SeriesKey, Storage, StorageError
from dcim.config.storage import InfluxDB1StorageConfig, WriteOptions
from dcim.storage.factory import open_storage
from dcim.storage.influxdb1 import InfluxDB1Storage
from dcim.storage.lineprotocol import InvalidSeriesKey
from dcim.storage.retry import StorageRejected
from tests import forward_child
from tests.influxd import InfluxdProcess

T0 = 1_700_000_000_000_000_000
KEY = SeriesKey("ups_module", "UPS-1", "load_pct")
REPO = Path(__file__).resolve().parents[1]


class FakeStorage:
    """Records written batches; fails the first `failures` writes; rejects samples `refuse` picks."""

    def __init__(self, failures: int = 0, refuse: Callable[[Sample], bool] = lambda s: False) -> None:
        self.failures = failures
        self.refuse = refuse
        self.stored: list[Sample] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def write(self, samples: Sequence[Sample]) -> None:
        """Store the batch, or fail as configured."""
        if self.failures:
            self.failures -= 1
            raise StorageError("injected outage")
        if any(self.refuse(s) for s in samples):
            raise StorageRejected("field type conflict (injected)")
        self.stored.extend(samples)

    async def read_range(self, series: SeriesKey, start_ns: int, end_ns: int, *,
                         good_only: bool = False) -> list[Sample]:
        raise NotImplementedError

    async def read_aggregate(self, series: SeriesKey, start_ns: int, end_ns: int, every_ns: int,
                             fn: Aggregate) -> list[Bucket]:
        raise NotImplementedError

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        raise NotImplementedError


def fast(storage: Storage, directory: Path, batch_size: int = 5000) -> StoreAndForward:
    """A forwarder with short flush and retry intervals."""
    return StoreAndForward(storage, DurableBuffer(directory), batch_size=batch_size,
                           flush_interval_s=0.02, retry_backoff_s=(0.005, 0.02))


def make(n: int, offset: int = 0) -> list[Sample]:
    return [Sample(KEY, T0 + i, float(i)) for i in range(offset, offset + n)]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until condition() holds; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("failures", [0, 1, 4, 12], ids=lambda n: f"fails-{n}")
async def test_order_kept_and_nothing_lost_through_failures(tmp_path: Path, failures: int) -> None:
    store = FakeStorage(failures)
    forward = fast(store, tmp_path, batch_size=100)
    await forward.start()
    for i in range(0, 2000, 137):
        forward.add(make(min(137, 2000 - i), i))
    await until(lambda: forward.buffered == 0)
    await forward.close()
    assert store.stored == make(2000)
    assert (forward.written, forward.write_errors, forward.rejected_samples) == (2000, failures, 0)
    assert forward.outage_s == 0 and forward.last_write_ok_s is not None
    assert (forward.replayed > 0) == (failures > 0)


async def test_rejected_samples_are_set_aside_with_the_reason(tmp_path: Path) -> None:
    bad = {13.0, 777.0}
    store = FakeStorage(refuse=lambda s: s.value in bad)
    forward = fast(store, tmp_path / "buf", batch_size=500)
    await forward.start()
    forward.add(make(1000))
    await until(lambda: forward.buffered == 0)
    await forward.close()
    assert store.stored == [s for s in make(1000) if s.value not in bad]
    assert (forward.written, forward.rejected_samples, forward.write_errors) == (998, 2, 0)
    files = sorted((tmp_path / "buf" / "rejected").iterdir())
    assert len(files) == 2
    head, row = (json.loads(line) for line in files[0].read_text().splitlines())
    assert head == {"reason": "field type conflict (injected)", "samples": 1}
    assert row["value"] == 13.0 and row["device"] == "UPS-1" and row["time_ns"] == T0 + 13


async def test_add_refuses_a_bad_series_key_at_the_caller(tmp_path: Path) -> None:
    forward = fast(FakeStorage(), tmp_path)
    with pytest.raises(InvalidSeriesKey):
        forward.add(Sample(SeriesKey("ups", "", "x"), T0, 1.0))
    assert forward.buffered == 0
    await forward.close()


async def test_close_keeps_the_backlog_for_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = FakeStorage(failures=10**9)
    forward = fast(down, tmp_path)
    await forward.start()
    forward.add(make(1000))
    await until(lambda: forward.write_errors > 0)
    assert forward.outage_s > 0 and "injected outage" in forward.last_error
    await forward.close(timeout_s=0.1)

    up = FakeStorage()
    again = fast(up, tmp_path)
    with caplog.at_level(logging.INFO, logger="dcim.collectors.forward"):
        await again.start()
    (record,) = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert record.getMessage() == "recovered 1000 samples from the buffer; discarded 0 torn bytes"
    assert record.__dict__["newest_time_ns"] == T0 + 999
    again.add(make(10, 1000))
    await until(lambda: again.buffered == 0)
    await again.close()
    assert up.stored == make(1010)  # the backlog first, then new samples
    assert (again.replayed, again.written) == (1000, 1010)


# -- how soon replay starts after an outage (virtual time) ----------------------------------

class VirtualTime:
    """A clock and a sleep that moves it: the forwarder's backoff and probes run instantly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class ClockedStorage(FakeStorage):
    """Fails writes while the clock is before back_at_s (bigger than `up_to` samples: always)."""

    def __init__(self, clock: VirtualTime, back_at_s: float, up_to: int = 10**9) -> None:
        super().__init__()
        self.clock, self.back_at_s, self.up_to = clock, back_at_s, up_to
        self.attempts: list[tuple[float, int, bool]] = []  # (time, samples, stored)

    async def write(self, samples: Sequence[Sample]) -> None:
        ok = self.clock() >= self.back_at_s or len(samples) <= self.up_to
        self.attempts.append((self.clock(), len(samples), ok))
        if not ok:
            raise StorageError("injected outage")
        self.stored.extend(samples)


def clocked(store: Storage, directory: Path, t: VirtualTime) -> StoreAndForward:
    """A forwarder on virtual time, with the production backoff and probe interval."""
    return StoreAndForward(store, DurableBuffer(directory), batch_size=100, flush_interval_s=0.01,
                           clock=t, sleep=t.sleep, rng=random.Random(7))


@pytest.mark.parametrize("back_at_s", [7.3, 61.1, 300.5])
async def test_replay_starts_within_two_seconds_of_storage_answering(
    tmp_path: Path, back_at_s: float
) -> None:
    t = VirtualTime()
    store = ClockedStorage(t, back_at_s, up_to=0)
    forward = clocked(store, tmp_path, t)
    forward.add(make(1000))
    await forward.start()
    await until(lambda: forward.buffered == 0)
    await forward.close()
    assert store.stored == make(1000)
    first_ok = next(at for at, _, ok in store.attempts if ok)
    first_batch = next(at for at, n, ok in store.attempts if ok and n > 1)
    assert back_at_s <= first_ok <= first_batch < back_at_s + 2.5
    # Probes are one sample, at most one per 2 s; full batches keep their backoff (>= 15 s
    # apart once capped at 30 s, never more than the doubling steps plus one per 15 s).
    probes = [at for at, n, _ in store.attempts if n == 1]
    assert probes and all(b - a > 2.0 - 1e-9 for a, b in zip(probes, probes[1:]))
    batches = [at for at, n, ok in store.attempts if n > 1 and not ok]
    assert len(batches) <= 7 + back_at_s / 15
    assert forward.outage_s == 0 and forward.write_errors == len(probes) + len(batches) - 1


async def test_batches_stay_on_backoff_while_only_probes_pass(tmp_path: Path) -> None:
    t = VirtualTime()
    store = ClockedStorage(t, back_at_s=120.0, up_to=1)  # takes one sample, chokes on batches
    forward = clocked(store, tmp_path, t)
    forward.add(make(1000))
    await forward.start()
    await until(lambda: forward.buffered == 0)
    await forward.close()
    assert store.stored == make(1000)  # in order: probes took the oldest samples one by one
    failed = [at for at, n, ok in store.attempts if not ok]
    assert len(failed) <= 7 + 120 / 15  # not one per probe (60 probes in 120 s)
    assert sum(1 for _, n, ok in store.attempts if ok and n == 1) >= 50


# -- a real influxd stopped under load --------------------------------------------------

RACKS = [SeriesKey("rack_monitor", f"RACK-{i:02d}", "inlet_temp_c") for i in range(25)]
TICK_S = 0.05  # 25 series every 50 ms = 500 samples/s


@pytest.mark.influxdb
@pytest.mark.parametrize(
    "outage_s",
    [3.0, pytest.param(60.0, marks=[pytest.mark.slow, pytest.mark.timeout(180)], id="60.0")],
)
async def test_influxd_outage_under_load_loses_nothing(
    tmp_path: Path, influxd_process: InfluxdProcess, influx_database: str, outage_s: float
) -> None:
    config = InfluxDB1StorageConfig(
        backend="influxdb1", url=influxd_process.url, database=influx_database,
        # The backend's own retries stay short: the forwarder retries, with the disk behind it.
        write=WriteOptions(max_retries=0, retry_backoff_s=0.05, timeout_s=2.0),
    )
    storage = open_storage(config, site_id="t")
    assert isinstance(storage, InfluxDB1Storage)
    await storage.start()
    forward = StoreAndForward(storage, DurableBuffer(tmp_path / "buf", fsync_interval_s=0.2),
                              flush_interval_s=0.2, retry_backoff_s=(0.1, 2.0))
    await forward.start()
    ticks = 0

    async def produce(seconds: float) -> None:
        nonlocal ticks
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < seconds:
            forward.add([Sample(k, T0 + ticks * 50_000_000, float(ticks)) for k in RACKS])
            ticks += 1
            await asyncio.sleep(max(0.0, start + ticks * TICK_S - loop.time()))

    before_s, after_s = (1.0, 1.5) if outage_s < 10 else (2.0, 8.0)  # the slow case spans ~70 s
    producer = asyncio.create_task(produce(before_s + outage_s + after_s))
    await asyncio.sleep(before_s)
    await asyncio.to_thread(influxd_process.stop)
    await asyncio.sleep(outage_s)
    during = forward.stats()
    assert during.write_errors > 0 and during.outage_s > 0
    assert during.buffered >= 0.8 * outage_s * len(RACKS) / TICK_S
    await asyncio.to_thread(influxd_process.start)
    await producer
    await until(lambda: forward.buffered == 0, timeout_s=30.0)
    await forward.close()

    total = ticks * len(RACKS)
    assert total >= 0.9 * (before_s + outage_s + after_s) * len(RACKS) / TICK_S  # load kept up
    (result,) = await storage.query('SELECT count("quality") FROM "rack_monitor" GROUP BY "device"')
    counts = {s["tags"]["device"]: s["values"][0][1] for s in result["series"]}
    assert counts == {k.device: ticks for k in RACKS}
    one = await storage.read_range(RACKS[7], T0, T0 + 10**15)
    assert [s.value for s in one] == [float(t) for t in range(ticks)]
    await storage.close()
    stats = forward.stats()
    assert (stats.written, stats.buffered, stats.rejected_samples, stats.dropped_samples) == (total, 0, 0, 0)
    assert stats.replayed >= during.buffered and stats.outage_s == 0


# -- SIGKILL -------------------------------------------------------------------------------

def _child(buffer_dir: Path, db: Path, mode: str, log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.forward_child", str(buffer_dir), str(db), mode],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stored_values(db: Path) -> list[float]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT value FROM samples ORDER BY time_ns").fetchall()
    conn.close()
    return [v for (v,) in rows]


@pytest.mark.parametrize("mode", ["produce", "stall"],
                         ids=["killed-anywhere", "killed-between-begin-and-add"])
def test_sigkill_loses_at_most_the_batch_in_flight_and_says_so(tmp_path: Path, mode: str) -> None:
    buffer_dir, db = tmp_path / "buf", tmp_path / "store.sqlite"
    producer = _child(buffer_dir, db, mode, tmp_path / "produce.log")
    assert producer.stdout is not None
    last: dict[str, int] = {}
    try:
        for line in producer.stdout:
            event = json.loads(line)
            if "began" in event:  # stall: a cycle was begun and will never be added
                break
            last = event
            if mode == "produce" and last["appended"] >= 20_000 and 0 < last["written"] < last["appended"]:
                break
        else:
            pytest.fail(f"producer stopped: {(tmp_path / 'produce.log').read_text()}")
        producer.send_signal(signal.SIGKILL)
    finally:
        producer.kill()
        producer.wait(timeout=10)
        producer.stdout.close()
    assert producer.returncode == -signal.SIGKILL
    stored_before = len(_stored_values(db))

    drainer = _child(buffer_dir, db, "drain", tmp_path / "drain.log")
    out, _ = drainer.communicate(timeout=60)
    assert drainer.returncode == 0, (tmp_path / "drain.log").read_text()
    values = _stored_values(db)
    # Every sample add() had returned before the kill is stored, in a gap-free run from 0;
    # beyond it at most the batch being appended when the kill came.
    assert values == [float(n) for n in range(len(values))]
    assert last["appended"] <= len(values) <= last["appended"] + forward_child.BATCH
    assert last["synced"] <= last["appended"]
    logs = [json.loads(line) for line in (tmp_path / "drain.log").read_text().splitlines()]
    (report,) = [r for r in logs if r["msg"].startswith("recovered ")]
    assert report["recovered_samples"] >= len(values) - stored_before
    assert report["discarded_bytes"] >= 0 and report["torn_frames"] in (0, 1)
    assert report["discarded_samples"] <= forward_child.BATCH
    assert report["newest_time_ns"] == T0 + len(values) - 1
    drained = json.loads(out.splitlines()[-1])
    assert drained["replayed"] == report["recovered_samples"]
    # Every cycle begun is either stored whole or reported lost with its sample count.
    lost = drained["lost_at_restart"]
    assert (report["lost_cycle_samples"], report["lost_cycles"]) == (lost, drained["lost_cycles_at_restart"])
    assert (lost, report["lost_cycles"]) in ((0, 0), (forward_child.BATCH, 1))
    assert len(values) + lost in (last["appended"], last["appended"] + forward_child.BATCH)
    if mode == "stall":
        assert (len(values), lost) == (last["appended"], forward_child.BATCH)
        assert report["lost_cycle_tags"] == [forward_child.TAG] and report["level"] == "WARNING"
        assert report["msg"].endswith("; lost 1 cycles (100 samples) polled and not buffered before the stop")
