"""Build a SiteState from the newest values: pure functions, no I/O, no clock.

`LivePlan` is computed once per site (which series say what about which unit, the compiled
topology, the PUE meters). `build_state` then turns the collectors' newest values and their
health into a snapshot: unit states with why, energisation and redundancy from
analytics/topology.py and analytics/redundancy.py (one rule set for the whole product),
rack inlet bands, live power and PUE. `transitions` compares two snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dcim.analytics.anomaly_envelope import EnvelopeConfig
from dcim.analytics.availability import FEED_DEAD_KW, TRIPPED, UTILITY_LOST_KW
from dcim.analytics.pue import SiteFigures
from dcim.analytics.pue_meters import EnergyMeters, energy_meters
from dcim.analytics.redundancy import RedundancyReport, analyse
from dcim.analytics.topology import (
    Loads,
    Topology,
    compile_topology,
    cooling_units,
    power,
    resolve_loads,
    states_vector,
)
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.live.state import (
    Collection,
    RackState,
    SiteState,
    Transition,
    UnitCondition,
    UnitState,
)
from dcim.site import Site
from dcim.site.model import NOTHING
from dcim.storage.base import Quality, Sample, SeriesKey

POWER_POINTS = ("power_kw", "output_power_kw", "fan_power_kw")  # a unit's own power, best first
INLET_ROLE = "inlet_temp_c"
RH_ROLE = "inlet_rh_pct"
RACK_POWER_ROLE = "it_power_kw"
_QUALITY_RANK = {Quality.BAD: 0, Quality.STALE: 1, Quality.GOOD: 2}  # worst first


@dataclass(frozen=True)
class UnitPlan:
    """What the live values say about one unit: its devices and their key series."""

    id: str
    name: str
    kind: str
    layer: str
    devices: tuple[str, ...]
    status: tuple[SeriesKey, ...]  # status words (unit_status), tripped at >= TRIPPED
    power: tuple[SeriesKey, ...]  # the unit's own power points
    running: SeriesKey | None
    capacity_kw: float | None
    inputs: tuple[str, ...]
    depth: int


@dataclass(frozen=True)
class RackPlan:
    """A rack's monitor and its series."""

    id: str
    hall: str
    row: str
    index: int
    design_kw: float
    monitor: str | None
    inlets: tuple[SeriesKey, ...]
    power: tuple[SeriesKey, ...]  # it_power_kw role points (what the tile shows)
    rh: SeriesKey | None
    feeds: tuple[tuple[str, SeriesKey], ...]  # (PDU id, feed power series)


@dataclass(frozen=True)
class LivePlan:
    """Everything about a site the builder needs, resolved once."""

    site_id: str
    site_name: str
    timezone: str
    units: tuple[UnitPlan, ...]
    racks: tuple[RackPlan, ...]
    utility_meters: tuple[tuple[str, SeriesKey], ...]  # (utility feed id, its power series)
    facility: tuple[SeriesKey, ...]  # power of the grid and generator meters
    it: tuple[SeriesKey, ...]  # power of the IT meters
    outdoor: SeriesKey | None
    topology: Topology | None
    meters: EnergyMeters | None
    keys: frozenset[SeriesKey]  # every series read here (the live values kept)
    energy_keys: tuple[SeriesKey, ...]  # counters the live PUE reads
    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    withheld: Mapping[str, str] = field(default_factory=dict)


def _depths(site: Site) -> dict[str, int]:
    """Longest distance from a source of each electrical component (inputs before outputs)."""
    comps = {c.id: c for c in site.config.electrical}
    depth: dict[str, int] = {}

    def walk(cid: str, seen: frozenset[str]) -> int:
        if cid not in depth:
            ins = [i for i in comps[cid].inputs if i in comps and i not in seen]
            depth[cid] = 0 if not ins else 1 + max(walk(i, seen | {cid}) for i in ins)
        return depth[cid]

    for cid in comps:
        walk(cid, frozenset())
    return depth


