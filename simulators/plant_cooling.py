"""The cooling chain of the plant model: halls -> CRAH -> chilled water -> chillers -> towers.

Pure functions over (T, n) arrays except `stage_chillers`, a small sequential state machine
(staging with hysteresis, start delays, the chilled-water temperature lag).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dcim.simulators.climate import Weather, enthalpy_kj_kg
from dcim.simulators.physics import (
    CP_AIR_KJ_KG_K,
    CP_WATER_KJ_KG_K,
    RHO_AIR_KG_M3,
    PlantConstants,
    affinity_power_kw,
    chiller_cop,
    tower_speed,
)
from dcim.simulators.plant_topology import Topology

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass
class ChillerState:
    """Sequencer state carried between blocks."""

    running: BoolArray
    start_at: Array  # time a starting chiller comes on line (inf: not starting)
    n_required: int = 0
    unplanned: int = 0  # running chillers lost and not yet replaced
    chw_rise_k: float = 0.0
    initialised: bool = False


def unit_board(topo: Topology, source: Array) -> NDArray[np.int64]:
    """(T, U) side index powering each mechanical unit (its alternative if needed), -1 if none."""
    live = source > 0
    pref, alt = topo.mech_supply[:, 0], topo.mech_supply[:, 1]
    return np.where(live[:, pref], pref[None, :], np.where(live[:, alt], alt[None, :], -1))


def running_by_rank(available: BoolArray, wanted: Array) -> BoolArray:
    """(T, n) the first `wanted` available units in config order run (lead/lag by order)."""
    rank = np.cumsum(available, axis=1) - 1
    return available & (rank < wanted[:, None])


def crah_units(topo: Topology, k: PlantConstants, hall_kw: Array,
               running: BoolArray) -> tuple[Array, Array, Array, Array]:
    """(T, K) heat taken by each CRAH, fan speed 0..1, fan kW, airflow m3/h."""
    cap = topo.crah_cap_kw
    cap_run = np.zeros_like(hall_kw)
    np.add.at(cap_run.T, topo.crah_hall, (running * cap).T)
    share = np.where(running, cap / np.maximum(cap_run[:, topo.crah_hall], 1e-9), 0.0)
    q = hall_kw[:, topo.crah_hall] * share
    speed = np.where(running, np.clip(q / cap, k.crah_min_speed, 1.0), 0.0)
    fan = topo.crah_rated_kw * speed ** 3
    design_m3h = cap / (RHO_AIR_KG_M3 * CP_AIR_KJ_KG_K * k.crah_delta_t_k) * 3600.0
    return q, speed, fan, speed * design_m3h


def chw_setpoint(dew_point_c: Array, k: PlantConstants) -> Array:
    """Chilled-water supply reset: warmer in dry winter air, colder for summer dehumidification."""
    x = np.clip((dew_point_c - 14.0) / 8.0, 0.0, 1.0)
    return k.chw_supply_winter_c + x * (k.chw_supply_summer_c - k.chw_supply_winter_c)


def fresh_air_kw(weather: Weather, k: PlantConstants) -> Array:
    """Primary air unit load: outdoor air cooled and dried to 20 degC, 11 degC dew point."""
    target = enthalpy_kj_kg(np.float64(20.0), np.float64(11.0))
    dh = enthalpy_kj_kg(weather.dry_bulb_c, weather.dew_point_c) - target
    return np.maximum(dh, 0.0) * RHO_AIR_KG_M3 * k.fresh_air_m3_s


def stage_chillers(topo: Topology, k: PlantConstants, st: ChillerState, t: Array, dt: Array,
                   load_kw: Array, available: BoolArray,
                   pumps_ok: Array) -> tuple[BoolArray, Array, Array]:
    """Run the sequencer: (T, C) running, (T,) chillers required, (T,) CHW supply rise K.

    Plain Python over a handful of chillers (numpy per row would be slower); lead/lag by order.
    """
    cap = float(topo.chiller_cap_kw.mean())
    n_c = len(topo.chiller_ids)
    run = [bool(x) for x in st.running]
    start_at = [float(x) for x in st.start_at]
    rows: list[list[bool]] = []
    required, rise = np.zeros(len(t)), np.zeros(len(t))
    n_req, unplanned, chw_rise = st.n_required, st.unplanned, st.chw_rise_k
    decay = np.exp(-dt / k.chw_tau_s).tolist()
    for i, (now, load, avail, pumps) in enumerate(zip(t.tolist(), load_kw.tolist(),
                                                      available.tolist(), pumps_ok.tolist())):
        lost = done = 0
        for c in range(n_c):
            if not avail[c]:
                lost += run[c]
                run[c], start_at[c] = False, math.inf
            elif start_at[c] <= now:
                run[c], start_at[c] = True, math.inf
                done += 1
        unplanned = max(0, unplanned + lost - done)
        need = load * (1.0 + k.chiller_margin)
        n_up = max(1, math.ceil(need / cap))
        if n_up > n_req or need < (n_req - 1) * cap * 0.85:
            n_req = n_up
        target = min(n_req, sum(avail))
        if not st.initialised:
            run = [bool(a) and sum(avail[:c + 1]) <= target for c, a in enumerate(avail)]
            unplanned, st.initialised = 0, True
        have = sum(run) + sum(s < math.inf for s in start_at)
        # a lost chiller is replaced from the moment it was lost (at or after the last sample)
        begin = now - float(dt[i]) if lost else now
        for c in range(n_c):  # start the next idle available chillers
            if have < target and avail[c] and not run[c] and start_at[c] == math.inf:
                start_at[c] = begin + k.chiller_start_delay_s
                have += 1
        for c in reversed(range(n_c)):  # cancel pending starts first, then stop the last lag
            if have > target and start_at[c] < math.inf:
                start_at[c], have = math.inf, have - 1
        for c in reversed(range(n_c)):
            if have > target and run[c]:
                run[c], have = False, have - 1
        unplanned = min(unplanned, sum(s < math.inf for s in start_at))
        n_run = sum(run)
        short_cap = max(0.0, load - n_run * cap) / max(load, 1.0)
        short_pump = max(0.0, n_req - pumps) / n_req
        goal = k.chw_delta_t_k * max(unplanned / max(target, 1), short_cap, short_pump)
        chw_rise += (goal - chw_rise) * (1.0 - decay[i])
        rows.append(list(run))
        required[i], rise[i] = n_req, chw_rise
    st.running, st.start_at = np.array(run, dtype=bool), np.array(start_at)
    st.n_required, st.unplanned, st.chw_rise_k = n_req, unplanned, chw_rise
    return np.array(rows, dtype=bool).reshape(len(t), n_c), required, rise


def chiller_plant(topo: Topology, k: PlantConstants, weather: Weather, load_kw: Array,
                  running: BoolArray, required: Array, chw_rise: Array,
                  pumps_avail: tuple[BoolArray, BoolArray],
                  towers_avail: BoolArray) -> dict[str, Array]:
    """Chillers, pumps and towers at each time given who runs: powers, temperatures, flows."""
    n_run = running.sum(axis=1).astype(float)
    served = np.where(n_run > 0, load_kw, 0.0)
    per = served / np.maximum(n_run, 1.0)
    cap = topo.chiller_cap_kw
    plr = per[:, None] / cap[None, :]
    chw_sup = chw_setpoint(weather.dew_point_c, k) + chw_rise
    towers = running_by_rank(towers_avail, np.maximum(n_run, required * (n_run > 0)))
    n_tow = np.maximum(towers.sum(axis=1), 1)
    est_rej = served * 1.2
    tower_frac = est_rej / (n_tow * topo.tower_cap_kw.mean())
    approach = k.tower_approach_k * (0.7 + 0.5 * tower_frac)
    cw_sup = np.maximum(k.cw_min_supply_c, weather.wet_bulb_c + approach)
    plr_mean = per / cap.mean()
    cw_ret = cw_sup + k.cw_range_k * plr_mean / np.maximum(plr_mean, k.pump_min_speed)
    cop = chiller_cop(chw_sup[:, None], cw_sup[:, None], cw_ret[:, None], plr, k)
    chiller_kw = np.where(running, per[:, None] / cop, 0.0)
    cooling_kw = np.where(running, per[:, None], 0.0)
    rejected = served + chiller_kw.sum(axis=1)
    out = {"chiller_kw": chiller_kw, "chiller_cooling_kw": cooling_kw, "chiller_cop": cop,
           "chw_supply_c": chw_sup, "cw_supply_c": cw_sup, "cw_return_c": cw_ret,
           "rejected_kw": rejected}
    flow_kg_s = 0.0
    for name, avail, heat, d_t in (("chw", pumps_avail[0], served, k.chw_delta_t_k),
                                   ("cw", pumps_avail[1], rejected, k.cw_range_k)):
        on = running_by_rank(avail, required * (n_run > 0))
        n_on = np.maximum(on.sum(axis=1), 1)
        design_kg_s = cap.mean() * (1.2 if name == "cw" else 1.0) / (CP_WATER_KJ_KG_K * d_t)
        frac = np.clip(heat / (n_on * design_kg_s * CP_WATER_KJ_KG_K * d_t), k.pump_min_speed, 1.0)
        rated = topo.chw_pump_rated_kw if name == "chw" else topo.cw_pump_rated_kw
        out[f"{name}_pump_on"] = on
        out[f"{name}_pump_speed"] = np.where(on, frac[:, None], 0.0)
        out[f"{name}_pump_kw"] = np.where(on, affinity_power_kw(frac[:, None], rated, 0.0), 0.0)
        out[f"{name}_pump_m3h"] = out[f"{name}_pump_speed"] * design_kg_s * 3.6
        if name == "chw":
            flow_kg_s = out["chw_pump_m3h"].sum(axis=1) / 3.6
    out["chw_return_c"] = chw_sup + served / np.maximum(flow_kg_s * CP_WATER_KJ_KG_K, 1e-9)
    load_frac = rejected / (n_tow * topo.tower_cap_kw.mean())
    speed = np.where(towers, tower_speed(load_frac, weather.wet_bulb_c, k)[:, None], 0.0)
    out["tower_on"] = towers
    out["tower_speed"] = speed
    out["tower_kw"] = topo.tower_rated_kw * speed ** 3
    out["tower_makeup_m3h"] = np.where(towers, (rejected / n_tow)[:, None], 0.0) * (
        k.makeup_l_per_kwh / 1000.0)
    out["cw_return_c"] = cw_ret
    return out


def rack_inlets(topo: Topology, k: PlantConstants, supply_air_c: Array, hall_kw: Array,
                crah_avail: Array, offsets: Array, noise: Array) -> Array:
    """(T, R, 3) inlet temperatures bottom/middle/top: supply + margin + local loss + position."""
    cap_eff = np.zeros_like(hall_kw)
    np.add.at(cap_eff.T, topo.crah_hall, (crah_avail * topo.crah_cap_kw).T)
    ratio = np.minimum(hall_kw / np.maximum(cap_eff, 1.0), 2.0)
    margin = k.margin_rise_k * ratio ** 2
    local = k.local_loss_rise_k * ((1.0 - crah_avail) @ topo.crah_weight.T)
    base = supply_air_c[:, None] + margin[:, topo.rack_hall] + local
    return base[:, :, None] + offsets[None, :, :] + noise
