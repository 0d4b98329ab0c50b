"""Layer 3: a multivariate model per device class, trained on history, persisted with a version.

Two methods, same interface: "residual" (each feature regressed on the others, robust z of
the residual; it names the feature that is off and its expected value) and "iforest"
(scikit-learn IsolationForest, imported lazily, used to fit only: its trees are kept as plain
arrays and scored here, the way scikit-learn scores them). Features of a class come from
`FEATURES`, built from a batch on a common time grid (the caller resamples; other times are
interpolated).

A saved model is data that cannot run code: its arrays in a NumPy `.npz` (loaded with
allow_pickle=False) and its parameters in a `.json` beside it, both mode 0600. Models pickled
by older versions (`*.pkl`) are never opened: whoever can write the model folder could have
put code in them. The service retrains instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from dcim.analytics.anomaly_base import (
    NS, Anomaly, Batch, BoolArray, FloatArray, IntArray, clock, episodes, label,
    ratio_confidence, severity_for,
)
from dcim.site import Site
from dcim.storage.base import SeriesKey

MODEL_FORMAT_MAJOR = 2  # 1 was a pickle, never loaded now
MODEL_SUFFIX, PARAMS_SUFFIX, LEGACY_SUFFIX = ".npz", ".json", ".pkl"
INT_ARRAYS = frozenset({"forest_left", "forest_right", "forest_feature", "forest_roots"})
MIN_ROWS = 30  # fewer complete training rows: the model declines (ValueError), never guesses
DeviceRows = list[tuple[SeriesKey, IntArray, FloatArray]]  # (report key, times, X (T, F))


class ModelMismatch(ValueError):
    """A persisted model does not fit what the caller expects (features, format version)."""


class LegacyModel(ModelMismatch):
    """A model pickled by an older version: never unpickled (it could run any code)."""


@dataclass(frozen=True, slots=True)
class ForestArrays:
    """An isolation forest as plain arrays: the nodes of every tree, one after the other."""

    left: IntArray  # index of the left child (absolute), -1 at a leaf
    right: IntArray
    feature: IntArray  # the column of X split on (0 at a leaf)
    threshold: FloatArray  # go left when X[feature] <= threshold
    path: FloatArray  # at a leaf: its depth + c(training samples in it), the path length
    roots: IntArray  # the first node of each tree
    denominator: float  # trees x c(max_samples): normalises the mean path length

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, for saving."""
        return {f"forest_{n}": getattr(self, n)
                for n in ("left", "right", "feature", "threshold", "path", "roots")}


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
    coef: FloatArray | None = None  # (F, F) residual regressions, standardised units
    sigma: FloatArray | None = None  # robust residual scale per feature
    forest: ForestArrays | None = None  # the iforest method's trees
    meta: dict[str, str] = field(default_factory=dict)


def _average_path_length(n: FloatArray) -> FloatArray:
    """c(n): the mean path length of an unsuccessful search in a binary tree of n samples."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def forest_arrays(estimator: Any) -> ForestArrays:
    """The trees of a fitted scikit-learn IsolationForest, through its public attributes."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("left", "right", "feature",
                                                          "threshold", "path")}
    roots, offset = [], 0
    for tree, columns in zip(estimator.estimators_, estimator.estimators_features_):
        t = tree.tree_
        left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
        leaf = left < 0
        depth = np.zeros(len(left))
        for _ in range(int(t.max_depth) + 1):  # parents come before children: one pass a level
            depth[left[~leaf]] = depth[~leaf] + 1
            depth[right[~leaf]] = depth[~leaf] + 1
        parts["left"].append(np.where(leaf, -1, left + offset))
        parts["right"].append(np.where(leaf, -1, right + offset))
        # a tree fitted on a subset of the columns numbers them within that subset
        parts["feature"].append(np.where(leaf, 0, np.asarray(columns)[np.maximum(t.feature, 0)]))
        parts["threshold"].append(t.threshold.astype(np.float64))
        parts["path"].append(depth + _average_path_length(t.n_node_samples))
        roots.append(offset)
        offset += len(left)
    denominator = len(roots) * float(_average_path_length(
        np.array([estimator.max_samples_]))[0])
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return ForestArrays(joined["left"], joined["right"], joined["feature"].astype(np.int64),
                        joined["threshold"], joined["path"], np.array(roots, dtype=np.int64),
                        denominator)


