"""What the live dashboard shows, as plain JSON-ready data: pure functions, no I/O.

`state_document` renders one live snapshot (`dcim.live.state.SiteState`) and the active
alarms into the document served at `/api/state` and pushed on `/api/events`
(dashboards/static/app.js draws it). Nothing is derived here that the live state already
knows: unit states, energisation, rack bands and loads are computed once by the live builder
(dcim/live/build.py); this module only lays them out for the page:

- site: name, the document's time and the site's time zone (IANA name, abbreviation and
  offset from UTC at that time: the page shows every time on the site's clock);
- headline: live and today's PUE (with category and coverage, or the reason it is
  withheld), pPUE, IT and facility load in kW, outdoor temperature;
- the power chain (every electrical component with its depth from the sources, live kW and
  status), ordered from the sources, and the cooling units;
- every rack: hottest good inlet temperature, its ASHRAE band, power, worst quality;
- redundancy: groups, concurrent maintainability, fault tolerance, single points of failure;
- alarms (with the actions an operator may take), the anomaly detectors' open episodes and
  devices that are not up;
- on a site without a plant (no units, no racks: a monitoring-only site), every live value by
  device, since no other view shows them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dcim.alarms.types import PRIORITY_ORDER, Alarm, AlarmState
from dcim.analytics.pue import Figure, PueFigure, SiteFigures
from dcim.analytics.redundancy import RedundancyReport
from dcim.collectors.base import DeviceStatus
from dcim.live.state import Collection, RackState, SiteState, UnitState


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is shown as missing."""
    return value if value is None or math.isfinite(value) else None


def _pue(fig: PueFigure | None) -> dict[str, Any] | None:
    if fig is None:
        return None
    return {"value": _finite(fig.value), "category": fig.category, "coverage": fig.coverage,
            "reason": fig.reason}


def _value(fig: Figure | None) -> float | None:
    return None if fig is None else _finite(fig.value)


@functools.lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone_doc(name: str, now_ns: int) -> dict[str, Any]:
    """The site's zone at an instant: its abbreviation ("HKT") and offset from UTC in minutes.

    Both are None for a zone this machine does not know (the page then names the zone only).
    Computed per document, so a daylight-saving change shows with the next one."""
    zone = _zone(name)
    if zone is None:
        return {"tz_abbrev": None, "utc_offset_min": None}
    at = datetime.fromtimestamp(now_ns / 1e9, tz=timezone.utc).astimezone(zone)
    offset = at.utcoffset()
    abbrev = at.tzname()
    return {"tz_abbrev": abbrev if abbrev and abbrev[0] not in "+-" else None,
            "utc_offset_min": None if offset is None else int(offset.total_seconds() // 60)}


def headline_doc(state: SiteState) -> dict[str, Any]:
    """The headline tiles: PUE live and today, pPUE, loads and the outdoor temperature."""
    live: SiteFigures | None = state.pue_live
    today: SiteFigures | None = state.pue_today
    return {
        "pue": _pue(live.pue if live else None),
        "pue_today": _pue(today.pue if today else None),
        "ppue_cooling": _value(live.ppue_cooling if live else None),
        "ppue_distribution": _value(live.ppue_distribution if live else None),
        "it_kw": _finite(state.it_kw),
        "facility_kw": _finite(state.facility_kw),
        "outdoor_c": _finite(state.outdoor_c),
    }


def collection_doc(c: Collection) -> dict[str, Any]:
    """Collection and store-and-forward counters; an error string is null when there is none."""
    doc = dataclasses.asdict(c)
    doc["gateways_down"] = list(c.gateways_down)
    doc["storage_error"] = c.storage_error or None
    doc["buffer_error"] = c.buffer_error or None
    return doc


def _node_doc(u: UnitState) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "type": u.kind, "depth": u.depth,
            "inputs": list(u.inputs), "kw": _finite(u.kw), "capacity_kw": u.capacity_kw,
            "status": u.state, "why": u.why, "monitored": u.monitored, "energised": u.energised,
            "metered": u.metered}


def _cooling_doc(u: UnitState) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "type": u.kind, "kw": _finite(u.kw),
            "running": u.running, "status": u.state, "why": u.why}


