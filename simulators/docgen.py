"""Generate docs/devices.md from the site file and the encoder, so docs and code cannot drift.

Usage: python -m dcim.simulators.docgen config/cyberport5.yaml docs/devices.md
"""

from __future__ import annotations

import importlib
import struct
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from dcim.site.loader import load_site
from dcim.site.model import Site, SiteDevice
from dcim.config.site import ModbusGateway, ModbusPoint, ModbusProfile
from dcim.simulators.modbus_server import EXC_GATEWAY_TARGET
from dcim.simulators.registers import (
    NOT_IMPLEMENTED, ORDERS, SUNSPEC_METER_LENGTH, DeviceEncoder, encode_value,
)

MBPOLL_TYPES = {"holding": "4", "input": "3", "coil": "0", "discrete_input": "1"}
TABLE_FC = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


def _scaling(p: ModbusPoint) -> str:
    """'scale 1/2^9, x 10^a_sf' and the like; '-' when raw is the value."""
    parts = []
    if p.scale != 1.0:
        inverse = 1 / p.scale
        power = round(inverse).bit_length() - 1
        binary = inverse > 1 and abs(inverse - (1 << power)) < 1e-9
        parts.append(f"scale 1/2^{power}" if binary else f"scale {p.scale:g}")
    if p.offset:
        parts.append(f"offset {p.offset:g}")
    if p.scale_factor_point:
        parts.append(f"x 10^{p.scale_factor_point}")
    if p.bit is not None:
        parts.append(f"bit {p.bit}")
    return ", ".join(parts) or "-"


