"""The draft site fragment of a Modbus discovery: gateway, profiles and devices that validate.

Pure: from a `ScanResult` (discover_modbus.py) to a dict and its YAML text. A unit the scan
recognised as a library device becomes `{library: NAME}` (with `order:` when its order check
said so); a SunSpec meter gets the points walked at their addresses; anything else a
placeholder profile with a TODO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcim.collectors.discover_modbus import ID_PATTERN, ScanResult, SunspecModel, UnitInfo
from dcim.library import draft_entry

# SunSpec meter points worth collecting: name, role, offset from the model's ID register,
# type, scale (the device's unit to the role's), and the scale factor's name and offset (integer
# models 201-204; the float models 211-214 have none).
_INT_METER = (
    ("current_a", "current_a", 2, "int16", 1.0, "a_sf", 6),
    ("voltage_ln_v", "voltage_v", 7, "int16", 1.0, "v_sf", 15),
    ("frequency_hz", "frequency_hz", 16, "int16", 1.0, "hz_sf", 17),
    ("power_kw", "power_kw", 18, "int16", 0.001, "w_sf", 22),
    ("apparent_power_kva", "apparent_power_kva", 23, "int16", 0.001, "va_sf", 27),
    ("reactive_power_kvar", "reactive_power_kvar", 28, "int16", 0.001, "var_sf", 32),
    ("power_factor", "power_factor", 33, "int16", 0.01, "pf_sf", 37),
    ("energy_kwh", "energy_kwh", 46, "acc32", 0.001, "totwh_sf", 54),
)
_FLOAT_METER = (
    ("current_a", "current_a", 2, 1.0), ("voltage_ln_v", "voltage_v", 10, 1.0),
    ("frequency_hz", "frequency_hz", 26, 1.0), ("power_kw", "power_kw", 28, 0.001),
    ("apparent_power_kva", "apparent_power_kva", 36, 0.001),
    ("reactive_power_kvar", "reactive_power_kvar", 44, 0.001),
    ("power_factor", "power_factor", 52, 1.0), ("energy_kwh", "energy_kwh", 68, 0.001),
)


def sunspec_meter_points(model: SunspecModel) -> list[dict[str, Any]]:
    """Profile points of a SunSpec meter model (201-204 integer + sf, 211-214 float)."""
    a = model.address
    points: list[dict[str, Any]] = []
    if 201 <= model.model_id <= 204:
        for name, role, offset, type_, scale, sf_name, sf in _INT_METER:
            points.append({"name": sf_name, "table": "holding", "address": a + sf,
                           "type": "sunssf"})
            point: dict[str, Any] = {"name": name, "role": role, "table": "holding",
                                     "address": a + offset, "type": type_,
                                     "scale_factor_point": sf_name}
            if scale != 1.0:
                point["scale"] = scale
            points.append(point)
    elif 211 <= model.model_id <= 214:
        for name, role, offset, scale in _FLOAT_METER:
            point = {"name": name, "role": role, "table": "holding", "address": a + offset,
                     "type": "float32"}
            if scale != 1.0:
                point["scale"] = scale
            points.append(point)
    return points


def slug(text: str, fallback: str) -> str:
    """An id (letters, digits, . _ -, at most 64) made from free text."""
    out = ID_PATTERN.sub("-", text).strip("-._")[:64].rstrip("-._")
    return out or fallback


@dataclass
class Draft:
    """A site fragment (gateways, profiles, devices) and a comment per profile."""

    data: dict[str, Any]
    notes: dict[str, list[str]]  # profile id -> comment lines
    header: list[str]


def _profile_for(info: UnitInfo) -> tuple[dict[str, Any], list[str], str]:
    """(profile, comment lines, name hint) of a unit."""
    if info.library is not None:
        return draft_entry(info.library, info.orders, info.order_seen)
    meter = next((m for m in info.models if 201 <= m.model_id <= 214), None)
    if info.sunspec_base is not None:
        name = f"{info.common.get('manufacturer', '')} {info.common.get('model', '')}".strip()
        vendor_model = f"{name} (SunSpec models {' '.join(map(str, info.model_ids))})"
    elif info.identity:
        name = f"{info.identity.get('vendor', '')} {info.identity.get('product_code', '')}"
        vendor_model = " ".join(filter(None, (name.strip(), info.identity.get("revision"))))
    else:
        name, vendor_model = "unknown", "unknown device"
    points = sunspec_meter_points(meter) if meter else []
    notes = []
    if meter is None:
        notes = ["TODO: fill in points from the device's register map; the point below only",
                 "makes the draft load. device_type 'meter' is a guess: set the real one."]
        table = "input" if info.answers.get("input 0") == "ok" \
            and info.answers.get("holding 0") != "ok" else "holding"
        points = [{"name": f"todo_{table}_0", "table": table, "address": 0, "type": "uint16"}]
    else:
        notes = [f"points of SunSpec meter model {meter.model_id} at {meter.address}: check the "
                 "roles (import vs export energy) before use"]
    profile = {"protocol": "modbus", "device_type": "meter", "vendor_model": vendor_model,
               "points": points}
    return profile, notes, name.strip() or "unknown"


def build_draft(result: ScanResult, *, gateway_id: str = "gw1", monitors: str | None = None,
                timeout_s: float = 1.0) -> Draft:
    """Gateway + one profile per distinct device kind + one device per unit found."""
    gateway = {"id": gateway_id, "protocol": "modbus_tcp", "host": result.host,
               "port": result.port, "timeout_s": timeout_s}
    profiles: dict[str, dict[str, Any]] = {}
    notes: dict[str, list[str]] = {}
    by_kind: dict[tuple[str, ...], str] = {}
    devices = []
    for info in result.units:
        key = info.kind()
        if key not in by_kind:
            profile, lines, hint = _profile_for(info)
            pid = base = slug(hint, "unknown").lower()
            n = 2
            while pid in profiles:
                pid, n = f"{base[:60]}-{n}", n + 1
            by_kind[key] = pid
            profiles[pid] = profile
            notes[pid] = [info.describe(), *lines]
        device: dict[str, Any] = {"id": f"{gateway_id}-u{info.unit_id}",
                                  "profile": by_kind[key], "gateway": gateway_id,
                                  "unit_id": info.unit_id}
        if monitors is not None:  # omitted: the device measures the site as a whole
            device["monitors"] = monitors
        devices.append(device)
    header = [f"Draft from: dcim discover modbus {result.host}:{result.port}",
              f"{len(result.units)} unit(s) found with {result.requests} requests in "
              f"{result.elapsed_s:.1f} s" + (f"; stopped: {result.stopped}" if result.stopped
                                              else ""),
              "Paste into a site file; give each device a better id and, if it measures a",
              "component or rack of the plant, monitors: (omitted, it measures the site)."]
    return Draft({"gateways": [gateway], "profiles": profiles, "devices": devices}, notes, header)


def render_draft(draft: Draft) -> str:
    """The draft as YAML with its comments (one comment block before each profile)."""
    import yaml

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, sort_keys=False, default_flow_style=False)

    out = [f"# {line}" for line in draft.header]
    out.append(dump({"gateways": draft.data["gateways"]}).rstrip())
    out.append("profiles:")
    for pid, profile in draft.data["profiles"].items():
        out += [f"  # {line}" for line in draft.notes.get(pid, [])]
        out.append("\n".join(f"  {line}" for line in dump({pid: profile}).splitlines()))
    if draft.data["devices"]:
        out.append(dump({"devices": draft.data["devices"]}).rstrip())
    else:
        out.append("devices: []")
    return "\n".join(out) + "\n"
