"""Collector decoding and read planning: tables of known values and property-based checks."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcim.collectors.modbus_codec import (
    MAX_READ_BITS, MAX_READ_REGISTERS, DeviceDecoder, decimal_divisor, plan_reads, point_size,
    registers_to_raw, registers_to_string,
)
from dcim.simulators.registers import encode_string, encode_value
from dcim.config.site import ModbusPoint

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
TYPES = {
    "int16": st.integers(-0x8000, 0x7FFF), "uint16": st.integers(0, 0xFFFF),
    "int32": st.integers(-(1 << 31), (1 << 31) - 1), "uint32": st.integers(0, (1 << 32) - 1),
    "int64": st.integers(-(1 << 63), (1 << 63) - 1), "uint64": st.integers(0, (1 << 64) - 1),
    "float32": st.floats(width=32, allow_nan=False), "float64": st.floats(allow_nan=False),
}


def words(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


@pytest.mark.parametrize("type_,order,regs,expected", [
    ("int32", "ABCD", [0x89AB, 0xCDEF], -1985229329),
    ("int32", "CDAB", [0xCDEF, 0x89AB], -1985229329),
    ("int32", "BADC", [0xAB89, 0xEFCD], -1985229329),
    ("int32", "DCBA", [0xEFCD, 0xAB89], -1985229329),
    ("float32", "ABCD", [0x3F80, 0x0000], 1.0),
    ("float32", "CDAB", [0x0000, 0x3F80], 1.0),
    ("uint16", "BADC", [0x3412], 0x1234),
    ("int16", "ABCD", [0xFFFF], -1),
    ("uint64", "CDAB", [0x0004, 0x0003, 0x0002, 0x0001], 0x0001_0002_0003_0004),
    ("int64", "ABCD", [0, 0, 0x0001, 0x86A0], 100_000),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0xF03F], 1.0),
], ids=lambda v: str(v))
def test_known_register_values(type_: str, order: str, regs: list[int], expected: float) -> None:
    assert registers_to_raw(regs, type_, order) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.data(), type_=st.sampled_from(sorted(TYPES)), order=st.sampled_from(ORDERS))
def test_every_type_and_order_round_trips(data: st.DataObject, type_: str, order: str) -> None:
    """The simulator's encoder (independent code) and the collector's decoder agree."""
    value = data.draw(TYPES[type_])
    regs = words(encode_value(type_, order, value))
    decoded = registers_to_raw(regs, type_, order)
    if type_ == "float32":
        assert decoded == struct.unpack(">f", struct.pack(">f", value))[0] or math.isinf(value)
    else:
        assert decoded == value


@given(text=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=16),
       order=st.sampled_from(ORDERS))
def test_strings_round_trip(text: str, order: str) -> None:
    assert registers_to_string(words(encode_string(text, 8, order)), order) == text


def _point(name: str, table: str, address: int, type_: str = "uint16", **kw: object) -> ModbusPoint:
    return ModbusPoint.model_validate({"name": name, "table": table, "address": address,
                                       "type": type_, **kw})


def test_decoder_scales_sunspec_and_bits() -> None:
    points = [
        _point("w_sf", "holding", 10, "sunssf"),
        _point("w", "holding", 8, "int16", scale=0.001, scale_factor_point="w_sf"),
        _point("status", "holding", 11, bit=3),
        _point("energy", "holding", 12, "uint32", order="CDAB", scale=0.1),
        _point("on_battery", "discrete_input", 0, "bool"),
        _point("temp", "input", 5, "int16", scale=0.1, offset=-40.0),
    ]
    reads = plan_reads(points, max_gap=1)
    assert [(r.table, r.address, r.count) for r in reads] == [
        ("discrete_input", 0, 1), ("holding", 8, 6), ("input", 5, 1)]
    answers = {("holding", 8): [12345, 0, 1, 0b1000, 0x5678, 0x1234], ("discrete_input", 0): [True],
               ("input", 5): [0xFF38]}  # -200 -> -20.0 - 40
    values = DeviceDecoder(reads).decode([answers[(r.table, r.address)] for r in reads])
    assert values["w"] == pytest.approx(123.45)  # 12345 x 10^1 W x 0.001
    assert values["status"] == 1.0
    assert values["energy"] == pytest.approx(0x12345678 * 0.1)
    assert values["on_battery"] == 1.0
    assert values["temp"] == pytest.approx(-60.0)


def test_sunspec_not_implemented_is_no_value() -> None:
    points = [_point("a_sf", "holding", 1, "sunssf"),
              _point("a", "holding", 0, "int16", scale_factor_point="a_sf")]
    decoder = DeviceDecoder(plan_reads(points))
    assert decoder.decode([[0x8000, 0xFFFE]]) == {"a": None, "a_sf": -2.0}
    assert decoder.decode([[250, 0x8000]]) == {"a": None, "a_sf": None}
    assert decoder.decode([[250, 0xFFFE]]) == {"a": pytest.approx(2.5), "a_sf": -2.0}


point_specs = st.lists(
    st.tuples(st.sampled_from(["coil", "discrete_input", "holding", "input"]),
              st.integers(0, 3000),
              st.sampled_from(["uint16", "int32", "float32", "float64", "string"])),
    min_size=1, max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(specs=point_specs, max_gap=st.integers(0, 30))
def test_planning_covers_every_point_within_limits(specs: list[tuple[str, int, str]],
                                                   max_gap: int) -> None:
    points = []
    for i, (table, address, type_) in enumerate(specs):
        if table in ("coil", "discrete_input"):
            type_ = "bool"
        extra = {"count": 5} if type_ == "string" else {}
        points.append(_point(f"p{i}", table, address, type_, **extra))
    reads = plan_reads(points, max_gap=max_gap)
    served = [pp.point.name for r in reads for pp in r.points]
    assert sorted(served) == sorted(p.name for p in points)  # every point exactly once
    for read in reads:
        limit = MAX_READ_BITS if read.table in ("coil", "discrete_input") else MAX_READ_REGISTERS
        assert 1 <= read.count <= limit
        for pp in read.points:
            assert pp.point.table == read.table
            assert 0 <= pp.offset and pp.offset + point_size(pp.point) <= read.count
    # no two reads of a table overlap, and separate reads had a reason to be separate
    for table in ("coil", "discrete_input", "holding", "input"):
        spans = sorted((r.address, r.address + r.count) for r in reads if r.table == table)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end


def test_planning_respects_gap_and_125_registers() -> None:
    points = [_point(f"p{i}", "holding", i * 10, "float32") for i in range(40)]  # 0..392
    assert len(plan_reads(points, max_gap=0)) == 40
    reads = plan_reads(points, max_gap=8)
    assert all(r.count <= 125 for r in reads)
    assert len(reads) == 4  # 392 registers in reads of at most 125


def _reference_value(point: ModbusPoint, regs: list[int], sf: float | None,
                     sunspec: bool) -> float | None:
    """One point's engineering value the slow, obvious way (registers_to_raw per point)."""
    if point.bit is not None:
        return float((regs[0] >> point.bit) & 1)
    if point.type == "bool":
        return 1.0 if regs[0] else 0.0
    raw = registers_to_raw(regs, point.type, point.order)
    if point.nan_value is not None and raw == point.nan_value:
        return None
    if not math.isfinite(raw):
        return None
    if sunspec and raw == {"int16": -0x8000, "sunssf": -0x8000, "uint16": 0xFFFF,
                           "acc32": 0}.get(point.type):
        return None  # SunSpec "not implemented"
    if point.type == "sunssf":
        return float(raw)
    if point.scale_factor_point:
        if sf is None:
            return None
        return float(raw) * 10.0 ** sf * point.scale + point.offset
    return float(raw) * point.scale + point.offset


