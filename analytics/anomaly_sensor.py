"""Layer 4: sensor faults — dropout, stuck/flatline, drift against neighbours, noise bursts.

Neighbours of a rack inlet sensor are the rack's other positions and the same position in the
adjacent racks of the row. Drift is the sensor's residual to the neighbours' median moving away
from its learned offset with a consistent slope; a common-mode rise (all sensors warming
together, e.g. after a CRAH trip) leaves the residual flat and is not drift.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter, minimum_filter1d, uniform_filter1d

from dcim.analytics.anomaly_base import (
    NS, Anomaly, FloatArray, IntArray, clock, episodes, ffill, label, ratio_confidence,
    window_samples,
)
from dcim.storage.base import SeriesKey

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """Windows and thresholds of the sensor-fault checks."""

    resolution: float = 0.1  # smallest step the sensor reports (0.1 K on the rack monitors)
    stuck_window_s: float = 1200.0
    dropout_min_s: float = 180.0
    drift_min_k: float = 1.0
    drift_sigmas: float = 6.0
    drift_slope_k_per_h: float = 0.3
    drift_slope_window_s: float = 3600.0
    drift_on_delay_s: float = 600.0
    noise_window_s: float = 600.0
    noise_ratio: float = 4.0
    noise_min: float = 0.3  # median |first difference| a burst must exceed
    # windows are in time; on coarse data they still span this many samples, so two equal
    # hourly readings are not a flatline and one jump is not a noise burst
    min_window_samples: int = 5


@dataclass(slots=True)
class SensorBaseline:
    """Learned per series: offset and spread of the residual to neighbours, typical |diff|."""

    offset: float
    sigma: float
    diff_median: float


def rolling_range(values: FloatArray, w: int) -> FloatArray:
    """max - min over the w samples ending at each index (NaNs forward-filled)."""
    v = ffill(values)
    o = (w - 1) // 2
    return (maximum_filter1d(v, w, mode="nearest", origin=o)
            - minimum_filter1d(v, w, mode="nearest", origin=o))


def neighbour_residual(values: FloatArray, neighbours: FloatArray | None) -> FloatArray | None:
    """values - median of the neighbours (rows: neighbours, cols: time), or None."""
    if neighbours is None or neighbours.size == 0:
        return None
    if neighbours.shape[0] == 1:
        return values - neighbours[0]
    with warnings.catch_warnings():  # minutes where every neighbour is missing give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(neighbours, axis=0)
    return values - med


def fit_sensor(values: FloatArray, neighbours: FloatArray | None) -> SensorBaseline:
    """Learn the residual offset/spread and the typical |first difference| of a healthy series."""
    d = np.abs(np.diff(values))
    d = d[np.isfinite(d)]
    diff_med = float(np.median(d)) if d.size else 0.0
    r = neighbour_residual(values, neighbours)
    if r is None or not np.isfinite(r).any():
        return SensorBaseline(0.0, 0.0, diff_med)
    off = float(np.nanmedian(r))
    sigma = MAD_TO_SIGMA * float(np.nanmedian(np.abs(r - off)))
    return SensorBaseline(off, sigma, diff_med)


def _make(series: SeriesKey, kind: str, t: IntArray, a: int, b: int, k: int, value: float,
          expected: float | tuple[float, float] | None, score: float, severity: str,
          text: str, confidence: float = 1.0) -> Anomaly:
    """An Anomaly of the sensor layer with its sentence."""
    return Anomaly(series=series, layer="sensor", kind=kind, since_ns=int(t[a]),
                   last_ns=int(t[b]), raised_ns=int(t[k]), value=value, expected=expected,
                   score=score, severity=severity,
                   message=f"{label(series)} {text} since {clock(int(t[a]))}",
                   confidence=confidence)


def dropouts(series: SeriesKey, t: IntArray, good: FloatArray,
             cfg: SensorConfig = SensorConfig()) -> list[Anomaly]:
    """Runs of missing or BAD samples lasting at least dropout_min_s."""
    out = []
    for a, b, k in episodes(t, ~np.isfinite(good), cfg.dropout_min_s):
        n = b - a + 1
        out.append(_make(series, "dropout", t, a, b, k, float("nan"), None, float(n), "medium",
                         f"no good value for {n} samples (sensor or link dropout)"))
    return out


def stuck(series: SeriesKey, t: IntArray, values: FloatArray, neighbours: FloatArray | None,
          cfg: SensorConfig = SensorConfig()) -> list[Anomaly]:
    """No change beyond half the resolution for stuck_window_s while the neighbours move."""
    w = window_samples(t, cfg.stuck_window_s, cfg.min_window_samples) + 1
    flat = rolling_range(values, w) <= cfg.resolution * 0.5
    flat &= np.isfinite(values)
    flat[:w - 1] = False  # the window is not full yet
    moving = np.ones_like(flat)
    if neighbours is not None and neighbours.size:
        ranges = np.stack([rolling_range(n, w) for n in neighbours])
        with warnings.catch_warnings():  # minutes where no neighbour has a value: not moving
            warnings.simplefilter("ignore", RuntimeWarning)
            moving = np.nanmedian(ranges, axis=0) >= 2 * cfg.resolution
    mask = flat & moving
    # the flat window started w-1 samples before the first flagged sample
    out = []
    for a, b, k in episodes(t, mask, 0.0, merge_gap_s=cfg.stuck_window_s):
        start = max(0, a - (w - 1))
        kind = "stuck" if neighbours is not None else "flatline"
        flat_s = (t[b] - t[start]) / NS
        out.append(_make(series, kind, t, start, b, a, float(values[a]), None,
                         flat_s / 60.0, "medium",
                         f"stuck at {values[a]:.2f} for {flat_s / 60:.0f} min "
                         f"while its neighbours move",
                         ratio_confidence(flat_s / max(cfg.stuck_window_s, 1.0))))
    return out


def trailing_slope_per_h(t: IntArray, values: FloatArray, w: int) -> FloatArray:
    """Least-squares slope (per hour) over the w samples ending at each index."""
    x = (t - t[0]) / NS / 3600.0
    y = ffill(values)
    o = (w - 1) // 2
    mx = uniform_filter1d(x, w, mode="nearest", origin=o)
    my = uniform_filter1d(y, w, mode="nearest", origin=o)
    mxy = uniform_filter1d(x * y, w, mode="nearest", origin=o)
    mxx = uniform_filter1d(x * x, w, mode="nearest", origin=o)
    var = mxx - mx * mx
    return np.where(var > 1e-12, (mxy - mx * my) / np.where(var > 1e-12, var, 1.0), 0.0)


def drift(series: SeriesKey, t: IntArray, values: FloatArray, neighbours: FloatArray | None,
          base: SensorBaseline | None, cfg: SensorConfig = SensorConfig()) -> list[Anomaly]:
    """Residual to the neighbours' median away from its offset and still trending away."""
    r = neighbour_residual(values, neighbours)
    if r is None:
        return []
    n0 = window_samples(t, 3600.0)
    offset = base.offset if base is not None else float(np.nanmedian(r[:n0]))
    sigma = base.sigma if base is not None else 0.0
    dev = ffill(r) - offset
    # a short median keeps single spikes or noise out of the residual
    dev_s = median_filter(dev, size=5, mode="nearest", origin=2)
    limit = max(cfg.drift_min_k, cfg.drift_sigmas * sigma)
    slope = trailing_slope_per_h(t, dev_s, window_samples(t, cfg.drift_slope_window_s,
                                                          cfg.min_window_samples))
    mask = (np.abs(dev_s) > limit) & (np.sign(slope) == np.sign(dev_s)) & (
        np.abs(slope) >= cfg.drift_slope_k_per_h)
    out = []
    for a, b, k in episodes(t, mask, cfg.drift_on_delay_s, merge_gap_s=cfg.drift_on_delay_s):
        i = a + int(np.argmax(np.abs(dev_s[a:b + 1])))
        exp = float(values[i] - dev_s[i])
        out.append(_make(series, "drift", t, a, b, k, float(values[i]), exp,
                         float(dev_s[i]), "medium",
                         f"{values[i]:.1f} drifting {dev_s[i]:+.1f} K from its neighbours "
                         f"(expected {exp:.1f}, {slope[i]:+.1f} K/h)",
                         ratio_confidence(abs(float(dev_s[i])) / limit)))
    return out