def _power_of_energy(names: set[str], energy_point: str) -> str | None:
    """The power point that goes with an energy counter of the same device, if it has one."""
    candidate = energy_point.replace("energy_kwh", "power_kw")
    return candidate if candidate != energy_point and candidate in names else None


def pue_meters(site: Site) -> tuple[EnergyMeters | None, str | None]:
    """The PUE meters of a site, or None and what the site lacks for PUE (one truth for the
    live state, the history analytics and `dcim validate`)."""
    try:
        meters = energy_meters(site)
    except ValueError as exc:  # a site without PUE metering still has a live state
        return None, f"PUE needs facility and IT energy meters: {exc}"
    if not meters.grid and not meters.generator:
        return None, ("PUE needs facility energy meters (energy_kwh on the meters of the "
                      "utility feeds or generators); the site has none")
    if not meters.it:
        return None, (f"PUE needs IT energy meters at the {meters.boundary} boundary "
                      f"({meters.category}); the site has none")
    return meters, None


def site_points(site: Site) -> tuple[SeriesKey, ...]:
    """Every point of the devices that measure the site as a whole or nothing in particular
    (a monitoring-only site's meters): kept live although no unit or rack reads them."""
    return tuple(d.series(p.name) for d in site.devices.values()
                 if d.monitors in ("site", NOTHING) for p in d.profile.points)


def plan(site: Site, envelope: EnvelopeConfig | None = None) -> LivePlan:
    """Resolve once which series the live state reads and what they say."""
    by_unit: dict[str, list[Any]] = {}
    for device in site.devices.values():
        by_unit.setdefault(device.monitors, []).append(device)
    depth = _depths(site)
    units: list[UnitPlan] = []
    layers = [("electrical", c) for c in site.config.electrical] + \
             [("mechanical", u) for u in site.config.mechanical]
    for layer, comp in layers:
        devices = by_unit.get(comp.id, [])
        status, pw, running = [], [], None
        for d in devices:
            names = {p.name for p in d.profile.points}
            if "unit_status" in names:
                status.append(d.series("unit_status"))
            own = next((n for n in POWER_POINTS if n in names), None)
            if own is not None:
                pw.append(d.series(own))
            if running is None and "running" in names:
                running = d.series("running")
        units.append(UnitPlan(
            id=comp.id, name=comp.name or comp.id, kind=comp.type, layer=layer,
            devices=tuple(d.id for d in devices), status=tuple(status), power=tuple(pw),
            running=running, capacity_kw=getattr(comp, "capacity_kw", None),
            inputs=tuple(getattr(comp, "inputs", ()) or ()), depth=depth.get(comp.id, 0)))
    monitors = {d.monitors: d for d in site.devices.values() if d.device_type == "rack_monitor"}
    racks = []
    for rack in site.racks.values():
        m = monitors.get(rack.id)
        points = list(m.profile.points) if m is not None else []
        names = {p.name for p in points}
        feeds = tuple((pdu, m.series(f"feed_{side}_power_kw"))
                      for side, pdu in (("a", rack.feed_a), ("b", rack.feed_b))
                      if m is not None and pdu is not None and f"feed_{side}_power_kw" in names)
        racks.append(RackPlan(
            id=rack.id, hall=rack.hall, row=rack.row, index=rack.index, design_kw=rack.design_kw,
            monitor=m.id if m is not None else None,
            inlets=tuple(m.series(p.name) for p in points if p.role == INLET_ROLE) if m else (),
            power=tuple(m.series(p.name) for p in points if p.role == RACK_POWER_ROLE) if m else (),
            rh=next((m.series(p.name) for p in points if p.role == RH_ROLE), None) if m else None,
            feeds=feeds))
    utility = []
    for d in site.devices_of_type("meter"):
        feed = site.electrical.get(d.monitors)
        if feed is not None and feed.type == "utility_feed" and \
                any(p.name == "power_kw" for p in d.profile.points):
            utility.append((feed.id, d.series("power_kw")))
    withheld: dict[str, str] = {}
    meters, why_no_pue = pue_meters(site)
    if why_no_pue is not None:
        withheld["pue"] = why_no_pue
    facility: list[SeriesKey] = []
    it: list[SeriesKey] = []
    if meters is not None:
        for group, out in ((meters.grid + meters.generator, facility), (meters.it, it)):
            for key in group:
                names = {p.name for p in site.devices[key.device].profile.points}
                pw_name = _power_of_energy(names, key.point)
                if pw_name is not None:
                    out.append(SeriesKey(key.measurement, key.device, pw_name))
    topology: Topology | None = None
    if site.config.electrical or site.config.mechanical:
        topology = compile_topology(site)
    else:
        withheld["redundancy"] = ("redundancy needs the topology (electrical and mechanical "
                                  "plant, redundancy groups); the site file describes none")
    outdoor = next((d.series(p.name) for d in site.devices.values() for p in d.profile.points
                    if p.role == "outdoor_temp_c"), None)
    energy = tuple(meters.all_series()) if meters is not None else ()
    keys: set[SeriesKey] = set(facility) | set(it) | set(energy) | {k for _, k in utility}
    keys |= set(site_points(site))
    for u in units:
        keys |= set(u.status) | set(u.power) | ({u.running} if u.running else set())
    for r in racks:
        keys |= set(r.inlets) | set(r.power) | {k for _, k in r.feeds} | ({r.rh} if r.rh else set())
    if outdoor is not None:
        keys.add(outdoor)
    return LivePlan(site_id=site.id, site_name=site.config.site.name,
                    timezone=site.config.site.timezone, units=tuple(units), racks=tuple(racks),
                    utility_meters=tuple(utility), facility=tuple(facility), it=tuple(it),
                    outdoor=outdoor, topology=topology, meters=meters, keys=frozenset(keys),
                    energy_keys=energy, envelope=envelope or EnvelopeConfig(),
                    withheld=withheld)


