"""The README's first command runs the whole system on the reference site."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path

import pytest

from dcim.cli import main
from dcim.site import load_site
from dcim.storage.factory import open_storage

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_simulators_collectors_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # an hour of history, not the week of `make demo` (tests/test_demo_story.py has that)
    assert main(["demo", str(ROOT / "config" / "cyberport5.yaml"), "--seconds", "12",
                 "--port", "0", "--control-port", "0", "--backfill", "1h"]) == 0
    out = capsys.readouterr().out
    assert "racks: 200" in out
    assert "dashboard: http://127.0.0.1:" in out
    assert "simulator control API: http://127.0.0.1:" in out
    assert "story: 4 incidents until +29:00; --no-story for a quiet plant" in out
    assert "writing 1.0 h of simulated history" in out
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


async def test_a_second_run_adds_history_after_the_stored_one_never_into_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two demo runs on one store: the second's backfill once interleaved its simulated
    # counters with the first run's, and the live PUE read 2.3 instead of 1.35.
    import dcim.system
    from dcim.system import System, SystemOptions

    monkeypatch.chdir(tmp_path)
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    key = next(d.series("energy_kwh") for d in site.devices.values() if d.id == "M-UTIL-A")
    now = [1_800_000_000.0]
    monkeypatch.setattr(dcim.system.time, "time", lambda: now[0])

    async def history() -> list[tuple[int, float]]:
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            return [(s.time_ns, s.value) for s in await storage.read_range(key, 0, 2**62)]
        finally:
            await storage.close()

    await System(site, SystemOptions(backfill_s=600.0))._backfill()
    first = await history()
    assert len(first) == 11 and first[-1][0] == 1_800_000_000 * 10**9
    await System(site, SystemOptions(backfill_s=600.0))._backfill()  # at once: nothing to add
    assert await history() == first
    now[0] += 300.0  # five minutes later
    await System(site, SystemOptions(backfill_s=600.0))._backfill()
    after = await history()
    assert after[: len(first)] == first  # the stored hour untouched, values included
    added = [t for t, _ in after[len(first):]]
    assert added and added[0] == first[-1][0] + 60 * 10**9 and added[-1] <= int(now[0] * 1e9)


async def test_the_demo_history_is_coarse_then_fine_and_a_second_run_only_adds_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # DemoSystem's history: tiers by age (here 3 h: 20-minute steps, 10 minutes before each
    # live PUE, then a minute for the last half hour), live PUE in it, and a second start
    # adds only after what is stored.
    import dcim.system
    from dcim.demo import DemoOptions, DemoSystem
    from dcim.simulators.backfill import Tier
    from dcim.storage.base import SeriesKey
    from dcim.system import SystemOptions

    monkeypatch.chdir(tmp_path)
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    meter = site.devices["M-UTIL-A"].series("energy_kwh")
    pue = SeriesKey("analytics", site.id, "pue_live")
    now = [1_800_000_000.0]
    monkeypatch.setattr(dcim.system.time, "time", lambda: now[0])
    tiers = (Tier(3 * 3600.0, 1200.0, 3600.0, lead_s=1200.0, lead_step_s=600.0),
             Tier(1800.0, 60.0, 300.0))

    def demo() -> DemoSystem:
        return DemoSystem(site, SystemOptions(backfill_s=3 * 3600.0, backfill_tiers=tiers),
                          DemoOptions(progress=False, tiers=tiers), out=open(os.devnull, "w"))

    async def history(key: SeriesKey) -> list[tuple[int, float]]:
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            return [(s.time_ns, s.value) for s in await storage.read_range(key, 0, 2**62)]
        finally:
            await storage.close()

    first_demo = demo()
    await first_demo._backfill()
    first_demo.out.close()
    first = await history(meter)
    gaps = {(b - a) // 10**9 for (a, _), (b, _) in zip(first, first[1:])}
    assert gaps == {1200, 600, 60}  # coarse, finer before each live PUE, then fine
    assert first[0][0] == int((now[0] - 3 * 3600) * 1e9) and first[-1][0] == int(now[0] * 1e9)
    assert [v for _, v in first] == sorted(v for _, v in first)  # one counter, never reset
    live_pue = [v for _, v in await history(pue) if math.isfinite(v)]
    assert len(live_pue) >= 6 and all(1.2 < v < 1.7 for v in live_pue)
    now[0] += 300.0
    again = demo()
    await again._backfill()
    again.out.close()
    after = await history(meter)
    assert after[: len(first)] == first
    assert [t for t, _ in after[len(first):]] == [first[-1][0] + k * 60 * 10**9
                                                  for k in range(1, 6)]


def test_the_demo_command_defaults_to_the_demo_history() -> None:
    from dcim.cli import build_parser
    from dcim.cli.sim import cmd_demo
    from dcim.demo import DEMO_BACKFILL_S

    args = build_parser().parse_args(["demo"])
    assert (args.backfill, args.func, args.control_port) == (DEMO_BACKFILL_S, cmd_demo, 8790)
