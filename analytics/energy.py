"""Energy from meter counters: deltas over a period with resets, rollovers, gaps and coverage.

Pure functions over numpy arrays. A counter (kWh, m3, L) only grows; the energy of a period is
the counter's increase across it, so a gap in the samples loses no energy (the delta across the
gap is still right), only the certainty of how it splits over the period's boundaries. Gaps are
reported as lost *coverage* instead. The rules are documented in docs/pue.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dcim.site.model import SiteDevice
from dcim.config.site import ModbusPoint, ModbusProfile
from dcim.storage.base import Quality

Array = NDArray[np.float64]

DEFAULT_MAX_GAP_S = 600.0
# Decreases up to this (absolute kWh, or relative to the reading) are rounding jitter.
JITTER_KWH = 1.0
JITTER_RELATIVE = 1e-5
# Without a rated maximum, an increment is plausible up to this multiple of the meter's own
# median rate over the window (a rack or a feed rarely draws 10x its typical power).
PLAUSIBLE_RATE_FACTOR = 10.0
# Bits of the unsigned Modbus types whose raw counter wraps to 0 (signed and float types: None).
UNSIGNED_BITS: dict[str, int] = {"uint16": 16, "uint32": 32, "acc32": 32, "uint64": 64}
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class EnergyDelta:
    """A counter's increase over a period and how far it can be trusted."""

    kwh: float  # increase of the counter (kWh, or the counter's own unit: m3, L)
    coverage: float  # fraction of the period covered by good samples at most max_gap apart
    resets: int  # decreases taken as a meter replaced or zeroed
    rollovers: int  # decreases taken as the counter wrapping at its modulus
    gaps: int  # uncovered stretches in the period (gaps, missing start or end)
    rejected: int = 0  # samples in the period dropped (bad quality, NaN, negative, spikes)
    samples: int = 0  # good samples used


def _valid(t: NDArray[np.int64], v: Array, quality: ArrayLike | None) -> NDArray[np.bool_]:
    """Mask of plausible samples: finite, not negative, GOOD quality when given."""
    ok = np.isfinite(v) & (v >= 0)
    if quality is not None:
        q = np.asarray(quality)
        if q.shape != v.shape:
            raise ValueError(f"quality has shape {q.shape}, values {v.shape}")
        ok &= q == int(Quality.GOOD)
    return ok


