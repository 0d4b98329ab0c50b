"""Redundancy analysis: textbook topologies worked out by hand, the reference site with faults."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dcim.analytics.redundancy import (
    Loads, RedundancyReport, Topology, analyse, compile_topology, level_text, meets_design,
)
from dcim.analytics.topology import needed_units, power, resolve_loads, states_vector
from dcim.site import load_site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.site.profiles import REFERENCE_PROFILES

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "cyberport5.yaml"


# ---------------------------------------------------------------- level rules


@pytest.mark.parametrize("design,needed,available,level,meets", [
    ("2N", 1, 2, "2N", True), ("2N", 1, 3, "2N+1", True), ("2N", 2, 3, "N+1", False),
    ("2N", 1, 1, "N", False), ("2N", 1, 0, "below N", False), ("N+1", 4, 5, "N+1", True),
    ("N+1", 4, 4, "N", False), ("N+1", 15, 17, "N+2", True), ("N+2", 2, 3, "N+1", False),
    ("N", 2, 2, "N", True), ("N+1", 6, 5, "below N", False), ("2N+1", 1, 3, "2N+1", True),
], ids=lambda v: str(v))
def test_level_text_and_design(design: str, needed: int, available: int, level: str,
                               meets: bool) -> None:
    assert level_text(design, needed, available) == level
    assert meets_design(design, needed, available) is meets


@pytest.mark.parametrize("load,units,needed", [
    (1600, [400] * 5, 4), (1601, [400] * 5, 5), (840, [150] * 7, 6), (0, [400] * 2, 1),
    (900, [600, 300, 300], 2), (2000, [400, 400], 5),
    # not finite: cannot be shown to fit, so one more than installed (once a ValueError)
    (math.nan, [400] * 5, 6), (math.inf, [400] * 5, 6), (-math.inf, [400] * 5, 1),
    (math.nan, [], 1),
], ids=["exact", "just-over", "crah", "no-load", "mixed-sizes", "more-than-installed",
        "nan-load", "inf-load", "minus-inf-load", "nan-load-no-units"])
def test_needed_units(load: float, units: list[float], needed: int) -> None:
    assert needed_units(load, np.array(units, dtype=float)) == needed


# ---------------------------------------------------------------- textbook topologies


def _site(electrical: list[dict[str, Any]], racks: list[dict[str, Any]],
          mechanical: list[dict[str, Any]] | None = None,
          groups: list[dict[str, Any]] | None = None) -> Topology:
    """A minimal valid site around a plant graph: one hall 'H1' of the given racks."""
    data = {
        "site": {"id": "t", "name": "textbook", "location": {"latitude": 22.3, "longitude": 114.2},
                 "grid": {"supplier": "x", "emission_factors": [
                     {"year": 2026, "kg_co2e_per_kwh": 0.7}]}},
        "gateways": [{"id": "gw", "protocol": "modbus_tcp"}],
        "profiles": {"rack_monitor": copy.deepcopy(REFERENCE_PROFILES["rack_monitor"])},
        "electrical": electrical, "mechanical": mechanical or [],
        "redundancy_groups": groups or [],
        "halls": [{"id": "H1", "rows": [{"id": "R", "design_kw": 20.0, "racks": racks}]}],
    }
    return compile_topology(site_from_dict(data))


def _e(cid: str, ctype: str, kw: float, inputs: list[str] | None = None,
       group: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": cid, "type": ctype, "capacity_kw": kw}
    if inputs:
        entry["inputs"] = inputs
    if group:
        entry["group"] = group
    return entry


def _racks(n: int, a: str, b: str | None) -> list[dict[str, Any]]:
    return [{"id": f"R{i}", "feed_a": a, "feed_b": b} if b else
            {"id": f"R{i}", "feed_a": a, "single_corded": True} for i in range(1, n + 1)]


TWO_N = [
    _e("U1", "utility_feed", 500), _e("U2", "utility_feed", 500),
    _e("M-A", "ups_module", 100, ["U1"]), _e("UPS-A", "ups_system", 100, ["M-A"], "ups-2n"),
    _e("M-B", "ups_module", 100, ["U2"]), _e("UPS-B", "ups_system", 100, ["M-B"], "ups-2n"),
    _e("PDU-A", "pdu", 100, ["UPS-A"]), _e("PDU-B", "pdu", 100, ["UPS-B"]),
]
TWO_N_GROUPS = [{"id": "ups-2n", "kind": "ups_system", "design": "2N"}]
N_PLUS_1 = [
    _e("U", "utility_feed", 500),
    *[_e(f"M{i}", "ups_module", 50, ["U"], "modules") for i in (1, 2, 3)],
    _e("UPS", "ups_system", 100, ["M1", "M2", "M3"]),
    _e("PDU-1", "pdu", 100, ["UPS"]), _e("PDU-2", "pdu", 100, ["UPS"]),
]
SHARED = [
    _e("U1", "utility_feed", 500), _e("U2", "utility_feed", 500),
    _e("SWB", "switchboard", 500, ["U1", "U2"]),
    _e("PDU-A", "pdu", 100, ["SWB"]), _e("PDU-B", "pdu", 100, ["SWB"]),
]
MCC = [_e("MCC-A", "switchboard", 100, ["U1"]), _e("MCC-B", "switchboard", 100, ["U2"])]
CRAH = [{"id": f"CRAH-{i}", "type": "crah", "capacity_kw": 50, "rated_power_kw": 3,
         "serves": ["H1"], "powered_from": ["MCC-A", "MCC-B"], "group": "crah-h1"}
        for i in (1, 2, 3)]


@dataclass
class Case:
    """A textbook topology, a state, and what was worked out by hand."""

    id: str
    topo: Topology | None  # None: the reference site
    states: dict[str, bool] = field(default_factory=dict)
    loads: Loads = Loads()
    levels: dict[str, str] = field(default_factory=dict)
    cm: bool = True
    ft: bool = True
    spofs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # component -> racks
    short: dict[str, tuple[str, ...]] = field(default_factory=dict)  # component -> halls
    dropped_now: tuple[str, ...] = ()
    short_now: tuple[str, ...] = ()
    one_feed: tuple[str, ...] = ()


ALL4 = ("R1", "R2", "R3", "R4")
HEAT_100 = Loads(hall_heat_kw={"H1": 100.0})  # 2 of 3 CRAH of 50 kW: N = 2


def _cases() -> list[Case]:
    two_n = _site(TWO_N, _racks(4, "PDU-A", "PDU-B"), groups=TWO_N_GROUPS)
    n1 = _site(N_PLUS_1, _racks(4, "PDU-1", "PDU-2"),
               groups=[{"id": "modules", "kind": "ups_module", "design": "N+1"}])
    shared = _site(SHARED, _racks(4, "PDU-A", "PDU-B"))
    single = _site(TWO_N, _racks(3, "PDU-A", "PDU-B") + [
        {"id": "R4", "feed_a": "PDU-A", "single_corded": True}], groups=TWO_N_GROUPS)
    crah = _site(TWO_N + MCC, _racks(4, "PDU-A", "PDU-B"), CRAH,
                 TWO_N_GROUPS + [{"id": "crah-h1", "kind": "crah", "design": "N+1"}])
    return [
        # 80 kW on 100 kW systems: N = 1 system, 2 available; any single loss leaves one side.
        Case("2n-all-healthy", two_n, levels={"ups-2n": "2N"}),
        Case("2n-side-a-down", two_n, {"U1": False}, levels={"ups-2n": "N"},
             cm=False, ft=False, one_feed=ALL4,
             spofs={c: ALL4 for c in ("U2", "M-B", "UPS-B", "PDU-B")}),
        # 80 kW on 3 x 50 kW modules: N = 2. The system bus and the utility are single paths.
        Case("n+1-modules", n1, levels={"modules": "N+1"}, cm=False, ft=False,
             spofs={"U": ALL4, "UPS": ALL4}),
        Case("n+1-one-module-tripped", n1, {"M1": False}, levels={"modules": "N"},
             cm=False, ft=False, spofs={"U": ALL4, "UPS": ALL4, "M2": ALL4, "M3": ALL4}),
        # two modules down: 50 kW cannot carry 80 kW, the system drops (capacity rule)
        Case("n+1-two-modules-tripped", n1, {"M1": False, "M2": False},
             levels={"modules": "below N"}, cm=False, ft=False, dropped_now=ALL4),
        Case("n+1-at-half-load", n1, {"M1": False}, Loads(rack_kw={r: 10.0 for r in ALL4}),
             levels={"modules": "N+1"}, cm=False, ft=False, spofs={"U": ALL4, "UPS": ALL4}),
        # A and B from PDUs on one switchboard: the board is a single point for every rack
        Case("shared-switchboard", shared, cm=False, ft=False, spofs={"SWB": ALL4}),
        # a single-corded rack hangs on the whole A chain, and on nothing else
        Case("single-corded-rack", single, levels={"ups-2n": "2N"}, cm=False, ft=False,
             spofs={c: ("R4",) for c in ("U1", "M-A", "UPS-A", "PDU-A")}),
        # CRAH N+1 (3 x 50 kW for 100 kW): one trip -> N, still cooled; two -> below N, short
        Case("crah-n+1", crah, loads=HEAT_100, levels={"crah-h1": "N+1", "ups-2n": "2N"}),
        Case("crah-one-trip", crah, {"CRAH-1": False}, HEAT_100, levels={"crah-h1": "N"},
             cm=False, ft=False, short={"CRAH-2": ("H1",), "CRAH-3": ("H1",)}),
        Case("crah-two-trips", crah, {"CRAH-1": False, "CRAH-2": False}, HEAT_100,
             levels={"crah-h1": "below N"}, cm=False, ft=False, short_now=("H1",)),
        # one MCC down: every CRAH switches to the other board, which becomes a single point
        Case("crah-one-board-down", crah, {"MCC-A": False}, HEAT_100,
             levels={"crah-h1": "N+1"}, cm=False, ft=False,
             short={"U2": ("H1",), "MCC-B": ("H1",)}),
    ]


CASES = _cases()


def _check(report: RedundancyReport, case: Case) -> None:
    for gid, level in case.levels.items():
        assert report.group(gid).level == level, report.summary()
    assert report.concurrently_maintainable is case.cm, report.summary()
    assert report.fault_tolerant is case.ft, report.summary()
    spofs = {c.component: c.dropped_racks for c in report.single_points_of_failure
             if c.dropped_racks}
    assert spofs == case.spofs, report.summary()
    short = {c.component: c.short_halls for c in report.single_points_of_failure
             if c.short_halls}
    assert short == case.short, report.summary()
    assert report.dropped_racks == case.dropped_now
    assert report.short_halls == case.short_now
    assert report.one_feed_racks == case.one_feed


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_textbook_topology(case: Case) -> None:
    assert case.topo is not None
    _check(analyse(case.topo, case.states, case.loads), case)


def test_single_corded_rack_is_listed_and_not_on_one_feed() -> None:
    topo = next(c.topo for c in CASES if c.id == "single-corded-rack")
    assert topo is not None
    report = analyse(topo)
    assert report.single_corded_racks == ("R4",)
    assert "active-active paths" not in " ".join(report.tier4_features)


# ---------------------------------------------------------------- reference site


@pytest.fixture(scope="module")
def reference() -> Topology:
    return compile_topology(load_site(REFERENCE))


H1_PDU1 = tuple(f"H1-{row}{i:02d}" for row in "AB" for i in range(1, 11))
DESIGN_LEVELS = {"ups-2n": "2N", "utility": "2N", "generators": "N+1", "ups-a-modules": "N+1",
                 "ups-b-modules": "N+1", "chillers": "N+1", "chw-pumps": "N+1",
                 "cw-pumps": "N+1", "cooling-towers": "N+1", "crah-h1": "N+1", "crah-h2": "N+1"}

# Design loads: IT 1,600 kW (200 x 8 kW), hall heat 800 x 1.05 = 840 kW, plant heat 1,760 kW,
# facility 1,600 / 0.96 + running mechanical 584 + aux 60 = 2,311 kW.
REFERENCE_FAULTS = [
    Case("healthy", None, levels=DESIGN_LEVELS),
    # 4 of 5 modules for 1,600 kW / 400 kW = 4: N; system A still carries all IT -> 2N holds
    Case("ups-a1-trip", None, {"UPS-A1": False},
         levels={"ups-a-modules": "N", "ups-2n": "2N"}),
    # at 60 % load (960 kW): N = 3, so 4 modules are still N+1
    Case("ups-a1-trip-60pct", None, {"UPS-A1": False},
         Loads(rack_kw={f"H{h}-{r}{i:02d}": 4.8 for h in (1, 2) for r in "ABCDEFGHIJ"
                        for i in range(1, 11)}),
         levels={"ups-a-modules": "N+1", "ups-2n": "2N"}),
    # 6 of 7 CRAH for 840 kW / 150 kW = 6: N; each remaining CRAH is then a single point
    Case("crah-h1-1-trip", None, {"CRAH-H1-1": False},
         levels={"crah-h1": "N", "crah-h2": "N+1"}, cm=False, ft=False,
         short={f"CRAH-H1-{i}": ("H1",) for i in range(2, 8)}),
    # feed A of rows H1-A/B lost: those 20 racks hang on the B chain
    Case("pdu-a-h1-1-open", None, {"PDU-A-H1-1": False},
         levels=DESIGN_LEVELS, cm=False, ft=False, one_feed=H1_PDU1,
         spofs={c: H1_PDU1 for c in ("ATS-B", "MSB-B", "UPS-B", "PDU-B-H1-1")}),
    # utility A lost: ATS-A transfers to the generator bus; everything else holds
    Case("util-a-lost", None, {"UTIL-A": False},
         levels={"utility": "N", "generators": "N+1", "ups-2n": "2N"}),
    # 2 of 3 chillers for 1,760 kW / 1,000 kW = 2: N; each remaining chiller cools both halls
    Case("chiller-trip", None, {"CH-1": False},
         levels={"chillers": "N"}, cm=False, ft=False,
         short={"CH-2": ("H1", "H2"), "CH-3": ("H1", "H2")}),
    # a generator down: the utility still carries (CM), but another generator failure would
    # leave the generators below N (2,311 kW needs 2 x 1,500): not fault tolerant
    Case("generator-trip", None, {"GEN-1": False},
         levels={"generators": "N"}, ft=False),
]


@pytest.mark.parametrize("case", REFERENCE_FAULTS, ids=[c.id for c in REFERENCE_FAULTS])
def test_reference_site_with_fault(reference: Topology, case: Case) -> None:
    _check(analyse(reference, case.states, case.loads), case)


def test_reference_site_report(reference: Topology) -> None:
    report = analyse(reference)
    assert all(g.meets_design for g in report.groups)
    assert report.group("ups-a-modules").needed == 4
    assert report.group("crah-h1").needed == 6 and report.group("crah-h1").available == 7
    assert report.group("generators").needed == 2
    assert report.concurrently_maintainable and report.fault_tolerant
    assert report.contingencies == ()
    assert "2N UPS" in report.tier4_features
    assert any(f.startswith("active-active") for f in report.tier4_features)
    # on generators alone each ATS has its own bus section: no new single point
    assert report.on_generators_ok is True
    assert report.on_generators is not None
    assert not [c for c in report.on_generators if c.drops_it]
    text = report.summary()
    assert "Tier III concurrently maintainable: yes" in text


def test_a_single_generator_bus_is_a_single_point_on_generator_power() -> None:
    """The finding that split the reference design's generator bus: one bus feeding both ATS."""
    from dcim.site import site_from_dict
    from dcim.site.generate import SiteSpec, generate_site

    data = generate_site(SiteSpec(site_id="t", name="t", racks=40, halls=1))
    electrical = [c for c in data["electrical"] if c["id"] != "GEN-BUS-B"]
    for comp in electrical:
        if comp["id"] == "GEN-BUS-A":
            comp["id"] = "GEN-BUS"
        if comp["id"] in ("ATS-A", "ATS-B"):
            comp["inputs"] = [comp["inputs"][0], "GEN-BUS"]
    data["electrical"] = electrical
    report = analyse(site_from_dict(data))
    assert report.concurrently_maintainable  # the utility carries while GEN-BUS is out
    assert report.on_generators_ok is False
    gen = {c.component: c for c in report.on_generators or () if c.drops_it}
    assert list(gen) == ["GEN-BUS"] and len(gen["GEN-BUS"].dropped_racks) == 40
    assert "GEN-BUS: drops 40 racks" in report.summary()