def forest_scores(forest: ForestArrays, z: FloatArray) -> FloatArray:
    """Anomaly score per row, 2^(-mean path length / c(max_samples)): scikit-learn's
    -score_samples, which compares in float32 as this does."""
    x = np.asarray(z, dtype=np.float32).astype(np.float64)
    rows = np.arange(len(x))[:, None]
    node = np.broadcast_to(forest.roots, (len(x), len(forest.roots))).copy()
    while True:
        inner = forest.left[node] >= 0
        if not inner.any():
            break
        go_left = x[rows, forest.feature[node]] <= forest.threshold[node]
        node = np.where(inner, np.where(go_left, forest.left[node], forest.right[node]), node)
    if forest.denominator <= 0:
        return np.ones(len(x))
    return np.asarray(2.0 ** (-forest.path[node].sum(axis=1) / forest.denominator),
                      dtype=np.float64)


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
    if ok.sum() < max(MIN_ROWS, 2 * X.shape[1]):  # none at all made the solve singular
        raise ValueError(f"{device_class}: {int(ok.sum())} complete rows of {len(X)}, "
                         f"needs {max(MIN_ROWS, 2 * X.shape[1])}")
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
        m.forest = forest_arrays(est)
        m.meta["sklearn"] = sklearn.__version__  # what fitted it; scoring needs no sklearn
        scores = forest_scores(m.forest, z)
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
        assert m.forest is not None
        score = forest_scores(m.forest, z)
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
                confidence=ratio_confidence(ratio),
                message=f"{label(SeriesKey(key.measurement, key.device, feat))} "
                        f"{X[i, j]:.1f} vs {expected[i, j]:.1f} expected by the "
                        f"{m.device_class} model v{m.version} ({ratio:.1f}x threshold) "
                        f"since {clock(int(t[a]))}"))
    return out


