"""Equipment curves and load shapes of the plant model: pure functions over numpy arrays.

Every constant is a field of `PlantConstants` so a site can be tuned without code changes;
docs/plant-model.md gives the source or assumption behind each default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter  # scipy comes with scikit-learn, a dcim dependency

Array = NDArray[np.float64]

CP_WATER_KJ_KG_K = 4.186
RHO_AIR_KG_M3 = 1.2
CP_AIR_KJ_KG_K = 1.006
DIESEL_KWH_PER_L = 9.9  # EN 50600-4 factsheet (domain.md)


@dataclass(frozen=True)
class PlantConstants:
    """Tunable physics constants of the plant model (defaults: a Hong Kong Tier III+ site)."""

    # IT load
    rack_base_min: float = 0.45
    rack_base_max: float = 0.75
    business_hump: float = 0.07  # extra load in business hours (fraction)
    night_level: float = 0.98
    weekend_level: float = 0.95
    weekend_hump_share: float = 0.3
    rack_noise_sigma: float = 0.03
    rack_noise_tau_s: float = 900.0
    feed_imbalance_sigma: float = 0.02
    # power chain
    pdu_no_load: float = 0.003  # fraction of rating
    pdu_load_loss: float = 0.012  # fraction of rating at full load (x^2)
    ups_a: float = 0.0082  # UPS module loss = rating * (a + b x + c x^2)
    ups_b: float = 0.0174
    ups_c: float = 0.0091
    ups_bypass_loss: float = 0.005
    battery_minutes_full_load: float = 10.0
    battery_recharge_pct_per_h: float = 20.0
    tx_no_load: float = 0.002
    tx_load_loss: float = 0.010
    aux_night_level: float = 0.7
    lighting_w_m2: float = 8.0
    # cooling
    chw_supply_winter_c: float = 12.0
    chw_supply_summer_c: float = 10.0
    chw_delta_t_k: float = 6.0
    chiller_margin: float = 0.10
    chiller_start_delay_s: float = 180.0
    chw_tau_s: float = 120.0
    cop_at_zero_lift: float = 9.2  # COP = cop0 - slope * lift, lift = T_cond - T_evap
    cop_per_k_lift: float = 0.185
    cop_part_load_penalty: float = 0.4  # COP x (1 - p (PLR - 0.8)^2)
    cw_min_supply_c: float = 16.0
    tower_approach_k: float = 3.5
    cw_range_k: float = 5.0
    pump_min_speed: float = 0.3
    tower_min_speed: float = 0.2
    makeup_l_per_kwh: float = 1.8
    fresh_air_m3_s: float = 1.5
    crah_delta_t_k: float = 11.0
    crah_min_speed: float = 0.3
    crah_coil_approach_k: float = 7.0
    supply_air_setpoint_c: float = 19.0
    # rack inlet
    margin_rise_k: float = 6.0  # x (hall heat / running CRAH capacity)^2
    local_loss_rise_k: float = 4.0  # x share of a rack's air from tripped CRAH
    crah_influence_m: float = 4.0
    crah_tau_s: float = 120.0
    position_rise_k: tuple[float, float, float] = (0.0, 0.8, 2.0)  # bottom, middle, top
    end_of_row_rise_k: tuple[float, float, float] = (0.5, 1.0, 1.5)
    # generators
    generator_start_delay_s: float = 10.0
    fuel_tank_l: float = 5000.0
    fuel_l_per_h_idle_frac: float = 0.03  # L/h per kW of rating at no load
    fuel_l_per_kwh: float = 0.24


def local_hour_and_weekday(local_s: Array) -> tuple[Array, Array]:
    """Hour of day and weekday (0 Monday .. 6 Sunday) of local times."""
    days = np.floor(local_s / 86400.0)
    return (local_s - days * 86400.0) / 3600.0, np.mod(days + 3, 7)  # 1970-01-01 was a Thursday


def business_hours(hour: Array) -> Array:
    """Smooth 0..1 window that is 1 from about 09:00 to 19:00."""
    return 1.0 / (1.0 + np.exp(-(hour - 8.5) / 0.8)) / (1.0 + np.exp((hour - 19.0) / 1.2))


def it_load_shape(local_s: Array, k: PlantConstants) -> Array:
    """Daily x weekly multiplier of the IT load (about 0.93 .. 1.05)."""
    hour, weekday = local_hour_and_weekday(local_s)
    weekend = weekday >= 5
    hump = k.business_hump * business_hours(hour) * np.where(weekend, k.weekend_hump_share, 1.0)
    return np.where(weekend, k.weekend_level, 1.0) * (k.night_level + hump)


def aux_shape(local_s: Array, k: PlantConstants) -> Array:
    """Auxiliary (lighting, offices, security) load as a fraction of its design load."""
    hour, weekday = local_hour_and_weekday(local_s)
    busy = business_hours(hour) * np.where(weekday >= 5, 0.3, 1.0)
    return k.aux_night_level + (1.0 - k.aux_night_level) * busy


def ups_loss_kw(out_kw: Array, rating_kw: Array, k: PlantConstants) -> Array:
    """Online double-conversion UPS module losses: eta(x) = x / (x + a + b x + c x^2)."""
    x = out_kw / rating_kw
    return rating_kw * (k.ups_a + k.ups_b * x + k.ups_c * x * x)


def quadratic_loss_kw(load_kw: Array, rating_kw: Array, no_load: float, load_loss: float) -> Array:
    """Transformer-style losses: no-load (iron) plus load-squared (copper)."""
    x = load_kw / rating_kw
    return rating_kw * (no_load + load_loss * x * x)


def chiller_cop(chw_supply_c: Array, cw_supply_c: Array, cw_return_c: Array, plr: Array,
                k: PlantConstants) -> Array:
    """Chiller COP: linear in lift (condensing - evaporating temperature), part-load penalty."""
    lift = (cw_return_c + 1.5) - (chw_supply_c - 1.5)
    cop = k.cop_at_zero_lift - k.cop_per_k_lift * lift
    return np.maximum(cop, 2.0) * (1.0 - k.cop_part_load_penalty * (plr - 0.8) ** 2)


def affinity_power_kw(flow_fraction: Array, rated_kw: Array | float, min_speed: float) -> Array:
    """Variable-speed fan or pump: speed follows flow (not below min_speed), power ~ speed^3."""
    speed = np.clip(flow_fraction, min_speed, 1.0)
    return rated_kw * speed ** 3


def tower_speed(load_fraction: Array, wet_bulb_c: Array, k: PlantConstants) -> Array:
    """Tower fan speed holding the approach: more air per kW as the wet bulb rises."""
    need = load_fraction * (0.45 + 0.55 * np.clip((wet_bulb_c - 10.0) / 17.0, 0.0, 1.0))
    return np.clip(need, k.tower_min_speed, 1.0)


def ramp(elapsed_s: Array, tau_s: float) -> Array:
    """First-order response 0 -> 1 to a step at elapsed 0 (0 before it)."""
    return np.where(elapsed_s > 0, 1.0 - np.exp(-np.maximum(elapsed_s, 0.0) / tau_s), 0.0)


def ar1(state: Array, eps: Array, dt: Array, tau_s: float, sigma: float) -> Array:
    """AR(1) (discretised Ornstein-Uhlenbeck) rows x_k = phi x_{k-1} + sqrt(1-phi^2) sigma eps_k.

    eps has shape (T, n), dt (T,); state (n,) is the value before the first row. Rows with
    dt = 0 keep the previous value. Same numbers whether called once or row by row.
    """
    phi = np.exp(-dt / tau_s)
    drive = np.sqrt(1.0 - phi * phi)[:, None] * sigma * eps
    out = np.empty_like(eps)
    if len(dt) and np.all(phi[1:] == phi[0]):
        y, _ = lfilter([1.0], [1.0, -phi[0]], drive, axis=0, zi=(phi[0] * state)[None, :])
        out[:] = y
        return out
    prev = state
    for i in range(len(dt)):
        prev = phi[i] * prev + drive[i]
        out[i] = prev
    return out
