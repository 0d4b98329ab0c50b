"""The expanded site: every rack and device resolved, indexed for the rest of dcim."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from dcim.config.site import (
    ElectricalComponent, Hall, MechanicalComponent, ModbusGateway, ModbusProfile,
    ModbusRtuGateway, OpcuaGateway,
    OpcuaProfile, RedundancyGroup, SiteConfig,
)
from dcim.site.yamlsrc import LineMap
from dcim.storage.base import SeriesKey


NOTHING = ""  # SiteDevice.monitors of a device that measures no unit in particular


@dataclass(frozen=True, slots=True)
class Rack:
    """One rack on the floor plan with its A and B feeds."""

    id: str
    hall: str
    row: str
    index: int
    x_m: float
    y_m: float
    design_kw: float
    feed_a: str | None
    feed_b: str | None
    single_corded: bool = False

    @property
    def feeds(self) -> tuple[str, ...]:
        """The PDUs this rack draws from."""
        return tuple(f for f in (self.feed_a, self.feed_b) if f)


@dataclass(frozen=True, slots=True)
class SiteDevice:
    """A device to poll: its profile resolved and its gateway attached."""

    id: str
    device_type: str
    profile_id: str
    profile: ModbusProfile | OpcuaProfile
    gateway: ModbusGateway | ModbusRtuGateway | OpcuaGateway
    unit_id: int | None
    node_name: str
    monitors: str  # a component or rack id, 'site', or NOTHING (no unit in particular)
    interval_s: float

    @property
    def protocol(self) -> str:
        """'modbus' or 'opcua'."""
        return self.profile.protocol

    def series(self, point: str) -> SeriesKey:
        """The storage series of one of this device's points."""
        return SeriesKey(self.device_type, self.id, point)


@dataclass
class Site:
    """The validated, expanded site model that collectors, analytics and dashboards read."""

    config: SiteConfig
    source: Path | None
    racks: dict[str, Rack] = field(default_factory=dict)
    devices: dict[str, SiteDevice] = field(default_factory=dict)
    lines: LineMap | None = field(default=None, repr=False, compare=False)  # where fields are

    def __post_init__(self) -> None:
        self.electrical: dict[str, ElectricalComponent] = {c.id: c for c in self.config.electrical}
        self.mechanical: dict[str, MechanicalComponent] = {c.id: c for c in self.config.mechanical}
        self.groups: dict[str, RedundancyGroup] = {g.id: g for g in self.config.redundancy_groups}
        self.halls: dict[str, Hall] = {h.id: h for h in self.config.halls}

    @property
    def id(self) -> str:
        """The site id, also the `site` tag in storage."""
        return self.config.site.id

    def group_members(self, group_id: str) -> list[ElectricalComponent | MechanicalComponent]:
        """Components that declare membership of a redundancy group."""
        members: list[ElectricalComponent | MechanicalComponent] = [
            c for c in self.config.electrical if c.group == group_id
        ]
        members += [c for c in self.config.mechanical if c.group == group_id]
        return members

    def point_units(self) -> dict[str, dict[str, str]]:
        """device id -> point name -> engineering unit ('' without one), every device."""
        return {d.id: {p.name: p.unit or "" for p in d.profile.points}
                for d in self.devices.values()}

    def devices_of_type(self, device_type: str) -> list[SiteDevice]:
        """All devices of one type, in config order."""
        return [d for d in self.devices.values() if d.device_type == device_type]

    def racks_in_hall(self, hall_id: str) -> list[Rack]:
        """Racks of one hall in floor order."""
        return [r for r in self.racks.values() if r.hall == hall_id]

    def with_endpoints(self, endpoints: dict[str, tuple[str, int]]) -> Site:
        """A copy whose gateways point at other hosts/ports (servers bound to free ports)."""
        gateways = []
        for gw in self.config.gateways:
            if gw.id not in endpoints:
                gateways.append(gw)
                continue
            host, port = endpoints[gw.id]
            if isinstance(gw, ModbusGateway):
                gateways.append(gw.model_copy(update={"host": host, "port": port}))
            elif isinstance(gw, ModbusRtuGateway):
                gateways.append(gw)  # a serial line has no network endpoint
            else:
                path = gw.endpoint.split("/", 3)[3] if gw.endpoint.count("/") >= 3 else ""
                gateways.append(gw.model_copy(
                    update={"endpoint": f"opc.tcp://{host}:{port}/{path}"}))
        config = self.config.model_copy(update={"gateways": gateways})
        by_id = {g.id: g for g in gateways}
        devices = {k: replace(d, gateway=by_id[d.gateway.id]) for k, d in self.devices.items()}
        return Site(config=config, source=self.source, racks=dict(self.racks), devices=devices,
                    lines=self.lines)

    def point_count(self) -> int:
        """Number of points polled across all devices (= series written)."""
        return sum(len(d.profile.points) for d in self.devices.values())


def expand_racks(config: SiteConfig) -> list[tuple[Rack, tuple[str | int, ...]]]:
    """Racks of every row, each with the config path that declared it."""
    out: list[tuple[Rack, tuple[str | int, ...]]] = []
    for h_index, hall in enumerate(config.halls):
        for r_index, row in enumerate(hall.rows):
            loc: tuple[str | int, ...] = ("halls", h_index, "rows", r_index)
            if row.racks is not None:
                specs = [(spec, loc + ("racks", i)) for i, spec in enumerate(row.racks)]
            else:
                specs = []
            count = row.rack_count if row.rack_count is not None else len(specs)
            for i in range(count):
                dx = i * row.rack_pitch_m
                x, y = (row.x_m + dx, row.y_m) if row.direction == "x" else (row.x_m, row.y_m + dx)
                if specs:
                    spec, rack_loc = specs[i]
                    rack = Rack(
                        id=spec.id, hall=hall.id, row=row.id, index=i, x_m=x, y_m=y,
                        design_kw=spec.design_kw or row.design_kw,
                        feed_a=spec.feed_a or (None if spec.single_corded and spec.feed_b else row.feed_a),
                        feed_b=None if spec.single_corded else (spec.feed_b or row.feed_b),
                        single_corded=spec.single_corded,
                    )
                else:
                    rack_loc = loc
                    rack = Rack(
                        id=f"{row.id}{i + 1:02d}", hall=hall.id, row=row.id, index=i, x_m=x, y_m=y,
                        design_kw=row.design_kw, feed_a=row.feed_a, feed_b=row.feed_b,
                    )
                out.append((rack, rack_loc))
    return out


def rack_monitor_devices(config: SiteConfig) -> list[tuple[dict[str, object], tuple[str | int, ...]]]:
    """The per-rack monitoring devices that rows declare, as device dicts with their config path."""
    out: list[tuple[dict[str, object], tuple[str | int, ...]]] = []
    racks = expand_racks(config)
    by_row: dict[str, list[Rack]] = {}
    for rack, _ in racks:
        by_row.setdefault(rack.row, []).append(rack)
    for h_index, hall in enumerate(config.halls):
        for r_index, row in enumerate(hall.rows):
            if row.monitor is None:
                continue
            loc: tuple[str | int, ...] = ("halls", h_index, "rows", r_index, "monitor")
            for i, rack in enumerate(by_row.get(row.id, [])):
                out.append(({
                    "id": f"RM-{rack.id}", "profile": row.monitor.profile,
                    "gateway": row.monitor.gateway, "unit_id": row.monitor.first_unit_id + i,
                    "monitors": rack.id,
                }, loc))
    return out
