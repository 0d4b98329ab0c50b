"""Load a site file: parse, validate the schema, check cross-references, expand."""

from __future__ import annotations

import difflib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dcim.config import site as schema
from dcim.config.alarms import ALARM_SOURCES
from dcim.library import resolve as resolve_library
from dcim.site.errors import ConfigError, ConfigIssue, Loc
from dcim.site.hints import unknown_field_hint
from dcim.site.model import (
    NOTHING, Rack, Site, SiteDevice, expand_racks, rack_monitor_devices,
)
from dcim.site.roles import DEVICE_TYPE_ROLES, MONITORS, ROLES
from dcim.site.yamlsrc import LineMap, read_yaml

SOURCE_TYPES = ("utility_feed", "generator")
FEED_TYPES = ("pdu",)


def _pydantic_issues(exc: ValidationError, lines: LineMap) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            message = f"unknown field {str(loc[-1])!r}{unknown_field_hint(loc)}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            got = err.get("input")
            message = err["msg"].removeprefix("Value error, ")
            if not isinstance(got, (dict, list)):
                message += f" (got {got!r})"
        # drop the discriminator tag pydantic inserts after a union field
        loc = tuple(p for p in loc if p not in ("modbus_tcp", "modbus_rtu", "opcua", "modbus", "embedded",
                                                 "influxdb1", "influxdb2"))
        issues.append(lines.issue(loc, message))
    return issues


def _check_ids(cfg: schema.SiteConfig, racks: list[tuple[Rack, Loc]], lines: LineMap,
               issues: list[ConfigIssue]) -> None:
    """Ids are unique within their namespace: plant (components, halls, rows, racks), devices,
    gateways, redundancy groups. A device may share its id with the component it monitors."""
    plant: list[tuple[str, Loc]] = []
    plant += [(c.id, ("electrical", i, "id")) for i, c in enumerate(cfg.electrical)]
    plant += [(c.id, ("mechanical", i, "id")) for i, c in enumerate(cfg.mechanical)]
    for h_i, hall in enumerate(cfg.halls):
        plant.append((hall.id, ("halls", h_i, "id")))
        plant += [(row.id, ("halls", h_i, "rows", r_i, "id")) for r_i, row in enumerate(hall.rows)]
    plant += [(rack.id, loc) for rack, loc in racks]
    namespaces: list[list[tuple[str, Loc]]] = [
        plant,
        [(g.id, ("gateways", i, "id")) for i, g in enumerate(cfg.gateways)],
        [(g.id, ("redundancy_groups", i, "id")) for i, g in enumerate(cfg.redundancy_groups)],
        [(d.id, ("devices", i, "id")) for i, d in enumerate(cfg.devices)],
    ]
    for declared in namespaces:
        first: dict[str, Loc] = {}
        for name, loc in declared:
            if name in first:
                where = lines.line_of(first[name])
                issues.append(lines.issue(loc, f"duplicate id {name!r} (also declared at line {where})"))
            else:
                first[name] = loc


