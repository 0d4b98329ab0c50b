"""The analytics service: storage in, PUE and redundancy series out."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcim.analysis import AnalyticsService
from dcim.site import load_site
from dcim.simulators.backfill import snapshot_samples
from dcim.simulators.plant import PlantModel
from dcim.storage.base import Quality, SeriesKey
from dcim.storage.config import EmbeddedStorageConfig
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


async def test_pue_and_redundancy_of_a_healthy_site(tmp_path: Path) -> None:
    storage, _, ratios = await _store_history(tmp_path, [])
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    service = AnalyticsService(site, storage)
    result = await service.run_once(int((T0 + 40 * STEP) * 1e9))
    # an independent estimate: mean of the instantaneous power ratio over the same 15 minutes
    assert result.live.pue.value == pytest.approx(sum(ratios) / len(ratios), rel=0.01)
    assert result.live.pue.category == "PUE3"
    assert result.redundancy.concurrently_maintainable
    assert result.redundancy.group("crah-h1").available == 7
    stored = await storage.read_latest([SeriesKey("analytics", site.id, "pue_live"),
                                        SeriesKey("analytics", site.id, "concurrently_maintainable"),
                                        SeriesKey("analytics", site.id,
                                                  "redundancy_ups-a-modules_spare")])
    await storage.close()
    values = {k.point: s.value for k, s in stored.items()}
    assert values["pue_live"] == pytest.approx(result.live.pue.value)
    assert values["concurrently_maintainable"] == 1.0
    assert values["redundancy_ups-a-modules_spare"] >= 1


async def test_injected_faults_change_the_stored_redundancy(tmp_path: Path) -> None:
    storage, _, _ = await _store_history(
        tmp_path, [("crah_trip", "CRAH-H1-1"), ("pdu_breaker_open", "PDU-A-H1-1")])
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    result = await AnalyticsService(site, storage).run_once(int((T0 + 40 * STEP) * 1e9))
    report = result.redundancy
    crah = report.group("crah-h1")
    assert crah.available == 6  # the tripped CRAH reported unit_status 3
    assert len(report.one_feed_racks) == 20  # PDU-A-H1-1's racks run on their B feed
    assert not report.concurrently_maintainable
    latest = await storage.read_latest([SeriesKey("analytics", site.id, "racks_on_one_feed"),
                                        SeriesKey("analytics", site.id, "concurrently_maintainable")])
    await storage.close()
    values = {k.point: (s.value, s.quality) for k, s in latest.items()}
    assert values["racks_on_one_feed"] == (20.0, Quality.GOOD)
    assert values["concurrently_maintainable"] == (0.0, Quality.GOOD)


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
    stage = AnomalyStage(site, storage, model_dir=tmp_path / "models", min_training_s=6 * 3600,
                         training_s=7 * 3600)
    wanted = set(stage.keys)  # store only what the detector reads: keeps the test short
    for i in range(8 * 60 + 1):  # 8 hours at 1 minute
        t = T0 + i * STEP
        snapshot = plant.step(t)
        fault.active = t >= fault.start_s
        sensor.apply(snapshot, [fault])
        await storage.write([x for x in snapshot_samples(site, snapshot) if x.series in wanted])
    found = await stage.run(int((T0 + 8 * 3600) * 1e9))
    await storage.close()
    assert stage.trained and (tmp_path / "models" / "crah.pkl").exists()
    assert (tmp_path / "models" / "crah.pkl.json").exists()
    stuck = [a for a in found if a.kind == "stuck"]
    assert [(a.series.device, a.series.point) for a in stuck] == [
        ("RM-H1-A02", "inlet_temp_middle_c")]
