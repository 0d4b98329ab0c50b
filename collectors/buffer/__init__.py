"""DurableBuffer: an append-only, CRC-checked, fsync'd and bounded on-disk log of samples.

Layout of `directory`: segment files `seg-<16-digit sequence>.log` and the ack cursor `ack`.
A segment is a 16-byte header (magic, sequence) followed by frames, one per append:

    frame   = payload length u32 | crc32(payload) u32 | payload
    payload = new key count u32 | row count u32 | [marks] | new keys | index u32[n]
              | time_ns i64[n] | value f64[n] | quality u8[n]
    marks   = count u16 | (kind u8 | expected samples u32 | tag length u16 | tag UTF-8)...
    key     = three u16 byte lengths | measurement, device, point (UTF-8)

All little-endian. Marks (cycle begin / done) are present when the key count's top bit is set.
A segment's key table grows as frames introduce keys, so a row costs 21 bytes whatever the
key. See docs/collectors.md, "Durable buffer", and docs/storage.md, "Durable buffer".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from dcim.config.storage import BufferConfig
from dcim.storage.base import Quality, Sample, SampleColumns, SeriesKey

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
MAGIC = b"DCIMBUF1"
SEGMENT_HEADER = struct.Struct("<8sQ")  # magic, sequence
FRAME_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
PAYLOAD_HEADER = struct.Struct("<II")  # keys new to the segment, rows
KEY_HEADER = struct.Struct("<HHH")  # byte lengths of measurement, device, point
ACK_RECORD = struct.Struct("<QQQI")  # segment, offset, row index in that frame, crc32
ROW_BYTES = 4 + 8 + 8 + 1
MARKS_FLAG = 0x8000_0000  # in a payload's key count: a table of cycle marks follows the header
MARKS_COUNT = struct.Struct("<H")
MARK_HEADER = struct.Struct("<BIH")  # kind, expected samples, tag byte length
MARK_BEGIN, MARK_DONE = 1, 2
# Free space is asked of the filesystem (statvfs) at most this often, and once per new segment.
FREE_CHECK_INTERVAL_S = 1.0
# Rows per frame at most: bounds the memory one read or one torn write can involve.
MAX_FRAME_ROWS = 65_536
SEGMENT_GLOB = "seg-*.log"
# Samples of the newest appended frames kept in memory, so read_unacked can hand them back
# without decoding the frame and rebuilding every Sample (the disk stays the source of truth).
RECENT_SAMPLES_MAX = 65_536  # about 9 MB of Samples; older unacked frames are decoded

_QUALITIES = {int(q): q for q in Quality}
_SWAP = sys.byteorder != "little"  # array() is native-endian; the format is little-endian


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the log: frame at `offset` of `segment`, row `index` of that frame."""

    segment: int
    offset: int
    index: int
    number: int  # ordinal of the sample at this position (in memory only, not persisted)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the buffer found: unacked samples kept, torn bytes cut, cycles lost."""

    recovered_samples: int
    discarded_bytes: int
    torn_frames: int
    discarded_samples: int  # rows declared by cut frames whose header was readable
    oldest_time_ns: int | None
    newest_time_ns: int | None
    segments: int
    # Cycles begun (begin_cycle) whose samples never reached the buffer before the process died.
    lost_cycles: int = 0
    lost_cycle_samples: int = 0
    lost_cycle_tags: tuple[str, ...] = ()


class Mark(NamedTuple):
    """A cycle marker: a collector began a cycle of `expected` samples, or finished it."""

    kind: int  # MARK_BEGIN or MARK_DONE
    tag: str
    expected: int


@dataclass(slots=True)
class _Segment:
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


def apply_marks(begun: dict[str, int], marks: Sequence[Mark]) -> dict[str, int]:
    """Update begun (tag -> expected samples of cycles begun and not done) with marks, in order."""
    for kind, tag, expected in marks:
        if kind == MARK_BEGIN:
            begun[tag] = expected  # a new cycle of the same group replaces an abandoned one
        else:
            begun.pop(tag, None)
    return begun


class BufferFormatError(ValueError):
    """A frame that does not parse although its CRC matched (treated like a torn frame)."""


def segment_name(seq: int) -> str:
    """File name of segment number seq."""
    return f"seg-{seq:016d}.log"