def _sorted_unique(t: NDArray[np.int64], v: Array) -> tuple[NDArray[np.int64], Array]:
    """Samples in time order, one per time (the last written wins)."""
    if len(t) > 1 and not np.all(np.diff(t) > 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        last = np.append(t[1:] != t[:-1], True)
        t, v = t[last], v[last]
    return t, v


def _drop_spikes(t: NDArray[np.int64], v: Array, bound_kw: float) -> NDArray[np.bool_]:
    """Mask of isolated glitches: a jump above the rate bound that falls back at once, or a dip
    below the previous reading that the next reading undoes."""
    keep = np.ones(len(v), dtype=bool)
    if len(v) < 3:
        return keep
    prev, here, after = v[:-2], v[1:-1], v[2:]
    dip = (here < prev) & (after >= prev)
    spike = np.zeros_like(dip)
    if np.isfinite(bound_kw):
        dt_h = np.diff(t[:-1]) / (3600.0 * NS_PER_S)
        spike = (here - prev > bound_kw * dt_h) & (after < here)
    keep[1:-1] = ~(dip | spike)
    return keep


def _typical_kw(inc: Array, dt_h: Array) -> float:
    """Median rate of the rising steps (0 when the counter never rose)."""
    rising = (inc > 0) & (dt_h > 0)
    return float(np.median(inc[rising] / dt_h[rising])) if rising.any() else 0.0


def _hold_through_jitter(v: np.ndarray) -> np.ndarray:
    """Hold a counter at its running maximum through small step-backs (rounding jitter).

    A counter read back at a coarser resolution, or through two paths, may step back by a
    rounding unit: that is not a reset. Between real falls the counter is replaced by its
    running maximum, so the next rise is measured from the held reading.
    """
    if len(v) < 2:
        return v
    step = np.diff(v)
    tolerance = np.maximum(np.abs(v[:-1]) * JITTER_RELATIVE, JITTER_KWH)
    big_fall = step < -tolerance
    segment = np.concatenate([[0], np.cumsum(big_fall)])
    lift = (float(np.max(v) - np.min(v)) + 1.0) * segment
    return np.maximum.accumulate(v + lift) - lift


def energy_delta(
    times_ns: ArrayLike,
    kwh: ArrayLike,
    *,
    start_ns: int,
    end_ns: int,
    rollover_kwh: float | None = None,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    quality: ArrayLike | None = None,
    max_kw: float | None = None,
) -> EnergyDelta:
    """Increase of a counter over [start_ns, end_ns], with its coverage, resets, rollovers, gaps."""
    if end_ns <= start_ns:
        raise ValueError(f"empty period: start {start_ns} >= end {end_ns}")
    t_all = np.asarray(times_ns, dtype=np.int64)
    v_all = np.asarray(kwh, dtype=np.float64)
    if t_all.shape != v_all.shape or t_all.ndim != 1:
        raise ValueError(f"times {t_all.shape} and values {v_all.shape} must be equal 1-d arrays")
    ok = _valid(t_all, v_all, quality)
    in_period = (t_all >= start_ns) & (t_all <= end_ns)
    rejected = int((in_period & ~ok).sum())
    t, v = _sorted_unique(t_all[ok], v_all[ok])
    # the window: the last sample at or before start to the first at or after end
    i0 = max(int(np.searchsorted(t, start_ns, "right")) - 1, 0)
    i1 = min(int(np.searchsorted(t, end_ns, "left")), len(t) - 1)
    t, v = t[i0:i1 + 1], v[i0:i1 + 1]
    if len(t) < 2:
        return EnergyDelta(0.0, 0.0, 0, 0, 1, rejected, len(t))
    dt_h = np.diff(t) / (3600.0 * NS_PER_S)
    typical = _typical_kw(np.diff(v), dt_h)
    rate_bound = max_kw if max_kw is not None else (
        PLAUSIBLE_RATE_FACTOR * typical if typical > 0 else np.inf)
    keep = _drop_spikes(t, v, rate_bound)
    rejected += int((~keep).sum())
    t, v = t[keep], v[keep]
    dt_h = np.diff(t) / (3600.0 * NS_PER_S)
    v = _hold_through_jitter(v)
    inc = np.diff(v)
    bound = rate_bound * dt_h
    falls = inc < 0
    rolled = np.zeros_like(falls)
    if rollover_kwh is not None:
        wrapped = inc + rollover_kwh
        rolled = falls & (wrapped >= 0) & (wrapped <= np.minimum(bound, rollover_kwh / 2))
        inc = np.where(rolled, wrapped, inc)
    # a rise beyond the rate bound that stays: a meter replaced by one with a higher reading
    jump = ~falls & (inc > bound)
    reset = (falls & ~rolled) | jump
    # a zeroed meter counted from 0 since the reset: the new value is the step's energy when it
    # is plausible; otherwise (a replacement with its own reading) the step's energy is unknown
    believable = falls & ~rolled & (v[1:] <= bound)
    unknown = reset & ~believable
    inc = np.where(believable, v[1:], np.where(unknown, 0.0, inc))
    cum = np.concatenate([[0.0], np.cumsum(inc)])
    x = (t - start_ns) / NS_PER_S  # seconds from the period's start, small enough for float64
    period_s = (end_ns - start_ns) / NS_PER_S
    # linear interpolation at the boundaries; clamped (no extrapolation) outside the samples
    energy = float(np.interp(period_s, x, cum) - np.interp(0.0, x, cum))
    covered = (np.diff(x) <= max_gap_s) & ~unknown
    overlap = np.clip(np.minimum(x[1:], period_s) - np.maximum(x[:-1], 0.0), 0.0, None)
    coverage = float(overlap[covered].sum() / period_s)
    gaps = int(((overlap > 0) & ~covered).sum()) + int(x[0] > 0) + int(x[-1] < period_s)
    return EnergyDelta(energy, min(coverage, 1.0), int(reset.sum()), int(rolled.sum()), gaps,
                       rejected, len(t))


def rollover_for(device: SiteDevice, point_name: str, *, sunssf: int | None = None) -> float | None:
    """Modulus (engineering units) at which a Modbus counter point wraps; None if it does not."""
    if not isinstance(device.profile, ModbusProfile):
        return None  # OPC UA values are doubles: no wrap
    point = next((p for p in device.profile.points if p.name == point_name), None)
    if point is None:
        raise KeyError(f"device {device.id} has no point {point_name!r}")
    return modbus_rollover(point, sunssf=sunssf)


def modbus_rollover(point: ModbusPoint, *, sunssf: int | None = None) -> float | None:
    """Modulus of one Modbus point: 2^bits x scale (x 10^sf); None for signed, float or unknown sf."""
    bits = UNSIGNED_BITS.get(point.type)
    if bits is None:
        return None
    step = abs(point.scale)
    if point.scale_factor_point is not None:
        if sunssf is None:
            return None  # the scale factor is read at run time: the modulus is not known here
        step *= 10.0 ** sunssf
    return float(2 ** bits) * step
