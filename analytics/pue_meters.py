"""Which meters make up each term of PUE at a site, and their energy over a period.

`energy_meters(site)` names the series (facility input, IT at the configured boundary, cooling,
other, water) once; `energy_totals(meters, data, start_ns, end_ns)` turns the raw counter samples
into per-term energy with coverage. The figures themselves are in `analytics/pue.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dcim.analytics.energy import DEFAULT_MAX_GAP_S, EnergyDelta, energy_delta, rollover_for
from dcim.site.model import Site, SiteDevice
from dcim.storage.base import SeriesKey

# (times_ns, values) or (times_ns, values, quality), as read from storage
SeriesArrays = (tuple[NDArray[np.int64], NDArray[np.float64]]
                | tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]])
SeriesData = Mapping[SeriesKey, SeriesArrays]
GeneratorBasis = Literal["electrical", "fuel"]

# The Green Grid category and the ISO/IEC 30134-2 level of each IT measurement boundary.
CATEGORIES: dict[str, tuple[str, str]] = {
    "ups_output": ("PUE1", "basic"),
    "pdu_output": ("PUE2", "intermediate"),
    "it_input": ("PUE3", "advanced"),
}
DIESEL_KWH_PER_L = 9.9  # EN 50600-4 factsheet: energy content of diesel
GROUPS = ("grid", "generator", "it", "cooling", "other", "water")


@dataclass(frozen=True, slots=True)
class EnergyMeters:
    """The series behind each term of PUE at one site, with counter moduli where known."""

    boundary: str  # SiteInfo.pue.it_boundary
    category: str  # PUE1 / PUE2 / PUE3
    level: str  # basic / intermediate / advanced (ISO/IEC 30134-2)
    grid: tuple[SeriesKey, ...]  # utility feed meters (kWh)
    generator: tuple[SeriesKey, ...]  # generator output (kWh) or fuel used (L), per basis
    generator_basis: GeneratorBasis
    it: tuple[SeriesKey, ...]  # IT energy at the boundary (kWh)
    cooling: tuple[SeriesKey, ...]  # mechanical boards, else mechanical units (kWh)
    other: tuple[SeriesKey, ...]  # lighting, security, offices ('load' components, kWh)
    water: tuple[SeriesKey, ...]  # site water meters, else tower make-up meters (m3)
    unmetered: tuple[str, ...] = ()  # components at the IT boundary without a meter
    rollover_kwh: dict[SeriesKey, float] = field(default_factory=dict)

    def groups(self) -> dict[str, tuple[SeriesKey, ...]]:
        """Series of each term, by term name (see GROUPS)."""
        return {"grid": self.grid, "generator": self.generator, "it": self.it,
                "cooling": self.cooling, "other": self.other, "water": self.water}

    def all_series(self) -> list[SeriesKey]:
        """Every series the figures read, each once."""
        return list(dict.fromkeys(k for keys in self.groups().values() for k in keys))


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """Energy of each term of PUE over one period, with each term's coverage."""

    start_ns: int
    end_ns: int
    category: str
    level: str
    grid_kwh: float
    generator_kwh: float  # electrical output, or fuel energy (litres x kWh/L) on the fuel basis
    it_kwh: float
    cooling_kwh: float | None  # None: no cooling meters
    other_kwh: float
    water_m3: float | None  # None: no water meters
    coverage: dict[str, float]  # per group, the lowest coverage of its series
    weakest: dict[str, SeriesKey | None]  # per group, the series with that lowest coverage
    deltas: dict[SeriesKey, EnergyDelta]
    unmetered: tuple[str, ...] = ()
    fuel_l: float = 0.0  # litres burnt (fuel basis only)

    @property
    def facility_kwh(self) -> float:
        """E_DC: utility feeds plus on-site generation."""
        return self.grid_kwh + self.generator_kwh

    @property
    def distribution_kwh(self) -> float | None:
        """Electrical distribution losses, derived: facility - IT - cooling - other."""
        if self.cooling_kwh is None:
            return None
        return self.facility_kwh - self.it_kwh - self.cooling_kwh - self.other_kwh

    def coverage_of(self, *groups: str) -> tuple[float, SeriesKey | None]:
        """Lowest coverage over some groups, and the series that sets it."""
        found = [(self.coverage[g], self.weakest[g]) for g in groups
                 if self.weakest.get(g) is not None]
        return min(found, key=lambda c: c[0], default=(1.0, None))


def _points(device: SiteDevice, roles: Iterable[str]) -> list[str]:
    """Points of the first role (in preference order) that the device carries."""
    for role in roles:
        names = [p.name for p in device.profile.points if p.role == role]
        if names:
            return names
    return []


def _metered(site: Site, components: Iterable[str], roles: tuple[str, ...],
             device_types: tuple[str, ...] | None = None) -> tuple[list[SeriesKey], list[str]]:
    """One device per component (config order) with a point of the roles; and the unmetered."""
    keys: list[SeriesKey] = []
    missing: list[str] = []
    by_component: dict[str, list[SiteDevice]] = {}
    for dev in site.devices.values():
        if device_types is None or dev.device_type in device_types:
            by_component.setdefault(dev.monitors, []).append(dev)
    for comp in components:
        for dev in by_component.get(comp, []):
            names = _points(dev, roles)
            if names:
                keys += [dev.series(n) for n in names]
                break
        else:
            missing.append(comp)
    return keys, missing


