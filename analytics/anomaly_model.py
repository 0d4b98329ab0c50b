"""Layer 3: a multivariate model per device class, trained on history, persisted with a version.

Two methods, same interface: "residual" (each feature regressed on the others, robust z of
the residual; it names the feature that is off and its expected value) and "iforest"
(scikit-learn IsolationForest; imported lazily). Features of a class come from `FEATURES`,
built from a batch on a common time grid (the caller resamples; other times are interpolated).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcim.analytics.anomaly_base import (
    NS, Anomaly, Batch, BoolArray, FloatArray, IntArray, clock, episodes, label, severity_for,
)
from dcim.site import Site
from dcim.storage.base import SeriesKey

MODEL_FORMAT_MAJOR = 1
DeviceRows = list[tuple[SeriesKey, IntArray, FloatArray]]  # (report key, times, X (T, F))


class ModelMismatch(ValueError):
    """A persisted model does not fit what the caller expects (features, format version)."""


@dataclass(slots=True)
class ClassModel:
    """A trained model of one device class, with what it was trained on."""

    device_class: str
    features: list[str]
    method: str
    version: str
    trained_from_ns: int
    trained_to_ns: int
    trained_at_ns: int
    mean: FloatArray
    std: FloatArray
    threshold: float
    coef: FloatArray | None = None  # (F, F+1) residual regressions, standardised units
    sigma: FloatArray | None = None  # robust residual scale per feature
    estimator: Any = None
    meta: dict[str, str] = field(default_factory=dict)


def _design(z: FloatArray, j: int) -> FloatArray:
    """[1, the other standardised features] for regressing feature j."""
    return np.column_stack([np.ones(len(z)), np.delete(z, j, axis=1)])


def _ridge(A: FloatArray, y: FloatArray, lam: float = 1e-2) -> FloatArray:
    """Ridge solution (the penalty keeps exactly collinear features, e.g. delta-T, sane)."""
    reg = lam * len(y) * np.eye(A.shape[1])
    reg[0, 0] = 0.0  # no penalty on the intercept
    return np.asarray(np.linalg.solve(A.T @ A + reg, A.T @ y), dtype=np.float64)


def _residual_z(m: ClassModel, z: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(z of each feature's residual, expected standardised value) for the residual method."""
    assert m.coef is not None and m.sigma is not None
    pred = np.column_stack([_design(z, j) @ m.coef[j] for j in range(z.shape[1])])
    return (z - pred) / m.sigma, pred


def fit_class_model(device_class: str, features: list[str], X: FloatArray, times_ns: IntArray,
                    method: str = "residual", version: str = "1", now_ns: int | None = None,
                    seed: int = 0, quantile: float = 0.9999,
                    margin: float | None = None) -> ClassModel:
    """Train on fault-free rows; the alarm threshold is a high quantile of training scores x margin."""
    ok = np.isfinite(X).all(axis=1)
    X = X[ok]
    mean, std = X.mean(axis=0), np.maximum(X.std(axis=0), 1e-6)
    z = (X - mean) / std
    m = ClassModel(device_class, list(features), method, version, int(times_ns.min()),
                   int(times_ns.max()), int(now_ns if now_ns is not None else times_ns.max()),
                   mean, std, 0.0)
    if method == "residual":
        coef = np.stack([_ridge(_design(z, j), z[:, j]) for j in range(z.shape[1])])
        m.coef, m.sigma = coef, np.ones(z.shape[1])
        rz, _ = _residual_z(m, z)
        med = np.median(rz, axis=0)
        m.sigma = np.maximum(1.4826 * np.median(np.abs(rz - med), axis=0), 1e-3)
        scores = np.abs(_residual_z(m, z)[0]).max(axis=1)
    elif method == "iforest":
        from sklearn.ensemble import IsolationForest
        import sklearn
        est = IsolationForest(n_estimators=100, max_samples=min(512, len(z)), random_state=seed)
        est.fit(z)
        m.estimator = est
        m.meta["sklearn"] = sklearn.__version__
        scores = -est.score_samples(z)
    else:
        raise ValueError(f"method {method!r}: expected 'residual' or 'iforest'")
    # IsolationForest scores are bounded near 1, so its margin is smaller
    margin = margin if margin is not None else (1.3 if method == "residual" else 1.05)
    m.threshold = float(np.quantile(scores, quantile)) * margin
    return m


def score_rows(m: ClassModel, X: FloatArray) -> tuple[FloatArray, FloatArray, IntArray]:
    """(anomaly score, expected X, index of the worst feature) per row; NaN rows score 0."""
    ok: BoolArray = np.asarray(np.isfinite(X).all(axis=1), dtype=bool)
    z = (np.where(ok[:, None], X, m.mean) - m.mean) / m.std
    if m.method == "residual":
        rz, pred = _residual_z(m, z)
        score = np.abs(rz).max(axis=1)
        worst = np.abs(rz).argmax(axis=1)
        expected = pred * m.std + m.mean
    else:
        score = -m.estimator.score_samples(z)
        dev = np.abs(z)
        worst = dev.argmax(axis=1)
        expected = np.broadcast_to(m.mean, X.shape).copy()
    return np.where(ok, score, 0.0), expected, worst


