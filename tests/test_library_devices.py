"""Each Modbus library profile against a device laid out from the published map, not from
the profile: the registers below are written from /work/shared/reference/domain.md and
sunspec-model-offsets.txt, served by a small Modbus TCP server, and polled by the real
ModbusCollector through a site file that names the profile by `library:`."""

from __future__ import annotations

import asyncio
import copy
import math
import struct
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from dcim.collectors.discover_modbus import TcpTransport, build_draft, scan
from dcim.collectors.modbus import ModbusCollector
from dcim.config.site import ModbusGateway
from dcim.library import library
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.simulators.snapshot import DeviceReading, Snapshot
from dcim.site import site_from_dict
from dcim.storage.base import Quality, Sample

T_BOUNDARY_S = 1_782_900_000.0
SUNSPEC_MODEL = 40070  # 'SunS' at 40000, model 1 at 40002 (ID, L, 66 registers)


class ListSink:
    """Collects samples in memory."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)


@dataclass
class Device:
    """Holding registers of one device as the document lays them out, and the values a
    poll must give (None: the device says 'not available')."""

    holding: dict[int, int] = field(default_factory=dict)
    expected: dict[str, float | None] = field(default_factory=dict)

    def words(self, address: int, data: bytes) -> None:
        for i in range(0, len(data), 2):
            self.holding[address + i // 2] = int.from_bytes(data[i:i + 2], "big")

    def put(self, name: str | None, address: int, fmt: str, raw: float,
            expected: float | None = None) -> None:
        """raw packed big-endian (ABCD) at address; expected in the profile's unit."""
        self.words(address, struct.pack(">" + fmt, raw))
        if name is not None:
            self.expected[name] = expected


# ---------------------------------------------------------------- devices from the documents


def pm5560() -> Device:
    """domain.md, Schneider PM5xxx: float32 ABCD, 0-based (manual number - 1); int64 Wh."""
    d = Device()
    f = "f"
    for name, address, value in [
        ("current_a_a", 2999, 101.5), ("current_b_a", 3001, 99.25), ("current_c_a", 3003, 100.0),
        ("current_avg_a", 3009, 100.25),
        ("voltage_ab_v", 3019, 400.5), ("voltage_bc_v", 3021, 399.5), ("voltage_ca_v", 3023, 401.0),
        ("voltage_ll_avg_v", 3025, 400.25),
        ("voltage_an_v", 3027, 231.25), ("voltage_bn_v", 3029, 230.5), ("voltage_cn_v", 3031, 229.75),
        ("voltage_ln_avg_v", 3035, 230.5),
        ("power_a_kw", 3053, 22.5), ("power_b_kw", 3055, 21.75), ("power_c_kw", 3057, 23.0),
        ("power_kw", 3059, 67.25), ("reactive_power_kvar", 3067, -12.5),
        ("apparent_power_kva", 3075, 70.5), ("power_factor_raw", 3083, 0.953125),
        ("frequency_hz", 3109, 50.0078125),
    ]:
        d.put(name, address, f, value, value)
    d.put("energy_kwh", 3203, "q", 123_456_789_012, 123_456_789.012)  # Wh -> kWh
    d.put("energy_received_kwh", 3207, "q", 5_000_000_001, 5_000_000.001)
    return d


def apc_smart_ups() -> Device:
    """domain.md, APC Smart-UPS: value = raw / 2^n; two-register values high word first."""
    d = Device()
    d.put("transfer_cause", 2, "H", 8, 8)
    d.put("battery_runtime_s", 128, "I", 70_000, 70_000)  # > 65535: the word order shows
    d.put("battery_charge_pct", 130, "H", 47_360, 92.5)  # / 2^9
    d.put("battery_voltage_v", 131, "H", 1_744, 54.5)  # / 2^5
    d.put("battery_temp_c", 135, "h", -640, -5.0)  # / 2^7, signed
    d.put("load_pct", 136, "H", 11_520, 45.0)  # / 2^8
    d.put("output_current_a", 140, "H", 520, 16.25)  # / 2^5
    d.put("output_voltage_v", 142, "H", 14_720, 230.0)  # / 2^6
    d.put("output_frequency_hz", 144, "H", 6_400, 50.0)  # / 2^7
    d.put("output_energy_kwh", 145, "I", 1_234_567, 1_234.567)  # Wh
    d.put("input_voltage_v", 151, "H", 0xFFFF, None)  # 0xFFFF = not available
    d.put("efficiency_pct", 154, "h", 12_160, 95.0)  # / 2^7
    return d