def _check_plant(cfg: schema.SiteConfig, lines: LineMap, issues: list[ConfigIssue]) -> None:
    electrical = {c.id: c for c in cfg.electrical}
    groups = {g.id: g for g in cfg.redundancy_groups}
    halls = {h.id for h in cfg.halls}
    for i, comp in enumerate(cfg.electrical):
        if comp.type in SOURCE_TYPES and comp.inputs:
            issues.append(lines.issue(("electrical", i, "inputs"),
                                      f"a {comp.type} is a source and takes no inputs"))
        if comp.type not in SOURCE_TYPES and not comp.inputs:
            issues.append(lines.issue(("electrical", i, "inputs"),
                                      f"a {comp.type} needs at least one input (what feeds it?)"))
        for j, ref in enumerate(comp.inputs):
            if ref not in electrical:
                issues.append(lines.issue(("electrical", i, "inputs", j),
                                          f"input {ref!r} is not an electrical component"))
        if comp.group is not None and comp.group not in groups:
            issues.append(lines.issue(("electrical", i, "group"),
                                      f"redundancy group {comp.group!r} is not declared"))
    _check_cycles(cfg, lines, issues)
    for i, unit in enumerate(cfg.mechanical):
        for j, ref in enumerate(unit.serves):
            if ref not in halls:
                issues.append(lines.issue(("mechanical", i, "serves", j), f"hall {ref!r} does not exist"))
        for j, ref in enumerate(unit.powered_from):
            if ref not in electrical:
                issues.append(lines.issue(("mechanical", i, "powered_from", j),
                                          f"supply {ref!r} is not an electrical component"))
        if unit.group is not None and unit.group not in groups:
            issues.append(lines.issue(("mechanical", i, "group"),
                                      f"redundancy group {unit.group!r} is not declared"))
    components: list[schema.ElectricalComponent | schema.MechanicalComponent] = [
        *cfg.electrical, *cfg.mechanical]
    members: Counter[str] = Counter(c.group for c in components if c.group)
    for i, group in enumerate(cfg.redundancy_groups):
        count = members[group.id]
        needed = 2 if group.design != "N" else 1
        if count < needed:
            issues.append(lines.issue(("redundancy_groups", i, "design"),
                                      f"design {group.design} needs at least {needed} members, "
                                      f"{count} components name group {group.id!r}"))


