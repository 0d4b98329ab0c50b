"""Reference device profiles (point maps) used by the reference site and generated sites.

Each map follows the style of a real device family; see docs/site-model.md for sources.
"""

from __future__ import annotations

from typing import Any

BMS_NAMESPACE = "urn:dcim:cyberport5:bms"


def _mb(name: str, table: str, address: int, type_: str = "uint16", **extra: Any) -> dict[str, Any]:
    point: dict[str, Any] = {"name": name, "table": table, "address": address, "type": type_}
    point.update(extra)
    return point


def _ua(name: str, leaf: str, **extra: Any) -> dict[str, Any]:
    point: dict[str, Any] = {"name": name, "node": f"nsu={BMS_NAMESPACE};s={{device}}.{leaf}"}
    point.update(extra)
    return point


# Schneider PM5xxx-style power meter: float32 holding registers, 0-based, energy int64 Wh.
PM5560 = {
    "protocol": "modbus", "device_type": "meter", "vendor_model": "PM5560-style power meter",
    "points": [
        _mb("current_avg_a", "holding", 3009, "float32", role="current_a", unit="A"),
        _mb("voltage_ll_avg_v", "holding", 3025, "float32", role="voltage_v", unit="V"),
        _mb("power_kw", "holding", 3059, "float32", role="power_kw", unit="kW"),
        _mb("apparent_power_kva", "holding", 3075, "float32", role="apparent_power_kva", unit="kVA"),
        _mb("frequency_hz", "holding", 3109, "float32", role="frequency_hz", unit="Hz"),
        _mb("energy_kwh", "holding", 3203, "int64", role="energy_kwh", unit="kWh", scale=0.001),
    ],
}

# SunSpec model 203 (three-phase wye meter, integer + scale factors) after model 1 at 40002.
_S = 40070 + 2  # first data register of model 203
SUNSPEC_203 = {
    "protocol": "modbus", "device_type": "pdu", "vendor_model": "SunSpec 203 branch meter",
    # a SunSpec device maps its whole model block, so one read may span the unused registers
    "max_gap": 16,
    "points": [
        _mb("a_sf", "holding", _S + 4, "sunssf"),
        _mb("current_a", "holding", _S + 0, "int16", role="current_a", unit="A",
            scale_factor_point="a_sf"),
        _mb("v_sf", "holding", _S + 13, "sunssf"),
        _mb("voltage_ln_v", "holding", _S + 5, "int16", role="voltage_v", unit="V",
            scale_factor_point="v_sf"),
        _mb("hz_sf", "holding", _S + 15, "sunssf"),
        _mb("frequency_hz", "holding", _S + 14, "int16", role="frequency_hz", unit="Hz",
            scale_factor_point="hz_sf"),
        _mb("w_sf", "holding", _S + 20, "sunssf"),
        _mb("output_power_kw", "holding", _S + 16, "int16", role="output_power_kw", unit="kW",
            scale=0.001, scale_factor_point="w_sf"),
        _mb("pf_sf", "holding", _S + 35, "sunssf"),
        _mb("power_factor", "holding", _S + 31, "int16", role="power_factor", scale=0.01,
            scale_factor_point="pf_sf"),
        _mb("totwh_sf", "holding", _S + 52, "sunssf"),
        _mb("output_energy_kwh", "holding", _S + 44, "acc32", role="output_energy_kwh", unit="kWh",
            scale=0.001, scale_factor_point="totwh_sf"),
    ],
}

