"""PUE and its family (ISO/IEC 30134-2/-8/-9, The Green Grid) from metered energy.

Every figure is an energy ratio over a period, states its category (PUE1/2/3) and coverage, and
is withheld (value None, with a reason) rather than wrong: too little data, an unmetered IT
boundary, or a ratio that is physically impossible. Definitions and rules: docs/pue.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dcim.analytics.energy import DEFAULT_MAX_GAP_S, NS_PER_S
from dcim.analytics.pue_meters import (
    EnergyMeters,
    EnergyTotals,
    SeriesData,
    energy_meters,
    energy_totals,
)
from dcim.site.model import Site
from dcim.config.site import EmissionFactor
from dcim.storage.base import SeriesKey

PeriodKind = Literal["live", "day", "month", "trailing_12_months"]
LIVE_WINDOW_S = 15 * 60
YEAR_NS = 365 * 86400 * NS_PER_S
# IPCC 2006 default for diesel (gas/diesel oil, 74.1 t CO2/TJ at 36 MJ/L): about 2.68 kg/L.
DIESEL_KG_CO2E_PER_L = 2.68


@dataclass(frozen=True, slots=True)
class PueFigure:
    """One PUE over one period: the value (None when withheld), its category and its evidence."""

    value: float | None
    category: str  # PUE1 / PUE2 / PUE3 (The Green Grid)
    level: str  # basic / intermediate / advanced (ISO/IEC 30134-2)
    start_ns: int
    end_ns: int
    facility_kwh: float
    it_kwh: float
    coverage: float
    reason: str | None = None  # why value is None
    ratio: float | None = None  # the raw ratio, also when the value is withheld
    interim: bool = True  # shorter than 12 months: an interim PUE, not the annual KPI
    weakest: SeriesKey | None = None  # the series with the lowest coverage
    totals: EnergyTotals | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    """A related metric (pPUE, DCiE, CUE, WUE) over one period, None with a reason if withheld."""

    metric: str
    value: float | None
    unit: str
    category: str  # category of the IT energy in the denominator
    start_ns: int
    end_ns: int
    coverage: float
    numerator: float
    denominator: float
    reason: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Period:
    """A reporting period [start_ns, end_ns) in UTC nanoseconds."""

    kind: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class SiteFigures:
    """Every figure of one site over one period."""

    pue: PueFigure
    ppue_cooling: Figure
    ppue_distribution: Figure
    dcie: Figure
    cue: Figure
    wue: Figure


def _withheld(coverage: float, min_coverage: float, weakest: SeriesKey | None,
              denominator: float) -> str | None:
    """The reason a ratio cannot be given (too little data, nothing to divide by), or None."""
    if coverage < min_coverage:
        return (f"coverage {coverage:.3f} below the configured {min_coverage:.3f} "
                f"(weakest series {_name(weakest)})")
    if denominator <= 0:
        return "no IT energy in the period"
    return None


def _name(key: SeriesKey | None) -> str:
    """measurement/device/point of a series, for messages."""
    return "-" if key is None else f"{key.measurement}/{key.device}/{key.point}"


def pue(totals: EnergyTotals, *, min_coverage: float) -> PueFigure:
    """PUE = facility energy / IT energy at the configured boundary."""
    coverage, weakest = totals.coverage_of("grid", "generator", "it")
    facility, it = totals.facility_kwh, totals.it_kwh
    ratio = facility / it if it > 0 else None
    reason = None
    if totals.unmetered:
        shown = ", ".join(totals.unmetered[:5])
        more = f" and {len(totals.unmetered) - 5} more" if len(totals.unmetered) > 5 else ""
        reason = f"IT boundary not fully metered: {shown}{more}"
    reason = reason or _withheld(coverage, min_coverage, weakest, it)
    if reason is None and ratio is not None and ratio <= 1.0:
        reason = (f"PUE {ratio:.4f} <= 1.0: facility energy {facility:.1f} kWh below IT energy "
                  f"{it:.1f} kWh, a metering error")
    return PueFigure(
        value=ratio if reason is None else None, category=totals.category, level=totals.level,
        start_ns=totals.start_ns, end_ns=totals.end_ns, facility_kwh=facility, it_kwh=it,
        coverage=coverage, reason=reason, ratio=ratio,
        interim=totals.end_ns - totals.start_ns < YEAR_NS, weakest=weakest, totals=totals)


def _ratio_figure(metric: str, totals: EnergyTotals, numerator: float | None, groups: Sequence[str],
                  min_coverage: float, missing: str) -> Figure:
    """(numerator) / IT energy, withheld on low coverage, no meters, or a value below 1."""
    coverage, weakest = totals.coverage_of(*groups)
    it = totals.it_kwh
    reason = missing if numerator is None else _withheld(coverage, min_coverage, weakest, it)
    value = None if reason is not None or numerator is None else numerator / it
    if value is not None and value < 1.0:
        reason, value = f"{metric} {value:.4f} < 1.0: a metering error", None
    return Figure(metric, value, "1", totals.category, totals.start_ns, totals.end_ns, coverage,
                  numerator if numerator is not None else 0.0, it, reason)


def ppue_cooling(totals: EnergyTotals, *, min_coverage: float) -> Figure:
    """Partial PUE of the cooling subsystem: (cooling + IT) / IT."""
    num = None if totals.cooling_kwh is None else totals.cooling_kwh + totals.it_kwh
    return _ratio_figure("pPUE cooling", totals, num, ("cooling", "it"), min_coverage,
                         "no cooling energy meters")


def ppue_distribution(totals: EnergyTotals, *, min_coverage: float) -> Figure:
    """Partial PUE of electrical distribution: (losses + IT) / IT, losses = E_DC - IT - cooling - other."""
    losses = totals.distribution_kwh
    num = None if losses is None else losses + totals.it_kwh
    return _ratio_figure("pPUE distribution", totals, num,
                         ("grid", "generator", "it", "cooling", "other"), min_coverage,
                         "no cooling energy meters: distribution losses cannot be derived")


def dcie(figure: PueFigure) -> Figure:
    """DCiE = 100 % / PUE (withheld with the PUE)."""
    value = None if figure.value is None else 100.0 / figure.value
    return Figure("DCiE", value, "%", figure.category, figure.start_ns, figure.end_ns,
                  figure.coverage, figure.it_kwh, figure.facility_kwh, figure.reason)


def emission_factor_for(factors: Sequence[EmissionFactor],
                        year: int) -> tuple[EmissionFactor | None, str]:
    """The factor of a year, else the latest earlier year's; with a note saying which."""
    earlier = [f for f in factors if f.year <= year]
    if not earlier:
        first = min((f.year for f in factors), default=None)
        return None, f"no emission factor for {year} or earlier (first configured: {first})"
    chosen = max(earlier, key=lambda f: f.year)
    note = f"{chosen.kg_co2e_per_kwh} kg CO2e/kWh for {chosen.year}"
    if chosen.year != year:
        note += f" (latest year before {year})"
    if chosen.source:
        note += f"; source: {chosen.source}"
    return chosen, note


