"""PUE and its family: counter deltas by hand, figures by hand, and the reference site's July."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from dcim.analytics.energy import EnergyDelta, energy_delta, rollover_for
from dcim.analytics.pue import (
    Period,
    cue,
    dcie,
    emission_factor_for,
    periods,
    ppue_cooling,
    ppue_distribution,
    pue,
    site_figures,
    wue,
)
from dcim.analytics.pue_meters import EnergyMeters, energy_meters, energy_totals
from dcim.simulators.plant import PlantHistory, PlantModel
from dcim.site import Site, load_site
from dcim.config.site import EmissionFactor, ModbusProfile
from dcim.storage.base import Quality, SeriesKey

NS = 1_000_000_000
H = 3600 * NS
DAY = 24 * H
HK = 8 * 3600
JUL_1 = 1782864000 - HK  # 2026-07-01 00:00 Hong Kong, s
T0 = JUL_1 * NS
STEP_NS = 300 * NS  # hand-worked series: a sample every 5 minutes


def ramp(kw: float, *, start_kwh: float = 5000.0, hours: float = 24.0,
         step_ns: int = STEP_NS) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A meter drawing a constant kW from T0 for some hours (both ends sampled)."""
    t = T0 + np.arange(0, int(hours * H) + 1, step_ns, dtype=np.int64)
    return t, start_kwh + kw * (t - T0) / H


# ---------------------------------------------------------------- counters by hand


@dataclass(frozen=True)
class Case:
    """One counter series, what to compute over it, and what must come out."""

    t: NDArray[np.int64]
    v: NDArray[np.float64]
    kwh: float
    coverage: float = 1.0
    resets: int = 0
    rollovers: int = 0
    gaps: int = 0
    rejected: int = 0
    kwargs: dict[str, Any] | None = None
    period: tuple[int, int] = (T0, T0 + DAY)


