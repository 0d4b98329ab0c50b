"""Faults: a catalogue, scenario files (timelines in YAML), and the ground truth of each one.

Equipment faults change the physics (the plant model), sensor faults change one point's
value on its way to the wire, communication faults change how a server answers. Every
activation and clearance is recorded with its time, so alert tests can score detection.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dcim.durations import parse_duration
from dcim.site import Site
from dcim.site.errors import ConfigError
from dcim.site.yamlsrc import read_yaml
from dcim.simulators.snapshot import DeviceHealth, Snapshot

EQUIPMENT_FAULTS: dict[str, tuple[str, ...]] = {
    # kind: component types it may target
    "ups_module_trip": ("ups_module",),
    "ups_bypass": ("ups_system", "ups_module"),
    "ups_battery": ("ups_system", "ups_module"),
    "crah_trip": ("crah",),
    "chiller_trip": ("chiller",),
    "pump_failure": ("pump",),
    "utility_loss": ("utility_feed", "all"),
    "pdu_breaker_open": ("pdu",),
}
SENSOR_FAULTS = ("stuck", "drift", "spike", "dropout", "noise_burst")
COMM_FAULTS = ("timeout", "disconnect", "exception", "garbage", "delay", "opcua_restart")
FaultKind = Literal[
    "ups_module_trip", "ups_bypass", "ups_battery", "crah_trip", "chiller_trip", "pump_failure",
    "utility_loss", "pdu_breaker_open", "stuck", "drift", "spike", "dropout", "noise_burst",
    "timeout", "disconnect", "exception", "garbage", "delay", "opcua_restart",
]

def category_of(kind: str) -> str:
    """'equipment', 'sensor' or 'comms'."""
    if kind in EQUIPMENT_FAULTS:
        return "equipment"
    return "sensor" if kind in SENSOR_FAULTS else "comms"


class FaultSpec(BaseModel):
    """One fault as written in a scenario file or posted to the control API."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    target: str = Field(description="component id (equipment), device id (sensor, comms), "
                                    "gateway id (comms on a whole gateway)")
    point: str | None = Field(None, description="point name, for sensor faults")
    at: str | float = Field(0, description="offset from the scenario start, e.g. 10m")
    duration: str | float | None = Field(None, description="how long; none = until cleared")
    params: dict[str, float] = Field(default_factory=dict)


class Scenario(BaseModel):
    """A timeline of faults."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    seed: int = 0
    faults: list[FaultSpec] = Field(default_factory=list)


@dataclass
class Fault:
    """A fault scheduled or active in a running simulation."""

    id: int
    kind: str
    target: str
    point: str | None
    start_s: float
    end_s: float | None
    params: dict[str, float]
    category: str = ""
    active: bool = False
    baseline: float | None = None  # stuck value, for sensor faults

    def __post_init__(self) -> None:
        self.category = category_of(self.kind)


@dataclass(frozen=True)
class TruthRecord:
    """Ground truth of one fault: what, which device or component, from when to when."""

    fault_id: int
    kind: str
    category: str
    target: str
    point: str | None
    start_s: float
    end_s: float | None
    params: dict[str, float] = field(default_factory=dict)


def check_fault(site: Site, spec: FaultSpec) -> str | None:
    """Why spec does not fit site, or None when it does."""
    kind, target = spec.kind, spec.target
    if kind in EQUIPMENT_FAULTS:
        allowed = EQUIPMENT_FAULTS[kind]
        if target == "all" and "all" in allowed:
            return None
        comp = site.electrical.get(target) or site.mechanical.get(target)
        if comp is None:
            return f"{kind}: {target!r} is not a component of the site"
        if comp.type not in allowed:
            return f"{kind}: {target!r} is a {comp.type}; expected {' or '.join(allowed)}"
        return None
    if kind in SENSOR_FAULTS:
        device = site.devices.get(target)
        if device is None:
            return f"{kind}: {target!r} is not a device of the site"
        names = [p.name for p in device.profile.points]
        if spec.point not in names:
            return f"{kind}: point {spec.point!r} is not on {target} (have: {', '.join(names)})"
        return None
    gateways = {g.id for g in site.config.gateways}
    if kind == "opcua_restart":
        ok = target in gateways and any(
            g.id == target and g.protocol == "opcua" for g in site.config.gateways)
        return None if ok else f"{kind}: {target!r} is not an OPC UA gateway"
    if target in gateways or target in site.devices:
        device = site.devices.get(target)
        if device is not None and device.protocol != "modbus":
            return f"{kind}: {target!r} is an OPC UA device; use opcua_restart on its gateway"
        return None
    return f"{kind}: {target!r} is neither a device nor a gateway"


def load_scenario(path: str | Path, site: Site) -> Scenario:
    """Read and check a scenario file; ConfigError names file, line and field."""
    path = Path(path)
    data, lines, issues = read_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        raise ConfigError(issues)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(issues + [lines.issue(tuple(e["loc"]), e["msg"]) for e in exc.errors()]) \
            from None
    for i, spec in enumerate(scenario.faults):
        problem = check_fault(site, spec)
        if problem:
            issues.append(lines.issue(("faults", i, "target"), problem))
        for name in ("at", "duration"):
            value = getattr(spec, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    issues.append(lines.issue(("faults", i, name), str(exc)))
    if issues:
        raise ConfigError(issues)
    return scenario


class SensorFaults:
    """Applies the active sensor faults to a snapshot, point by point (pure, seeded)."""

    def __init__(self, seed: int = 0):
        self._rng = np.random.default_rng(seed)

    def apply(self, snapshot: Snapshot, faults: list[Fault]) -> None:
        """Change the values of faulted points in place."""
        for fault in faults:
            if not fault.active or fault.category != "sensor" or fault.point is None:
                continue
            reading = snapshot.devices.get(fault.target)
            if reading is None or fault.point not in reading.values:
                continue
            value = reading.values[fault.point]
            elapsed_h = max(0.0, snapshot.time_s - fault.start_s) / 3600.0
            if fault.kind == "stuck":
                if fault.baseline is None:
                    fault.baseline = value
                reading.values[fault.point] = fault.baseline
            elif fault.kind == "drift":
                reading.values[fault.point] = value + fault.params.get("rate_per_h", 2.0) * elapsed_h
            elif fault.kind == "spike":
                reading.values[fault.point] = value + fault.params.get("magnitude", 15.0)
            elif fault.kind == "dropout":
                reading.point_health[fault.point] = DeviceHealth.NO_DATA
            elif fault.kind == "noise_burst":
                sigma = fault.params.get("sigma", 3.0)
                reading.values[fault.point] = value + float(self._rng.normal(0.0, sigma))
            if not math.isfinite(reading.values[fault.point]):
                reading.values[fault.point] = value


class TruthLog:
    """Ground truth of every fault, in memory and appended to a JSON-lines file if given."""

    def __init__(self, path: str | Path | None = None):
        self.records: dict[int, TruthRecord] = {}
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, fault: Fault, end_s: float | None = None) -> TruthRecord:
        """Record (or close) the truth of one fault."""
        rec = TruthRecord(fault.id, fault.kind, fault.category, fault.target, fault.point,
                          fault.start_s, end_s, dict(fault.params))
        self.records[fault.id] = rec
        if self.path:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"event": "end" if end_s is not None else "start",
                                      **asdict(rec)}) + "\n")
        return rec

    def as_list(self) -> list[dict[str, Any]]:
        """All records, oldest first."""
        return [asdict(r) for r in sorted(self.records.values(), key=lambda r: r.start_s)]