def model_anomalies(m: ClassModel, rows: DeviceRows, on_delay_s: float = 120.0) -> list[Anomaly]:
    """Episodes where a device's score exceeds the model's threshold."""
    out = []
    for key, t, X in rows:
        score, expected, worst = score_rows(m, X)
        for a, b, k in episodes(t, score > m.threshold, on_delay_s, merge_gap_s=300.0):
            i = a + int(np.argmax(score[a:b + 1]))
            j = int(worst[i])
            feat = m.features[j]
            ratio = float(score[i] / m.threshold)
            out.append(Anomaly(
                series=SeriesKey(key.measurement, key.device, feat), layer="model",
                kind=f"{m.device_class}_model", since_ns=int(t[a]), last_ns=int(t[b]),
                raised_ns=int(t[k]), value=float(X[i, j]), expected=float(expected[i, j]),
                score=ratio, severity=severity_for(ratio, 1.0, 2.0, 5.0),
                message=f"{label(SeriesKey(key.measurement, key.device, feat))} "
                        f"{X[i, j]:.1f} vs {expected[i, j]:.1f} expected by the "
                        f"{m.device_class} model v{m.version} ({ratio:.1f}x threshold) "
                        f"since {clock(int(t[a]))}"))
    return out


def save_model(m: ClassModel, path: str | Path) -> None:
    """Pickle the model and write a JSON sidecar (version, training period, features, sklearn)."""
    path = Path(path)
    path.write_bytes(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
    side = {"format_major": MODEL_FORMAT_MAJOR, "device_class": m.device_class,
            "method": m.method, "version": m.version, "features": m.features,
            "trained_from_ns": m.trained_from_ns, "trained_to_ns": m.trained_to_ns,
            "trained_at_ns": m.trained_at_ns, "sklearn": m.meta.get("sklearn")}
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(side, indent=2))


def load_model(path: str | Path, features: list[str] | None = None) -> ClassModel:
    """Load a saved model; ModelMismatch if its format major, features or sklearn major differ."""
    path = Path(path)
    side = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    if side.get("format_major") != MODEL_FORMAT_MAJOR:
        raise ModelMismatch(f"{path}: model format {side.get('format_major')}, "
                            f"expected {MODEL_FORMAT_MAJOR}")
    if features is not None and side["features"] != list(features):
        raise ModelMismatch(f"{path}: trained on features {side['features']}, expected {features}")
    if side.get("sklearn"):
        import sklearn
        if side["sklearn"].split(".")[0] != sklearn.__version__.split(".")[0]:
            raise ModelMismatch(f"{path}: trained with scikit-learn {side['sklearn']}, "
                                f"running {sklearn.__version__}")
    m = pickle.loads(path.read_bytes())  # only load models this service wrote
    if not isinstance(m, ClassModel) or m.features != side["features"]:
        raise ModelMismatch(f"{path}: pickle and sidecar disagree")
    return m


def retrain_due(m: ClassModel, now_ns: int, every_s: float = 7 * 86400.0) -> bool:
    """True when the model is older than every_s (the service retrains on this schedule)."""
    return now_ns - m.trained_at_ns >= every_s * NS


# ---------------------------------------------------------------- features per device class


def _get(batch: Batch, key: SeriesKey, t: IntArray) -> FloatArray:
    """A series on the grid t (interpolated if its times differ; NaN if absent)."""
    s = batch.get(key)
    if s is None:
        return np.full(len(t), np.nan)
    v = s.good_values()
    if len(s.times_ns) == len(t) and np.array_equal(s.times_ns, t):
        return v
    return np.interp(t, s.times_ns, v, left=np.nan, right=np.nan)


def _grid(batch: Batch, measurement: str) -> IntArray | None:
    """The time grid of the first series of a measurement in the batch."""
    for k, s in batch.items():
        if k.measurement == measurement:
            return s.times_ns
    return None


def _hall_it_kw(batch: Batch, site: Site, hall: str, t: IntArray) -> FloatArray:
    """Sum of the rack monitors' feed powers in a hall."""
    total = np.zeros(len(t))
    for rack in site.racks_in_hall(hall):
        for p in ("feed_a_power_kw", "feed_b_power_kw"):
            total += np.nan_to_num(_get(batch, SeriesKey("rack_monitor", f"RM-{rack.id}", p), t))
    return total


def crah_features(batch: Batch, site: Site) -> DeviceRows:
    """CRAH: supply, return, delta-T, fan power, valve against the hall's IT load."""
    t = _grid(batch, "crah")
    if t is None:
        return []
    out = []
    for dev in site.devices_of_type("crah"):
        g = {p: _get(batch, dev.series(p), t) for p in
             ("supply_temp_c", "return_temp_c", "fan_power_kw", "valve_pct")}
        if not np.isfinite(g["supply_temp_c"]).any():
            continue
        halls = site.mechanical[dev.monitors].serves or []
        load = _hall_it_kw(batch, site, halls[0], t) if halls else np.zeros(len(t))
        X = np.column_stack([g["supply_temp_c"], g["return_temp_c"],
                             g["return_temp_c"] - g["supply_temp_c"], g["fan_power_kw"],
                             g["valve_pct"], load])
        out.append((dev.series("return_temp_c"), t, X))
    return out


