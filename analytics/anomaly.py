"""Anomaly detection over a site's series: a generic detector on every series, and on top of it
the layers a point's role allows (envelopes, rates, robust statistics, sensor checks, models).

`Detector(site).fit(history)` learns a generic model per series (analytics/anomaly_generic.py),
per-series baselines and per-class models from fault-free history; `detect(batch)` scores a
window of arrays (windowed batch scoring: pass at least the robust/drift windows, 1-2 h, before
the span of interest) and returns `Anomaly` records.

A role (`inlet_temp_c`, ...) adds its physical layers only where the series is what the role
says: a plausible unit, range and sampling (`ROLE_PRIORS`); otherwise those layers decline with
the reason. A series the site does not know gets the generic detector and a warning. A layer
that cannot learn from a degenerate history (no complete model rows, ...) declines with the
reason; the others run. Reasons are in `Detector.notes`, each logged once. See docs/anomaly.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from dcim.analytics.anomaly_base import (
    NS, Anomaly, Batch, FloatArray, IntArray, SeriesData, episodes, label, median_step_s,
    severity_for,
)
from dcim.analytics.anomaly_envelope import (
    EnvelopeConfig, humidity_envelope, rate_of_change, temperature_envelope,
)
from dcim.analytics.anomaly_generic import (
    WEEK_S, GenericConfig, Score, SeriesModel, detections, generic_anomalies, threshold_for_budget,
)
from dcim.analytics.anomaly_model import FEATURES, ClassModel, fit_class_model, model_anomalies, stack_rows
from dcim.analytics.anomaly_robust import RobustBaseline, RobustConfig, fit_robust, robust_anomalies
from dcim.analytics.anomaly_sensor import (
    SensorBaseline, SensorConfig, dropouts, drift, fit_sensor, noise_bursts, stuck,
)
from dcim.site import Site
from dcim.storage.base import SeriesKey

log = logging.getLogger(__name__)

INLET_POINTS = ("inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c")
LAYER_NAMES = ("generic", "envelope", "rate", "robust", "model", "sensor", "status")
STATE_ROLES = ("unit_status", "fault")  # the status layer reads these words
# enumerations and flags: a change is an event, not a statistical surprise (no generic layer)
ENUM_ROLES = STATE_ROLES + ("running", "ups_mode", "on_battery", "on_bypass", "source",
                            "breaker_open")
# counters: the generic detector reads their increments, totals only ever grow
COUNTER_ROLES = ("energy_kwh", "it_energy_kwh", "input_energy_kwh", "output_energy_kwh",
                 "fuel_used_l", "water_m3")
SENSOR_ROLES = ("inlet_temp_c", "inlet_rh_pct", "supply_temp_c", "return_temp_c",
                "chw_supply_temp_c")


@dataclass(frozen=True, slots=True)
class RolePrior:
    """What a role's series must look like for the role's physical layers to apply."""

    what: str
    units: tuple[str, ...]  # accepted declared units ("" = none declared)
    low: float  # plausible range of the values (1st-99th percentile)
    high: float
    max_step_s: float = 300.0  # coarsest sampling the layers' on-delays and windows suit


AIR_C = ("", "degC", "°C", "C")
ROLE_PRIORS: dict[str, RolePrior] = {
    "inlet_temp_c": RolePrior("rack inlet air in degC", AIR_C, 0.0, 60.0),
    "supply_temp_c": RolePrior("supply air in degC", AIR_C, 0.0, 60.0),
    "return_temp_c": RolePrior("return air in degC", AIR_C, 0.0, 70.0),
    "chw_supply_temp_c": RolePrior("chilled water in degC", AIR_C, 0.0, 40.0),
    "inlet_rh_pct": RolePrior("relative humidity in %", ("", "%", "pct", "%RH"), 0.0, 100.0),
}


def role_decline(role: str, times_ns: IntArray, values: FloatArray,
                 unit: str = "") -> str | None:
    """Why a series is not what its role says (unit, sampling, range), or None when it is."""
    prior = ROLE_PRIORS.get(role)
    if prior is None:
        return None
    if unit not in prior.units:
        return f"declared unit {unit!r}, role {role} expects {prior.what}"
    fin = values[np.isfinite(values)]
    if fin.size < 2:
        return None  # nothing to judge yet: the dropout check reports missing data
    step = median_step_s(times_ns)
    if step > prior.max_step_s:
        return (f"sampled every {step:g} s; the {role} layers (on-delays, windows in minutes) "
                f"need {prior.max_step_s:g} s or finer")
    lo, hi = (float(x) for x in np.quantile(fin, [0.01, 0.99]))
    if lo < prior.low or hi > prior.high:
        return (f"values {lo:.3g} to {hi:.3g} are not {prior.what} "
                f"(expected within {prior.low:g} to {prior.high:g})")
    return None


def finite(values: FloatArray) -> FloatArray:
    """Values with inf (a broken decoder, a division by zero upstream) as missing."""
    return values if np.isfinite(values).all() else np.where(np.isfinite(values), values, np.nan)


def increments(values: FloatArray) -> FloatArray:
    """A counter's change per sample (the first is unknown; a reset reads as missing)."""
    d = np.diff(values, prepend=np.nan)
    return np.where(d >= 0, d, np.nan)