def _ranges(numbers: list[int]) -> str:
    """'1-100, 120' for a sorted list of unit ids."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [-1]:
        if n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(out)


def _mbpoll(p: ModbusPoint, unit: int, port: int, host: str) -> str:
    """An mbpoll command that reads one point (values are raw before scaling)."""
    kind = MBPOLL_TYPES[p.table]
    count = p.size_registers
    extra = ""
    if p.type == "float32":
        kind += ":float"
        count = 1
        extra = " -B" if p.order == "ABCD" else ""
    elif p.type in ("int32", "uint32", "acc32") and p.order in ("ABCD", "CDAB"):
        kind += ":int"
        count = 1
        extra = " -B" if p.order == "ABCD" else ""
    return (f"mbpoll -m tcp -a {unit} -0 -r {p.address} -c {count} -t {kind}{extra} "
            f"-p {port} -1 {host}")


def _profile_table(profile: ModbusProfile) -> list[str]:
    lines = [
        "| point | table (FC) | address (0-based) | registers | type | order | scaling | unit "
        "| role |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in sorted(profile.points, key=lambda q: (q.table, q.address, q.bit or 0)):
        lines.append(
            f"| `{p.name}` | {p.table} ({TABLE_FC[p.table]}) | {p.address} | {p.size_registers} "
            f"| {p.type} | {p.order if p.size_registers > 1 else '-'} | {_scaling(p)} "
            f"| {p.unit or '-'} | {p.role or '-'} |")
    return lines


def _blocks(device: SiteDevice) -> str:
    encoder = DeviceEncoder(device)
    return ", ".join(f"{b.table} {b.start}-{b.end - 1}" for b in encoder.image.blocks)


def modbus_device_docs(site: Site) -> str:
    """Markdown describing every Modbus profile, its devices and how to read them."""
    by_profile: dict[str, list[SiteDevice]] = defaultdict(list)
    for d in site.devices.values():
        if d.protocol == "modbus":
            by_profile[d.profile_id].append(d)
    out = [
        "## Modbus devices",
        "",
        "Served by `dcim.simulators.modbus_server` (one Modbus TCP server per gateway, devices "
        "by unit id) and read by the Modbus collector. Addresses are **0-based** as on the "
        "wire (a manual's register 3060 is address 3059 here). Values on the wire are raw: "
        "engineering value = raw x scale + offset (x 10^sf for SunSpec points).",
        "",
        "### Wire rules",
        "",
        "- A read must lie entirely inside one mapped block of the device (the union of its "
        "points' registers; for SunSpec devices the whole SunSpec map), else exception 2 "
        "(illegal data address). Plan reads per block.",
        f"- An unknown unit id answers exception {EXC_GATEWAY_TARGET} (0x0B, gateway target "
        "failed to respond), as a real gateway does.",
        "- Writes answer exception 1 (no writable point in that table) or 2 (range not "
        "writable); counts beyond 125 registers / 2000 bits answer exception 3.",
        "- Not available (device or point NO_DATA): " + ", ".join(
            f"{t} {_hex(t)}" for t in ("int16", "uint16", "sunssf", "acc32", "uint32",
                                       "float32")) + "; bits read 0.",
        "",
        "### Byte orders",
        "",
        "| order | 16-bit 0x0102 | int32 -1985229329 | float32 1.0 |",
        "|---|---|---|---|",
    ]
    for order in ORDERS:
        out.append(f"| {order} | {_regs('int16', order, 0x0102)} "
                   f"| {_regs('int32', order, -1985229329)} | {_regs('float32', order, 1.0)} |")
    out.append("")
    gateways = {g.id: g for g in site.config.gateways if isinstance(g, ModbusGateway)}
    for profile_id in sorted(by_profile):
        devices = by_profile[profile_id]
        profile = devices[0].profile
        assert isinstance(profile, ModbusProfile)
        out += [f"### `{profile_id}`: {profile.vendor_model} ({profile.device_type})", ""]
        out += _profile_table(profile)
        out += ["", f"Mapped blocks: {_blocks(devices[0])}."]
        encoder = DeviceEncoder(devices[0])
        if encoder.sunspec_header:
            base, model_id, start = encoder.sunspec_header
            out.append(
                f"SunSpec map: 'SunS' at {base}, model 1 (L 66) at {base + 2}, model {model_id} "
                f"(L {SUNSPEC_METER_LENGTH}) at {start}, end marker 0xFFFF at "
                f"{start + 2 + SUNSPEC_METER_LENGTH}; the scale factor of each value is chosen "
                "per update for the most precision that fits the type.")
        out += ["", "| gateway | host:port | unit ids | devices |", "|---|---|---|---|"]
        per_gw: dict[str, list[SiteDevice]] = defaultdict(list)
        for d in devices:
            per_gw[d.gateway.id].append(d)
        for gw_id, members in per_gw.items():
            gw = gateways[gw_id]
            units = sorted(d.unit_id for d in members if d.unit_id is not None)
            names = ", ".join(d.id for d in members) if len(members) <= 6 else \
                f"{members[0].id} ... {members[-1].id} ({len(members)})"
            out.append(f"| {gw_id} | {gw.host}:{gw.port} | {_ranges(units)} | {names} |")
        first = devices[0]
        sample = next((p for p in profile.points if p.type == "float32"),
                      next((p for p in profile.points if p.table in ("holding", "input")
                            and p.role and p.bit is None), profile.points[0]))
        gw = gateways[first.gateway.id]
        assert first.unit_id is not None
        out += ["", f"Read `{sample.name}` of {first.id} with mbpoll while the simulators run:",
                "", "```sh", _mbpoll(sample, first.unit_id, gw.port, gw.host), "```", "",
                "mbpoll prints raw values: apply the scaling column (and the scale factor "
                "register for SunSpec points) to get engineering units.", ""]
    return "\n".join(out)


def _regs(type_: str, order: str, value: float) -> str:
    data = encode_value(type_, order, value)
    return " ".join(f"0x{w:04X}" for w in struct.unpack(f">{len(data) // 2}H", data))


def _hex(type_: str) -> str:
    marker = NOT_IMPLEMENTED[type_]
    return "NaN" if isinstance(marker, float) else _regs(type_, "ABCD", marker)


def _opcua_docs() -> Callable[[Site], str] | None:
    """The OPC UA generator of the OPC UA simulator, if that module exists yet."""
    try:
        module = importlib.import_module("dcim.simulators.opcua_server")
    except ImportError:
        return None
    return getattr(module, "opcua_device_docs", None)


def device_docs(site: Site) -> str:
    """The whole docs/devices.md text."""
    parts = [
        "# Devices",
        "",
        "<!-- Generated by `python -m dcim.simulators.docgen config/cyberport5.yaml "
        "docs/devices.md`; do not edit by hand. -->",
        "",
        f"Site `{site.id}`: {len(site.devices)} devices.",
        "",
        modbus_device_docs(site),
    ]
    opcua = _opcua_docs()
    parts += [opcua(site)] if opcua else [
        "## OPC UA devices", "",
        "_Filled by `dcim.simulators.opcua_server.opcua_device_docs` (not available yet)._", ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the device documentation of a site file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dcim.simulators.docgen SITE.yaml OUT.md", file=sys.stderr)
        return 2
    site = load_site(args[0])
    Path(args[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(args[1]).write_text(device_docs(site), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
