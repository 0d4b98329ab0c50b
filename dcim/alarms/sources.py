"""Where alarms come from: what is wrong now, as conditions for the engine (pure, no I/O).

Five sources, each giving one alarm per problem rather than one per series:
- device: a device that stopped answering (one alarm per device);
- unit: a unit that is down (a UPS module or CRAH reporting a trip, a PDU whose every rack
  feed reads zero, a utility feed with no power), latched until an operator resets it;
- redundancy: a group below its design level or below N, the site no longer concurrently
  maintainable, racks without power, halls short of cooling, racks left on one feed;
- storage: the store refusing writes (samples wait in the durable buffer);
- anomaly: the anomaly detectors' open episodes, grouped per device and detector layer
  (a CRAH trip warms many inlets of one rack monitor: one alarm for the rack, not six); the
  message ends with the detectors' confidence, and one below the site's
  `alarms.anomaly.page_min_confidence` is raised at low priority (routes from medium up do
  not page it).

Everything is read from one live snapshot (dcim/live/state.py), never from storage, so an
alarm is raised as soon as the collector cycle that saw the fault ends, store up or down.

Suppression by design is a relation between alarms, which the engine follows: an alarm is
suppressed while the alarm that already reports its cause is active (not normal), so the
relation lasts as long as that alarm does (a latched trip until it is reset), not only as
long as the live reading. Device comm-loss alarms are suppressed by their gateway's alarm
(one alarm when a whole gateway is unreachable), the anomaly alarms of a device that is not
answering by its comm-loss alarm (its readings are old, not abnormal), and a status-word
anomaly by the unit's trip alarm. Units in maintenance are handled by the engine.

Consequences of a trip are not news either: when a unit trips, its siblings take its load
and the plant rebalances, which the statistical layers (generic, robust, model) rightly see
as level shifts. Their anomaly alarms are suppressed while a unit alarm of the same scope is
active: any electrical unit for electrical units and rack power, the cooling units serving a
hall for its racks' air and for the other cooling units. Threshold (envelope, rate), sensor
and status anomalies stay: racks out of the ASHRAE envelope after a CRAH trip, or a sensor
drifting meanwhile, are news. Suppressed alarms are listed as such, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dcim.alarms.types import Condition, Priority
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.live.state import Collection, SiteState
from dcim.site import Site

HIGH_COMM = {"ups_module", "ats", "generator"}  # losing sight of these is losing sight of power
LOW_COMM = {"weather_station", "water_meter"}
UNIT_WORDS = {"ups_module": "tripped", "crah": "tripped", "chiller": "tripped",
              "pump": "tripped", "cooling_tower": "tripped", "generator": "tripped",
              "pdu": "de-energised: every rack feed from it reads zero",
              "utility_feed": "lost: its meter reads no power"}


def device_conditions(site: Site, health: Mapping[str, DeviceHealth]) -> list[Condition]:
    """One condition per device that is down, or stale after having answered."""
    out = []
    for device_id, h in sorted(health.items()):
        if h.status is DeviceStatus.UP or (h.status is DeviceStatus.STALE and h.last_ok_ns is None
                                           and h.errors == 0):
            continue  # up, or not polled yet
        device = site.devices.get(device_id)
        kind = device.device_type if device is not None else "device"
        priority = (Priority.HIGH if kind in HIGH_COMM else
                    Priority.LOW if kind in LOW_COMM else Priority.MEDIUM)
        why = h.last_error or f"no fresh value ({h.status.value})"
        out.append(Condition(
            alarm_id=f"device:{device_id}:comm", source="device", priority=priority,
            message=f"{kind} {device_id} not answering: {why}; its readings are not live",
            unit=(device.monitors or None) if device is not None else None, device=device_id))
    return out


def unit_conditions(site: Site, down: Iterable[str]) -> list[Condition]:
    """One condition per unit that is down (tripped, de-energised, lost)."""
    out = []
    for cid in sorted(down):
        comp: Any = site.electrical.get(cid) or site.mechanical.get(cid)
        kind = comp.type if comp is not None else "unit"
        what = UNIT_WORDS.get(kind, "down")
        out.append(Condition(alarm_id=f"unit:{cid}:down", source="unit", priority=Priority.HIGH,
                             message=f"{kind} {cid} {what}", unit=cid))
    return out


def _racks(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def redundancy_conditions(report: Any) -> list[Condition]:
    """Conditions from a RedundancyReport (analytics/redundancy.py)."""
    if report is None:
        return []
    out = []
    for g in report.groups:
        if g.meets_design:
            continue
        below_n = g.available < g.needed
        out.append(Condition(
            alarm_id=f"redundancy:{g.id}:{'below_n' if below_n else 'below_design'}",
            source="redundancy", priority=Priority.CRITICAL if below_n else Priority.HIGH,
            message=(f"{g.kind} group {g.id} at {g.level} (design {g.design}): {g.available} of "
                     f"{g.installed} units available, {g.needed} needed for "
                     f"{g.load_kw:,.0f} kW" + ("; load is at risk" if below_n else
                                               "; no spare unit left")),
            unit=g.id, value=float(g.available)))
    if not report.concurrently_maintainable:
        spofs = [c.component for c in report.single_points_of_failure]
        out.append(Condition(
            alarm_id="redundancy:site:not_concurrently_maintainable", source="redundancy",
            priority=Priority.HIGH,
            message=("Tier III lost: taking out " + _racks(spofs) + " would now drop load"
                     if spofs else "Tier III lost: load is already at risk, no component can "
                     "be taken out for maintenance"), value=float(len(spofs))))
    if report.dropped_racks:
        out.append(Condition(
            alarm_id="redundancy:racks_without_power", source="redundancy",
            priority=Priority.CRITICAL, value=float(len(report.dropped_racks)),
            message=f"{len(report.dropped_racks)} racks without power: "
                    f"{_racks(report.dropped_racks)}"))
    for hall in report.short_halls:
        out.append(Condition(
            alarm_id=f"redundancy:{hall}:short_of_cooling", source="redundancy",
            priority=Priority.CRITICAL, unit=hall,
            message=f"hall {hall} short of cooling ({', '.join(report.short_cooling)})"))
    if report.one_feed_racks:
        out.append(Condition(
            alarm_id="redundancy:racks_on_one_feed", source="redundancy", priority=Priority.MEDIUM,
            value=float(len(report.one_feed_racks)),
            message=f"{len(report.one_feed_racks)} dual-corded racks on one feed: "
                    f"{_racks(report.one_feed_racks)}"))
    return out


def anomaly_conditions(site: Site, anomalies: Iterable[Any]) -> list[Condition]:
    """One condition per (device, detector layer) with open anomaly episodes, carrying its
    confidence; below `alarms.anomaly.page_min_confidence` it is raised at low priority."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for a in anomalies:
        groups.setdefault((a.series.device, a.layer), []).append(a)
    page_min = site.config.alarms.anomaly.page_min_confidence
    out = []
    for (device_id, layer), items in sorted(groups.items()):
        worst = max(items, key=lambda a: (Priority(a.severity).rank, a.score))
        confidence = max(float(getattr(a, "confidence", 1.0)) for a in items)
        device = site.devices.get(device_id)
        series = tuple(sorted({f"{a.series.device}/{a.series.point}" for a in items}))
        more = f" (and {len(series) - 1} more series)" if len(series) > 1 else ""
        # a guess the detectors are unsure of is recorded and shown, not paged
        priority = Priority(worst.severity) if confidence >= page_min else Priority.LOW
        out.append(Condition(
            alarm_id=f"anomaly:{layer}:{device_id}", source="anomaly", priority=priority,
            message=f"{worst.message or worst.kind}{more} (confidence {confidence:.2f})",
            unit=(device.monitors or None) if device is not None else None, device=device_id,
            series=series, value=float(worst.value)))
    return out


