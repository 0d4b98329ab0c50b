"""From the plant's arrays to device readings: each role-bearing point of each device gets a value.

A device's values depend on what it monitors (`SiteDevice.monitors`): a meter on UTIL-A reads the
feed, on UPS-A the UPS output bus, on MCC-A the mechanical board. Points without a role (SunSpec
scale factors) are left to the wire encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dcim.simulators.plant_power import MODE_BATTERY, MODE_BYPASS, MODE_OFF, SOURCE_UTILITY
from dcim.simulators.plant_topology import Topology
from dcim.simulators.snapshot import DeviceHealth, DeviceReading, Snapshot
from dcim.site import Site

Array = NDArray[np.float64]
# A block's arrays by name: float64, except on/off flags (bool) and mech_board (int64 side index).
Frame = dict[str, NDArray[Any]]
Key = str | tuple[str, str | None, str | None]
Values = dict[Key, float]
Row = dict[str, Any]  # one time of a block, as Python lists (fast to index)

SQRT3 = math.sqrt(3.0)
# Block arrays a snapshot reads (row i of each, converted once to Python values).
ROW_KEYS = (
    "battery_charge_kw", "battery_soc", "chiller_avail", "chiller_cooling_kw", "chiller_running",
    "chw_return_c", "chw_supply_c", "crah_airflow_m3h", "crah_on", "crah_q_kw", "crah_speed",
    "crah_tripped", "cw_return_c", "cw_supply_c", "elec_kw", "elec_kwh", "fuel_l", "fuel_level_pct",
    "gen_elapsed_s", "gen_kw", "gen_running", "grid_hz", "inlet_c", "inlet_rh_pct", "mech_board",
    "mech_kw", "mech_kwh", "module_in_kw", "module_in_kwh", "module_loss_kw", "module_mode",
    "module_out_kw", "module_out_kwh", "outdoor_rh_pct", "outdoor_temp_c", "pdu_dead", "pdu_in_kw",
    "pdu_in_kwh", "pdu_out_kw", "pdu_out_kwh", "pump_failed", "rack_feed_kw", "rack_kwh",
    "site_water_m3", "site_water_m3h", "source", "supply_air_c", "time_s", "tower_makeup_m3h",
    "tower_on", "tower_speed", "tower_water_m3", "wet_bulb_c", "chw_pump_m3h", "chw_pump_on",
    "chw_pump_speed", "cw_pump_m3h", "cw_pump_on", "cw_pump_speed",
)
NOMINAL_V = {"utility_feed": 11000.0, "generator": 400.0}
POWER_FACTOR = {"utility_feed": 0.95, "switchboard": 0.92, "load": 0.9, "generator": 0.9}


def _meter(power_kw: float, energy_kwh: float, volts: float, pf: float, hz: float) -> Values:
    """Three-phase meter readings from active power, line voltage and power factor."""
    live = volts > 0
    amps = power_kw * 1000.0 / (SQRT3 * volts * pf) if live else 0.0
    return {"power_kw": power_kw, "energy_kwh": energy_kwh, "voltage_v": volts,
            "current_a": amps, "power_factor": pf if live else 0.0,
            "apparent_power_kva": power_kw / pf,
            "reactive_power_kvar": power_kw * math.tan(math.acos(pf)),
            "frequency_hz": hz if live else 0.0}


def _status(tripped: bool, running: bool, alarm: bool = False) -> Values:
    """unit_status / running / fault words: 3 tripped, 2 alarm, 1 running, 0 off."""
    code = 3 if tripped else 2 if alarm else 1 if running else 0
    return {"unit_status": float(code), "running": float(running and not tripped),
            "fault": float(tripped)}


class DeviceMapper:
    """Maps the plant's arrays to every device's point values."""

    def __init__(self, site: Site, topo: Topology, battery_minutes: float) -> None:
        self.site, self.topo = site, topo
        self.battery_minutes = battery_minutes
        self.elec_ids = [c.id for c in site.config.electrical]
        self._elec_index = {c: i for i, c in enumerate(self.elec_ids)}
        self._points = {d.id: [(p.name, p.role, p.feed, p.position) for p in d.profile.points
                               if p.role is not None] for d in site.devices.values()}
        self._readers: dict[str, Callable[[Row], Values]] = {}
        for dev in site.devices.values():
            self._readers[dev.id] = self._reader(dev.device_type, dev.monitors)

    def electrical_power(self, f: Frame) -> Array:
        """(T, E) power through every electrical component (output side), in config order."""
        topo = self.topo
        out = np.zeros((len(f["time_s"]), len(self.elec_ids)))
        for j, cid in enumerate(self.elec_ids):
            out[:, j] = self._elec_column(f, cid, self.site.electrical[cid].type, topo)
        return out

    def _elec_column(self, f: Frame, cid: str, ctype: str, topo: Topology) -> Array:
        """(T,) power through one electrical component."""
        if ctype == "utility_feed":
            return f["utility_kw"][:, topo.side_utility.index(cid)]
        if ctype == "transformer" and cid in topo.side_transformer:
            s = topo.side_transformer.index(cid)
            return f["utility_kw"][:, s] - f["tx_loss_each_kw"][:, s]
        if ctype == "ats" and cid in topo.side_ids:
            return f["msb_kw"][:, topo.side_ids.index(cid)]
        if cid in topo.side_msb:
            return f["msb_kw"][:, topo.side_msb.index(cid)]
        if cid in topo.side_mcc:
            return f["mcc_kw"][:, topo.side_mcc.index(cid)]
        if cid == topo.gen_bus:
            return f["gen_kw"].sum(axis=1)
        table = (("generator", topo.gen_ids, "gen_kw"),
                 ("ups_module", topo.module_ids, "module_out_kw"),
                 ("ups_system", topo.system_ids, "system_out_kw"),
                 ("pdu", topo.pdu_ids, "pdu_out_kw"),
                 ("load", topo.load_ids, "aux_each_kw"))
        for kind, ids, key in table:
            if ctype == kind and cid in ids:
                return f[key][:, ids.index(cid)]
        return np.zeros(len(f["time_s"]))

    def snapshot(self, f: Frame, i: int) -> Snapshot:
        """Every device's reading at row i of a block."""
        row: Row = {key: f[key][i].tolist() for key in ROW_KEYS}
        devices: dict[str, DeviceReading] = {}
        for dev_id, points in self._points.items():
            vals = self._readers[dev_id](row)
            out: dict[str, float] = {}
            for name, role, feed, position in points:
                value = vals.get((role, feed, position), vals.get(role))  # type: ignore[arg-type]
                if value is not None:
                    out[name] = float(value)
            health = DeviceHealth.FAULT if vals.get("fault", 0.0) else DeviceHealth.OK
            devices[dev_id] = DeviceReading(values=out, health=health)
        return Snapshot(time_s=float(row["time_s"]), devices=devices)

    # ------------------------------------------------------------------ per device type

    def _reader(self, device_type: str, monitors: str) -> Callable[[Row], Values]:
        """The function that reads one device's values at a row of a block."""
        topo = self.topo
        if monitors in self.site.racks:
            r = topo.rack_ids.index(monitors)
            return lambda row: self._rack(row, r)
        if monitors == "site":
            return self._weather if device_type == "weather_station" else self._site_water
        if monitors in self.site.electrical:
            comp_type = self.site.electrical[monitors].type
            if device_type == "meter":
                e = self._elec_index[monitors]
                return lambda row: self._meter_on(row, e, comp_type, monitors)
            kinds: dict[str, Callable[[Row, int], Values]] = {
                "ups_module": self._module, "pdu": self._pdu, "generator": self._generator,
                "ats": self._ats}
            ids = {"ups_module": topo.module_ids, "pdu": topo.pdu_ids, "generator": topo.gen_ids,
                   "ats": topo.side_ids}[comp_type]
            j = ids.index(monitors)
            return lambda row: kinds[comp_type](row, j)
        u = topo.mech_ids.index(monitors)
        if device_type == "water_meter":
            t = topo.tower_ids.index(monitors)
            return lambda row: {"water_m3": row["tower_water_m3"][t],
                                 "flow_m3h": row["tower_makeup_m3h"][t]}
        return lambda row: self._mechanical(row, u)

    def _meter_on(self, row: Row, e: int, comp_type: str, cid: str) -> Values:
        """A power meter on any electrical component: dead sides read 0 V."""
        topo = self.topo
        volts = NOMINAL_V.get(comp_type, 400.0)
        live = True
        if comp_type in ("utility_feed", "transformer"):
            sides = [s for s, (u, x) in enumerate(zip(topo.side_utility, topo.side_transformer))
                     if cid in (u, x)]
            live = bool(sides) and row["source"][sides[0]] == SOURCE_UTILITY
        elif comp_type == "generator" or cid == topo.gen_bus:
            live = any(row["gen_running"])
        elif cid in topo.side_msb or cid in topo.side_ids or cid in topo.side_mcc:
            s = next(j for j in range(len(topo.side_ids)) if cid in (
                topo.side_msb[j], topo.side_ids[j], topo.side_mcc[j]))
            live = row["source"][s] > 0
        hz = float(row["grid_hz"])
        return _meter(float(row["elec_kw"][e]), float(row["elec_kwh"][e]),
                      volts * (1 + (hz - 50.0) * 0.05) if live else 0.0,
                      POWER_FACTOR.get(comp_type, 0.97), hz)

    def _module(self, row: Row, m: int) -> Values:
        """A UPS power module with its battery."""
        mode = int(row["module_mode"][m])
        cap = self.topo.module_cap_kw[m]
        out = float(row["module_out_kw"][m])
        soc = float(row["battery_soc"][m])
        draw = out + float(row["module_loss_kw"][m])
        runtime = 0.0 if mode == MODE_OFF else min(
            soc * cap * self.battery_minutes / 60.0 / max(draw, 0.01 * cap) * 3600.0, 86400.0)
        charging = float(row["battery_charge_kw"][m]) > 0
        float_v = 520.0 + 25.0 * soc if charging else 545.0
        volts = 430.0 + 100.0 * soc if mode == MODE_BATTERY else float_v
        vals: Values = {
            "input_power_kw": float(row["module_in_kw"][m]), "output_power_kw": out,
            "input_energy_kwh": float(row["module_in_kwh"][m]),
            "output_energy_kwh": float(row["module_out_kwh"][m]), "load_pct": out / cap * 100.0,
            "battery_charge_pct": soc * 100.0, "battery_runtime_s": runtime,
            "battery_voltage_v": volts, "battery_temp_c": 25.0 + 2.0 * (mode == MODE_BATTERY),
            "voltage_v": 0.0 if mode == MODE_OFF else 400.0,
            "current_a": out * 1000.0 / (SQRT3 * 400.0 * 0.99),
            "frequency_hz": 0.0 if mode == MODE_OFF else 50.0 if mode == MODE_BATTERY
            else float(row["grid_hz"]),
            "ups_mode": float(mode), "on_battery": float(mode == MODE_BATTERY),
            "on_bypass": float(mode == MODE_BYPASS)}
        alarm = mode in (MODE_BATTERY, MODE_BYPASS)
        vals.update(_status(mode == MODE_OFF, mode != MODE_OFF, alarm))
        return vals

    def _pdu(self, row: Row, p: int) -> Values:
        """A PDU branch meter."""
        out = float(row["pdu_out_kw"][p])
        dead = bool(row["pdu_dead"][p])
        pf = 0.97
        vals: Values = {
            "output_power_kw": out, "input_power_kw": float(row["pdu_in_kw"][p]), "power_kw": out,
            "output_energy_kwh": float(row["pdu_out_kwh"][p]),
            "input_energy_kwh": float(row["pdu_in_kwh"][p]),
            "energy_kwh": float(row["pdu_out_kwh"][p]),
            "voltage_v": 0.0 if dead else 230.0,
            "current_a": 0.0 if dead else out * 1000.0 / (3 * 230.0 * pf),
            "frequency_hz": 0.0 if dead else 50.0, "power_factor": 0.0 if dead else pf,
            "load_pct": out / self.topo.pdu_cap_kw[p] * 100.0, "breaker_open": float(dead)}
        vals.update(_status(dead, not dead))
        return vals

    def _generator(self, row: Row, g: int) -> Values:
        """A generator set controller."""
        e = self._elec_index[self.topo.gen_ids[g]]
        running = bool(row["gen_running"][g])
        warm = running and row["gen_elapsed_s"][g] >= 5.0
        elapsed = float(row["gen_elapsed_s"][g])
        vals = _meter(float(row["gen_kw"][g]), float(row["elec_kwh"][e]),
                      400.0 if warm else 0.0, 0.9, 50.0)
        vals.update({"running": float(running), "fuel_level_pct": float(row["fuel_level_pct"][g]),
                     "fuel_used_l": float(row["fuel_l"][g]),
                     "coolant_temp_c": 40.0 + (45.0 * (1 - math.exp(-elapsed / 300.0))
                                               if running else 0.0)})
        vals.update(_status(False, running))
        return vals

    def _ats(self, row: Row, s: int) -> Values:
        """An automatic transfer switch."""
        source = float(row["source"][s])
        return {"source": source, "unit_status": 1.0 if source == SOURCE_UTILITY else 2.0,
                "fault": 0.0}

    def _mechanical(self, row: Row, u: int) -> Values:
        """A chiller, pump, cooling tower or CRAH on the BMS."""
        topo = self.topo
        power = float(row["mech_kw"][u])
        vals: Values = {"power_kw": power, "energy_kwh": float(row["mech_kwh"][u])}
        n_c, n_p, n_w, n_t = (len(topo.chiller_ids), len(topo.chw_pump_ids), len(topo.cw_pump_ids),
                              len(topo.tower_ids))
        if u < n_c:
            on = bool(row["chiller_running"][u])
            tripped = not bool(row["chiller_avail"][u]) and bool(row["mech_board"][u] >= 0)
            vals.update({"cooling_kw": float(row["chiller_cooling_kw"][u]),
                         "load_pct": row["chiller_cooling_kw"][u] / topo.chiller_cap_kw[u] * 100,
                         "chw_supply_temp_c": float(row["chw_supply_c"]),
                         "chw_return_temp_c": float(row["chw_return_c"]),
                         "cw_supply_temp_c": float(row["cw_supply_c"]),
                         "cw_return_temp_c": float(row["cw_return_c"])})
            vals.update(_status(tripped, on))
        elif u < n_c + n_p + n_w:
            kind, j = ("chw", u - n_c) if u < n_c + n_p else ("cw", u - n_c - n_p)
            on = bool(row[f"{kind}_pump_on"][j])
            speed = float(row[f"{kind}_pump_speed"][j])
            vals.update({"flow_m3h": float(row[f"{kind}_pump_m3h"][j]), "speed_pct": speed * 100,
                         "differential_pressure_kpa": 150.0 * speed ** 2})
            vals.update(_status(bool(row["pump_failed"][u - n_c]), on))
        elif u < n_c + n_p + n_w + n_t:
            j = u - n_c - n_p - n_w
            on = bool(row["tower_on"][j])
            vals.update({"fan_power_kw": power, "speed_pct": float(row["tower_speed"][j]) * 100,
                         "cw_supply_temp_c": float(row["cw_supply_c"]),
                         "cw_return_temp_c": float(row["cw_return_c"]),
                         "water_m3": float(row["tower_water_m3"][j])})
            vals.update(_status(False, on))
        else:
            j = u - n_c - n_p - n_w - n_t
            on = bool(row["crah_on"][j])
            q = float(row["crah_q_kw"][j])
            flow = float(row["crah_airflow_m3h"][j])
            supply = float(row["supply_air_c"])
            rise = q / (1.2 * 1.006 * flow / 3600.0) if flow > 0 else 0.0
            valve = q / topo.crah_cap_kw[j] * 100 * (1 + 0.15 * (float(row["chw_supply_c"]) - 11.0))
            vals.update({"fan_power_kw": power, "supply_temp_c": supply,
                         "return_temp_c": supply + rise,
                         "airflow_m3h": flow, "speed_pct": float(row["crah_speed"][j]) * 100,
                         "valve_pct": float(np.clip(valve, 0, 100)) if on else 0.0,
                         "cooling_kw": q + power})
            vals.update(_status(bool(row["crah_tripped"][j]), on))
        return vals

    def _rack(self, row: Row, r: int) -> Values:
        """A rack monitor: feed A/B power and energy, inlet temperatures and RH."""
        feeds, kwh, inlet = row["rack_feed_kw"][r], row["rack_kwh"][r], row["inlet_c"][r]
        vals: Values = {"it_power_kw": feeds[0] + feeds[1], "it_energy_kwh": kwh[0] + kwh[1],
                        "inlet_temp_c": inlet[1], "inlet_rh_pct": row["inlet_rh_pct"][r]}
        for j, feed in enumerate("AB"):
            vals[("it_power_kw", feed, None)] = feeds[j]
            vals[("it_energy_kwh", feed, None)] = kwh[j]
        for j, pos in enumerate(("bottom", "middle", "top")):
            vals[("inlet_temp_c", None, pos)] = inlet[j]
        return vals

    def _weather(self, row: Row) -> Values:
        """The rooftop weather station."""
        return {"outdoor_temp_c": float(row["outdoor_temp_c"]),
                "outdoor_rh_pct": float(row["outdoor_rh_pct"]),
                "wet_bulb_temp_c": float(row["wet_bulb_c"])}

    def _site_water(self, row: Row) -> Values:
        """The site water meter."""
        return {"water_m3": row["site_water_m3"][0], "flow_m3h": row["site_water_m3h"]}
