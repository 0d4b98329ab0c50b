"""Equipment faults of the plant model: records with start and clear times, as time masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dcim.simulators.physics import ramp
from dcim.simulators.plant_topology import Topology

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

FAULT_KINDS = (
    "ups_module_trip", "ups_bypass", "ups_battery", "crah_trip", "chiller_trip", "pump_failure",
    "utility_loss", "pdu_breaker_open",
)


@dataclass(slots=True)
class FaultRecord:
    """One equipment fault: active from since_s until cleared_s (None while still active)."""

    kind: str
    target: str
    since_s: float
    cleared_s: float | None = None


def valid_targets(topo: Topology, kind: str) -> list[str]:
    """The component ids a fault kind may target."""
    table = {
        "ups_module_trip": topo.module_ids,
        "ups_bypass": topo.module_ids + topo.system_ids,
        "ups_battery": topo.module_ids + topo.system_ids,
        "crah_trip": topo.crah_ids,
        "chiller_trip": topo.chiller_ids,
        "pump_failure": topo.chw_pump_ids + topo.cw_pump_ids,
        "utility_loss": topo.side_utility + ["all"],
        "pdu_breaker_open": topo.pdu_ids,
    }
    if kind not in table:
        raise ValueError(f"unknown fault kind {kind!r}, expected one of {', '.join(FAULT_KINDS)}")
    return table[kind]


def expand_target(topo: Topology, kind: str, target: str) -> list[str]:
    """The individual components a fault acts on (a UPS system means all its modules)."""
    if kind in ("ups_bypass", "ups_battery") and target in topo.system_ids:
        s = topo.system_ids.index(target)
        return [m for m, sys in zip(topo.module_ids, topo.module_system) if sys == s]
    if kind == "utility_loss" and target == "all":
        return list(topo.side_utility)
    return [target]


def active_mask(records: list[FaultRecord], topo: Topology, kind: str, ids: list[str],
                t: Array) -> BoolArray:
    """(T, n) True where a fault of this kind is active on ids[j] at t[i]."""
    return ~np.isnan(since_for(records, topo, kind, ids, t))


def since_for(records: list[FaultRecord], topo: Topology, kind: str, ids: list[str],
              t: Array) -> Array:
    """(T, n) seconds since the active fault on each id started (NaN where none is active)."""
    out = np.full((len(t), len(ids)), np.nan)
    for rec in records:
        if rec.kind != kind:
            continue
        end = np.inf if rec.cleared_s is None else rec.cleared_s
        on = (t >= rec.since_s) & (t < end)
        for target in expand_target(topo, kind, rec.target):
            if target in ids:
                j = ids.index(target)
                out[on, j] = t[on] - rec.since_s
    return out


def thermal_loss(records: list[FaultRecord], topo: Topology, kind: str, ids: list[str],
                 t: Array, tau_s: float) -> Array:
    """(T, n) 0..1 lagged loss: rises with tau after a fault starts, decays after it clears."""
    out = np.zeros((len(t), len(ids)))
    for rec in records:
        if rec.kind != kind or rec.target not in ids:
            continue
        end = np.inf if rec.cleared_s is None else rec.cleared_s
        up = ramp(np.minimum(t, end) - rec.since_s, tau_s)
        down = np.exp(-np.maximum(t - end, 0.0) / tau_s) if np.isfinite(end) else 1.0
        j = ids.index(rec.target)
        out[:, j] = np.maximum(out[:, j], up * down)
    return out
