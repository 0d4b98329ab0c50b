"""Per-read failures: a read refused with an exception marks its points bad, not the device.

Against the project's Modbus simulator, which answers exception 2 to any read that is not
entirely inside one mapped block (a read coalesced over an unmapped hole, as a Schneider
PM5xxx-style meter does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import pytest_asyncio

from dcim.collectors.base import DeviceStatus
from dcim.collectors.modbus import ModbusCollector, _read_slots
from dcim.collectors.modbus_codec import plan_reads
from dcim.config.site import ModbusGateway, ModbusPoint
from dcim.simulators.runner import Simulator
from dcim.simulators.snapshot import DeviceReading
from dcim.site import Site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.storage.base import Quality, Sample

module_loop = pytest.mark.asyncio(loop_scope="module")
GAPPY = "M-GAP"
T = 4_000_000.0


class ListSink:
    """Collects samples in memory."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)


def _point(name: str, address: int, type_: str = "uint16", **kw: Any) -> dict[str, Any]:
    return {"name": name, "table": "holding", "address": address, "type": type_,
            "role": "power_kw", **kw}


def _gappy_site() -> Site:
    """The reference layout plus a meter whose profile reads over a hole (max_gap 8):
    a, b at 0-1 and c at 10 make one read 0+11 over the unmapped 2-9; d at 30 is its own."""
    data = generate_site(SiteSpec(site_id="t", name="t", racks=20, halls=1))
    data["profiles"]["gappy_meter"] = {
        "protocol": "modbus", "device_type": "meter", "max_gap": 8,
        "points": [_point("a", 0), _point("b", 1), _point("c", 10),
                   _point("d", 30, "float32")]}
    data["devices"].append({"id": GAPPY, "profile": "gappy_meter", "gateway": "gw-power",
                            "unit_id": 201, "monitors": "AUX"})
    return site_from_dict(data)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(_gappy_site(), seed=7, free_ports=True, autotick=False,
                          start_s=1_782_900_000.0, gateways={"gw-power"})
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def _collector(sim: Simulator, sink: ListSink) -> ModbusCollector:
    site = sim.client_site()
    gateway = next(g for g in site.config.gateways if g.id == "gw-power")
    assert isinstance(gateway, ModbusGateway)
    devices = [d for d in site.devices.values() if d.gateway.id == "gw-power"]
    return ModbusCollector(gateway, devices, sink)


@module_loop
async def test_a_refused_read_marks_its_points_bad_and_the_device_stays_up(
        sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    snapshot = await sim.tick()
    snapshot.devices[GAPPY] = DeviceReading({"a": 1.0, "b": 2.0, "c": 3.0, "d": 44.5})
    sim.modbus["gw-power"].update(snapshot)
    sink = ListSink()
    collector = _collector(sim, sink)
    assert collector.requests_per_poll(GAPPY) == 2
    caplog.set_level(logging.INFO, logger="dcim.collectors.modbus")
    try:
        for k in range(3):
            await collector._cycle_for(list(collector._devices.values()))(T + k)
    finally:
        await collector.close()
    mine = [s for s in sink.samples if s.series.device == GAPPY]
    assert len(mine) == 3 * 4
    for s in mine:
        if s.series.point == "d":
            assert (s.value, s.quality) == (44.5, Quality.GOOD)
        else:
            assert s.quality is Quality.BAD and math.isnan(s.value), s
    health = collector.health
    assert health[GAPPY].status is DeviceStatus.UP
    assert "exception 2" in health[GAPPY].last_error
    assert all(h.status is DeviceStatus.UP for h in health.values())
    others = [s for s in sink.samples if s.series.device != GAPPY]
    assert others and all(s.quality is Quality.GOOD for s in others)
    # named once (three polls), with the read, its points and the fix
    refused = [r for r in caplog.records if "read refused" in r.getMessage()]
    assert len(refused) == 1
    record = refused[0]
    assert record.levelno == logging.WARNING
    assert (record.function, record.address, record.count, record.points) == (  # type: ignore[attr-defined]
        3, 0, 11, ["a", "b", "c"])
    assert record.exception_code == 2  # type: ignore[attr-defined]
    assert "max_gap of profile gappy_meter (now 8)" in record.getMessage()
    assert not [r for r in caplog.records if "not answering" in r.getMessage()]


@module_loop
async def test_with_the_gap_split_every_point_is_good(sim: Simulator) -> None:
    """The suggested fix: max_gap 0 plans three reads, all answered."""
    site = sim.client_site()
    device = site.devices[GAPPY]
    points = [p for p in device.profile.points if isinstance(p, ModbusPoint)]
    assert [(r.address, r.count) for r in plan_reads(points, max_gap=0)] == [
        (0, 2), (10, 1), (30, 2)]


@pytest.mark.parametrize(("points", "expected"), [
    pytest.param([_point("a", 0), _point("b", 5)], ((0,), (1,)), id="one-point-each"),
    pytest.param([_point("sf", 0, "sunssf"), _point("w", 5, "int16", scale_factor_point="sf"),
                  _point("v", 6, "int16")],
                 ((0,), (0, 1)), id="scaled-by-a-refused-factor"),
], )
def test_read_slots_cover_points_and_what_their_scale_factors_scale(
        points: list[dict[str, Any]], expected: tuple[tuple[int, ...], ...]) -> None:
    """Stored order skips scale factors (sunssf); a refused factor takes its users with it."""
    parsed = [ModbusPoint.model_validate(p) for p in points]
    reads = plan_reads(parsed, max_gap=0)
    stored = [p.name for r in reads for pp in r.points for p in [pp.point] if p.type != "sunssf"]
    assert _read_slots(reads, stored) == expected