def _cases() -> dict[str, Case]:
    """60 kW for one day (1440 kWh, 5 kWh a step), spoilt in the ways meters spoil it."""
    t, v = ramp(60.0)
    k = 100  # the sample where things happen (08:20)
    zeroed = v.copy()
    zeroed[k:] = v[k:] - v[k - 1]  # zeroed just after sample k-1: counts 5 kWh by sample k
    replaced = v.copy()
    replaced[k:] = 20000.0 + v[k:] - v[k]  # a new meter with its own reading
    wrapped = (900.0 + (v - v[0])) % 1000.0  # 900 -> 2340: wraps at 1000 and 2000
    far = v.copy()
    far[k:] = 3.0 + v[k:] - v[k]  # a drop no modulus explains: reset, 3 kWh counted since
    dip = v.copy()
    dip[k] = 3.0  # one low reading, the next back on track
    gap = (t <= T0 + 10 * H) | (t >= T0 + 12 * H)  # nothing between 10:00 and 12:00
    late = t >= T0 + H
    bad_q = np.full(len(t), int(Quality.GOOD))
    bad_q[[10, 50, 51]] = int(Quality.BAD)
    bad_q[60] = int(Quality.STALE)
    garbage = v.copy()
    garbage[[10, 50, 51, 60]] = [0.0, 1e9, 7.0, 0.0]
    garbage[[70, 80]] = [np.nan, -1.0]
    spiked = v.copy()
    spiked[k] = v[k] + 1e6
    order = np.r_[np.arange(len(t))[::-1], [5]]  # reversed, one sample duplicated
    return {
        "simple": Case(t, v, 1440.0),
        "reset_zeroed_meter_counts_from_zero": Case(t, zeroed, 1440.0, resets=1),
        "reset_replaced_meter_loses_one_step": Case(
            t, replaced, 1435.0, coverage=1 - 300 / 86400, resets=1, gaps=1),
        "rollover_at_modulus": Case(t, wrapped, 1440.0, rollovers=2,
                                    kwargs={"rollover_kwh": 1000.0}),
        "drop_no_modulus_explains_is_a_reset": Case(t, far, 1438.0, resets=1,
                                                     kwargs={"rollover_kwh": 1e6}),
        "dip_glitch_rejected": Case(t, dip, 1440.0, rejected=1),
        "gap_2h_keeps_the_delta_loses_coverage": Case(
            t[gap], v[gap], 1440.0, coverage=22 / 24, gaps=1),
        "boundary_interpolation": Case(t, v, 1435.0,
                                       period=(T0 + 150 * NS, T0 + DAY - 150 * NS)),
        "series_starts_late": Case(t[late], v[late], 1380.0, coverage=23 / 24, gaps=1),
        # samples 50 and 51 both dropped: a 15-minute hole, over the 10-minute max_gap
        "bad_quality_nan_negative_ignored": Case(
            t, garbage, 1440.0, coverage=1 - 900 / 86400, gaps=1, rejected=6,
            kwargs={"quality": bad_q}),
        "spike_rejected": Case(t, spiked, 1440.0, rejected=1),
        "unsorted_and_duplicated": Case(t[order], v[order], 1440.0),
        "wide_max_gap_covers_the_gap": Case(t[gap], v[gap], 1440.0,
                                            kwargs={"max_gap_s": 3 * 3600.0}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_energy_delta_by_hand(case: Case) -> None:
    """Counter increase, coverage and event counts of hand-worked series."""
    got = energy_delta(case.t, case.v, start_ns=case.period[0], end_ns=case.period[1],
                       **(case.kwargs or {}))
    assert got.kwh == pytest.approx(case.kwh, rel=1e-9)
    assert got.coverage == pytest.approx(case.coverage, abs=1e-9)
    assert (got.resets, got.rollovers, got.gaps, got.rejected) == (
        case.resets, case.rollovers, case.gaps, case.rejected)


@pytest.mark.parametrize("name", ["simple", "reset_zeroed_meter_counts_from_zero",
                                  "rollover_at_modulus", "gap_2h_keeps_the_delta_loses_coverage"])
@pytest.mark.parametrize("split_h", [0.1, 9.0, 11.0, 17.3])
def test_energy_delta_is_additive_over_adjacent_periods(name: str, split_h: float) -> None:
    """Two halves add up to the whole, wherever the split falls (inside a gap too)."""
    case = CASES[name]
    mid = T0 + int(split_h * H)
    kwargs = case.kwargs or {}

    def over(a: int, b: int) -> EnergyDelta:
        """The case's counter over [a, b]."""
        return energy_delta(case.t, case.v, start_ns=a, end_ns=b, **kwargs)
    whole, first, second = over(T0, T0 + DAY), over(T0, mid), over(mid, T0 + DAY)
    assert first.kwh + second.kwh == pytest.approx(whole.kwh, rel=1e-12)
    covered = first.coverage * (mid - T0) + second.coverage * (T0 + DAY - mid)
    assert covered / DAY == pytest.approx(whole.coverage, rel=1e-12)


def test_energy_delta_without_samples_has_no_coverage() -> None:
    """No samples: nothing measured, coverage 0; an empty period is an error."""
    empty = np.zeros(0, dtype=np.int64)
    got = energy_delta(empty, empty.astype(float), start_ns=T0, end_ns=T0 + H)
    assert (got.kwh, got.coverage) == (0.0, 0.0)
    with pytest.raises(ValueError, match="empty period"):
        energy_delta(empty, empty.astype(float), start_ns=T0, end_ns=T0)


@pytest.fixture(scope="module")
def site() -> Site:
    """The reference site."""
    return load_site("config/cyberport5.yaml")


@pytest.mark.parametrize(("device", "point", "sunssf", "expected"), [
    ("RM-H1-A01", "feed_a_energy_kwh", None, 4_294_967.296),  # uint32 Wh
    ("GEN-1-CTRL", "energy_kwh", None, 4_294_967_296.0),  # uint32 kWh
    ("UPS-A1", "output_energy_kwh", None, 429_496_729.6),  # uint32 x 0.1 kWh
    ("M-UTIL-A", "energy_kwh", None, None),  # int64: signed, no wrap to 0
    ("PDU-A-H1-1", "output_energy_kwh", None, None),  # acc32 x 10^sf: sf unknown here
    ("PDU-A-H1-1", "output_energy_kwh", 1, 42_949_672.96),  # acc32 Wh x 10^1
    ("M-UTIL-A", "power_kw", None, None),  # float32
    ("CH-1", "energy_kwh", None, None),  # OPC UA double
], ids=["rack-uint32-wh", "genset-uint32-kwh", "ups-uint32-0.1", "pm-int64", "sunspec-no-sf",
        "sunspec-sf1", "float", "opcua"])
def test_rollover_for_follows_type_and_scale(site: Site, device: str, point: str,
                                             sunssf: int | None, expected: float | None) -> None:
    """Modulus of a counter from its Modbus type and scale (SunSpec: with the live sf)."""
    dev = next(d for d in site.devices.values() if d.id == device or d.monitors == device)
    got = rollover_for(dev, point, sunssf=sunssf)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_rollover_for_unknown_point_is_an_error(site: Site) -> None:
    """A point the profile does not have is named in the error."""
    with pytest.raises(KeyError, match="no point 'nope'"):
        rollover_for(site.devices["M-UTIL-A"], "nope")


# ---------------------------------------------------------------- figures by hand

F, I, C, O, W = (SeriesKey("meter", name, "energy_kwh") for name in ("F", "I", "C", "O", "W"))
HAND = EnergyMeters(boundary="it_input", category="PUE3", level="advanced", grid=(F,),
                    generator=(), generator_basis="electrical", it=(I,), cooling=(C,),
                    other=(O,), water=(W,))
FACTORS = [EmissionFactor(year=2019, kg_co2e_per_kwh=0.81),
           EmissionFactor(year=2026, kg_co2e_per_kwh=0.65)]


def hand_data(facility_kw: float = 150.0) -> dict[SeriesKey, Any]:
    """Facility 150 kW, IT 100, cooling 35, other 5 (distribution 10), water 0.2 m3/h."""
    return {F: ramp(facility_kw), I: ramp(100.0), C: ramp(35.0), O: ramp(5.0),
            W: ramp(0.2, start_kwh=100.0)}


def test_two_meters_known_pue_and_its_family() -> None:
    """PUE 1.5, pPUE 1.35 and 1.10, DCiE 66.7 %, CUE 0.975, WUE 2 L/kWh, all PUE3."""
    totals = energy_totals(HAND, hand_data(), T0, T0 + DAY)
    fig = pue(totals, min_coverage=0.95)
    assert fig.value == pytest.approx(1.5)
    assert (fig.category, fig.level, fig.reason, fig.coverage) == ("PUE3", "advanced", None, 1.0)
    assert fig.facility_kwh == pytest.approx(3600.0) and fig.it_kwh == pytest.approx(2400.0)
    assert fig.interim
    assert ppue_cooling(totals, min_coverage=0.95).value == pytest.approx(1.35)
    assert ppue_distribution(totals, min_coverage=0.95).value == pytest.approx(1.10)
    assert dcie(fig).value == pytest.approx(100 / 1.5)
    carbon = cue(fig, FACTORS)
    assert carbon.value == pytest.approx(0.65 * 1.5)
    assert "2026" in carbon.note
    assert wue(totals, min_coverage=0.95).value == pytest.approx(2.0)


@pytest.mark.parametrize(("bound", "value"), [(0.95, None), (0.90, 1.5)],
                         ids=["below-bound-no-figure", "above-bound-figure"])
def test_two_hour_gap_against_the_coverage_bound(bound: float, value: float | None) -> None:
    """A 2 h gap on the facility meter: coverage 0.917, so a figure only with a bound under it."""
    data = hand_data()
    t, v = data[F]
    keep = (t <= T0 + 10 * H) | (t >= T0 + 12 * H)
    data[F] = (t[keep], v[keep])
    fig = pue(energy_totals(HAND, data, T0, T0 + DAY), min_coverage=bound)
    assert fig.coverage == pytest.approx(22 / 24)
    assert fig.weakest == F
    assert fig.ratio == pytest.approx(1.5)  # the counter delta across the gap is still right
    if value is None:
        assert fig.value is None
        assert fig.reason is not None and "coverage 0.917 below the configured 0.950" in fig.reason
        assert dcie(fig).value is None and cue(fig, FACTORS).value is None
    else:
        assert fig.value == pytest.approx(value) and fig.reason is None


def test_pue_at_or_below_one_is_flagged_never_given() -> None:
    """Facility below IT is a metering error: no value, the raw ratio kept for diagnosis."""
    fig = pue(energy_totals(HAND, hand_data(facility_kw=90.0), T0, T0 + DAY), min_coverage=0.95)
    assert fig.value is None and fig.ratio == pytest.approx(0.9)
    assert fig.reason is not None and "metering error" in fig.reason


def test_unmetered_it_boundary_and_missing_series_give_no_figure() -> None:
    """Racks without a meter, or a meter with no data at all, withhold the figure."""
    unmetered = replace(HAND, unmetered=("H1-A01",))
    fig = pue(energy_totals(unmetered, hand_data(), T0, T0 + DAY), min_coverage=0.95)
    assert fig.value is None and "H1-A01" in (fig.reason or "")
    data = hand_data()
    del data[I]
    fig = pue(energy_totals(HAND, data, T0, T0 + DAY), min_coverage=0.95)
    assert fig.value is None and fig.coverage == 0.0 and fig.weakest == I


def test_wue_needs_water_meters() -> None:
    """No water meters: WUE None with the reason."""
    dry = replace(HAND, water=())
    fig = wue(energy_totals(dry, hand_data(), T0, T0 + DAY), min_coverage=0.95)
    assert fig.value is None and fig.reason == "no water meters"


@pytest.mark.parametrize(("year", "chosen", "fallback"), [
    (2026, 2026, False), (2030, 2026, True), (2020, 2019, True), (2019, 2019, False),
    (2018, None, False)], ids=["exact", "later-year", "between", "first", "before-all"])
def test_emission_factor_for_year(year: int, chosen: int | None, fallback: bool) -> None:
    """The year's factor, else the latest earlier one (said so), else none."""
    factor, note = emission_factor_for(FACTORS, year)
    assert (factor.year if factor else None) == chosen
    assert ("latest year before" in note) == fallback


def test_cue_uses_the_periods_local_year() -> None:
    """A 2027 period falls back to the 2026 factor and says so."""
    data = {key: (t + 365 * DAY, v) for key, (t, v) in hand_data().items()}
    fig = pue(energy_totals(HAND, data, T0 + 365 * DAY, T0 + 366 * DAY), min_coverage=0.95)
    carbon = cue(fig, FACTORS)
    assert carbon.value == pytest.approx(0.65 * 1.5)
    assert "latest year before 2027" in carbon.note


def _local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    """UTC ns of a Hong Kong wall time."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    return int(datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Asia/Hong_Kong")).timestamp()) * NS


AT = _local(2026, 7, 15, 9, 30)


@pytest.mark.parametrize(("kind", "start", "end"), [
    ("live", _local(2026, 7, 15, 9, 15), AT),
    ("day", _local(2026, 7, 15), _local(2026, 7, 16)),
    ("month", _local(2026, 7, 1), _local(2026, 8, 1)),
    ("trailing_12_months", _local(2025, 7, 15, 9, 30), AT),
], ids=["live", "day", "month", "trailing-12-months"])
def test_periods_in_local_time(kind: Any, start: int, end: int) -> None:
    """Live 15 min, local day and month, trailing 12 months."""
    assert periods(kind, AT) == Period(kind, start, end)


def test_periods_to_date_and_month_ends() -> None:
    """A running day ends now; 31 March less 12 months... and December rolls the year."""
    assert periods("day", AT, to_date=True).end_ns == AT
    assert periods("month", _local(2026, 12, 31, 23)).end_ns == _local(2027, 1, 1)
    leap = periods("trailing_12_months", _local(2029, 2, 28))
    assert leap.start_ns == _local(2028, 2, 28)
    with pytest.raises(ValueError, match="unknown period kind"):
        periods("week", AT)  # type: ignore[arg-type]


@pytest.mark.parametrize(("boundary", "category", "level", "it_series"), [
    ("ups_output", "PUE1", "basic", 2), ("pdu_output", "PUE2", "intermediate", 20),
    ("it_input", "PUE3", "advanced", 400)], ids=["PUE1", "PUE2", "PUE3"])
def test_category_follows_the_configured_it_boundary(site: Site, boundary: str, category: str,
                                                     level: str, it_series: int) -> None:
    """The boundary in the site file picks the IT meters and the category reported."""
    info = site.config.site
    config = site.config.model_copy(update={"site": info.model_copy(
        update={"pue": info.pue.model_copy(update={"it_boundary": boundary})})})
    variant = Site(config=config, source=None, racks=site.racks, devices=site.devices)
    meters = energy_meters(variant)
    assert (meters.category, meters.level, len(meters.it), meters.unmetered) == (
        category, level, it_series, ())
    assert [k.device for k in meters.grid] == ["M-UTIL-A", "M-UTIL-B"]
    assert [k.device for k in meters.cooling] == ["M-MCC-A", "M-MCC-B"]
    assert [k.device for k in meters.other] == ["M-AUX"]
    assert [k.device for k in meters.water] == ["WM-1"]
    assert [k.device for k in meters.generator] == ["GEN-1-CTRL", "GEN-2-CTRL", "GEN-3-CTRL"]


# ---------------------------------------------------------------- the reference site, July

RUN_STEP_S = 900  # 15 min: the snapshot path costs ~3.5 ms a step (5 min would take ~30 s)
RUN_DAYS = 30
RUN_END = JUL_1 + RUN_DAYS * 86400


@dataclass
class Run:
    """The reference site over 30 July days: device counters and the plant's own kW series."""

    site: Site
    meters: EnergyMeters
    data: dict[SeriesKey, tuple[NDArray[np.int64], NDArray[np.float64]]]
    history: PlantHistory


def _resolution(site: Site, key: SeriesKey) -> float | None:
    """Register resolution of an integer Modbus counter (the device reports whole steps)."""
    profile = site.devices[key.device].profile
    if not isinstance(profile, ModbusProfile):
        return None
    point = next(p for p in profile.points if p.name == key.point)
    if point.type in ("float32", "float64") or point.scale_factor_point:
        return None
    return abs(point.scale)


@pytest.fixture(scope="module")
def run(site: Site) -> Run:
    """Counters as the devices report them (snapshots) and, from a twin model, kW series."""
    meters = energy_meters(site)
    keys = meters.all_series()
    times: list[float] = []
    columns: dict[SeriesKey, list[float]] = {k: [] for k in keys}
    model = PlantModel(site, seed=0)
    for snap in model.simulate_range(JUL_1, RUN_END + RUN_STEP_S, RUN_STEP_S):  # end sampled
        times.append(snap.time_s)
        for key in keys:
            columns[key].append(snap.devices[key.device].values[key.point])
    t_ns = np.round(np.array(times) * NS).astype(np.int64)
    data = {}
    for key in keys:
        values = np.array(columns[key])
        step = _resolution(site, key)
        data[key] = (t_ns, np.floor(values / step) * step if step else values)
    history = PlantModel(site, seed=0).history(JUL_1, RUN_END + RUN_STEP_S, RUN_STEP_S)
    return Run(site, meters, data, history)


def _independent(h: PlantHistory) -> dict[str, float]:
    """kWh of each term by the trapezoid rule over the plant's site-level kW series."""
    def kwh(kw: NDArray[np.float64]) -> float:
        """Trapezoid integral of kW over the run's times, in kWh."""
        return float(np.trapezoid(kw, h.time_s) / 3600.0)
    facility = kwh(h.utility_kw.sum(axis=1) + h.generator_kw)
    it = kwh(h.it_kw)
    losses = kwh(h.ups_loss_kw + h.pdu_loss_kw + h.tx_loss_kw)  # measured nowhere as a meter
    return {"facility": facility, "it": it, "pue": facility / it,
            "ppue_cooling": (kwh(h.cooling_kw) + it) / it, "ppue_distribution": (losses + it) / it}


def test_reference_site_july_matches_an_independent_calculation(run: Run) -> None:
    """PUE3, pPUE cooling and distribution, CUE from counters = trapezoid of the kW series."""
    figs = site_figures(run.site, run.data, JUL_1 * NS, RUN_END * NS, meters=run.meters,
                        max_gap_s=2 * RUN_STEP_S)
    ref = _independent(run.history)
    fig = figs.pue
    assert (fig.category, fig.level, fig.coverage, fig.reason) == ("PUE3", "advanced", 1.0, None)
    assert fig.facility_kwh == pytest.approx(ref["facility"], rel=5e-3)
    assert fig.it_kwh == pytest.approx(ref["it"], rel=5e-3)
    assert fig.value == pytest.approx(ref["pue"], rel=5e-3)
    assert figs.ppue_cooling.value == pytest.approx(ref["ppue_cooling"], rel=5e-3)
    assert figs.ppue_distribution.value == pytest.approx(ref["ppue_distribution"], rel=5e-3)
    assert figs.cue.value == pytest.approx(0.65 * ref["pue"], rel=5e-3)  # 2026 factor
    assert figs.dcie.value == pytest.approx(100.0 / ref["pue"], rel=5e-3)
    assert figs.wue.value is not None and 0.5 < figs.wue.value < 5.0
    assert fig.value is not None and 1.40 < fig.value < 1.50  # docs/plant-model.md: July about 1.45


def test_reference_site_rollover_and_gap_leave_the_figure_and_cost_coverage(run: Run) -> None:
    """A rack counter wrapped at a small modulus and 3 h cut from a utility meter: same PUE."""
    start, end = JUL_1 * NS, RUN_END * NS
    base = energy_totals(run.meters, run.data, start, end, max_gap_s=2 * RUN_STEP_S)
    rack = SeriesKey("rack_monitor", "RM-H1-A01", "feed_a_energy_kwh")
    util = SeriesKey("meter", "M-UTIL-A", "energy_kwh")
    modulus = 1000.0  # declared for this test: ~1.8 MWh a month wraps it twice
    data: dict[SeriesKey, Any] = dict(run.data)
    t, v_rack = run.data[rack]
    data[rack] = (t, v_rack % modulus)
    t, v = run.data[util]
    cut = (t >= start + 10 * DAY) & (t < start + 10 * DAY + 3 * H)
    data[util] = (t[~cut], v[~cut])
    meters = replace(run.meters, rollover_kwh={**run.meters.rollover_kwh, rack: modulus})
    spoilt = energy_totals(meters, data, start, end, max_gap_s=2 * RUN_STEP_S)
    wraps = int(v_rack[-1] // modulus - v_rack[0] // modulus)
    assert wraps >= 1 and spoilt.deltas[rack].rollovers == wraps
    assert spoilt.deltas[rack].kwh == pytest.approx(base.deltas[rack].kwh, abs=1e-6)
    assert spoilt.deltas[util].gaps == 1
    gap_s = 3 * 3600 + RUN_STEP_S  # from the last sample before the cut to the first after
    expected = 1 - gap_s / (RUN_DAYS * 86400)
    assert spoilt.coverage["grid"] == pytest.approx(expected)
    before = pue(base, min_coverage=0.95)
    after = pue(spoilt, min_coverage=0.95)
    assert after.value == pytest.approx(before.value, rel=1e-12)
    assert after.coverage == pytest.approx(expected) and after.weakest == util
    assert isinstance(spoilt.deltas[util], EnergyDelta)


def test_rounding_jitter_is_not_a_reset() -> None:
    """A flat counter read once as a float and then at 1 kWh resolution steps back by 0.4:
    no energy, not a reset (which would count the whole reading as energy)."""
    from dcim.analytics.energy import energy_delta

    t = np.array([0, 60, 120, 180, 240], dtype=np.int64) * 1_000_000_000
    kwh = np.array([99220.4, 99220.4, 99220.0, 99220.0, 99221.0])
    delta = energy_delta(t, kwh, start_ns=0, end_ns=int(t[-1]))
    assert delta.resets == 0
    assert delta.kwh == pytest.approx(0.6)