def inlet_neighbours(site: Site | None) -> dict[SeriesKey, list[SeriesKey]]:
    """Each rack inlet sensor's neighbours: the rack's other positions, same position next door."""
    if site is None:
        return {}
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
    tripped = (v >= 3.0) if role == "unit_status" else (v >= 1.0)
    tripped = np.where(np.isnan(v), False, tripped)
    out = []
    for a, b, r in episodes(t, tripped, 0.0):
        what = "tripped (unit_status 3)" if role == "unit_status" else "fault bit set"
        out.append(Anomaly(key, "status", "tripped", int(t[a]), int(t[b]), int(t[r]),
                           float(v[b]), 1.0 if role == "unit_status" else 0.0, 1.0, "high",
                           f"{label(key)}: {what}, reported by the device"))
    return out


def generic_confidence(score: float, interval_s: float) -> float:
    """An alarm's confidence from a generic score: 1 - the false alarms a week that a normal
    series would give at that score (0 at the threshold of a 1-a-week budget, 0.9 ten times
    rarer, 0.99 a hundred times)."""
    return float(min(1.0, max(0.0, 1.0 - (1.0 - score) * WEEK_S / max(interval_s, 1e-9))))


class GenericTrack:
    """A series' generic model followed online: each new sample scored once (the model
    advances), the verdicts of the recent span kept to report its episodes."""

    def __init__(self, model: SeriesModel, last_ns: int | None) -> None:
        self.model = model
        self.last_ns = last_ns
        self.times: list[int] = []
        self.values: list[float] = []
        self.verdicts: list[Score] = []

    def advance(self, times_ns: IntArray, values: FloatArray) -> None:
        """Score and learn the samples newer than the last one seen."""
        for t, v in zip(times_ns.tolist(), values.tolist()):
            if self.last_ns is not None and t <= self.last_ns:
                continue
            self.verdicts.append(self.model.update(t, v))
            self.times.append(t)
            self.values.append(v)
            self.last_ns = t

    def anomalies(self, key: SeriesKey, since_ns: int, cfg: GenericConfig) -> list[Anomaly]:
        """Episodes among the verdicts from since_ns on (older ones are dropped): one per
        refractory span, from its first sample over the threshold to its last."""
        i0 = int(np.searchsorted(np.array(self.times, dtype=np.int64), since_ns))
        del self.times[:i0], self.values[:i0], self.verdicts[:i0]
        if not self.times or self.model.declined is not None:
            return []
        t = np.array(self.times, dtype=np.int64)
        sc = np.array([r.score for r in self.verdicts])
        thr = threshold_for_budget(cfg.false_alarms_per_week, self.model.interval_s)
        raised = detections(t, sc, thr, cfg.refractory_s)
        out = []
        for j, i in enumerate(raised):
            stop = raised[j + 1] if j + 1 < len(raised) else t.size
            over = np.flatnonzero(sc[i:stop] >= thr) + i
            last = int(over[-1])
            peak = int(i + np.argmax(sc[i:last + 1]))
            res = self.verdicts[peak]
            kind = res.kind or "spike"  # as said online at the peak, not re-read in hindsight
            decades = float(np.log10(max(1.0 - thr, 1e-300) / max(1.0 - sc[peak], 1e-300)))
            out.append(Anomaly(
                series=key, layer="generic", kind=kind, since_ns=int(t[i]),
                last_ns=int(t[last]), raised_ns=int(t[i]), value=self.values[peak],
                expected=res.expected, score=float(sc[peak]),
                severity=severity_for(decades, 0.0, 1.0, 2.0),
                message=f"{label(key)} {res.detail}",
                context={"threshold": thr, "samples_over": float(over.size)}))
        return out


