"""A monitoring-only site (a few meters, no plant) validates, runs and withholds with reasons."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcim.analysis import AnalyticsService
from dcim.cli import main
from dcim.config.site import ModbusGateway
from dcim.live.build import build_state, plan
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.simulators.snapshot import DeviceReading
from dcim.site import load_site, parse_site
from dcim.site.model import NOTHING
from dcim.storage.base import SeriesKey
from dcim.storage.factory import open_storage

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "examples" / "monitoring-only.yaml"

MINIMAL = """\
site: {{id: tiny, name: Tiny room}}
storage: {{backend: embedded, path: {db}}}
gateways:
  - {{id: gw, protocol: modbus_tcp, host: 127.0.0.1, port: {port}, timeout_s: 0.5}}
profiles:
  meter:
    protocol: modbus
    device_type: meter
    points:
      - {{name: power_kw, table: holding, address: 0, type: float32, role: power_kw}}
devices:
  - {{id: M1, profile: meter, gateway: gw, unit_id: 1, interval_s: 0.2}}
"""
KEY = SeriesKey("meter", "M1", "power_kw")


def test_example_loads_without_a_plant_and_says_what_is_withheld() -> None:
    site = load_site(EXAMPLE)
    assert not site.config.electrical and not site.halls and not site.racks
    assert {d.id: d.monitors for d in site.devices.values()} == {
        "MAIN-1": "site", "MAIN-2": "site", "CH-1": NOTHING}
    withheld = plan(site).withheld
    assert "facility energy meters" in withheld["pue"]
    assert "topology" in withheld["redundancy"]


def test_validate_lists_the_withheld_analyses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "monitoring only (no plant)" in out
    assert "pue: withheld: PUE needs facility energy meters" in out
    assert "redundancy: withheld:" in out


@pytest.mark.parametrize("monitors, expected", [
    pytest.param("", "site", id="omitted"),
    pytest.param(", monitors: site", "site", id="site"),
    pytest.param(", monitors: null", NOTHING, id="nothing"),
])
def test_a_meter_may_monitor_the_site_or_nothing(monitors: str, expected: str) -> None:
    text = MINIMAL.format(db="x.sqlite", port=502).replace(
        "interval_s: 0.2}", f"interval_s: 0.2{monitors}}}")
    assert parse_site(text, "tiny.yaml").devices["M1"].monitors == expected


def test_the_live_state_of_a_site_without_a_plant_keeps_its_values() -> None:
    from dcim.storage.base import Sample

    site = parse_site(MINIMAL.format(db="x.sqlite", port=502), "tiny.yaml")
    p = plan(site)
    assert KEY in p.keys and p.topology is None and p.meters is None
    state = build_state(p, {KEY: Sample(KEY, 1, 12.5)}, None, seq=1, now_ns=2)
    assert state.values[KEY].value == 12.5 and not state.units and not state.racks
    assert set(state.withheld) == {"pue", "redundancy"}
    from dcim.dashboards.state import state_document

    doc = state_document(state, [], 2)
    assert doc["device_values"] == [{"device": "M1", "type": "meter", "point": "power_kw",
                                     "value": 12.5, "quality": "good", "time_ms": 0}]
    assert doc["racks"] == [] and doc["power_chain"] == [] and doc["redundancy"] is None


async def test_analytics_withhold_pue_and_anomalies_without_a_traceback(tmp_path: Path) -> None:
    site = parse_site(MINIMAL.format(db=tmp_path / "s.sqlite", port=502), "tiny.yaml")
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    try:
        service = AnalyticsService(site, storage, model_dir=str(tmp_path / "models"))
        result = await service.run_once(1_800_000_000 * 10**9)
    finally:
        await storage.close()
    assert result.today is None and "facility energy meters" in result.withheld["pue"]
    assert "points with roles" in result.withheld["anomalies"]
    assert service.latest()[0] is None


@pytest.fixture
def meter_server() -> Iterator[int]:
    """A Modbus device server for M1 on a loopback port, on its own thread and loop."""
    site = parse_site(MINIMAL.format(db="x.sqlite", port=502), "tiny.yaml")
    gateway = site.config.gateways[0]
    assert isinstance(gateway, ModbusGateway)
    loop = asyncio.new_event_loop()
    server = ModbusSimServer(gateway, [site.devices["M1"]], host="127.0.0.1", port=0)
    server.encoder(1).encode(DeviceReading({"power_kw": 42.5}))
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.stop())
        loop.close()


def test_dcim_run_polls_a_minimal_site_into_the_store(
        meter_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(MINIMAL.format(db=tmp_path / "tiny.sqlite", port=meter_server))
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--seconds", "3", "--no-dashboard"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "devices 1/1 up" in out and "PUE: withheld" in out
    site = load_site(path)

    async def latest() -> float:
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            return (await storage.read_latest([KEY]))[KEY].value
        finally:
            await storage.close()

    assert asyncio.run(latest()) == pytest.approx(42.5)


async def test_the_running_system_shows_the_value_live(meter_server: int, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dcim.system import System, SystemOptions

    monkeypatch.chdir(tmp_path)
    site = parse_site(MINIMAL.format(db=tmp_path / "tiny.sqlite", port=meter_server), "tiny.yaml")
    system = System(site, SystemOptions(simulate=False, analytics_interval_s=0.5))
    await system.start()
    try:
        assert system.live is not None
        for _ in range(100):
            state = system.live.current()
            if KEY in state.values:
                break
            await asyncio.sleep(0.05)
        assert state.values[KEY].value == pytest.approx(42.5)
        assert "redundancy" in state.withheld and "pue" in state.withheld
    finally:
        await system.stop()


async def test_anomaly_stage_without_keys_has_nothing_to_do(tmp_path: Path) -> None:
    # once an IndexError on every run: the stage probed self.keys[0] of an empty list
    from dcim.anomaly_service import AnomalyStage

    site = parse_site(MINIMAL.format(db=tmp_path / "s.sqlite", port=502), "tiny.yaml")
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    try:
        stage = AnomalyStage(site, storage, model_dir=tmp_path / "models")
        assert stage.keys == [] and stage.withheld is not None
        assert await stage.run(1_800_000_000 * 10**9) == []
    finally:
        await storage.close()
