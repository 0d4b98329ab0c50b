"""Modbus read planning and decoding: pure functions, computed once per device at start-up.

Byte orders follow docs/devices.md: a value's bytes A B C D... big-endian; ABCD is sent as
is, CDAB with the register order reversed, BADC with the bytes of each register swapped,
DCBA fully reversed. Decoding: reverse the registers for CDAB/BADC, then read big-endian
(ABCD, CDAB) or little-endian (BADC, DCBA).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from dcim.site.schema import MODBUS_TYPE_REGISTERS, ModbusPoint

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


class DeviceDecoder:
    """Decodes the answers to a device's planned reads into engineering values by point name.

    Built once per device; decode() runs every poll. A value is None when the device reports
    it not implemented (SunSpec markers, NaN) or its scale factor is missing. Structs and the
    per-point steps are chosen here, so decode() never switches on types or byte orders.
    """

    def __init__(self, reads: Sequence[ReadRequest]):
        self.reads = list(reads)
        self._sf_points = {pp.point.scale_factor_point for r in reads for pp in r.points
                           if pp.point.scale_factor_point}
        self._sunspec = bool(self._sf_points)
        self._plan: list[tuple[bool, struct.Struct | None, list[_Field]]] = []
        for read in self.reads:
            bits = read.table in BIT_TABLES
            block = None if bits else struct.Struct(f">{read.count}H")
            self._plan.append((bits, block, [self._field(pp, bits) for pp in read.points]))
        # (name, kind, scale, offset, scale factor point) in reads order, for the scaling pass
        self._scaling: list[tuple[str, bool, float, float, str | None]] = []
        for read in self.reads:
            for pp in read.points:
                p = pp.point
                plain = p.type == "sunssf" or p.table in BIT_TABLES or p.bit is not None
                self._scaling.append((p.name, plain, p.scale, p.offset, p.scale_factor_point))

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

    def decode(self, answers: Sequence[Sequence[int] | Sequence[bool]]) -> dict[str, float | str | None]:
        """answers[i] = registers (or bits) returned for reads[i]; returns value per point."""
        raw: dict[str, int | float | str | None] = {}
        for (bits, block, fields), words in zip(self._plan, answers):
            if bits:
                for f in fields:
                    raw[f.name] = 1 if words[f.offset] else 0
                continue
            data = block.pack(*words) if block is not None else b""
            for f in fields:
                kind = f.kind
                if kind == _NUMBER:
                    if f.reverse:
                        off = f.offset
                        chunk = words[off: off + f.size][::-1]
                        value = f.unpack.unpack(struct.pack(f">{f.size}H", *chunk))[0]  # type: ignore[union-attr]
                    else:
                        value = f.unpack.unpack_from(data, 2 * f.offset)[0]  # type: ignore[union-attr]
                    if value == f.nan_value or (f.not_implemented is not None
                                                and f.not_implemented == value):
                        value = None
                    raw[f.name] = value
                elif kind == _REG_BIT:
                    raw[f.name] = (words[f.offset] >> f.point.bit) & 1  # type: ignore[operator]
                elif kind == _BOOL:
                    raw[f.name] = 1 if words[f.offset] else 0
                else:
                    raw[f.name] = registers_to_string(words[f.offset: f.offset + f.size],
                                                      f.point.order)
        return self._scale(raw)

    def _scale(self, raw: dict[str, int | float | str | None]) -> dict[str, float | str | None]:
        out: dict[str, float | str | None] = {}
        isfinite = math.isfinite
        for name, plain, scale, offset, sf_point in self._scaling:
            value = raw[name]
            if value is None or value.__class__ is str:
                out[name] = value
                continue
            if plain:
                out[name] = float(value)  # type: ignore[arg-type]
                continue
            number = float(value)  # type: ignore[arg-type]
            if not isfinite(number):
                out[name] = None
                continue
            if sf_point:
                sf = raw.get(sf_point)
                if not isinstance(sf, (int, float)) or isinstance(sf, bool):
                    out[name] = None
                    continue
                number *= 10.0 ** sf
            out[name] = number * scale + offset
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
