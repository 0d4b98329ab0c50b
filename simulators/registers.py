"""Encode a device's engineering values into Modbus register and bit images (pure, no I/O).

Byte orders. A value of n bytes is first packed big-endian as bytes A B C D ... (A the most
significant); the wire carries registers high byte first. `order` then rearranges them:

    order  16-bit  32-bit       64-bit             meaning
    ABCD   A B     A B C D      A B C D E F G H    big-endian (Modbus default)
    CDAB   A B     C D A B      G H E F C D A B    word-swapped: low word first, bytes kept
    BADC   B A     B A D C      B A D C F E H G    byte-swapped inside each register
    DCBA   B A     D C B A      H G F E D C B A    little-endian

Strings are ASCII, two characters per register, NUL-padded; BADC and DCBA swap the two
characters of each register, word order does not apply.

Scaling: raw = (value - offset) / scale (/ 10**sf for SunSpec points), rounded half away
from zero for integer types and clamped to the type's range; acc32 accumulators wrap modulo
2**32 instead. A point that is NO_DATA (device or point health) or missing from the reading
gets the not-implemented marker of its type (SunSpec: int16/sunssf 0x8000, uint16 0xFFFF,
acc32 0, float NaN; by extension int32/int64 most negative, uint32/uint64 all ones); bits
read 0; a missing *writable* point keeps its last (possibly written) value.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from operator import itemgetter
from typing import Callable

from dcim.site.model import SiteDevice
from dcim.config.site import ModbusPoint, ModbusProfile
from dcim.simulators.snapshot import DeviceHealth, DeviceReading

BIT_TABLES = ("coil", "discrete_input")
REGISTER_TABLES = ("holding", "input")
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

STRUCT_CODES: dict[str, str] = {
    "int16": "h", "uint16": "H", "sunssf": "h", "bool": "H", "int32": "i", "uint32": "I",
    "acc32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d",
}
INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x8000, 0x7FFF), "uint16": (0, 0xFFFF), "sunssf": (-10, 10), "bool": (0, 1),
    "int32": (-0x8000_0000, 0x7FFF_FFFF), "uint32": (0, 0xFFFF_FFFF), "acc32": (0, 0xFFFF_FFFF),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}
# SunSpec reserves these as "not implemented": valid values of a SunSpec device avoid them.
NOT_IMPLEMENTED: dict[str, int | float] = {
    "int16": -0x8000, "sunssf": -0x8000, "uint16": 0xFFFF, "acc32": 0, "bool": 0,
    "int32": -0x8000_0000, "uint32": 0xFFFF_FFFF, "int64": -(1 << 63), "uint64": (1 << 64) - 1,
    "float32": math.nan, "float64": math.nan,
}
SUNSPEC_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-0x7FFF, 0x7FFF), "uint16": (0, 0xFFFE), "int32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
    "uint32": (0, 0xFFFF_FFFE),
}
SUNSPEC_BASES = (0, 40000, 50000)
SUNSPEC_COMMON_LENGTH = 66  # model 1 registers after ID and L
SUNSPEC_METER_LENGTH = 105  # models 201-204 (integer + scale factors)
SUNSPEC_SF_RANGE = (-10, 10)
SUNSPEC_DEFAULT_METER = 203
# Register offsets (from the model's ID register) of models 201-204, for not-implemented fill.
_METER_SF_OFFSETS = frozenset((6, 15, 17, 22, 27, 32, 37, 54, 71, 104))
_METER_ACC32_RANGES = ((38, 54), (55, 71), (72, 104))


def reorder(data: bytes, order: str) -> bytes:
    """Rearrange big-endian value bytes into the wire layout of `order` (see module doc)."""
    if order == "ABCD" or len(data) < 2:
        return data
    if order == "DCBA":
        return data[::-1]
    swapped = bytearray(len(data))
    swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
    if order == "BADC":
        return bytes(swapped)
    if order == "CDAB":
        return bytes(swapped[::-1])  # bytes reversed, then swapped back inside each word
    raise ValueError(f"unknown byte order {order!r}, expected one of {ORDERS}")


def _packer(type_: str, order: str) -> Callable[[int | float], bytes]:
    """A function packing one raw value into wire bytes, chosen once per point."""
    code = STRUCT_CODES[type_]
    if order == "ABCD":
        return struct.Struct(">" + code).pack
    if order == "DCBA":
        return struct.Struct("<" + code).pack
    big = struct.Struct(">" + code)
    if big.size == 2 and order == "CDAB":
        return big.pack  # one word: nothing to swap
    perm = itemgetter(*reorder(bytes(range(big.size)), order))
    return lambda raw: bytes(perm(big.pack(raw)))


def encode_value(type_: str, order: str, raw: int | float) -> bytes:
    """Wire bytes of one raw (already scaled) value; public for tests and docs."""
    return _packer(type_, order)(raw)


def encode_string(text: str, count: int, order: str = "ABCD") -> bytes:
    """ASCII text in `count` registers, NUL-padded, truncated to fit."""
    data = text.encode("ascii", "replace")[: 2 * count].ljust(2 * count, b"\0")
    return reorder(data, "BADC") if order in ("BADC", "DCBA") else data


def to_raw(value: float, type_: str, scale: float = 1.0, offset: float = 0.0,
           sf: int = 0, *, sunspec: bool = False) -> int | float:
    """The raw number for an engineering value: scaled, rounded and clamped (acc32 wraps)."""
    raw = (value - offset) / scale
    if sf:
        raw /= 10.0 ** sf
    if type_ in ("float32", "float64"):
        return raw
    if type_ == "bool":
        return 1 if value else 0
    if not math.isfinite(raw):
        return NOT_IMPLEMENTED.get(type_, 0)
    rounded = int(math.floor(abs(raw) + 0.5)) * (1 if raw >= 0 else -1)
    if type_ == "acc32":
        return max(rounded, 0) % (1 << 32)
    lo, hi = SUNSPEC_RANGES.get(type_, INT_RANGES[type_]) if sunspec else INT_RANGES[type_]
    return min(max(rounded, lo), hi)


def choose_scale_factor(magnitudes: list[tuple[float, str]]) -> int:
    """The smallest SunSpec exponent (-10..10) with which every |raw| fits its integer type."""
    lo_sf, hi_sf = SUNSPEC_SF_RANGE
    sf = lo_sf
    seen = False
    for magnitude, type_ in magnitudes:
        if not magnitude or not math.isfinite(magnitude):
            continue
        seen = True
        limit = SUNSPEC_RANGES.get(type_, INT_RANGES.get(type_, (0, 0xFFFF_FFFF)))[1]
        need = math.ceil(math.log10(magnitude / limit))
        while need < hi_sf and math.floor(magnitude / 10.0 ** need + 0.5) > limit:
            need += 1
        sf = max(sf, need)
    return min(sf, hi_sf) if seen else 0


@dataclass(frozen=True, slots=True)
class Block:
    """A contiguous mapped range of one table: [start, start + count)."""

    table: str
    start: int
    count: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.count


class DeviceImage:
    """The four tables of one device as mapped blocks of bytes (registers) or 0/1 (bits)."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self._data: dict[str, list[tuple[int, int, bytearray]]] = {t: [] for t in
                                                                  BIT_TABLES + REGISTER_TABLES}
        for b in blocks:
            width = 1 if b.table in BIT_TABLES else 2
            self._data[b.table].append((b.start, b.end, bytearray(width * b.count)))

    def locate(self, table: str, address: int, count: int = 1) -> tuple[bytearray, int] | None:
        """The buffer and element offset holding [address, address + count), if one block does."""
        for start, end, buf in self._data[table]:
            if start <= address and address + count <= end:
                return buf, address - start
        return None

    def read_registers(self, table: str, address: int, count: int) -> bytes | None:
        """Wire bytes of `count` registers, or None if the range is not inside one block."""
        found = self.locate(table, address, count)
        if found is None:
            return None
        buf, offset = found
        return bytes(buf[2 * offset: 2 * (offset + count)])

    def read_bits(self, table: str, address: int, count: int) -> bytes | None:
        """Bits packed LSB-first as in FC 1/2 answers, or None if not inside one block."""
        found = self.locate(table, address, count)
        if found is None:
            return None
        buf, offset = found
        packed = bytearray((count + 7) // 8)
        for i in range(count):
            if buf[offset + i]:
                packed[i >> 3] |= 1 << (i & 7)
        return bytes(packed)

    def registers(self, table: str, address: int, count: int) -> list[int]:
        """Register values (for tests and debugging); raises KeyError when unmapped."""
        data = self.read_registers(table, address, count)
        if data is None:
            raise KeyError(f"{table} {address}+{count} is not mapped")
        return list(struct.unpack(f">{count}H", data))


class _Point:
    """One point compiled: where its bytes go and how to make them."""

    __slots__ = ("point", "name", "buf", "pos", "width", "pack", "scale", "offset", "marker",
                 "sunspec", "writable", "type")

    def __init__(self, point: ModbusPoint, buf: bytearray, pos: int, sunspec: bool) -> None:
        self.point = point
        self.name = point.name
        self.type = point.type
        self.buf, self.pos = buf, pos
        self.width = 2 * point.size_registers
        self.scale, self.offset = point.scale, point.offset
        self.sunspec = sunspec
        self.writable = point.writable
        self.pack: Callable[[int | float], bytes] = (
            _packer(point.type, point.order) if point.type != "string" else lambda _: b"")
        self.marker = self.encode_marker()

    def encode_marker(self) -> bytes:
        """Wire bytes of the not-implemented marker."""
        if self.type == "string":
            return bytes(self.width)
        return self.pack(NOT_IMPLEMENTED[self.type])

    def write(self, value: float | str | None, sf: int = 0) -> None:
        """Encode one value (None = not available) into the image."""
        if value is None:
            data = self.marker
        elif self.type == "string":
            data = encode_string(str(value), self.width // 2, self.point.order)
        else:
            data = self.pack(to_raw(float(value), self.type, self.scale, self.offset, sf,
                                    sunspec=self.sunspec))
        self.buf[self.pos: self.pos + self.width] = data


class DeviceEncoder:
    """Compiled encoder of one Modbus device: `encode(reading)` refreshes `image` in place."""

    def __init__(self, device: SiteDevice) -> None:
        if not isinstance(device.profile, ModbusProfile):
            raise TypeError(f"device {device.id!r} has no Modbus profile")
        self.device = device
        points = device.profile.points
        self.sunspec = any(p.type == "sunssf" for p in points)
        self.sunspec_header: tuple[int, int, int] | None = None  # (base, model id, model start)
        extra: list[Block] = []
        if self.sunspec:
            self.sunspec_header = _sunspec_layout(device)
            base, _, model_start = self.sunspec_header
            extra.append(Block("holding", base, model_start + 2 + SUNSPEC_METER_LENGTH + 2 - base))
        _check_overlaps(device)
        self.image = DeviceImage(merge_blocks(
            [Block(p.table, p.address, p.size_registers) for p in points] + extra))
        self._values: list[_Point] = []
        bit_words: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self._bit_points: list[tuple[str, bytearray, int]] = []
        self._sf_groups: dict[str, list[_Point]] = {}
        self._sf_points: dict[str, _Point] = {}
        self.writable: set[tuple[str, int]] = set()
        for p in points:
            found = self.image.locate(p.table, p.address, p.size_registers)
            assert found is not None
            buf, elem = found
            if p.writable:
                self.writable.update((p.table, a) for a in range(p.address,
                                                                 p.address + p.size_registers))
            if p.table in BIT_TABLES:
                self._bit_points.append((p.name, buf, elem))
            elif p.bit is not None:
                bit_words.setdefault((p.table, p.address), []).append((p.name, p.bit))
            elif p.type == "sunssf":
                self._sf_points[p.name] = _Point(p, buf, 2 * elem, True)
            else:
                compiled = _Point(p, buf, 2 * elem, self.sunspec)
                if p.scale_factor_point:
                    if p.scale_factor_point not in {q.name for q in points if q.type == "sunssf"}:
                        raise ValueError(f"point {p.name!r}: scale_factor_point "
                                         f"{p.scale_factor_point!r} is not a sunssf point")
                    self._sf_groups.setdefault(p.scale_factor_point, []).append(compiled)
                else:
                    self._values.append(compiled)
        self._bit_words: list[tuple[bytearray, int, list[tuple[str, int]]]] = []
        for (table, address), members in bit_words.items():
            word_buf, word_elem = self.image.locate(table, address) or (bytearray(2), 0)
            self._bit_words.append((word_buf, word_elem, members))
        if self.sunspec_header:
            self._write_sunspec_static()

    def encode(self, reading: DeviceReading) -> None:
        """Write every point of the reading into the image (see module doc for the rules)."""
        values = reading.values
        dead = reading.health is DeviceHealth.NO_DATA
        health = reading.point_health

        def get(point: _Point) -> float | str | None:
            if dead or health.get(point.name) is DeviceHealth.NO_DATA:
                return None
            return values.get(point.name)

        for compiled in self._values:
            value = get(compiled)
            if value is None and compiled.writable and not dead:
                continue
            compiled.write(value)
        for sf_name, members in self._sf_groups.items():
            member_values = [(m, get(m)) for m in members]
            sf_point = self._sf_points[sf_name]
            sf = choose_scale_factor([
                (abs((float(v) - m.offset) / m.scale), m.type) for m, v in member_values
                if v is not None])
            sf_dead = dead or health.get(sf_name) is DeviceHealth.NO_DATA
            sf_point.buf[sf_point.pos: sf_point.pos + 2] = sf_point.marker if sf_dead \
                else sf_point.pack(sf)
            for m, v in member_values:
                m.write(v, sf)
        for buf, elem, bits in self._bit_words:
            word = 0
            if not dead:
                for name, bit in bits:
                    if health.get(name) is not DeviceHealth.NO_DATA and values.get(name):
                        word |= 1 << bit
            buf[2 * elem: 2 * elem + 2] = word.to_bytes(2, "big")
        for name, buf, elem in self._bit_points:
            on = not dead and health.get(name) is not DeviceHealth.NO_DATA and values.get(name)
            buf[elem] = 1 if on else 0

    def _write_sunspec_static(self) -> None:
        """'SunS', model 1, the meter model header with not-implemented fill, the end marker."""
        assert self.sunspec_header is not None
        base, model_id, start = self.sunspec_header
        dev = self.device
        words: list[int] = [0x5375, 0x6E53, 1, SUNSPEC_COMMON_LENGTH]
        common = (encode_string("dcim", 16) + encode_string(dev.profile.vendor_model, 16)
                  + encode_string(dev.profile_id, 8) + encode_string("1.0", 8)
                  + encode_string(dev.id, 16))
        words += struct.unpack(f">{len(common) // 2}H", common)
        words += [dev.unit_id or 0, 0x8000]  # DA, Pad
        words += [model_id, SUNSPEC_METER_LENGTH]
        for offset in range(2, 2 + SUNSPEC_METER_LENGTH):
            if offset in _METER_SF_OFFSETS or offset < 38:
                words.append(0x8000)
            else:
                words.append(0)  # acc32 not implemented, Evt bitfield32 "no events"
        words += [0xFFFF, 0]
        found = self.image.locate("holding", base, len(words))
        assert found is not None
        buf, elem = found
        buf[2 * elem: 2 * (elem + len(words))] = struct.pack(f">{len(words)}H", *words)
        for compiled in [*self._values, *self._sf_points.values(),
                         *(m for g in self._sf_groups.values() for m in g)]:
            compiled.write(None)


def _sunspec_layout(device: SiteDevice) -> tuple[int, int, int]:
    """(base, meter model id, meter model start) derived from the point addresses."""
    assert isinstance(device.profile, ModbusProfile)
    points = device.profile.points
    first = min(p.address for p in points)
    bases = [b for b in SUNSPEC_BASES if b <= first]
    base = bases[-1]
    model_start = base + 2 + 2 + SUNSPEC_COMMON_LENGTH
    match = re.search(r"\b(20[1-4])\b", device.profile.vendor_model)
    model_id = int(match.group(1)) if match else SUNSPEC_DEFAULT_METER
    data_end = model_start + 2 + SUNSPEC_METER_LENGTH
    for p in points:
        if p.table != "holding" or not model_start + 2 <= p.address <= data_end - p.size_registers:
            raise ValueError(
                f"profile {device.profile_id!r} point {p.name!r} at {p.table} {p.address} is "
                f"outside SunSpec model {model_id} data ({model_start + 2}-{data_end - 1})")
    return base, model_id, model_start


def _check_overlaps(device: SiteDevice) -> None:
    """Two points may share a register only as bit fields."""
    owner: dict[tuple[str, int], ModbusPoint] = {}
    for p in device.profile.points:
        assert isinstance(p, ModbusPoint)
        for a in range(p.address, p.address + p.size_registers):
            other = owner.get((p.table, a))
            if other is not None and not (other.bit is not None and p.bit is not None
                                          and other.bit != p.bit):
                raise ValueError(f"profile {device.profile_id!r}: points {other.name!r} and "
                                 f"{p.name!r} overlap at {p.table} {a}")
            owner[(p.table, a)] = p


def merge_blocks(blocks: list[Block]) -> list[Block]:
    """Union of ranges per table: overlapping or adjacent ranges become one block."""
    out: list[Block] = []
    for table in BIT_TABLES + REGISTER_TABLES:
        spans = sorted((b.start, b.end) for b in blocks if b.table == table)
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out += [Block(table, s, e - s) for s, e in merged]
    return out