def cue(figure: PueFigure, emission_factors: Sequence[EmissionFactor], *,
        tz: str = "Asia/Hong_Kong",
        diesel_kg_co2e_per_l: float = DIESEL_KG_CO2E_PER_L) -> Figure:
    """CUE = kg CO2e of the facility's energy / IT kWh, grid factor of the period's (local) year."""
    mid = (figure.start_ns + figure.end_ns) // 2
    year = datetime.fromtimestamp(mid / NS_PER_S, ZoneInfo(tz)).year
    factor, note = emission_factor_for(emission_factors, year)
    totals = figure.totals
    reason = figure.reason
    kg = 0.0
    if factor is None:
        reason = reason or note
    elif totals is not None:
        if totals.fuel_l > 0:  # fuel basis: the diesel's own CO2
            kg = (totals.grid_kwh * factor.kg_co2e_per_kwh
                  + totals.fuel_l * diesel_kg_co2e_per_l)
            note += f"; generators {diesel_kg_co2e_per_l} kg CO2e/L of diesel"
        else:
            kg = totals.facility_kwh * factor.kg_co2e_per_kwh
            if totals.generator_kwh > 0:
                note += "; generator output counted at the grid factor (no fuel metering)"
    value = kg / figure.it_kwh if reason is None and figure.it_kwh > 0 else None
    return Figure("CUE", value, "kg CO2e/kWh", figure.category, figure.start_ns, figure.end_ns,
                  figure.coverage, kg, figure.it_kwh, reason if value is None else None, note)


