"""The plant model: energy balance, counters, seasons, load shapes, faults, determinism, speed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pytest

from dcim.simulators.plant import PlantHistory, PlantModel
from dcim.simulators.snapshot import Snapshot
from dcim.site import Site, load_site

HK = 8 * 3600
JAN_1 = 1767225600.0 - HK  # 2026-01-01 00:00 Hong Kong
JUL_1 = 1782864000.0 - HK  # 2026-07-01 00:00 Hong Kong
WEDNESDAY_NOON = JAN_1 + 6 * 86400 + 12 * 3600  # 2026-01-07 12:00 HKT


@pytest.fixture(scope="module")
def site() -> Site:
    """The reference site."""
    return load_site("config/cyberport5.yaml")


@pytest.fixture(scope="module")
def day(site: Site) -> PlantHistory:
    """One January day at 1-minute steps."""
    return PlantModel(site, seed=11).history(JAN_1 + 5 * 86400, JAN_1 + 6 * 86400, 60)


def warmed(site: Site, t0: float = WEDNESDAY_NOON, seed: int = 3) -> PlantModel:
    """A model stepped for 5 minutes at 10 s, ready for a fault at t0."""
    model = PlantModel(site, seed=seed)
    for t in np.arange(t0 - 300, t0 + 1, 10.0):
        model.step(float(t))
    return model


def twins(site: Site, kind: str, target: str,
          after_s: float) -> tuple[Snapshot, Snapshot, PlantModel]:
    """The same model with and without a fault, both stepped to after_s past the fault."""
    faulty, healthy = warmed(site), warmed(site)
    faulty.set_fault(kind, target, True)
    t0 = faulty.time_s
    assert t0 is not None
    times = [t for t in np.arange(t0 + 1, t0 + after_s, 10.0)] + [t0 + after_s]
    for t in times:
        snap_f, snap_h = faulty.step(float(t)), healthy.step(float(t))
    return snap_f, snap_h, faulty


def v(snap: Snapshot, device: str, point: str) -> float:
    """One point value of a snapshot."""
    return snap.devices[device].values[point]


def total(snap: Snapshot, prefix: str, point: str) -> float:
    """Sum of a point over devices whose id starts with prefix."""
    return sum(r.values[point] for d, r in snap.devices.items() if d.startswith(prefix))


def it_kw(snap: Snapshot) -> float:
    """IT load at the rack inputs."""
    return total(snap, "RM-", "feed_a_power_kw") + total(snap, "RM-", "feed_b_power_kw")


# ---------------------------------------------------------------- outputs and balances


def test_every_role_point_of_every_device_has_a_finite_value(site: Site) -> None:
    snap = PlantModel(site, seed=1).step(WEDNESDAY_NOON)
    assert set(snap.devices) == set(site.devices)
    for dev in site.devices.values():
        expected = {p.name for p in dev.profile.points if p.role is not None}
        values = snap.devices[dev.id].values
        assert set(values) == expected, dev.id
        assert all(math.isfinite(x) for x in values.values()), dev.id


def test_energy_balance_facility_equals_it_plus_losses_cooling_aux(day: PlantHistory) -> None:
    losses = day.pdu_loss_kw + day.ups_loss_kw + day.tx_loss_kw
    parts = day.it_kw + losses + day.cooling_kw + day.aux_kw
    np.testing.assert_allclose(day.facility_kw, parts, rtol=1e-3)
    # no generator in normal operation
    np.testing.assert_allclose(day.facility_kw, day.utility_kw.sum(axis=1), rtol=1e-12)


def test_meters_agree_with_the_site_series(site: Site) -> None:
    model = PlantModel(site, seed=2)
    snap = model.step(WEDNESDAY_NOON)
    utility = v(snap, "M-UTIL-A", "power_kw") + v(snap, "M-UTIL-B", "power_kw")
    rest = (v(snap, "M-MCC-A", "power_kw") + v(snap, "M-MCC-B", "power_kw")
            + v(snap, "M-AUX", "power_kw") + total(snap, "UPS-", "input_power_kw"))
    assert rest < utility < rest * 1.02  # transformer losses only
    ups_out = v(snap, "M-UPS-A-OUT", "power_kw") + v(snap, "M-UPS-B-OUT", "power_kw")
    pdu_out = total(snap, "PDU-", "output_power_kw")
    assert pdu_out == pytest.approx(it_kw(snap), rel=1e-9)
    assert 1.005 < ups_out / pdu_out < 1.03  # PDU losses 1-2 %


def test_counters_only_grow_and_equal_the_integral_of_power(day: PlantHistory) -> None:
    for key in ("elec_kwh", "mech_kwh", "tower_water_m3", "site_water_m3", "fuel_l", "it_kwh",
                "facility_kwh"):
        assert np.all(np.diff(day.series[key], axis=0) >= 0), key
        assert np.all(day.series[key][0] > 0), key
    hours = (day.time_s - day.time_s[0]) / 3600
    for counter, power in (("it_kwh", day.it_kw), ("facility_kwh", day.facility_kw)):
        grown = day.series[counter][-1, 0] - day.series[counter][0, 0]
        integral = float(np.sum((power[1:] + power[:-1]) / 2 * np.diff(hours)))
        assert grown == pytest.approx(integral, rel=1e-9)


def test_tower_make_up_is_about_1_8_litres_per_kwh_rejected(site: Site) -> None:
    model = PlantModel(site, seed=4)
    start = model.history(JAN_1, JAN_1 + 60, 60).series["tower_water_m3"].sum()
    h = model.history(JAN_1 + 60, JAN_1 + 86400, 60)
    used_l = (h.series["tower_water_m3"][-1].sum() - start) * 1000
    rejected_kwh = float(np.sum(h.it_kw + h.ups_loss_kw + h.pdu_loss_kw) / 60) * 1.15
    assert 1.2 < used_l / rejected_kwh < 2.2


# ---------------------------------------------------------------- seasons and load shapes


def test_pue_is_higher_in_july_than_january_and_in_a_believable_band(site: Site) -> None:
    jan = PlantModel(site, seed=5).history(JAN_1 + 10 * 86400, JAN_1 + 17 * 86400, 600)
    jul = PlantModel(site, seed=5).history(JUL_1 + 10 * 86400, JUL_1 + 17 * 86400, 600)
    pue_jan = jan.facility_kw.sum() / jan.it_kw.sum()
    pue_jul = jul.facility_kw.sum() / jul.it_kw.sum()
    print(f"PUE January {pue_jan:.3f}, July {pue_jul:.3f}")
    assert 1.2 < pue_jan < 1.38
    assert 1.42 < pue_jul < 1.65
    assert jul.wet_bulb_c.mean() > jan.wet_bulb_c.mean() + 8


def test_business_hours_load_is_above_night_load(day: PlantHistory) -> None:
    hour = ((day.time_s + HK) % 86400) / 3600
    assert day.it_kw[(hour >= 10) & (hour < 17)].mean() > 1.04 * day.it_kw[hour < 5].mean()


def test_weekend_load_is_below_weekday_load(site: Site) -> None:
    week = PlantModel(site, seed=6).history(JAN_1 + 4 * 86400, JAN_1 + 11 * 86400, 600)
    weekday = ((week.time_s + HK) // 86400 + 3) % 7  # 0 Monday
    assert week.it_kw[weekday >= 5].mean() < 0.97 * week.it_kw[weekday < 5].mean()


# ---------------------------------------------------------------- equipment faults


def test_ups_module_trip_shares_the_load_among_the_other_four(site: Site) -> None:
    snap, _, model = twins(site, "ups_module_trip", "UPS-A2", 1)
    assert (v(snap, "UPS-A2", "unit_status"), v(snap, "UPS-A2", "fault")) == (3, 1)
    assert v(snap, "UPS-A2", "output_power_kw") == 0
    system = sum(v(snap, f"UPS-A{m}", "output_power_kw") for m in range(1, 6))
    assert system == pytest.approx(v(snap, "M-UPS-A-OUT", "power_kw"), rel=1e-9)
    for m in (1, 3, 4, 5):
        assert v(snap, f"UPS-A{m}", "output_power_kw") == pytest.approx(system / 4, rel=1e-9)
    assert [(f.kind, f.target) for f in model.active_faults()] == [("ups_module_trip", "UPS-A2")]


def test_pdu_breaker_open_moves_its_racks_to_the_b_feed(site: Site) -> None:
    snap, healthy, _ = twins(site, "pdu_breaker_open", "PDU-A-H1-1", 1)
    racks = [r for r in site.racks.values() if r.feed_a == "PDU-A-H1-1"]
    assert len(racks) == 20 and v(snap, "PDU-A-H1-1", "output_power_kw") == 0
    for rack in racks:
        dev = f"RM-{rack.id}"
        whole = v(healthy, dev, "feed_a_power_kw") + v(healthy, dev, "feed_b_power_kw")
        assert v(snap, dev, "feed_a_power_kw") == 0
        assert v(snap, dev, "feed_b_power_kw") == pytest.approx(whole, rel=1e-9)
    assert it_kw(snap) == pytest.approx(it_kw(healthy), rel=1e-9)


def test_utility_loss_of_both_feeds_runs_on_battery_then_generators(site: Site) -> None:
    faulty = warmed(site)
    faulty.set_fault("utility_loss", "all", True)
    t0 = faulty.time_s
    assert t0 is not None
    gap = faulty.step(t0 + 5)
    assert v(gap, "ATS-A-CTRL", "source") == v(gap, "ATS-B-CTRL", "source") == 0
    assert all(v(gap, f"UPS-{s}{m}", "on_battery") == 1 for s in "AB" for m in range(1, 6))
    assert total(gap, "UPS-", "input_power_kw") == 0 and v(gap, "GEN-1-CTRL", "running") == 1
    fuel = v(gap, "GEN-1-CTRL", "fuel_used_l")
    on_gen = faulty.step(t0 + 11)
    assert v(on_gen, "ATS-A-CTRL", "source") == v(on_gen, "ATS-B-CTRL", "source") == 2
    assert v(on_gen, "M-UTIL-A", "power_kw") == v(on_gen, "M-UTIL-B", "power_kw") == 0
    gens = total(on_gen, "GEN-", "power_kw")
    loads = (total(on_gen, "UPS-", "input_power_kw") + v(on_gen, "M-MCC-A", "power_kw")
             + v(on_gen, "M-MCC-B", "power_kw") + v(on_gen, "M-AUX", "power_kw"))
    assert gens == pytest.approx(loads, rel=1e-9) and gens > it_kw(on_gen)
    later = faulty.step(t0 + 600)
    assert v(later, "GEN-1-CTRL", "fuel_used_l") > fuel
    assert v(later, "GEN-1-CTRL", "fuel_level_pct") < v(gap, "GEN-1-CTRL", "fuel_level_pct")
    assert v(later, "CH-1", "running") + v(later, "CH-2", "running") >= 1  # restarted on generator


def test_ups_battery_mode_drains_charge_and_runtime(site: Site) -> None:
    faulty = warmed(site)
    faulty.set_fault("ups_battery", "UPS-A", True)
    t0 = faulty.time_s
    assert t0 is not None
    first, later = faulty.step(t0 + 1), faulty.step(t0 + 300)
    assert v(first, "UPS-A1", "ups_mode") == 3 and v(first, "UPS-A1", "input_power_kw") == 0
    assert v(later, "UPS-A1", "battery_charge_pct") < v(first, "UPS-A1", "battery_charge_pct") < 100
    assert v(later, "UPS-A1", "battery_runtime_s") < v(first, "UPS-A1", "battery_runtime_s")
    assert v(later, "UPS-B1", "ups_mode") == 1
    faulty.set_fault("ups_battery", "UPS-A", False)
    back = faulty.step(t0 + 360)
    assert v(back, "UPS-A1", "ups_mode") == 1 and faulty.active_faults() == []
    recharge = v(back, "UPS-A1", "input_power_kw") - v(back, "UPS-A1", "output_power_kw")
    assert recharge > 10


def test_ups_bypass_sets_the_mode_and_cuts_losses(site: Site) -> None:
    snap, healthy, _ = twins(site, "ups_bypass", "UPS-B3", 1)
    assert (v(snap, "UPS-B3", "ups_mode"), v(snap, "UPS-B3", "on_bypass")) == (2, 1)
    loss = v(snap, "UPS-B3", "input_power_kw") - v(snap, "UPS-B3", "output_power_kw")
    healthy_loss = v(healthy, "UPS-B3", "input_power_kw") - v(healthy, "UPS-B3", "output_power_kw")
    assert 0 < loss < healthy_loss / 3


def test_crah_trip_warms_its_hall_most_near_the_unit(site: Site) -> None:
    snap, healthy, _ = twins(site, "crah_trip", "CRAH-H1-1", 300)
    assert v(snap, "CRAH-H1-1", "unit_status") == 3 and v(snap, "CRAH-H1-1", "fan_power_kw") == 0

    def rise(rack: str) -> float:
        """Top inlet temperature rise of a rack against the healthy twin."""
        point = "inlet_temp_top_c"
        return v(snap, f"RM-{rack}", point) - v(healthy, f"RM-{rack}", point)

    hall = [r.id for r in site.racks_in_hall("H1")]
    assert np.mean([rise(r) for r in hall]) > 0.3
    assert rise("H1-A05") > rise("H1-J05") + 1.0  # row A sits by CRAH-H1-1
    assert abs(np.mean([rise(r.id) for r in site.racks_in_hall("H2")])) < 1e-9


def test_chiller_trip_starts_the_standby_after_the_delay(site: Site) -> None:
    faulty = warmed(site)
    before = faulty.step(faulty.time_s + 1)  # type: ignore[operator]
    running = [c for c in ("CH-1", "CH-2", "CH-3") if v(before, c, "running")]
    standby = [c for c in ("CH-1", "CH-2", "CH-3") if c not in running]
    faulty.set_fault("chiller_trip", running[0], True)
    t0 = faulty.time_s
    assert t0 is not None
    waiting = faulty.step(t0 + 170)
    assert v(waiting, running[0], "unit_status") == 3 and v(waiting, standby[0], "running") == 0
    assert v(waiting, "CH-1", "chw_supply_temp_c") > v(before, "CH-1", "chw_supply_temp_c") + 1.0
    started = faulty.step(t0 + 185)
    assert v(started, standby[0], "running") == 1
    assert sum(v(started, c, "running") for c in ("CH-1", "CH-2", "CH-3")) == len(running)


def test_pump_failure_hands_over_to_the_standby(site: Site) -> None:
    snap, healthy, _ = twins(site, "pump_failure", "CHWP-1", 1)
    assert v(snap, "CHWP-1", "unit_status") == 3 and v(snap, "CHWP-1", "flow_m3h") == 0
    assert v(snap, "CHWP-3", "running") == 1
    assert total(snap, "CHWP-", "flow_m3h") == pytest.approx(total(healthy, "CHWP-", "flow_m3h"))


@pytest.mark.parametrize(("kind", "target"), [("meteor", "UPS-A1"), ("crah_trip", "CH-1"),
                                              ("utility_loss", "UTIL-C")],
                         ids=["unknown-kind", "wrong-target-type", "unknown-feed"])
def test_bad_faults_are_refused(site: Site, kind: str, target: str) -> None:
    with pytest.raises(ValueError, match=kind if kind == "meteor" else target):
        PlantModel(site).set_fault(kind, target, True)


# ---------------------------------------------------------------- time, determinism, speed


def test_stepping_matches_the_vectorised_history(site: Site) -> None:
    times = np.arange(JAN_1, JAN_1 + 3 * 3600, 60.0)
    h = PlantModel(site, seed=7).history(times[0], times[-1] + 1, 60)
    stepped = PlantModel(site, seed=7)
    snaps = [stepped.step(float(t)) for t in times]
    utility = [v(s, "M-UTIL-A", "power_kw") + v(s, "M-UTIL-B", "power_kw") for s in snaps]
    np.testing.assert_allclose(utility, h.facility_kw, rtol=1e-9)
    np.testing.assert_allclose([it_kw(s) for s in snaps], h.it_kw, rtol=1e-9)
    np.testing.assert_allclose([v(s, "WX-1", "wet_bulb_c") for s in snaps], h.wet_bulb_c, rtol=1e-9)
    ranged = list(PlantModel(site, seed=7).simulate_range(times[0], times[-1] + 1, 60))
    for a, b in zip(snaps[::30], ranged[::30]):
        for dev in ("RM-H2-C04", "CH-2", "UPS-B4"):
            for point, value in a.devices[dev].values.items():
                assert b.devices[dev].values[point] == pytest.approx(value, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("seed_b", "same"), [(9, True), (10, False)],
                         ids=["same-seed", "other-seed"])
def test_runs_are_deterministic_by_seed(site: Site, seed_b: int, same: bool) -> None:
    def run(seed: int) -> dict[str, float]:
        """One rack monitor's values at a fixed time."""
        return PlantModel(site, seed=seed).step(WEDNESDAY_NOON).devices["RM-H1-B03"].values

    assert (run(9) == run(seed_b)) is same


@pytest.mark.parametrize("bad", [lambda t: t, lambda t: t - 60], ids=["same-time", "backwards"])
def test_time_must_move_forward(site: Site, bad: Callable[[float], float]) -> None:
    model = PlantModel(site)
    model.step(JAN_1)
    with pytest.raises(ValueError, match="increase"):
        model.step(bad(JAN_1))


def test_thirty_days_of_one_minute_history_is_fast(site: Site) -> None:
    start = time.perf_counter()
    h = PlantModel(site, seed=8).history(JUL_1, JUL_1 + 30 * 86400, 60)
    elapsed = time.perf_counter() - start
    print(f"30 days x 1 min ({len(h.time_s)} steps) in {elapsed:.2f} s; PUE "
          f"{h.pue.min():.3f}/{h.pue.mean():.3f}/{h.pue.max():.3f}")
    assert len(h.time_s) == 30 * 1440 and elapsed < 60