def disk_free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer can still put on directory's filesystem (statvfs)."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _pwrite_all(fd: int, data: bytes, offset: int, path: Path) -> None:
    """Write all of data at offset; a short write is retried so the kernel names the error."""
    done = os.pwrite(fd, data, offset)
    view = memoryview(data)
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n == 0:
            raise OSError(errno.EIO, f"short write to {path}: {done} of {len(view)} bytes")
        done += n


def _frame_keys(payload: memoryview, keys: list[SeriesKey],
                marks: list[Mark] | None = None) -> tuple[int, int]:
    """Append the frame's new keys to keys (its marks to marks); (row count, row offset)."""
    n_keys, n_rows = PAYLOAD_HEADER.unpack_from(payload, 0)
    pos = PAYLOAD_HEADER.size
    try:
        if n_keys & MARKS_FLAG:
            n_keys ^= MARKS_FLAG
            (n_marks,) = MARKS_COUNT.unpack_from(payload, pos)
            pos += MARKS_COUNT.size
            for _ in range(n_marks):
                kind, expected, length = MARK_HEADER.unpack_from(payload, pos)
                pos += MARK_HEADER.size
                tag = bytes(payload[pos : pos + length]).decode()
                pos += length
                if marks is not None:
                    marks.append(Mark(kind, tag, expected))
        for _ in range(n_keys):
            lm, ld, lp = KEY_HEADER.unpack_from(payload, pos)
            pos += KEY_HEADER.size
            raw = bytes(payload[pos : pos + lm + ld + lp])
            keys.append(SeriesKey(raw[:lm].decode(), raw[lm : lm + ld].decode(), raw[lm + ld :].decode()))
            pos += lm + ld + lp
    except (struct.error, UnicodeDecodeError) as exc:
        raise BufferFormatError(f"bad key or mark table: {exc}") from exc
    if pos + n_rows * ROW_BYTES != len(payload):
        raise BufferFormatError(f"{n_rows} rows do not fill a {len(payload)}-byte payload")
    return n_rows, pos


def _columns(payload: memoryview, n: int, pos: int) -> tuple[array[int], array[int], array[float], array[int]]:
    """The four row columns of a frame."""
    cols: list[array] = []  # type: ignore[type-arg]
    for code, width in (("I", 4), ("q", 8), ("d", 8), ("B", 1)):
        col = array(code)
        col.frombytes(payload[pos : pos + n * width])
        if _SWAP and width > 1:
            col.byteswap()
        cols.append(col)
        pos += n * width
    return cols[0], cols[1], cols[2], cols[3]


