"""DurableBuffer: round trip, reopen, torn tails, the bound, fsync batching (real files)."""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dcim.collectors.buffer import (
    FRAME_HEADER,
    ROW_BYTES,
    SEGMENT_HEADER,
    DurableBuffer,
    segment_name,
)
from dcim.storage.base import Quality, Sample, SeriesKey

T0 = 1_700_000_000_000_000_000
KEYS = [SeriesKey("rack_monitor", f"RACK-{i:03d}", "inlet_temp_c") for i in range(10)]


def make(n: int, offset: int = 0) -> list[Sample]:
    """n samples numbered from offset, over KEYS, with every quality."""
    return [Sample(KEYS[i % len(KEYS)], T0 + i * 1000, float(i), Quality((i // 7) % 3))
            for i in range(offset, offset + n)]


def small(directory: Path) -> DurableBuffer:
    """A buffer with 4 KiB segments, so a few thousand samples span several."""
    return DurableBuffer(directory, segment_bytes=4096, max_bytes=1 << 30)


def drain(buf: DurableBuffer, chunk: int = 100) -> list[Sample]:
    """Read and ack everything, chunk by chunk."""
    out: list[Sample] = []
    while True:
        batch, cursor = buf.read_unacked(chunk)
        if not batch:
            return out
        assert len(batch) <= chunk
        out.extend(batch)
        buf.ack(cursor)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.log"))


def test_round_trip_in_order_across_segments(tmp_path: Path) -> None:
    buf = small(tmp_path)
    written = make(2000)
    for i in range(0, 2000, 37):
        buf.append(written[i : i + 37])
    assert len(segments(tmp_path)) >= 8
    assert buf.depth == 2000
    assert drain(buf, 113) == written
    assert buf.depth == 0
    assert len(segments(tmp_path)) == 1  # fully acked segments are deleted
    buf.close()


def test_unusual_values_and_keys_round_trip(tmp_path: Path) -> None:
    key = SeriesKey("crah", "CRAH-ü 1,=", "supply temp °C")
    values = [math.inf, -math.inf, -0.0, 1e308, 5e-324]
    buf = small(tmp_path)
    buf.append([Sample(key, -5 + i, v, Quality.STALE) for i, v in enumerate(values)])
    buf.append([Sample(key, 99, math.nan, Quality.BAD)])
    got = drain(buf)
    assert [s.value for s in got[:-1]] == values and math.isnan(got[-1].value)
    assert {s.series for s in got} == {key} and got[-1].quality is Quality.BAD
    assert [s.time_ns for s in got] == [-5, -4, -3, -2, -1, 99]
    buf.close()


def test_record_is_compact(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path)
    buf.append(make(10_000))
    assert buf.bytes_on_disk / 10_000 < ROW_BYTES + 0.2
    buf.close()


@pytest.mark.parametrize("acked", [0, 300, 350, 1000], ids=lambda n: f"acked-{n}")
def test_reopen_recovers_the_unacked_rest(tmp_path: Path, acked: int) -> None:
    written = make(1000)
    buf = small(tmp_path)
    for i in range(0, 1000, 100):
        buf.append(written[i : i + 100])
    if acked:
        _, cursor = buf.read_unacked(acked)  # 350 ends in the middle of a frame
        buf.ack(cursor)
    buf.close()
    again = small(tmp_path)
    report = again.recovery
    assert (report.recovered_samples, report.discarded_bytes, report.torn_frames) == (1000 - acked, 0, 0)
    rest = written[acked:]
    assert report.oldest_time_ns == (min(s.time_ns for s in rest) if rest else None)
    assert report.newest_time_ns == (max(s.time_ns for s in rest) if rest else None)
    assert drain(again) == rest
    again.append(make(5, 1000))  # appending after a reopen continues the same log
    assert drain(again) == make(5, 1000)
    again.close()


def _frame_sizes(path: Path) -> list[int]:
    data = path.read_bytes()
    pos, sizes = SEGMENT_HEADER.size, []
    while pos < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, pos)
        sizes.append(FRAME_HEADER.size + length)
        pos += FRAME_HEADER.size + length
    return sizes


@pytest.mark.parametrize(
    ("damage", "cut_rows"),
    [("cut-in-frame-header", 0), ("cut-in-payload", 50), ("flip-payload-byte", 50),
     ("flip-length-byte", 50), ("garbage-after-last-frame", 0)],
)
def test_torn_tail_is_cut_and_counted(tmp_path: Path, damage: str, cut_rows: int) -> None:
    buf = DurableBuffer(tmp_path)
    for i in range(0, 500, 50):
        buf.append(make(50, i))
    buf.close()
    (path,) = segments(tmp_path)
    sizes = _frame_sizes(path)
    data = bytearray(path.read_bytes())
    last = len(data) - sizes[-1]
    if damage == "cut-in-frame-header":
        data = data[: last + 5]
    elif damage == "cut-in-payload":
        data = data[: last + sizes[-1] // 2]
    elif damage == "flip-payload-byte":
        data[last + 40] ^= 0xFF
    elif damage == "flip-length-byte":
        data[last + 1] ^= 0x10
    else:
        data += b"\x00" * 37
    path.write_bytes(bytes(data))
    kept = len(data) - (37 if damage == "garbage-after-last-frame" else 0)
    if damage != "garbage-after-last-frame":
        kept = last

    again = DurableBuffer(tmp_path)
    report = again.recovery
    expected_rows = 500 if damage == "garbage-after-last-frame" else 450
    assert report.recovered_samples == expected_rows
    assert report.discarded_bytes == len(data) - kept
    assert report.torn_frames == 1
    assert report.discarded_samples == cut_rows
    assert path.stat().st_size == kept
    again.append(make(3, 1000))
    assert drain(again) == make(expected_rows) + make(3, 1000)
    again.close()


def test_corrupt_frame_in_an_older_segment_keeps_later_segments(tmp_path: Path) -> None:
    buf = small(tmp_path)
    for i in range(0, 1000, 50):
        buf.append(make(50, i))
    buf.close()
    first = segments(tmp_path)[0]
    sizes = _frame_sizes(first)
    data = bytearray(first.read_bytes())
    data[SEGMENT_HEADER.size + sizes[0] + 30] ^= 0x01  # second frame of the first segment
    first.write_bytes(bytes(data))
    again = small(tmp_path)
    lost = len(sizes) - 1  # frames 2.. of the first segment, 50 samples each
    assert again.recovery.torn_frames == 1
    assert again.recovery.discarded_bytes == sum(sizes[1:])
    assert again.recovery.recovered_samples == 1000 - 50 * lost
    assert drain(again) == make(50) + make(1000 - 50 * len(sizes), 50 * len(sizes))
    again.close()


def test_empty_or_headerless_segment_is_removed(tmp_path: Path) -> None:
    buf = small(tmp_path)
    buf.append(make(10))
    buf.close()
    (tmp_path / segment_name(2)).write_bytes(b"")  # a crash right after creating a segment
    again = small(tmp_path)
    assert again.recovery.recovered_samples == 10 and again.recovery.discarded_bytes == 0
    assert drain(again) == make(10)
    again.close()


def test_corrupt_ack_file_replays_from_the_oldest_segment(tmp_path: Path) -> None:
    buf = small(tmp_path)
    buf.append(make(100))
    buf.ack(buf.read_unacked(60)[1])
    buf.close()
    (tmp_path / "ack").write_bytes(b"\x01\x02")
    again = small(tmp_path)
    assert drain(again) == make(100)  # duplicates are harmless: same series and time overwrite
    again.close()


def test_bound_drops_oldest_segments_and_counts_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buf = DurableBuffer(tmp_path, segment_bytes=4096, max_bytes=3 * 4096)
    written = make(3000)
    with caplog.at_level(logging.ERROR, logger="dcim.collectors.buffer"):
        for i in range(0, 3000, 40):
            buf.append(written[i : i + 40])
            assert buf.bytes_on_disk <= buf.max_bytes
    assert buf.dropped_samples > 0
    assert buf.depth == 3000 - buf.dropped_samples
    kept = drain(buf)
    assert kept == written[buf.dropped_samples :]  # the newest survive, in order
    drops = [r for r in caplog.records if "dropped the oldest segment" in r.getMessage()]
    assert drops and all(r.levelno == logging.ERROR for r in drops)
    assert sum(r.__dict__["dropped_samples"] for r in drops) == buf.dropped_samples
    assert drops[-1].__dict__["dropped_total"] == buf.dropped_samples
    buf.close()


def test_bound_counts_only_unacked_samples_of_a_dropped_segment(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path, segment_bytes=4096, max_bytes=2 * 4096)
    buf.append(make(40))
    buf.ack(buf.read_unacked(15)[1])
    for i in range(40, 2000, 40):
        buf.append(make(40, i))
    assert buf.dropped_samples == 2000 - 15 - buf.depth
    assert drain(buf)[0].value == float(buf.dropped_samples + 15)
    buf.close()


def test_bound_needs_room_for_two_segments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes >= 2 \\* segment_bytes"):
        DurableBuffer(tmp_path, segment_bytes=1 << 20, max_bytes=1 << 20)


def test_one_process_per_directory_and_no_append_after_close(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        DurableBuffer(tmp_path)
    buf.close()
    with pytest.raises(RuntimeError, match="is closed"):
        buf.append(make(1))
    DurableBuffer(tmp_path).close()  # the lock went with close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_fsync_in_batches_by_count_by_age_and_on_close(tmp_path: Path) -> None:
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        os.fsync(fd)

    clock = FakeClock()
    buf = DurableBuffer(tmp_path, fsync_samples=100, fsync_interval_s=1.0, fsync=fsync, clock=clock)
    synced.clear()  # creating the first segment syncs it and the directory
    segment_syncs = lambda: sum(name.endswith(".log") for name in synced)
    for _ in range(3):
        buf.append(make(30))
    assert segment_syncs() == 0 and buf.synced_number == 0
    buf.append(make(30))  # 120 pending >= 100
    assert segment_syncs() == 1 and buf.synced_number == 120
    buf.append(make(10))
    clock.now += 0.5
    buf.sync_if_due()
    assert segment_syncs() == 1
    clock.now += 0.5  # the oldest pending sample is now 1 s old
    buf.sync_if_due()
    assert segment_syncs() == 2 and buf.synced_number == 130
    buf.sync_if_due()
    assert segment_syncs() == 2  # nothing pending, no fsync
    buf.append(make(1))
    buf.close()
    assert segment_syncs() == 3 and buf.fsyncs == 3


def test_ack_is_renamed_every_time_and_fsynced_once_per_interval(tmp_path: Path) -> None:
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))

    clock = FakeClock()
    buf = DurableBuffer(tmp_path, fsync_interval_s=1.0, fsync=fsync, clock=clock)
    buf.append(make(30))
    synced.clear()
    ack_syncs = lambda: synced.count("ack.tmp")
    cursors = []
    for _ in range(3):
        _, cursor = buf.read_unacked(10)
        buf.ack(cursor)
        cursors.append(cursor)
    assert ack_syncs() == 1  # the first ack; the next two within the interval are not
    assert (tmp_path / "ack").read_bytes()  # but the file holds the newest cursor already
    clock.now += 1.0
    buf.append(make(10))
    _, cursor = buf.read_unacked(5)
    buf.ack(cursor)
    assert ack_syncs() == 2
    buf.close()
    assert ack_syncs() == 3  # close always makes the ack durable
    again = DurableBuffer(tmp_path)
    assert again.ack_cursor.number == cursor.number  # nothing acked is sent twice
    assert [s.value for s in drain(again)] == [float(i) for i in range(5, 10)]
    again.close()


def test_a_key_that_fails_the_check_writes_nothing(tmp_path: Path) -> None:
    buf = DurableBuffer(tmp_path)

    def check(key: SeriesKey) -> None:
        if key.device == "bad":
            raise ValueError(f"bad key {key}")
    buf.key_check = check
    buf.append(make(5))
    size = buf.bytes_on_disk
    with pytest.raises(ValueError, match="bad key"):
        buf.append(make(3) + [Sample(SeriesKey("pdu", "bad", "p"), T0, 1.0)])
    assert buf.bytes_on_disk == size and buf.depth == 5
    buf.append(make(2))  # the keys of the refused frame were forgotten with it
    assert [s.value for s in drain(buf)] == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0]
    buf.close()


def benchmark(directory: str | Path, *, seconds: float = 2.0, batch: int = 2300) -> dict[str, float]:
    """Append reference-site-shaped batches for `seconds`, then read and ack them all."""
    keys = [SeriesKey("rack_monitor", f"RACK-{i:04d}", "inlet_temp_c") for i in range(batch)]
    samples = [Sample(k, 1_700_000_000_000_000_000, 21.5 + i / batch) for i, k in enumerate(keys)]
    buf = DurableBuffer(directory)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        buf.append(samples)
        n += batch
    append_s = time.perf_counter() - start
    size = buf.bytes_on_disk
    start = time.perf_counter()
    while True:
        out, cursor = buf.read_unacked(5000)
        if not out:
            break
        buf.ack(cursor)
    read_s = time.perf_counter() - start
    buf.close()
    return {"samples": n, "append_per_s": n / append_s, "read_ack_per_s": n / read_s,
            "bytes_per_sample": size / n, "fsyncs": buf.fsyncs}


def test_benchmark_runs(tmp_path: Path) -> None:
    result = benchmark(tmp_path, seconds=0.2)
    assert result["samples"] > 0 and result["bytes_per_sample"] < ROW_BYTES + 1


if __name__ == "__main__":
    # python -m tests.test_buffer [DIR]: the append throughput figure in docs/collectors.md
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        print({k: round(v, 2) for k, v in benchmark(tmp).items()})
