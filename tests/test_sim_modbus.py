"""Modbus simulator: the register encoder (tables), the TCP server (pymodbus and mbpoll as clients),
exceptions and wire faults, and the cost of updating the reference site."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from dcim.site.loader import load_site
from dcim.site.model import Site, SiteDevice
from dcim.config.site import ModbusGateway, ModbusPoint, ModbusProfile
from dcim.simulators.modbus_server import ModbusSimServer, serve_site_modbus
from dcim.simulators.registers import (
    DeviceEncoder, choose_scale_factor, encode_string, encode_value, reorder, to_raw,
)
from dcim.simulators.snapshot import DeviceHealth, DeviceReading, Snapshot
from tests.conftest import require_program

SITE_FILE = Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml"

# One device of each reference profile with plausible engineering values.
SAMPLES: dict[str, dict[str, float]] = {
    "M-UTIL-A": {"current_avg_a": 1234.5, "voltage_ll_avg_v": 11012.0, "power_kw": 812.5,
                 "apparent_power_kva": 845.25, "frequency_hz": 50.02, "energy_kwh": 9876543.21},
    "PDU-A-H1-1": {"current_a": 123.4, "voltage_ln_v": 230.1, "frequency_hz": 50.01,
                   "output_power_kw": 85.2, "power_factor": 0.97, "output_energy_kwh": 1234567.8},
    "UPS-A1": {"unit_status": 1, "ups_mode": 2, "input_power_kw": 262.7, "output_power_kw": 250.3,
               "load_pct": 62.6, "battery_charge_pct": 99.5, "battery_runtime_s": 70000,
               "battery_voltage_v": 545.2, "battery_temp_c": -1.5, "output_voltage_v": 400.3,
               "output_frequency_hz": 50.0, "input_energy_kwh": 3456789.1,
               "output_energy_kwh": 3300000.5, "on_battery": 0, "on_bypass": 1, "fault": 0},
    "GEN-1-CTRL": {"unit_status": 3, "running": 1, "fault": 1, "power_kw": -12,
                   "voltage_ll_v": 415, "frequency_hz": 49.98, "fuel_level_pct": 87.5,
                   "coolant_temp_c": 82.4, "energy_kwh": 123456, "fuel_used_l": 4567.8},
    "ATS-A-CTRL": {"source": 1, "unit_status": 1, "fault": 1},
    "RM-H1-A01": {"feed_a_power_kw": 3.456, "feed_b_power_kw": 3.401,
                  "feed_a_energy_kwh": 123456.789, "feed_b_energy_kwh": 120000.001,
                  "inlet_temp_bottom_c": 21.5, "inlet_temp_middle_c": 23.4,
                  "inlet_temp_top_c": 26.1, "inlet_rh_pct": 45.6},
}
GATEWAY_OF = {"M-UTIL-A": "gw-power", "UPS-A1": "gw-power", "GEN-1-CTRL": "gw-power",
              "ATS-A-CTRL": "gw-power", "PDU-A-H1-1": "gw-pdu", "RM-H1-A01": "gw-racks-h1-1"}


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(SITE_FILE)


@pytest.fixture
def snapshot() -> Snapshot:
    return Snapshot(1_700_000_000.0, {d: DeviceReading(dict(v)) for d, v in SAMPLES.items()})


@pytest.fixture
async def servers(site: Site, snapshot: Snapshot) -> AsyncIterator[dict[str, ModbusSimServer]]:
    running = await serve_site_modbus(site, snapshot)
    yield running
    for server in running.values():
        await server.stop()


async def connect(port: int, timeout: float = 1.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout, retries=0)
    assert await client.connect()
    return client


def _device(points: list[dict[str, Any]], vendor_model: str = "", unit_id: int = 1) -> SiteDevice:
    """A hand-built device for encoder edge cases."""
    profile = ModbusProfile(protocol="modbus", device_type="meter", vendor_model=vendor_model,
                            points=[ModbusPoint(**p) for p in points])
    gateway = ModbusGateway(id="gw-test", protocol="modbus_tcp")
    return SiteDevice(id="DEV-1", device_type="meter", profile_id="test", profile=profile,
                      gateway=gateway, unit_id=unit_id, node_name="DEV-1", monitors="site",
                      interval_s=5.0)


# ---------------------------------------------------------------- independent decoding

_FORMATS = {"int16": "h", "uint16": "H", "sunssf": "h", "int32": "i", "uint32": "I",
            "acc32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d"}


def decode(words: list[int], type_: str, order: str) -> float:
    """Wire registers -> number, written from the byte-order table, not from the encoder."""
    data = b"".join(w.to_bytes(2, "big") for w in words)
    if order in ("CDAB", "DCBA"):  # words low first: put them back high first
        data = b"".join(data[i:i + 2] for i in range(len(data) - 2, -1, -2))
    if order in ("BADC", "DCBA"):  # bytes swapped inside each word
        data = b"".join(data[i + 1:i + 2] + data[i:i + 1] for i in range(0, len(data), 2))
    number: float = struct.unpack(">" + _FORMATS[type_], data)[0]
    return number  # ints stay exact (int64 does not fit a float)


# ---------------------------------------------------------------- (a) encoder tables

WORDS = [
    ("float32", 1.0, {"ABCD": [0x3F80, 0x0000], "CDAB": [0x0000, 0x3F80],
                      "BADC": [0x803F, 0x0000], "DCBA": [0x0000, 0x803F]}),
    ("int32", -1985229329, {"ABCD": [0x89AB, 0xCDEF], "CDAB": [0xCDEF, 0x89AB],
                            "BADC": [0xAB89, 0xEFCD], "DCBA": [0xEFCD, 0xAB89]}),
    ("uint32", 0x01020304, {"ABCD": [0x0102, 0x0304], "CDAB": [0x0304, 0x0102],
                            "BADC": [0x0201, 0x0403], "DCBA": [0x0403, 0x0201]}),
    ("acc32", 70000, {"ABCD": [0x0001, 0x1170], "CDAB": [0x1170, 0x0001],
                      "BADC": [0x0100, 0x7011], "DCBA": [0x7011, 0x0100]}),
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int64", 0x0102030405060708,
     {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708], "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
      "BADC": [0x0201, 0x0403, 0x0605, 0x0807], "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("uint64", 0xFFFFFFFF00000001,
     {"ABCD": [0xFFFF, 0xFFFF, 0x0000, 0x0001], "CDAB": [0x0001, 0x0000, 0xFFFF, 0xFFFF],
      "BADC": [0xFFFF, 0xFFFF, 0x0000, 0x0100], "DCBA": [0x0100, 0x0000, 0xFFFF, 0xFFFF]}),
    ("float64", 1.0, {"ABCD": [0x3FF0, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF0],
                      "BADC": [0xF03F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF03F]}),
]


@pytest.mark.parametrize(("type_", "value", "order", "expected"), [
    pytest.param(t, v, o, w, id=f"{t}-{o}") for t, v, by_order in WORDS for o, w in by_order.items()
])
def test_encode_value_words(type_: str, value: float, order: str, expected: list[int]) -> None:
    data = encode_value(type_, order, value)
    assert list(struct.unpack(f">{len(data) // 2}H", data)) == expected
    assert decode(expected, type_, order) == value


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_reorder_is_an_involution(order: str) -> None:
    data = bytes(range(1, 9))
    assert reorder(reorder(data, order), order) == data


@pytest.mark.parametrize(("value", "type_", "scale", "offset", "sf", "sunspec", "raw"), [
    (250.3, "uint16", 0.1, 0.0, 0, False, 2503),
    (62.6, "uint16", 1 / 256, 0.0, 0, False, 16026),  # APC-style binary scaling
    (-1.5, "int16", 1 / 128, 0.0, 0, False, -192),
    (20.0, "int16", 0.1, -40.0, 0, False, 600),  # offset: raw = (value - offset) / scale
    (0.25, "int16", 0.5, 0.0, 0, False, 1),  # half away from zero
    (-0.25, "int16", 0.5, 0.0, 0, False, -1),
    (40000, "int16", 1.0, 0.0, 0, False, 32767),  # clamped
    (-40000, "int16", 1.0, 0.0, 0, False, -32768),
    (-40000, "int16", 1.0, 0.0, 0, True, -32767),  # SunSpec keeps 0x8000 for "not implemented"
    (70000, "uint16", 1.0, 0.0, 0, True, 65534),
    (-5, "uint32", 1.0, 0.0, 0, False, 0),
    (2**32 + 5, "acc32", 1.0, 0.0, 0, True, 5),  # accumulators wrap
    (230.1, "int16", 1.0, 0.0, -2, True, 23010),
    (1234567.8, "acc32", 0.001, 0.0, 0, True, 1234567800),
    (812.5, "float32", 1.0, 0.0, 0, False, 812.5),
])
def test_to_raw(value: float, type_: str, scale: float, offset: float, sf: int, sunspec: bool,
                raw: float) -> None:
    assert to_raw(value, type_, scale, offset, sf, sunspec=sunspec) == raw


@pytest.mark.parametrize(("magnitudes", "sf"), [
    ([(230.1, "int16")], -2),
    ([(32767.0, "int16")], 0),
    ([(32767.6, "int16")], 1),  # would round to 32768
    ([(0.97, "int16")], -4),
    ([(123456.0, "int16")], 1),
    ([(1.5e9, "acc32")], 0),
    ([(5e9, "acc32")], 1),
    ([(230.1, "int16"), (1000.0, "int16")], -1),  # shared: the largest value decides
    ([(1e-30, "int16")], -10),  # bounded to the sunssf range
    ([], 0),
    ([(0.0, "int16")], 0),
])
def test_choose_scale_factor(magnitudes: list[tuple[float, str]], sf: int) -> None:
    assert choose_scale_factor(magnitudes) == sf


def test_string_encoding() -> None:
    assert encode_string("SunS", 2) == b"SunS"
    assert encode_string("abc", 3) == b"abc\0\0\0"
    assert encode_string("abcd", 2, "BADC") == b"badc"
    assert encode_string("too long", 2) == b"too "


def test_bit_fields_share_one_register(site: Site) -> None:
    encoder = DeviceEncoder(site.devices["GEN-1-CTRL"])
    for running, fault, word in ((1, 1, 3), (0, 1, 2), (1, 0, 1), (0, 0, 0)):
        encoder.encode(DeviceReading({"running": running, "fault": fault}))
        assert encoder.image.registers("holding", 1, 1) == [word]


def test_not_implemented_markers(site: Site) -> None:
    pm = DeviceEncoder(site.devices["M-UTIL-A"])
    reading = DeviceReading(dict(SAMPLES["M-UTIL-A"]),
                            point_health={"power_kw": DeviceHealth.NO_DATA})
    pm.encode(reading)
    assert math.isnan(decode(pm.image.registers("holding", 3059, 2), "float32", "ABCD"))
    current = decode(pm.image.registers("holding", 3009, 2), "float32", "ABCD")
    assert current == pytest.approx(1234.5)

    ups = DeviceEncoder(site.devices["UPS-A1"])
    ups.encode(DeviceReading(dict(SAMPLES["UPS-A1"]), health=DeviceHealth.NO_DATA))
    regs = ups.image.registers("input", 0, 16)
    assert regs[0] == 0xFFFF and regs[9] == 0x8000  # uint16, int16
    assert regs[6:8] == [0xFFFF, 0xFFFF]  # uint32
    assert ups.image.read_bits("discrete_input", 0, 3) == b"\x00"

    pdu = DeviceEncoder(site.devices["PDU-A-H1-1"])
    values = dict(SAMPLES["PDU-A-H1-1"])
    del values["frequency_hz"]  # missing counts as not available
    pdu.encode(DeviceReading(values, point_health={"current_a": DeviceHealth.NO_DATA,
                                                   "output_energy_kwh": DeviceHealth.NO_DATA}))
    assert pdu.image.registers("holding", 40072, 1) == [0x8000]
    assert pdu.image.registers("holding", 40086, 1) == [0x8000]
    assert pdu.image.registers("holding", 40116, 2) == [0, 0]  # acc32
    assert pdu.image.registers("holding", 40077, 1) == [23010]
    pdu.encode(DeviceReading(values, health=DeviceHealth.NO_DATA))
    assert pdu.image.registers("holding", 40085, 1) == [0x8000]  # the sf itself


def test_sunspec_map(site: Site) -> None:
    encoder = DeviceEncoder(site.devices["PDU-A-H1-1"])
    encoder.encode(DeviceReading(dict(SAMPLES["PDU-A-H1-1"])))
    image = encoder.image
    assert image.read_registers("holding", 40000, 2) == b"SunS"
    assert image.registers("holding", 40002, 2) == [1, 66]
    assert image.read_registers("holding", 40004, 16).rstrip(b"\0") == b"dcim"
    assert image.read_registers("holding", 40052, 16).rstrip(b"\0") == b"PDU-A-H1-1"
    assert image.registers("holding", 40068, 1) == [1]  # DA = unit id
    assert image.registers("holding", 40070, 2) == [203, 105]
    assert image.registers("holding", 40070 + 2 + 105, 2) == [0xFFFF, 0]
    assert image.registers("holding", 40073, 1) == [0x8000]  # unmapped phase current: NI
    assert [b.start for b in image.blocks] == [40000] and image.blocks[0].end == 40179


def test_profile_errors_are_named() -> None:
    with pytest.raises(ValueError, match="'a' and 'b' overlap"):
        DeviceEncoder(_device([{"name": "a", "table": "holding", "address": 0, "type": "uint32"},
                               {"name": "b", "table": "holding", "address": 1}]))
    with pytest.raises(ValueError, match="outside SunSpec model 203"):
        DeviceEncoder(_device([{"name": "sf", "table": "holding", "address": 40002,
                                "type": "sunssf"}]))


# ---------------------------------------------------------------- (b) round trip with pymodbus


@pytest.mark.parametrize("device_id", list(SAMPLES))
async def test_round_trip_every_point(site: Site, servers: dict[str, ModbusSimServer],
                                      device_id: str) -> None:
    device = site.devices[device_id]
    assert device.unit_id is not None and isinstance(device.profile, ModbusProfile)
    client = await connect(servers[GATEWAY_OF[device_id]].port)
    points = {p.name: p for p in device.profile.points}
    try:
        for p in device.profile.points:
            if p.type == "sunssf":
                continue
            expected = SAMPLES[device_id][p.name]
            if p.table in ("coil", "discrete_input"):
                reply = await client.read_discrete_inputs(p.address, count=1,
                                                          device_id=device.unit_id)
                assert not reply.isError(), reply
                assert reply.bits[0] == bool(expected), p.name
                continue
            read = client.read_holding_registers if p.table == "holding" \
                else client.read_input_registers
            reply = await read(p.address, count=p.size_registers, device_id=device.unit_id)
            assert not reply.isError(), (p.name, reply)
            raw = decode(reply.registers, p.type, p.order)
            resolution = abs(p.scale)
            if p.bit is not None:
                raw = (int(raw) >> p.bit) & 1
            if p.scale_factor_point:
                sf_point = points[p.scale_factor_point]
                sf_reply = await read(sf_point.address, count=1, device_id=device.unit_id)
                sf = int(decode(sf_reply.registers, "sunssf", "ABCD"))
                raw *= 10.0 ** sf
                resolution *= 10.0 ** sf
            value = raw * p.scale + p.offset
            if p.type == "float32":
                assert value == pytest.approx(expected, rel=1e-7), p.name
            else:
                assert abs(value - expected) <= resolution / 2 + 1e-9 * abs(expected), p.name
    finally:
        client.close()


# ---------------------------------------------------------------- (c) mbpoll


async def _mbpoll(*args: str) -> list[float]:
    program = require_program("mbpoll", "apt-get install mbpoll")
    proc = await asyncio.create_subprocess_exec(
        program, "-m", "tcp", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    return [float(line.split(":", 1)[1]) for line in out.decode().splitlines()
            if line.startswith("[")]


async def test_mbpoll_reads_documented_values(servers: dict[str, ModbusSimServer]) -> None:
    port = str(servers["gw-power"].port)
    power = await _mbpoll("-a", "4", "-0", "-r", "3059", "-c", "1", "-t", "4:float", "-B",
                          "-p", port, "-1", "127.0.0.1")
    assert power == [812.5]
    ups = await _mbpoll("-a", "6", "-0", "-r", "3", "-c", "1", "-t", "3", "-p", port, "-1",
                        "127.0.0.1")
    assert ups == [2503]  # output_power_kw 250.3 at scale 0.1
    runtime = await _mbpoll("-a", "6", "-0", "-r", "6", "-c", "1", "-t", "3:int", "-p", port,
                            "-1", "127.0.0.1")  # mbpoll's default word order is CDAB
    assert runtime == [70000]


# ---------------------------------------------------------------- (d) exceptions and writes


@pytest.mark.parametrize(("unit", "table", "address", "count", "code"), [
    (4, "holding", 5000, 2, 2),  # PM5560: nothing mapped there
    (4, "holding", 3059, 3, 2),  # runs past the end of the block
    (4, "holding", 3058, 2, 2),  # starts before it
    (1, "holding", 10, 7, 2),  # genset: spans the gap at 15
    (6, "holding", 0, 1, 2),  # UPS: no holding registers at all
    (6, "input", 0, 16, None),  # the whole UPS block is fine
    (99, "holding", 3059, 2, 11),  # unknown unit: gateway target failed to respond
    (0, "input", 0, 1, 11),
])
async def test_read_exceptions(servers: dict[str, ModbusSimServer], unit: int, table: str,
                               address: int, count: int, code: int | None) -> None:
    client = await connect(servers["gw-power"].port)
    try:
        read = client.read_holding_registers if table == "holding" else client.read_input_registers
        reply = await read(address, count=count, device_id=unit)
        assert (reply.exception_code if reply.isError() else None) == code
    finally:
        client.close()


async def test_writes_refused_unless_writable(servers: dict[str, ModbusSimServer]) -> None:
    client = await connect(servers["gw-power"].port)
    try:
        assert (await client.write_register(0, 1, device_id=1)).exception_code == 1
        assert (await client.write_registers(10, [1, 2], device_id=1)).exception_code == 1
        assert (await client.write_coil(0, True, device_id=6)).exception_code == 1
        assert (await client.write_register(0, 1, device_id=99)).exception_code == 11
    finally:
        client.close()
    device = _device([{"name": "setpoint", "table": "holding", "address": 100, "writable": True},
                      {"name": "status", "table": "holding", "address": 101}])
    async with ModbusSimServer(device.gateway, [device], host="127.0.0.1", port=0) as server:
        client = await connect(server.port)
        try:
            assert not (await client.write_register(100, 42, device_id=1)).isError()
            reply = await client.read_holding_registers(100, count=1, device_id=1)
            assert reply.registers == [42]
            assert (await client.write_registers(100, [1, 2], device_id=1)).exception_code == 2
            assert (await client.write_register(101, 1, device_id=1)).exception_code == 2
        finally:
            client.close()
        server.update(Snapshot(0.0, {"DEV-1": DeviceReading({"status": 7})}))
        assert server.encoder(1).image.registers("holding", 100, 2) == [42, 7]  # write kept
        assert server.written[-1] == (1, "holding", 100, b"\x00\x2a")


# ---------------------------------------------------------------- (e) wire faults


async def _read_power(client: AsyncModbusTcpClient, unit: int = 4) -> Any:
    return await client.read_holding_registers(3059, count=2, device_id=unit)


async def _read_ups(client: AsyncModbusTcpClient) -> Any:
    return await client.read_input_registers(3, count=1, device_id=6)


@pytest.mark.parametrize("fault", [("timeout", {}), ("garbage", {}),
                                   ("garbage", {"mode": "mbap"})], ids=str)
async def test_fault_without_answer(servers: dict[str, ModbusSimServer],
                                    fault: tuple[str, dict[str, Any]]) -> None:
    server = servers["gw-power"]
    server.set_comm_fault(4, fault[0], **fault[1])
    faulty, healthy = await connect(server.port, 0.3), await connect(server.port, 0.3)
    try:
        with pytest.raises(ModbusException):
            await _read_power(faulty)
        assert (await _read_ups(healthy)).registers == [2503]  # other units unaffected
        assert server.stats.dropped == 1
        server.clear_comm_fault(4, fault[0])
        assert (await _read_power(healthy)).registers == [0x444B, 0x2000]
    finally:
        faulty.close()
        healthy.close()


async def test_fault_disconnect(servers: dict[str, ModbusSimServer]) -> None:
    server = servers["gw-power"]
    server.set_comm_fault(4, "disconnect")
    events: list[bool] = []
    client = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0,
                                  trace_connect=events.append)
    assert await client.connect()
    try:
        with pytest.raises(ModbusException):
            await _read_power(client)
        assert False in events  # the client saw the connection drop
        assert server.stats.dropped == 1
        server.clear_comm_fault(4, "disconnect")
        healthy = await connect(server.port)
        assert not (await _read_power(healthy)).isError()
        healthy.close()
    finally:
        client.close()


async def test_fault_exception_count_and_gateway_wide(servers: dict[str, ModbusSimServer]) -> None:
    server = servers["gw-power"]
    client = await connect(server.port)
    try:
        server.set_comm_fault(4, "exception", count=2)  # busy twice, then fine (a retry test)
        assert (await _read_power(client)).exception_code == 6
        assert (await _read_ups(client)).registers == [2503]
        assert (await _read_power(client)).exception_code == 6
        assert not (await _read_power(client)).isError()
        server.set_comm_fault(None, "exception", code=4)
        assert (await _read_ups(client)).exception_code == 4
        server.clear_comm_fault(None, "exception")
        assert not (await _read_ups(client)).isError()
        assert server.stats.exceptions[6] == 2 and server.stats.exceptions[4] == 1
    finally:
        client.close()


async def test_fault_delay(servers: dict[str, ModbusSimServer]) -> None:
    server = servers["gw-power"]
    server.set_comm_fault(4, "delay", seconds=0.25)
    slow, fast = await connect(server.port), await connect(server.port)
    try:
        started = time.perf_counter()
        slow_read = asyncio.create_task(_read_power(slow))
        await asyncio.sleep(0.02)
        assert (await _read_ups(fast)).registers == [2503]
        assert time.perf_counter() - started < 0.2  # another connection is not held up
        assert (await slow_read).registers == [0x444B, 0x2000]
        assert time.perf_counter() - started >= 0.25
    finally:
        slow.close()
        fast.close()


def test_unknown_fault_kind_is_an_error(site: Site) -> None:
    gateway = site.devices["M-UTIL-A"].gateway
    assert isinstance(gateway, ModbusGateway)
    with pytest.raises(ValueError, match="unknown fault kind 'slow'"):
        ModbusSimServer(gateway, []).set_comm_fault(1, "slow")


# ---------------------------------------------------------------- (f) update cost


def test_update_of_the_reference_site_is_cheap(site: Site) -> None:
    modbus = [d for d in site.devices.values() if d.protocol == "modbus"]
    snapshot = Snapshot(0.0, {})
    by_profile = {site.devices[k].profile_id: v for k, v in SAMPLES.items()}
    for i, d in enumerate(modbus):
        snapshot.devices[d.id] = DeviceReading(
            {k: v * (1 + i % 7 / 100) for k, v in by_profile[d.profile_id].items()})
    servers = [ModbusSimServer(g, [d for d in modbus if d.gateway.id == g.id])
               for g in site.config.gateways if isinstance(g, ModbusGateway)]
    assert sum(len(s.unit_ids) for s in servers) == len(modbus) == 242
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        for server in servers:
            server.update(snapshot)
    per_update_ms = (time.perf_counter() - started) / rounds * 1000
    print(f"\nupdate of {len(modbus)} Modbus devices: {per_update_ms:.2f} ms per 1 Hz tick")
    assert per_update_ms < 100  # generous: 10 % of the tick on a slow shared machine


# ---------------------------------------------------------------- docs


def test_device_docs_cover_every_modbus_profile(site: Site) -> None:
    from dcim.simulators.docgen import modbus_device_docs

    text = modbus_device_docs(site)
    for profile_id in {d.profile_id for d in site.devices.values() if d.protocol == "modbus"}:
        assert f"### `{profile_id}`" in text
    assert "mbpoll -m tcp -a 4 -0 -r 3009 -c 1 -t 4:float -B -p 15020 -1 127.0.0.1" in text
    assert "| gw-racks-h1-1 | 127.0.0.1:15022 | 1-100 |" in text
    assert "| CDAB | 0x0102 | 0xCDEF 0x89AB | 0x0000 0x3F80 |" in text


def test_docs_devices_md_is_generated_from_the_code() -> None:
    """docs/devices.md cannot drift from the profiles and servers: regenerate it to update."""
    from dcim.simulators.docgen import device_docs

    root = Path(__file__).resolve().parents[1]
    committed = (root / "docs" / "devices.md").read_text(encoding="utf-8")
    generated = device_docs(load_site(root / "config" / "cyberport5.yaml"))
    assert committed == generated, (
        "docs/devices.md is stale: run python -m dcim.simulators.docgen "
        "config/cyberport5.yaml docs/devices.md")