class DurableBuffer:
    """Write-ahead log of samples: append, read unacked in order, ack; survives crashes."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 2 * GiB,
        min_free_bytes: int = 256 * MiB,
        segment_bytes: int = 16 * MiB,
        fsync_interval_s: float = 1.0,
        fsync_samples: int = 5000,
        fsync: Callable[[int], None] = os.fsync,
        clock: Callable[[], float] = time.monotonic,
        disk_free: Callable[[Path], int] = disk_free_bytes,
    ) -> None:
        if segment_bytes < 4096 or max_bytes < 2 * segment_bytes or min_free_bytes < 0:
            raise ValueError(f"need segment_bytes >= 4096, max_bytes >= 2 * segment_bytes and "
                             f"min_free_bytes >= 0, got segment_bytes={segment_bytes}, "
                             f"max_bytes={max_bytes}, min_free_bytes={min_free_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self.fsync_samples = fsync_samples
        self._fsync = fsync
        self._clock = clock
        self._disk_free = disk_free
        self._free_bytes = 0  # statvfs's answer less what was appended since
        self._free_checked_at: float | None = None  # None: ask statvfs before the next append
        self._open_cycles: dict[str, int] = {}  # tag -> expected samples, begun and not done
        self._ack_error = ""  # why the ack file could not be written, while that lasts
        self._frame_rows = max(1, min(MAX_FRAME_ROWS, (segment_bytes // 2) // ROW_BYTES))
        self._segments: list[_Segment] = []
        self._fd = -1  # the last segment's, open for appending
        self._read: tuple[int, int] | None = None  # (segment seq, fd) of the last segment read
        # (segment seq, frame offset) -> samples of unacked frames appended since open, oldest
        # first, as they read back from disk (float values, Quality members).
        self._recent: dict[tuple[int, int], SampleColumns] = {}
        self._recent_samples = 0
        self._next_number = 0
        self._unsynced = 0
        self._dirty_since = 0.0
        self._ack_synced_at = float("-inf")  # when the ack file was last fsync'd
        # Called with each key new to a segment before it is written (StoreAndForward sets
        # it to the line-protocol check, so a bad key fails at the caller's add()).
        self.key_check: Callable[[SeriesKey], None] | None = None
        self.synced_number = 0  # every sample numbered below this has been fsync'd
        self.dropped_samples = 0
        self.fsyncs = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:  # released by the kernel when the process dies, SIGKILL included
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"durable buffer {self.directory} is in use by another process") from None
        self.recovery = self._recover()
        self._ack = self._load_ack()
        self.recovery = self._with_unacked_stats(self.recovery)
        self._open_last()
        self._close_lost_cycles()

    @classmethod
    def from_config(cls, directory: str | Path, config: BufferConfig) -> DurableBuffer:
        """A buffer in directory bounded as the site's `storage.buffer` section says."""
        return cls(directory, max_bytes=config.max_bytes, min_free_bytes=config.min_free_bytes)

    # -- state ---------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Samples appended and not yet acked."""
        return self._next_number - self._ack.number

    @property
    def bytes_on_disk(self) -> int:
        """Bytes of every segment file (the bounded quantity)."""
        return sum(s.size for s in self._segments)

    @property
    def appended_number(self) -> int:
        """Ordinal the next appended sample will get (samples since open, recovered included)."""
        return self._next_number

    @property
    def ack_cursor(self) -> Cursor:
        """Position of the oldest unacked sample."""
        return self._ack

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> RecoveryReport:
        discarded = torn = lost_rows = 0
        marks: list[Mark] = []
        for path in sorted(self.directory.glob(SEGMENT_GLOB)):
            try:
                seq = int(path.name[4:-4])
            except ValueError:
                continue
            seg, cut_bytes, cut_rows = self._scan(path, seq, marks)
            if cut_bytes:
                torn += 1
                discarded += cut_bytes
                lost_rows += cut_rows
                log.warning("durable buffer: cut a torn or corrupt tail",
                            extra={"segment": path.name, "discarded_bytes": cut_bytes,
                                   "discarded_samples": cut_rows, "kept_bytes": seg.size if seg else 0})
            if seg is None:
                path.unlink()
                continue
            self._segments.append(seg)
            self._next_number += seg.samples
        if not self._segments:
            self._segments.append(self._create_segment(1))
        lost = apply_marks({}, marks)
        return RecoveryReport(self._next_number, discarded, torn, lost_rows, None, None,
                              len(self._segments), len(lost), sum(lost.values()), tuple(lost))

    def _scan(self, path: Path, seq: int, marks: list[Mark]) -> tuple[_Segment | None, int, int]:
        """Parse a segment, adding its marks to marks; truncate it at the first bad frame.

        Returns (segment, cut bytes, cut rows).
        """
        data = memoryview(path.read_bytes())
        if len(data) < SEGMENT_HEADER.size or SEGMENT_HEADER.unpack_from(data, 0) != (MAGIC, seq):
            return None, len(data), 0
        seg = _Segment(seq, path, self._next_number)
        pos = SEGMENT_HEADER.size
        cut_rows = 0
        while pos < len(data):
            if pos + FRAME_HEADER.size > len(data):
                break
            length, crc = FRAME_HEADER.unpack_from(data, pos)
            payload = data[pos + FRAME_HEADER.size : pos + FRAME_HEADER.size + length]
            if len(payload) >= PAYLOAD_HEADER.size:
                cut_rows = PAYLOAD_HEADER.unpack_from(payload, 0)[1]
            if length < PAYLOAD_HEADER.size or len(payload) < length or zlib.crc32(payload) != crc:
                break
            keys_before = len(seg.keys)
            frame_marks: list[Mark] = []
            try:
                n_rows, _ = _frame_keys(payload, seg.keys, frame_marks)
            except BufferFormatError:
                del seg.keys[keys_before:]
                break
            marks += frame_marks
            cut_rows = 0
            seg.samples += n_rows
            pos += FRAME_HEADER.size + length
        seg.key_index = {k: i for i, k in enumerate(seg.keys)}
        seg.size = pos
        cut = len(data) - pos
        if cut:
            with open(path, "r+b") as f:
                f.truncate(pos)
                self._fsync(f.fileno())
        else:
            cut_rows = 0
        return seg, cut, cut_rows

    def _load_ack(self) -> Cursor:
        first = self._segments[0]
        start = Cursor(first.seq, SEGMENT_HEADER.size, 0, first.first_number)
        try:
            raw = (self.directory / "ack").read_bytes()
        except FileNotFoundError:
            return start
        if len(raw) != ACK_RECORD.size or zlib.crc32(raw[:-4]) != ACK_RECORD.unpack(raw)[3]:
            log.warning("durable buffer: ack file unreadable; replaying from the oldest segment")
            return start
        seq, offset, index, _ = ACK_RECORD.unpack(raw)
        for seg in list(self._segments):
            if seg.seq < seq and seg is not self._segments[-1]:
                self._delete(seg)  # fully acked; a crash came between ack and delete
        seg = self._segments[0]
        if seg.seq != seq:
            return Cursor(seg.seq, SEGMENT_HEADER.size, 0, seg.first_number)
        number = seg.first_number
        for frame_offset, n_rows, _ in self._frames(seg):
            if frame_offset == offset:
                return Cursor(seq, offset, min(index, n_rows), number + min(index, n_rows))
            number += n_rows
        if offset == seg.size:
            return Cursor(seq, offset, 0, number)
        log.warning("durable buffer: ack cursor is not at a frame; replaying its segment",
                    extra={"segment": seq, "offset": offset})
        return Cursor(seg.seq, SEGMENT_HEADER.size, 0, seg.first_number)

    def _with_unacked_stats(self, report: RecoveryReport) -> RecoveryReport:
        oldest: int | None = None
        newest: int | None = None
        for seg in self._segments:
            for offset, n_rows, payload in self._frames(seg):
                skip = 0
                if seg.seq == self._ack.segment:
                    if offset < self._ack.offset:
                        continue
                    if offset == self._ack.offset:
                        skip = self._ack.index
                if skip >= n_rows:
                    continue
                _, times, _, _ = _columns(payload, n_rows, _frame_keys(payload, [])[1])
                lo, hi = min(times[skip:]), max(times[skip:])
                oldest = lo if oldest is None else min(oldest, lo)
                newest = hi if newest is None else max(newest, hi)
        return replace(report, recovered_samples=self.depth, oldest_time_ns=oldest,
                       newest_time_ns=newest, segments=len(self._segments))

    def _close_lost_cycles(self) -> None:
        """Mark the cycles recovery found lost as done, so the next start does not count them again."""
        lost = self.recovery.lost_cycle_tags
        if lost:
            try:
                self._append_frame(SampleColumns([], [], [], []), [Mark(MARK_DONE, t, 0) for t in lost])
            except OSError as exc:  # the next start reports them again: better than not starting
                log.warning("durable buffer: cannot record the lost cycles as counted",
                            extra={"error": str(exc), "cycles": list(lost)})

    def _frames(self, seg: _Segment) -> list[tuple[int, int, memoryview]]:
        """(offset, rows, payload) of every frame of a (recovered, valid) segment."""
        data = memoryview(seg.path.read_bytes())[: seg.size]
        out = []
        pos = SEGMENT_HEADER.size
        while pos < len(data):
            length, _ = FRAME_HEADER.unpack_from(data, pos)
            payload = data[pos + FRAME_HEADER.size : pos + FRAME_HEADER.size + length]
            out.append((pos, PAYLOAD_HEADER.unpack_from(payload, 0)[1], payload))
            pos += FRAME_HEADER.size + length
        return out

    # -- segments ------------------------------------------------------------------------

    def _create_segment(self, seq: int) -> _Segment:
        """A new segment file holding its header, fsync'd; removed again if any step fails."""
        path = self.directory / segment_name(seq)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, SEGMENT_HEADER.pack(MAGIC, seq), 0, path)
                self._fsync(fd)
            finally:
                os.close(fd)
            self._sync_dir()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return _Segment(seq, path, self._next_number)

    def _open_last(self) -> None:
        # Not O_APPEND: frames are written with pwrite at the segment's known good size, so
        # bytes of a failed write that could not be truncated are overwritten, never built on.
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY)

    def _rotate(self) -> None:
        self.sync()
        seg = self._create_segment(self._segments[-1].seq + 1)  # on failure the old one stays
        try:
            fd = os.open(seg.path, os.O_WRONLY)
        except BaseException:
            seg.path.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self._segments.append(seg)
        self._free_checked_at = None  # statvfs once per segment

    def _delete(self, seg: _Segment) -> None:
        if self._read is not None and self._read[0] == seg.seq:
            os.close(self._read[1])
            self._read = None
        self._segments.remove(seg)
        seg.path.unlink(missing_ok=True)
        self._forget(lambda pos: pos[0] <= seg.seq)  # segments go oldest first

    def _drop_oldest(self, reason: str) -> None:
        """Bound policy: drop the oldest segment whole, counting its unacked samples."""
        seg = self._segments[0]
        unacked = seg.first_number + seg.samples - max(self._ack.number, seg.first_number)
        self._delete(seg)
        nxt = self._segments[0]
        if self._ack.segment <= seg.seq:
            self._ack = Cursor(nxt.seq, SEGMENT_HEADER.size, 0, nxt.first_number)
        self.dropped_samples += unacked
        log.error("durable buffer full (%s): dropped the oldest segment", reason,
                  extra={"segment": seg.path.name, "dropped_samples": unacked, "reason": reason,
                         "dropped_total": self.dropped_samples, "max_bytes": self.max_bytes,
                         "min_free_bytes": self.min_free_bytes, "free_bytes": self._free_bytes})

    def _make_room(self, frame_bytes: int) -> None:
        """Drop oldest segments while frame_bytes would pass max_bytes or leave too little free."""
        while self.bytes_on_disk + frame_bytes > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest("max_bytes")
        if not self.min_free_bytes:
            return
        now = self._clock()
        if self._free_checked_at is None or now - self._free_checked_at >= FREE_CHECK_INTERVAL_S:
            self._free_bytes, self._free_checked_at = self._disk_free(self.directory), now
        while self._free_bytes - frame_bytes < self.min_free_bytes and len(self._segments) > 1:
            self._drop_oldest("min_free_bytes")
            self._free_bytes = self._disk_free(self.directory)

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # -- append --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._fd < 0:
            raise RuntimeError(f"durable buffer {self.directory} is closed")

    def append(self, samples: Sequence[Sample], *, done_cycle: str | None = None) -> None:
        """Append samples in order (one frame per chunk); fsync when a batch is due.

        done_cycle closes that tag's cycle (begin_cycle) in the last frame, so the mark is on
        disk exactly when every sample of the append is. An OSError leaves no partial frame
        behind; frames before the failing one stay (appended_number tells how many samples).
        """
        self._check_open()
        columns = SampleColumns.of(samples)
        marks = [Mark(MARK_DONE, done_cycle, 0)] if done_cycle in self._open_cycles else []
        step = self._frame_rows
        for i in range(0, len(columns), step):
            last = i + step >= len(columns)
            self._append_frame(columns[i : i + step] if len(columns) > step else columns,
                               marks if last else [])
        if marks and not columns:
            self._append_frame(columns, marks)
        self.sync_if_due()

    def begin_cycle(self, tag: str, expected: int) -> None:
        """Record that a cycle of `expected` samples under tag is polled and on its way."""
        self._check_open()
        if not 0 <= expected < 1 << 32 or len(tag.encode()) >= 1 << 16:
            raise ValueError(f"cycle {tag[:80]!r}: need 0 <= expected < 2**32 and a tag under "
                             f"64 KiB, got expected={expected}")
        self._append_frame(SampleColumns([], [], [], []), [Mark(MARK_BEGIN, tag, expected)])

    @property
    def open_cycles(self) -> dict[str, int]:
        """Cycles begun and not done since open: tag -> expected samples."""
        return dict(self._open_cycles)

    def _append_frame(self, samples: SampleColumns, marks: list[Mark]) -> None:
        n = len(samples)
        seg = self._segments[-1]
        if seg.samples and seg.size + FRAME_HEADER.size + PAYLOAD_HEADER.size + n * ROW_BYTES > self.segment_bytes:
            self._rotate()
            seg = self._segments[-1]
        if seg.size == SEGMENT_HEADER.size and self._open_cycles:
            # A segment's first frame repeats the open cycles: dropping or deleting older
            # segments must not lose the begin of a cycle still in flight.
            marks = [Mark(MARK_BEGIN, t, e) for t, e in self._open_cycles.items()] + marks
        n_keys_before = len(seg.keys)
        try:
            frame, stored = self._encode(seg, samples, marks)
            self._make_room(len(frame))
            _pwrite_all(self._fd, frame, seg.size, seg.path)
        except BaseException:
            for key in seg.keys[n_keys_before:]:
                del seg.key_index[key]
                seg.key_ids.pop(id(key), None)
            del seg.keys[n_keys_before:]
            self._free_checked_at = None  # the disk may be full: ask statvfs before the next
            with contextlib.suppress(OSError):  # best effort: the next frame overwrites anyway
                os.ftruncate(self._fd, seg.size)
            raise
        self._remember(seg.seq, seg.size, stored)  # marks-only frames too: no disk read later
        seg.size += len(frame)
        self._free_bytes -= len(frame)
        if marks:
            apply_marks(self._open_cycles, marks)
        if not n:
            return
        seg.samples += n
        self._next_number += n
        if not self._unsynced:
            self._dirty_since = self._clock()
        self._unsynced += n

    def _remember(self, seq: int, offset: int, samples: SampleColumns) -> None:
        """Keep a frame's samples for read_unacked (as they would read back from disk)."""
        self._recent[(seq, offset)] = samples
        self._recent_samples += len(samples)
        if self._recent_samples > RECENT_SAMPLES_MAX:
            self._forget(lambda pos: self._recent_samples > RECENT_SAMPLES_MAX)

    def _forget(self, while_: Callable[[tuple[int, int]], bool]) -> None:
        """Drop remembered frames, oldest first, while while_(their position) holds."""
        recent = self._recent
        while recent:
            pos = next(iter(recent))
            if not while_(pos):
                break
            self._recent_samples -= len(recent.pop(pos))

    def _encode(self, seg: _Segment, samples: SampleColumns,
                marks: list[Mark]) -> tuple[bytes, SampleColumns]:
        """The frame for samples and marks, and the samples as they read back from it."""
        keys, key_index, key_ids = seg.keys, seg.key_index, seg.key_ids
        first_new = len(keys)
        ids = list(map(id, samples.keys))
        try:  # key objects seen in this segment: C-level lookups by identity
            idx = array("I", map(key_ids.__getitem__, ids))
        except KeyError:
            idx = array("I")
            for key, key_id in zip(samples.keys, ids):
                i = key_ids.get(key_id)
                if i is None:
                    i = key_index.get(key)
                    if i is None:
                        if self.key_check is not None:
                            self.key_check(key)  # raises before anything is written
                        i = key_index[key] = len(keys)
                        keys.append(key)
                    if keys[i] is key:  # the object stays alive in keys: its id is safe
                        key_ids[key_id] = i
                idx.append(i)
        times = array("q", samples.times)
        values = array("d", samples.values)  # ints, bools, numpy scalars become floats
        qualities = array("B", samples.qualities)
        stored = SampleColumns(samples.keys, samples.times, values.tolist(),
                               list(map(_QUALITIES.__getitem__, qualities)))
        if _SWAP:
            for col in (idx, times, values):
                col.byteswap()
        parts = [PAYLOAD_HEADER.pack(len(keys) - first_new | (MARKS_FLAG if marks else 0),
                                     len(samples))]
        if marks:
            parts.append(MARKS_COUNT.pack(len(marks)))
            for kind, tag, expected in marks:
                raw_tag = tag.encode()
                parts += [MARK_HEADER.pack(kind, expected, len(raw_tag)), raw_tag]
        for key in keys[first_new:]:
            raw = [key.measurement.encode(), key.device.encode(), key.point.encode()]
            parts.append(KEY_HEADER.pack(*map(len, raw)))
            parts.extend(raw)
        parts += [idx.tobytes(), times.tobytes(), values.tobytes(), qualities.tobytes()]
        payload = b"".join(parts)
        return FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload, stored

    # -- fsync ---------------------------------------------------------------------------

    def sync(self) -> None:
        """fsync the segment being appended to, if anything was appended since the last."""
        if self._unsynced:
            self._fsync(self._fd)
            self.fsyncs += 1
            self._unsynced = 0
        self.synced_number = self._next_number

    def sync_if_due(self) -> None:
        """fsync when fsync_samples are pending or the oldest pending is fsync_interval_s old."""
        if self._unsynced and (self._unsynced >= self.fsync_samples
                               or self._clock() - self._dirty_since >= self.fsync_interval_s):
            self.sync()

    # -- read and ack --------------------------------------------------------------------

    def _normalize(self, cur: Cursor) -> Cursor:
        """Step past the end of a finished segment to the start of the next one."""
        for i, seg in enumerate(self._segments[:-1]):
            if seg.seq == cur.segment and cur.offset >= seg.size:
                nxt = self._segments[i + 1]
                return Cursor(nxt.seq, SEGMENT_HEADER.size, 0, nxt.first_number)
        return cur

    def _read_fd(self, seg: _Segment) -> int:
        if self._read is None or self._read[0] != seg.seq:
            if self._read is not None:
                os.close(self._read[1])
            self._read = (seg.seq, os.open(seg.path, os.O_RDONLY))
        return self._read[1]

    def read_unacked(self, max_samples: int) -> tuple[SampleColumns, Cursor]:
        """Up to max_samples oldest unacked samples, in order, and the cursor just after them."""
        parts: list[SampleColumns] = []
        got = 0
        cur = self._normalize(self._ack)
        by_seq = {s.seq: s for s in self._segments}
        while got < max_samples:
            seg = by_seq[cur.segment]
            if cur.offset >= seg.size:
                break
            fd = self._read_fd(seg)
            length, _ = FRAME_HEADER.unpack(os.pread(fd, FRAME_HEADER.size, cur.offset))
            frame = self._recent.get((cur.segment, cur.offset))
            if frame is None:  # not in memory: decode it from disk
                payload = memoryview(os.pread(fd, length, cur.offset + FRAME_HEADER.size))
                n_rows = PAYLOAD_HEADER.unpack_from(payload, 0)[1]
                pos = len(payload) - n_rows * ROW_BYTES  # the key table comes first
                idx, times, values, quals = _columns(payload, n_rows, pos)
                frame = SampleColumns(list(map(seg.keys.__getitem__, idx)), times.tolist(),
                                      values.tolist(), list(map(_QUALITIES.__getitem__, quals)))
            n_rows = len(frame)
            take = min(n_rows - cur.index, max_samples - got)
            lo, hi = cur.index, cur.index + take
            parts.append(frame if lo == 0 and hi == n_rows else frame[lo:hi])
            got += take
            if hi < n_rows:
                cur = Cursor(cur.segment, cur.offset, hi, cur.number + take)
            else:
                cur = self._normalize(Cursor(cur.segment, cur.offset + FRAME_HEADER.size + length, 0,
                                             cur.number + take))
        return SampleColumns.join(parts), cur

    def ack(self, cursor: Cursor) -> None:
        """Mark everything before cursor as stored; persist it and delete finished segments."""
        if cursor.number <= self._ack.number:
            return  # stale: a drop or an earlier ack moved past it
        self._ack = self._normalize(cursor)
        acked = (self._ack.segment, self._ack.offset)
        self._forget(lambda pos: pos < acked)
        for seg in [s for s in self._segments[:-1] if s.seq < self._ack.segment]:
            self._delete(seg)
        self._write_ack()

    def _write_ack(self, durable: bool = False) -> None:
        """Persist the ack cursor (tmp file + atomic rename).

        The rename is done on every ack; the fsyncs that make it survive a machine crash at
        most once per fsync_interval_s (and on close). A machine crash can therefore bring
        back an ack up to that old, and its samples are sent again: harmless, every backend
        overwrites the same series and time. A process crash loses nothing (the kernel has it).
        """
        now = self._clock()
        durable = durable or now - self._ack_synced_at >= self.fsync_interval_s
        head = ACK_RECORD.pack(self._ack.segment, self._ack.offset, self._ack.index, 0)[:-4]
        tmp = self.directory / "ack.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _pwrite_all(fd, head + struct.pack("<I", zlib.crc32(head)), 0, tmp)
                if durable:
                    self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / "ack")
            if durable:
                self._sync_dir()
                self._ack_synced_at = now
        except OSError as exc:
            # The ack in memory is right; a stale file only re-sends samples after a restart.
            if not self._ack_error:
                log.warning("durable buffer: cannot write the ack file; retrying at each ack",
                            extra={"error": str(exc), "directory": str(self.directory)})
            self._ack_error = str(exc)
            return
        if self._ack_error:
            log.info("durable buffer: the ack file is written again", extra={"error": self._ack_error})
            self._ack_error = ""

    # -- close ---------------------------------------------------------------------------

    def close(self) -> None:
        """fsync, persist the ack cursor and close the files."""
        if self._fd < 0:
            return
        try:
            self.sync()
            self._write_ack(durable=True)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._read is not None:
                os.close(self._read[1])
                self._read = None
            os.close(self._lock_fd)