def storage_conditions(backend: str, stats: Any, *, after_s: float = 30.0) -> list[Condition]:
    """The store has refused writes for a while: samples pile up in the durable buffer."""
    if stats is None or stats.storage_outage_s < after_s:
        return []
    return [Condition(
        alarm_id=f"storage:{backend}:unreachable", source="storage", priority=Priority.HIGH,
        value=float(stats.buffered),
        message=f"{backend} store not taking writes for {stats.storage_outage_s:,.0f} s "
                f"({stats.storage_error or 'no answer'}); {stats.buffered:,} samples held in "
                "the durable buffer, replayed when it is back")]


def buffer_conditions(stats: Collection) -> list[Condition]:
    """The durable buffer cannot write (its disk is full): samples are being lost now."""
    if not stats.buffer_error:
        return []
    return [Condition(
        alarm_id="storage:buffer:cannot_write", source="storage", priority=Priority.HIGH,
        value=float(stats.lost_samples),
        message=f"durable buffer cannot write ({stats.buffer_error}); {stats.lost_samples:,} "
                "samples lost so far: free disk space under the buffer directory")]


def gateway_conditions(site: Site, gateways: Iterable[str],
                       health: Mapping[str, DeviceHealth]) -> list[Condition]:
    """One condition per gateway none of whose devices answer (its host or link is down)."""
    out = []
    for gw in sorted(gateways):
        ids = [d for d, h in health.items() if h.gateway == gw]
        kinds = {site.devices[d].device_type for d in ids if d in site.devices}
        priority = (Priority.HIGH if kinds & HIGH_COMM else
                    Priority.LOW if kinds and kinds <= LOW_COMM else Priority.MEDIUM)
        why = next((health[d].last_error for d in ids if health[d].last_error), "no answer")
        out.append(Condition(
            alarm_id=f"gateway:{gw}:comm", source="device", priority=priority,
            message=f"gateway {gw} unreachable: none of its {len(ids)} devices answer ({why}); "
                    "their readings are not live"))
    return out


