"""Anomaly detection over a site's series: envelopes, robust statistics, models, sensor faults.

`Detector(site).fit(history)` learns per-series baselines and per-class models from fault-free
history; `detect(batch)` scores a window of arrays (windowed batch scoring: pass at least the
robust/drift windows, 1-2 h, before the span of interest) and returns `Anomaly` records.
See docs/anomaly.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcim.analytics.anomaly_base import Anomaly, Batch, FloatArray, SeriesData
from dcim.analytics.anomaly_envelope import (
    EnvelopeConfig, humidity_envelope, rate_of_change, temperature_envelope,
)
from dcim.analytics.anomaly_model import FEATURES, ClassModel, fit_class_model, model_anomalies, stack_rows
from dcim.analytics.anomaly_robust import RobustBaseline, RobustConfig, fit_robust, robust_anomalies
from dcim.analytics.anomaly_sensor import (
    SensorBaseline, SensorConfig, dropouts, drift, fit_sensor, noise_bursts, stuck,
)
from dcim.site import Site
from dcim.storage.base import SeriesKey

INLET_POINTS = ("inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c")
LAYER_NAMES = ("envelope", "rate", "robust", "model", "sensor", "status")


def inlet_neighbours(site: Site) -> dict[SeriesKey, list[SeriesKey]]:
    """Each rack inlet sensor's neighbours: the rack's other positions, same position next door."""
    by_row: dict[str, list[str]] = {}
    for r in site.racks.values():
        by_row.setdefault(r.row, []).append(r.id)
    out: dict[SeriesKey, list[SeriesKey]] = {}
    for rack in site.racks.values():
        row = by_row[rack.row]
        i = row.index(rack.id)
        adjacent = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
        for p in INLET_POINTS:
            own = [SeriesKey("rack_monitor", f"RM-{rack.id}", q) for q in INLET_POINTS if q != p]
            near = [SeriesKey("rack_monitor", f"RM-{a}", p) for a in adjacent]
            out[SeriesKey("rack_monitor", f"RM-{rack.id}", p)] = own + near
    return out


def status_word(key: SeriesKey, t: np.ndarray, v: np.ndarray, role: str) -> list[Anomaly]:
    """The device's own word: unit_status 3 (tripped) or a fault bit set, as one episode each."""
    from dcim.analytics.anomaly_base import episodes, label

    tripped = (v >= 3.0) if role == "unit_status" else (v >= 1.0)
    tripped = np.where(np.isnan(v), False, tripped)
    out = []
    for a, b, r in episodes(t, tripped, 0.0):
        what = "tripped (unit_status 3)" if role == "unit_status" else "fault bit set"
        out.append(Anomaly(key, "status", "tripped", int(t[a]), int(t[b]), int(t[r]),
                           float(v[b]), 1.0 if role == "unit_status" else 0.0, 1.0, "high",
                           f"{label(key)}: {what}, reported by the device"))
    return out


@dataclass
class DetectorConfig:
    """Configuration of every layer, and which layers and model classes run."""

    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    layers: tuple[str, ...] = LAYER_NAMES
    model_classes: tuple[str, ...] = ("crah", "rack_inlet", "chiller", "ups_module", "rack_power")
    model_method: str = "residual"
    model_on_delay_s: float = 120.0
    robust_roles: tuple[str, ...] = ("inlet_temp_c", "supply_temp_c", "return_temp_c",
                                     "chw_supply_temp_c")


