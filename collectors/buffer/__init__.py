"""DurableBuffer: an append-only, CRC-checked, fsync'd and bounded on-disk log of samples.

The package by job: `format` encodes and decodes frames, cycle marks and the ack record (pure);
`segments` names, creates, scans and cuts the segment files and asks for free space;
`recovery` is what opening the buffer finds; this module is the buffer itself (append, bound,
fsync, read, ack, close). See docs/collectors.md, "Durable buffer", and docs/storage.md,
"Durable buffer".
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dcim.collectors.buffer.format import (
    ACK_RECORD,
    FRAME_HEADER,
    KEY_HEADER,
    MAGIC,
    MARK_BEGIN,
    MARK_DONE,
    MARK_HEADER,
    MARKS_COUNT,
    MARKS_FLAG,
    MAX_FRAME_ROWS,
    PAYLOAD_HEADER,
    ROW_BYTES,
    SEGMENT_HEADER,
    BufferFormatError,
    Cursor,
    Mark,
    apply_marks,
    decode_rows,
    encode_frame,
    pack_ack,
)
from dcim.collectors.buffer.recovery import (
    RecoveryReport,
    load_ack,
    recover_segments,
    with_unacked,
)
from dcim.collectors.buffer.segments import (
    FREE_CHECK_INTERVAL_S,
    SEGMENT_GLOB,
    FreeSpace,
    Segment,
    create_segment,
    disk_free_bytes,
    pwrite_all,
    segment_name,
    sync_dir,
)
from dcim.config.storage import BufferConfig
from dcim.storage.base import Sample, SampleColumns, SeriesKey

__all__ = [
    "ACK_RECORD", "FRAME_HEADER", "FREE_CHECK_INTERVAL_S", "GiB", "KEY_HEADER", "MAGIC",
    "MARK_BEGIN", "MARK_DONE", "MARK_HEADER", "MARKS_COUNT", "MARKS_FLAG", "MAX_FRAME_ROWS",
    "MiB", "PAYLOAD_HEADER", "RECENT_SAMPLES_MAX", "ROW_BYTES", "SEGMENT_GLOB", "SEGMENT_HEADER",
    "BufferFormatError", "Cursor", "DurableBuffer", "Mark", "RecoveryReport", "apply_marks",
    "disk_free_bytes", "segment_name",
]

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
# Samples of the newest appended frames kept in memory, so read_unacked can hand them back
# without decoding the frame and rebuilding every Sample (the disk stays the source of truth).
RECENT_SAMPLES_MAX = 65_536  # about 9 MB of Samples; older unacked frames are decoded


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
        self._free = FreeSpace(self.directory, disk_free, clock)
        self._open_cycles: dict[str, int] = {}  # tag -> expected samples, begun and not done
        self._ack_error = ""  # why the ack file could not be written, while that lasts
        self._frame_rows = max(1, min(MAX_FRAME_ROWS, (segment_bytes // 2) // ROW_BYTES))
        self._fd = -1  # the last segment's, open for appending
        self._read: tuple[int, int] | None = None  # (segment seq, fd) of the last segment read
        # (segment seq, frame offset) -> samples of unacked frames appended since open, oldest
        # first, as they read back from disk (float values, Quality members).
        self._recent: dict[tuple[int, int], SampleColumns] = {}
        self._recent_samples = 0
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
        self._lock_fd = os.open(self.directory / "lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:  # released by the kernel when the process dies, SIGKILL included
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"durable buffer {self.directory} is in use by another process") from None
        self._segments, report = recover_segments(self.directory, self._fsync)
        newest = self._segments[-1]
        self._next_number = newest.first_number + newest.samples  # every sample kept, acked or not
        self._ack = load_ack(self.directory, self._segments)
        self.recovery = with_unacked(report, self._segments, self._ack, self.depth)
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

    def _close_lost_cycles(self) -> None:
        """Mark the cycles recovery found lost as done, so the next start does not count them again."""
        lost = self.recovery.lost_cycle_tags
        if lost:
            try:
                self._append_frame(SampleColumns([], [], [], []), [Mark(MARK_DONE, t, 0) for t in lost])
            except OSError as exc:  # the next start reports them again: better than not starting
                log.warning("durable buffer: cannot record the lost cycles as counted",
                            extra={"error": str(exc), "cycles": list(lost)})

    # -- segments and the bound ----------------------------------------------------------

    def _open_last(self) -> None:
        # Not O_APPEND: frames are written with pwrite at the segment's known good size, so
        # bytes of a failed write that could not be truncated are overwritten, never built on.
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY)

    def _rotate(self) -> None:
        self.sync()
        seg = create_segment(self.directory, self._segments[-1].seq + 1,
                             self._next_number, self._fsync)  # on failure the old one stays
        try:
            fd = os.open(seg.path, os.O_WRONLY)
        except BaseException:
            seg.path.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self._segments.append(seg)
        self._free.expire()  # statvfs once per segment

    def _delete(self, seg: Segment) -> None:
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
                         "min_free_bytes": self.min_free_bytes, "free_bytes": self._free.bytes})

    def _make_room(self, frame_bytes: int) -> None:
        """Drop oldest segments while frame_bytes would pass max_bytes or leave too little free."""
        while self.bytes_on_disk + frame_bytes > self.max_bytes and len(self._segments) > 1:
            self._drop_oldest("max_bytes")
        if not self.min_free_bytes:
            return
        free = self._free.check()
        while free - frame_bytes < self.min_free_bytes and len(self._segments) > 1:
            self._drop_oldest("min_free_bytes")
            free = self._free.refresh()

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
            frame, stored = encode_frame(seg.keys, seg.key_index, seg.key_ids, samples, marks,
                                         self.key_check)
            self._make_room(len(frame))
            pwrite_all(self._fd, frame, seg.size, seg.path)
        except BaseException:
            for key in seg.keys[n_keys_before:]:
                del seg.key_index[key]
                seg.key_ids.pop(id(key), None)
            del seg.keys[n_keys_before:]
            self._free.expire()  # the disk may be full: ask statvfs before the next
            with contextlib.suppress(OSError):  # best effort: the next frame overwrites anyway
                os.ftruncate(self._fd, seg.size)
            raise
        self._remember(seg.seq, seg.size, stored)  # marks-only frames too: no disk read later
        seg.size += len(frame)
        self._free.spend(len(frame))
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

    def _read_fd(self, seg: Segment) -> int:
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
                frame = decode_rows(payload, seg.keys)
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
        tmp = self.directory / "ack.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                pwrite_all(fd, pack_ack(self._ack), 0, tmp)
                if durable:
                    self._fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.directory / "ack")
            if durable:
                sync_dir(self.directory, self._fsync)
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
