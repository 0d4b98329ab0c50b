"""dcim/alarms/sources.py: one condition per problem, from the reference site's real analysis."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dcim.alarms.engine import NS, AlarmEngine
from dcim.alarms.sources import (anomaly_conditions, conditions, device_conditions,
                                redundancy_conditions, storage_conditions, unit_conditions)
from dcim.alarms.types import Priority
from dcim.config.alarms import AlarmsConfig
from dcim.live.build import build_state, plan
from dcim.live.state import Collection, SiteState
from dcim.analytics.anomaly_base import Anomaly
from dcim.analytics.redundancy import analyse
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.site import load_site
from dcim.storage.base import SeriesKey

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
PLAN = plan(SITE)


def health(**status: str) -> dict[str, DeviceHealth]:
    out = {}
    for device_id, s in status.items():
        h = DeviceHealth(device_id=device_id, gateway="gw", status=DeviceStatus(s))
        if s != "up":
            h.errors, h.last_error = 3, "TimeoutError: no response"
        out[device_id] = h
    return out


def anomaly(device: str, point: str, layer: str, severity: str, score: float = 1.0,
            confidence: float = 1.0) -> Anomaly:
    return Anomaly(series=SeriesKey("rack_monitor", device, point), layer=layer, kind="high",
                   since_ns=0, last_ns=0, raised_ns=0, value=30.0, expected=27.0, score=score,
                   severity=severity, message=f"{device} {point} high", confidence=confidence)


@pytest.mark.parametrize(("states", "expected"), [
    pytest.param({}, [], id="all-up"),
    pytest.param({"UPS-A3": False}, [("redundancy:ups-a-modules:below_design", "high")],
                 id="one-module-of-n+1"),
    pytest.param({"UPS-A3": False, "UPS-A4": False},
                 [("redundancy:ups-2n:below_design", "high"),
                  ("redundancy:ups-a-modules:below_n", "critical"),
                  ("redundancy:site:not_concurrently_maintainable", "high")],
                 id="two-modules-ups-a-below-n"),
    pytest.param({"PDU-A-H1-1": False},
                 [("redundancy:site:not_concurrently_maintainable", "high"),
                  ("redundancy:racks_on_one_feed", "medium")], id="a-pdu-open"),
    pytest.param({"CRAH-H1-1": False, "CRAH-H1-2": False},
                 [("redundancy:crah-h1:below_n", "critical"),
                  ("redundancy:site:not_concurrently_maintainable", "high"),
                  ("redundancy:H1:short_of_cooling", "critical")], id="two-crahs-hall-short"),
])
def test_redundancy_conditions_on_the_reference_site(states: dict[str, bool],
                                                     expected: list[tuple[str, str]]) -> None:
    found = redundancy_conditions(analyse(SITE, states))
    assert [(c.alarm_id, c.priority.value) for c in found] == expected
    if states.get("PDU-A-H1-1") is False:
        assert "PDU-B-H1-1" in found[0].message and "20 dual-corded racks" in found[1].message


def test_device_conditions_skip_what_is_up_or_not_polled_yet() -> None:
    h = health(**{"UPS-A3": "down", "PDU-A-H1-2": "stale", "WX-1": "down", "CRAH-H1-1": "up"})
    h["NEW-1"] = DeviceHealth(device_id="NEW-1", gateway="gw")  # stale, never polled, no error
    found = {c.alarm_id: c for c in device_conditions(SITE, h)}
    assert set(found) == {"device:UPS-A3:comm", "device:PDU-A-H1-2:comm", "device:WX-1:comm"}
    assert found["device:UPS-A3:comm"].priority is Priority.HIGH
    assert found["device:PDU-A-H1-2:comm"].priority is Priority.MEDIUM
    assert found["device:WX-1:comm"].priority is Priority.LOW
    assert "TimeoutError" in found["device:UPS-A3:comm"].message
    assert found["device:PDU-A-H1-2:comm"].unit == "PDU-A-H1-2"


def test_unit_conditions_say_what_happened() -> None:
    found = {c.unit: c.message for c in unit_conditions(SITE, ["UPS-A3", "PDU-A-H1-1"])}
    assert found == {"UPS-A3": "ups_module UPS-A3 tripped",
                     "PDU-A-H1-1": "pdu PDU-A-H1-1 de-energised: every rack feed from it reads zero"}


def test_anomalies_are_one_alarm_per_device_and_layer_at_the_worst_severity() -> None:
    found = anomaly_conditions(SITE, [
        anomaly("RM-H1-A01", "inlet_temp_top_c", "envelope", "medium", 2.0),
        anomaly("RM-H1-A01", "inlet_temp_middle_c", "envelope", "high", 1.0),
        anomaly("RM-H1-A01", "inlet_temp_bottom_c", "envelope", "low", 3.0),
        anomaly("RM-H1-A01", "inlet_temp_top_c", "rate", "low"),
        anomaly("RM-H1-A02", "inlet_temp_top_c", "envelope", "low")])
    by_id = {c.alarm_id: c for c in found}
    assert set(by_id) == {"anomaly:envelope:RM-H1-A01", "anomaly:rate:RM-H1-A01",
                          "anomaly:envelope:RM-H1-A02"}
    top = by_id["anomaly:envelope:RM-H1-A01"]
    assert top.priority is Priority.HIGH and top.unit == "H1-A01" and len(top.series) == 3
    assert top.message == "RM-H1-A01 inlet_temp_middle_c high (and 2 more series) (confidence 1.00)"


@pytest.mark.parametrize(("confidences", "priority", "said"), [
    pytest.param((0.95,), Priority.HIGH, "0.95", id="sure-keeps-its-severity"),
    pytest.param((0.3, 0.6), Priority.LOW, "0.60", id="unsure-is-low-and-not-paged"),
    pytest.param((0.3, 0.91), Priority.HIGH, "0.91", id="the-surest-of-the-group-counts"),
])
def test_anomaly_alarms_carry_their_confidence_and_only_sure_ones_keep_priority(
        confidences: tuple[float, ...], priority: Priority, said: str) -> None:
    # the reference site keeps the default alarms.anomaly.page_min_confidence, 0.9
    assert SITE.config.alarms.anomaly.page_min_confidence == 0.9
    found = anomaly_conditions(SITE, [anomaly("RM-H1-A01", f"inlet_temp_{i}", "generic", "high",
                                              confidence=c) for i, c in enumerate(confidences)])
    assert [(c.priority, c.message.endswith(f"(confidence {said})")) for c in found] == [
        (priority, True)]


def snapshot(health: dict[str, DeviceHealth] | None = None, down: tuple[str, ...] = (),
             anomalies: tuple[Anomaly, ...] = (), collection: Collection | None = None
             ) -> SiteState:
    """A live snapshot of the reference site with the given units down."""
    state = build_state(PLAN, {}, health or {}, seq=1, now_ns=0, anomalies=anomalies,
                        collection=collection)
    units = {uid: replace(u, state="down", why="test") if uid in down else u
             for uid, u in state.units.items()}
    return replace(state, units=units)


def test_a_silent_device_suppresses_its_anomalies_only() -> None:
    state = snapshot(health(**{"RM-H1-A01": "down"}), anomalies=(
        anomaly("RM-H1-A01", "inlet_temp_top_c", "sensor", "medium"),
        anomaly("RM-H1-A02", "inlet_temp_top_c", "sensor", "medium")))
    found, by = conditions(SITE, state)
    assert {c.alarm_id for c in found} == {"device:RM-H1-A01:comm", "anomaly:sensor:RM-H1-A01",
                                          "anomaly:sensor:RM-H1-A02"}
    assert by["anomaly:sensor:RM-H1-A01"] == ("device:RM-H1-A01:comm",)
    engine = AlarmEngine(AlarmsConfig())
    engine.evaluate(found, 0, suppress_by=by)
    assert engine.alarms["anomaly:sensor:RM-H1-A01"].suppressed_by == \
        "reported by device:RM-H1-A01:comm"
    assert engine.alarms["anomaly:sensor:RM-H1-A02"].suppressed_by is None


def test_a_gateway_that_is_down_is_one_alarm_above_its_devices() -> None:
    gw = SITE.devices["PDU-A-H1-1"].gateway.id
    ids = [d.id for d in SITE.devices.values() if d.gateway.id == gw]
    h = {d: DeviceHealth(d, gw, status=DeviceStatus.DOWN, errors=3, last_ok_ns=1,
                         last_error="TimeoutError") for d in ids}
    found, by = conditions(SITE, snapshot(h, collection=Collection(gateways_down=(gw,))))
    gateway = [c for c in found if c.alarm_id == f"gateway:{gw}:comm"]
    assert len(gateway) == 1 and f"none of its {len(ids)} devices answer" in gateway[0].message
    engine = AlarmEngine(AlarmsConfig(delays={"device": {"on_delay_s": 0, "off_delay_s": 0}}))
    events = engine.evaluate(found, 0, suppress_by=by)
    announced = [e.alarm_id for e in events if e.announce]
    assert announced == [f"gateway:{gw}:comm"]  # one page for the gateway, not one per device
    assert all(engine.alarms[f"device:{d}:comm"].suppressed for d in ids)


@pytest.mark.parametrize(("outage_s", "raised"), [(0.0, False), (29.9, False), (30.0, True)])
def test_a_storage_outage_alarms_after_half_a_minute(outage_s: float, raised: bool) -> None:
    stats = Collection(storage_outage_s=outage_s, buffered=12_345,
                       storage_error="ConnectionRefused")
    found = storage_conditions("influxdb1", stats)
    assert bool(found) is raised
    if raised:
        assert found[0].alarm_id == "storage:influxdb1:unreachable"
        assert "12,345 samples held" in found[0].message


def test_a_buffer_that_cannot_write_is_its_own_high_alarm() -> None:
    found, _ = conditions(SITE, snapshot(collection=Collection(
        buffer_error="[Errno 28] No space left on device", lost_samples=21_460)))
    alarm = next(c for c in found if c.alarm_id == "storage:buffer:cannot_write")
    assert alarm.priority is Priority.HIGH and "21,460 samples lost" in alarm.message
    assert not any(c.alarm_id.startswith("storage:storage") for c in found)  # not blamed on the store


def test_a_status_word_trip_is_not_announced_twice() -> None:
    trip = Anomaly(series=SeriesKey("ups_module", "UPS-A3", "unit_status"), layer="status",
                   kind="tripped", since_ns=0, last_ns=0, raised_ns=0, value=3.0, expected=None,
                   score=1.0, severity="high", message="UPS-A3 unit_status: tripped")
    other = Anomaly(series=SeriesKey("ups_module", "UPS-A4", "unit_status"), layer="status",
                    kind="alarm", since_ns=0, last_ns=0, raised_ns=0, value=2.0, expected=None,
                    score=1.0, severity="medium", message="UPS-A4 unit_status: alarm")
    found, by = conditions(SITE, snapshot(down=("UPS-A3",), anomalies=(trip, other)))
    assert {"unit:UPS-A3:down", "anomaly:status:UPS-A3", "anomaly:status:UPS-A4"} <= {
        c.alarm_id for c in found}
    engine = AlarmEngine(AlarmsConfig())
    events = engine.evaluate(found, 0, suppress_by=by)
    assert engine.alarms["anomaly:status:UPS-A3"].suppressed_by == "reported by unit:UPS-A3:down"
    assert not engine.alarms["anomaly:status:UPS-A4"].suppressed
    assert [e.alarm_id for e in events if e.announce and "UPS-A3" in e.alarm_id] == [
        "unit:UPS-A3:down"]
    # The trip ends (the module restarts) but the status anomaly's episode lingers: the trip
    # alarm is latched until reset, so the anomaly stays suppressed and nothing is announced.
    # (Suppression used to follow the live trip: a second HIGH alarm was paged here.)
    t = 0
    still, by = conditions(SITE, snapshot(anomalies=(trip, other)))
    for t in range(1, 400, 5):
        events = engine.evaluate(still, t * NS, suppress_by=by)
        assert not [e for e in events if e.announce and e.alarm_id == "anomaly:status:UPS-A3"]
    assert engine.alarms["unit:UPS-A3:down"].latched
    assert engine.alarms["anomaly:status:UPS-A3"].suppressed
    # once the operator resets the trip, what is still abnormal is shown on its own
    engine.reset("unit:UPS-A3:down", "lee", (t + 1) * NS)
    events = engine.evaluate(still, (t + 2) * NS, suppress_by=by)
    assert not engine.alarms["anomaly:status:UPS-A3"].suppressed


def _generic(device: str, point: str, measurement: str = "rack_monitor",
             layer: str = "generic") -> Anomaly:
    return Anomaly(series=SeriesKey(measurement, device, point), layer=layer,
                   kind="level_shift", since_ns=0, last_ns=0, raised_ns=0, value=1.0,
                   expected=None, score=1.0, severity="high", message=f"{device} {point}")


def test_what_a_trip_moves_is_suppressed_as_its_consequence_and_news_is_not() -> None:
    """A UPS module trip shifts its siblings' load and a CRAH trip warms its hall: the
    statistical layers' alarms on those are consequences (suppressed while the trip alarm is
    active, latched until reset); an envelope breach and a sensor fault stay news."""
    anomalies = (
        _generic("UPS-A4", "output_power_kw", "ups_module"),       # sibling takes the load
        _generic("RM-H2-A01", "inlet_temp_top_c"),                # hall 2 warms
        _generic("RM-H2-A02", "feed_a_power_kw"),                 # electrical, no power trip
        _generic("RM-H1-A01", "inlet_temp_top_c"),                # hall 1: not cooled by H2
        _generic("RM-H2-A03", "inlet_temp_top_c", layer="envelope"),  # out of ASHRAE: news
        _generic("RM-H2-A04", "inlet_temp_top_c", layer="sensor"),    # a drifting sensor: news
    )
    found, by = conditions(SITE, snapshot(down=("UPS-A3", "CRAH-H2-3"), anomalies=anomalies))
    engine = AlarmEngine(AlarmsConfig())
    events = engine.evaluate(found, 0, suppress_by=by)
    suppressed = {a.id: a.suppressed_by for a in engine.alarms.values() if a.suppressed}
    assert suppressed == {"anomaly:generic:UPS-A4": "reported by unit:UPS-A3:down",
                          "anomaly:generic:RM-H2-A01": "reported by unit:CRAH-H2-3:down",
                          "anomaly:generic:RM-H2-A02": "reported by unit:UPS-A3:down"}
    announced = {e.alarm_id for e in events if e.announce}
    assert {"anomaly:generic:RM-H1-A01", "anomaly:envelope:RM-H2-A03",
            "anomaly:sensor:RM-H2-A04", "unit:UPS-A3:down", "unit:CRAH-H2-3:down"} <= announced
    assert not announced & set(suppressed)
    # one rack's air and power in one alarm: either trip explains it
    mixed = (_generic("RM-H2-A05", "inlet_temp_top_c"), _generic("RM-H2-A05", "feed_a_power_kw"))
    found, by = conditions(SITE, snapshot(down=("UPS-A3",), anomalies=mixed))
    assert "unit:UPS-A3:down" in by["anomaly:generic:RM-H2-A05"]
    assert "unit:CRAH-H2-3:down" in by["anomaly:generic:RM-H2-A05"]
    # with no trip at all, the same statistics are announced
    found, by = conditions(SITE, snapshot(anomalies=anomalies))
    fresh = AlarmEngine(AlarmsConfig())
    events = fresh.evaluate(found, 0, suppress_by=by)
    assert set(suppressed) <= {e.alarm_id for e in events if e.announce}
