"""Generate a Tier-III+ site of any size: the reference Cyberport 5 layout, scaled.

Sizing rules (docs/site-model.md): 2N UPS with N+1 modules per side, N+1 generators,
chillers, pumps, towers and CRAH per hall, two PDUs per side per pair of rows.
"""

from __future__ import annotations

import copy
import math
import string
from dataclasses import dataclass
from typing import Any

from dcim.site.profiles import REFERENCE_PROFILES

RACKS_PER_ROW = 10
ROWS_PER_PDU = 2
MAX_UNITS_PER_GATEWAY = 100


@dataclass(frozen=True)
class SiteSpec:
    """Knobs for a generated site."""

    site_id: str = "cyberport5"
    name: str = "Cyberport 5 Data Centre"
    halls: int = 2
    racks: int = 200
    rack_kw: float = 8.0
    host: str = "127.0.0.1"
    base_port: int = 15020
    opcua_port: int = 14840
    ups_module_kw: float = 400.0
    generator_kw: float = 1500.0
    chiller_kw: float = 1000.0
    crah_kw: float = 150.0


def _n_plus_1(load_kw: float, unit_kw: float) -> int:
    return max(1, math.ceil(load_kw / unit_kw)) + 1


def _row_names(count: int) -> list[str]:
    letters = string.ascii_uppercase
    return [letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26] for i in range(count)]