device_points = st.lists(
    st.tuples(st.integers(0, 150),  # address
              st.sampled_from(sorted(TYPES) + ["bool", "bit"]),
              st.sampled_from(ORDERS),
              st.sampled_from([1.0, 0.1, 0.001, 10.0]),
              st.sampled_from([0.0, -40.0])),
    min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(specs=device_points, max_gap=st.integers(0, 20), data=st.data(),
       sunspec=st.booleans())
def test_device_values_equal_the_per_point_reference(specs: list[tuple[int, str, str, float, float]],
                                                     max_gap: int, data: st.DataObject,
                                                     sunspec: bool) -> None:
    """Grouped Structs, register permutations and overlapping points give what decoding
    each point on its own gives, for any mix of types, orders and addresses."""
    points = []
    for i, (address, type_, order, scale, offset) in enumerate(specs):
        if type_ == "bit":
            points.append(_point(f"p{i}", "holding", address, "uint16", bit=i % 16))
        else:
            points.append(_point(f"p{i}", "holding", address, type_, order=order, scale=scale,
                                 offset=offset))
    if sunspec:  # one scale factor at 200 for every int16 point
        points.append(_point("sf", "holding", 200, "sunssf"))
        points = [p.model_copy(update={"scale_factor_point": "sf"})
                  if p.type == "int16" and p.bit is None else p for p in points]
        sunspec = any(p.scale_factor_point for p in points)  # what makes a device SunSpec
    word = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0x8000, 0xFFFF, 0x7FC0, 0xFFF6,
                                                              0x000B, 0xFFF5]))
    memory = data.draw(st.lists(word, min_size=210, max_size=210))
    reads = plan_reads(points, max_gap=max_gap)
    decoder = DeviceDecoder(reads)
    got = dict(zip(decoder.names, decoder.values(
        [memory[r.address: r.address + r.count] for r in reads])))
    sf_raw = registers_to_raw(memory[200:201], "int16", "ABCD")
    sf = None if sf_raw == -0x8000 or not -10 <= sf_raw <= 10 else float(sf_raw)
    for p in points:
        want = _reference_value(p, memory[p.address: p.address + point_size(p)], sf, sunspec)
        assert (got[p.name] is None) == (want is None), (p, got[p.name], want)
        if want is not None:
            assert got[p.name] == pytest.approx(want, rel=1e-12, abs=1e-300), p


