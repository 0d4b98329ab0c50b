"""The Modbus collector against the simulators: values, timestamps, faults, read-only."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dcim.collectors.base import DeviceStatus
from dcim.collectors.modbus import ModbusCollector
from dcim.collectors.scheduler import Cadence, next_boundary
from dcim.site import Site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.site.model import SiteDevice
from dcim.config.site import ModbusGateway, ModbusPoint
from dcim.simulators.faults import FaultSpec
from dcim.simulators.runner import Simulator
from dcim.storage.base import Quality, Sample

ROOT = Path(__file__).resolve().parents[1]
module_loop = pytest.mark.asyncio(loop_scope="module")
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")


class ListSink:
    """Collects samples in memory."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)

    def latest(self) -> dict[tuple[str, str], Sample]:
        return {(s.series.device, s.series.point): s for s in self.samples}


def _all_types_site() -> Site:
    """The reference layout plus one device whose profile has every type in every order."""
    data = generate_site(SiteSpec(site_id="t", name="t", racks=20, halls=1))
    points: list[dict[str, Any]] = []
    address = 0
    for type_ in TYPES:
        for order in ORDERS:
            size = 1 if "16" in type_ else 2 if "32" in type_ else 4
            points.append({"name": f"{type_}_{order.lower()}", "table": "holding",
                           "address": address, "type": type_, "order": order, "scale": 0.5,
                           "role": "power_kw"})
            address += size
    points.append({"name": "status_bit", "table": "holding", "address": address, "type": "uint16",
                   "bit": 4, "role": "frequency_hz"})
    points.append({"name": "flag", "table": "coil", "address": 0, "type": "bool",
                   "role": "current_a", "writable": True})
    data["profiles"]["all_types"] = {"protocol": "modbus", "device_type": "meter", "points": points}
    data["devices"].append({"id": "M-ALL", "profile": "all_types", "gateway": "gw-power",
                            "unit_id": 200, "monitors": "AUX"})
    return site_from_dict(data)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[Simulator]:
    site = _all_types_site()
    simulator = Simulator(site, seed=5, free_ports=True, autotick=False,
                          start_s=1_782_900_000.0, gateways={g.id for g in site.config.gateways
                                                             if g.protocol == "modbus_tcp"})
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def _collector(sim: Simulator, gateway_id: str, sink: ListSink, **kw: Any) -> ModbusCollector:
    site = sim.client_site()
    gateway = next(g for g in site.config.gateways if g.id == gateway_id)
    assert isinstance(gateway, ModbusGateway)
    devices = [d for d in site.devices.values() if d.gateway.id == gateway_id]
    return ModbusCollector(gateway, devices, sink, **kw)


async def _poll_all(collector: ModbusCollector, t: float) -> None:
    await asyncio.gather(*(collector.poll(dev, t) for dev in collector._devices.values()))


@module_loop
async def test_every_reference_value_arrives_as_served(sim: Simulator) -> None:
    """Every point of every Modbus device equals the plant's value within its resolution."""
    snapshot = await sim.tick()
    for gateway_id in sim.modbus:
        sink = ListSink()
        collector = _collector(sim, gateway_id, sink)
        await _poll_all(collector, 1_000_000.0)
        await collector.close()
        latest = sink.latest()
        checked = 0
        for (device_id, point), sample in latest.items():
            served = snapshot.devices.get(device_id)
            if device_id == "M-ALL" or served is None or point not in served.values:
                continue
            device = sim.site.devices[device_id]
            spec = next(p for p in device.profile.points if p.name == point)
            assert isinstance(spec, ModbusPoint)
            resolution = abs(spec.scale) * (10 ** 3 if spec.scale_factor_point else 1) + 1e-6
            assert sample.quality is Quality.GOOD, (device_id, point)
            assert sample.value == pytest.approx(served.values[point], abs=resolution,
                                                 rel=1e-6), (device_id, point)
            checked += 1
        assert checked >= 10