def generate_site(spec: SiteSpec = SiteSpec()) -> dict[str, Any]:
    """A complete site file (as data) for spec; validate it with site_from_dict."""
    racks_per_hall = math.ceil(spec.racks / spec.halls)
    rows_per_hall = math.ceil(racks_per_hall / RACKS_PER_ROW)
    it_kw = spec.racks * spec.rack_kw
    hall_kw = racks_per_hall * spec.rack_kw
    ups_modules = _n_plus_1(it_kw, spec.ups_module_kw)
    facility_kw = it_kw * 1.45
    generators = _n_plus_1(facility_kw, spec.generator_kw)
    chillers = _n_plus_1(it_kw * 1.1, spec.chiller_kw)
    crah_per_hall = _n_plus_1(hall_kw * 1.05, spec.crah_kw)
    pdu_kw = ROWS_PER_PDU * RACKS_PER_ROW * spec.rack_kw * 1.25

    gateways: list[dict[str, Any]] = []
    ports = iter(range(spec.base_port, spec.base_port + 1000))

    def modbus_gateway(gid: str) -> str:
        gateways.append({"id": gid, "protocol": "modbus_tcp", "host": spec.host, "port": next(ports),
                         "max_in_flight": 1, "timeout_s": 1.0})
        return gid

    gw_power = modbus_gateway("gw-power")
    pdu_gateways = [modbus_gateway("gw-pdu")]
    gateways.append({"id": "bms", "protocol": "opcua",
                     "endpoint": f"opc.tcp://{spec.host}:{spec.opcua_port}/dcim/bms"})

    electrical: list[dict[str, Any]] = []
    mechanical: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    unit = {"gw-power": 0, "gw-pdu": 0}

    def device(did: str, profile: str, gateway: str, monitors: str) -> None:
        entry: dict[str, Any] = {"id": did, "profile": profile, "gateway": gateway, "monitors": monitors}
        if gateway in unit:
            unit[gateway] += 1
            entry["unit_id"] = unit[gateway]
        devices.append(entry)

    def pdu_gateway() -> str:
        """The PDU gateway with room for one more unit (a new one every 100 PDUs)."""
        current = pdu_gateways[-1]
        if unit[current] >= MAX_UNITS_PER_GATEWAY:
            current = modbus_gateway(f"gw-pdu-{len(pdu_gateways) + 1}")
            pdu_gateways.append(current)
            unit[current] = 0
        return current

    def comp(cid: str, ctype: str, capacity: float, inputs: list[str] | None = None,
             **extra: Any) -> None:
        entry: dict[str, Any] = {"id": cid, "type": ctype, "capacity_kw": round(capacity, 1)}
        if inputs:
            entry["inputs"] = inputs
        entry.update(extra)
        electrical.append(entry)

    for i in range(1, generators + 1):
        comp(f"GEN-{i}", "generator", spec.generator_kw, group="generators")
        device(f"GEN-{i}-CTRL", "genset", gw_power, f"GEN-{i}")
    # Two bus sections of the paralleling switchgear, every set able to close onto either:
    # losing one section leaves the other side on generator power (no single point).
    for side in "AB":
        comp(f"GEN-BUS-{side}", "switchboard", spec.generator_kw * generators,
             [f"GEN-{i}" for i in range(1, generators + 1)],
             name=f"generator paralleling bus, section {side}")
    for side in "AB":
        comp(f"UTIL-{side}", "utility_feed", facility_kw * 1.1, group="utility",
             name=f"HK Electric 11 kV feed {side}")
        device(f"M-UTIL-{side}", "pm5560", gw_power, f"UTIL-{side}")
        comp(f"TX-{side}", "transformer", facility_kw * 1.1, [f"UTIL-{side}"], efficiency=0.985)
        comp(f"ATS-{side}", "ats", facility_kw * 1.1, [f"TX-{side}", f"GEN-BUS-{side}"])
        device(f"ATS-{side}-CTRL", "ats", gw_power, f"ATS-{side}")
        comp(f"MSB-{side}", "switchboard", facility_kw * 1.1, [f"ATS-{side}"],
             name=f"main switchboard {side}")
        for m in range(1, ups_modules + 1):
            comp(f"UPS-{side}{m}", "ups_module", spec.ups_module_kw, [f"MSB-{side}"],
                 group=f"ups-{side.lower()}-modules", efficiency=0.96)
            device(f"UPS-{side}{m}", "ups_module_400", gw_power, f"UPS-{side}{m}")
        comp(f"UPS-{side}", "ups_system", spec.ups_module_kw * (ups_modules - 1),
             [f"UPS-{side}{m}" for m in range(1, ups_modules + 1)], group="ups-2n",
             name=f"UPS system {side} output bus")
        device(f"M-UPS-{side}-OUT", "pm5560", gw_power, f"UPS-{side}")
        comp(f"MCC-{side}", "switchboard", facility_kw * 0.4, [f"MSB-{side}"],
             name=f"mechanical board {side}")
        device(f"M-MCC-{side}", "pm5560", gw_power, f"MCC-{side}")
    comp("AUX", "load", 120.0, ["MSB-A", "MSB-B"], load_kw=60.0,
         name="lighting, security, offices (via ATS)")
    device("M-AUX", "pm5560", gw_power, "AUX")

    halls: list[dict[str, Any]] = []
    rack_gateways: list[str] = []
    remaining = spec.racks
    for h in range(1, spec.halls + 1):
        hid = f"H{h}"
        rows = []
        hall_racks = min(racks_per_hall, remaining)
        remaining -= hall_racks
        pdus = math.ceil(math.ceil(hall_racks / RACKS_PER_ROW) / ROWS_PER_PDU)
        for side in "AB":
            for p in range(1, pdus + 1):
                pid = f"PDU-{side}-{hid}-{p}"
                comp(pid, "pdu", pdu_kw, [f"UPS-{side}"])
                device(pid, "sunspec_203", pdu_gateway(), pid)
        gw: str | None = None
        used = MAX_UNITS_PER_GATEWAY
        for r, letter in enumerate(_row_names(rows_per_hall)):
            count = min(RACKS_PER_ROW, hall_racks - r * RACKS_PER_ROW)
            if count <= 0:
                break
            if gw is None or used + count > MAX_UNITS_PER_GATEWAY:
                gw = modbus_gateway(f"gw-racks-{hid.lower()}-{len(rack_gateways) + 1}")
                rack_gateways.append(gw)
                used = 0
            pdu = r // ROWS_PER_PDU + 1
            rows.append({
                "id": f"{hid}-{letter}", "x_m": 2.0, "y_m": round(2.0 + r * 2.4, 2),
                "rack_count": count, "design_kw": spec.rack_kw,
                "feed_a": f"PDU-A-{hid}-{pdu}", "feed_b": f"PDU-B-{hid}-{pdu}",
                "monitor": {"profile": "rack_monitor", "gateway": gw, "first_unit_id": used + 1},
            })
            used += count
        halls.append({"id": hid, "name": f"Data hall {h}", "area_m2": round(hall_racks * 2.6, 1),
                      "rows": rows})

    hall_ids = [h["id"] for h in halls]
    mcc = ["MCC-A", "MCC-B"]

    def unit_of(cid: str, ctype: str, capacity: float, rated: float, serves: list[str],
                group: str, profile: str) -> None:
        mechanical.append({"id": cid, "type": ctype, "capacity_kw": round(capacity, 1),
                           "rated_power_kw": rated, "serves": serves, "powered_from": mcc,
                           "group": group})
        device(cid, profile, "bms", cid)

    for i in range(1, chillers + 1):
        unit_of(f"CH-{i}", "chiller", spec.chiller_kw, round(spec.chiller_kw * 0.18, 1), hall_ids,
                "chillers", "bms_chiller")
    loop_kw = spec.chiller_kw * (chillers - 1)
    for i in range(1, chillers + 1):
        unit_of(f"CHWP-{i}", "pump", loop_kw / (chillers - 1), 22.0, hall_ids, "chw-pumps",
                "bms_pump")
        unit_of(f"CWP-{i}", "pump", loop_kw / (chillers - 1), 30.0, hall_ids, "cw-pumps",
                "bms_pump")
        unit_of(f"CT-{i}", "cooling_tower", spec.chiller_kw * 1.2, 15.0, hall_ids,
                "cooling-towers", "bms_cooling_tower")
    for hid in hall_ids:
        for i in range(1, crah_per_hall + 1):
            unit_of(f"CRAH-{hid}-{i}", "crah", spec.crah_kw, 7.5, [hid], f"crah-{hid.lower()}",
                    "bms_crah")
    device("WX-1", "bms_weather", "bms", "site")
    device("WM-1", "bms_water_meter", "bms", "site")

    groups = [
        {"id": "utility", "kind": "utility", "design": "2N", "description": "two utility feeds"},
        {"id": "generators", "kind": "generator", "design": "N+1"},
        {"id": "ups-2n", "kind": "ups_system", "design": "2N", "description": "UPS A and B"},
        {"id": "ups-a-modules", "kind": "ups_module", "design": "N+1"},
        {"id": "ups-b-modules", "kind": "ups_module", "design": "N+1"},
        {"id": "chillers", "kind": "chiller", "design": "N+1"},
        {"id": "chw-pumps", "kind": "pump", "design": "N+1"},
        {"id": "cw-pumps", "kind": "pump", "design": "N+1"},
        {"id": "cooling-towers", "kind": "cooling_tower", "design": "N+1"},
    ] + [{"id": f"crah-{h.lower()}", "kind": "crah", "design": "N+1"} for h in hall_ids]

    return {
        "schema_version": 1,
        "site": {
            "id": spec.site_id, "name": spec.name, "timezone": "Asia/Hong_Kong",
            "location": {"city": "Hong Kong", "address": "Cyberport, Pok Fu Lam, Hong Kong Island",
                         "latitude": 22.2614, "longitude": 114.1297},
            "tier_design": "III+",
            "grid": {"supplier": "HK Electric", "emission_factors": [
                {"year": 2019, "kg_co2e_per_kwh": 0.81, "source": "HK Electric sustainability report"},
                {"year": 2026, "kg_co2e_per_kwh": 0.65,
                 "source": "assumed: falling since gas unit L12 (2024); confirm with supplier"},
            ]},
            "pue": {"it_boundary": "it_input", "min_coverage": 0.95},
        },
        "storage": {"backend": "embedded", "path": f"var/{spec.site_id}.sqlite"},
        "gateways": gateways,
        "profiles": copy.deepcopy(REFERENCE_PROFILES),
        "electrical": electrical,
        "mechanical": mechanical,
        "redundancy_groups": groups,
        "halls": halls,
        "devices": devices,
    }


SECTION_COMMENTS = {
    "site": "Identity, climate zone, grid emission factors and where IT energy is measured.",
    "storage": "Where samples go: embedded (SQLite, default), influxdb1 or influxdb2.",
    "gateways": "Protocol endpoints: Modbus TCP gateways (many unit ids each) and the BMS OPC UA server.",
    "profiles": "Point maps per device model: register/node, type, byte order, scale, role.",
    "electrical": "The power chain as a graph: each component names the components feeding it.",
    "mechanical": "Cooling plant: capacity, halls served, and alternative power supplies.",
    "redundancy_groups": "Design redundancy of each group of like units (N, N+k, 2N).",
    "halls": "IT space: rows of racks with floor positions, A/B feeds and one monitor per rack.",
    "devices": "Monitored devices (rack monitors are declared per row above).",
}


def to_yaml(data: dict[str, Any], header: str = "") -> str:
    """Site data as YAML with a comment before each top-level section."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    parts = [header] if header else []
    for key, value in data.items():
        if key in SECTION_COMMENTS:
            parts.append(f"\n# {SECTION_COMMENTS[key]}\n")
        parts.append(yaml.dump({key: value}, Dumper=NoAliases, sort_keys=False, width=100))
    return "".join(parts)
