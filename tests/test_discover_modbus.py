"""Modbus discovery: frames and answers (pure), scans of real servers on loopback, the draft.

Servers: the project's gateway simulator (SunSpec meters and register-map devices, no
43/14) and a pymodbus server written here that offers 43/14 and a SunSpec common model
(1) plus a float meter (213) laid out per the published SunSpec offsets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from dcim.cli import main
from dcim.collectors.discover_modbus import (
    DeviceIdPage, ScanResult, SunspecModel, TcpTransport, UnitInfo, device_id_pdu,
    parse_common_model, parse_device_id, parse_registers, parse_units, read_pdu, scan,
)
from dcim.collectors.discover_modbus_draft import build_draft, render_draft, sunspec_meter_points
from dcim.config.site import ModbusGateway
from dcim.library import identifiers
from dcim.library.identify import Identify, SunspecRule, recognise
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.site import load_site, site_from_dict

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")


def text_registers(text: str, count: int) -> list[int]:
    """A SunSpec string field: ASCII, NUL padded, two characters per register."""
    raw = text.encode().ljust(2 * count, b"\0")
    return list(struct.unpack(f">{count}H", raw))


def minimal_site(draft: dict[str, Any]) -> dict[str, Any]:
    """The draft inside the smallest site that validates: identity, gateways, profiles and
    devices, no plant (a monitoring-only site, config/examples/monitoring-only.yaml)."""
    return {"site": {"id": "probe", "name": "Discovery test"},
            "gateways": draft["gateways"], "profiles": draft["profiles"],
            "devices": draft.get("devices") or []}


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(("text", "units"), [
    ("1-3", [1, 2, 3]), ("5", [5]), ("1-2,7,2-3", [1, 2, 3, 7]), ("247", [247]),
], ids=["range", "one", "mixed-overlap", "last"])
def test_parse_units(text: str, units: list[int]) -> None:
    assert parse_units(text) == units


@pytest.mark.parametrize("text", ["0-3", "1-248", "5-2", "", "x"])
def test_parse_units_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_units(text)


def test_only_read_functions_can_be_built() -> None:
    assert read_pdu(3, 40000, 2) == bytes.fromhex("03 9c40 0002")
    assert read_pdu(4, 0, 125)[0] == 4
    assert device_id_pdu() == bytes.fromhex("2b 0e 01 00")
    for bad in [(6, 0, 1), (16, 0, 1), (3, 0, 126), (3, 65535, 2)]:
        with pytest.raises(ValueError):
            read_pdu(*bad)


@pytest.mark.parametrize(("pdu", "page"), [
    (bytes.fromhex("2b0e 01 01 00 00 03") + b"\x00\x04Acme" + b"\x01\x06AM-213"
     + b"\x02\x032.1", DeviceIdPage({0: "Acme", 1: "AM-213", 2: "2.1"}, False, 0)),
    (bytes.fromhex("2b0e 01 01 ff 02 01") + b"\x00\x04Acme",
     DeviceIdPage({0: "Acme"}, True, 2)),
], ids=["basic-complete", "more-follows"])
def test_parse_device_id(pdu: bytes, page: DeviceIdPage) -> None:
    assert parse_device_id(pdu) == page


@pytest.mark.parametrize("pdu", [
    bytes.fromhex("2b0e 01 01 00 00 01") + b"\x00\x09Acme",  # object cut short
    bytes.fromhex("0302 0001"),  # not 43/14
], ids=["cut-short", "wrong-function"])
def test_parse_device_id_refuses_malformed(pdu: bytes) -> None:
    with pytest.raises(ValueError):
        parse_device_id(pdu)


def test_parse_registers_and_common_model() -> None:
    assert parse_registers(bytes.fromhex("03 04 5375 6e53"), 2) == [0x5375, 0x6E53]
    with pytest.raises(ValueError):
        parse_registers(bytes.fromhex("03 04 5375"), 2)
    body = (text_registers("Acme", 16) + text_registers("AM-213", 16)
            + text_registers("", 8) + text_registers("2.1", 8) + text_registers("SN42", 16)
            + [3, 0x8000])
    assert parse_common_model(body) == {"manufacturer": "Acme", "model": "AM-213",
                                        "options": "", "version": "2.1", "serial": "SN42"}


@pytest.mark.parametrize(("model", "point", "expected"), [
    (SunspecModel(203, 40070, 105), "power_kw",
     {"address": 40088, "type": "int16", "scale_factor_point": "w_sf", "scale": 0.001}),
    (SunspecModel(203, 40070, 105), "w_sf", {"address": 40092, "type": "sunssf"}),
    (SunspecModel(203, 40070, 105), "energy_kwh", {"address": 40116, "type": "acc32"}),
    (SunspecModel(213, 40070, 124), "power_kw", {"address": 40098, "type": "float32"}),
    (SunspecModel(213, 40070, 124), "energy_kwh", {"address": 40138, "type": "float32"}),
], ids=["203-w", "203-w-sf", "203-wh-imp", "213-w", "213-wh-imp"])
def test_sunspec_meter_points(model: SunspecModel, point: str, expected: dict[str, Any]) -> None:
    points = {p["name"]: p for p in sunspec_meter_points(model)}
    assert expected.items() <= points[point].items()


def test_draft_groups_kinds_and_validates() -> None:
    sunspec = [UnitInfo(u, sunspec_base=40000, models=[SunspecModel(1, 40002, 66),
                                                       SunspecModel(203, 40070, 105)],
                        common={"manufacturer": "dcim", "model": "SunSpec 203 branch meter"})
               for u in (1, 2)]
    unknown = UnitInfo(9, answers={"holding 40000": "exception 2", "holding 0": "exception 2",
                                   "input 0": "ok"})
    result = ScanResult("10.0.0.5", 502, [*sunspec, unknown], 12, 0.3)
    draft = build_draft(result)
    assert [d["profile"] for d in draft.data["devices"]] == [
        "dcim-sunspec-203-branch-meter", "dcim-sunspec-203-branch-meter", "unknown"]
    assert draft.data["profiles"]["unknown"]["points"][0]["table"] == "input"
    text = render_draft(draft)
    assert "# TODO: fill in points" in text
    site = site_from_dict(minimal_site(yaml.safe_load(text)))
    assert {d.monitors for d in site.devices.values()} == {"site"}
    assert {d["monitors"] for d in build_draft(result, monitors="M-1").data["devices"]} == {"M-1"}


# ---------------------------------------------------------------- recognising library devices

SCHNEIDER = {"vendor": "Schneider Electric", "product_code": "METSEPM5560", "revision": "2.7"}
CHAIN_213 = [(1, 40002, 66), (213, 40070, 124)]


@pytest.mark.parametrize(("identity", "common", "models", "name"), [
    (SCHNEIDER, {}, [], "schneider-pm5560"),
    ({"vendor": "SCHNEIDER ELECTRIC", "model_name": "PM5560"}, {}, [], "schneider-pm5560"),
    ({"vendor": "Acme", "product_code": "METSEPM5560"}, {}, [], None),
    ({"vendor": "Schneider Electric", "product_code": "METSEPM3255"}, {}, [], None),
    ({}, {"manufacturer": "Acme"}, CHAIN_213, "sunspec-meter-213"),
    ({}, {}, [(1, 2, 66), (213, 70, 124)], None),
    ({}, {}, [(1, 40002, 66), (213, 40070, 60)], None),
    ({}, {}, [(1, 40002, 66), (203, 40070, 105)], "sunspec-meter-203"),
    ({"vendor": "Acme", "product_code": "AM-213"}, {}, CHAIN_213, "sunspec-meter-213"),
    ({}, {}, [(1, 40002, 66), (103, 40070, 50), (160, 40122, 48)], "sunspec-inverter-103"),
    ({}, {}, [(1, 40002, 66), (101, 40070, 50)], None),
], ids=["43/14", "43/14-model-name", "other-vendor", "other-product", "sunspec-213",
        "sunspec-base-0", "sunspec-short-model", "sunspec-203", "identity-and-sunspec",
        "sunspec-inverter-103", "sunspec-inverter-101"])
def test_recognise_library_devices(identity: dict[str, str], common: dict[str, str],
                                   models: list[tuple[int, int, int]], name: str | None) -> None:
    found = recognise(identity, common, models, identifiers())
    assert (found.name if found else None) == name
    if found is not None:
        assert found.reason


@pytest.mark.parametrize(("orders", "entry", "note"), [
    (None, {"library": "schneider-pm5560"}, None),
    (["ABCD"], {"library": "schneider-pm5560"}, "byte order ABCD, as the profile assumes"),
    (["CDAB"], {"library": "schneider-pm5560", "order": "CDAB"}, "order: CDAB overrides"),
    (["ABCD", "CDAB"], {"library": "schneider-pm5560"}, "byte order ABCD, as the profile"),
    (["BADC", "DCBA"], {"library": "schneider-pm5560"}, "TODO: byte order not told apart"),
    ([], {"library": "schneider-pm5560"}, "TODO: no byte order gives a plausible value"),
], ids=["unchecked", "as-profile", "swapped", "ambiguous-with-profile", "ambiguous", "none"])
def test_the_draft_of_a_recognised_device(orders: list[str] | None, entry: dict[str, str],
                                          note: str | None) -> None:
    info = UnitInfo(1, identity=SCHNEIDER, orders=orders, order_seen="register 3109 reads ...",
                    library=recognise(SCHNEIDER, {}, [], identifiers()))
    draft = build_draft(ScanResult("10.0.0.5", 502, [info], 6, 0.1))
    ((pid, profile),) = draft.data["profiles"].items()
    assert profile == entry
    assert pid == "schneider-pm5560" + ("-cdab" if "order" in entry else "")
    text = render_draft(draft)
    assert "device_type meter and its 22 points come from the library" in text
    assert note is None or note in text
    site = site_from_dict(minimal_site(yaml.safe_load(text)))
    assert site.devices["gw1-u1"].profile.device_type == "meter"


def test_units_of_one_model_in_two_byte_orders_get_two_profiles() -> None:
    found = recognise(SCHNEIDER, {}, [], identifiers())
    units = [UnitInfo(u, identity=SCHNEIDER, library=found, orders=[order])
             for u, order in [(1, "ABCD"), (2, "CDAB"), (3, "ABCD")]]
    draft = build_draft(ScanResult("10.0.0.5", 502, units, 18, 0.1))
    assert [d["profile"] for d in draft.data["devices"]] == [
        "schneider-pm5560", "schneider-pm5560-cdab", "schneider-pm5560"]


# ---------------------------------------------------------------- real servers


class Recording:
    """A transport that records every function code sent (discovery must only read)."""

    def __init__(self, inner: TcpTransport) -> None:
        self.inner = inner
        self.functions: set[int] = set()

    async def request(self, unit: int, pdu: bytes) -> bytes | None:
        self.functions.add(pdu[0])
        return await self.inner.request(unit, pdu)


@pytest_asyncio.fixture
async def project_gateway() -> AsyncIterator[ModbusSimServer]:
    """The project's simulator: 2 SunSpec 203 meters (units 1, 2), UPS and PM5560 (5, 6)."""
    devices = SITE.devices
    chosen = [dataclasses.replace(devices["PDU-A-H1-1"], unit_id=1),
              dataclasses.replace(devices["PDU-A-H1-2"], unit_id=2),
              dataclasses.replace(devices["UPS-A1"], unit_id=5),
              dataclasses.replace(devices["M-UTIL-A"], unit_id=6)]
    gateway = ModbusGateway(id="gw", protocol="modbus_tcp", host="127.0.0.1", port=502)
    server = ModbusSimServer(gateway, chosen, host="127.0.0.1", port=0)
    await server.start()
    yield server
    await server.stop()