def test_incremental_energisation_matches_full(reference: Topology) -> None:
    """Recomputing only downstream of a removed node gives the full pass's answer."""
    for states in ({}, {"UPS-A1": False, "UPS-A2": False}, {"PDU-A-H1-1": False}):
        up, _ = states_vector(reference, states)
        lv = resolve_loads(reference)
        base = power(reference, up, lv)
        for c in range(reference.n_nodes):
            trial = list(up)
            trial[c] = False
            full = power(reference, trial, lv)
            fast = power(reference, trial, lv, base, c)
            assert np.array_equal(full.energised, fast.energised), reference.node_ids[c]
            assert np.array_equal(full.feeds_live, fast.feeds_live), reference.node_ids[c]


def test_two_modules_down_each_side_overloads_after_a_system_loss(reference: Topology) -> None:
    """3 modules (1,200 kW) per side share 1,600 kW fine; losing a system overloads the other."""
    states = {"UPS-A1": False, "UPS-A2": False, "UPS-B1": False, "UPS-B2": False}
    report = analyse(reference, states, on_generators=False)
    assert report.dropped_racks == ()
    assert report.group("ups-2n").level == "below N"
    spofs = {c.component: len(c.dropped_racks) for c in report.single_points_of_failure}
    # a module more down on one side still leaves 800 kW for its 800 kW share: not a SPOF
    assert spofs == {c: 200 for c in ("ATS-A", "MSB-A", "UPS-A", "ATS-B", "MSB-B", "UPS-B")}