def _rack_doc(r: RackState) -> dict[str, Any]:
    return {"id": r.id, "hall": r.hall, "row": r.row, "index": r.index,
            "design_kw": r.design_kw, "kw": _finite(r.kw), "inlet_c": _finite(r.inlet_c),
            "rh_pct": _finite(r.rh_pct), "band": r.band, "quality": r.quality}


def redundancy_doc(report: RedundancyReport | None) -> dict[str, Any] | None:
    """Verdicts, exposure and per-group levels (None before the site has a verdict)."""
    if report is None:
        return None
    return {
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


def _anomaly_docs(anomalies: Sequence[Any]) -> list[dict[str, Any]]:
    """The detectors' open episodes, newest first."""
    return sorted(
        ({"severity": a.severity, "kind": a.kind, "device": a.series.device,
          "point": a.series.point, "message": a.message, "since_ms": a.since_ns // 1_000_000,
          "value": _finite(a.value)} for a in anomalies),
        key=lambda a: a["since_ms"], reverse=True)


def _ashrae_doc(ashrae: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in ashrae.items()}


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


def _device_values(state: SiteState) -> list[dict[str, Any]]:
    """Every live value, by device and point (what a site without a plant shows)."""
    return [{"device": k.device, "type": k.measurement, "point": k.point,
             "value": _finite(s.value), "quality": s.quality.name.lower(),
             "time_ms": _ms(s.time_ns)}
            for k, s in sorted(state.values.items(), key=lambda i: (i[0].device, i[0].point))]


def state_document(state: SiteState, alarms: Sequence[Alarm], now_ns: int, *,
                   device_types: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The document of /api/state and /api/events (see dashboards/static/app.js)."""
    device_types = device_types or {}
    electrical = [u for u in state.units.values() if u.layer == "electrical"]
    # from the sources downstream; the sort is stable, so config order within a depth
    chain = [_node_doc(u) for u in sorted(electrical, key=lambda u: u.depth)]
    cooling = [_cooling_doc(u) for u in state.units.values() if u.layer == "mechanical"]
    not_up = [{"id": device_id, "type": device_types.get(device_id, ""),
               "status": h.status.value, "gateway": h.gateway, "last_error": h.last_error}
              for device_id, h in sorted(state.health.items())
              if h.status is not DeviceStatus.UP]
    return {
        "seq": state.seq,
        "site": {"id": state.site_id, "name": state.site_name, "time_ms": now_ns // 1_000_000,
                 "timezone": state.timezone, **zone_doc(state.timezone, now_ns)},
        "headline": headline_doc(state),
        "collection": collection_doc(state.collection),
        "redundancy": redundancy_doc(state.redundancy),
        "power_chain": chain,
        "cooling": cooling,
        "racks": [_rack_doc(r) for r in state.racks],
        "ashrae": _ashrae_doc(state.ashrae),
        "alarms": [alarm_doc(a, now_ns) for a in alarms],
        "alarm_counts": alarm_counts(alarms),
        "anomalies": _anomaly_docs(state.anomalies),
        "devices_not_up": not_up,
        "withheld": dict(state.withheld),
        "device_values": [] if state.units or state.racks else _device_values(state),
    }


def state_health(state: SiteState) -> tuple[bool, dict[str, Any]]:
    """/healthz from the live state: healthy while the store takes writes and the buffer works."""
    c = state.collection
    ok = c.storage_outage_s == 0 and not c.buffer_error
    return ok, {"devices": c.devices, "up": c.up, "buffered": c.buffered,
                "storage_outage_s": c.storage_outage_s,
                "last_error": c.storage_error or c.buffer_error, "seq": state.seq}
