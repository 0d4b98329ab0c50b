"""Modbus read planning and decoding: pure functions, computed once per device at start-up.

Byte orders follow docs/devices.md: a value's bytes A B C D... big-endian; ABCD is sent as
is, CDAB with the register order reversed, BADC with the bytes of each register swapped,
DCBA fully reversed. Decoding: reverse the registers for CDAB/BADC, then read big-endian
(ABCD, CDAB) or little-endian (BADC, DCBA).
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dcim.config.site import MODBUS_TYPE_REGISTERS, ModbusPoint

MAX_READ_REGISTERS = 125  # FC 3/4 limit (Modbus application protocol 1.1b3, 6.3/6.4)
MAX_READ_BITS = 2000  # FC 1/2 limit
BIT_TABLES = ("coil", "discrete_input")
FUNCTION_CODES = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}

_CODES = {"int16": "h", "uint16": "H", "sunssf": "h", "bool": "H", "int32": "i", "uint32": "I",
          "acc32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d"}
# SunSpec "not implemented" markers, read as no value
_NOT_IMPLEMENTED = {"int16": -0x8000, "sunssf": -0x8000, "uint16": 0xFFFF, "acc32": 0}


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """A point inside a read: its offset (registers or bits) from the read's start."""

    point: ModbusPoint
    offset: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: table, first address, count, and the points it serves."""

    table: str
    address: int
    count: int
    points: tuple[PlannedPoint, ...] = field(default_factory=tuple)

    @property
    def function_code(self) -> int:
        """FC 1-4 of this read."""
        return FUNCTION_CODES[self.table]


def point_size(point: ModbusPoint) -> int:
    """Registers (or bits) a point occupies."""
    if point.table in BIT_TABLES:
        return 1
    if point.type == "string":
        return point.count or 1
    return MODBUS_TYPE_REGISTERS[point.type]


def plan_reads(points: Sequence[ModbusPoint], max_gap: int = 0,
               max_registers: int = MAX_READ_REGISTERS,
               max_bits: int = MAX_READ_BITS) -> list[ReadRequest]:
    """Coalesce points into as few reads as the limits allow, spanning at most max_gap holes."""
    reads: list[ReadRequest] = []
    for table in ("coil", "discrete_input", "holding", "input"):
        limit = max_bits if table in BIT_TABLES else max_registers
        spans = sorted(((p.address, p.address + point_size(p), p) for p in points
                        if p.table == table), key=lambda s: (s[0], s[1]))
        start = end = -1
        members: list[tuple[int, ModbusPoint]] = []
        for first, last, point in spans:
            if members and first - end <= max_gap and max(end, last) - start <= limit:
                end = max(end, last)
            else:
                if members:
                    reads.append(_request(table, start, end, members))
                start, end, members = first, last, []
            members.append((first, point))
        if members:
            reads.append(_request(table, start, end, members))
    return reads


def _request(table: str, start: int, end: int, members: list[tuple[int, ModbusPoint]]) -> ReadRequest:
    return ReadRequest(table, start, end - start,
                       tuple(PlannedPoint(p, addr - start) for addr, p in members))


def registers_to_raw(regs: Sequence[int], type_: str, order: str) -> int | float:
    """The raw number held in regs (exactly the point's registers) in the given byte order."""
    if order in ("CDAB", "BADC"):
        regs = regs[::-1]
    data = struct.pack(f">{len(regs)}H", *regs)
    endian = ">" if order in ("ABCD", "CDAB") else "<"
    value: int | float = struct.unpack(endian + _CODES[type_], data)[0]
    return value


def registers_to_string(regs: Sequence[int], order: str) -> str:
    """ASCII text of registers, NUL padding removed; BADC/DCBA swap each register's bytes."""
    data = struct.pack(f">{len(regs)}H", *regs)
    if order in ("BADC", "DCBA"):
        swapped = bytearray(len(data))
        swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
        data = bytes(swapped)
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


# Per point, compiled once: how to get its raw number out of its read's answer.
_BIT, _REG_BIT, _BOOL, _STRING, _NUMBER = range(5)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: int
    offset: int  # registers or bits from the read's start
    size: int
    unpack: struct.Struct | None  # _NUMBER: the value's struct, in its byte order
    reverse: bool  # CDAB/BADC of more than one register: reverse the registers first
    nan_value: float | None
    not_implemented: int | None  # SunSpec marker (when the device has scale factors)
    point: ModbusPoint


# How a raw number becomes an engineering value (one per non-string point):
# (slot, plain, scale, offset, nan_value, not_implemented marker, float type, divisor)
_Scaling = tuple[int, bool, float, float, "float | None", "int | None", bool, float]


def decimal_divisor(scale: float) -> float:
    """10**k when scale is 10**-k (k = 1..9), else 0.0.

    Such scales are applied by dividing: 2305 / 10 is the double nearest 230.5 and prints
    as 230.5, where 2305 * 0.1 gives 230.50000000000003 (0.1 has no exact binary form).
    """
    for k in range(1, 10):
        if scale == 10.0 ** -k:
            return 10.0 ** k
    return 0.0


def _divisions(scalings: list[_Scaling]) -> tuple[int, int, tuple[float, ...]] | None:
    """(first slot, end slot, divisors) when a group's values are raw / divisor in slots first..end.

    That holds for integers with no markers, no offset and a plain (divisor 1.0) or decimal
    scale: an integer over a float is what `float(raw)` and `raw / divisor + 0.0` give
    (never -0.0), so the group can be scaled by one map instead of a loop.
    """
    slots = [s[0] for s in scalings]
    if slots != list(range(slots[0], slots[0] + len(slots))):
        return None
    divisors = []
    for _, plain, _, offset, nan_value, marker, is_float, divisor in scalings:
        if is_float or nan_value is not None or marker is not None or offset != 0.0:
            return None
        if not plain and not divisor:
            return None
        divisors.append(1.0 if plain else divisor)
    return slots[0], slots[0] + len(slots), tuple(divisors)


class DeviceDecoder:
    """Decodes the answers to a device's planned reads into engineering values.

    Built once per device; `values()` runs every poll and returns one number (or None) per
    non-string point, in the order of `names`. A value is None when the device reports it
    not implemented (SunSpec markers, NaN, not finite) or its scale factor is missing.

    Everything that depends on types and byte orders is decided here: per register read, the
    numbers that share no register with another point are read by at most two pre-compiled
    Structs (one big-endian, one little-endian, pad bytes over the gaps) from one packing of
    the answer, with the registers of CDAB/BADC values reversed by a fixed permutation first;
    bits, bit fields, booleans and overlapping points go one by one. `decode()` adds strings
    and returns a dict by point name (tests, tools); the collector uses `values()`.
    """

    def __init__(self, reads: Sequence[ReadRequest]):
        self.reads = list(reads)
        sf_points = {pp.point.scale_factor_point for r in reads for pp in r.points
                     if pp.point.scale_factor_point}
        self._sunspec = bool(sf_points)
        self.names: list[str] = [pp.point.name for r in self.reads for pp in r.points
                                 if pp.point.type != "string"]
        slot_of = {name: i for i, name in enumerate(self.names)}
        # per read: (bits, block Struct, register permutation or None,
        #            [(Struct, [scaling])] for the grouped numbers, [(field, scaling)] one by one)
        self._plan: list[tuple[bool, struct.Struct | None, Any, list[Any], list[Any]]] = []
        self._strings: list[tuple[int, _Field]] = []  # (read index, field)
        self._sf: list[tuple[int, int, float, float]] = []  # (slot, sf slot, scale, offset)
        for index, read in enumerate(self.reads):
            bits = read.table in BIT_TABLES
            fields = [self._field(pp, bits) for pp in read.points]
            singles: list[tuple[_Field, _Scaling]] = []
            groups: list[Any] = []
            perm: Any = None
            block = None if bits else struct.Struct(f">{read.count}H")
            if not bits:
                users = [0] * read.count
                for f in fields:
                    for r in range(f.offset, f.offset + f.size):
                        users[r] += 1
                grouped = [f for f in fields if f.kind == _NUMBER
                           and all(users[r] == 1 for r in range(f.offset, f.offset + f.size))]
                order = list(range(read.count))
                for f in grouped:
                    if f.reverse:
                        order[f.offset: f.offset + f.size] = order[f.offset: f.offset + f.size][::-1]
                if order != list(range(read.count)):
                    perm = operator.itemgetter(*order)
                for endian in (">", "<"):
                    members = sorted((f for f in grouped if f.unpack.format[0] == endian),  # type: ignore[union-attr]
                                     key=lambda f: f.offset)
                    if not members:
                        continue
                    fmt, at = endian, 0
                    for f in members:
                        fmt += "x" * (2 * (f.offset - at)) + f.unpack.format[1:]  # type: ignore[union-attr]
                        at = f.offset + f.size
                    scalings = [self._scaling(f, slot_of) for f in members]
                    groups.append((struct.Struct(fmt), scalings, _divisions(scalings)))
                singles = [(f, self._scaling(f, slot_of)) for f in fields
                           if f not in grouped and f.kind != _STRING]
                self._strings += [(index, f) for f in fields if f.kind == _STRING]
            else:
                singles = [(f, self._scaling(f, slot_of)) for f in fields]
            self._plan.append((bits, block, perm, groups, singles))
            for f in fields:
                p = f.point
                if p.scale_factor_point and f.kind == _NUMBER:
                    self._sf.append((slot_of[p.name], slot_of[p.scale_factor_point], p.scale,
                                     p.offset))

    def _field(self, pp: PlannedPoint, bits: bool) -> _Field:
        p = pp.point
        size = point_size(p)
        if bits:
            return _Field(p.name, _BIT, pp.offset, 1, None, False, None, None, p)
        if p.type == "string":
            return _Field(p.name, _STRING, pp.offset, size, None, False, None, None, p)
        if p.bit is not None:
            return _Field(p.name, _REG_BIT, pp.offset, size, None, False, None, None, p)
        if p.type == "bool":
            return _Field(p.name, _BOOL, pp.offset, size, None, False, None, None, p)
        endian = ">" if p.order in ("ABCD", "CDAB") else "<"
        marker = _NOT_IMPLEMENTED.get(p.type) if self._sunspec else None
        return _Field(p.name, _NUMBER, pp.offset, size, struct.Struct(endian + _CODES[p.type]),
                      p.order in ("CDAB", "BADC") and size > 1, p.nan_value, marker, p)

    @staticmethod
    def _scaling(f: _Field, slot_of: dict[str, int]) -> _Scaling:
        p = f.point
        slot = slot_of[f.name]
        if f.kind != _NUMBER or p.type == "sunssf":  # bits, bit fields, booleans: 0.0 or 1.0
            return (slot, True, 1.0, 0.0, None, f.not_implemented, False, 0.0)
        if p.scale_factor_point:  # raw number here; scaled once every scale factor is known
            return (slot, True, 1.0, 0.0, f.nan_value, f.not_implemented,
                    p.type.startswith("float"), 0.0)
        return (slot, False, p.scale, p.offset, f.nan_value, f.not_implemented,
                p.type.startswith("float"), decimal_divisor(p.scale))

    def values(self, answers: Sequence[Sequence[int] | Sequence[bool]]) -> list[float | None]:
        """answers[i] = registers (or bits) returned for reads[i]; one value per name."""
        out: list[float | None] = [None] * len(self.names)
        isfinite = math.isfinite
        for (bits, block, perm, groups, singles), words in zip(self._plan, answers):
            if groups:
                data = block.pack(*(perm(words) if perm is not None else words))  # type: ignore[union-attr]
                for unpacker, scalings, divisions in groups:
                    if divisions is not None:  # every value raw / divisor: one C-level map
                        first, end, divisors = divisions
                        out[first:end] = map(operator.truediv, unpacker.unpack_from(data), divisors)
                        continue
                    for (slot, plain, scale, offset, nan_value, marker, is_float, divisor), value \
                            in zip(scalings, unpacker.unpack_from(data)):
                        if value == nan_value or value == marker or (is_float and not isfinite(value)):
                            continue  # stays None
                        out[slot] = (float(value) if plain else value / divisor + offset if divisor
                                     else value * scale + offset)
            for f, (slot, plain, scale, offset, nan_value, marker, is_float, divisor) in singles:
                kind = f.kind
                if bits:
                    value = 1 if words[f.offset] else 0
                elif kind == _NUMBER:
                    off = f.offset
                    chunk = words[off: off + f.size]
                    if f.reverse:
                        chunk = chunk[::-1]
                    value = f.unpack.unpack(struct.pack(f">{f.size}H", *chunk))[0]  # type: ignore[union-attr]
                    if value == nan_value or value == marker or (is_float and not isfinite(value)):
                        continue
                elif kind == _REG_BIT:
                    value = (words[f.offset] >> f.point.bit) & 1  # type: ignore[operator]
                else:  # _BOOL
                    value = 1 if words[f.offset] else 0
                out[slot] = (float(value) if plain else value / divisor + offset if divisor
                             else value * scale + offset)
        for slot, sf_slot, scale, offset in self._sf:
            value, sf = out[slot], out[sf_slot]
            # SunSpec scale factors lie in -10..10; anything else is garbage, not a value
            if value is None or sf is None or not -10.0 <= sf <= 10.0:
                out[slot] = None
            else:  # divide for negative factors (see decimal_divisor)
                number = value / 10.0 ** -sf if sf < 0 else value * 10.0 ** sf
                out[slot] = number * scale + offset
        return out

    def decode(self, answers: Sequence[Sequence[int] | Sequence[bool]]) -> dict[str, float | str | None]:
        """Every point's value by name, strings included (not the collector's hot path)."""
        out: dict[str, float | str | None] = dict(zip(self.names, self.values(answers)))
        for index, f in self._strings:
            words = answers[index]
            out[f.name] = registers_to_string(words[f.offset: f.offset + f.size], f.point.order)  # type: ignore[arg-type]
        return out


def raw_to_registers(raw: int | float, type_: str, order: str) -> list[int]:
    """Registers holding a raw number in the given byte order (the inverse of registers_to_raw)."""
    endian = ">" if order in ("ABCD", "CDAB") else "<"
    data = struct.pack(endian + _CODES[type_], raw)
    regs = list(struct.unpack(f">{len(data) // 2}H", data))
    return regs[::-1] if order in ("CDAB", "BADC") else regs


def engineering_to_registers(point: ModbusPoint, value: float) -> list[int]:
    """Registers for writing an engineering value to a (writable) register point."""
    raw = (value - point.offset) / point.scale
    if point.type in ("float32", "float64"):
        return raw_to_registers(raw, point.type, point.order)
    return raw_to_registers(int(round(raw)), point.type, point.order)