def _sunspec_chain(d: Device, model_id: int, length: int, fill: int) -> None:
    """'SunS', an empty common model, the meter model filled with `fill`, the end marker."""
    d.words(40000, b"SunS")
    d.holding.update({40002: 1, 40003: 66, **{40004 + i: 0 for i in range(66)}})
    d.holding.update({SUNSPEC_MODEL: model_id, SUNSPEC_MODEL + 1: length})
    d.holding.update({SUNSPEC_MODEL + 2 + i: fill for i in range(length)})
    d.holding.update({SUNSPEC_MODEL + 2 + length: 0xFFFF, SUNSPEC_MODEL + 3 + length: 0})


def sunspec_203() -> Device:
    """sunspec-model-offsets.txt, model 203: int16 x 10^SF, acc32 Wh; offsets from the ID."""
    d = Device()
    _sunspec_chain(d, 203, 105, 0x8000)  # every register 'not implemented' until written
    for i in range(38, 104):
        d.holding[SUNSPEC_MODEL + i] = 0  # acc32 'not implemented' is 0

    def at(offset: int) -> int:
        return SUNSPEC_MODEL + offset

    d.put(None, at(6), "h", -2)  # A_SF
    for name, offset, raw in [("current_a", 2, 30_075), ("current_a_a", 3, 10_050),
                              ("current_b_a", 4, 9_975), ("current_c_a", 5, 10_050)]:
        d.put(name, at(offset), "h", raw, raw / 100)
    d.put(None, at(15), "h", -1)  # V_SF
    for name, offset, raw in [("voltage_ln_v", 7, 2_305), ("voltage_an_v", 8, 2_310),
                              ("voltage_bn_v", 9, 2_300), ("voltage_cn_v", 10, 2_305),
                              ("voltage_ll_v", 11, 3_992), ("voltage_ab_v", 12, 3_995),
                              ("voltage_bc_v", 13, 3_990), ("voltage_ca_v", 14, 3_991)]:
        d.put(name, at(offset), "h", raw, raw / 10)
    d.put(None, at(17), "h", -2)  # Hz_SF
    d.put("frequency_hz", at(16), "h", 4_998, 49.98)
    d.put(None, at(22), "h", 1)  # W_SF: tens of watts
    for name, offset, raw in [("power_kw", 18, 6_725), ("power_a_kw", 19, 2_250),
                              ("power_b_kw", 20, 2_175), ("power_c_kw", 21, -2_300)]:
        d.put(name, at(offset), "h", raw, raw * 10 / 1000)  # W -> kW
    d.put(None, at(27), "h", 1)  # VA_SF
    d.put("apparent_power_kva", at(23), "h", 7_050, 70.5)
    d.put(None, at(32), "h", 0)  # VAR_SF
    d.put("reactive_power_kvar", at(28), "h", -12_500, -12.5)
    d.put(None, at(37), "h", -1)  # PF_SF
    d.put("power_factor", at(33), "h", 953, 0.953)  # percent x 10^-1 -> ratio
    d.put(None, at(54), "h", 2)  # TotWh_SF
    d.put("energy_exported_kwh", at(38), "I", 12_345, 1_234.5)  # Wh x 10^2 -> kWh
    d.put("energy_kwh", at(46), "I", 4_000_000_000, 400_000_000.0)  # near the acc32 top
    return d