CONSEQUENTIAL_LAYERS = ("generic", "robust", "model")  # statistics a trip legitimately moves
_AIR_WORDS = ("temp", "rh", "humid", "dew")


def consequence_causes(site: Site, device_id: str | None, series: Sequence[str]
                       ) -> tuple[str, ...]:
    """The unit alarms whose trip explains a statistical anomaly of a device's series."""
    device = site.devices.get(device_id) if device_id is not None else None
    target = device.monitors if device is not None else None
    if target is None:
        return ()
    elec = [f"unit:{c}:down" for c in sorted(site.electrical)]
    if target in site.electrical:
        return tuple(elec)
    if target in site.mechanical:
        return tuple(f"unit:{c}:down" for c in sorted(site.mechanical))
    rack = site.racks.get(target)
    if rack is None:
        return ()
    points = [s.rsplit("/", 1)[-1] for s in series]
    air = [p for p in points if any(w in p for w in _AIR_WORDS)]
    causes: list[str] = []
    if air:  # the rack's air: its hall's cooling
        causes += [f"unit:{c.id}:down" for c in sorted(site.mechanical.values(),
                                                        key=lambda c: c.id)
                   if rack.hall in c.serves]
    if len(air) < len(points):  # its power: the electrical chain
        causes += elec
    return tuple(causes)


def conditions(site: Site, state: SiteState, *, backend: str = "storage",
               ) -> tuple[list[Condition], dict[str, tuple[str, ...]]]:
    """Every condition that holds in a snapshot, and the alarms suppressed by design: alarm
    id -> the alarms that report its cause (suppressed while any of them is active)."""
    health = state.health
    comm = device_conditions(site, health)
    gateways = gateway_conditions(site, state.collection.gateways_down, health)
    down = [u.id for u in state.units.values() if u.state == "down"]
    units = unit_conditions(site, down)
    why = {u.id: u.why for u in state.units.values() if u.state == "down" and u.why}
    units = [replace(c, message=f"{c.message} ({why[c.unit]})") if c.unit in why else c
             for c in units]
    found = comm + gateways + units + storage_conditions(backend, state.collection)
    found += buffer_conditions(state.collection)
    found += redundancy_conditions(state.redundancy)
    anomalies = anomaly_conditions(site, state.anomalies)
    found += anomalies
    by: dict[str, tuple[str, ...]] = {}
    gateway_of = {d.id: d.gateway.id for d in site.devices.values()}
    for c in comm:
        if c.device is not None and c.device in gateway_of:
            by[c.alarm_id] = (f"gateway:{gateway_of[c.device]}:comm",)
    for c in anomalies:
        causes = []
        if c.device is not None:
            causes.append(f"device:{c.device}:comm")
        if c.alarm_id.startswith("anomaly:status:") and c.unit is not None:
            causes.append(f"unit:{c.unit}:down")
        if c.alarm_id.split(":")[1] in CONSEQUENTIAL_LAYERS:
            causes += consequence_causes(site, c.device, c.series)
        if causes:
            by[c.alarm_id] = tuple(causes)
    return found, by