def _it_meters(site: Site, boundary: str) -> tuple[list[SeriesKey], list[str]]:
    """IT energy series at the boundary, and the components there that have no meter."""
    elec = site.config.electrical
    if boundary == "it_input":
        return _metered(site, site.racks, ("it_energy_kwh",), ("rack_monitor",))
    if boundary == "pdu_output":
        pdus = [c.id for c in elec if c.type == "pdu"]
        return _metered(site, pdus, ("output_energy_kwh", "energy_kwh"))
    keys: list[SeriesKey] = []
    missing: list[str] = []
    for system in (c for c in elec if c.type == "ups_system"):
        found, _ = _metered(site, [system.id], ("output_energy_kwh", "energy_kwh"))
        if not found:  # no meter on the output bus: the sum of its modules' outputs
            found, lost = _metered(site, system.inputs, ("output_energy_kwh",), ("ups_module",))
            missing += lost
        keys += found
    return keys, missing


def energy_meters(site: Site, *, generator_basis: GeneratorBasis = "electrical") -> EnergyMeters:
    """Name the series of every PUE term at a site, from its devices and what they monitor."""
    boundary = site.config.site.pue.it_boundary
    category, level = CATEGORIES[boundary]
    elec = site.config.electrical
    utility = [c.id for c in elec if c.type == "utility_feed"]
    grid, no_grid = _metered(site, utility, ("energy_kwh",))
    if no_grid:
        raise ValueError(f"utility feeds without an energy meter: {', '.join(no_grid)}; "
                         "facility energy (E_DC) cannot be measured")
    gens = [c.id for c in elec if c.type == "generator"]
    role = "fuel_used_l" if generator_basis == "fuel" else "energy_kwh"
    generator, no_gen = _metered(site, gens, (role,))
    if no_gen:
        raise ValueError(f"generators without a {role} point: {', '.join(no_gen)}")
    it, unmetered = _it_meters(site, boundary)
    boards = list(dict.fromkeys(b for m in site.config.mechanical for b in m.powered_from))
    cooling, no_board = _metered(site, boards, ("energy_kwh",), ("meter",))
    if no_board or not boards:  # boards not all metered: the units' own energy counters
        cooling, _ = _metered(site, [m.id for m in site.config.mechanical], ("energy_kwh",))
    loads = [c.id for c in elec if c.type == "load"]
    other, _ = _metered(site, loads, ("energy_kwh",))
    water_devs = [d for d in site.devices.values() if d.device_type == "water_meter"]
    site_water = [d for d in water_devs if d.monitors == "site"]
    water = [d.series(n) for d in (site_water or list(site.devices.values()))
             for n in _points(d, ("water_m3",))]
    moduli: dict[SeriesKey, float] = {}
    for key in grid + generator + it + cooling + other + water:
        modulus = rollover_for(site.devices[key.device], key.point)
        if modulus is not None:
            moduli[key] = modulus
    return EnergyMeters(boundary=boundary, category=category, level=level, grid=tuple(grid),
                        generator=tuple(generator), generator_basis=generator_basis, it=tuple(it),
                        cooling=tuple(cooling), other=tuple(other), water=tuple(water),
                        unmetered=tuple(unmetered), rollover_kwh=moduli)


def energy_totals(
    meters: EnergyMeters,
    data: SeriesData,
    start_ns: int,
    end_ns: int,
    *,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    fuel_kwh_per_l: float = DIESEL_KWH_PER_L,
) -> EnergyTotals:
    """Energy of each PUE term over [start_ns, end_ns] from raw counter samples."""
    deltas: dict[SeriesKey, EnergyDelta] = {}
    for key in meters.all_series():
        arrays = data.get(key)
        if arrays is None:
            deltas[key] = EnergyDelta(0.0, 0.0, 0, 0, 1)
            continue
        quality = arrays[2] if len(arrays) == 3 else None
        deltas[key] = energy_delta(arrays[0], arrays[1], start_ns=start_ns, end_ns=end_ns,
                                   rollover_kwh=meters.rollover_kwh.get(key),
                                   max_gap_s=max_gap_s, quality=quality)
    sums: dict[str, float] = {}
    coverage: dict[str, float] = {}
    weakest: dict[str, SeriesKey | None] = {}
    for group, keys in meters.groups().items():
        sums[group] = sum(deltas[k].kwh for k in keys)
        worst = min(keys, key=lambda k: deltas[k].coverage, default=None)
        coverage[group] = deltas[worst].coverage if worst is not None else 1.0
        weakest[group] = worst
    fuel_l = sums["generator"] if meters.generator_basis == "fuel" else 0.0
    generator_kwh = fuel_l * fuel_kwh_per_l if meters.generator_basis == "fuel" \
        else sums["generator"]
    return EnergyTotals(
        start_ns=start_ns, end_ns=end_ns, category=meters.category, level=meters.level,
        grid_kwh=sums["grid"], generator_kwh=generator_kwh, it_kwh=sums["it"],
        cooling_kwh=sums["cooling"] if meters.cooling else None, other_kwh=sums["other"],
        water_m3=sums["water"] if meters.water else None, coverage=coverage, weakest=weakest,
        deltas=deltas, unmetered=meters.unmetered, fuel_l=fuel_l)
