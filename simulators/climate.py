"""Hong Kong outdoor climate: monthly normals, a diurnal cycle, weather noise, psychrometrics.

Pure functions over numpy arrays of times (seconds since the Unix epoch, UTC). The normals are
the Hong Kong Observatory monthly means quoted in /work/shared/reference/domain.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

# Hong Kong Observatory monthly normals (approximate): mean air temperature degC, mean RH %.
HK_MONTHLY_TEMP_C = (16.3, 17.0, 19.3, 22.7, 26.0, 27.9, 28.8, 28.6, 27.7, 25.5, 21.8, 17.9)
HK_MONTHLY_RH_PCT = (74.0, 80.0, 83.0, 83.0, 83.0, 84.0, 81.0, 81.0, 78.0, 73.0, 71.0, 69.0)

YEAR_DAYS = 365.2425
# Mid-month day of year (0-based) at which each normal applies.
_MID_MONTH_DAY = (np.arange(12) + 0.5) * YEAR_DAYS / 12

DIURNAL_AMPLITUDE_K = 2.3  # half the mean daily range (HKO: about 4-5 K)
DIURNAL_PEAK_HOUR = 14.5  # local solar afternoon
RH_PER_K = 4.5  # RH falls as the air warms through the day (dew point nearly constant)


@dataclass(frozen=True, slots=True)
class Weather:
    """Outdoor air at each time: dry bulb, relative humidity, wet bulb, dew point."""

    dry_bulb_c: Array
    rh_pct: Array
    wet_bulb_c: Array
    dew_point_c: Array


def day_of_year(local_s: Array) -> Array:
    """Fractional day of the year (0 = 1 January) of local times, a mean-year approximation."""
    return np.mod(local_s / 86400.0, YEAR_DAYS)


def monthly_normals(doy: Array) -> tuple[Array, Array]:
    """Mean temperature and RH at each day of year, interpolated between mid-month normals."""
    temp = np.interp(doy, _MID_MONTH_DAY, HK_MONTHLY_TEMP_C, period=YEAR_DAYS)
    rh = np.interp(doy, _MID_MONTH_DAY, HK_MONTHLY_RH_PCT, period=YEAR_DAYS)
    return temp, rh


def stull_wet_bulb(temp_c: Array, rh_pct: Array) -> Array:
    """Wet-bulb temperature from dry bulb and RH (Stull 2011, J. Appl. Meteor. Climatol.)."""
    t, rh = temp_c, rh_pct
    return (t * np.arctan(0.151977 * np.sqrt(rh + 8.313659)) + np.arctan(t + rh)
            - np.arctan(rh - 1.676331) + 0.00391838 * rh ** 1.5 * np.arctan(0.023101 * rh)
            - 4.686035)


def dew_point(temp_c: Array, rh_pct: Array) -> Array:
    """Dew point by the Magnus formula (Alduchov and Eskridge 1996 constants)."""
    gamma = np.log(np.clip(rh_pct, 1.0, 100.0) / 100.0) + 17.625 * temp_c / (243.04 + temp_c)
    return 243.04 * gamma / (17.625 - gamma)


def rh_from_dew_point(temp_c: Array, dew_point_c: Array) -> Array:
    """Relative humidity % of air at temp_c with the given dew point (Magnus)."""
    num = np.exp(17.625 * dew_point_c / (243.04 + dew_point_c))
    den = np.exp(17.625 * temp_c / (243.04 + temp_c))
    return np.clip(100.0 * num / den, 0.0, 100.0)


@overload
def enthalpy_kj_kg(temp_c: float, dew_point_c: float) -> float: ...


@overload
def enthalpy_kj_kg(temp_c: Array, dew_point_c: Array) -> Array: ...


def enthalpy_kj_kg(temp_c: float | Array, dew_point_c: float | Array) -> float | Array:
    """Moist-air specific enthalpy kJ/kg dry air at sea level (ASHRAE Fundamentals ch. 1)."""
    p_w = 0.61094 * np.exp(17.625 * dew_point_c / (243.04 + dew_point_c))  # kPa
    w = 0.622 * p_w / (101.325 - p_w)
    return 1.006 * temp_c + w * (2501.0 + 1.86 * temp_c)


def outdoor_weather(local_s: Array, anomaly_k: Array, rh_anomaly_pct: Array) -> Weather:
    """Outdoor air at local times: normals + diurnal cycle + given synoptic anomalies."""
    doy = day_of_year(local_s)
    mean_t, mean_rh = monthly_normals(doy)
    hour = np.mod(local_s, 86400.0) / 3600.0
    diurnal = DIURNAL_AMPLITUDE_K * np.cos(2 * np.pi * (hour - DIURNAL_PEAK_HOUR) / 24.0)
    dry = mean_t + diurnal + anomaly_k
    rh = np.clip(mean_rh - RH_PER_K * diurnal + rh_anomaly_pct, 35.0, 99.0)
    return Weather(dry, rh, stull_wet_bulb(dry, rh), dew_point(dry, rh))
