"""What the plant model hands to the protocol servers each tick.

The plant computes engineering values (in each point's own unit, e.g. kW, kWh, degC) for
every point of every device, keyed by the point names of the device's profile in the site
file. The servers encode them on the wire (registers, OPC UA variables); faults change them
on the way (sensor faults) or change how the servers answer (communication faults).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DeviceHealth(enum.Enum):
    """How a device's values should appear on the wire."""

    OK = "ok"  # values valid
    FAULT = "fault"  # device reports its own fault: values valid but status/alarm bits set
    UNCERTAIN = "uncertain"  # e.g. a sensor stuck or out of range (OPC UA: Uncertain status)
    NO_DATA = "no_data"  # values not available (OPC UA: Bad status; Modbus: not-implemented marker)


@dataclass(slots=True)
class DeviceReading:
    """Engineering values of one device at one instant, by point name."""

    values: dict[str, float]
    health: DeviceHealth = DeviceHealth.OK
    # per-point health overrides (sensor dropout of one point, stuck value marked uncertain)
    point_health: dict[str, DeviceHealth] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    """The whole plant at one instant: time (s since the Unix epoch, UTC) and every device."""

    time_s: float
    devices: dict[str, DeviceReading]