def noise_bursts(series: SeriesKey, t: IntArray, values: FloatArray,
                 base: SensorBaseline | None, cfg: SensorConfig = SensorConfig()) -> list[Anomaly]:
    """Rolling median |first difference| jumps to noise_ratio times its learned level."""
    d = np.abs(np.diff(ffill(values), prepend=values[0]))
    w = window_samples(t, cfg.noise_window_s, cfg.min_window_samples)
    level = median_filter(d, size=w, mode="nearest", origin=(w - 1) // 2)
    ref = base.diff_median if base is not None else float(np.median(d))
    thresh = max(cfg.noise_ratio * ref, cfg.noise_min)
    out = []
    for a, b, k in episodes(t, level > thresh, 0.0, merge_gap_s=cfg.noise_window_s):
        start = max(0, a - w // 2)
        peak = float(level[a:b + 1].max())
        out.append(_make(series, "noise", t, start, b, a, peak, ref, peak / max(ref, 1e-9), "low",
                         f"noisy: median step {peak:.2f} vs {ref:.2f} normally",
                         ratio_confidence(peak / thresh)))
    return out


__all__ = ["SensorBaseline", "SensorConfig", "dropouts", "drift", "fit_sensor", "noise_bursts",
           "rolling_range", "stuck", "trailing_slope_per_h"]