def _check_cycles(cfg: schema.SiteConfig, lines: LineMap, issues: list[ConfigIssue]) -> None:
    inputs = {c.id: [r for r in c.inputs] for c in cfg.electrical}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in inputs.get(node, []):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt in inputs and state.get(nxt) is None:
                found = visit(nxt, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for index, comp in enumerate(cfg.electrical):
        if state.get(comp.id) is None:
            cycle = visit(comp.id, [])
            if cycle:
                issues.append(lines.issue(("electrical", index, "inputs"),
                                          "the power chain has a loop: " + " <- ".join(cycle)))
                return


def _check_racks(cfg: schema.SiteConfig, racks: list[tuple[Rack, Loc]], lines: LineMap,
                 issues: list[ConfigIssue]) -> None:
    electrical = {c.id: c for c in cfg.electrical}
    by_loc: dict[Loc, list[Rack]] = {}
    for rack, loc in racks:
        by_loc.setdefault(loc, []).append(rack)
    for loc, group in by_loc.items():
        rack = group[0]  # racks generated from one row share its feeds: report once
        name = f"rack {rack.id}" if len(group) == 1 else f"racks {rack.id}..{group[-1].id}"
        if not rack.feeds:
            issues.append(lines.issue(loc, f"{name}: no feed; set feed_a and feed_b"))
            continue
        if not rack.single_corded and (rack.feed_a is None or rack.feed_b is None):
            issues.append(lines.issue(loc, f"{name}: dual-corded but only one feed "
                                           "(set both, or single_corded: true)"))
        if rack.feed_a is not None and rack.feed_a == rack.feed_b:
            issues.append(lines.issue(loc, f"{name}: A and B from the same PDU "
                                           f"{rack.feed_a!r}: not two paths"))
        for side, ref in (("feed_a", rack.feed_a), ("feed_b", rack.feed_b)):
            if ref is None:
                continue
            comp = electrical.get(ref)
            if comp is None:
                issues.append(lines.issue(loc + (side,), f"{side} of {name} names {ref!r}, "
                                                         "which is not an electrical component"))
            elif comp.type not in FEED_TYPES:
                issues.append(lines.issue(loc + (side,), f"{side} of {name} names {ref!r}, "
                                                         f"a {comp.type}; expected a pdu"))


def _check_profiles(cfg: schema.SiteConfig, lines: LineMap, issues: list[ConfigIssue]) -> None:
    for pid, profile in cfg.profiles.items():
        allowed = DEVICE_TYPE_ROLES[profile.device_type]
        names: set[str] = set()
        for i, point in enumerate(profile.points):
            loc: Loc = ("profiles", pid, "points", i)
            if point.name in names:
                issues.append(lines.issue(loc + ("name",), f"duplicate point name {point.name!r}"))
            names.add(point.name)
            if point.role is not None:
                if point.role not in ROLES:
                    close = difflib.get_close_matches(point.role, ROLES, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    issues.append(lines.issue(loc + ("role",), f"unknown role {point.role!r}{hint}"))
                elif point.role not in allowed:
                    issues.append(lines.issue(
                        loc + ("role",), f"role {point.role!r} cannot be carried by a "
                        f"{profile.device_type} (allowed: {', '.join(sorted(allowed))})"))
        if isinstance(profile, schema.ModbusProfile):
            by_name = {p.name: p for p in profile.points}
            for i, point in enumerate(profile.points):
                ref = point.scale_factor_point
                if ref is None:
                    continue
                target = by_name.get(ref)
                if target is None or target.type != "sunssf":
                    issues.append(lines.issue(("profiles", pid, "points", i, "scale_factor_point"),
                                              f"{ref!r} is not a sunssf point of this profile"))


def _build_devices(cfg: schema.SiteConfig, racks: list[tuple[Rack, Loc]], lines: LineMap,
                   issues: list[ConfigIssue]) -> dict[str, SiteDevice]:
    gateways = {g.id: g for g in cfg.gateways}
    targets: dict[str, str] = {c.id: c.type for c in cfg.electrical}
    targets.update({c.id: c.type for c in cfg.mechanical})
    targets.update({rack.id: "rack" for rack, _ in racks})
    targets["site"] = "site"
    entries: list[tuple[schema.Device, Loc]] = [(d, ("devices", i)) for i, d in enumerate(cfg.devices)]
    for raw, loc in rack_monitor_devices(cfg):
        try:
            entries.append((schema.Device.model_validate(raw), loc))
        except ValidationError as exc:
            issues.append(lines.issue(loc, f"rack monitor {raw['id']}: "
                                           f"{exc.errors(include_url=False)[0]['msg']}"))
    devices: dict[str, SiteDevice] = {}
    unit_ids: dict[tuple[str, int], str] = {}
    for dev, loc in entries:
        profile = cfg.profiles.get(dev.profile)
        gateway = gateways.get(dev.gateway)
        if profile is None:
            issues.append(lines.issue(loc + ("profile",), f"profile {dev.profile!r} is not declared "
                                                          f"(have: {', '.join(sorted(cfg.profiles))})"))
        if gateway is None:
            issues.append(lines.issue(loc + ("gateway",), f"gateway {dev.gateway!r} is not declared"))
        if profile is None or gateway is None:
            continue
        wanted = ("modbus_tcp", "modbus_rtu") if profile.protocol == "modbus" else ("opcua",)
        if gateway.protocol not in wanted:
            issues.append(lines.issue(loc + ("gateway",), f"profile {dev.profile!r} speaks "
                                      f"{profile.protocol} but gateway {gateway.id!r} is {gateway.protocol}"))
            continue
        if profile.protocol == "modbus":
            if dev.unit_id is None or not 1 <= dev.unit_id <= 247:
                issues.append(lines.issue(loc + ("unit_id",), f"device {dev.id}: a Modbus device needs "
                                          f"unit_id 1-247, got {dev.unit_id}"))
            else:
                other = unit_ids.setdefault((gateway.id, dev.unit_id), dev.id)
                if other != dev.id:
                    issues.append(lines.issue(loc + ("unit_id",), f"unit id {dev.unit_id} on gateway "
                                              f"{gateway.id} is already used by {other}"))
        kind = targets.get(dev.monitors) if dev.monitors is not None else "site"
        if kind == "site":
            pass  # any device may measure the site as a whole (a monitoring-only site)
        elif kind is None:
            issues.append(lines.issue(loc + ("monitors",), f"device {dev.id} monitors {dev.monitors!r}, "
                                      "which is not a component, a rack or 'site'"))
        elif kind not in MONITORS[profile.device_type]:
            issues.append(lines.issue(loc + ("monitors",), f"a {profile.device_type} device cannot "
                                      f"monitor a {kind} ({dev.monitors}); expected one of: "
                                      f"{', '.join(sorted(MONITORS[profile.device_type]))}"))
        if dev.id in devices:
            issues.append(lines.issue(loc + ("id",), f"duplicate device id {dev.id!r}"))
            continue
        devices[dev.id] = SiteDevice(
            id=dev.id, device_type=profile.device_type, profile_id=dev.profile, profile=profile,
            gateway=gateway, unit_id=dev.unit_id, node_name=dev.node_name or dev.id,
            monitors=dev.monitors if dev.monitors is not None else NOTHING,
            interval_s=dev.interval_s,
        )
    return devices


def _check_alarms(cfg: schema.SiteConfig, racks: list[Any], lines: Any, issues: list[Any]) -> None:
    """Units in maintenance must exist, and the delays must name known alarm sources."""
    units = ({c.id for c in cfg.electrical} | {c.id for c in cfg.mechanical}
             | {g.id for g in cfg.redundancy_groups} | {h.id for h in cfg.halls}
             | {rack.id for rack, _ in racks} | {d.id for d in cfg.devices} | {"site"})
    for i, unit in enumerate(cfg.alarms.maintenance):
        if unit not in units:
            issues.append(lines.issue(("alarms", "maintenance", i), f"unit {unit!r} in maintenance is "
                                      "not a component, group, hall, rack or device of this site"))
    for source in cfg.alarms.delays:
        if source not in ALARM_SOURCES:
            issues.append(lines.issue(("alarms", "delays", source), f"unknown alarm source "
                                      f"{source!r}; expected one of: {', '.join(ALARM_SOURCES)}"))


def _resolve_library_profiles(data: dict[str, Any], lines: LineMap) -> list[ConfigIssue]:
    """Replace each `profiles: {id: {library: NAME, ...}}` entry by the library profile
    (dcim/library, docs/device-library.md) with its overrides; the problems, located."""
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        return []
    issues = []
    for pid, entry in profiles.items():
        if not isinstance(entry, dict) or "library" not in entry:
            continue
        resolved, problems = resolve_library(entry)
        issues += [lines.issue(("profiles", pid, key), message) for key, message in problems]
        if resolved is not None:
            profiles[pid] = resolved
    return issues


def parse_site(text: str, file: str = "<string>") -> Site:
    """Validate a site file's text; raises ConfigError listing every problem."""
    data, lines, issues = read_yaml(text, file)
    if data is None:
        raise ConfigError(issues)
    if not isinstance(data, dict):
        raise ConfigError([lines.issue((), f"expected a mapping at the top, got {type(data).__name__}")])
    library_issues = _resolve_library_profiles(data, lines)
    if library_issues:
        raise ConfigError(issues + library_issues)
    try:
        cfg = schema.SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(issues + _pydantic_issues(exc, lines)) from None
    racks = expand_racks(cfg)
    _check_ids(cfg, racks, lines, issues)
    _check_plant(cfg, lines, issues)
    _check_racks(cfg, racks, lines, issues)
    _check_profiles(cfg, lines, issues)
    devices = _build_devices(cfg, racks, lines, issues)
    _check_alarms(cfg, racks, lines, issues)
    if issues:
        raise ConfigError(issues)
    return Site(config=cfg, source=Path(file) if file != "<string>" else None,
                racks={rack.id: rack for rack, _ in racks}, devices=devices, lines=lines)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file from disk."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, (), f"cannot read: {exc.strerror}")]) from None
    return parse_site(text, str(path))


def site_from_dict(data: dict[str, Any], name: str = "<generated>") -> Site:
    """Validate a site given as data (generated sites, tests)."""
    import yaml

    return parse_site(yaml.safe_dump(data, sort_keys=False), name)