def sunspec_213() -> Device:
    """sunspec-model-offsets.txt, model 213: float32 ABCD, NaN = not implemented."""
    d = Device()
    nan = struct.unpack(">HH", struct.pack(">f", math.nan))
    _sunspec_chain(d, 213, 124, 0)
    for i in range(2, 126, 2):
        d.holding[SUNSPEC_MODEL + i], d.holding[SUNSPEC_MODEL + i + 1] = nan
    for name, offset, value, expected in [
        ("current_a", 2, 300.75, 300.75), ("current_a_a", 4, 100.5, 100.5),
        ("current_b_a", 6, 99.75, 99.75), ("current_c_a", 8, 100.5, 100.5),
        ("voltage_ln_v", 10, 230.5, 230.5), ("voltage_an_v", 12, 231.0, 231.0),
        ("voltage_bn_v", 14, 230.0, 230.0), ("voltage_cn_v", 16, 230.5, 230.5),
        ("voltage_ll_v", 18, 399.25, 399.25), ("voltage_ab_v", 20, 399.5, 399.5),
        ("voltage_bc_v", 22, 399.0, 399.0), ("voltage_ca_v", 24, 399.25, 399.25),
        ("frequency_hz", 26, 49.984375, 49.984375),
        ("power_kw", 28, 67_250.0, 67.25), ("power_a_kw", 30, 22_500.0, 22.5),
        ("power_b_kw", 32, 21_750.0, 21.75), ("power_c_kw", 34, 23_000.0, 23.0),
        ("apparent_power_kva", 36, 70_500.0, 70.5), ("reactive_power_kvar", 44, -12_500.0, -12.5),
        ("power_factor", 52, 0.953125, 0.953125),
        ("energy_exported_kwh", 60, 1_234_500.0, 1_234.5),
        ("energy_kwh", 68, 98_765_432.0, 98_765.432),
    ]:
        d.put(name, SUNSPEC_MODEL + offset, "f", value, expected)
    return d


DEVICES = {"schneider-pm5560": pm5560, "apc-smart-ups": apc_smart_ups,
           "sunspec-meter-203": sunspec_203, "sunspec-meter-213": sunspec_213}


# ---------------------------------------------------------------- a device server


@asynccontextmanager
async def serve(device: Device, unit_id: int = 1) -> AsyncIterator[int]:
    """A Modbus TCP server of one unit answering FC 3 from the map (exception 2 over holes);
    yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                address, count = struct.unpack_from(">HH", pdu, 1)
                span = range(address, address + count)
                if unit != unit_id:
                    answer = bytes((fc | 0x80, 0x0B))
                elif fc != 3:
                    answer = bytes((fc | 0x80, 1))
                elif any(a not in device.holding for a in span):
                    answer = bytes((fc | 0x80, 2))
                else:
                    answer = bytes((fc, 2 * count)) + struct.pack(
                        f">{count}H", *(device.holding[a] for a in span))
                writer.write(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------- the checks


def test_every_modbus_library_profile_has_a_device_from_its_document() -> None:
    modbus = {n for n, e in library().items() if e.profile["protocol"] == "modbus"}
    assert modbus == set(DEVICES)


@pytest.mark.parametrize("name", sorted(DEVICES))
def test_the_device_covers_every_point_of_the_profile(name: str) -> None:
    """Every value point of the library profile is checked by the poll test below."""
    points = {p["name"] for p in library()[name].profile["points"] if p.get("type") != "sunssf"}
    assert points == set(DEVICES[name]().expected)


async def _poll(device: Device, profile: dict[str, Any]) -> dict[str, Sample]:
    """One poll by the real collector of a site whose profile entry is `profile`."""
    async with serve(device) as port:
        return await _poll_port(port, profile)


async def _poll_port(port: int, profile: dict[str, Any]) -> dict[str, Sample]:
    """One poll of unit 1 at 127.0.0.1:port through a site whose profile entry is `profile`."""
    site = site_from_dict({
        "site": {"id": "lib", "name": "library check"},
        "gateways": [{"id": "gw", "protocol": "modbus_tcp", "host": "127.0.0.1",
                      "port": port, "timeout_s": 2.0}],
        "profiles": {"dev": profile},
        "devices": [{"id": "D1", "profile": "dev", "gateway": "gw", "unit_id": 1}],
    })
    gateway = site.config.gateways[0]
    assert isinstance(gateway, ModbusGateway)
    sink = ListSink()
    collector = ModbusCollector(gateway, list(site.devices.values()), sink)
    try:
        await collector.poll(collector._devices["D1"], T_BOUNDARY_S)
    finally:
        await collector.close()
    return {s.series.point: s for s in sink.samples}


def _matches(got: dict[str, Sample], point: str, expected: float, rel: float = 1e-9) -> bool:
    sample = got.get(point)
    return (sample is not None and sample.quality is Quality.GOOD
            and sample.value == pytest.approx(expected, rel=rel, abs=1e-9))


async def test_the_manuals_one_based_numbers_would_not_pass() -> None:
    """The check can fail: the PM5560 map shifted to the manual's 1-based numbers misreads."""
    device = pm5560()
    shifted = copy.deepcopy(library()["schneider-pm5560"].profile)
    for point in shifted["points"]:
        point["address"] += 1
    got = await _poll(device, shifted)
    wrong = [p for p, v in device.expected.items() if v is not None and not _matches(got, p, v)]
    assert sorted(wrong) == sorted(device.expected)