# Modular UPS power module: input registers, binary scaling in the APC manner, uint32 word-swapped.
UPS_MODULE = {
    "protocol": "modbus", "device_type": "ups_module", "vendor_model": "400 kW modular UPS module",
    "points": [
        _mb("unit_status", "input", 0, role="unit_status"),
        _mb("ups_mode", "input", 1, role="ups_mode"),
        _mb("input_power_kw", "input", 2, scale=0.1, role="input_power_kw", unit="kW"),
        _mb("output_power_kw", "input", 3, scale=0.1, role="output_power_kw", unit="kW"),
        _mb("load_pct", "input", 4, scale=1 / 256, role="load_pct", unit="%"),
        _mb("battery_charge_pct", "input", 5, scale=1 / 512, role="battery_charge_pct", unit="%"),
        _mb("battery_runtime_s", "input", 6, "uint32", order="CDAB", role="battery_runtime_s",
            unit="s"),
        _mb("battery_voltage_v", "input", 8, scale=1 / 32, role="battery_voltage_v", unit="V"),
        _mb("battery_temp_c", "input", 9, "int16", scale=1 / 128, role="battery_temp_c", unit="degC"),
        _mb("output_voltage_v", "input", 10, scale=1 / 64, role="voltage_v", unit="V"),
        _mb("output_frequency_hz", "input", 11, scale=1 / 128, role="frequency_hz", unit="Hz"),
        _mb("input_energy_kwh", "input", 12, "uint32", order="CDAB", scale=0.1,
            role="input_energy_kwh", unit="kWh"),
        _mb("output_energy_kwh", "input", 14, "uint32", order="CDAB", scale=0.1,
            role="output_energy_kwh", unit="kWh"),
        _mb("on_battery", "discrete_input", 0, "bool", role="on_battery"),
        _mb("on_bypass", "discrete_input", 1, "bool", role="on_bypass"),
        _mb("fault", "discrete_input", 2, "bool", role="fault"),
    ],
}

# Generator set controller: holding registers, a status word with bit fields.
GENSET = {
    "protocol": "modbus", "device_type": "generator", "vendor_model": "genset controller",
    "points": [
        _mb("unit_status", "holding", 0, role="unit_status"),
        _mb("running", "holding", 1, bit=0, role="running"),
        _mb("fault", "holding", 1, bit=1, role="fault"),
        _mb("power_kw", "holding", 10, "int16", role="power_kw", unit="kW"),
        _mb("voltage_ll_v", "holding", 11, role="voltage_v", unit="V"),
        _mb("frequency_hz", "holding", 12, scale=0.01, role="frequency_hz", unit="Hz"),
        _mb("fuel_level_pct", "holding", 13, scale=0.1, role="fuel_level_pct", unit="%"),
        _mb("coolant_temp_c", "holding", 14, "int16", scale=0.1, role="coolant_temp_c", unit="degC"),
        _mb("energy_kwh", "holding", 16, "uint32", role="energy_kwh", unit="kWh"),
        _mb("fuel_used_l", "holding", 18, "uint32", scale=0.1, role="fuel_used_l", unit="L"),
    ],
}

ATS = {
    "protocol": "modbus", "device_type": "ats", "vendor_model": "automatic transfer switch",
    "points": [
        _mb("source", "input", 0, role="source"),
        _mb("unit_status", "input", 1, role="unit_status"),
        _mb("fault", "discrete_input", 0, "bool", role="fault"),
    ],
}

# Rack monitor: branch-circuit metering for both feeds plus inlet probes, input registers.
RACK_MONITOR = {
    "protocol": "modbus", "device_type": "rack_monitor", "vendor_model": "rack power/env monitor",
    "points": [
        _mb("feed_a_power_kw", "input", 0, scale=0.001, role="it_power_kw", feed="A", unit="kW"),
        _mb("feed_b_power_kw", "input", 1, scale=0.001, role="it_power_kw", feed="B", unit="kW"),
        _mb("feed_a_energy_kwh", "input", 2, "uint32", order="CDAB", scale=0.001,
            role="it_energy_kwh", feed="A", unit="kWh"),
        _mb("feed_b_energy_kwh", "input", 4, "uint32", order="CDAB", scale=0.001,
            role="it_energy_kwh", feed="B", unit="kWh"),
        _mb("inlet_temp_bottom_c", "input", 6, "int16", scale=0.1, role="inlet_temp_c", nan_value=-32768,
            position="bottom", unit="degC"),
        _mb("inlet_temp_middle_c", "input", 7, "int16", scale=0.1, role="inlet_temp_c", nan_value=-32768,
            position="middle", unit="degC"),
        _mb("inlet_temp_top_c", "input", 8, "int16", scale=0.1, role="inlet_temp_c", nan_value=-32768,
            position="top", unit="degC"),
        _mb("inlet_rh_pct", "input", 9, scale=0.1, role="inlet_rh_pct", unit="%", nan_value=65535),
    ],
}


