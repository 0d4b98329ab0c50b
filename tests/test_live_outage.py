"""Storage is not on the path from a fault to an alarm: the whole system on a real influxd,
which is stopped before a CRAH trips. The trip is alarmed within one poll of it, the unit
shows down meanwhile, and the transition reaches the store once it is back."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dcim.simulators.faults import FaultSpec
from dcim.site.loader import parse_site
from dcim.system import System, SystemOptions
from tests import influxd

ROOT = Path(__file__).resolve().parents[1]
influxd_process = influxd.influxd_process

OVERRIDES = """
alarms:
  delays:
    unit: {on_delay_s: 0, off_delay_s: 1}
"""
EMBEDDED = "storage:\n  backend: embedded\n  path: var/cyberport5.sqlite\n"


def _query(url: str, text: str) -> list[list[object]]:
    params = urllib.parse.urlencode({"db": "outage", "q": text, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as reply:
        result = json.load(reply)["results"][0]
    return [row for s in result.get("series", []) for row in s["values"]]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "target"), [
    pytest.param("ups_module_trip", "UPS-A3", id="modbus-ups-module"),
    pytest.param("crah_trip", "CRAH-H1-1", id="opcua-subscribed-crah"),
])
async def test_a_trip_during_a_store_outage_alarms_within_one_poll(
        kind: str, target: str, influxd_process: influxd.InfluxdProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = ROOT / "config" / "cyberport5.yaml"
    text = path.read_text().replace(EMBEDDED, f"storage:\n  backend: influxdb1\n  url: "
                                    f"{influxd_process.url}\n  database: outage\n")
    site = parse_site(text + OVERRIDES, str(path))
    device = next(d for d in site.devices.values() if d.monitors == target)
    system = System(site, SystemOptions(buffer_dir=str(tmp_path / "buffer"),
                                        alarm_journal=str(tmp_path / "alarms.sqlite"),
                                        protocols=(device.protocol,)))
    await system.start()
    try:
        assert system.live is not None and system.alarms is not None
        assert system.simulator is not None and system.forward is not None
        deadline = time.monotonic() + 30
        while system.live.current().units[target].state != "up":
            assert time.monotonic() < deadline, system.live.current().units[target]
            await asyncio.sleep(0.2)
        influxd_process.stop()
        # a second after a poll boundary: the worst case is a fault just after the poll, and a
        # loaded CI machine must still make it with a second to spare (figures over random
        # phases: bench/alarm_latency.py)
        await asyncio.sleep(1.0 + (-time.time()) % device.interval_s)
        tripped_at = time.time()
        system.simulator.inject(FaultSpec(kind=kind, target=target))
        alarm_id = f"unit:{target}:down"
        while (a := system.alarms.engine.alarms.get(alarm_id)) is None or not a.condition:
            assert time.time() - tripped_at < device.interval_s + 1.0, \
                "no alarm within one poll interval + 1 s of the trip"
            await asyncio.sleep(0.05)
        unit = system.live.current().units[target]
        assert unit.state == "down" and "status word" in unit.why
        assert not influxd_process.running  # the store was down all along
        deadline = time.monotonic() + 10  # and the forwarder saw it (it buffers meanwhile)
        while system.forward.stats().outage_s == 0:
            assert time.monotonic() < deadline, system.forward.stats()
            await asyncio.sleep(0.1)
        influxd_process.start()
        deadline = time.monotonic() + 30
        while system.forward.stats().buffered > 0 or system.forward.stats().outage_s > 0:
            assert time.monotonic() < deadline, system.forward.stats()
            await asyncio.sleep(0.2)
    finally:
        await system.stop()
    rows = _query(influxd_process.url,
                  f'SELECT "value" FROM "transition" WHERE "device" = \'{target}\'')
    assert [r[1] for r in rows][-2:] == [1.0, 0.0]  # started up, then down during the outage
    assert rows[-1][0] >= int(tripped_at * 1e9) - int(device.interval_s * 1e9)
