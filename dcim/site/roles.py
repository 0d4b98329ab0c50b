"""The roles a point can play, per device type: what analytics and dashboards look for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Role:
    """A role: its engineering unit and whether it is a counter (only grows)."""

    unit: str
    counter: bool = False
    description: str = ""


ROLES: dict[str, Role] = {
    # electrical
    "power_kw": Role("kW", description="active power"),
    "input_power_kw": Role("kW", description="active power in"),
    "output_power_kw": Role("kW", description="active power out"),
    "apparent_power_kva": Role("kVA"),
    "reactive_power_kvar": Role("kvar"),
    "power_factor": Role("1"),
    "energy_kwh": Role("kWh", counter=True, description="active energy delivered"),
    "input_energy_kwh": Role("kWh", counter=True),
    "output_energy_kwh": Role("kWh", counter=True),
    "voltage_v": Role("V"),
    "current_a": Role("A"),
    "frequency_hz": Role("Hz"),
    "load_pct": Role("%"),
    "breaker_open": Role("bool"),
    "source": Role("enum", description="selected source of a transfer switch"),
    # UPS
    "ups_mode": Role("enum", description="1 online, 2 bypass, 3 battery, 0 off"),
    "battery_charge_pct": Role("%"),
    "battery_runtime_s": Role("s"),
    "battery_voltage_v": Role("V"),
    "battery_temp_c": Role("degC"),
    "on_battery": Role("bool"),
    "on_bypass": Role("bool"),
    # generators
    "running": Role("bool"),
    "fuel_level_pct": Role("%"),
    "fuel_used_l": Role("L", counter=True),
    "coolant_temp_c": Role("degC"),
    # common
    "unit_status": Role("enum", description="0 off, 1 running/ok, 2 alarm, 3 tripped/fault"),
    "fault": Role("bool"),
    # mechanical
    "cooling_kw": Role("kW", description="cooling delivered"),
    "chw_supply_temp_c": Role("degC"),
    "chw_return_temp_c": Role("degC"),
    "cw_supply_temp_c": Role("degC"),
    "cw_return_temp_c": Role("degC"),
    "flow_m3h": Role("m3/h"),
    "differential_pressure_kpa": Role("kPa"),
    "speed_pct": Role("%"),
    "fan_power_kw": Role("kW"),
    "supply_temp_c": Role("degC"),
    "return_temp_c": Role("degC"),
    "valve_pct": Role("%"),
    "airflow_m3h": Role("m3/h"),
    "water_m3": Role("m3", counter=True),
    # IT space
    "it_power_kw": Role("kW", description="IT power at the rack input (PUE3 boundary)"),
    "it_energy_kwh": Role("kWh", counter=True, description="IT energy at the rack input"),
    "inlet_temp_c": Role("degC", description="rack inlet air temperature"),
    "inlet_rh_pct": Role("%", description="rack inlet relative humidity"),
    "outdoor_temp_c": Role("degC"),
    "outdoor_rh_pct": Role("%"),
    "wet_bulb_temp_c": Role("degC"),
}

_ELECTRICAL_METER = {
    "power_kw", "apparent_power_kva", "reactive_power_kvar", "power_factor", "energy_kwh",
    "voltage_v", "current_a", "frequency_hz",
}
_MECH_COMMON = {"power_kw", "energy_kwh", "unit_status", "running", "fault"}

# Which roles a device of each type may carry. A role outside its type's set is a config error.
DEVICE_TYPE_ROLES: dict[str, frozenset[str]] = {
    "meter": frozenset(_ELECTRICAL_METER),
    "ups_module": frozenset({
        "input_power_kw", "output_power_kw", "input_energy_kwh", "output_energy_kwh", "load_pct",
        "battery_charge_pct", "battery_runtime_s", "battery_voltage_v", "battery_temp_c",
        "voltage_v", "current_a", "frequency_hz", "ups_mode", "unit_status", "on_battery",
        "on_bypass", "fault",
    }),
    "pdu": frozenset({
        "input_power_kw", "output_power_kw", "input_energy_kwh", "output_energy_kwh",
        "power_kw", "energy_kwh", "voltage_v", "current_a", "frequency_hz", "power_factor",
        "load_pct", "breaker_open", "unit_status", "fault",
    }),
    "generator": frozenset({
        "power_kw", "energy_kwh", "voltage_v", "current_a", "frequency_hz", "running",
        "fuel_level_pct", "fuel_used_l", "coolant_temp_c", "unit_status", "fault",
    }),
    "ats": frozenset({"source", "unit_status", "fault"}),
    "chiller": frozenset(_MECH_COMMON | {
        "cooling_kw", "chw_supply_temp_c", "chw_return_temp_c", "cw_supply_temp_c",
        "cw_return_temp_c", "load_pct",
    }),
    "pump": frozenset(_MECH_COMMON | {"flow_m3h", "speed_pct", "differential_pressure_kpa"}),
    "cooling_tower": frozenset(_MECH_COMMON | {
        "fan_power_kw", "speed_pct", "cw_supply_temp_c", "cw_return_temp_c", "water_m3",
    }),
    "crah": frozenset(_MECH_COMMON | {
        "fan_power_kw", "supply_temp_c", "return_temp_c", "airflow_m3h", "speed_pct",
        "valve_pct", "cooling_kw",
    }),
    "rack_monitor": frozenset({"it_power_kw", "it_energy_kwh", "inlet_temp_c", "inlet_rh_pct"}),
    "water_meter": frozenset({"water_m3", "flow_m3h"}),
    "weather_station": frozenset({"outdoor_temp_c", "outdoor_rh_pct", "wet_bulb_temp_c"}),
}

# Which component types a device type may monitor (devices point at the thing they measure).
MONITORS: dict[str, frozenset[str]] = {
    "meter": frozenset({
        "utility_feed", "transformer", "switchboard", "ats", "generator", "ups_system", "pdu",
        "load",
    }),
    "ups_module": frozenset({"ups_module"}),
    "pdu": frozenset({"pdu"}),
    "generator": frozenset({"generator"}),
    "ats": frozenset({"ats"}),
    "chiller": frozenset({"chiller"}),
    "pump": frozenset({"pump"}),
    "cooling_tower": frozenset({"cooling_tower"}),
    "crah": frozenset({"crah"}),
    "rack_monitor": frozenset({"rack"}),
    "water_meter": frozenset({"site", "cooling_tower"}),
    "weather_station": frozenset({"site"}),
}