async def test_scan_of_the_project_simulator_finds_units_and_kinds(
        project_gateway: ModbusSimServer) -> None:
    transport = TcpTransport("127.0.0.1", project_gateway.port, 1.0)
    recording = Recording(transport)
    try:
        result = await scan(recording, parse_units("1-8"), host="127.0.0.1",
                            port=project_gateway.port)
    finally:
        await transport.close()
    assert [u.unit_id for u in result.units] == [1, 2, 5, 6]
    meter = result.units[0]
    assert meter.sunspec_base == 40000 and meter.model_ids == [1, 203]
    assert meter.common["manufacturer"] == "dcim"
    assert meter.common["model"] == "SunSpec 203 branch meter"
    assert result.units[2].sunspec_base is None and not result.units[2].identity
    assert recording.functions <= {3, 4, 0x2B}
    assert project_gateway.stats.writes == 0 and result.stopped is None


async def test_cli_draft_of_the_project_simulator_validates(
        project_gateway: ModbusSimServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    draft = tmp_path / "draft.yaml"
    code = await asyncio.to_thread(main, ["discover", "modbus", f"127.0.0.1:{project_gateway.port}",
                                          "--units", "1-8", "-o", str(draft)])
    assert code == 0
    data = yaml.safe_load(draft.read_text())
    kinds = {d["unit_id"]: d["profile"] for d in data["devices"]}
    assert kinds[1] == kinds[2] != kinds[5]
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(minimal_site(data), sort_keys=False))
    capsys.readouterr()
    assert main(["validate", str(site_file)]) == 0, capsys.readouterr().err


