"""The plant model: every device of a site gets coupled, deterministic engineering values.

`PlantModel(site, seed)` is stepped with explicit times (`step`, `simulate_range`) or run in
blocks (`history`); both go through the same vectorised block computation (`_advance`), so
they produce the same numbers. Equations and constants: docs/plant-model.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from dcim.simulators.climate import outdoor_weather, rh_from_dew_point
from dcim.simulators.physics import PlantConstants, ar1, aux_shape, it_load_shape
from dcim.simulators.plant_cooling import (
    ChillerState,
    chiller_plant,
    crah_units,
    fresh_air_kw,
    rack_inlets,
    stage_chillers,
    unit_board,
)
from dcim.simulators.plant_faults import (
    FAULT_KINDS,
    FaultRecord,
    active_mask,
    thermal_loss,
    valid_targets,
)
from dcim.simulators.plant_points import DeviceMapper, Frame
from dcim.simulators.plant_power import (
    MODE_BATTERY,
    battery,
    generators,
    incidence,
    pdu_chain,
    pdu_dead,
    rack_feeds,
    sources,
    supply_side,
    ups_chain,
    ups_modes,
)
from dcim.simulators.plant_topology import Topology, build_topology
from dcim.simulators.snapshot import Snapshot
from dcim.site import Site

Array = NDArray[np.float64]

WEATHER_TAU_S = 2.5 * 86400.0
HISTORY_BLOCK = 1440


@dataclass
class PlantHistory:
    """Site-level series (T,) and per-device arrays (T, n) of a run, from `PlantModel.history`.

    utility_kw is (T, sides), one column per ATS side; facility_kw = utility + generator_kw.
    """

    time_s: Array
    it_kw: Array
    facility_kw: Array
    utility_kw: Array
    generator_kw: Array
    cooling_kw: Array
    ups_loss_kw: Array
    pdu_loss_kw: Array
    tx_loss_kw: Array
    aux_kw: Array
    outdoor_temp_c: Array
    wet_bulb_c: Array
    pue: Array
    series: dict[str, Array] = field(default_factory=dict)


# Site-level series of a history, and the frame keys they come from.
_SITE_SERIES = ("it_kw", "facility_kw", "utility_kw", "generator_kw", "cooling_kw", "ups_loss_kw",
                "pdu_loss_kw", "tx_loss_kw", "aux_kw", "outdoor_temp_c", "wet_bulb_c", "pue")
# Per-device series kept in a history (racks only on request: 200 x T is the bulk).
_DEVICE_SERIES = ("pdu_out_kw", "module_out_kw", "module_in_kw", "module_mode", "chiller_kw",
                  "chiller_running", "chw_supply_c", "mech_kw", "mcc_kw", "gen_kw", "source",
                  "elec_kwh", "mech_kwh", "tower_water_m3", "site_water_m3", "fuel_l",
                  "it_kwh", "facility_kwh", "hall_inlet_mean_c", "battery_soc")


class PlantModel:
    """Coupled physics of a site's power and cooling plant, stepped with explicit times."""

    def __init__(self, site: Site, seed: int = 0, constants: PlantConstants | None = None) -> None:
        self.site = site
        self.seed = seed
        self.k = constants or PlantConstants()
        self.topo: Topology = build_topology(site, self.k.crah_influence_m)
        self._tz = ZoneInfo(site.config.site.timezone)
        seqs = np.random.SeedSequence(seed).spawn(6)
        init, rack, sensor, wx, misc, ages = (np.random.default_rng(s) for s in seqs)
        self._rng = {"rack": rack, "sensor": sensor, "wx": wx, "misc": misc}
        self._ages = ages
        self._site_age_h = float(ages.uniform(300.0, 900.0)) * 24.0
        self._age_h: dict[str, Array] = {}
        topo, k = self.topo, self.k
        n_r = topo.n_racks
        self.rack_base = init.uniform(k.rack_base_min, k.rack_base_max, n_r)
        self.feed_a_frac = np.where(topo.rack_pdu[:, 1] >= 0, np.clip(
            0.5 + init.normal(0.0, k.feed_imbalance_sigma, n_r), 0.45, 0.55), 1.0)
        position = np.array(k.position_rise_k)[None, :] + np.outer(topo.rack_end_of_row,
                                                                   k.end_of_row_rise_k)
        self.sensor_offset = position + init.normal(0.0, 0.3, (n_r, 3))
        self.fuel_init_pct = init.uniform(90.0, 98.0, len(topo.gen_ids))
        self._noise = {"rack": init.normal(0, k.rack_noise_sigma, n_r),
                       "sensor": init.normal(0, 0.15, 3 * n_r),
                       "wx": init.normal(0, 1.0, 2), "misc": init.normal(0, 1.0, 3)}
        self._chillers = ChillerState(running=np.zeros(len(topo.chiller_ids), dtype=bool),
                                      start_at=np.full(len(topo.chiller_ids), np.inf))
        self._soc = np.ones(len(topo.module_ids))
        self._ups_dead = np.zeros(len(topo.system_ids), dtype=bool)
        self._counters: dict[str, Array] = {}
        self._prev_power: dict[str, Array] = {}
        self._fuel_at_init: Array | None = None
        self._time: float | None = None
        self._faults: list[FaultRecord] = []
        self._mapper = DeviceMapper(site, topo, self.k.battery_minutes_full_load)

    # ------------------------------------------------------------------ faults

    def set_fault(self, kind: str, target: str, active: bool) -> None:
        """Start (active=True) or clear an equipment fault on a component, at the current time."""
        targets = valid_targets(self.topo, kind)
        if target not in targets:
            raise ValueError(f"fault {kind!r} cannot target {target!r}; expected one of "
                             f"{', '.join(targets)}")
        now = self._time
        current = [f for f in self._faults if f.kind == kind and f.target == target
                   and f.cleared_s is None]
        if active and not current:
            self._faults.append(FaultRecord(kind, target, now if now is not None else -np.inf))
        elif not active:
            for rec in current:
                rec.cleared_s = now if now is not None else -np.inf

    def active_faults(self) -> list[FaultRecord]:
        """Faults in force now, in the order they were set."""
        return [f for f in self._faults if f.cleared_s is None]

    @property
    def time_s(self) -> float | None:
        """Time of the last step (None before the first)."""
        return self._time

    # ------------------------------------------------------------------ stepping API

    def step(self, time_s: float) -> Snapshot:
        """Advance to time_s (integrating counters over the elapsed time) and read every device."""
        frame = self._advance(np.array([float(time_s)]))
        return self._mapper.snapshot(frame, 0)

    def simulate_range(self, start_s: float, end_s: float, step_s: float) -> Iterator[Snapshot]:
        """Snapshots every step_s from start_s (inclusive) to end_s (exclusive)."""
        times = np.arange(float(start_s), float(end_s), float(step_s))
        for lo in range(0, len(times), HISTORY_BLOCK):
            frame = self._advance(times[lo:lo + HISTORY_BLOCK])
            for i in range(len(frame["time_s"])):
                yield self._mapper.snapshot(frame, i)

    def history(self, start_s: float, end_s: float, step_s: float,
                racks: bool = False) -> PlantHistory:
        """Run from start_s to end_s (exclusive) in vectorised blocks; site and device series."""
        times = np.arange(float(start_s), float(end_s), float(step_s))
        keys = _DEVICE_SERIES + (("rack_feed_kw", "rack_kwh", "inlet_c") if racks else ())
        parts: dict[str, list[Array]] = {key: [] for key in ("time_s",) + _SITE_SERIES + keys}
        for lo in range(0, len(times), HISTORY_BLOCK):
            frame = self._advance(times[lo:lo + HISTORY_BLOCK])
            for key, chunks in parts.items():
                chunks.append(frame[key])
        cat = {key: np.concatenate(v) if v else np.zeros(0) for key, v in parts.items()}
        site = {key: cat[key] for key in ("time_s",) + _SITE_SERIES}
        return PlantHistory(**site, series={key: cat[key] for key in keys})

    # ------------------------------------------------------------------ the block computation

    def _local(self, t: Array) -> Array:
        """Local times (UTC + the site's offset; per element only when the offset changes)."""
        def off(x: float) -> float:
            """UTC offset in seconds at one time."""
            delta = datetime.fromtimestamp(x, self._tz).utcoffset()
            return delta.total_seconds() if delta else 0.0
        first, last = off(float(t[0])), off(float(t[-1]))
        if first == last:
            return t + first
        return t + np.array([off(float(x)) for x in t])

    def _ar(self, name: str, dt: Array, tau_s: float, sigma: float, n: int) -> Array:
        """Next rows of one AR(1) noise stream (its own generator, so order never mixes)."""
        eps = self._rng[name].standard_normal((len(dt), n))
        out = ar1(self._noise[name], eps, dt, tau_s, sigma)
        self._noise[name] = out[-1].copy()
        return out

    def _advance(self, t: Array) -> Frame:
        """Compute a block of times after the last one; update state; return every array."""
        if len(t) == 0:
            raise ValueError("no times to advance to")
        prev = self._time
        if (prev is not None and t[0] <= prev) or np.any(np.diff(t) <= 0):
            raise ValueError(f"times must increase: last {prev}, got {t[0]}..{t[-1]}")
        for rec in self._faults:
            if rec.since_s == -np.inf:
                rec.since_s = float(t[0])
            if rec.cleared_s == -np.inf:
                rec.cleared_s = float(t[0])
        dt = np.diff(t, prepend=t[0] if prev is None else prev)
        topo, k, faults = self.topo, self.k, self._faults
        f: Frame = {"time_s": t}
        local = self._local(t)
        wx_noise = self._ar("wx", dt, WEATHER_TAU_S, 1.0, 2)
        wx = outdoor_weather(local, 1.5 * wx_noise[:, 0], 5.0 * wx_noise[:, 1])
        f.update(outdoor_temp_c=wx.dry_bulb_c, outdoor_rh_pct=wx.rh_pct, wet_bulb_c=wx.wet_bulb_c)
        misc = self._ar("misc", dt, 600.0, 1.0, 3)
        # IT load and the power chain down to the UPS
        source = sources(topo, k, faults, t)
        dead = pdu_dead(topo, faults, t, self._ups_dead)
        noise = self._ar("rack", dt, k.rack_noise_tau_s, k.rack_noise_sigma, topo.n_racks)
        shape = it_load_shape(local, k)[:, None]
        rack_kw = topo.rack_design_kw * self.rack_base * shape * (1 + noise)
        feeds = rack_feeds(topo, rack_kw, self.feed_a_frac, dead)
        rack_kw = feeds.sum(axis=-1)
        pdu_out, pdu_loss = pdu_chain(topo, k, feeds, dead)
        system_out = (pdu_out + pdu_loss) @ incidence(topo.pdu_system, len(topo.system_ids))
        mode = ups_modes(topo, faults, t, source)
        mod_out, mod_loss, mains = ups_chain(topo, k, system_out, mode)
        soc, charge = battery(topo, k, self._soc, mode, np.where(mode == MODE_BATTERY,
                                                                 mod_out + mod_loss, 0.0), dt)
        self._soc = soc[-1].copy()
        empty = (soc[-1] <= 0.0) & (mode[-1] == MODE_BATTERY)
        self._ups_dead = np.array([empty[topo.module_system == s].all()
                                   for s in range(len(topo.system_ids))])
        mains = mains + charge
        f.update(rack_feed_kw=feeds, rack_kw=rack_kw, pdu_out_kw=pdu_out, pdu_loss_kw_each=pdu_loss,
                 pdu_in_kw=pdu_out + pdu_loss, pdu_dead=dead.astype(float),
                 system_out_kw=system_out,
                 module_mode=mode, module_out_kw=mod_out, module_loss_kw=mod_loss,
                 module_in_kw=mains, battery_soc=soc, battery_charge_kw=charge, source=source)
        # heat and the cooling chain
        n_h = len(topo.hall_ids)
        lighting = topo.hall_area_m2 * k.lighting_w_m2 / 1000.0 * aux_shape(local, k)[:, None]
        hall_kw = (rack_kw @ incidence(topo.rack_hall, n_h)
                   + pdu_loss @ incidence(topo.pdu_hall, n_h) + lighting)
        board = unit_board(topo, source)
        powered = board >= 0
        n_c, n_p, n_w, n_t = (len(topo.chiller_ids), len(topo.chw_pump_ids),
                              len(topo.cw_pump_ids), len(topo.tower_ids))
        s_chw, s_cw, s_tw = n_c, n_c + n_p, n_c + n_p + n_w
        s_crah = s_tw + n_t
        crah_tripped = active_mask(faults, topo, "crah_trip", topo.crah_ids, t)
        crah_on = powered[:, s_crah:] & ~crah_tripped
        q, crah_speed, crah_fan, airflow = crah_units(topo, k, hall_kw, crah_on)
        load = (q + crah_fan).sum(axis=1) + mod_loss.sum(axis=1) + fresh_air_kw(wx, k)
        tripped = active_mask(faults, topo, "chiller_trip", topo.chiller_ids, t)
        ch_avail = powered[:, :n_c] & ~tripped
        failed = active_mask(faults, topo, "pump_failure", topo.chw_pump_ids + topo.cw_pump_ids, t)
        chw_ok = powered[:, s_chw:s_cw] & ~failed[:, :n_p]
        cw_ok = powered[:, s_cw:s_tw] & ~failed[:, n_p:]
        pumps_ok = np.minimum(chw_ok.sum(axis=1), cw_ok.sum(axis=1)).astype(float)
        running, required, rise = stage_chillers(topo, k, self._chillers, t, dt, load, ch_avail,
                                                 pumps_ok)
        plant = chiller_plant(topo, k, wx, load, running, required, rise + 0.1 * misc[:, 2],
                              (chw_ok, cw_ok), powered[:, s_tw:s_crah])
        f.update(plant)
        supply_air = np.maximum(k.supply_air_setpoint_c,
                                plant["chw_supply_c"] + k.crah_coil_approach_k)
        crah_avail = 1.0 - thermal_loss(faults, topo, "crah_trip", topo.crah_ids, t, k.crah_tau_s)
        sensor = self._ar("sensor", dt, 600.0, 0.15, 3 * topo.n_racks).reshape(len(t), -1, 3)
        inlet = rack_inlets(topo, k, supply_air, hall_kw, crah_avail, self.sensor_offset, sensor)
        hall_dp = np.minimum(wx.dew_point_c, plant["chw_supply_c"] + 2.0)
        counts = np.maximum(np.bincount(topo.rack_hall, minlength=n_h), 1)
        f.update(hall_kw=hall_kw, crah_on=crah_on, crah_q_kw=q, crah_speed=crah_speed,
                 crah_fan_kw=crah_fan, crah_airflow_m3h=airflow, chiller_running=running,
                 chiller_required=required, plant_load_kw=load, supply_air_c=supply_air,
                 inlet_c=inlet, inlet_rh_pct=rh_from_dew_point(inlet[:, :, 1], hall_dp[:, None]),
                 hall_inlet_mean_c=inlet.mean(axis=2) @ incidence(topo.rack_hall, n_h) / counts,
                 crah_tripped=crah_tripped, chiller_avail=ch_avail, pump_failed=failed)
        # mechanical boards, aux, main switchboards, sources
        mech = np.concatenate([plant["chiller_kw"], plant["chw_pump_kw"], plant["cw_pump_kw"],
                               plant["tower_kw"], crah_fan], axis=1)
        n_s = len(topo.side_ids)
        mcc = np.stack([np.where(board == s, mech, 0.0).sum(axis=1) for s in range(n_s)], axis=1)
        live = source > 0
        aux = topo.load_design_kw * (aux_shape(local, k) * (1 + 0.03 * misc[:, 0]))[:, None]
        aux_side = np.zeros((len(t), n_s))
        for j, sides in enumerate(topo.load_sides):
            n_live = live[:, sides].sum(axis=1)
            aux[:, j] = np.where(n_live > 0, aux[:, j], 0.0)
            for s in sides:
                aux_side[:, s] += np.where(live[:, s], aux[:, j] / np.maximum(n_live, 1), 0.0)
        module_side = topo.system_side[topo.module_system]
        msb = mcc + aux_side + mains @ incidence(module_side, n_s)
        utility, tx_loss, gen_bus = supply_side(topo, k, msb, source)
        gen_run, gen_kw, gen_elapsed = generators(topo, k, faults, t, gen_bus)
        fuel_lph = np.where(gen_run > 0, k.fuel_l_per_h_idle_frac * topo.gen_cap_kw
                            + k.fuel_l_per_kwh * gen_kw, 0.0)
        it = rack_kw.sum(axis=1)
        facility = utility.sum(axis=1) + gen_kw.sum(axis=1)
        business = aux_shape(local, k) - k.aux_night_level
        f.update(mech_kw=mech, mech_board=board, mcc_kw=mcc, aux_each_kw=aux,
                 aux_kw=aux.sum(axis=1),
                 msb_kw=msb, utility_kw=utility, tx_loss_each_kw=tx_loss, gen_kw=gen_kw,
                 gen_running=gen_run, gen_elapsed_s=gen_elapsed, fuel_lph=fuel_lph, it_kw=it,
                 facility_kw=facility, generator_kw=gen_kw.sum(axis=1), cooling_kw=mcc.sum(axis=1),
                 ups_loss_kw=mod_loss.sum(axis=1) + charge.sum(axis=1),
                 pdu_loss_kw=pdu_loss.sum(axis=1), tx_loss_kw=tx_loss.sum(axis=1),
                 pue=facility / np.maximum(it, 1e-9), grid_hz=50.0 + 0.02 * misc[:, 1],
                 site_water_m3h=plant["tower_makeup_m3h"].sum(axis=1) + 0.2 + 2.0 * business)
        f["elec_kw"] = self._mapper.electrical_power(f)
        self._integrate_all(f, dt)
        f["fuel_level_pct"] = self._fuel_level(f["fuel_l"])
        self._time = float(t[-1])
        self._faults = [r for r in self._faults if r.cleared_s is None
                        or self._time - r.cleared_s < 10 * max(k.crah_tau_s, k.chw_tau_s)]
        return f

    # ------------------------------------------------------------------ counters

    def _integrate_all(self, f: Frame, dt: Array) -> None:
        """Energy, water and fuel counters: trapezoid integral of their rate, seeded start."""
        topo = self.topo
        elec_nominal = 0.01 * np.array([self.site.electrical[c].capacity_kw for c in
                                        self._mapper.elec_ids])
        mech_nominal = 0.3 * np.concatenate([
            [self.site.mechanical[u].rated_power_kw for u in topo.mech_ids]])
        # (counter, rate, nominal rate for idle equipment, age group: a device's in/out share it)
        table: list[tuple[str, Array, Array | float, str]] = [
            ("rack_kwh", f["rack_feed_kw"].reshape(len(dt), -1), 0.0, "rack"),
            ("elec_kwh", f["elec_kw"], elec_nominal, "elec"),
            ("pdu_in_kwh", f["pdu_in_kw"], 0.0, "pdu"),
            ("pdu_out_kwh", f["pdu_out_kw"], 0.0, "pdu"),
            ("module_in_kwh", f["module_in_kw"], 0.0, "module"),
            ("module_out_kwh", f["module_out_kw"], 0.0, "module"),
            ("mech_kwh", f["mech_kw"], mech_nominal, "mech"),
            ("tower_water_m3", f["tower_makeup_m3h"], 0.6, "tower"),
            ("site_water_m3", f["site_water_m3h"][:, None], 0.0, "site"),
            ("fuel_l", f["fuel_lph"], 0.01 * 0.27 * topo.gen_cap_kw, "gen"),
            ("it_kwh", f["it_kw"][:, None], 0.0, "site"),
            ("facility_kwh", f["facility_kw"][:, None], 0.0, "site"),
        ]
        for name, rate, nominal, group in table:
            f[name] = self._integrate(name, rate, dt, nominal, group)
        f["rack_kwh"] = f["rack_kwh"].reshape(len(dt), -1, 2)

    def _integrate(self, name: str, rate: Array, dt: Array, nominal: Array | float,
                   group: str) -> Array:
        """Counter rows: previous value + (rate_prev + rate) / 2 x dt; starts at a seeded value."""
        if name not in self._counters:
            if group not in self._age_h:  # hours in service, one per device of the group
                self._age_h[group] = self._site_age_h * self._ages.uniform(
                    0.6, 1.0, int(rate.shape[1]))
            self._counters[name] = np.maximum(rate[0], nominal) * self._age_h[group]
            self._prev_power[name] = rate[0]
        before = np.vstack([self._prev_power[name][None, :], rate[:-1]])
        inc = (before + rate) * 0.5 * (dt / 3600.0)[:, None]
        out = np.cumsum(np.vstack([self._counters[name][None, :], inc]), axis=0)[1:]
        self._counters[name] = out[-1].copy()
        self._prev_power[name] = rate[-1].copy()
        return out

    def _fuel_level(self, fuel_l: Array) -> Array:
        """Tank level % of each generator: the seeded start level less the fuel burnt since."""
        if self._fuel_at_init is None:
            self._fuel_at_init = fuel_l[0].copy()
        burnt = fuel_l - self._fuel_at_init
        return np.clip(self.fuel_init_pct - burnt / self.k.fuel_tank_l * 100.0, 0.0, 100.0)


__all__ = ["FAULT_KINDS", "PlantConstants", "PlantHistory", "PlantModel"]
