"""The history-side analytics service: stored counters and series in, today's PUE and
anomalies out (into the sink). Live PUE and redundancy are tests/test_live_state.py."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest

from dcim.analysis import AnalyticsService
from dcim.site import load_site
from dcim.simulators.backfill import snapshot_samples
from dcim.simulators.plant import PlantModel
from dcim.storage.base import Quality, Sample, SeriesKey
from dcim.config.storage import EmbeddedStorageConfig
from dcim.storage.embedded import EmbeddedStorage

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_783_000_800.0  # 2026-07-02 22:00 HKT: within one local day for the whole run
STEP = 60.0


async def _store_history(tmp_path: Path, faults: list[tuple[str, str]], minutes: int = 40
                         ) -> tuple[EmbeddedStorage, PlantModel, list[float]]:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")), site_id=site.id)
    await storage.start()
    plant = PlantModel(site, seed=4)
    ratios = []
    for i in range(minutes + 1):
        t = T0 + i * STEP
        if i == minutes - 5:
            for kind, target in faults:
                plant.set_fault(kind, target, True)
        snapshot = plant.step(t)
        await storage.write(list(snapshot_samples(site, snapshot)))
        util = sum(snapshot.devices[m].values["power_kw"] for m in ("M-UTIL-A", "M-UTIL-B"))
        gens = sum(snapshot.devices[f"GEN-{g}-CTRL"].values["power_kw"] for g in (1, 2, 3))
        it = sum(v for d in site.devices_of_type("rack_monitor")
                 for k, v in snapshot.devices[d.id].values.items() if k.endswith("_power_kw"))
        if i >= minutes - 15:
            ratios.append((util + gens) / it)
    return storage, plant, ratios


async def test_todays_pue_from_the_store_goes_into_the_sink(tmp_path: Path) -> None:
    """History-side analytics: today's PUE from stored counters, results handed to the sink
    (the durable forwarder in the running system) rather than written to the store."""
    storage, _, ratios = await _store_history(tmp_path, [])
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    sink: list[Sample] = []
    service = AnalyticsService(site, storage, sink=SinkList(sink), anomalies=False)
    result = await service.run_once(int((T0 + 40 * STEP) * 1e9))
    # an independent estimate: mean of the instantaneous power ratio over the last 15 minutes
    assert result.live.pue.value == pytest.approx(sum(ratios) / len(ratios), rel=0.01)
    # 40 minutes of a day that began at midnight: today's figure is withheld, with why
    assert result.today.pue.value is None and "coverage" in (result.today.pue.reason or "")
    stored = await storage.read_latest([SeriesKey("analytics", site.id, "pue_today")])
    await storage.close()
    assert stored == {}  # nothing written past the sink
    values = {s.series.point: s for s in sink}
    assert math.isnan(values["pue_today"].value) and values["pue_today"].quality is Quality.BAD
    assert service.latest()[0] is result.today


async def test_a_failing_run_logs_one_line_per_cause(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    storage, _, _ = await _store_history(tmp_path, [], minutes=2)
    await storage.close()  # every read now fails the same way
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    service = AnalyticsService(site, storage, sink=SinkList([]), anomalies=False,
                               interval_s=0.01)
    with caplog.at_level(logging.INFO, logger="dcim.analysis"):
        await service.start()
        await asyncio.sleep(0.3)
        await service.close()
    assert service.failures >= 5
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback


class SinkList:
    def __init__(self, out: list[Sample]) -> None:
        self.out = out

    def add(self, samples: object) -> None:
        self.out.extend(samples)  # type: ignore[call-overload]


async def test_anomalies_from_stored_data_untrained_and_trained(tmp_path: Path) -> None:
    """Untrained layers run from the first minute; models train once history is long enough,
    are saved with their version, and a stuck sensor on the wire data is reported."""
    from dcim.anomaly_service import AnomalyStage
    from dcim.simulators.faults import Fault, SensorFaults

    site = load_site(ROOT / "config" / "cyberport5.yaml")
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")), site_id=site.id)
    await storage.start()
    plant = PlantModel(site, seed=9)
    sensor = SensorFaults(9)
    fault = Fault(1, "stuck", "RM-H1-A02", "inlet_temp_middle_c", T0 + 7 * 3600, None, {})
    # the generic models learn from the last hour only: a day of 1386 series is minutes of CPU
    stage = AnomalyStage(site, storage, model_dir=tmp_path / "models", min_training_s=6 * 3600,
                         training_s=7 * 3600, generic_fit_s=3600)
    wanted = set(stage.keys)  # store only what the detector reads: keeps the test short
    for i in range(8 * 60 + 1):  # 8 hours at 1 minute
        t = T0 + i * STEP
        snapshot = plant.step(t)
        fault.active = t >= fault.start_s
        sensor.apply(snapshot, [fault])
        await storage.write([x for x in snapshot_samples(site, snapshot) if x.series in wanted])
    found = await stage.run(int((T0 + 8 * 3600) * 1e9))
    await storage.close()
    assert stage.trained and (tmp_path / "models" / "crah.npz").exists()
    assert (tmp_path / "models" / "crah.json").exists()
    stuck = [a for a in found if a.kind == "stuck"]
    assert [(a.series.device, a.series.point) for a in stuck] == [
        ("RM-H1-A02", "inlet_temp_middle_c")]