def ashrae_band(temp_c: float | None, envelope: EnvelopeConfig) -> str:
    """Where an inlet temperature lies in the envelope: recommended, allowable or out."""
    if temp_c is None:
        return "unknown"
    rec_lo, rec_hi = envelope.recommended_c
    allow_lo, allow_hi = envelope.allowable_c
    if temp_c < allow_lo:
        return "out_low"
    if temp_c > allow_hi:
        return "out_high"
    if temp_c < rec_lo:
        return "allowable_low"
    if temp_c > rec_hi:
        return "allowable_high"
    return "recommended"


def _good(values: Mapping[SeriesKey, Sample], key: SeriesKey | None) -> float | None:
    sample = values.get(key) if key is not None else None
    if sample is None or sample.quality is not Quality.GOOD or not math.isfinite(sample.value):
        return None
    return float(sample.value)


def _sum_all(values: Mapping[SeriesKey, Sample], keys: Sequence[SeriesKey]) -> float | None:
    """Sum of good readings; None when any is missing (a partial sum would mislead)."""
    if not keys:
        return None
    total = 0.0
    for key in keys:
        v = _good(values, key)
        if v is None:
            return None
        total += v
    return total


def down_reasons(p: LivePlan, values: Mapping[SeriesKey, Sample]) -> dict[str, str]:
    """Units the good values say are down, with the reading that says so."""
    down: dict[str, str] = {}
    for u in p.units:
        for key in u.status:
            v = _good(values, key)
            if v is not None and v >= TRIPPED:
                down[u.id] = f"{key.device} status word {v:g} (tripped at >= {TRIPPED:g})"
    feeds: dict[str, list[float]] = {}
    for r in p.racks:
        for pdu, key in r.feeds:
            v = _good(values, key)
            if v is not None:
                feeds.setdefault(pdu, []).append(v)
    for pdu, kws in feeds.items():
        if kws and max(kws) < FEED_DEAD_KW:
            down.setdefault(pdu, f"all {len(kws)} rack feeds from it read < {FEED_DEAD_KW:g} kW")
    for feed, key in p.utility_meters:
        v = _good(values, key)
        if v is not None and v < UTILITY_LOST_KW:
            down.setdefault(feed, f"{key.device} reads {v:.2f} kW (< {UTILITY_LOST_KW:g} kW)")
    return down


