"""Segment files of the durable buffer: naming, creating, scanning and cutting; free space.

A buffer directory holds segment files `seg-<16-digit sequence>.log`, the ack cursor `ack` and
the `lock` file. Which segments to drop (the bound) is DurableBuffer's call: it knows the ack.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dcim.collectors.buffer.format import MAGIC, SEGMENT_HEADER, Mark, frames, scan_frames
from dcim.storage.base import SeriesKey

SEGMENT_GLOB = "seg-*.log"
# Free space is asked of the filesystem (statvfs) at most this often, and once per new segment.
FREE_CHECK_INTERVAL_S = 1.0


@dataclass(slots=True)
class Segment:
    """One segment file: its sequence, first sample's ordinal, size and key table."""

    seq: int
    path: Path
    first_number: int
    samples: int = 0
    size: int = SEGMENT_HEADER.size
    keys: list[SeriesKey] = field(default_factory=list)
    key_index: dict[SeriesKey, int] = field(default_factory=dict)
    # id(key) -> index for key objects in `keys` (they stay alive there): an identity hit
    # skips SeriesKey's Python-level __hash__ for the key objects collectors reuse.
    key_ids: dict[int, int] = field(default_factory=dict)


def segment_name(seq: int) -> str:
    """File name of segment number seq."""
    return f"seg-{seq:016d}.log"


def disk_free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer can still put on directory's filesystem (statvfs)."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def pwrite_all(fd: int, data: bytes, offset: int, path: Path) -> None:
    """Write all of data at offset; a short write is retried so the kernel names the error."""
    done = os.pwrite(fd, data, offset)
    view = memoryview(data)
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n == 0:
            raise OSError(errno.EIO, f"short write to {path}: {done} of {len(view)} bytes")
        done += n


def sync_dir(directory: Path, fsync: Callable[[int], None]) -> None:
    """fsync a directory, so the names created or renamed in it survive a machine crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def create_segment(directory: Path, seq: int, first_number: int,
                   fsync: Callable[[int], None]) -> Segment:
    """A new segment file holding its header, fsync'd; removed again if any step fails."""
    path = directory / segment_name(seq)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pwrite_all(fd, SEGMENT_HEADER.pack(MAGIC, seq), 0, path)
            fsync(fd)
        finally:
            os.close(fd)
        sync_dir(directory, fsync)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Segment(seq, path, first_number)


def scan_segment(path: Path, seq: int, first_number: int, marks: list[Mark],
                 fsync: Callable[[int], None]) -> tuple[Segment | None, int, int]:
    """Parse a segment, adding its marks to marks; truncate it at the first bad frame.

    Returns (segment, cut bytes, cut rows); no segment when the header is not this one's.
    """
    data = memoryview(path.read_bytes())
    if len(data) < SEGMENT_HEADER.size or SEGMENT_HEADER.unpack_from(data, 0) != (MAGIC, seq):
        return None, len(data), 0
    seg = Segment(seq, path, first_number)
    pos, seg.samples, cut_rows = scan_frames(data, seg.keys, marks)
    seg.key_index = {k: i for i, k in enumerate(seg.keys)}
    seg.size = pos
    cut = len(data) - pos
    if cut:
        with open(path, "r+b") as f:
            f.truncate(pos)
            fsync(f.fileno())
    else:
        cut_rows = 0
    return seg, cut, cut_rows


class FreeSpace:
    """Free bytes on a directory's filesystem, asked of statvfs at most once per interval.

    Between two answers the bytes appended are subtracted (spend), so appends never call
    statvfs; expire() makes the next check ask again (a new segment, a failed write).
    """

    def __init__(self, directory: Path, disk_free: Callable[[Path], int],
                 clock: Callable[[], float]) -> None:
        self.directory = directory
        self.bytes = 0  # statvfs's answer less what was appended since
        self._disk_free = disk_free
        self._clock = clock
        self._checked_at: float | None = None  # None: ask statvfs at the next check

    def check(self) -> int:
        """Free bytes, asking statvfs if its last answer is FREE_CHECK_INTERVAL_S old or expired."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= FREE_CHECK_INTERVAL_S:
            self.bytes, self._checked_at = self._disk_free(self.directory), now
        return self.bytes

    def refresh(self) -> int:
        """Free bytes asked of statvfs now (after a segment was deleted)."""
        self.bytes = self._disk_free(self.directory)
        return self.bytes

    def expire(self) -> None:
        """Ask statvfs at the next check."""
        self._checked_at = None

    def spend(self, n: int) -> None:
        """Count n bytes just written."""
        self.bytes -= n


def read_frames(seg: Segment) -> list[tuple[int, int, memoryview]]:
    """(offset, rows, payload) of every frame of a (recovered, valid) segment."""
    return frames(memoryview(seg.path.read_bytes())[: seg.size])
