"""The live state: built in memory from the newest values, on the reference site's plant model.

The plant model (simulators/plant.py) produces every device's readings as a perfect collector
would; the live state is fed them through its sink interface, exactly as the collectors do.
"""

from __future__ import annotations

import logging

import asyncio
import math
from dataclasses import replace
from pathlib import Path

import pytest

from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.live.build import build_state, plan, transitions
from dcim.live.service import LiveState, derived_samples
from dcim.simulators.backfill import snapshot_samples
from dcim.simulators.plant import PlantModel
from dcim.site import load_site
from dcim.storage.base import Quality, Sample, SeriesKey

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
T0 = 1_783_000_800.0  # 2026-07-02 22:00 HKT
NS = 1_000_000_000


class ListSink:
    """A sink that keeps what it is given (the durable forwarder's place)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.cycles: list[tuple[str, object]] = []

    def add(self, samples: object, *, cycle: str | None = None) -> None:
        self.samples.extend(samples)  # type: ignore[call-overload]
        if cycle is not None:
            self.cycles.append(("done", cycle))

    def begin_cycle(self, tag: str, expected: int) -> None:
        self.cycles.append(("begin", (tag, expected)))


def feed(live: LiveState, plant: PlantModel, minutes: int, *, step_s: float = 60.0,
         start_s: float = T0) -> list[float]:
    """Step the plant and feed the live state; returns the instantaneous PUE of each step."""
    ratios = []
    for i in range(minutes + 1):
        t = start_s + i * step_s
        snap = plant.step(t)
        live.add(list(snapshot_samples(SITE, snap)))
        live.rebuild(int(t * NS))
        util = sum(snap.devices[m].values["power_kw"] for m in ("M-UTIL-A", "M-UTIL-B"))
        gens = sum(snap.devices[f"GEN-{g}-CTRL"].values["power_kw"] for g in (1, 2, 3))
        it = sum(v for d in SITE.devices_of_type("rack_monitor")
                 for k, v in snap.devices[d.id].values.items() if k.endswith("_power_kw"))
        ratios.append((util + gens) / it)
    return ratios


def all_up() -> dict[str, DeviceHealth]:
    return {d.id: DeviceHealth(d.id, d.gateway.id, status=DeviceStatus.UP, last_ok_ns=1)
            for d in SITE.devices.values()}


def test_a_healthy_site_is_all_up_with_live_pue_from_memory() -> None:
    sink = ListSink()
    health = all_up()
    live = LiveState(SITE, sink, health=lambda: health)
    ratios = feed(live, PlantModel(SITE, seed=4), 20)
    state = live.current()
    assert {u.state for u in state.units.values()} == {"up"}
    assert all(u.energised for u in state.units.values() if u.layer == "electrical")
    assert state.redundancy is not None and state.redundancy.concurrently_maintainable
    assert state.redundancy.group("crah-h1").available == 7
    # an independent estimate: mean of the instantaneous power ratio over the last 15 minutes
    assert state.pue_live is not None and state.pue_live.pue.category == "PUE3"
    assert state.pue_live.pue.value == pytest.approx(sum(ratios[-16:]) / 16, rel=0.01)
    assert state.it_kw is not None and state.facility_kw is not None
    assert state.facility_kw / state.it_kw == pytest.approx(ratios[-1], rel=0.01)
    assert len(state.racks) == len(SITE.racks) and {r.band for r in state.racks} == {"recommended"}
    # the derived series went into the sink (durable path), not to a store
    derived = {s.series.point: s.value for s in sink.samples if s.series.measurement == "analytics"}
    assert derived["concurrently_maintainable"] == 1.0
    assert derived["redundancy_ups-a-modules_spare"] >= 1


@pytest.mark.parametrize(("kind", "target", "down_unit", "why"), [
    pytest.param("crah_trip", "CRAH-H1-1", "CRAH-H1-1", "status word 3", id="crah-trip"),
    pytest.param("ups_module_trip", "UPS-A3", "UPS-A3", "status word", id="ups-module-trip"),
    pytest.param("pdu_breaker_open", "PDU-A-H1-1", "PDU-A-H1-1", "rack feeds from it read",
                 id="pdu-open"),
])
def test_a_fault_takes_its_unit_down_with_why_and_is_a_transition(
        kind: str, target: str, down_unit: str, why: str) -> None:
    sink = ListSink()
    health = all_up()
    live = LiveState(SITE, sink, health=lambda: health)
    plant = PlantModel(SITE, seed=4)
    feed(live, plant, 2)
    seq = live.current().seq
    plant.set_fault(kind, target, True)
    feed(live, plant, 0, start_s=T0 + 180)
    state = live.current()
    assert state.seq == seq + 1
    unit = state.units[down_unit]
    assert unit.state == "down" and why in unit.why and not unit.energised
    assert state.down == {down_unit}
    changes = [t for t in live.transitions if t.subject == down_unit]
    # the first snapshot records where every unit starts; then only changes
    assert [(t.before, t.after) for t in changes] == [(None, "up"), ("up", "down")]
    stored = [s for s in sink.samples if s.series == SeriesKey("transition", down_unit, "state")]
    assert [(s.time_ns, s.value) for s in stored] == [(int(T0 * NS), 1.0),
                                                       (int((T0 + 180) * NS), 0.0)]
    if kind == "pdu_breaker_open":
        assert state.redundancy is not None and len(state.redundancy.one_feed_racks) == 20
        assert not state.redundancy.concurrently_maintainable
        assert any(t.what == "concurrently_maintainable" and t.after == "false"
                   for t in live.transitions)


def test_every_state_is_stored_again_each_hour_changed_or_not(
        caplog: pytest.LogCaptureFixture) -> None:
    """A report reading the transitions never carries a state more than an hour past a
    sample the store missed; restating logs nothing and adds no second sample to a change."""
    from dcim.live.service import RESTATE_EVERY_S

    sink = ListSink()
    health = all_up()
    live = LiveState(SITE, sink, health=lambda: health)
    plant = PlantModel(SITE, seed=4)
    feed(live, plant, 0)
    key = SeriesKey("transition", "UPS-A3", "state")
    plant.set_fault("ups_module_trip", "UPS-A3", True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dcim.live.service"):
        feed(live, plant, 0, start_s=T0 + RESTATE_EVERY_S)  # a change at the restatement
        feed(live, plant, 0, start_s=T0 + RESTATE_EVERY_S + 60)
        feed(live, plant, 0, start_s=T0 + 2 * RESTATE_EVERY_S)
    stored = [(s.time_ns, s.value) for s in sink.samples if s.series == key]
    assert stored == [(int(T0 * NS), 1.0), (int((T0 + RESTATE_EVERY_S) * NS), 0.0),
                      (int((T0 + 2 * RESTATE_EVERY_S) * NS), 0.0)]
    other = [s.time_ns for s in sink.samples if s.series == SeriesKey("transition", "UPS-A1",
                                                                       "state")]
    assert other == [int(T0 * NS), int((T0 + RESTATE_EVERY_S) * NS),
                     int((T0 + 2 * RESTATE_EVERY_S) * NS)]
    logged = [r for r in caplog.records if "UPS-A1" in r.getMessage()]
    assert logged == []  # a restated, unchanged unit is not a transition in the log


def test_a_device_that_is_not_up_gives_no_values_and_its_unit_is_unknown() -> None:
    health = all_up()
    live = LiveState(SITE, None, health=lambda: health)
    plant = PlantModel(SITE, seed=4)
    feed(live, plant, 1)
    crah = next(d for d in SITE.devices.values() if d.monitors == "CRAH-H1-2")
    health[crah.id] = DeviceHealth(crah.id, crah.gateway.id, status=DeviceStatus.DOWN,
                                   errors=2, last_ok_ns=1, last_error="TimeoutError")
    state = live.rebuild(int((T0 + 120) * NS))
    unit = state.units["CRAH-H1-2"]
    assert unit.state == "unknown" and "TimeoutError" in unit.why and unit.kw is None
    assert not any(k.device == crah.id for k in state.values)


def test_the_dashboard_rule_set_is_the_topology_one_an_overloaded_ups_system_drops() -> None:
    """Energisation comes from analytics/topology.py, UPS overload rule included: with too
    few modules for the load, the UPS system and what it feeds are not energised."""
    p = plan(SITE)
    health = all_up()
    values = {}
    for cid in ("UPS-A1", "UPS-A2", "UPS-A3", "UPS-A4"):  # UPS A left with one module
        device = next(d for d in SITE.devices.values() if d.monitors == cid)
        key = device.series("unit_status")
        values[key] = Sample(key, 0, 3.0, Quality.GOOD)
    state = build_state(p, values, health, seq=1, now_ns=0)
    assert state.units["UPS-A5"].state == "up"
    ups_a = next(u for u in state.units.values() if u.kind == "ups_system" and "A" in u.id)
    assert not ups_a.energised
    assert state.redundancy is not None and not state.redundancy.fault_tolerant


def test_units_of_devices_not_polled_yet_are_unknown_not_up() -> None:
    state = build_state(plan(SITE), {}, {}, seq=1, now_ns=0)  # collectors, nothing polled
    assert state.units["UPS-A3"].state == "unknown"
    assert state.units["UPS-A3"].why.endswith("not polled yet")


def test_transitions_list_unit_states_and_verdicts_between_snapshots() -> None:
    p = plan(SITE)
    a = build_state(p, {}, None, seq=1, now_ns=0)
    units = dict(a.units)
    units["CRAH-H1-1"] = replace(units["CRAH-H1-1"], state="down", why="tripped")
    b = replace(a, seq=2, time_ns=5, units=units)
    assert [(t.subject, t.before, t.after) for t in transitions(a, b)] == [
        ("CRAH-H1-1", "up", "down")]
    first = transitions(None, a)
    assert len([t for t in first if t.what == "state"]) == len(a.units)
    assert all(t.before is None for t in first)


def test_derived_series_are_nan_and_bad_when_withheld() -> None:
    state = build_state(plan(SITE), {}, None, seq=1, now_ns=0)
    out = {s.series.point: s for s in derived_samples(state, 7)}
    assert math.isnan(out["it_kw_live"].value) and out["it_kw_live"].quality is Quality.BAD
    assert out["concurrently_maintainable"].value == 1.0


async def test_rebuilds_are_coalesced_and_readers_are_woken() -> None:
    health = all_up()
    live = LiveState(SITE, ListSink(), health=lambda: health, min_interval_s=0.2)
    plant = PlantModel(SITE, seed=4)
    await live.start()
    try:
        seen = live.version.value
        snap = list(snapshot_samples(SITE, plant.step(T0)))
        for _ in range(50):  # fifty cycles ending together
            live.add(snap)
        await asyncio.wait_for(live.version.wait_past(seen), 1.0)
        await asyncio.sleep(0.5)
        assert 1 <= live.builds - 1 <= 3  # one at start, then at most a few for 50 adds
    finally:
        await live.close()


async def test_cycle_markers_and_samples_reach_the_sink_unchanged() -> None:
    sink = ListSink()
    live = LiveState(SITE, sink)
    key = SeriesKey("meter", "M-UTIL-A", "power_kw")
    live.begin_cycle("modbus:GW:5s", 1)
    live.add([Sample(key, 1, 900.0)], cycle="modbus:GW:5s")
    assert sink.cycles == [("begin", ("modbus:GW:5s", 1)), ("done", "modbus:GW:5s")]
    assert sink.samples == [Sample(key, 1, 900.0)]
    assert live.value(key) == Sample(key, 1, 900.0)