def rack_loads(p: LivePlan, values: Mapping[SeriesKey, Sample]) -> dict[str, float]:
    """Measured IT load per rack (sum of its feeds) where every feed reading is good."""
    out: dict[str, float] = {}
    for r in p.racks:
        if not r.feeds:
            continue
        kw = _sum_all(values, [k for _, k in r.feeds])
        if kw is not None:
            out[r.id] = kw
    return out


def _unknown_why(devices: Sequence[str], health: Mapping[str, DeviceHealth] | None
                 ) -> str | None:
    if health is None:  # no collectors (a backfill, a replay): the values are the truth
        return None
    for d in devices:
        h = health.get(d)
        if h is None:
            return f"device {d} not polled yet"
        if h.status is not DeviceStatus.UP:
            if h.last_ok_ns is None and h.errors == 0:
                return f"device {d} not polled yet"
            return f"device {d} {h.status.value}: {h.last_error or 'no fresh value'}"
    return None


def build_state(p: LivePlan, values: Mapping[SeriesKey, Sample],
                health: Mapping[str, DeviceHealth] | None, *, seq: int, now_ns: int,
                collection: Collection | None = None, pue_live: SiteFigures | None = None,
                pue_today: SiteFigures | None = None, anomalies: Sequence[Any] = (),
                redundancy: RedundancyReport | None = None,
                redundancy_for: tuple[frozenset[str], RedundancyReport] | None = None,
                ) -> SiteState:
    """The snapshot of the site from the newest values of devices that are up.

    A device that is not up contributes no values: its last reading may be minutes old and a
    figure built on it would look live; its units show as unknown, with why (so do the units
    of a device not polled yet). `health` None means there are no collectors (a backfill or
    a replay): every value is taken as live. `redundancy_for`
    is a cached (down set, report) pair reused when the down set has not changed.
    """
    if health is not None:
        values = {k: s for k, s in values.items()
                  if (h := health.get(k.device)) is not None and h.status is DeviceStatus.UP}
    down = down_reasons(p, values)
    loads = rack_loads(p, values)
    energised: dict[str, bool] = {}
    powered: dict[str, bool] = {}
    report = redundancy
    down_set = frozenset(down)
    withheld = dict(p.withheld)
    if p.topology is not None:
        topo = p.topology
        states = {cid: False for cid in down if cid in topo.node_index or cid in topo.mech_index}
        try:
            lv = resolve_loads(topo, Loads(rack_kw=loads or None))
            up_e, up_m = states_vector(topo, states)
            pw = power(topo, up_e, lv)
            energised = dict(zip(topo.node_ids, pw.energised[:topo.n_nodes].tolist()))
            powered = dict(zip(topo.mech_ids, np.asarray(
                cooling_units(topo, np.ones(len(topo.mech_ids), dtype=bool),
                              pw.energised)).tolist()))
            if report is None:
                if redundancy_for is not None and redundancy_for[0] == down_set:
                    report = redundancy_for[1]
                else:
                    report = analyse(topo, states, Loads(rack_kw=loads or None))
        except ValueError as exc:  # a load or state the topology cannot take: say so
            withheld["redundancy"] = f"{type(exc).__name__}: {exc}"
    units: dict[str, UnitState] = {}
    for u in p.units:
        why = down.get(u.id)
        state: UnitCondition
        live = energised.get(u.id, True) if u.layer == "electrical" else powered.get(u.id, True)
        if why is not None:
            state = "down"
        elif u.devices:
            unknown = _unknown_why(u.devices, health)
            state, why = ("unknown", unknown) if unknown is not None else ("up", "")
        elif u.layer == "electrical":  # a bus or transformer without its own meter
            state, why = ("up", "") if live else ("down", "no energised input")
        else:
            state, why = "unknown", "no device monitors it"
        running = _good(values, u.running)
        units[u.id] = UnitState(
            id=u.id, name=u.name, kind=u.kind, layer=u.layer,  # type: ignore[arg-type]  # str of a Literal
            state=state, why=why or "", energised=bool(live) and state != "down",
            monitored=bool(u.devices), kw=_sum_all(values, u.power) if u.power else None,
            capacity_kw=u.capacity_kw, running=None if running is None else running >= 0.5,
            depth=u.depth, inputs=u.inputs, metered=bool(u.power))
    # a UPS system without its own meter: the sum of its modules
    for u in p.units:
        if u.kind == "ups_system" and units[u.id].kw is None and u.inputs:
            parts = [units[i].kw if i in units else None for i in u.inputs]
            if all(v is not None for v in parts):
                units[u.id] = replace(units[u.id], kw=sum(v for v in parts if v is not None))
    racks = []
    for r in p.racks:
        present = [values[k] for k in (*r.inlets, *r.power) if k in values]
        quality = min(present, key=lambda s: _QUALITY_RANK.get(s.quality, 0)).quality.name.lower() \
            if present else "missing"
        temps = [v for k in r.inlets if (v := _good(values, k)) is not None]
        inlet = max(temps) if temps else None
        racks.append(RackState(id=r.id, hall=r.hall, row=r.row, index=r.index,
                               design_kw=r.design_kw, kw=_sum_all(values, r.power),
                               inlet_c=inlet, rh_pct=_good(values, r.rh),
                               band=ashrae_band(inlet, p.envelope), quality=quality))
    env = p.envelope
    return SiteState(
        seq=seq, time_ns=now_ns, site_id=p.site_id, site_name=p.site_name, timezone=p.timezone,
        values=values, health=health or {}, units=units, racks=tuple(racks),
        collection=collection or Collection(), pue_live=pue_live, pue_today=pue_today,
        it_kw=_sum_all(values, p.it), facility_kw=_sum_all(values, p.facility),
        outdoor_c=_good(values, p.outdoor), redundancy=report, anomalies=tuple(anomalies),
        ashrae={"class": env.ashrae_class, "recommended_c": list(env.recommended_c),
                "allowable_c": list(env.allowable_c)},
        withheld=withheld)


def verdicts(state: SiteState) -> dict[tuple[str, str], str]:
    """The redundancy verdicts of a snapshot, keyed (subject, what)."""
    r = state.redundancy
    if r is None:
        return {}
    out = {(g.id, "meets_design"): f"{'meets' if g.meets_design else 'below'} design "
           f"{g.design} at {g.level}" for g in r.groups}
    out[(state.site_id, "concurrently_maintainable")] = str(r.concurrently_maintainable).lower()
    out[(state.site_id, "fault_tolerant")] = str(r.fault_tolerant).lower()
    return out


def transitions(before: SiteState | None, after: SiteState) -> list[Transition]:
    """Changes of unit states and redundancy verdicts from one snapshot to the next."""
    out: list[Transition] = []
    for uid, u in after.units.items():
        was = before.units.get(uid) if before is not None else None
        if was is None or was.state != u.state:
            out.append(Transition(after.time_ns, uid, "state",
                                  was.state if was is not None else None, u.state, u.why))
    old = verdicts(before) if before is not None else {}
    for (subject, what), now in verdicts(after).items():
        if old.get((subject, what)) != now:
            out.append(Transition(after.time_ns, subject, what, old.get((subject, what)), now))
    return out