def _write_private(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file readable by its owner only (0600), whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: never through a link someone planted
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """(arrays .npz, parameters .json) of a model saved at path (any suffix is replaced)."""
    path = Path(path)
    return path.with_suffix(MODEL_SUFFIX), path.with_suffix(PARAMS_SUFFIX)


def save_model(m: ClassModel, path: str | Path) -> Path:
    """Save the arrays (.npz) and the parameters (.json: format, version, training period,
    features, threshold), both 0600; returns the .npz path."""
    arrays_path, params_path = model_paths(path)
    arrays: dict[str, np.ndarray] = {"mean": m.mean, "std": m.std}
    if m.coef is not None and m.sigma is not None:
        arrays |= {"coef": m.coef, "sigma": m.sigma}
    if m.forest is not None:
        arrays |= m.forest.arrays()
    params = {"format_major": MODEL_FORMAT_MAJOR, "device_class": m.device_class,
              "method": m.method, "version": m.version, "features": m.features,
              "trained_from_ns": m.trained_from_ns, "trained_to_ns": m.trained_to_ns,
              "trained_at_ns": m.trained_at_ns, "threshold": m.threshold,
              "forest_denominator": m.forest.denominator if m.forest else None,
              "meta": m.meta, "arrays": sorted(arrays)}
    typed: dict[str, Any] = {k: np.asarray(v, dtype=np.int64 if k in INT_ARRAYS
                                           else np.float64)
                             for k, v in arrays.items()}  # numbers only: nothing to pickle

    def write_arrays(f: IO[bytes]) -> None:
        np.savez(f, **typed)

    def write_params(f: IO[bytes]) -> None:
        f.write(json.dumps(params, indent=2).encode())

    _write_private(arrays_path, write_arrays)
    _write_private(params_path, write_params)
    return arrays_path


def load_model(path: str | Path, features: list[str] | None = None) -> ClassModel:
    """Load a saved model; ModelMismatch if its format, features or arrays do not fit, and
    LegacyModel (never opening the file) for a pickle of an older version."""
    path = Path(path)
    if path.suffix == LEGACY_SUFFIX:
        raise LegacyModel(f"{path}: a pickled model of an older dcim; it is never loaded "
                          "(a pickle can run any code): retrain, then delete it")
    arrays_path, params_path = model_paths(path)
    try:
        side = json.loads(params_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, KeyError) as exc:  # a pickle inside is a ValueError here
        raise ModelMismatch(f"{path}: cannot read the model: {exc}") from None
    if side.get("format_major") != MODEL_FORMAT_MAJOR:
        raise ModelMismatch(f"{path}: model format {side.get('format_major')}, "
                            f"expected {MODEL_FORMAT_MAJOR}")
    if features is not None and side["features"] != list(features):
        raise ModelMismatch(f"{path}: trained on features {side['features']}, expected {features}")
    m = ClassModel(str(side["device_class"]), [str(f) for f in side["features"]],
                   str(side["method"]), str(side["version"]), int(side["trained_from_ns"]),
                   int(side["trained_to_ns"]), int(side["trained_at_ns"]),
                   arrays.get("mean", np.empty(0)), arrays.get("std", np.empty(0)),
                   float(side["threshold"]), arrays.get("coef"), arrays.get("sigma"),
                   meta={str(k): str(v) for k, v in side.get("meta", {}).items()})
    if m.method == "iforest" and all(k in arrays for k in INT_ARRAYS):
        m.forest = ForestArrays(
            arrays["forest_left"], arrays["forest_right"], arrays["forest_feature"],
            arrays.get("forest_threshold", np.empty(0)), arrays.get("forest_path", np.empty(0)),
            arrays["forest_roots"], float(side.get("forest_denominator") or 0.0))
    _check_shapes(m, path)
    return m


def _check_shapes(m: ClassModel, path: Path) -> None:
    """Arrays that cannot be scored are a mismatch now, not an IndexError later."""
    n = len(m.features)
    ok = m.mean.shape == (n,) and m.std.shape == (n,) and bool(np.all(m.std > 0))
    if m.method == "residual":
        ok = ok and m.coef is not None and m.coef.shape == (n, n) \
            and m.sigma is not None and m.sigma.shape == (n,)
    elif m.method == "iforest":
        f = m.forest
        size = len(f.left) if f is not None else 0
        index = np.arange(size)
        # children come after their parent (so every walk ends), both or none, in range
        ok = ok and f is not None and all(
            a.ndim == 1 and len(a) == size for a in (f.right, f.feature, f.threshold, f.path)) \
            and bool(np.all(((f.left == -1) | ((f.left > index) & (f.left < size)))
                            & ((f.right == -1) | ((f.right > index) & (f.right < size)))
                            & ((f.left >= 0) == (f.right >= 0))
                            & (f.feature >= 0) & (f.feature < n))) \
            and f.roots.ndim == 1 and bool(np.all((f.roots >= 0) & (f.roots < size)))
    else:
        ok = False
    if not ok:
        raise ModelMismatch(f"{path}: its arrays do not fit a {m.method} model of {n} features")


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
        unit = site.mechanical.get(dev.monitors)  # a CRAH monitoring no declared unit: no halls
        halls = (unit.serves or []) if unit is not None else []
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
        rows, seen = np.stack(others), np.isfinite(np.stack(others)).sum(axis=0)
        row_mean = np.where(seen > 0, np.nansum(rows, axis=0) / np.maximum(seen, 1), np.nan)
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


__all__ = ["ClassModel", "FEATURES", "ForestArrays", "LegacyModel", "ModelMismatch",
           "fit_class_model", "forest_scores", "load_model", "model_anomalies", "model_paths",
           "retrain_due", "save_model", "score_rows", "stack_rows"]
