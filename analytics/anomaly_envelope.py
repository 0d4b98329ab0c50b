"""Layer 1: ASHRAE TC 9.9 envelopes for rack inlet air, and rate of change per hour.

Limits come from `EnvelopeConfig` (default class A1); alarms use an ISA-18.2 on-delay (60 s)
and a deadband (1 % of the allowable span) so a value dithering at a limit does not chatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, minimum_filter1d

from dcim.analytics.anomaly_base import (
    NS, Anomaly, FloatArray, IntArray, clock, episodes, hysteresis, label, window_samples,
)
from dcim.storage.base import SeriesKey

# (allowable low, allowable high, allowable max dew point, allowable max RH) per class
ASHRAE_CLASSES: dict[str, tuple[float, float, float, float]] = {
    "A1": (15.0, 32.0, 17.0, 80.0), "A2": (10.0, 35.0, 21.0, 80.0),
    "A3": (5.0, 40.0, 24.0, 85.0), "A4": (5.0, 45.0, 24.0, 90.0),
    "H1": (15.0, 25.0, 17.0, 80.0),
}


@dataclass(frozen=True, slots=True)
class EnvelopeConfig:
    """Thermal envelope, alarm on-delay/deadband, and rate-of-change limits."""

    ashrae_class: str = "A1"
    recommended_c: tuple[float, float] = (18.0, 27.0)
    dew_point_recommended_c: tuple[float, float] = (-9.0, 15.0)
    rh_recommended_max_pct: float = 70.0
    dew_point_allowable_min_c: float = -12.0
    rh_allowable_min_pct: float = 8.0
    on_delay_s: float = 60.0
    deadband_frac: float = 0.01
    rate_limit_c_per_h: float = 20.0  # 5.0 where tape drives are present
    rate_window_s: float = 3600.0

    @property
    def allowable_c(self) -> tuple[float, float]:
        """Allowable dry-bulb range of the class."""
        lo, hi, _, _ = ASHRAE_CLASSES[self.ashrae_class]
        if self.ashrae_class == "H1":
            return lo, hi
        return lo, hi

    @property
    def deadband_c(self) -> float:
        """Deadband in K: a fraction of the allowable span."""
        lo, hi = self.allowable_c
        return self.deadband_frac * (hi - lo)


def dew_point_c(temp_c: FloatArray, rh_pct: FloatArray) -> FloatArray:
    """Dew point (Magnus, Alduchov-Eskridge constants) from dry bulb and RH."""
    a, b = 17.625, 243.04
    gamma = np.log(np.clip(rh_pct, 0.1, 100.0) / 100.0) + a * temp_c / (b + temp_c)
    return b * gamma / (a - gamma)


def limit_alarms(series: SeriesKey, times_ns: IntArray, values: FloatArray, limit: float,
                 above: bool, deadband: float, on_delay_s: float, kind: str, what: str,
                 severity: str, unit: str = "degC") -> list[Anomaly]:
    """Alarm episodes of values beyond one limit, with deadband hysteresis and on-delay."""
    v = np.where(np.isfinite(values), values, limit - deadband * 2 if above else limit + deadband * 2)
    if above:
        state = hysteresis(v > limit, v < limit - deadband)
    else:
        state = hysteresis(v < limit, v > limit + deadband)
    out = []
    for a, b, k in episodes(times_ns, state, on_delay_s):
        seg = values[a:b + 1]
        worst = float(np.nanmax(seg) if above else np.nanmin(seg))
        word = "above" if above else "below"
        out.append(Anomaly(
            series=series, layer="envelope", kind=kind, since_ns=int(times_ns[a]),
            last_ns=int(times_ns[b]), raised_ns=int(times_ns[k]), value=worst, expected=limit,
            score=abs(worst - limit), severity=severity,
            message=f"{label(series)} {worst:.1f} {unit} {word} {what} {limit:g} {unit} "
                    f"since {clock(int(times_ns[a]))}"))
    return out


def temperature_envelope(series: SeriesKey, times_ns: IntArray, values: FloatArray,
                         cfg: EnvelopeConfig = EnvelopeConfig()) -> list[Anomaly]:
    """Inlet dry-bulb beyond the recommended (medium) or allowable (high) range."""
    db, d = cfg.deadband_c, cfg.on_delay_s
    (r_lo, r_hi), (a_lo, a_hi) = cfg.recommended_c, cfg.allowable_c
    cls = cfg.ashrae_class
    return (limit_alarms(series, times_ns, values, r_hi, True, db, d, "above_recommended",
                         "ASHRAE recommended", "medium")
            + limit_alarms(series, times_ns, values, r_lo, False, db, d, "below_recommended",
                           "ASHRAE recommended", "low")
            + limit_alarms(series, times_ns, values, a_hi, True, db, d, "above_allowable",
                           f"ASHRAE {cls} allowable", "critical")
            + limit_alarms(series, times_ns, values, a_lo, False, db, d, "below_allowable",
                           f"ASHRAE {cls} allowable", "high"))


def humidity_envelope(series: SeriesKey, times_ns: IntArray, temp_c: FloatArray,
                      rh_pct: FloatArray, cfg: EnvelopeConfig = EnvelopeConfig()) -> list[Anomaly]:
    """Inlet RH and dew point (from temp + RH) beyond the recommended or allowable range."""
    _, _, dp_max, rh_max = ASHRAE_CLASSES[cfg.ashrae_class]
    dp = dew_point_c(temp_c, rh_pct)
    d = cfg.on_delay_s
    dp_lo, dp_hi = cfg.dew_point_recommended_c
    return (limit_alarms(series, times_ns, dp, dp_hi, True, 0.3, d, "dew_point_above_recommended",
                         "recommended dew point", "low")
            + limit_alarms(series, times_ns, dp, dp_max, True, 0.3, d, "dew_point_above_allowable",
                           "allowable dew point", "high")
            + limit_alarms(series, times_ns, dp, dp_lo, False, 0.3, d, "dew_point_below_recommended",
                           "recommended dew point", "low")
            + limit_alarms(series, times_ns, rh_pct, cfg.rh_recommended_max_pct, True, 1.0, d,
                           "rh_above_recommended", "recommended RH", "low", "%")
            + limit_alarms(series, times_ns, rh_pct, rh_max, True, 1.0, d, "rh_above_allowable",
                           "allowable RH", "high", "%")
            + limit_alarms(series, times_ns, rh_pct, cfg.rh_allowable_min_pct, False, 1.0, d,
                           "rh_below_allowable", "allowable RH", "high", "%"))


def hourly_change(times_ns: IntArray, values: FloatArray, window_s: float) -> FloatArray:
    """Largest rise (+) or fall (-) ending at each sample within the trailing window."""
    w = window_samples(times_ns, window_s) + 1
    v = values
    lo = minimum_filter1d(np.where(np.isfinite(v), v, np.inf), w, mode="nearest",
                          origin=(w - 1) // 2)
    hi = maximum_filter1d(np.where(np.isfinite(v), v, -np.inf), w, mode="nearest",
                          origin=(w - 1) // 2)
    rise, fall = v - lo, hi - v
    return np.where(rise >= fall, rise, -fall)


def rate_of_change(series: SeriesKey, times_ns: IntArray, values: FloatArray,
                   cfg: EnvelopeConfig = EnvelopeConfig()) -> list[Anomaly]:
    """Change within any trailing window (1 h) beyond the ASHRAE rate limit."""
    change = hourly_change(times_ns, values, cfg.rate_window_s)
    change = np.where(np.isfinite(change), change, 0.0)
    limit = cfg.rate_limit_c_per_h * cfg.rate_window_s / 3600.0
    db = cfg.deadband_c
    state = hysteresis(np.abs(change) > limit, np.abs(change) < limit - db)
    out = []
    for a, b, k in episodes(times_ns, state, cfg.on_delay_s):
        seg = change[a:b + 1]
        worst = float(seg[np.argmax(np.abs(seg))])
        out.append(Anomaly(
            series=series, layer="rate", kind="rate_of_change", since_ns=int(times_ns[a]),
            last_ns=int(times_ns[b]), raised_ns=int(times_ns[k]), value=worst, expected=limit,
            score=abs(worst) / limit, severity="high",
            message=f"{label(series)} changed {worst:+.1f} K within "
                    f"{cfg.rate_window_s / 3600:g} h, limit {limit:g} K, "
                    f"since {clock(int(times_ns[a]))}"))
    return out


__all__ = ["ASHRAE_CLASSES", "EnvelopeConfig", "dew_point_c", "hourly_change",
           "humidity_envelope", "limit_alarms", "rate_of_change", "temperature_envelope", "NS"]
