"""Layer 2: robust statistics per series — daily-profile baseline, rolling median, robust z.

residual = x - profile(time of day) - trailing median of (x - profile) over `window_s`;
z = residual / (1.4826 MAD) with the MAD learned from history. Runs of |z| > z_on are
spikes (short) or level shifts (long). The window is trailing, so scoring is causal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from dcim.analytics.anomaly_base import (
    NS, Anomaly, FloatArray, IntArray, clock, episodes, ffill, hysteresis, label,
    ratio_confidence, severity_for, window_samples,
)
from dcim.storage.base import SeriesKey

MAD_TO_SIGMA = 1.4826
DAY_S = 86400


@dataclass(frozen=True, slots=True)
class RobustConfig:
    """Window, profile bins and thresholds of the robust layer."""

    window_s: float = 3600.0
    min_window_samples: int = 5  # a 1-sample window makes every residual 0 (hourly data)
    profile_bin_s: float = 1800.0
    utc_offset_s: float = 8 * 3600.0  # Hong Kong; time-of-day bins are local
    z_on: float = 6.0
    z_off: float = 3.0
    min_sigma: float = 0.05  # floor of the learned scale (quantised or very quiet series)
    on_delay_s: float = 60.0
    spike_max_s: float = 600.0


@dataclass(slots=True)
class RobustBaseline:
    """What the layer learns per series: daily profile (per time-of-day bin) and residual scale."""

    profile: FloatArray
    sigma: float
    bin_s: float
    utc_offset_s: float

    def expected_profile(self, times_ns: IntArray) -> FloatArray:
        """Profile value at each time."""
        tod = ((times_ns // NS + int(self.utc_offset_s)) % DAY_S) // int(self.bin_s)
        return self.profile[tod.astype(np.int64)]


def trailing_median(values: FloatArray, w: int) -> FloatArray:
    """Median of the w samples ending at each index (NaNs forward-filled first)."""
    v = ffill(values)
    if w <= 1:
        return v
    return median_filter(v, size=w, mode="nearest", origin=(w - 1) // 2)


def residuals(times_ns: IntArray, values: FloatArray, base: RobustBaseline | None,
              cfg: RobustConfig) -> tuple[FloatArray, FloatArray]:
    """(residual, expected value) of each sample against profile + trailing level."""
    prof = base.expected_profile(times_ns) if base is not None else np.zeros_like(values)
    d = values - prof
    level = trailing_median(d, window_samples(times_ns, cfg.window_s, cfg.min_window_samples))
    return d - level, prof + level


def fit_robust(times_ns: IntArray, values: FloatArray,
               cfg: RobustConfig = RobustConfig()) -> RobustBaseline:
    """Learn the daily profile (median per bin, of the detrended series) and the residual scale."""
    n_bins = int(DAY_S // cfg.profile_bin_s)
    ok = np.isfinite(values)
    profile = np.zeros(n_bins)
    if ok.sum() > 0:
        days = window_samples(times_ns, DAY_S)
        slow = trailing_median(values, days) if ok.sum() > days else np.full_like(
            values, float(np.nanmedian(values)))
        tod = ((times_ns // NS + int(cfg.utc_offset_s)) % DAY_S) // int(cfg.profile_bin_s)
        d = values - slow
        for b in range(n_bins):
            sel = ok & (tod == b)
            if sel.any():
                profile[b] = float(np.median(d[sel]))
    base = RobustBaseline(profile, 1.0, cfg.profile_bin_s, cfg.utc_offset_s)
    r, _ = residuals(times_ns, values, base, cfg)
    r = r[np.isfinite(r)]
    mad = float(np.median(np.abs(r - np.median(r)))) if r.size else 1.0
    base.sigma = max(MAD_TO_SIGMA * mad, cfg.min_sigma)
    return base


def robust_z(times_ns: IntArray, values: FloatArray, base: RobustBaseline | None,
             cfg: RobustConfig = RobustConfig()) -> tuple[FloatArray, FloatArray]:
    """(robust z, expected value) per sample; without a baseline the batch's own MAD is used."""
    r, expected = residuals(times_ns, values, base, cfg)
    if base is not None:
        sigma = base.sigma
    else:
        fin = r[np.isfinite(r)]
        sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(fin))) if fin.size else 1.0,
                    cfg.min_sigma)
    return r / sigma, expected


def robust_anomalies(series: SeriesKey, times_ns: IntArray, values: FloatArray,
                     base: RobustBaseline | None, cfg: RobustConfig = RobustConfig(),
                     unit: str = "") -> list[Anomaly]:
    """Spikes and level shifts: runs of |robust z| above z_on (hysteresis down to z_off)."""
    z, expected = robust_z(times_ns, values, base, cfg)
    az = np.where(np.isfinite(z), np.abs(z), 0.0)
    state = hysteresis(az > cfg.z_on, az < cfg.z_off)
    out = []
    for a, b, k in episodes(times_ns, state, cfg.on_delay_s):
        i = a + int(np.argmax(az[a:b + 1]))
        dur_s = (times_ns[b] - times_ns[a]) / NS
        kind = "spike" if dur_s <= cfg.spike_max_s else "level_shift"
        score = float(z[i])
        out.append(Anomaly(
            series=series, layer="robust", kind=kind, since_ns=int(times_ns[a]),
            last_ns=int(times_ns[b]), raised_ns=int(times_ns[k]), value=float(values[i]),
            expected=float(expected[i]), score=score,
            severity=severity_for(abs(score), 8.0, 15.0, 1e9),
            confidence=ratio_confidence(abs(score) / cfg.z_on),
            message=f"{label(series)} {values[i]:.1f}{unit} vs expected {expected[i]:.1f}{unit} "
                    f"(robust z {score:+.1f}, {kind.replace('_', ' ')}) "
                    f"since {clock(int(times_ns[a]))}"))
    return out


__all__ = ["RobustBaseline", "RobustConfig", "fit_robust", "robust_anomalies", "robust_z",
           "trailing_median"]