@dataclass
class DetectorConfig:
    """Configuration of every layer, and which layers and model classes run."""

    envelope: EnvelopeConfig = field(default_factory=EnvelopeConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    generic: GenericConfig = field(default_factory=GenericConfig)
    layers: tuple[str, ...] = LAYER_NAMES
    model_classes: tuple[str, ...] = ("crah", "rack_inlet", "chiller", "ups_module", "rack_power")
    model_method: str = "residual"
    model_on_delay_s: float = 120.0
    robust_roles: tuple[str, ...] = ("inlet_temp_c", "supply_temp_c", "return_temp_c",
                                     "chw_supply_temp_c")
    generic_fit_s: float | None = None  # fit the generic models on this much of the history
    # follow: each detect advances the generic models with the samples newer than they have
    # seen (the service, batches that follow each other); else every batch is scored from
    # the state at the end of training
    follow: bool = False


class Detector:
    """Runs all layers over a batch of series (a site's, or any); fit on fault-free history."""

    def __init__(self, site: Site | None = None, config: DetectorConfig | None = None, *,
                 told: set[str] | None = None) -> None:
        self.site = site
        self.cfg = config or DetectorConfig()
        self.neighbours = inlet_neighbours(site)
        self.robust_base: dict[SeriesKey, RobustBaseline] = {}
        self.sensor_base: dict[SeriesKey, SensorBaseline] = {}
        self.generic: dict[SeriesKey, SeriesModel] = {}
        self.tracks: dict[SeriesKey, GenericTrack] = {}
        self.models: dict[str, ClassModel] = {}
        self.notes: dict[str, str] = {}  # what declined or is unknown -> why
        self._told = told if told is not None else set()  # shared: one log line per cause
        self._role_ok: dict[SeriesKey, bool] = {}
        points = [(d, p) for d in site.devices.values() for p in d.profile.points] if site else []
        self._roles = {(d.id, p.name): p.role for d, p in points}
        self._units = {(d.id, p.name): p.unit or "" for d, p in points}

    def role(self, key: SeriesKey) -> str | None:
        """The role of a series' point in the site model."""
        return self._roles.get((key.device, key.point))

    def note(self, what: str, reason: str, level: int = logging.WARNING) -> None:
        """Record why something declined (or is unknown); log it once per cause."""
        self.notes[what] = reason
        if f"{what}: {reason}" not in self._told:
            self._told.add(f"{what}: {reason}")
            log.log(level, "anomaly detection: %s: %s", what, reason,
                    extra={"what": what, "reason": reason})

    def _unknown(self, key: SeriesKey) -> None:
        if self.role(key) is not None:
            return
        where = "has no role" if (key.device, key.point) in self._roles else \
            "is not a point of the site model"
        self.note(f"unknown {key.device}/{key.point}",
                  f"the series {where}: generic detector only, no physical limits")

    def role_layers_apply(self, key: SeriesKey, s: SeriesData) -> bool:
        """Whether the series is what its role says (decided once: at fit, or the first batch)."""
        if key not in self._role_ok:
            role = self.role(key)
            why = None if role is None else role_decline(
                role, s.times_ns, s.good_values(), self._units.get((key.device, key.point), ""))
            self._role_ok[key] = why is None
            if why is not None:
                self.note(f"{role} layers on {key.device}/{key.point}", why)
        return self._role_ok[key]

    def _neighbour_values(self, batch: Batch, key: SeriesKey) -> FloatArray | None:
        """(n, T) good values of a sensor's neighbours present in the batch, or None."""
        keys = [k for k in self.neighbours.get(key, []) if k in batch
                and self._role_ok.get(k, True)]
        if not keys:
            return None
        n = len(batch[key].values)
        rows = [finite(batch[k].good_values()) for k in keys if len(batch[k].values) == n]
        return np.stack(rows) if rows else None

    def fit(self, history: Batch, now_ns: int | None = None, version: str = "1",
            profile_history: Batch | None = None) -> Detector:
        """Learn a generic model and the role's baselines per series, one model per class."""
        for key, s in history.items():
            role = self.role(key)
            good = finite(s.good_values())
            self._unknown(key)
            if "generic" in self.cfg.layers and role not in ENUM_ROLES:
                t, g = s.times_ns, increments(good) if role in COUNTER_ROLES else good
                # warmed sample by sample on the last generic_fit_s; all of it fills the profile
                warm = (int(t[-1]) - int(self.cfg.generic_fit_s * NS)
                        if self.cfg.generic_fit_s is not None and t.size else None)
                # older, coarser history (not for counters: their means are not increments)
                older = (profile_history or {}).get(key) if role not in COUNTER_ROLES else None
                prior = (older.times_ns, older.good_values()) if older is not None else None
                m = SeriesModel.fit(t, g, self.cfg.generic, warm_from_ns=warm, prior=prior)
                self.generic[key] = m
                self.tracks[key] = GenericTrack(m, int(t[-1]) if t.size else None)
                if m.declined:  # a standby unit reading 0 is normal: said, not warned
                    self.note(f"generic on {key.device}/{key.point}", m.declined, logging.INFO)
            if role is None or not self.role_layers_apply(key, s):
                continue
            if role in self.cfg.robust_roles:
                self.robust_base[key] = fit_robust(s.times_ns, good, self.cfg.robust)
            if role == "inlet_temp_c":
                self.sensor_base[key] = fit_sensor(good, self._neighbour_values(history, key))
        if "model" in self.cfg.layers and self.site is not None:
            for cls in self.cfg.model_classes:
                self._fit_model(cls, history, now_ns, version)
        return self

    def _fit_model(self, cls: str, history: Batch, now_ns: int | None, version: str) -> None:
        """One class model, or a note saying why it declined (its class is then not scored)."""
        assert self.site is not None
        names, build = FEATURES[cls]
        rows = build(history, self.site)
        if not rows:
            return  # no device of the class in the history: nothing to model
        t, X = stack_rows(rows)
        empty = [n for j, n in enumerate(names) if not np.isfinite(X[:, j]).any()]
        try:
            self.models[cls] = fit_class_model(cls, names, X, t, self.cfg.model_method,
                                               version, now_ns)
        except (ValueError, np.linalg.LinAlgError) as exc:
            self.models.pop(cls, None)
            why = f"{exc}" + (f"; no value at all for {', '.join(empty)}" if empty else "")
            self.note(f"{cls} model", f"declined: {why}")

    def detect_series(self, batch: Batch, key: SeriesKey,
                      layers: tuple[str, ...] | None = None) -> list[Anomaly]:
        """Per-series layers (generic, envelope, rate, robust, sensor, status) of one series."""
        layers = layers or self.cfg.layers
        s = batch[key]
        role = self.role(key)
        t, v = s.times_ns, finite(s.good_values())
        out: list[Anomaly] = []
        if t.size == 0:
            return out
        if "generic" in layers and key in self.generic:
            model = self.generic[key]
            g = increments(v) if role in COUNTER_ROLES else v
            if self.cfg.follow:
                track = self.tracks[key]
                track.advance(t, g)
                found = track.anomalies(key, int(t[0]), self.cfg.generic)
            else:
                found = generic_anomalies(key, t, g, model, self.cfg.generic)
            for a in found:
                a.confidence = generic_confidence(a.score, model.interval_s)
            out += found
        if "status" in layers and role in STATE_ROLES:
            out += status_word(key, t, v, role)
        if role is None or not self.role_layers_apply(key, s):
            return out
        if role == "inlet_temp_c":
            if "envelope" in layers:
                out += temperature_envelope(key, t, v, self.cfg.envelope)
            if "rate" in layers:
                out += rate_of_change(key, t, v, self.cfg.envelope)
        if role == "inlet_rh_pct" and "envelope" in layers:
            tkey = SeriesKey(key.measurement, key.device, "inlet_temp_middle_c")
            temp = batch.get(tkey)
            if temp is not None and len(temp.values) == len(v) \
                    and self.role_layers_apply(tkey, temp):
                out += humidity_envelope(key, t, finite(temp.good_values()), v, self.cfg.envelope)
        if "robust" in layers and role in self.cfg.robust_roles:
            out += robust_anomalies(key, t, v, self.robust_base.get(key), self.cfg.robust)
        if "sensor" in layers and role in SENSOR_ROLES:
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
            self._unknown(key)
            if "generic" in layers and key not in self.generic and self.role(key) is None:
                self.note(f"untrained {key.device}/{key.point}",
                          "not in the training history: no generic model yet", logging.INFO)
            out += self.detect_series(batch, key, layers)
        if "model" in layers and self.site is not None:
            for cls, model in self.models.items():
                rows = FEATURES[cls][1](batch, self.site)
                out += model_anomalies(model, rows, self.cfg.model_on_delay_s)
        out.sort(key=lambda a: (a.since_ns, a.series.device, a.series.point))
        return out


__all__ = ["Anomaly", "Batch", "Detector", "DetectorConfig", "GenericTrack", "ROLE_PRIORS",
           "RolePrior", "SeriesData", "generic_confidence", "inlet_neighbours", "role_decline"]
