"""End to end: simulators -> collectors -> durable buffer -> a real influxd 1.6.7."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest

from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.collectors.service import CollectorService
from dcim.site import Site, load_site
from dcim.config.site import OpcuaSecurity
from dcim.simulators.opcua_security import make_test_pki
from dcim.simulators.runner import Simulator
from dcim.storage.base import Quality
from dcim.config.storage import InfluxDB1StorageConfig, WriteOptions
from dcim.storage.factory import open_storage

ROOT = Path(__file__).resolve().parents[1]


def _fast(site: Site, interval_s: float = 1.0) -> Site:
    """The same site with every device polled every interval_s."""
    devices = {k: dataclasses.replace(d, interval_s=interval_s) for k, d in site.devices.items()}
    return Site(config=site.config, source=site.source, racks=site.racks, devices=devices)


def _influx(url: str, database: str) -> InfluxDB1StorageConfig:
    return InfluxDB1StorageConfig(backend="influxdb1", url=url, database=database,  # type: ignore[arg-type]
                                  write=WriteOptions(max_retries=1, retry_backoff_s=0.05))


async def _collect_into_influxd(site: Site, sim: Simulator, url: str, database: str,
                                tmp_path: Path, seconds: float) -> dict[tuple[str, str], float]:
    storage = open_storage(_influx(url, database), site_id=site.id)
    await storage.start()
    forward = StoreAndForward(storage, DurableBuffer(tmp_path / "buffer"))
    await forward.start()
    service = CollectorService(site, forward)
    await service.start()
    await asyncio.sleep(seconds)
    await service.close()
    await forward.close(timeout_s=20)
    assert forward.buffered == 0 and forward.written > 0
    keys = [d.series(p.name) for d in site.devices.values() for p in d.profile.points]
    latest = await storage.read_latest(keys)
    await storage.close()
    return {(k.device, k.point): s.value for k, s in latest.items() if s.quality is Quality.GOOD}


async def test_reference_site_values_arrive_in_influxd_as_served(
        influxd_server: str, influx_database: str, tmp_path: Path) -> None:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    sim = Simulator(site, seed=11, free_ports=True, autotick=False)  # values held still
    await sim.start()
    try:
        stored = await _collect_into_influxd(_fast(sim.client_site()), sim, influxd_server,
                                             influx_database, tmp_path, 3.5)
    finally:
        await sim.stop()
    assert sim.snapshot is not None
    compared = 0
    for device_id, reading in sim.snapshot.devices.items():
        device = site.devices[device_id]
        for point, served in reading.values.items():
            spec = next(p for p in device.profile.points if p.name == point)
            resolution = abs(spec.scale) * (1000 if getattr(spec, "scale_factor_point", None)
                                            else 1) + 1e-6
            assert (device_id, point) in stored, f"{device_id}.{point} not stored"
            assert stored[(device_id, point)] == pytest.approx(served, abs=resolution, rel=1e-6), \
                f"{device_id}.{point}"
            compared += 1
    protocols = {site.devices[d].protocol for d, _ in stored}
    assert protocols == {"modbus", "opcua"}
    assert compared > 2000  # every role-carrying point of all 270 devices


async def test_opcua_sign_and_encrypt_into_influxd(influxd_server: str, influx_database: str,
                                                   tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    reference = load_site(ROOT / "config" / "cyberport5.yaml")
    bms_only = {d.id: d for d in reference.devices.values() if d.gateway.id == "bms"}
    site = Site(config=reference.config, source=None, racks=reference.racks, devices=bms_only)
    sim = Simulator(site, seed=2, free_ports=True, autotick=False, gateways={"bms"},
                    opcua_security={"bms": pki.server_security(modes=("SignAndEncrypt",))})
    await sim.start()
    try:
        client_site = sim.client_site()
        security = OpcuaSecurity(policy="Basic256Sha256", mode="SignAndEncrypt",
                                 certificate=str(pki.client.certificate),
                                 private_key=str(pki.client.private_key),
                                 trust_dir=str(pki.client_trust_dir))
        gateways = [g.model_copy(update={"security": security}) if g.id == "bms" else g
                    for g in client_site.config.gateways]
        config = client_site.config.model_copy(update={"gateways": gateways})
        devices = {k: dataclasses.replace(d, gateway=gateways[[g.id for g in gateways].index("bms")])
                   for k, d in client_site.devices.items()}
        secure_site = _fast(Site(config=config, source=None, racks=site.racks, devices=devices))
        stored = await _collect_into_influxd(secure_site, sim, influxd_server, influx_database,
                                             tmp_path, 4.0)
    finally:
        await sim.stop()
    assert sim.snapshot is not None
    expected = {(d, p): v for d, r in sim.snapshot.devices.items() if d in bms_only
                for p, v in r.values.items() if math.isfinite(v)}
    assert expected and set(expected) <= set(stored)
    for key, value in expected.items():
        assert stored[key] == pytest.approx(value, rel=1e-9), key


async def test_influxd_down_at_start_then_up_loses_nothing(influxd_process, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The database cannot be created while influxd is down; the first write after it returns
    creates it, and the buffered samples arrive instead of being set aside as rejected."""
    from dcim.storage.base import Sample, SeriesKey

    influxd_process.stop()
    storage = open_storage(_influx(influxd_process.url, "late_db"), site_id="t")
    await storage.start()  # must not fail: influxd is down
    forward = StoreAndForward(storage, DurableBuffer(tmp_path / "buffer"),
                              retry_backoff_s=(0.05, 0.2))
    await forward.start()
    key = SeriesKey("meter", "M-1", "power_kw")
    forward.add([Sample(key, 1_000_000_000 * i, float(i)) for i in range(1, 501)])
    await asyncio.sleep(0.5)
    assert forward.written == 0 and forward.buffered == 500
    influxd_process.start()
    for _ in range(100):
        await asyncio.sleep(0.1)
        if forward.buffered == 0:
            break
    await forward.close()
    assert forward.written == 500 and forward.rejected_samples == 0
    rows = await storage.read_range(key, 0, 10**12)
    await storage.close()
    assert [s.value for s in rows] == [float(i) for i in range(1, 501)]