def rack_inlet_features(batch: Batch, site: Site) -> DeviceRows:
    """Rack inlets: bottom, middle, top, the row's mean middle inlet (other racks)."""
    t = _grid(batch, "rack_monitor")
    if t is None:
        return []
    pos = ("inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c")
    by_row: dict[str, list[str]] = {}
    for r in site.racks.values():
        by_row.setdefault(r.row, []).append(r.id)
    mid = {rid: _get(batch, SeriesKey("rack_monitor", f"RM-{rid}", pos[1]), t)
           for rid in site.racks if SeriesKey("rack_monitor", f"RM-{rid}", pos[1]) in batch}
    out = []
    for rid in mid:
        others = [mid[o] for o in by_row[site.racks[rid].row] if o != rid and o in mid]
        if not others:
            continue
        row_mean = np.nanmean(np.stack(others), axis=0)
        X = np.column_stack([_get(batch, SeriesKey("rack_monitor", f"RM-{rid}", p), t)
                             for p in pos] + [row_mean])
        out.append((SeriesKey("rack_monitor", f"RM-{rid}", pos[2]), t, X))
    return out


def chiller_features(batch: Batch, site: Site) -> DeviceRows:
    """Chiller plant: CHW supply and return, total power and cooling (one row set per plant)."""
    chillers = site.devices_of_type("chiller")
    t = _grid(batch, "chiller")
    if t is None or not chillers:
        return []
    first = chillers[0]
    power = sum(np.nan_to_num(_get(batch, d.series("power_kw"), t)) for d in chillers)
    cooling = sum(np.nan_to_num(_get(batch, d.series("cooling_kw"), t)) for d in chillers)
    X = np.column_stack([_get(batch, first.series("chw_supply_temp_c"), t),
                         _get(batch, first.series("chw_return_temp_c"), t), power, cooling])
    return [(first.series("chw_supply_temp_c"), t, X)]


def ups_module_features(batch: Batch, site: Site) -> DeviceRows:
    """UPS module: its output against its system's total output (modules share equally)."""
    mods = site.devices_of_type("ups_module")
    t = _grid(batch, "ups_module")
    if t is None:
        return []
    systems: dict[str, list[str]] = {}
    for d in mods:
        comp = site.electrical.get(d.monitors)
        systems.setdefault(str(comp.group if comp and comp.group else d.id[:-1]), []).append(d.id)
    out = []
    for d in mods:
        sib = next(v for v in systems.values() if d.id in v)
        total = sum(np.nan_to_num(_get(batch, SeriesKey("ups_module", s, "output_power_kw"), t))
                    for s in sib)
        own = _get(batch, d.series("output_power_kw"), t)
        out.append((d.series("output_power_kw"), t, np.column_stack([own, total])))
    return out


def rack_power_features(batch: Batch, site: Site) -> DeviceRows:
    """Rack power: feed A and B (a dead PDU moves the whole load to the other feed)."""
    t = _grid(batch, "rack_monitor")
    if t is None:
        return []
    out = []
    for rid in site.racks:
        a = SeriesKey("rack_monitor", f"RM-{rid}", "feed_a_power_kw")
        if a not in batch:
            continue
        fa = _get(batch, a, t)
        fb = _get(batch, SeriesKey("rack_monitor", f"RM-{rid}", "feed_b_power_kw"), t)
        out.append((a, t, np.column_stack([fa, fb])))
    return out


FEATURES: dict[str, tuple[list[str], Callable[[Batch, Site], DeviceRows]]] = {
    "crah": (["supply_temp_c", "return_temp_c", "delta_t_k", "fan_power_kw", "valve_pct",
              "hall_it_kw"], crah_features),
    "rack_inlet": (["inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c",
                    "row_mean_middle_c"], rack_inlet_features),
    "chiller": (["chw_supply_temp_c", "chw_return_temp_c", "plant_power_kw", "plant_cooling_kw"],
                chiller_features),
    "ups_module": (["output_power_kw", "system_output_kw"], ups_module_features),
    "rack_power": (["feed_a_power_kw", "feed_b_power_kw"], rack_power_features),
}


def stack_rows(rows: DeviceRows) -> tuple[IntArray, FloatArray]:
    """All devices' rows of a class stacked for training."""
    return (np.concatenate([t for _, t, _ in rows]), np.vstack([X for _, _, X in rows]))


__all__ = ["ClassModel", "FEATURES", "ModelMismatch", "fit_class_model", "load_model",
           "model_anomalies", "retrain_due", "save_model", "score_rows", "stack_rows"]
