"""The power chain of the plant model: racks -> PDUs -> UPS -> switchboards -> utility/generators.

Pure functions over (T, n) arrays: T times of one block, n elements (racks, PDUs, modules...).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dcim.simulators.physics import PlantConstants, quadratic_loss_kw, ups_loss_kw
from dcim.simulators.plant_faults import FaultRecord, active_mask, since_for
from dcim.simulators.plant_topology import Topology

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

MODE_OFF, MODE_ONLINE, MODE_BYPASS, MODE_BATTERY = 0, 1, 2, 3
SOURCE_NONE, SOURCE_UTILITY, SOURCE_GENERATOR = 0, 1, 2


def incidence(index: NDArray[np.int64], n: int) -> Array:
    """One-hot (len(index), n) matrix; -1 rows are all zero."""
    out = np.zeros((len(index), n))
    ok = index >= 0
    out[np.flatnonzero(ok), index[ok]] = 1.0
    return out


def sources(topo: Topology, k: PlantConstants, faults: list[FaultRecord], t: Array) -> Array:
    """(T, sides) selected source of each ATS: utility, generator after the start delay, none."""
    lost = active_mask(faults, topo, "utility_loss", topo.side_utility, t)
    since = since_for(faults, topo, "utility_loss", topo.side_utility, t)
    ready = np.nan_to_num(since, nan=-1.0) >= k.generator_start_delay_s
    on_gen = lost & ready & bool(topo.gen_ids)
    chosen = np.where(lost, np.where(on_gen, SOURCE_GENERATOR, SOURCE_NONE), SOURCE_UTILITY)
    return chosen.astype(float)


def pdu_dead(topo: Topology, faults: list[FaultRecord], t: Array,
             ups_dead: BoolArray) -> BoolArray:
    """(T, P) PDUs with an open breaker or whose UPS system has no output."""
    dead = active_mask(faults, topo, "pdu_breaker_open", topo.pdu_ids, t)
    return dead | ups_dead[topo.pdu_system][None, :]


def rack_feeds(topo: Topology, rack_kw: Array, frac_a: Array, dead: BoolArray) -> Array:
    """(T, R, 2) kW on feed A and B: split by frac_a, the whole rack on one live feed."""
    pdu = topo.rack_pdu
    live = np.stack([(pdu[:, f] >= 0)[None, :] & ~dead[:, np.maximum(pdu[:, f], 0)]
                     for f in (0, 1)], axis=-1)
    both = live[..., 0] & live[..., 1]
    share_a = np.where(both, frac_a[None, :], live[..., 0].astype(float))
    share_b = np.where(both, 1.0 - frac_a[None, :], live[..., 1].astype(float))
    return np.stack([rack_kw * share_a, rack_kw * share_b], axis=-1)


def pdu_chain(topo: Topology, k: PlantConstants, feeds: Array,
              dead: BoolArray) -> tuple[Array, Array]:
    """(T, P) PDU output (sum of rack feeds) and losses (none while de-energised)."""
    n = len(topo.pdu_ids)
    out = feeds[..., 0] @ incidence(topo.rack_pdu[:, 0], n) + feeds[..., 1] @ incidence(
        topo.rack_pdu[:, 1], n)
    loss = quadratic_loss_kw(out, topo.pdu_cap_kw, k.pdu_no_load, k.pdu_load_loss)
    return out, np.where(dead, 0.0, loss)


def ups_modes(topo: Topology, faults: list[FaultRecord], t: Array, source: Array) -> Array:
    """(T, M) module mode: 0 off/tripped, 1 online, 2 bypass, 3 battery."""
    ids = topo.module_ids
    mode = np.full((len(t), len(ids)), float(MODE_ONLINE))
    mode[active_mask(faults, topo, "ups_bypass", ids, t)] = MODE_BYPASS
    side_dead = (source == SOURCE_NONE)[:, topo.system_side[topo.module_system]]
    mode[active_mask(faults, topo, "ups_battery", ids, t) | side_dead] = MODE_BATTERY
    mode[active_mask(faults, topo, "ups_module_trip", ids, t)] = MODE_OFF
    return mode


def ups_chain(topo: Topology, k: PlantConstants, system_out: Array,
              mode: Array) -> tuple[Array, Array, Array]:
    """(T, M) module output, losses and draw from the mains; load shared by live modules."""
    live = mode != MODE_OFF
    n_live = np.zeros_like(system_out)
    np.add.at(n_live.T, topo.module_system, live.T)
    out = np.where(live, system_out[:, topo.module_system]
                   / np.maximum(n_live[:, topo.module_system], 1), 0.0)
    loss = np.where(mode == MODE_BYPASS, out * k.ups_bypass_loss,
                    ups_loss_kw(out, topo.module_cap_kw, k))
    loss = np.where(live, loss, 0.0)
    mains = np.where((mode == MODE_ONLINE) | (mode == MODE_BYPASS), out + loss, 0.0)
    return out, loss, mains


def battery(topo: Topology, k: PlantConstants, soc0: Array, mode: Array, draw_kw: Array,
            dt: Array) -> tuple[Array, Array]:
    """(T, M) state of charge 0..1 and recharge kW: discharge on battery, recharge when online."""
    capacity_kwh = topo.module_cap_kw * k.battery_minutes_full_load / 60.0
    recharge_kw = k.battery_recharge_pct_per_h / 100.0 * capacity_kwh
    on_batt = mode == MODE_BATTERY
    if not on_batt.any() and np.all(soc0 >= 1.0):
        return np.ones_like(draw_kw), np.zeros_like(draw_kw)
    soc = np.empty_like(draw_kw)
    charge = np.zeros_like(draw_kw)
    prev = soc0.copy()
    for i in range(len(dt)):
        charging = (mode[i] == MODE_ONLINE) & (prev < 1.0)
        charge[i] = np.where(charging, recharge_kw, 0.0)
        delta = np.where(on_batt[i], -draw_kw[i], charge[i]) * dt[i] / 3600.0 / capacity_kwh
        prev = np.clip(prev + delta, 0.0, 1.0)
        soc[i] = prev
    return soc, charge


def supply_side(topo: Topology, k: PlantConstants, msb_kw: Array,
                source: Array) -> tuple[Array, Array, Array]:
    """(T, sides) utility power and transformer losses, (T,) generator bus power."""
    on_util = source == SOURCE_UTILITY
    tx_loss = np.where(on_util, quadratic_loss_kw(msb_kw, topo.side_tx_cap_kw, k.tx_no_load,
                                                  k.tx_load_loss), 0.0)
    utility = np.where(on_util, msb_kw + tx_loss, 0.0)
    gen_bus = np.where(source == SOURCE_GENERATOR, msb_kw, 0.0).sum(axis=1)
    return utility, tx_loss, gen_bus


def generators(topo: Topology, k: PlantConstants, faults: list[FaultRecord], t: Array,
               gen_bus: Array) -> tuple[Array, Array, Array]:
    """(T, G) running flag, power and seconds since start: all sets start on any utility loss."""
    lost = active_mask(faults, topo, "utility_loss", topo.side_utility, t)
    since = since_for(faults, topo, "utility_loss", topo.side_utility, t)
    run: BoolArray = np.asarray(lost.any(axis=1), dtype=bool)
    elapsed = np.where(run, np.max(np.where(lost, since, -np.inf), axis=1, initial=-np.inf), 0.0)
    n = len(topo.gen_ids)
    running = np.repeat(run[:, None], n, axis=1).astype(float)
    share = topo.gen_cap_kw / max(topo.gen_cap_kw.sum(), 1.0)
    power = np.where(running > 0, gen_bus[:, None] * share, 0.0)
    return running, power, np.repeat(elapsed[:, None], n, axis=1)