@pytest.mark.parametrize("name", sorted(DEVICES))
async def test_each_point_decodes_to_the_value_served(name: str) -> None:
    device = DEVICES[name]()
    got = await _poll(device, {"library": name})
    for point, expected in device.expected.items():
        sample = got.get(point)
        if expected is None:
            assert sample is None or sample.quality is not Quality.GOOD, point
            continue
        assert sample is not None, f"{point}: no sample"
        assert sample.quality is Quality.GOOD, point
        assert sample.value == pytest.approx(expected, rel=1e-9, abs=1e-9), point


@pytest.mark.parametrize(("name", "model_id"), [("sunspec-meter-203", 203),
                                                ("sunspec-meter-213", 213)])
async def test_discovery_finds_the_sunspec_device_and_drafts_the_library_points(
        name: str, model_id: int) -> None:
    """The device is a conforming SunSpec chain (discovery walks it), and what discovery
    drafts for it is a subset of the library profile: one truth for SunSpec meter offsets."""
    async with serve(DEVICES[name]()) as port:
        transport = TcpTransport("127.0.0.1", port, 2.0)
        try:
            result = await scan(transport, [1], host="127.0.0.1", port=port)
        finally:
            await transport.close()
    (unit,) = result.units
    assert (unit.sunspec_base, unit.model_ids) == (40000, [1, model_id])
    assert unit.models[1].address == SUNSPEC_MODEL
    (drafted,) = build_draft(result).data["profiles"].values()
    mine = {p["name"]: p for p in library()[name].profile["points"]}
    for point in drafted["points"]:
        assert {k: v for k, v in mine[point["name"]].items() if k != "unit"} == point


@pytest.mark.parametrize("name", sorted(DEVICES))
async def test_the_project_simulator_serves_the_library_profile(name: str) -> None:
    """`dcim sim`/`dcim demo` serve library profiles too: the values of the document's device,
    encoded by the project's simulator from the profile, poll back within resolution, and a
    SunSpec chain sits where the document puts it."""
    doc = DEVICES[name]()
    placeholder = site_from_dict({
        "site": {"id": "lib", "name": "library check"},
        "gateways": [{"id": "gw", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": 1}],
        "profiles": {"dev": {"library": name}},
        "devices": [{"id": "D1", "profile": "dev", "gateway": "gw", "unit_id": 1}]})
    gateway = placeholder.config.gateways[0]
    assert isinstance(gateway, ModbusGateway)
    values = {k: v for k, v in doc.expected.items() if v is not None}
    server = ModbusSimServer(gateway, list(placeholder.devices.values()), host="127.0.0.1",
                             port=0)
    async with server:
        server.update(Snapshot(T_BOUNDARY_S, {"D1": DeviceReading(values)}))
        image = server.encoder(1).image
        # the simulator builds the SunSpec chain for integer models (201-204) only; a float
        # model (213) is served as its points without the 'SunS' header
        if name == "sunspec-meter-203":
            assert image.registers("holding", 40000, 2) == [doc.holding[40000],
                                                            doc.holding[40001]]
            assert image.registers("holding", SUNSPEC_MODEL, 1) == [doc.holding[SUNSPEC_MODEL]]
        # nor does it map the rest of a float model's block: reads must not span holes
        entry: dict[str, Any] = {"library": name}
        if name == "sunspec-meter-213":
            entry["max_gap"] = 0
        got = await _poll_port(server.port, entry)
    for point, expected in doc.expected.items():
        if expected is None:
            assert point not in got or got[point].quality is not Quality.GOOD, point
        else:
            assert _matches(got, point, expected, rel=1e-4), point
