"""The BMS address space as data: folders, device objects, variables, units and status codes.

Pure: built from the site's OPC UA devices, no server involved. The layout is

    Objects/BMS/<System folder>/<device node_name>/<Leaf>

with every BrowseName in the BMS namespace (parsed from the profiles' `nsu=` node ids) and
each variable's NodeId the profile's string id after `{device}` substitution, e.g.
`ns=<idx>;s=CH-1.ElectricalPower`. Every variable is a Double (status 0-3 and running 0/1
too), which is what the collector decodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asyncua import ua
from dcim.simulators.snapshot import DeviceHealth

from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaPoint

ROOT_FOLDER = "BMS"
# System folder under Objects/BMS per device type.
FOLDERS: dict[str, str] = {
    "chiller": "Chillers", "pump": "Pumps", "cooling_tower": "CoolingTowers", "crah": "CRAH",
    "weather_station": "Weather", "water_meter": "Water",
}
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
NODE_PATTERN = re.compile(r"^nsu=(?P<uri>[^;]+);s=(?P<id>.+)$")
UNIT_STATUS_TRIPPED = 3.0  # roles.py: 0 off, 1 running/ok, 2 alarm, 3 tripped/fault


@dataclass(frozen=True, slots=True)
class Unit:
    """A UNECE Rec. 20 unit as OPC UA EUInformation carries it."""

    code: str
    symbol: str
    description: str

    @property
    def unit_id(self) -> int:
        """UnitId per OPC UA Part 8: the code's ASCII bytes packed big-endian."""
        value = 0
        for char in self.code:
            value = (value << 8) | ord(char)
        return value

    def eu_information(self) -> ua.EUInformation:
        """The EngineeringUnits property value."""
        return ua.EUInformation(
            NamespaceUri=UNECE_NAMESPACE, UnitId=self.unit_id,
            DisplayName=ua.LocalizedText(self.symbol, "en"),
            Description=ua.LocalizedText(self.description, "en"),
        )


UNITS: dict[str, Unit] = {
    "kW": Unit("KWT", "kW", "kilowatt"),
    "kWh": Unit("KWH", "kWh", "kilowatt hour"),
    "degC": Unit("CEL", "°C", "degree Celsius"),
    "m3/h": Unit("MQH", "m³/h", "cubic metre per hour"),
    "%": Unit("P1", "%", "percent"),
    "m3": Unit("MTQ", "m³", "cubic metre"),
    "kVA": Unit("KVA", "kVA", "kilovolt ampere"),
    "A": Unit("AMP", "A", "ampere"),
    "V": Unit("VLT", "V", "volt"),
    "Hz": Unit("HTZ", "Hz", "hertz"),
    "s": Unit("SEC", "s", "second"),
    "L": Unit("LTR", "l", "litre"),
}
# EURange where the physics bounds the value; open-ended quantities (kW, kWh, m3) get none.
UNIT_RANGES: dict[str, tuple[float, float]] = {"%": (0.0, 100.0), "degC": (-40.0, 150.0)}
ROLE_RANGES: dict[str, tuple[float, float]] = {"unit_status": (0.0, 3.0), "running": (0.0, 1.0)}


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One point of one device as an OPC UA variable."""

    point: str
    leaf: str
    node_id: str
    unit: str | None
    role: str | None
    eu_range: tuple[float, float] | None

    @property
    def type_definition(self) -> int:
        """AnalogItemType with a range, BaseAnalogType with a unit only, else BaseDataVariable."""
        if self.eu_range is not None and self.unit is not None:
            return ua.ObjectIds.AnalogItemType
        if self.unit is not None:
            return ua.ObjectIds.BaseAnalogType
        return ua.ObjectIds.BaseDataVariableType


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device object with its variables."""

    device_id: str
    device_type: str
    profile_id: str
    node_name: str
    folder: str
    variables: tuple[VariableSpec, ...]

    @property
    def status_point(self) -> str | None:
        """The point with role unit_status (shows alarm/trip when the device reports FAULT)."""
        return next((v.point for v in self.variables if v.role == "unit_status"), None)


