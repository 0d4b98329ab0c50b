"""The site file's schema, declared once (pydantic, unknown keys forbidden).

Structure: site identity, storage, protocol gateways, device profiles (point maps),
the electrical and mechanical plant as a graph, redundancy groups, IT halls with rows
of racks, and the devices that monitor them. Only the identity (id, name, timezone), a
gateway, a profile and devices are required: the plant, halls and grid factors are optional,
and each analysis that needs them is withheld, with why, on a site that lacks them (a
monitoring-only site: a few meters and a BMS).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dcim.config.alarms import AlarmsConfig
from dcim.config.auth import AuthConfig
from dcim.config.notifications import NotificationsConfig
from dcim.config.storage import EmbeddedStorageConfig, StorageConfig

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, description="identifier: letters, digits, . _ -")]

MODBUS_TABLES = ("coil", "discrete_input", "holding", "input")
# Registers per value of each Modbus data type (strings and bits are sized separately).
MODBUS_TYPE_REGISTERS: dict[str, int] = {
    "int16": 1, "uint16": 1, "sunssf": 1, "int32": 2, "uint32": 2, "acc32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4, "string": 0, "bool": 1,
}
ModbusType = Literal[
    "int16", "uint16", "sunssf", "int32", "uint32", "acc32", "float32", "int64", "uint64",
    "float64", "string", "bool",
]
DESIGN_PATTERN = re.compile(r"^(N|N\+[1-9]|2N|2N\+[1-9])$")

ELECTRICAL_TYPES = (
    "utility_feed", "generator", "transformer", "ats", "switchboard", "ups_module", "ups_system",
    "pdu", "load",
)
MECHANICAL_TYPES = ("chiller", "pump", "cooling_tower", "crah")
DEVICE_TYPES = (
    "meter", "ups_module", "pdu", "generator", "ats", "chiller", "pump", "cooling_tower", "crah",
    "rack_monitor", "water_meter", "weather_station",
)


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- site identity


class Location(Strict):
    city: str = Field("Hong Kong", description="city of the site, shown in reports")
    address: str = Field("", description="street address, shown in reports")
    latitude: float = Field(ge=-90, le=90, description="degrees north (negative: south)")
    longitude: float = Field(ge=-180, le=180, description="degrees east (negative: west)")


class EmissionFactor(Strict):
    year: int = Field(ge=2000, le=2100, description="calendar year the factor applies to")
    kg_co2e_per_kwh: float = Field(gt=0, lt=2, description="grid emission factor")
    source: str = Field("", description="who published the factor (e.g. the supplier's report)")


class Grid(Strict):
    supplier: str = Field("", description="electricity supplier, shown in reports")
    emission_factors: list[EmissionFactor] = Field(
        default_factory=list, description="grid factors per year; CUE is withheld without one")


class PueSettings(Strict):
    """Where IT energy is measured (The Green Grid category) and how much data a figure needs."""

    it_boundary: Literal["ups_output", "pdu_output", "it_input"] = Field(
        "it_input", description="where IT energy is measured: UPS output (category 1), PDU "
        "output (category 2) or the IT equipment's input (category 3)")
    min_coverage: float = Field(0.95, gt=0, le=1, description="fraction of the period with data")


class SiteInfo(Strict):
    id: Id
    name: str = Field(description="the site's name, shown on the dashboard and in reports")
    timezone: str = Field("Asia/Hong_Kong", description="IANA timezone of the site: days, "
                          "shifts and rota handovers are site-local")
    location: Location | None = Field(None, description="where the site is; optional")
    tier_design: Literal["I", "II", "III", "III+", "IV"] = Field(
        "III+", description="the Uptime Institute tier the site is designed to")
    grid: Grid = Field(default_factory=Grid, description="supplier and emission factors (CUE)")
    pue: PueSettings = Field(PueSettings(), description="how PUE is computed (docs/pue.md)")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}, expected e.g. 'Asia/Hong_Kong'") from None
        return value


# ---------------------------------------------------------------- gateways


class ModbusGateway(Strict):
    """A Modbus TCP address (gateway or device) behind which unit ids are polled."""

    id: Id
    protocol: Literal["modbus_tcp"] = Field(description="Modbus TCP (also a serial gateway's "
                                            "TCP side)")
    host: str = Field("127.0.0.1", description="address or name of the gateway or device")
    port: int = Field(502, ge=1, le=65535, description="TCP port (502 is Modbus's own)")
    max_in_flight: int = Field(1, ge=1, le=64, description="requests in flight at once")
    timeout_s: float = Field(1.0, gt=0, le=60, description="seconds to wait for one answer")


class ModbusRtuGateway(Strict):
    """A serial Modbus RTU line (RS-485) on a local port; one request at a time by nature."""

    id: Id
    protocol: Literal["modbus_rtu"] = Field(description="Modbus RTU on a local serial port")
    serial_port: str = Field(description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, ge=300, le=921600, description="line speed, bits per second")
    parity: Literal["N", "E", "O"] = Field("N", description="parity: none, even or odd")
    bytesize: Literal[7, 8] = Field(8, description="data bits per character")
    stopbits: Literal[1, 2] = Field(1, description="stop bits per character")
    timeout_s: float = Field(1.0, gt=0, le=60, description="seconds to wait for one answer")

    @property
    def max_in_flight(self) -> int:
        """A serial line carries one request at a time."""
        return 1


class OpcuaSecurity(Strict):
    policy: Literal["None", "Basic256Sha256"] = Field(
        "None", description="security policy of the channel; None sends everything in clear")
    mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(
        "None", description="message security mode; None exactly when policy is None")
    certificate: str | None = Field(None, description="client certificate (DER/PEM) path")
    private_key: str | None = Field(None, description="private key (DER/PEM) path of certificate")
    trust_dir: str | None = Field(None, description="folder of trusted server certificates")
    username: str | None = Field(None, description="user token name (needs password_env)")
    password_env: str | None = Field(
        None, description="environment variable holding the user token's password")
    allow_insecure_password: bool = Field(
        False, description="accept username/password_env under policy None, where the password "
        "crosses the network in clear (logged as a WARNING at every start)")

    @model_validator(mode="after")
    def _consistent(self) -> OpcuaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be 'None' or both be set")
        if self.policy != "None" and not (self.certificate and self.private_key and self.trust_dir):
            raise ValueError(
                "a secure policy needs certificate, private_key and trust_dir "
                "(the server certificate is checked against trust_dir, never accepted blindly)"
            )
        if self.insecure_password and not self.allow_insecure_password:
            field = "username" if self.username else "password_env"
            raise ValueError(
                f"{field} under security policy None: the password would cross the network "
                "in clear. Use policy Basic256Sha256 with mode SignAndEncrypt (certificate, "
                "private_key, trust_dir), or, knowingly, set allow_insecure_password: true")
        return self

    @property
    def insecure_password(self) -> bool:
        """A user password is configured on a channel without security."""
        return self.policy == "None" and bool(self.username or self.password_env)


class OpcuaGateway(Strict):
    """An OPC UA server (typically the BMS) exposing many devices."""

    id: Id
    protocol: Literal["opcua"] = Field(description="OPC UA client/server (opc.tcp)")
    endpoint: str = Field(pattern=r"^opc\.tcp://[^/\s]+(/.*)?$",
                          description="server endpoint URL, opc.tcp://host:port/path")
    security: OpcuaSecurity = Field(OpcuaSecurity(), description="security policy, mode, "
                                    "certificates and user token (docs/security.md)")
    timeout_s: float = Field(4.0, gt=0, le=60, description="seconds to wait for one answer")
    timestamps: Literal["source", "server", "poll"] = Field(
        "source",
        description="time stored with each value: 'source' the device's SourceTimestamp "
        "(else the ServerTimestamp, else the receive time), 'server' the ServerTimestamp "
        "(else the receive time), 'poll' the aligned sampling boundary (identical across "
        "redundant collectors); with source or server, a value unchanged since the last "
        "boundary is stored at the boundary time moved back by the device's lag in whole "
        "intervals (none when that is not after the last sample), never again at its old time",
    )
    max_clock_skew_s: float = Field(
        10.0, gt=0, le=86_400,
        description="a source or server time further than this from the collector's clock "
        "is replaced by the receive time (logged once per device with the skew)",
    )


Gateway = Annotated[ModbusGateway | ModbusRtuGateway | OpcuaGateway,
                    Field(discriminator="protocol")]


# ---------------------------------------------------------------- profiles (point maps)


class PointBase(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$",
                               description="point name, lower_snake_case with the unit "
                               "(e.g. power_kw)")]
    role: str | None = Field(None, description="what the point means to analytics, see roles.py")
    unit: str | None = Field(None, description="engineering unit of the stored value (kW, degC)")
    feed: Literal["A", "B"] | None = Field(None, description="which power feed a rack point is on")
    position: Literal["bottom", "middle", "top"] | None = Field(None, description="sensor height")
    scale: float = Field(1.0, description="stored value = raw x scale + offset")
    offset: float = Field(0.0, description="added after scale")


class ModbusPoint(PointBase):
    table: Literal["coil", "discrete_input", "holding", "input"] = Field(
        description="Modbus table: coil (FC1), discrete_input (FC2), holding register (FC3), "
        "input register (FC4)")
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    type: ModbusType = Field("uint16", description="data type of the raw value; "
                             "sunssf is a SunSpec scale factor (int16 power of ten)")
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = Field(
        "ABCD", description="byte order of the value: ABCD big-endian, CDAB word-swapped, "
        "BADC byte-swapped words, DCBA little-endian"
    )
    count: int | None = Field(None, ge=1, le=125, description="registers of a string")
    bit: int | None = Field(None, ge=0, le=15, description="one bit of a register")
    scale_factor_point: str | None = Field(None, description="sunssf point: value x 10^sf")
    nan_value: int | None = Field(None, description="raw value the device sends for 'no data'")
    writable: bool = Field(False, description="allow writes to this point (off by default)")

    @model_validator(mode="after")
    def _shape(self) -> ModbusPoint:
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table and self.type != "bool":
            raise ValueError(f"a {self.table} point has type 'bool', not {self.type!r}")
        if self.type == "string" and self.count is None:
            raise ValueError("a string point needs count (registers)")
        if self.type != "string" and self.count is not None:
            raise ValueError("count is only for strings")
        if self.bit is not None and self.type not in ("uint16", "int16"):
            raise ValueError("bit selects one bit of a 16-bit register: type must be uint16 or int16")
        if self.address + self.size_registers > 65536:
            raise ValueError(f"value runs past register 65535 (address {self.address})")
        return self

    @property
    def size_registers(self) -> int:
        """Registers (or bits) the value occupies."""
        if self.table in ("coil", "discrete_input"):
            return 1
        if self.type == "string":
            return self.count or 1
        return MODBUS_TYPE_REGISTERS[self.type]


class OpcuaPoint(PointBase):
    node: str | None = Field(
        None,
        description="node id with namespace URI, e.g. 'nsu=urn:bms;s={device}.SupplyTemp'; "
        "{device} is replaced by the device's node_name",
    )
    browse_path: list[str] | None = Field(
        None, description="qualified names from Objects, each 'namespace-uri|Name'"
    )
    sampling_interval_ms: int | None = Field(
        None, ge=0, le=3_600_000,
        description="server-side sampling of a subscription; default the device's interval_s")
    deadband: float | None = Field(None, ge=0, description="absolute deadband of the subscription")

    @model_validator(mode="after")
    def _address(self) -> OpcuaPoint:
        if (self.node is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node or browse_path")
        if self.node is not None and re.match(r"^ns=\d+;", self.node):
            raise ValueError(
                "use the namespace URI (nsu=...) not a bare index (ns=N), "
                "which can change when the server restarts"
            )
        return self


class ModbusProfile(Strict):
    """The register map of one device model."""

    protocol: Literal["modbus"] = Field(description="points are Modbus registers or bits")
    device_type: Literal[DEVICE_TYPES] = Field(  # type: ignore[valid-type]
        description="what kind of equipment the profile describes")
    vendor_model: str = Field("", description="maker and model, for people")
    max_gap: int = Field(
        0, ge=0, le=124,
        description="unmapped registers a coalesced read may span; 0 unless the device "
        "answers reads over its holes (many answer exception 2)",
    )
    points: list[ModbusPoint] = Field(min_length=1, description="the register map")


class OpcuaProfile(Strict):
    """The node layout of one device class on an OPC UA server."""

    protocol: Literal["opcua"] = Field(description="points are OPC UA variable nodes")
    device_type: Literal[DEVICE_TYPES] = Field(  # type: ignore[valid-type]
        description="what kind of equipment the profile describes")
    vendor_model: str = Field("", description="maker and model, for people")
    mode: Literal["subscribe", "poll"] = Field(
        "subscribe", description="subscribe: the server reports changes (monitored items); "
        "poll: read every interval_s")
    points: list[OpcuaPoint] = Field(min_length=1, description="the node map")


Profile = Annotated[ModbusProfile | OpcuaProfile, Field(discriminator="protocol")]


# ---------------------------------------------------------------- plant


class ElectricalComponent(Strict):
    """One element of the power chain; inputs name the components that feed it."""

    id: Id
    type: Literal[ELECTRICAL_TYPES] = Field(  # type: ignore[valid-type]
        description="kind of element in the power chain")
    name: str = Field("", description="name for people")
    capacity_kw: float = Field(gt=0, description="rated capacity, kW")
    inputs: list[Id] = Field(default_factory=list,
                             description="ids of the components that feed this one")
    group: Id | None = Field(None, description="redundancy group")
    efficiency: float | None = Field(None, gt=0, le=1, description="nominal (UPS, transformer)")
    load_kw: float | None = Field(None, ge=0, description="design load of a 'load' component")


class MechanicalComponent(Strict):
    """A unit of the cooling plant; powered_from lists alternative supplies (auto transfer)."""

    id: Id
    type: Literal[MECHANICAL_TYPES] = Field(  # type: ignore[valid-type]
        description="kind of cooling unit")
    name: str = Field("", description="name for people")
    capacity_kw: float = Field(gt=0, description="cooling capacity (pumps: of the loop they serve)")
    rated_power_kw: float = Field(gt=0, description="electrical input at full duty")
    serves: list[Id] = Field(min_length=1, description="halls this unit cools")
    powered_from: list[Id] = Field(min_length=1, description="electrical components that can "
                                   "supply it (alternatives, by auto transfer)")
    group: Id | None = Field(None, description="redundancy group")


class RedundancyGroup(Strict):
    id: Id
    kind: Literal["utility", "generator", "ups_module", "ups_system", "chiller", "pump",
                  "cooling_tower", "crah"] = Field(description="what the group's members are")
    design: str = Field(description="N, N+k, 2N or 2N+k")
    description: str = Field("", description="free text for people")

    @field_validator("design")
    @classmethod
    def _design(cls, value: str) -> str:
        if not DESIGN_PATTERN.match(value):
            raise ValueError(f"expected N, N+k, 2N or 2N+k (k 1-9), got {value!r}")
        return value


# ---------------------------------------------------------------- IT space


class RackSpec(Strict):
    """A rack given one by one (overrides the row's defaults)."""

    id: Id
    design_kw: float | None = Field(None, gt=0, le=200,
                                    description="design IT load, kW; default the row's")
    feed_a: Id | None = Field(None, description="electrical component of feed A; default the row's")
    feed_b: Id | None = Field(None, description="electrical component of feed B; default the row's")
    single_corded: bool = Field(False, description="the rack has one feed only")


class RackMonitorSpec(Strict):
    """One monitoring device per rack, on consecutive unit ids of one gateway."""

    profile: Id
    gateway: Id
    first_unit_id: int = Field(ge=1, le=247, description="Modbus unit id of the first rack's "
                               "monitor; the next racks take the next ids")


class Row(Strict):
    id: Id
    x_m: float = Field(0.0, description="floor position of the row's first rack")
    y_m: float = Field(0.0, description="floor position of the row's first rack")
    direction: Literal["x", "y"] = Field("x", description="floor axis the row runs along")
    rack_pitch_m: float = Field(0.6, gt=0, le=5, description="distance between rack centres")
    rack_count: int | None = Field(None, ge=1, le=100, description="racks named {row}{nn}")
    racks: list[RackSpec] | None = Field(None, description="racks given one by one")
    design_kw: float = Field(gt=0, le=200, description="design IT load per rack")
    feed_a: Id | None = Field(None, description="electrical component feeding the racks' A side")
    feed_b: Id | None = Field(None, description="electrical component feeding the racks' B side")
    monitor: RackMonitorSpec | None = Field(None, description="one monitor device per rack")

    @model_validator(mode="after")
    def _one_way(self) -> Row:
        if (self.rack_count is None) == (self.racks is None):
            raise ValueError("give exactly one of rack_count or racks")
        return self


class Hall(Strict):
    id: Id
    name: str = Field("", description="name for people")
    area_m2: float | None = Field(None, gt=0, description="white-space floor area")
    rows: list[Row] = Field(min_length=1, description="rows of racks")


# ---------------------------------------------------------------- devices


class Device(Strict):
    id: Id = Field(description="the device's id, used in point keys and alarms")
    profile: Id = Field(description="key of its profile in profiles")
    gateway: Id = Field(description="id of the gateway it is reached through")
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus unit id")
    node_name: str | None = Field(None, description="replaces {device} in OPC UA node ids")
    monitors: Id | None = Field(
        "site", description="the component or rack this device measures; 'site' (the default) "
        "for the site as a whole, null for nothing in particular")
    interval_s: float = Field(5.0, gt=0, le=3600, description="seconds between polls")


class SiteConfig(Strict):
    """A whole site file."""

    schema_version: Literal[1] = Field(1, description="version of this schema")
    site: SiteInfo = Field(description="identity, location, grid and PUE settings")
    storage: StorageConfig = Field(EmbeddedStorageConfig(), description="where samples are "
                                   "stored, per backend (docs/storage.md)")
    gateways: list[Gateway] = Field(min_length=1, description="protocol gateways and servers "
                                    "devices are reached through, per protocol")
    profiles: dict[Id, Profile] = Field(min_length=1, description="point maps of device "
                                        "models, by name, per protocol")
    electrical: list[ElectricalComponent] = Field(default_factory=list,
                                                  description="the power chain as a graph")
    mechanical: list[MechanicalComponent] = Field(default_factory=list,
                                                  description="the cooling plant")
    redundancy_groups: list[RedundancyGroup] = Field(
        default_factory=list, description="groups of plant whose redundancy is checked")
    halls: list[Hall] = Field(default_factory=list, description="IT halls with rows of racks")
    devices: list[Device] = Field(default_factory=list, description="the devices polled")
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig,
                                 description="alarm delays, shelving, maintenance, priorities")
    notifications: NotificationsConfig | None = Field(
        None, description="who is told of alarms, how, and when to escalate (docs/notifications.md)")
    auth: AuthConfig | None = Field(
        None, description="sign-in, roles and API tokens for the dashboard and the HTTP API "
        "(docs/security.md); without it the dashboard serves loopback only")