def test_decimal_scales_divide_so_values_print_as_the_device_meant() -> None:
    points = [_point("v", "holding", 0, "uint16", scale=0.1),
              _point("i", "holding", 1, "int16", scale=0.01),
              _point("w_sf", "holding", 3, "sunssf"),
              _point("w", "holding", 2, "int16", scale_factor_point="w_sf"),
              _point("k", "holding", 4, "uint16", scale=0.5)]
    decoder = DeviceDecoder(plan_reads(points))
    values = decoder.decode([[2306, 6012, 2306, 0xFFFF, 3]])
    assert repr(2306 * 0.1) == "230.60000000000002"  # what multiplying would store
    assert repr(values["v"]) == "230.6"
    assert repr(values["i"]) == "60.12"  # 6012 * 0.01 would be 60.120000000000005
    assert repr(values["w"]) == "230.6"  # SunSpec 2306 x 10^-1
    assert values["k"] == 1.5  # other scales multiply


integer_points = st.lists(
    st.tuples(st.sampled_from(["int16", "uint16", "int32", "uint32", "acc32"]),
              st.sampled_from(ORDERS), st.sampled_from([1.0, 0.1, 0.01, 0.001])),
    min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(specs=integer_points, data=st.data())
def test_integer_blocks_scale_exactly_as_one_point_at_a_time(
        specs: list[tuple[str, str, float]], data: st.DataObject) -> None:
    """Integers with decimal scales and no offset are scaled by one map over the block: the
    same numbers, bit for bit (zero's sign included), as raw / 10**k + offset point by point."""
    points, address = [], 0
    for i, (type_, order, scale) in enumerate(specs):
        points.append(_point(f"p{i}", "input", address, type_, order=order, scale=scale))
        address += 1 if "16" in type_ else 2
    memory = data.draw(st.lists(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF, 12345]),
                                min_size=address, max_size=address))
    reads = plan_reads(points)
    got = DeviceDecoder(reads).values([memory[r.address: r.address + r.count] for r in reads])
    for p, value in zip(points, got):
        raw = registers_to_raw(memory[p.address: p.address + point_size(p)], p.type, p.order)
        divisor = decimal_divisor(p.scale)
        want = raw / divisor + p.offset if divisor else float(raw)
        assert value == want and math.copysign(1.0, value) == math.copysign(1.0, want), p  # type: ignore[arg-type]