def wue(totals: EnergyTotals, *, min_coverage: float) -> Figure:
    """WUE = site water litres / IT kWh; None without water meters."""
    if totals.water_m3 is None:
        return Figure("WUE", None, "L/kWh", totals.category, totals.start_ns, totals.end_ns, 0.0,
                      0.0, totals.it_kwh, "no water meters")
    coverage, weakest = totals.coverage_of("water", "it")
    litres = totals.water_m3 * 1000.0
    reason = _withheld(coverage, min_coverage, weakest, totals.it_kwh)
    value = litres / totals.it_kwh if reason is None else None
    return Figure("WUE", value, "L/kWh", totals.category, totals.start_ns, totals.end_ns,
                  coverage, litres, totals.it_kwh, reason)


def _add_months(dt: datetime, months: int) -> datetime:
    """The same local wall time some months later (day clamped to the month's length)."""
    index = dt.year * 12 + dt.month - 1 + months
    year, month = divmod(index, 12)
    first_next = datetime(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    last_day = (first_next - timedelta(days=1)).day
    return dt.replace(year=year, month=month + 1, day=min(dt.day, last_day))


def _ns(dt: datetime) -> int:
    """UTC nanoseconds of an aware datetime on a whole second."""
    return int(int(dt.timestamp()) * NS_PER_S)


def periods(kind: PeriodKind, at_ns: int, tz: str = "Asia/Hong_Kong", *,
            to_date: bool = False) -> Period:
    """The period of a kind at an instant, in local time: live = the 15 min ending at at_ns,
    day/month = the calendar day/month holding at_ns (to_date: ending at at_ns),
    trailing_12_months = the 12 months ending at at_ns."""
    zone = ZoneInfo(tz)
    if kind == "live":
        return Period(kind, at_ns - LIVE_WINDOW_S * NS_PER_S, at_ns)
    local = datetime.fromtimestamp(at_ns // NS_PER_S, zone)
    if kind == "day":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)  # wall-clock arithmetic: DST-safe midnight
    elif kind == "month":
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _add_months(start, 1)
    elif kind == "trailing_12_months":
        start = _add_months(local, -12)
        return Period(kind, _ns(start) + at_ns % NS_PER_S, at_ns)
    else:
        raise ValueError(f"unknown period kind {kind!r}: expected live, day, month or "
                         "trailing_12_months")
    end_ns = min(_ns(end), at_ns) if to_date else _ns(end)
    return Period(kind, _ns(start), end_ns)


def site_figures(site: Site, data: SeriesData, start_ns: int, end_ns: int, *,
                 meters: EnergyMeters | None = None,
                 max_gap_s: float = DEFAULT_MAX_GAP_S) -> SiteFigures:
    """PUE, pPUE, DCiE, CUE and WUE of a site over a period, with its configured bounds."""
    meters = meters or energy_meters(site)
    info = site.config.site
    bound = info.pue.min_coverage
    totals = energy_totals(meters, data, start_ns, end_ns, max_gap_s=max_gap_s)
    figure = pue(totals, min_coverage=bound)
    return SiteFigures(
        pue=figure, ppue_cooling=ppue_cooling(totals, min_coverage=bound),
        ppue_distribution=ppue_distribution(totals, min_coverage=bound), dcie=dcie(figure),
        cue=cue(figure, info.grid.emission_factors, tz=info.timezone),
        wue=wue(totals, min_coverage=bound))


__all__ = ["EnergyMeters", "EnergyTotals", "Figure", "Period", "PueFigure", "SiteFigures", "cue",
           "dcie", "emission_factor_for", "energy_meters", "energy_totals", "periods",
           "ppue_cooling", "ppue_distribution", "pue", "site_figures", "wue"]
