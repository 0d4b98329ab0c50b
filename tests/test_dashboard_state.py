"""dashboards/state.py: the /api/state document rendered from a live snapshot (no server).

Snapshots are built by the live builder (dcim/live/build.py) from newest values, as the
running system builds them; the document must keep the fields and meanings that the page and
outside tools rely on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.types import Alarm, Condition, Priority
from dcim.analytics.anomaly_base import Anomaly
from dcim.analytics.anomaly_envelope import EnvelopeConfig
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.dashboards.state import state_document, state_health, zone_doc
from dcim.live.build import ashrae_band, build_state, plan
from dcim.live.state import Collection, SiteState
from dcim.site import load_site
from dcim.storage.base import Quality, Sample, SeriesKey

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
PLAN = plan(SITE)
TYPES = {d.id: d.device_type for d in SITE.devices.values()}
T = 1_764_000_000_000_000_000

# The fields the page (dashboards/static/app.js) and outside tools read: a document may carry
# more, never fewer or renamed ones.
FIELDS = {
    "": {"seq", "site", "headline", "collection", "redundancy", "power_chain", "cooling",
         "racks", "ashrae", "alarms", "alarm_counts", "anomalies", "devices_not_up"},
    "site": {"id", "name", "time_ms", "timezone", "tz_abbrev", "utc_offset_min"},
    "headline": {"pue", "pue_today", "ppue_cooling", "ppue_distribution", "it_kw",
                 "facility_kw", "outdoor_c"},
    "collection": {"devices", "up", "stale", "down", "polls", "polls_per_s", "errors",
                   "missed_cycles", "stored", "buffered", "storage_outage_s", "storage_error"},
    "redundancy": {"concurrently_maintainable", "fault_tolerant", "single_points_of_failure",
                   "dropped_racks", "one_feed_racks", "short_halls", "groups"},
    "redundancy.groups": {"id", "kind", "design", "level", "needed", "available", "installed",
                          "load_kw", "capacity_kw", "meets_design"},
    "power_chain": {"id", "name", "type", "depth", "inputs", "kw", "capacity_kw", "status",
                    "monitored", "energised"},
    "cooling": {"id", "name", "type", "kw", "running", "status"},
    "racks": {"id", "hall", "row", "index", "design_kw", "kw", "inlet_c", "rh_pct", "band",
              "quality"},
    "alarms": {"id", "priority", "state", "message", "source", "unit", "device", "series",
               "condition", "latched", "since_ms", "changed_ms", "age_s", "acked_by",
               "acked_ms", "shelved_until_ms", "shelved_by", "shelve_reason", "suppressed_by",
               "out_of_service_by", "announced", "actions"},
    "alarm_counts": {"shown", "unacknowledged", "shelved", "suppressed", "out_of_service",
                     "by_priority"},
    "anomalies": {"severity", "kind", "device", "point", "message", "since_ms", "value"},
    "devices_not_up": {"id", "type", "status", "gateway", "last_error"},
}


def readings(**overrides: float) -> dict[SeriesKey, Sample]:
    """A good sample for every series the live state reads: 1.0 kW, 22.0 degC, 45 % RH..."""
    out: dict[SeriesKey, Sample] = {}
    for key in PLAN.keys:
        if "temp" in key.point:
            value = 22.0
        elif "rh" in key.point:
            value = 45.0
        elif key.point == "unit_status":
            value = 0.0
        else:
            value = 1.0
        out[key] = Sample(key, T, overrides.get(f"{key.device}/{key.point}", value), Quality.GOOD)
    return out


def snapshot(latest: dict[SeriesKey, Sample], health: dict[str, DeviceHealth] | None = None,
             **kw: Any) -> SiteState:
    return build_state(PLAN, latest, health, seq=7, now_ns=T, **kw)


def document(latest: dict[SeriesKey, Sample], health: dict[str, DeviceHealth] | None = None,
             alarms: list[Alarm] | None = None, **kw: Any) -> dict[str, Any]:
    return state_document(snapshot(latest, health, **kw), alarms or [], T, device_types=TYPES)


def test_the_document_keeps_every_field_the_page_and_tools_read() -> None:
    engine = AlarmEngine()
    engine.evaluate([Condition("unit:UPS-A2:down", "unit", Priority.HIGH, "UPS-A2 tripped",
                               unit="UPS-A2")], T)
    health = {"CH-1": DeviceHealth(device_id="CH-1", gateway="gw", status=DeviceStatus.DOWN)}
    episode = Anomaly(series=SeriesKey("rack_monitor", "RM-H1-A01", "inlet_temp_top_c"),
                      layer="envelope", kind="above_allowable", since_ns=T, last_ns=T,
                      raised_ns=T, value=33.0, expected=(15.0, 32.0), score=1.0,
                      severity="major", message="inlet above allowable")
    doc = document(readings(), health, alarms=engine.active(), anomalies=[episode])
    sections: dict[str, Any] = {"": doc, "redundancy.groups": doc["redundancy"]["groups"][0]}
    for name in FIELDS:
        value = sections.get(name, doc.get(name))
        item = value[0] if isinstance(value, list) else value
        assert isinstance(item, dict), name
        assert not FIELDS[name] - set(item), (name, FIELDS[name] - set(item))
    assert doc["seq"] == 7 and doc["site"] == {"id": SITE.id, "name": "Cyberport 5 Data Centre",
                                               "time_ms": T // 1_000_000,
                                               "timezone": "Asia/Hong_Kong",
                                               "tz_abbrev": "HKT", "utc_offset_min": 480}
    assert doc["alarms"][0]["id"] == "unit:UPS-A2:down"
    assert doc["alarms"][0]["state"] == "active_unacknowledged"


SUMMER_2026 = 1_782_000_000  # 2026-06-21 UTC, seconds
WINTER_2026 = 1_796_000_000  # 2026-11-30 UTC, seconds


@pytest.mark.parametrize(("zone", "at_s", "abbrev", "offset_min"), [
    ("Asia/Hong_Kong", WINTER_2026, "HKT", 480),
    ("Asia/Hong_Kong", SUMMER_2026, "HKT", 480),  # no daylight saving since 1979
    ("Europe/London", WINTER_2026, "GMT", 0),
    ("Europe/London", SUMMER_2026, "BST", 60),
    ("America/New_York", SUMMER_2026, "EDT", -240),
    ("Asia/Kolkata", WINTER_2026, "IST", 330),
    ("Asia/Singapore", WINTER_2026, None, 480),  # tzdata names it "+08": no abbreviation
    ("UTC", WINTER_2026, "UTC", 0),
    ("Mars/Olympus_Mons", WINTER_2026, None, None),  # unknown here: the page names the zone
], ids=lambda v: str(v))
def test_the_site_zone_is_named_at_the_documents_time(zone: str, at_s: int,
                                                      abbrev: str | None,
                                                      offset_min: int | None) -> None:
    assert zone_doc(zone, at_s * 1_000_000_000) == {"tz_abbrev": abbrev,
                                                    "utc_offset_min": offset_min}


def test_the_document_names_the_zone_of_the_site_not_of_the_machine() -> None:
    london = snapshot(readings())
    london = dataclasses.replace(london, timezone="Europe/London", time_ns=SUMMER_2026 * 10**9)
    doc = state_document(london, [], SUMMER_2026 * 10**9, device_types=TYPES)
    assert doc["site"]["timezone"] == "Europe/London"
    assert (doc["site"]["tz_abbrev"], doc["site"]["utc_offset_min"]) == ("BST", 60)


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
    racks = {r["id"]: r for r in document(latest)["racks"]}
    assert len(racks) == len(SITE.racks) == 200
    assert (racks["H1-A01"]["inlet_c"], racks["H1-A01"]["band"]) == (28.5, "allowable_high")
    assert (racks["H1-A02"]["inlet_c"], racks["H1-A02"]["band"]) == (33.0, "out_high")
    assert (racks["H1-A03"]["inlet_c"], racks["H1-A03"]["quality"]) == (22.0, "bad")
    assert (racks["H1-A04"]["band"], racks["H1-A04"]["quality"]) == ("recommended", "good")
    assert racks["H1-A04"]["kw"] == 2.0  # feed A + feed B


def test_a_rack_without_readings_is_missing_not_cool() -> None:
    latest = {k: s for k, s in readings().items() if k.device != "RM-H2-B03"}
    rack = next(r for r in document(latest)["racks"] if r["id"] == "H2-B03")
    assert (rack["inlet_c"], rack["band"], rack["quality"], rack["kw"]) == (None, "unknown",
                                                                          "missing", None)


def test_loads_come_from_the_pue_meters_and_need_every_reading() -> None:
    latest = readings(**{"M-UTIL-A/power_kw": 2500.0, "M-UTIL-B/power_kw": 2400.0})
    head = document(latest)["headline"]
    gens = len(SITE.devices_of_type("generator"))
    assert head["facility_kw"] == 2500.0 + 2400.0 + gens * 1.0
    assert head["it_kw"] == 2.0 * len(SITE.racks)
    del latest[SeriesKey("rack_monitor", "RM-H1-A01", "feed_a_power_kw")]
    assert document(latest)["headline"]["it_kw"] is None  # a partial sum would read as a drop


def test_power_chain_is_ordered_from_the_sources_with_live_status() -> None:
    latest = readings(**{"UPS-A2/unit_status": 3.0, "UPS-A1/output_power_kw": 300.0,
                         "M-UPS-A-OUT/power_kw": 1234.0})
    chain = document(latest)["power_chain"]
    depths = [c["depth"] for c in chain]
    assert depths == sorted(depths) and depths[0] == 0
    assert len(chain) == len(SITE.config.electrical)
    by_id = {c["id"]: c for c in chain}
    assert by_id["UTIL-A"]["depth"] == 0 and by_id["TX-A"]["depth"] == 1
    assert by_id["UPS-A"]["depth"] > by_id["UPS-A1"]["depth"] > by_id["MSB-A"]["depth"]
    assert by_id["UPS-A2"]["status"] == "down" and by_id["UPS-A1"]["status"] == "up"
    assert "status word 3" in by_id["UPS-A2"]["why"] and by_id["UPS-A1"]["why"] == ""
    assert by_id["UPS-A1"]["kw"] == 300.0
    assert by_id["UPS-A"]["kw"] == 1234.0  # the system's output meter


def test_a_device_that_is_not_up_makes_its_unit_unknown_and_is_listed() -> None:
    health = {d: DeviceHealth(device_id=d, gateway="gw", status=DeviceStatus.UP)
              for d in ("CRAH-H1-2", "CH-1")}
    health["CRAH-H1-2"].status = DeviceStatus.DOWN
    health["CRAH-H1-2"].errors = 1
    health["CRAH-H1-2"].last_error = "TimeoutError: no answer"
    doc = document(readings(), health)
    cooling = {c["id"]: c for c in doc["cooling"]}
    assert cooling["CRAH-H1-2"]["status"] == "unknown" and cooling["CH-1"]["status"] == "up"
    assert cooling["CH-1"]["running"] is True and cooling["CH-1"]["kw"] == 1.0
    # its last readings are withheld, not shown as live
    assert cooling["CRAH-H1-2"]["running"] is None and cooling["CRAH-H1-2"]["kw"] is None
    assert doc["devices_not_up"] == [{"id": "CRAH-H1-2", "type": "crah", "status": "down",
                                      "gateway": "gw", "last_error": "TimeoutError: no answer"}]


def test_anomalies_newest_first_with_their_series() -> None:
    def anomaly(device: str, since_s: int, severity: str) -> Anomaly:
        key = SeriesKey("rack_monitor", device, "inlet_temp_top_c")
        return Anomaly(series=key, layer="envelope", kind="above_allowable", since_ns=since_s * 10**9,
                       last_ns=T, raised_ns=since_s * 10**9, value=33.0, expected=(15.0, 32.0),
                       score=1.0, severity=severity, message="inlet above allowable")

    episodes = [anomaly("RM-H1-A01", 100, "major"), anomaly("RM-H1-A02", 200, "critical")]
    anomalies = document(readings(), anomalies=episodes)["anomalies"]
    assert [(a["device"], a["severity"], a["since_ms"]) for a in anomalies] == [
        ("RM-H1-A02", "critical", 200_000), ("RM-H1-A01", "major", 100_000)]


def test_without_pue_figures_they_are_absent_not_invented() -> None:
    doc = document(readings())
    assert doc["headline"]["pue"] is None and doc["headline"]["pue_today"] is None
    assert doc["headline"]["ppue_cooling"] is None and doc["anomalies"] == []
    assert doc["alarms"] == [] and doc["alarm_counts"]["shown"] == 0
    assert doc["ashrae"] == {"class": "A1", "recommended_c": [18.0, 27.0],
                             "allowable_c": [15.0, 32.0]}
    # redundancy is judged live from the unit states: every group at its design
    assert doc["redundancy"]["concurrently_maintainable"] is True
    assert all(g["meets_design"] for g in doc["redundancy"]["groups"])


def test_components_without_a_device_follow_what_feeds_them() -> None:
    by_id = {c["id"]: c for c in document(readings())["power_chain"]}
    assert (by_id["MSB-A"]["monitored"], by_id["MSB-A"]["status"]) == (False, "up")
    # utility A lost (its meter reads nothing): its transformer is dead; the ATS and the
    # switchboard behind it are still fed by the generator bus
    by_id = {c["id"]: c for c in document(readings(**{"M-UTIL-A/power_kw": 0.0}))["power_chain"]}
    assert by_id["UTIL-A"]["status"] == "down"
    assert (by_id["TX-A"]["status"], by_id["TX-A"]["energised"]) == ("down", False)
    assert by_id["MSB-A"]["status"] == "up" and by_id["MSB-A"]["energised"] is True


@pytest.mark.parametrize(("collection", "ok"), [
    (Collection(devices=270, up=270, stored=10), True),
    (Collection(devices=270, up=269, buffered=5, storage_outage_s=42.0,
                storage_error="database is locked"), False),
    (Collection(devices=270, up=270, buffer_error="disk full"), False),
], ids=["storing", "storage-outage", "buffer-cannot-write"])
def test_collection_and_health_come_from_the_snapshot(collection: Collection, ok: bool) -> None:
    state = snapshot(readings(), collection=collection)
    doc = state_document(state, [], T)["collection"]
    assert doc["storage_error"] == (collection.storage_error or None)
    assert (doc["devices"], doc["up"], doc["buffered"]) == (270, collection.up, collection.buffered)
    healthy, info = state_health(state)
    assert healthy is ok and info["devices"] == 270 and info["up"] == collection.up
    assert info["storage_outage_s"] == collection.storage_outage_s


def test_alarms_carry_their_state_flags_and_the_actions_allowed() -> None:
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
    doc = document(readings(), alarms=engine.active())
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
