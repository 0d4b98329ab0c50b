"""A full or failing disk under the durable buffer: add() never raises, losses are counted and
said once, no partial frame survives, and min_free_bytes drops the oldest before the disk fills.

Real disks: a 2 MiB tmpfs (needs root to mount; skipped when mount is refused). Injected
faults: os.pwrite / os.ftruncate replaced for a few appends.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dcim.collectors.buffer import DurableBuffer, segment_name
from dcim.collectors.forward import StoreAndForward
from dcim.config.storage import BufferConfig, EmbeddedStorageConfig, InfluxDB1StorageConfig
from dcim.storage.base import Sample, SeriesKey
from tests.test_buffer import FakeClock, drain
from tests.test_forward import FakeStorage

T0 = 1_700_000_000_000_000_000
KEYS = [SeriesKey("pdu", f"PDU-{i:03d}", "active_power_kw") for i in range(50)]
FORWARD_LOG = "dcim.collectors.forward"


def batch(n: int, offset: int) -> list[Sample]:
    """n samples numbered from offset (value == number)."""
    return [Sample(KEYS[i % len(KEYS)], T0 + i, float(i)) for i in range(offset, offset + n)]


def down_forwarder(buffer: DurableBuffer) -> StoreAndForward:
    """A forwarder whose storage is down and never started: samples stay in the buffer."""
    return StoreAndForward(FakeStorage(failures=10**9), buffer)


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == FORWARD_LOG and r.levelno == level]


# -- injected faults ---------------------------------------------------------------------

real_pwrite, real_ftruncate = os.pwrite, os.ftruncate


def short_then(error: int) -> Callable[[int, bytes, int], int]:
    """pwrite as a filling disk does it: half the bytes, then the error on the retry."""
    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if len(data) > 64 and not getattr(pwrite, "cut", False):
            pwrite.cut = True  # type: ignore[attr-defined]
            return real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(error, os.strerror(error))
    return pwrite


def always_zero(fd: int, data: bytes, offset: int) -> int:
    return 0


@pytest.mark.parametrize(
    ("pwrite", "truncate_fails", "error"),
    [
        (lambda: short_then(errno.ENOSPC), False, "buffer disk full: [Errno 28] No space left on device"),
        (lambda: short_then(errno.EDQUOT), False, "buffer disk full: [Errno 122] Disk quota exceeded"),
        (lambda: short_then(errno.EIO), False, "buffer write failed: [Errno 5] Input/output error"),
        (lambda: short_then(errno.ENOSPC), True, "buffer disk full: [Errno 28] No space left on device"),
        (lambda: always_zero, False, "buffer write failed: [Errno 5] short write to "),
    ],
    ids=["enospc-after-short-write", "quota", "eio", "enospc-and-truncate-fails", "zero-byte-write"],
)
async def test_failed_appends_are_counted_said_once_and_leave_no_partial_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    pwrite: Callable[[], Callable[[int, bytes, int], int]], truncate_fails: bool, error: str,
) -> None:
    forward = down_forwarder(DurableBuffer(tmp_path, min_free_bytes=0))
    caplog.set_level(logging.INFO, logger=FORWARD_LOG)
    forward.add(batch(50, 0))
    for cycle in range(3):  # three poll cycles on a failing disk
        with monkeypatch.context() as m:
            m.setattr(os, "pwrite", pwrite())
            if truncate_fails:  # the half frame stays in the file: it must not be built on
                m.setattr(os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(errno.EIO, "x")))
            forward.add(batch(500, 50 + 500 * cycle))
        assert forward.stats().buffer_error.startswith(error)
    assert (forward.lost_samples, forward.buffered) == (1500, 50)
    assert len(records(caplog, logging.ERROR)) == 1 and not records(caplog, logging.INFO)
    forward.add(batch(10, 2000))  # the disk is back: the same add path, no restart
    stats = forward.stats()
    assert (stats.buffer_error, stats.lost_samples, stats.buffered) == ("", 1500, 60)
    (back,) = [r for r in records(caplog, logging.INFO) if "appends again" in r.getMessage()]
    assert back.__dict__["lost_samples"] == 1500
    await forward.close()

    again = DurableBuffer(tmp_path, min_free_bytes=0)
    assert again.recovery.recovered_samples == 60
    # Bytes of a failed write left past the last frame are cut; they held no good frame.
    assert (again.recovery.discarded_bytes > 0) == truncate_fails
    assert drain(again) == batch(50, 0) + batch(10, 2000)
    again.close()


def test_a_failed_rotation_keeps_the_current_segment_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buf = DurableBuffer(tmp_path, segment_bytes=4096, max_bytes=1 << 30, min_free_bytes=0)

    def no_new_segment(fd: int, data: bytes, offset: int) -> int:
        if offset == 0:  # a new segment's header
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    kept: list[Sample] = []
    failed = 0
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", no_new_segment)
        for i in range(0, 400, 40):
            try:
                buf.append(batch(40, i))
                kept += batch(40, i)
            except OSError:
                failed += 1
    assert failed > 0 and [p.name for p in tmp_path.glob("seg-*.log")] == [segment_name(1)]
    buf.append(batch(40, 400))  # rotates now, into a fresh segment 2
    assert sorted(p.name for p in tmp_path.glob("seg-*.log")) == [segment_name(1), segment_name(2)]
    assert drain(buf) == kept + batch(40, 400)
    buf.close()


def test_min_free_bytes_drops_oldest_and_asks_statvfs_once_per_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    capacity, min_free = 64 * 4096, 32 * 4096  # a disk of 64 segments, half to stay free
    calls = 0
    buf: DurableBuffer

    def disk_free(directory: Path) -> int:
        nonlocal calls
        calls += 1
        return capacity - buf.bytes_on_disk

    clock = FakeClock()
    buf = DurableBuffer(tmp_path, segment_bytes=4096, max_bytes=1 << 30, min_free_bytes=min_free,
                        disk_free=disk_free, clock=clock)
    one_key = [Sample(KEYS[0], T0 + i, float(i)) for i in range(20_000)]
    with caplog.at_level(logging.ERROR, logger="dcim.collectors.buffer"):
        for i in range(0, 20_000, 10):  # 2,000 appends of 226 bytes
            buf.append(one_key[i : i + 10])
            assert capacity - buf.bytes_on_disk >= min_free - 4096  # at most a segment below
    rotations = max(int(p.name[4:-4]) for p in tmp_path.glob("seg-*.log")) - 1
    drops = [r for r in caplog.records if "(min_free_bytes): dropped the oldest segment" in r.getMessage()]
    assert len(drops) > 50 and buf.dropped_samples == sum(r.__dict__["dropped_samples"] for r in drops)
    assert drain(buf, 5000) == one_key[buf.dropped_samples :]
    # statvfs once at the first append, once per new segment and after each drop; not per append.
    assert calls == 1 + rotations + len(drops) < 2000 / 4
    clock.now += 1.0  # and once a second when the appends fill no segment
    buf.append(one_key[:1])
    assert calls == 2 + rotations + len(drops)
    buf.close()


def test_buffer_config_is_on_every_backend_and_builds_the_buffer(tmp_path: Path) -> None:
    assert BufferConfig() == BufferConfig(max_bytes=2 << 30, min_free_bytes=256 << 20)
    influx = InfluxDB1StorageConfig.model_validate(
        {"backend": "influxdb1", "url": "http://127.0.0.1:8086",
         "buffer": {"max_bytes": 64 << 20, "min_free_bytes": 0}})
    assert EmbeddedStorageConfig().buffer == BufferConfig()
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        BufferConfig.model_validate({"max_byte": 1})
    with pytest.raises(ValueError, match="greater than or equal to 33554432"):
        BufferConfig(max_bytes=1 << 20)
    assert all(f.description for f in BufferConfig.model_fields.values())
    buf = DurableBuffer.from_config(tmp_path, influx.buffer)
    assert (buf.max_bytes, buf.min_free_bytes) == (64 << 20, 0)
    buf.close()


# -- a real full disk: a 2 MiB tmpfs -----------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (skipped where mount is refused)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


async def test_tmpfs_full_loses_counted_samples_and_recovery_reads_every_good_frame(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARD_LOG)
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (512 << 10))  # someone else's file, removed later
    forward = down_forwarder(DurableBuffer(small_disk / "buf", segment_bytes=256 << 10,
                                           max_bytes=1 << 30, min_free_bytes=0))
    kept: list[Sample] = []
    offset = failed_adds = 0
    while failed_adds < 5:  # 500 samples (10.5 kB) per poll cycle until five cycles failed
        lost_before = forward.lost_samples
        forward.add(batch(500, offset))  # never raises
        if forward.lost_samples == lost_before:
            kept += batch(500, offset)
        else:
            failed_adds += 1
            assert forward.lost_samples == lost_before + 500
        offset += 500
    assert forward.stats().buffer_error.startswith("buffer disk full: [Errno 28]")
    assert len(records(caplog, logging.ERROR)) == 1
    filler.unlink()
    forward.add(batch(500, offset))
    kept += batch(500, offset)
    assert forward.stats().buffer_error == "" and forward.lost_samples == 5 * 500
    assert [r.getMessage() for r in records(caplog, logging.INFO)] == ["durable buffer appends again"]
    await forward.close()

    again = DurableBuffer(small_disk / "buf", min_free_bytes=0)
    assert (again.recovery.recovered_samples, again.recovery.discarded_bytes) == (len(kept), 0)
    assert drain(again, 5000) == kept
    again.close()


def test_tmpfs_min_free_bytes_keeps_the_disk_from_filling(small_disk: Path) -> None:
    buf = DurableBuffer(small_disk / "buf", segment_bytes=64 << 10, max_bytes=1 << 30,
                        min_free_bytes=1 << 20)
    forward = down_forwarder(buf)
    total = 0
    while total < 150_000:  # 3.2 MB through a 2 MiB disk
        forward.add(batch(100, total))
        total += 100
        assert forward.stats().buffer_error == ""
    stats = os.statvfs(small_disk)
    assert stats.f_bavail * stats.f_frsize >= (1 << 20) - (64 << 10)
    assert forward.lost_samples == 0 and 0 < buf.dropped_samples < total
    assert drain(buf, 5000) == batch(total - buf.dropped_samples, buf.dropped_samples)
    buf.close()