class Detector:
    """Runs all layers over a batch of a site's series; fit on fault-free history first."""

    def __init__(self, site: Site, config: DetectorConfig | None = None) -> None:
        self.site = site
        self.cfg = config or DetectorConfig()
        self.neighbours = inlet_neighbours(site)
        self.robust_base: dict[SeriesKey, RobustBaseline] = {}
        self.sensor_base: dict[SeriesKey, SensorBaseline] = {}
        self.models: dict[str, ClassModel] = {}
        self._roles = {(d.id, p.name): p.role for d in site.devices.values()
                       for p in d.profile.points}

    def role(self, key: SeriesKey) -> str | None:
        """The role of a series' point in the site model."""
        return self._roles.get((key.device, key.point))

    def _neighbour_values(self, batch: Batch, key: SeriesKey) -> FloatArray | None:
        """(n, T) good values of a sensor's neighbours present in the batch, or None."""
        keys = [k for k in self.neighbours.get(key, []) if k in batch]
        if not keys:
            return None
        n = len(batch[key].values)
        rows = [batch[k].good_values() for k in keys if len(batch[k].values) == n]
        return np.stack(rows) if rows else None

    def fit(self, history: Batch, now_ns: int | None = None, version: str = "1") -> Detector:
        """Learn robust and sensor baselines per series and one model per device class."""
        for key, s in history.items():
            role = self.role(key)
            good = s.good_values()
            if role in self.cfg.robust_roles:
                self.robust_base[key] = fit_robust(s.times_ns, good, self.cfg.robust)
            if role == "inlet_temp_c":
                self.sensor_base[key] = fit_sensor(good, self._neighbour_values(history, key))
        if "model" in self.cfg.layers:
            for cls in self.cfg.model_classes:
                names, build = FEATURES[cls]
                rows = build(history, self.site)
                if rows:
                    t, X = stack_rows(rows)
                    self.models[cls] = fit_class_model(cls, names, X, t, self.cfg.model_method,
                                                       version, now_ns)
        return self

    def detect_series(self, batch: Batch, key: SeriesKey,
                      layers: tuple[str, ...] | None = None) -> list[Anomaly]:
        """Per-series layers (envelope, rate, robust, sensor) of one series."""
        layers = layers or self.cfg.layers
        s = batch[key]
        role = self.role(key)
        t, v = s.times_ns, s.good_values()
        out: list[Anomaly] = []
        if role == "inlet_temp_c":
            if "envelope" in layers:
                out += temperature_envelope(key, t, v, self.cfg.envelope)
            if "rate" in layers:
                out += rate_of_change(key, t, v, self.cfg.envelope)
        if role == "inlet_rh_pct" and "envelope" in layers:
            temp = batch.get(SeriesKey(key.measurement, key.device, "inlet_temp_middle_c"))
            if temp is not None and len(temp.values) == len(v):
                out += humidity_envelope(key, t, temp.good_values(), v, self.cfg.envelope)
        if "robust" in layers and role in self.cfg.robust_roles:
            out += robust_anomalies(key, t, v, self.robust_base.get(key), self.cfg.robust)
        if "status" in layers and role in ("unit_status", "fault"):
            out += status_word(key, t, v, role)
        if "sensor" in layers and role in ("inlet_temp_c", "inlet_rh_pct", "supply_temp_c",
                                           "return_temp_c", "chw_supply_temp_c"):
            out += dropouts(key, t, v, self.cfg.sensor)
            if role == "inlet_temp_c":
                nb = self._neighbour_values(batch, key)
                base = self.sensor_base.get(key)
                out += stuck(key, t, v, nb, self.cfg.sensor)
                out += drift(key, t, v, nb, base, self.cfg.sensor)
                out += noise_bursts(key, t, v, base, self.cfg.sensor)
        return out

    def detect(self, batch: Batch, layers: tuple[str, ...] | None = None) -> list[Anomaly]:
        """All anomalies of a batch, oldest first."""
        layers = layers or self.cfg.layers
        out: list[Anomaly] = []
        for key in batch:
            out += self.detect_series(batch, key, layers)
        if "model" in layers:
            for cls, model in self.models.items():
                rows = FEATURES[cls][1](batch, self.site)
                out += model_anomalies(model, rows, self.cfg.model_on_delay_s)
        out.sort(key=lambda a: (a.since_ns, a.series.device, a.series.point))
        return out


__all__ = ["Anomaly", "Batch", "Detector", "DetectorConfig", "SeriesData", "inlet_neighbours"]
