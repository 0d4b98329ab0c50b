"""What opening a durable buffer finds: segments kept, torn tails cut, ack cursor, lost cycles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dcim.collectors.buffer.format import (
    SEGMENT_HEADER,
    Cursor,
    Mark,
    apply_marks,
    frame_columns,
    frame_keys,
    unpack_ack,
)
from dcim.collectors.buffer.segments import (
    SEGMENT_GLOB,
    Segment,
    create_segment,
    read_frames,
    scan_segment,
)

log = logging.getLogger("dcim.collectors.buffer")  # the package's one logger


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


def recover_segments(directory: Path,
                     fsync: Callable[[int], None]) -> tuple[list[Segment], RecoveryReport]:
    """Scan every segment of directory, cutting torn tails; a first segment if there is none.

    The report counts every sample kept (acked or not) and has no time range yet
    (with_unacked completes it once the ack cursor is known).
    """
    segments: list[Segment] = []
    next_number = discarded = torn = lost_rows = 0
    marks: list[Mark] = []
    for path in sorted(directory.glob(SEGMENT_GLOB)):
        try:
            seq = int(path.name[4:-4])
        except ValueError:
            continue
        seg, cut_bytes, cut_rows = scan_segment(path, seq, next_number, marks, fsync)
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
        segments.append(seg)
        next_number += seg.samples
    if not segments:
        segments.append(create_segment(directory, 1, next_number, fsync))
    lost = apply_marks({}, marks)
    return segments, RecoveryReport(next_number, discarded, torn, lost_rows, None, None,
                                    len(segments), len(lost), sum(lost.values()), tuple(lost))


def load_ack(directory: Path, segments: list[Segment]) -> Cursor:
    """The persisted ack cursor; segments wholly before it are deleted (from disk and the list)."""
    first = segments[0]
    start = Cursor(first.seq, SEGMENT_HEADER.size, 0, first.first_number)
    try:
        raw = (directory / "ack").read_bytes()
    except FileNotFoundError:
        return start
    record = unpack_ack(raw)
    if record is None:
        log.warning("durable buffer: ack file unreadable; replaying from the oldest segment")
        return start
    seq, offset, index = record
    for seg in list(segments):
        if seg.seq < seq and seg is not segments[-1]:
            segments.remove(seg)  # fully acked; a crash came between ack and delete
            seg.path.unlink(missing_ok=True)
    seg = segments[0]
    if seg.seq != seq:
        return Cursor(seg.seq, SEGMENT_HEADER.size, 0, seg.first_number)
    number = seg.first_number
    for frame_offset, n_rows, _ in read_frames(seg):
        if frame_offset == offset:
            return Cursor(seq, offset, min(index, n_rows), number + min(index, n_rows))
        number += n_rows
    if offset == seg.size:
        return Cursor(seq, offset, 0, number)
    log.warning("durable buffer: ack cursor is not at a frame; replaying its segment",
                extra={"segment": seq, "offset": offset})
    return Cursor(seg.seq, SEGMENT_HEADER.size, 0, seg.first_number)


def with_unacked(report: RecoveryReport, segments: list[Segment], ack: Cursor,
                 depth: int) -> RecoveryReport:
    """report counting the depth unacked samples from ack on, with their time range."""
    oldest: int | None = None
    newest: int | None = None
    for seg in segments:
        for offset, n_rows, payload in read_frames(seg):
            skip = 0
            if seg.seq == ack.segment:
                if offset < ack.offset:
                    continue
                if offset == ack.offset:
                    skip = ack.index
            if skip >= n_rows:
                continue
            _, times, _, _ = frame_columns(payload, n_rows, frame_keys(payload, [])[1])
            lo, hi = min(times[skip:]), max(times[skip:])
            oldest = lo if oldest is None else min(oldest, lo)
            newest = hi if newest is None else max(newest, hi)
    return replace(report, recovered_samples=depth, oldest_time_ns=oldest,
                   newest_time_ns=newest, segments=len(segments))
