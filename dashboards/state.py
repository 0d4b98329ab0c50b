"""What the live dashboard shows, as plain JSON-ready data: pure functions, no I/O.

`dashboard_state` takes the newest stored samples, the last analytics run and the collectors'
counters and returns the document served at `/api/state` (dashboards/static/app.js renders
it). Everything is derived here so it can be tested without a server or a browser:

- headline: live and today's PUE (with category and coverage, or the reason it is
  withheld), pPUE, IT and facility load in kW from the power points of the same meters
  the PUE uses, outdoor temperature;
- the power chain (every electrical component with its depth from the sources, live kW and
  status) and the cooling units;
- every rack: hottest good inlet temperature, its ASHRAE band, power, worst quality;
- redundancy: groups, concurrent maintainability, fault tolerance, single points of failure;
- alarms (from the alarm engine, with the actions an operator may take), the anomaly
  detectors' open episodes and devices that are not up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dcim.alarm_types import PRIORITY_ORDER, Alarm, AlarmState
from dcim.analytics.anomaly_envelope import EnvelopeConfig
from dcim.analytics.availability import TRIPPED
from dcim.analytics.pue_meters import energy_meters
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.site import Site
from dcim.site.model import SiteDevice
from dcim.storage.base import Quality, Sample, SeriesKey

# Points whose value is a component's present power, best first.
POWER_POINTS = ("power_kw", "output_power_kw", "fan_power_kw")
INLET_ROLE = "inlet_temp_c"
RH_ROLE = "inlet_rh_pct"
RACK_POWER_ROLE = "it_power_kw"
# Worst first: the quality a rack tile shows when its readings differ.
_QUALITY_RANK = {Quality.BAD: 0, Quality.STALE: 1, Quality.GOOD: 2}


@dataclass(frozen=True)
class LivePoints:
    """The series the dashboard reads on every refresh, named once per site."""

    keys: tuple[SeriesKey, ...]
    facility: tuple[SeriesKey, ...]  # power points of the grid and generator meters
    it: tuple[SeriesKey, ...]  # power points of the IT meters
    outdoor: SeriesKey | None


def _power_of_energy(device: SiteDevice, energy_point: str) -> str | None:
    """The power point that goes with an energy counter of the same device, if it has one."""
    names = {p.name for p in device.profile.points}
    candidate = energy_point.replace("energy_kwh", "power_kw")
    return candidate if candidate != energy_point and candidate in names else None


def _power_point(device: SiteDevice) -> str | None:
    names = {p.name for p in device.profile.points}
    return next((n for n in POWER_POINTS if n in names), None)


def live_points(site: Site) -> LivePoints:
    """Every series the dashboard needs from storage for one site."""
    keys: list[SeriesKey] = []
    for device in site.devices.values():
        for point in device.profile.points:
            if point.role in (INLET_ROLE, RH_ROLE, RACK_POWER_ROLE, "unit_status", "running",
                              "outdoor_temp_c") or point.name in POWER_POINTS:
                keys.append(device.series(point.name))
    facility: list[SeriesKey] = []
    it: list[SeriesKey] = []
    try:
        meters = energy_meters(site)
    except ValueError:  # a site without PUE metering still has a dashboard
        meters = None
    if meters is not None:
        for group, out in ((meters.grid + meters.generator, facility), (meters.it, it)):
            for key in group:
                power = _power_of_energy(site.devices[key.device], key.point)
                if power is not None:
                    out.append(SeriesKey(key.measurement, key.device, power))
    outdoor = next((d.series(p.name) for d in site.devices.values() for p in d.profile.points
                    if p.role == "outdoor_temp_c"), None)
    keys += [k for k in facility + it if k not in keys]
    return LivePoints(tuple(dict.fromkeys(keys)), tuple(facility), tuple(it), outdoor)


def _good(latest: Mapping[SeriesKey, Sample], key: SeriesKey | None) -> float | None:
    sample = latest.get(key) if key is not None else None
    if sample is None or sample.quality is not Quality.GOOD or not math.isfinite(sample.value):
        return None
    return float(sample.value)


def _sum_all(latest: Mapping[SeriesKey, Sample], keys: Iterable[SeriesKey]) -> float | None:
    """Sum of good readings; None when any is missing (a partial sum would mislead)."""
    total = 0.0
    keys = list(keys)
    if not keys:
        return None
    for key in keys:
        value = _good(latest, key)
        if value is None:
            return None
        total += value
    return total


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


def _figure(fig: Any) -> dict[str, Any] | None:
    if fig is None:
        return None
    return {"value": fig.value, "category": fig.category, "coverage": fig.coverage,
            "reason": fig.reason}


def _depths(site: Site) -> dict[str, int]:
    """Longest distance from a source (a component without inputs) of each electrical component."""
    comps = site.electrical
    depth: dict[str, int] = {}

    def walk(cid: str, seen: frozenset[str]) -> int:
        if cid in depth:
            return depth[cid]
        comp = comps.get(cid)
        inputs = [i for i in (comp.inputs if comp else []) if i in comps and i not in seen]
        d = 0 if not inputs else 1 + max(walk(i, seen | {cid}) for i in inputs)
        depth[cid] = d
        return d

    for cid in comps:
        walk(cid, frozenset())
    return depth


def _unit_state(devices: list[SiteDevice], latest: Mapping[SeriesKey, Sample],
                health: Mapping[str, DeviceHealth], down: set[str], cid: str) -> str:
    if cid in down:
        return "down"
    if not devices:
        return "unknown"
    for device in devices:
        status = _good(latest, device.series("unit_status")) \
            if any(p.name == "unit_status" for p in device.profile.points) else None
        if status is not None and status >= TRIPPED:
            return "down"
        h = health.get(device.id)
        if h is not None and h.status is not DeviceStatus.UP:
            return "unknown"
    return "up"


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


def alarm_doc(alarm: Alarm, now_ns: int) -> dict[str, Any]:
    """One alarm as the page lists it, with what an operator may do with it now."""
    actions = []
    if alarm.state in (AlarmState.UNACK, AlarmState.RTN_UNACK):
        actions.append("ack")
    if alarm.latched and not alarm.condition and alarm.state is not AlarmState.NORMAL:
        actions.append("reset")
    actions.append("unshelve" if alarm.shelved else "shelve")
    actions.append("return_to_service" if alarm.out_of_service else "out_of_service")
    return {"id": alarm.id, "priority": alarm.priority.value, "state": alarm.state.value,
            "message": alarm.message, "source": alarm.source, "unit": alarm.unit,
            "device": alarm.device, "series": list(alarm.series),
            "condition": alarm.condition, "latched": alarm.latched,
            "since_ms": _ms(alarm.active_since_ns), "changed_ms": _ms(alarm.last_change_ns),
            "age_s": None if alarm.active_since_ns is None
            else max(0.0, (now_ns - alarm.active_since_ns) / 1e9),
            "acked_by": alarm.acked_by, "acked_ms": _ms(alarm.acked_ns),
            "shelved_until_ms": _ms(alarm.shelved_until_ns), "shelved_by": alarm.shelved_by,
            "shelve_reason": alarm.shelve_reason, "suppressed_by": alarm.suppressed_by,
            "out_of_service_by": alarm.out_of_service_by, "announced": alarm.announced,
            "actions": actions}


def alarm_counts(alarms: Sequence[Alarm]) -> dict[str, Any]:
    """Counts for the headline tile: shown (announced and active), unacknowledged, hidden."""
    shown = [a for a in alarms if a.announced and a.state is not AlarmState.NORMAL]
    by_priority = {p.value: sum(1 for a in shown if a.priority is p) for p in PRIORITY_ORDER}
    return {"shown": len(shown),
            "unacknowledged": sum(1 for a in shown if a.state in (AlarmState.UNACK,
                                                                   AlarmState.RTN_UNACK)),
            "shelved": sum(1 for a in alarms if a.shelved),
            "suppressed": sum(1 for a in alarms if a.suppressed),
            "out_of_service": sum(1 for a in alarms if a.out_of_service),
            "by_priority": by_priority}


def dashboard_state(
    site: Site,
    latest: Mapping[SeriesKey, Sample],
    *,
    points: LivePoints,
    now_ns: int,
    analysis: Any = None,
    health: Mapping[str, DeviceHealth] | None = None,
    collection: Mapping[str, Any] | None = None,
    envelope: EnvelopeConfig | None = None,
    alarms: Sequence[Alarm] | None = None,
) -> dict[str, Any]:
    """The document of /api/state (see dashboards/static/app.js for how it is drawn)."""
    from dcim.analysis import unit_states_from_latest

    envelope = envelope or EnvelopeConfig()
    health = health or {}
    # A device that is not up (timed out, stale, erroring) contributes no values: its last
    # reading may be minutes old, and a figure built on it would look live. It is listed in
    # devices_not_up with its last error instead, and its unit shows as unknown.
    latest = {key: sample for key, sample in latest.items()
              if (h := health.get(key.device)) is None or h.status is DeviceStatus.UP}
    down = {cid for cid, up in unit_states_from_latest(site, dict(latest)).items() if not up}
    by_component: dict[str, list[SiteDevice]] = {}
    for device in site.devices.values():
        by_component.setdefault(device.monitors, []).append(device)

    live = getattr(analysis, "live", None)
    today = getattr(analysis, "today", None)
    headline = {
        "pue": _figure(getattr(live, "pue", None)),
        "pue_today": _figure(getattr(today, "pue", None)),
        "ppue_cooling": getattr(getattr(live, "ppue_cooling", None), "value", None),
        "ppue_distribution": getattr(getattr(live, "ppue_distribution", None), "value", None),
        "it_kw": _sum_all(latest, points.it),
        "facility_kw": _sum_all(latest, points.facility),
        "outdoor_c": _good(latest, points.outdoor),
    }

    depth = _depths(site)
    chain: list[dict[str, Any]] = []
    kw_of: dict[str, float | None] = {}
    for comp in site.config.electrical:
        devices = by_component.get(comp.id, [])
        power = [d.series(name) for d in devices if (name := _power_point(d)) is not None]
        kw_of[comp.id] = _sum_all(latest, power) if power else None
    for comp in site.config.electrical:  # a UPS system or a bus without its own meter: its inputs
        if kw_of[comp.id] is None and comp.type in ("ups_system",) and comp.inputs:
            parts = [kw_of.get(i) for i in comp.inputs]
            known = [v for v in parts if v is not None]
            kw_of[comp.id] = sum(known) if len(known) == len(parts) else None
    energised: dict[str, bool] = {}
    for comp in sorted(site.config.electrical, key=lambda c: depth.get(c.id, 0)):
        devices = by_component.get(comp.id, [])
        # A component is energised when it is not down and is a source or has a live input.
        energised[comp.id] = comp.id not in down and (
            not comp.inputs or any(energised.get(i, False) for i in comp.inputs))
        if devices:
            status = _unit_state(devices, latest, health, down, comp.id)
        else:  # no device of its own (a bus, a transformer): from what feeds it
            status = "up" if energised[comp.id] else "down"
        chain.append({"id": comp.id, "name": comp.name or comp.id, "type": comp.type,
                      "depth": depth.get(comp.id, 0), "inputs": list(comp.inputs),
                      "kw": kw_of[comp.id], "capacity_kw": comp.capacity_kw,
                      "status": status, "monitored": bool(devices),
                      "energised": energised[comp.id]})

    cooling = []
    for unit in site.config.mechanical:
        devices = by_component.get(unit.id, [])
        power = [d.series(name) for d in devices if (name := _power_point(d)) is not None]
        running = next((_good(latest, d.series("running")) for d in devices
                        if any(p.name == "running" for p in d.profile.points)), None)
        cooling.append({"id": unit.id, "name": unit.name or unit.id, "type": unit.type,
                        "kw": _sum_all(latest, power) if power else None,
                        "running": None if running is None else running >= 0.5,
                        "status": _unit_state(devices, latest, health, down, unit.id)})

    racks = []
    monitors = {d.monitors: d for d in site.devices.values() if d.device_type == "rack_monitor"}
    for rack in site.racks.values():
        monitor = monitors.get(rack.id)
        temps: list[float] = []
        power_keys: list[SeriesKey] = []
        rh = None
        quality = "missing"
        if monitor is not None:
            seen = [latest.get(monitor.series(p.name)) for p in monitor.profile.points
                    if p.role in (INLET_ROLE, RACK_POWER_ROLE)]
            present = [s for s in seen if s is not None]
            if present:  # the worst reading decides how the tile is drawn
                quality = min(present, key=lambda s: _QUALITY_RANK.get(s.quality, 0)
                              ).quality.name.lower()
            for p in monitor.profile.points:
                if p.role == INLET_ROLE:
                    value = _good(latest, monitor.series(p.name))
                    if value is not None:
                        temps.append(value)
                elif p.role == RACK_POWER_ROLE:
                    power_keys.append(monitor.series(p.name))
                elif p.role == RH_ROLE:
                    rh = _good(latest, monitor.series(p.name))
        inlet = max(temps) if temps else None
        racks.append({"id": rack.id, "hall": rack.hall, "row": rack.row, "index": rack.index,
                      "design_kw": rack.design_kw, "kw": _sum_all(latest, power_keys),
                      "inlet_c": inlet, "rh_pct": rh, "band": ashrae_band(inlet, envelope),
                      "quality": quality})

    redundancy = None
    report = getattr(analysis, "redundancy", None)
    if report is not None:
        redundancy = {
            "concurrently_maintainable": report.concurrently_maintainable,
            "fault_tolerant": report.fault_tolerant,
            "single_points_of_failure": sorted(c.component for c in report.contingencies
                                               if c.drops_it),
            "dropped_racks": list(report.dropped_racks),
            "one_feed_racks": list(report.one_feed_racks),
            "short_halls": list(report.short_halls),
            "groups": [{"id": g.id, "kind": g.kind, "design": g.design, "level": g.level,
                        "needed": g.needed, "available": g.available, "installed": g.installed,
                        "load_kw": g.load_kw, "capacity_kw": g.capacity_kw,
                        "meets_design": g.meets_design} for g in report.groups],
        }

    anomalies = sorted(
        ({"severity": a.severity, "kind": a.kind, "device": a.series.device,
          "point": a.series.point, "message": a.message, "since_ms": a.since_ns // 1_000_000,
          "value": a.value if math.isfinite(a.value) else None}
         for a in getattr(analysis, "anomalies", None) or []),
        key=lambda a: a["since_ms"], reverse=True)

    not_up = [{"id": device_id, "type": site.devices[device_id].device_type
               if device_id in site.devices else "", "status": h.status.value,
               "gateway": h.gateway, "last_error": h.last_error}
              for device_id, h in sorted(health.items()) if h.status is not DeviceStatus.UP]

    return {
        "site": {"id": site.id, "name": site.config.site.name, "time_ms": now_ns // 1_000_000,
                 "timezone": site.config.site.timezone},
        "headline": headline,
        "collection": dict(collection or {}),
        "redundancy": redundancy,
        "power_chain": chain,
        "cooling": cooling,
        "racks": racks,
        "ashrae": {"class": envelope.ashrae_class, "recommended_c": list(envelope.recommended_c),
                   "allowable_c": list(envelope.allowable_c)},
        "alarms": [alarm_doc(a, now_ns) for a in alarms or []],
        "alarm_counts": alarm_counts(alarms or []),
        "anomalies": anomalies,
        "devices_not_up": not_up,
    }