@dataclass(frozen=True, slots=True)
class SpacePlan:
    """The whole BMS address space."""

    namespace_uri: str
    devices: tuple[DeviceSpec, ...]

    @property
    def folders(self) -> list[str]:
        """System folders in first-use order."""
        return list(dict.fromkeys(d.folder for d in self.devices))

    def variable_count(self) -> int:
        """Variables across all devices."""
        return sum(len(d.variables) for d in self.devices)

    def browse_path(self, device: DeviceSpec, variable: VariableSpec) -> list[str]:
        """The variable's browse path from Objects, as 'uri|Name' elements."""
        names = [ROOT_FOLDER, device.folder, device.node_name, variable.leaf]
        return [f"{self.namespace_uri}|{name}" for name in names]


def folder_for(device_type: str) -> str:
    """The System folder of a device type (unknown types get their CamelCase name)."""
    return FOLDERS.get(device_type) or "".join(p.title() for p in device_type.split("_"))


def _leaf_from_template(template: str, point: str) -> str:
    leaf = template.replace("{device}", "").strip("./_:-")
    return leaf or point


def _variable(device: SiteDevice, point: OpcuaPoint) -> tuple[str, VariableSpec]:
    """The namespace URI and variable spec of one point (node id or browse path)."""
    where = f"device {device.id} point {point.name}"
    if point.node is not None:
        match = NODE_PATTERN.match(point.node)
        if match is None:
            raise ValueError(f"{where}: node {point.node!r} is not 'nsu=<uri>;s=<string id>'")
        uri, template = match["uri"], match["id"]
        node_id, leaf = template.replace("{device}", device.node_name), _leaf_from_template(
            template, point.name)
    else:
        elements = [e.replace("{device}", device.node_name) for e in point.browse_path or []]
        pairs = [e.split("|", 1) for e in elements]
        if any(len(p) != 2 for p in pairs) or len({p[0] for p in pairs}) != 1:
            raise ValueError(f"{where}: browse_path elements must all be '<one uri>|Name'")
        names = [p[1] for p in pairs]
        expected = [ROOT_FOLDER, folder_for(device.device_type), device.node_name]
        if len(names) != 4 or names[:3] != expected:
            raise ValueError(
                f"{where}: browse_path {names} does not match "
                f"Objects/{'/'.join(expected)}/<Leaf> of the BMS simulator")
        uri, leaf = pairs[0][0], names[3]
        node_id = f"{device.node_name}.{leaf}"
    eu_range = ROLE_RANGES.get(point.role or "") or UNIT_RANGES.get(point.unit or "")
    if point.unit is not None and point.unit not in UNITS:
        raise ValueError(f"{where}: unit {point.unit!r} has no UNECE code here ({sorted(UNITS)})")
    return uri, VariableSpec(point.name, leaf, node_id, point.unit, point.role, eu_range)


def plan_address_space(devices: list[SiteDevice]) -> SpacePlan:
    """The address space of the given OPC UA devices (one namespace, unique node ids)."""
    uris: set[str] = set()
    specs: list[DeviceSpec] = []
    seen: dict[str, str] = {}
    for device in devices:
        if device.profile.protocol != "opcua":
            raise ValueError(f"device {device.id} uses a {device.profile.protocol} profile")
        variables = []
        for point in device.profile.points:
            assert isinstance(point, OpcuaPoint)
            uri, spec = _variable(device, point)
            uris.add(uri)
            if spec.node_id in seen:
                raise ValueError(
                    f"node id s={spec.node_id} of device {device.id} is also used by "
                    f"{seen[spec.node_id]}: give the devices distinct node_name")
            seen[spec.node_id] = device.id
            variables.append(spec)
        specs.append(DeviceSpec(device.id, device.device_type, device.profile_id,
                                device.node_name, folder_for(device.device_type),
                                tuple(variables)))
    if len(uris) != 1:
        raise ValueError(f"expected the devices' points in one namespace URI, got {sorted(uris)}")
    return SpacePlan(uris.pop(), tuple(specs))


def status_code(health: DeviceHealth, *, point_level: bool) -> int:
    """OPC UA StatusCode for a health: a point's own fault names the sensor, a device's the link."""
    if health in (DeviceHealth.OK, DeviceHealth.FAULT):
        return ua.StatusCodes.Good
    if health is DeviceHealth.UNCERTAIN:
        return ua.StatusCodes.UncertainSensorNotAccurate if point_level \
            else ua.StatusCodes.UncertainLastUsableValue
    return ua.StatusCodes.BadSensorFailure if point_level else ua.StatusCodes.BadNoCommunication
