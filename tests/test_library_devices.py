"""Each Modbus library profile against a device laid out from the published map, not from
the profile: the registers (tests/published_devices.py) are written from
/work/shared/reference/domain.md and sunspec-model-offsets.txt, served by a small Modbus TCP
server, and polled by the real ModbusCollector through a site file that names the profile
by `library:`."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import pytest

from dcim.collectors.discover_modbus import TcpTransport, scan
from dcim.collectors.discover_modbus_draft import build_draft, sunspec_meter_points
from dcim.collectors.modbus import ModbusCollector
from dcim.config.site import ModbusGateway
from dcim.library import library
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.simulators.snapshot import DeviceReading, Snapshot
from dcim.site import site_from_dict
from dcim.storage.base import Quality, Sample
from tests.published_devices import DEVICES, SUNSPEC_MODEL, Device, pm5560, serve

T_BOUNDARY_S = 1_782_900_000.0


class ListSink:
    """Collects samples in memory."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)


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
    """The device is a conforming SunSpec chain (discovery walks it), discovery drafts the
    library profile for it, and the points it would draft from the walk are a subset of the
    library profile: one truth for SunSpec meter offsets."""
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
    assert drafted == {"library": name}
    mine = {p["name"]: p for p in library()[name].profile["points"]}
    for point in sunspec_meter_points(unit.models[1]):
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


@pytest.mark.parametrize("change", ["modicon_number_minus_30000", "holding_table"])
async def test_a_misread_of_the_liebert_table_would_not_pass(change: str) -> None:
    """The check can fail for an input-register map too: the HPC profile read one register
    late (register 30491 taken as address 491) or from the holding table misreads every
    value point."""
    device = DEVICES["liebert-hpc-icom"]()
    wrong_map = copy.deepcopy(library()["liebert-hpc-icom"].profile)
    for point in wrong_map["points"]:
        if change == "holding_table":
            point["table"] = "holding"
        else:
            point["address"] += 1
    got = await _poll(device, wrong_map)
    wrong = [p for p, v in device.expected.items() if v is not None and not _matches(got, p, v)]
    assert sorted(wrong) == sorted(device.expected)
