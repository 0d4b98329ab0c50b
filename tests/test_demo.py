"""The README's first command runs the whole system on the reference site."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dcim.cli import main
from dcim.site import load_site
from dcim.storage.factory import open_storage

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_simulators_collectors_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", str(ROOT / "config" / "cyberport5.yaml"), "--seconds", "12",
                 "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "racks: 200" in out
    assert "dashboard: http://127.0.0.1:" in out
    assert "devices 270/270 up, 0 stale, 0 down" in out  # Modbus and OPC UA all polled
    # an hour of backfilled history gives a live PUE from the first analytics run
    pue = [float(line.split("PUE live ")[1].split(" ")[0]) for line in out.splitlines()
           if line.startswith("PUE live ") and "withheld" not in line]
    assert pue and all(1.2 < p < 1.7 for p in pue)
    assert "(PUE3) | CM yes | anomalies 0" in out
    assert "stopped:" in out and "0 left in the durable buffer" in out
    site = load_site(ROOT / "config" / "cyberport5.yaml")

    async def stored() -> int:
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        keys = [d.series(p.name) for d in site.devices.values() for p in d.profile.points]
        latest = await storage.read_latest(keys)
        await storage.close()
        return len(latest)

    assert asyncio.run(stored()) >= 2000  # every polled point has a sample in the store