def sunspec_213_words(unit: int) -> list[int]:
    """'SunS', common model 1 (66), float meter 213 (124) with W = 1500.0, end 0xFFFF."""
    common = (text_registers("Acme", 16) + text_registers("AM-213", 16)
              + text_registers("", 8) + text_registers("2.1", 8) + text_registers("SN42", 16)
              + [unit, 0x8000])
    meter = [0] * 124
    meter[26:28] = struct.unpack(">2H", struct.pack(">f", 1500.0))  # W at offset 28 (-2)
    return [0x5375, 0x6E53, 1, 66, *common, 213, 124, *meter, 0xFFFF, 0]


@pytest_asyncio.fixture(params=[40000, 0], ids=["base-40000", "base-0"])
async def identified_device(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, int]]:
    """A pymodbus server: unit 3 offers 43/14 and SunSpec 1 + 213 at the base (40000 or 0);
    others absent. Yields (port, base)."""
    words = sunspec_213_words(3)
    base = int(request.param)
    device = SimDevice(id=3, simdata=[SimData(address=base, values=words,
                                              datatype=DataType.REGISTERS)])
    identity = ModbusDeviceIdentification(info_name={
        "VendorName": "Acme", "ProductCode": "AM-213", "MajorMinorRevision": "2.1"})
    server = ModbusTcpServer(device, identity=identity, address=("127.0.0.1", 0))
    task = asyncio.create_task(server.serve_forever())
    for _ in range(100):
        if isinstance(server.transport, asyncio.Server) and server.transport.sockets:
            break
        await asyncio.sleep(0.02)
    listener = server.transport  # pymodbus keeps the asyncio.Server of a listener here
    assert isinstance(listener, asyncio.Server), "the pymodbus server did not start listening"
    port = int(listener.sockets[0].getsockname()[1])
    yield port, base
    await server.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_scan_reads_device_identification_and_walks_sunspec(
        identified_device: tuple[int, int]) -> None:
    """At 40000 the walk puts model 213 where the library profile assumes it: the draft names
    the library; at base 0 the library's addresses do not fit, so the walked points are
    drafted (SunSpec offsets from the model's ID register at 70)."""
    port, base = identified_device
    transport = TcpTransport("127.0.0.1", port, 1.0)
    recording = Recording(transport)
    try:
        result = await scan(recording, [1, 2, 3, 4], host="127.0.0.1", port=port)
    finally:
        await transport.close()
    assert [u.unit_id for u in result.units] == [3]
    unit = result.units[0]
    assert unit.identity == {"vendor": "Acme", "product_code": "AM-213", "revision": "2.1"}
    assert unit.model_ids == [1, 213] and unit.models[1].address == base + 70
    assert unit.common["serial"] == "SN42"
    assert recording.functions <= {3, 4, 0x2B}
    draft = build_draft(result)
    text = render_draft(draft)
    if base == 40000:
        assert draft.data["profiles"] == {"sunspec-meter-213": {"library": "sunspec-meter-213"}}
        assert "SunSpec model 213 (length 124) at 40070" in text
    else:
        profile = draft.data["profiles"]["acme-am-213"]
        assert {p["name"]: p["address"] for p in profile["points"]}["power_kw"] == 98
        assert "library" not in profile
    site_from_dict(minimal_site(yaml.safe_load(text)))


