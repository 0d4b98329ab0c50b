"""The durable buffer's on-disk format: segment header, frames, cycle marks, ack record (pure).

A segment is a 16-byte header (magic, sequence) followed by frames, one per append:

    frame   = payload length u32 | crc32(payload) u32 | payload
    payload = new key count u32 | row count u32 | [marks] | new keys | index u32[n]
              | time_ns i64[n] | value f64[n] | quality u8[n]
    marks   = count u16 | (kind u8 | expected samples u32 | tag length u16 | tag UTF-8)...
    key     = three u16 byte lengths | measurement, device, point (UTF-8)

All little-endian. Marks (cycle begin / done) are present when the key count's top bit is set.
A segment's key table grows as frames introduce keys, so a row costs 21 bytes whatever the
key. The ack file holds one ACK_RECORD. Nothing here touches a file.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from dcim.storage.base import Quality, SampleColumns, SeriesKey

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
# Rows per frame at most: bounds the memory one read or one torn write can involve.
MAX_FRAME_ROWS = 65_536

QUALITIES = {int(q): q for q in Quality}
_SWAP = sys.byteorder != "little"  # array() is native-endian; the format is little-endian


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the log: frame at `offset` of `segment`, row `index` of that frame."""

    segment: int
    offset: int
    index: int
    number: int  # ordinal of the sample at this position (in memory only, not persisted)


class Mark(NamedTuple):
    """A cycle marker: a collector began a cycle of `expected` samples, or finished it."""

    kind: int  # MARK_BEGIN or MARK_DONE
    tag: str
    expected: int


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


# -- decoding ----------------------------------------------------------------------------


def frame_keys(payload: memoryview, keys: list[SeriesKey],
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


def frame_columns(payload: memoryview, n: int,
                  pos: int) -> tuple[array[int], array[int], array[float], array[int]]:
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


def decode_rows(payload: memoryview, keys: list[SeriesKey]) -> SampleColumns:
    """The samples of a frame whose segment's key table is keys (the key table is skipped)."""
    n_rows = PAYLOAD_HEADER.unpack_from(payload, 0)[1]
    pos = len(payload) - n_rows * ROW_BYTES  # the key table comes first
    idx, times, values, quals = frame_columns(payload, n_rows, pos)
    return SampleColumns(list(map(keys.__getitem__, idx)), times.tolist(),
                         values.tolist(), list(map(QUALITIES.__getitem__, quals)))


def scan_frames(data: memoryview, keys: list[SeriesKey],
                marks: list[Mark]) -> tuple[int, int, int]:
    """Walk a segment's frames, adding their keys to keys and marks to marks, to the first bad one.

    Returns (end of the last good frame, rows of the good frames, rows the first bad frame
    declared when its header was readable).
    """
    pos = SEGMENT_HEADER.size
    rows = cut_rows = 0
    while pos < len(data):
        if pos + FRAME_HEADER.size > len(data):
            break
        length, crc = FRAME_HEADER.unpack_from(data, pos)
        payload = data[pos + FRAME_HEADER.size : pos + FRAME_HEADER.size + length]
        if len(payload) >= PAYLOAD_HEADER.size:
            cut_rows = PAYLOAD_HEADER.unpack_from(payload, 0)[1]
        if length < PAYLOAD_HEADER.size or len(payload) < length or zlib.crc32(payload) != crc:
            break
        keys_before = len(keys)
        frame_marks: list[Mark] = []
        try:
            n_rows, _ = frame_keys(payload, keys, frame_marks)
        except BufferFormatError:
            del keys[keys_before:]
            break
        marks += frame_marks
        cut_rows = 0
        rows += n_rows
        pos += FRAME_HEADER.size + length
    return pos, rows, cut_rows


def frames(data: memoryview) -> list[tuple[int, int, memoryview]]:
    """(offset, rows, payload) of every frame of a valid segment's bytes."""
    out = []
    pos = SEGMENT_HEADER.size
    while pos < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, pos)
        payload = data[pos + FRAME_HEADER.size : pos + FRAME_HEADER.size + length]
        out.append((pos, PAYLOAD_HEADER.unpack_from(payload, 0)[1], payload))
        pos += FRAME_HEADER.size + length
    return out


# -- encoding ----------------------------------------------------------------------------


def encode_frame(
    keys: list[SeriesKey],
    key_index: dict[SeriesKey, int],
    key_ids: dict[int, int],
    samples: SampleColumns,
    marks: list[Mark],
    key_check: Callable[[SeriesKey], None] | None,
) -> tuple[bytes, SampleColumns]:
    """The frame for samples and marks, and the samples as they read back from it.

    keys, key_index and key_ids are the segment's key table (key_ids: id(key) -> index for
    key objects held in keys); keys new to it are added, after key_check accepts them.
    """
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
                    if key_check is not None:
                        key_check(key)  # raises before anything is written
                    i = key_index[key] = len(keys)
                    keys.append(key)
                if keys[i] is key:  # the object stays alive in keys: its id is safe
                    key_ids[key_id] = i
            idx.append(i)
    times = array("q", samples.times)
    values = array("d", samples.values)  # ints, bools, numpy scalars become floats
    qualities = array("B", samples.qualities)
    stored = SampleColumns(samples.keys, samples.times, values.tolist(),
                           list(map(QUALITIES.__getitem__, qualities)))
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


# -- ack record --------------------------------------------------------------------------


def pack_ack(cursor: Cursor) -> bytes:
    """The ack file's bytes for cursor (its number is not persisted)."""
    head = ACK_RECORD.pack(cursor.segment, cursor.offset, cursor.index, 0)[:-4]
    return head + struct.pack("<I", zlib.crc32(head))


def unpack_ack(raw: bytes) -> tuple[int, int, int] | None:
    """(segment, offset, row index) of an ack file's bytes; None when they are not a record."""
    if len(raw) != ACK_RECORD.size or zlib.crc32(raw[:-4]) != ACK_RECORD.unpack(raw)[3]:
        return None
    seq, offset, index, _ = ACK_RECORD.unpack(raw)
    return seq, offset, index