def test_unknown_rack_loads_take_the_design_load(reference: Topology) -> None:
    """A rack load read as NaN (a half-stored reading) once made needed_units raise
    'cannot convert float NaN to integer' in about 5 % of analytics runs."""
    racks = reference.rack_ids
    measured = {r: 3.0 for r in racks[::2]}
    unknown = {r: (math.nan if i % 2 else math.inf) for i, r in enumerate(racks[1::2])}
    lv = resolve_loads(reference, Loads(rack_kw={**measured, **unknown}))
    want = np.where(np.isin(racks, list(measured)), 3.0, reference.rack_design_kw)
    assert np.array_equal(lv.rack_kw, want)
    assert np.isfinite(lv.group_load_kw).all() and np.isfinite(lv.check_heat_kw).all()
    # every load unknown is the design case, hall, plant and facility figures included
    nan_everywhere = Loads(rack_kw=dict.fromkeys(racks, math.nan),
                           hall_heat_kw=dict.fromkeys(reference.hall_ids, math.nan),
                           plant_heat_kw=math.nan, facility_kw=math.inf)
    design = resolve_loads(reference)
    got = resolve_loads(reference, nan_everywhere)
    assert np.array_equal(got.group_load_kw, design.group_load_kw)
    assert np.array_equal(got.group_needed, design.group_needed)
    assert got.facility_kw == design.facility_kw and got.plant_heat_kw == design.plant_heat_kw
    report = analyse(reference, loads=nan_everywhere, on_generators=False)
    assert report.groups == analyse(reference, on_generators=False).groups


def test_unknown_ids_are_errors(reference: Topology) -> None:
    with pytest.raises(ValueError, match="'UPS-Z9'"):
        analyse(reference, {"UPS-Z9": False})
    with pytest.raises(ValueError, match="unknown rack 'X'"):
        analyse(reference, loads=Loads(rack_kw={"X": 1.0}))


def test_synthetic_2000_rack_site_holds_design() -> None:
    site = site_from_dict(generate_site(SiteSpec(site_id="big", name="big", racks=2000,
                                                 halls=4)))
    report = analyse(compile_topology(site))
    assert report.concurrently_maintainable and report.fault_tolerant
    assert report.group("ups-2n").level == "2N"
    assert all(g.meets_design for g in report.groups)