# ---------------------------------------------------------------- bounds


@pytest_asyncio.fixture
async def silent_gateway() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_a_gateway_that_answers_nothing_is_left_early(silent_gateway: int) -> None:
    transport = TcpTransport("127.0.0.1", silent_gateway, 0.05)
    try:
        result = await scan(transport, parse_units("1-247"), silent_limit=3)
    finally:
        await transport.close()
    assert result.units == [] and result.requests == 3
    assert result.stopped is not None and "no answer" in result.stopped


@pytest.mark.parametrize(("limits", "reason"), [
    ({"max_requests": 5}, "request budget"), ({"budget_s": 0.0}, "time budget"),
], ids=["requests", "time"])
async def test_scan_stops_at_its_budgets(project_gateway: ModbusSimServer,
                                         limits: dict[str, Any], reason: str) -> None:
    transport = TcpTransport("127.0.0.1", project_gateway.port, 1.0)
    try:
        result = await scan(transport, parse_units("1-8"), **limits)
    finally:
        await transport.close()
    assert result.requests <= limits.get("max_requests", 0)
    assert result.stopped is not None and reason in result.stopped


def test_cli_says_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: refused now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["discover", "modbus", f"127.0.0.1:{port}", "--units", "1-2"]) == 1
    assert "cannot connect" in capsys.readouterr().err


@pytest.mark.parametrize(("common", "matches"), [
    ({"manufacturer": "Acme Metering", "model": "AM-213"}, True),
    ({"manufacturer": "Acme Metering", "model": "XY-1"}, False),
    ({"manufacturer": "Other", "model": "AM-213"}, False),
    ({}, False),
], ids=["both", "other-model", "other-maker", "no-common-model"])
def test_a_sunspec_rule_may_name_the_maker_and_model(common: dict[str, str],
                                                     matches: bool) -> None:
    rule = Identify(sunspec=SunspecRule(model=213, address=40070, manufacturer="^acme",
                                        common_model=r"AM-2\d\d"))
    found = recognise({}, common, CHAIN_213, [("acme-am-213", rule)])
    assert (found is not None) == matches
