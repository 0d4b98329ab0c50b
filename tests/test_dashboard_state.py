"""dashboards/state.py: what the dashboard shows, from stored samples (no server, no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcim.analytics.anomaly_base import Anomaly
from dcim.analytics.anomaly_envelope import EnvelopeConfig
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.dashboards.state import ashrae_band, dashboard_state, live_points
from dcim.site import load_site
from dcim.storage.base import Quality, Sample, SeriesKey

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
T = 1_764_000_000_000_000_000


def readings(**overrides: float) -> dict[SeriesKey, Sample]:
    """A good sample for every series the dashboard reads: 1.0 kW, 22.0 degC, 45 % RH..."""
    out: dict[SeriesKey, Sample] = {}
    for key in live_points(SITE).keys:
        if "temp" in key.point:
            value = 22.0
        elif "rh" in key.point:
            value = 45.0
        elif key.point == "unit_status":
            value = 0.0
        elif key.point == "running":
            value = 1.0
        else:
            value = 1.0
        out[key] = Sample(key, T, overrides.get(f"{key.device}/{key.point}", value), Quality.GOOD)
    return out


def state(latest: dict[SeriesKey, Sample], **kw: object) -> dict:
    return dashboard_state(SITE, latest, points=live_points(SITE), now_ns=T, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("temp", "band"), [
    (None, "unknown"), (14.9, "out_low"), (15.0, "allowable_low"), (17.9, "allowable_low"),
    (18.0, "recommended"), (27.0, "recommended"), (27.1, "allowable_high"),
    (32.0, "allowable_high"), (32.1, "out_high"),
])
def test_ashrae_a1_bands(temp: float | None, band: str) -> None:
    assert ashrae_band(temp, EnvelopeConfig()) == band


def test_every_rack_gets_its_hottest_good_inlet_and_band() -> None:
    latest = readings(**{"RM-H1-A01/inlet_temp_top_c": 28.5, "RM-H1-A01/inlet_temp_bottom_c": 19.0,
                         "RM-H1-A02/inlet_temp_middle_c": 33.0})
    # a bad reading is not a temperature: the tile falls back on the good ones, marked bad
    key = SeriesKey("rack_monitor", "RM-H1-A03", "inlet_temp_top_c")
    latest[key] = Sample(key, T, 40.0, Quality.BAD)
    racks = {r["id"]: r for r in state(latest)["racks"]}
    assert len(racks) == len(SITE.racks) == 200
    assert (racks["H1-A01"]["inlet_c"], racks["H1-A01"]["band"]) == (28.5, "allowable_high")
    assert (racks["H1-A02"]["inlet_c"], racks["H1-A02"]["band"]) == (33.0, "out_high")
    assert (racks["H1-A03"]["inlet_c"], racks["H1-A03"]["quality"]) == (22.0, "bad")
    assert (racks["H1-A04"]["band"], racks["H1-A04"]["quality"]) == ("recommended", "good")
    assert racks["H1-A04"]["kw"] == 2.0  # feed A + feed B


def test_a_rack_without_readings_is_missing_not_cool() -> None:
    latest = {k: s for k, s in readings().items() if k.device != "RM-H2-B03"}
    rack = next(r for r in state(latest)["racks"] if r["id"] == "H2-B03")
    assert (rack["inlet_c"], rack["band"], rack["quality"], rack["kw"]) == (None, "unknown",
                                                                          "missing", None)


def test_loads_come_from_the_pue_meters_and_need_every_reading() -> None:
    latest = readings(**{"M-UTIL-A/power_kw": 2500.0, "M-UTIL-B/power_kw": 2400.0})
    head = state(latest)["headline"]
    gens = len(SITE.devices_of_type("generator"))
    assert head["facility_kw"] == 2500.0 + 2400.0 + gens * 1.0
    assert head["it_kw"] == 2.0 * len(SITE.racks)
    del latest[SeriesKey("rack_monitor", "RM-H1-A01", "feed_a_power_kw")]
    assert state(latest)["headline"]["it_kw"] is None  # a partial sum would read as a drop


def test_power_chain_is_ordered_from_the_sources_with_live_status() -> None:
    latest = readings(**{"UPS-A2/unit_status": 3.0, "UPS-A1/output_power_kw": 300.0,
                         "M-UPS-A-OUT/power_kw": 1234.0})
    chain = state(latest)["power_chain"]
    depths = [c["depth"] for c in chain]
    assert depths == sorted(depths) and depths[0] == 0
    by_id = {c["id"]: c for c in chain}
    assert by_id["UTIL-A"]["depth"] == 0 and by_id["TX-A"]["depth"] == 1
    assert by_id["UPS-A"]["depth"] > by_id["UPS-A1"]["depth"] > by_id["MSB-A"]["depth"]
    assert by_id["UPS-A2"]["status"] == "down" and by_id["UPS-A1"]["status"] == "up"
    assert by_id["UPS-A1"]["kw"] == 300.0
    assert by_id["UPS-A"]["kw"] == 1234.0  # the system's output meter


def test_a_device_that_is_not_up_makes_its_unit_unknown_and_is_listed() -> None:
    health = {d: DeviceHealth(device_id=d, gateway="gw") for d in ("CRAH-H1-2", "CH-1")}
    for h in health.values():
        h.status = DeviceStatus.UP
    health["CRAH-H1-2"].status = DeviceStatus.DOWN
    health["CRAH-H1-2"].last_error = "TimeoutError: no answer"
    doc = state(readings(), health=health)
    cooling = {c["id"]: c for c in doc["cooling"]}
    assert cooling["CRAH-H1-2"]["status"] == "unknown" and cooling["CH-1"]["status"] == "up"
    assert cooling["CH-1"]["running"] is True and cooling["CH-1"]["kw"] == 1.0
    # its last stored readings (still "good" in the store) are withheld, not shown as live
    assert cooling["CRAH-H1-2"]["running"] is None and cooling["CRAH-H1-2"]["kw"] is None
    assert doc["devices_not_up"] == [{"id": "CRAH-H1-2", "type": "crah", "status": "down",
                                      "gateway": "gw", "last_error": "TimeoutError: no answer"}]


def test_anomalies_newest_first_with_their_series() -> None:
    def anomaly(device: str, since_s: int, severity: str) -> Anomaly:
        key = SeriesKey("rack_monitor", device, "inlet_temp_top_c")
        return Anomaly(series=key, layer="envelope", kind="above_allowable", since_ns=since_s * 10**9,
                       last_ns=T, raised_ns=since_s * 10**9, value=33.0, expected=(15.0, 32.0),
                       score=1.0, severity=severity, message="inlet above allowable")

    class Analysis:
        anomalies = [anomaly("RM-H1-A01", 100, "major"), anomaly("RM-H1-A02", 200, "critical")]

    anomalies = state(readings(), analysis=Analysis())["anomalies"]
    assert [(a["device"], a["severity"], a["since_ms"]) for a in anomalies] == [
        ("RM-H1-A02", "critical", 200_000), ("RM-H1-A01", "major", 100_000)]


def test_without_analytics_the_figures_are_absent_not_invented() -> None:
    doc = state(readings())
    assert doc["headline"]["pue"] is None and doc["redundancy"] is None and doc["anomalies"] == []
    assert doc["alarms"] == [] and doc["alarm_counts"]["shown"] == 0
    assert doc["ashrae"] == {"class": "A1", "recommended_c": [18.0, 27.0],
                             "allowable_c": [15.0, 32.0]}


def test_components_without_a_device_follow_what_feeds_them() -> None:
    by_id = {c["id"]: c for c in state(readings())["power_chain"]}
    assert (by_id["MSB-A"]["monitored"], by_id["MSB-A"]["status"]) == (False, "up")
    # utility A lost (its meter reads nothing): its transformer is dead; the ATS and the
    # switchboard behind it are still fed by the generator bus
    by_id = {c["id"]: c for c in state(readings(**{"M-UTIL-A/power_kw": 0.0}))["power_chain"]}
    assert by_id["UTIL-A"]["status"] == "down"
    assert (by_id["TX-A"]["status"], by_id["TX-A"]["energised"]) == ("down", False)
    assert by_id["MSB-A"]["status"] == "up" and by_id["MSB-A"]["energised"] is True


class _Forward:
    def __init__(self, outage_s: float) -> None:
        self.outage_s = outage_s

    def stats(self) -> object:
        from types import SimpleNamespace
        return SimpleNamespace(written=10, buffered=5 if self.outage_s else 0,
                               outage_s=self.outage_s, last_error="influxd down" if self.outage_s else "")


class _BrokenStorage:
    async def read_latest(self, keys: object) -> dict:
        from dcim.storage.base import StorageError
        raise StorageError("database is locked")


@pytest.mark.parametrize("outage_s", [0.0, 42.0])
async def test_health_follows_storage_and_a_storage_error_still_serves_the_page(
        outage_s: float) -> None:
    from types import SimpleNamespace

    from aiohttp.test_utils import TestClient, TestServer

    from dcim.collectors.service import CollectorService
    from dcim.dashboards.app import Dashboard

    collectors = CollectorService(SITE, sink=None, protocols=())  # type: ignore[arg-type]
    system = SimpleNamespace(site=SITE, storage=_BrokenStorage(), collectors=collectors,
                             forward=_Forward(outage_s), analytics=None)
    async with TestClient(TestServer(Dashboard(system).make_app())) as client:  # type: ignore[arg-type]
        health = await client.get("/healthz")
        assert health.status == (503 if outage_s else 200)
        assert (await health.json())["ok"] is (not outage_s)
        page = await client.get("/api/state")
        assert page.status == 200
        doc = await page.json()
        assert doc["collection"]["storage_error"] == "database is locked"
        assert doc["collection"]["buffered"] == (5 if outage_s else 0)
        assert {r["quality"] for r in doc["racks"]} == {"missing"}
        index = await client.get("/")
        assert index.status == 200 and "app.js" in await index.text()


def test_alarms_carry_their_state_flags_and_the_actions_allowed() -> None:
    from dcim.alarm_types import Condition, Priority
    from dcim.alarms import AlarmEngine

    engine = AlarmEngine()
    s = 10**9
    trip = Condition("unit:UPS-A3:down", "unit", Priority.HIGH, "ups_module UPS-A3 tripped",
                     unit="UPS-A3")
    rate = Condition("anomaly:rate:RM-H1-A01", "anomaly", Priority.LOW, "inlet rising",
                     unit="H1-A01", device="RM-H1-A01")
    gone = Condition("redundancy:racks_on_one_feed", "redundancy", Priority.MEDIUM, "20 racks")
    engine.evaluate([trip, rate, gone], T)
    engine.acknowledge(trip.alarm_id, "kwong", T + s)
    engine.shelve(rate.alarm_id, "chan", T + 2 * s, 600, "sensor being replaced")
    engine.evaluate([rate, gone], T + 3 * s)
    engine.evaluate([rate], T + 200 * s)  # the trip (latched) and one-feed alarms go...
    engine.evaluate([rate], T + 400 * s)  # ... and clear after their off-delays
    doc = state(readings(), alarms=engine.active())
    alarms = {a["id"]: a for a in doc["alarms"]}
    assert alarms[trip.alarm_id]["state"] == "active_acknowledged"
    assert alarms[trip.alarm_id]["condition"] is False and alarms[trip.alarm_id]["latched"]
    assert alarms[trip.alarm_id]["actions"] == ["reset", "shelve", "out_of_service"]
    assert alarms[trip.alarm_id]["acked_by"] == "kwong"
    assert alarms[rate.alarm_id]["shelved_by"] == "chan"
    assert alarms[rate.alarm_id]["actions"] == ["ack", "unshelve", "out_of_service"]
    assert alarms[gone.alarm_id]["state"] == "returned_unacknowledged"
    assert doc["alarm_counts"] == {"shown": 2, "unacknowledged": 1, "shelved": 1,
                                   "suppressed": 0, "out_of_service": 0,
                                   "by_priority": {"low": 0, "medium": 1, "high": 1,
                                                   "critical": 0}}