@module_loop
@pytest.mark.parametrize("value", [-1234.5, 0.0, 77.5, 16000.5])
async def test_every_type_and_byte_order_round_trips(sim: Simulator, value: float) -> None:
    values = {f"{t}_{o.lower()}": value for t in TYPES for o in ORDERS}
    for name in list(values):
        if name.startswith("uint") and value < 0:
            values[name] = -value
        if name.startswith(("int16", "uint16")):
            values[name] = max(-16000.0, min(values[name], 16000.0))
    values.update(status_bit=1.0, flag=1.0)
    from dcim.simulators.snapshot import DeviceReading
    snapshot = await sim.tick()
    snapshot.devices["M-ALL"] = DeviceReading(values)
    sim.modbus["gw-power"].update(snapshot)
    sink = ListSink()
    collector = _collector(sim, "gw-power", sink)
    dev = collector._devices["M-ALL"]
    assert collector.requests_per_poll("M-ALL") == 2  # one register block, one coil
    await collector.poll(dev, 2_000_000.0)
    await collector.close()
    got = {s.series.point: s.value for s in sink.samples}
    for name, expected in values.items():
        assert got[name] == pytest.approx(expected, rel=1e-6), name


@module_loop
async def test_redundant_collectors_stamp_the_same_aligned_times(sim: Simulator) -> None:
    site = sim.client_site()
    devices = [dataclasses.replace(d, interval_s=0.5) for d in site.devices.values()
               if d.gateway.id == "gw-pdu"][:3]
    gateway = devices[0].gateway
    assert isinstance(gateway, ModbusGateway)
    sinks = [ListSink(), ListSink()]
    collectors = [ModbusCollector(gateway, devices, s) for s in sinks]
    for c in collectors:
        await c.start()
    await asyncio.sleep(1.8)
    for c in collectors:
        await c.close()
    times = [sorted({s.time_ns for s in sink.samples}) for sink in sinks]
    assert len(times[0]) >= 2
    common = set(times[0]) & set(times[1])
    assert len(common) >= 2
    assert all(t % 500_000_000 == 0 for t in common)  # on 0.5 s boundaries


@module_loop
@pytest.mark.parametrize("kind", ["timeout", "disconnect", "garbage", "exception"])
async def test_bad_device_is_marked_retried_and_others_unaffected(sim: Simulator, kind: str) -> None:
    fault = sim.inject(FaultSpec(kind=kind, target="RM-H1-A03", params={"code": 6}
                                 if kind == "exception" else {}))
    sink = ListSink()
    site = sim.client_site()
    gateway = next(g for g in site.config.gateways if g.id == "gw-racks-h1-1")
    assert isinstance(gateway, ModbusGateway)
    gateway = gateway.model_copy(update={"timeout_s": 0.3})
    devices: list[SiteDevice] = [d for d in site.devices.values() if d.gateway.id == gateway.id]
    collector = ModbusCollector(gateway, devices, sink, backoff_base_s=0.2, backoff_cap_s=0.4)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _poll_all(collector, 3_000_000.0)
        elapsed = loop.time() - started
        health = collector.health
        assert health["RM-H1-A03"].status is DeviceStatus.DOWN
        assert health["RM-H1-A03"].last_error
        assert sum(h.status is DeviceStatus.UP for h in health.values()) == len(devices) - 1
        assert elapsed < 1.5  # one timeout at most, not one per device
        bad = [s for s in sink.samples if s.series.device == "RM-H1-A03"]
        assert bad and all(s.quality is Quality.BAD for s in bad)
        # while in backoff the device is skipped (stale), then retried and recovers
        sim.clear(fault.id)
        await sim.tick()
        await _poll_all(collector, 3_000_001.0)
        for attempt in range(20):
            await asyncio.sleep(0.1)
            await collector.poll(collector._devices["RM-H1-A03"], 3_000_002.0 + attempt)
            if health["RM-H1-A03"].status is DeviceStatus.UP:
                break
        assert health["RM-H1-A03"].status is DeviceStatus.UP
        good = [s for s in sink.samples if s.series.device == "RM-H1-A03" and
                s.quality is Quality.GOOD]
        assert good and math.isfinite(good[-1].value)
    finally:
        await collector.close()
        if fault.id in sim.faults:
            sim.clear(fault.id)


@module_loop
async def test_an_unforeseen_error_stays_with_its_device(sim: Simulator) -> None:
    """An exception nobody listed (here a TypeError out of decoding) marks that device bad;
    the cycle finishes and the other devices' samples are stored."""
    sink = ListSink()
    site = sim.client_site()
    gateway = next(g for g in site.config.gateways if g.id == "gw-racks-h1-1")
    assert isinstance(gateway, ModbusGateway)
    devices = [d for d in site.devices.values() if d.gateway.id == gateway.id]
    collector = ModbusCollector(gateway, devices, sink)

    class Broken:
        def values(self, answers: object) -> list[float | None]:
            raise TypeError("decoder bug")
    collector._devices["RM-H1-A03"].decoder = Broken()  # type: ignore[assignment]
    try:
        await collector._cycle_for(list(collector._devices.values()))(3_000_100.0)
        health = collector.health
        assert health["RM-H1-A03"].status is DeviceStatus.DOWN
        assert "TypeError: decoder bug" in health["RM-H1-A03"].last_error
        assert sum(h.status is DeviceStatus.UP for h in health.values()) == len(devices) - 1
        assert {s.series.device for s in sink.samples if s.quality is Quality.GOOD} == \
            {d.id for d in devices} - {"RM-H1-A03"}
    finally:
        await collector.close()


