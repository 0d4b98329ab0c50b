"""Cycle marks in the durable buffer: a cycle polled and not buffered before a stop is reported
at the next start (log line, ForwardStats, /metrics); marks never reach storage nor reorder it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from dcim.collectors.buffer import (
    FRAME_HEADER,
    MARK_HEADER,
    MARKS_COUNT,
    PAYLOAD_HEADER,
    DurableBuffer,
    segment_name,
)
from dcim.collectors.forward import StoreAndForward
from dcim.collectors.metrics import buffer_metrics, prometheus_text
from dcim.storage.base import Sample, SeriesKey
from tests.test_buffer import drain
from tests.test_forward import FakeStorage, until

T0 = 1_700_000_000_000_000_000
KEY = SeriesKey("ups_module", "UPS-A1", "output_kw")
GW1, GW2 = "modbus:GW-1:5s", "opcua:BMS:1s"


def samples(n: int, offset: int = 0) -> list[Sample]:
    return [Sample(KEY, T0 + i, float(i)) for i in range(offset, offset + n)]


def small(directory: Path) -> DurableBuffer:
    return DurableBuffer(directory, segment_bytes=4096, max_bytes=1 << 30, min_free_bytes=0)


def begin_done(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 5)
    buf.append(samples(5), done_cycle=GW1)


def begun_not_added(buf: DurableBuffer) -> None:
    buf.append(samples(5))
    buf.begin_cycle(GW1, 5)


def two_groups_one_open(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 5)
    buf.begin_cycle(GW2, 7)
    buf.append(samples(5), done_cycle=GW1)


def begun_again_before_done(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 5)  # that poll failed: the collector went on to the next cycle
    buf.begin_cycle(GW1, 6)


def empty_cycle_done(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 0)
    buf.append([], done_cycle=GW1)


def begin_outlives_its_segment(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 5)
    for i in range(0, 3000, 50):  # another group's cycles fill several segments
        buf.append(samples(50, i))
        buf.ack(buf.read_unacked(100)[1])  # and storage takes them: old segments are deleted
    assert not (buf.directory / segment_name(1)).exists()


def begin_outlives_the_bound(buf: DurableBuffer) -> None:
    buf.begin_cycle(GW1, 5)
    buf.max_bytes = 2 * 4096
    for i in range(0, 3000, 50):
        buf.append(samples(50, i))
    assert buf.dropped_samples > 0


@pytest.mark.parametrize(
    ("story", "lost"),
    [
        (begin_done, {}),
        (begun_not_added, {GW1: 5}),
        (two_groups_one_open, {GW2: 7}),
        (begun_again_before_done, {GW1: 6}),
        (empty_cycle_done, {}),
        (begin_outlives_its_segment, {GW1: 5}),
        (begin_outlives_the_bound, {GW1: 5}),
    ],
    ids=lambda v: v.__name__.replace("_", "-") if callable(v) else f"lost-{sum(v.values())}",
)
def test_recovery_counts_cycles_begun_and_not_buffered(
    tmp_path: Path, story: Callable[[DurableBuffer], None], lost: dict[str, int]
) -> None:
    buf = small(tmp_path)
    story(buf)
    assert buf.open_cycles == lost
    buf.close()
    again = small(tmp_path)
    report = again.recovery
    assert (report.lost_cycles, report.lost_cycle_samples) == (len(lost), sum(lost.values()))
    assert set(report.lost_cycle_tags) == set(lost)
    again.close()
    third = small(tmp_path)  # counted once: the second start recorded them as done
    assert third.recovery.lost_cycles == 0
    third.close()


def test_a_torn_add_loses_its_cycle(tmp_path: Path) -> None:
    buf = small(tmp_path)
    buf.begin_cycle(GW1, 5)
    buf.append(samples(5), done_cycle=GW1)
    buf.begin_cycle(GW1, 40)
    buf.append(samples(40, 5), done_cycle=GW1)
    buf.close()
    (path,) = tmp_path.glob("seg-*.log")
    path.write_bytes(path.read_bytes()[:-30])  # killed while writing the second add
    again = small(tmp_path)
    assert (again.recovery.lost_cycles, again.recovery.lost_cycle_samples) == (1, 40)
    assert again.recovery.discarded_samples == 40
    assert drain(again) == samples(5)
    again.close()


def test_marks_cost_one_small_record_per_cycle(tmp_path: Path) -> None:
    plain, marked = small(tmp_path / "plain"), small(tmp_path / "marked")
    plain.append(samples(5))
    marked.begin_cycle(GW1, 5)
    marked.append(samples(5), done_cycle=GW1)
    tag = len(GW1.encode())
    begin = FRAME_HEADER.size + PAYLOAD_HEADER.size + MARKS_COUNT.size + MARK_HEADER.size + tag
    done = MARKS_COUNT.size + MARK_HEADER.size + tag
    assert marked.bytes_on_disk - plain.bytes_on_disk == begin + done == 62
    unmarked = small(tmp_path / "unmarked")  # add(cycle=...) without a begin writes no mark
    unmarked.append(samples(5), done_cycle=GW1)
    assert unmarked.bytes_on_disk == plain.bytes_on_disk
    for buf in (plain, marked, unmarked):
        buf.close()


async def test_marks_never_reach_storage_and_keep_the_order(tmp_path: Path) -> None:
    store = FakeStorage()
    forward = StoreAndForward(store, small(tmp_path), batch_size=7, flush_interval_s=0.01)
    await forward.start()
    for i in range(0, 300, 30):
        forward.begin_cycle(GW1, 10)
        forward.begin_cycle(GW2, 20)
        forward.add(samples(10, i), cycle=GW1)
        forward.add(samples(20, i + 10), cycle=GW2)
    await until(lambda: forward.buffered == 0)
    await forward.close()
    assert store.stored == samples(300)
    assert forward.buffer.open_cycles == {}


async def test_lost_cycles_are_logged_counted_and_exported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buf = small(tmp_path)
    buf.begin_cycle(GW1, 2300)
    buf.begin_cycle(GW2, 200)
    buf.append(samples(200), done_cycle=GW2)
    buf.begin_cycle(GW2, 200)
    buf.close()
    forward = StoreAndForward(FakeStorage(failures=10**9), small(tmp_path))
    with caplog.at_level(logging.INFO, logger="dcim.collectors.forward"):
        await forward.start()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("recovered ")]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("recovered 200 samples from the buffer; discarded 0 torn bytes; "
                                   "lost 2 cycles (2500 samples) polled and not buffered before the stop")
    assert sorted(record.__dict__["lost_cycle_tags"]) == [GW1, GW2]
    stats = forward.stats()
    assert (stats.lost_at_restart, stats.lost_cycles_at_restart, stats.lost_samples) == (2500, 2, 0)
    forward.lost_samples, forward.buffer_error = 7, "buffer disk full: [Errno 28] No space left on device"
    text = prometheus_text({"devices": {}, "cadences": {}, "buffer": buffer_metrics(forward.stats())})
    assert "# TYPE dcim_buffer_lost_samples_total counter" in text
    assert "\ndcim_buffer_lost_samples_total 2507.0\n" in text  # at restart and live
    assert "\ndcim_buffer_lost_cycles_at_restart 2.0\n" in text
    assert "\ndcim_buffer_error 1.0\n" in text
    forward.buffer_error = ""
    assert "\ndcim_buffer_error 0.0\n" in prometheus_text(
        {"devices": {}, "cadences": {}, "buffer": buffer_metrics(forward.stats())})
    await forward.close(timeout_s=0)