def _bms(device_type: str, model: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"protocol": "opcua", "device_type": device_type, "vendor_model": model,
            "mode": "subscribe", "points": points}


_RUN = [_ua("unit_status", "Status", role="unit_status"), _ua("running", "Running", role="running")]
CHILLER = _bms("chiller", "water-cooled centrifugal chiller (BMS)", [
    _ua("power_kw", "ElectricalPower", role="power_kw", unit="kW"),
    _ua("energy_kwh", "ElectricalEnergy", role="energy_kwh", unit="kWh"),
    _ua("cooling_kw", "CoolingLoad", role="cooling_kw", unit="kW"),
    _ua("chw_supply_temp_c", "ChwSupplyTemp", role="chw_supply_temp_c", unit="degC"),
    _ua("chw_return_temp_c", "ChwReturnTemp", role="chw_return_temp_c", unit="degC"),
    _ua("cw_supply_temp_c", "CwSupplyTemp", role="cw_supply_temp_c", unit="degC"),
    _ua("cw_return_temp_c", "CwReturnTemp", role="cw_return_temp_c", unit="degC"),
    *_RUN,
])
PUMP = _bms("pump", "variable-speed pump (BMS)", [
    _ua("power_kw", "ElectricalPower", role="power_kw", unit="kW"),
    _ua("energy_kwh", "ElectricalEnergy", role="energy_kwh", unit="kWh"),
    _ua("flow_m3h", "Flow", role="flow_m3h", unit="m3/h"),
    _ua("speed_pct", "Speed", role="speed_pct", unit="%"),
    *_RUN,
])
COOLING_TOWER = _bms("cooling_tower", "induced-draft cooling tower (BMS)", [
    _ua("fan_power_kw", "FanPower", role="fan_power_kw", unit="kW"),
    _ua("energy_kwh", "ElectricalEnergy", role="energy_kwh", unit="kWh"),
    _ua("speed_pct", "FanSpeed", role="speed_pct", unit="%"),
    _ua("cw_supply_temp_c", "CwSupplyTemp", role="cw_supply_temp_c", unit="degC"),
    _ua("makeup_water_m3", "MakeupWater", role="water_m3", unit="m3"),
    *_RUN,
])
CRAH = _bms("crah", "chilled-water CRAH (BMS)", [
    _ua("fan_power_kw", "FanPower", role="fan_power_kw", unit="kW"),
    _ua("energy_kwh", "ElectricalEnergy", role="energy_kwh", unit="kWh"),
    _ua("supply_temp_c", "SupplyAirTemp", role="supply_temp_c", unit="degC"),
    _ua("return_temp_c", "ReturnAirTemp", role="return_temp_c", unit="degC"),
    _ua("airflow_m3h", "Airflow", role="airflow_m3h", unit="m3/h"),
    _ua("valve_pct", "ChwValve", role="valve_pct", unit="%"),
    *_RUN,
])
WEATHER = _bms("weather_station", "rooftop weather station (BMS)", [
    _ua("outdoor_temp_c", "DryBulb", role="outdoor_temp_c", unit="degC"),
    _ua("outdoor_rh_pct", "RelHumidity", role="outdoor_rh_pct", unit="%"),
    _ua("wet_bulb_c", "WetBulb", role="wet_bulb_temp_c", unit="degC"),
])
WATER_METER = _bms("water_meter", "site water meter (BMS)", [
    _ua("water_m3", "Volume", role="water_m3", unit="m3"),
])

REFERENCE_PROFILES: dict[str, dict[str, Any]] = {
    "pm5560": PM5560, "sunspec_203": SUNSPEC_203, "ups_module_400": UPS_MODULE,
    "genset": GENSET, "ats": ATS, "rack_monitor": RACK_MONITOR, "bms_chiller": CHILLER,
    "bms_pump": PUMP, "bms_cooling_tower": COOLING_TOWER, "bms_crah": CRAH,
    "bms_weather": WEATHER, "bms_water_meter": WATER_METER,
}