@module_loop
async def test_read_only_unless_the_config_allows(sim: Simulator) -> None:
    sink = ListSink()
    collector = _collector(sim, "gw-power", sink)
    server = sim.modbus["gw-power"]
    writes_before = server.stats.writes
    with pytest.raises(PermissionError, match="read-only"):
        await collector.write_point("UPS-A1", "ups_mode", 2)
    assert server.stats.writes == writes_before  # nothing went on the wire
    await collector.write_point("M-ALL", "flag", 0)  # writable: true in its profile
    assert server.stats.writes == writes_before + 1
    await collector.close()


def test_next_boundary_is_epoch_aligned() -> None:
    assert next_boundary(100.2, 5) == 105
    assert next_boundary(105.0, 5) == 110
    assert next_boundary(7.9, 0.5) == 8.0


async def test_overrun_is_counted_and_cycles_do_not_pile_up() -> None:
    now = [1000.0]
    cycles: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    async def cycle(boundary: float) -> None:
        cycles.append(boundary)
        now[0] += 12.0 if len(cycles) == 2 else 0.5  # the second cycle takes 12 s

    cadence = Cadence(5.0, cycle, clock=lambda: now[0], sleep=fake_sleep)
    task = asyncio.create_task(cadence.run())
    while len(cycles) < 5:
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cycles[:2] == [1005.0, 1010.0]
    assert cycles[2] == 1025.0  # 1015 and 1020 skipped, not run late
    assert cadence.stats.overruns == 1 and cadence.stats.missed == 2


async def test_cadence_stops_when_a_cycle_swallows_the_cancel() -> None:
    """Python 3.11's wait_for (pymodbus uses it per request) can return a result and drop the
    CancelledError; the cadence must still stop instead of polling on after close()."""
    entered = asyncio.Event()
    cycles: list[float] = []

    async def cycle(boundary: float) -> None:
        cycles.append(boundary)
        entered.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # what 3.11's wait_for does when the answer and the cancel coincide

    cadence = Cadence(0.01, cycle)
    task = asyncio.create_task(cadence.run())
    await entered.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2.0)
    assert done, "the cadence kept running after cancel()"
    assert task.cancelled() and len(cycles) == 1


async def test_a_cycle_that_raises_is_counted_and_the_cadence_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    cycles: list[float] = []

    async def cycle(boundary: float) -> None:
        cycles.append(boundary)
        if len(cycles) == 1:
            raise TypeError("a bug")

    cadence = Cadence(0.01, cycle, name="gw/0.01s")
    task = asyncio.create_task(cadence.run())
    while len(cycles) < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cadence.stats.errors == 1 and cadence.stats.cycles >= 3
    assert any(r.message == "poll cycle failed" and r.exc_info for r in caplog.records)


async def test_rtu_line_is_a_configuration_of_the_same_collector() -> None:
    """RS-485 lines use pymodbus's serial client; only the transport differs (not run here)."""
    from pymodbus.client import AsyncModbusSerialClient

    from dcim.collectors.modbus import make_client

    data = generate_site(SiteSpec(site_id="t", name="t", racks=10, halls=1))
    data["gateways"].append({"id": "rs485-1", "protocol": "modbus_rtu",
                             "serial_port": "/dev/ttyUSB0", "baudrate": 9600, "parity": "E"})
    data["devices"].append({"id": "M-RTU", "profile": "pm5560", "gateway": "rs485-1",
                            "unit_id": 7, "monitors": "AUX"})
    site = site_from_dict(data)
    device = site.devices["M-RTU"]
    client = make_client(device.gateway)  # type: ignore[arg-type]
    assert isinstance(client, AsyncModbusSerialClient)
    collector = ModbusCollector(device.gateway, [device], ListSink())  # type: ignore[arg-type]
    assert collector.requests_per_poll("M-RTU") == 6
    data["gateways"][-1]["parity"] = "X"
    with pytest.raises(Exception, match="gateways\\[4\\].parity: Input should be .N., .E. or .O."):
        site_from_dict(data)
