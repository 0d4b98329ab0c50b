"""Anomaly detection benchmark: simulator fault scenarios with ground truth, NAB, throughput.

.venv/bin/python bench/anomaly.py [--quick] [--seed N]
.venv/bin/python bench/anomaly.py nab [--corpus DIR] [--only NAME ...]   (generic detector on NAB)
.venv/bin/python bench/anomaly.py generic   (generic detector: delay per kind, false alarms on noise)
Definitions (also in docs/anomaly.md): an alert is a TP when its series belongs to a fault's
affected set and it starts within [fault start - 10 min, fault end + grace] and is raised after
the fault start; recall = faults with at least one such alert / faults injected; delay = first
such alert's raise time - fault start; FA/day = alerts on a separate fault-free run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine  # noqa: E402
from bench.nab import CORPUS, FileScore, NabFile, load_corpus, normalised_total, score_file, sweep  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dcim.analytics.anomaly_generic import (  # noqa: E402
    GenericConfig, SeriesModel, detections, generic_anomalies, threshold_for_budget,
)

from dcim.analytics.anomaly import Detector  # noqa: E402
from dcim.analytics.anomaly_base import NS, Anomaly, Batch, FloatArray, SeriesData  # noqa: E402
from dcim.analytics.anomaly_robust import RobustConfig, fit_robust, robust_anomalies  # noqa: E402
from dcim.simulators.faults import Fault, SensorFaults  # noqa: E402
from dcim.simulators.plant import PlantModel  # noqa: E402
from dcim.simulators.snapshot import DeviceHealth  # noqa: E402
from dcim.site import load_site  # noqa: E402
from dcim.storage.base import SeriesKey  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NAB = REPO.parent / "shared/data/nab/machine_temperature_system_failure"
T0 = 1_783_000_000.0  # 2026-07-02, a Hong Kong summer
STEP = 60.0
ROWS = ("H1-A", "H1-B")
SENSOR_DUR = {"stuck": 3600, "drift": 5400, "spike": 180, "dropout": 1200, "noise_burst": 1200}
EQUIP_DUR = 1800
DESIGNED = {  # fault kind -> (layer, alert kind) pairs built to catch it
    "stuck": {("sensor", "stuck")}, "drift": {("sensor", "drift")},
    "spike": {("robust", "spike"), ("robust", "level_shift")},
    "dropout": {("sensor", "dropout")}, "noise_burst": {("sensor", "noise")},
    "crah_trip": {("model", "crah_model"), ("model", "rack_inlet_model")},
    "chiller_trip": {("model", "chiller_model")},
    "pdu_breaker_open": {("model", "rack_power_model")},
    "ups_module_trip": {("model", "ups_module_model")},
    # a pump failure has no physical symptom in the plant (the standby takes over at once):
    # only the unit's own status word shows it
    "pump_failure": {("status", "tripped")},
}


def wanted(site, dev_id: str) -> list[str] | None:  # type: ignore[no-untyped-def]
    """Points of a device the benchmark keeps (None = skip the device)."""
    dev = site.devices[dev_id]
    if dev.device_type == "rack_monitor":
        rack = site.racks[dev.monitors]
        if rack.hall != "H1":
            return None
        pts = ["feed_a_power_kw", "feed_b_power_kw"]
        if rack.row in ROWS:
            pts += ["inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c", "inlet_rh_pct"]
        return pts
    if dev.device_type in ("crah", "chiller", "ups_module", "pdu", "pump"):
        return [p.name for p in dev.profile.points if p.role is not None]
    return None


def split_history(batch: Batch, fine_from_s: float, coarse_step_s: float) -> tuple[Batch, Batch]:
    """(the samples from fine_from_s on, the earlier ones as means per coarse step), as the
    anomaly service reads them from the store (dcim/anomaly_service.py)."""
    fine: Batch = {}
    older: Batch = {}
    edge = int(fine_from_s * NS)
    step = int(coarse_step_s * NS)
    for key, s in batch.items():
        cut = int(np.searchsorted(s.times_ns, edge))
        fine[key] = SeriesData(s.times_ns[cut:], s.values[cut:])
        if cut == 0:
            continue
        b = s.times_ns[:cut] // step
        v = s.values[:cut]
        ok = np.isfinite(v)
        uniq, inv = np.unique(b[ok], return_inverse=True)
        if uniq.size:
            means = np.bincount(inv, weights=v[ok]) / np.bincount(inv)
            older[key] = SeriesData(uniq * step, means)
    return fine, older


def run(model: PlantModel, start: float, end: float, faults: list[Fault],
        sensor: SensorFaults) -> Batch:
    """Simulate [start, end) with scheduled faults; arrays per kept series (inlets at 0.1 K)."""
    site = model.site
    keep = {d: p for d in site.devices if (p := wanted(site, d))}
    cols: dict[SeriesKey, list[float]] = {SeriesKey(site.devices[d].device_type, d, p): []
                                          for d, pts in keep.items() for p in pts}
    times: list[float] = []
    edges = sorted({start, end} | {f.start_s for f in faults if f.category == "equipment"}
                   | {f.end_s for f in faults if f.category == "equipment" and f.end_s})
    edges = [e for e in edges if start <= e <= end]
    for lo, hi in zip(edges[:-1], edges[1:]):
        for f in faults:
            if f.category == "equipment":
                on = f.start_s <= lo < (f.end_s or np.inf)
                if on != f.active:
                    model.set_fault(f.kind, f.target, on)
                    f.active = on
        for snap in model.simulate_range(lo, hi, STEP):
            for f in faults:
                if f.category == "sensor":
                    f.active = f.start_s <= snap.time_s < (f.end_s or np.inf)
            sensor.apply(snap, faults)
            times.append(snap.time_s)
            for key, col in cols.items():
                r = snap.devices[key.device]
                v = r.values.get(key.point, np.nan)
                if r.point_health.get(key.point) == DeviceHealth.NO_DATA:
                    v = np.nan
                elif key.point.startswith("inlet_temp"):
                    v = round(v, 1)
                col.append(v)
    t = (np.array(times) * NS).astype(np.int64)
    return {k: SeriesData(t, np.array(v, dtype=float)) for k, v in cols.items()}


def schedule(model: PlantModel, start: float, n_sensor: int, n_equip: int,
             rng: np.random.Generator) -> tuple[list[Fault], float]:
    """Faults in 2-hour slots (random order, random offset and target); returns the end time."""
    site, topo = model.site, model.topo
    points = [SeriesKey("rack_monitor", f"RM-{r.id}", p) for r in site.racks.values()
              if r.row in ROWS for p in ("inlet_temp_bottom_c", "inlet_temp_middle_c",
                                         "inlet_temp_top_c")]
    h1_pdus = [p for p in topo.pdu_ids if "-H1-" in p]
    targets = {"crah_trip": [c for c in topo.crah_ids if "-H1-" in c],
               "chiller_trip": None, "pump_failure": topo.chw_pump_ids + topo.cw_pump_ids,
               "pdu_breaker_open": h1_pdus, "ups_module_trip": topo.module_ids}
    kinds = [k for k in SENSOR_DUR for _ in range(n_sensor)] + [
        k for k in targets for _ in range(n_equip)]
    rng.shuffle(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        t0 = start + 7200.0 * (i + 1) + 60.0 * int(rng.integers(0, 30))
        if kind in SENSOR_DUR:
            key = points[int(rng.integers(len(points)))]
            params = {"rate_per_h": 2.0} if kind == "drift" else {}
            faults.append(Fault(i, kind, key.device, key.point, t0, t0 + SENSOR_DUR[kind], params))
        else:
            if kind == "chiller_trip":  # trip a running chiller so the fault has an effect
                cands = [c for j, c in enumerate(topo.chiller_ids)
                         if model._chillers.running[j]] or topo.chiller_ids
            else:
                cands = targets[kind]  # type: ignore[assignment]
            faults.append(Fault(i, kind, cands[int(rng.integers(len(cands)))], None, t0,
                                t0 + EQUIP_DUR, {}))
    return faults, start + 7200.0 * (len(kinds) + 1)


def affected(site, f: Fault) -> set[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    """(device, point or None = any point) an alert may name to count for fault f."""
    if f.category == "sensor":
        return {(f.target, f.point)}
    if f.kind == "crah_trip":
        hall = site.mechanical[f.target].serves[0]
        return ({(d.id, None) for d in site.devices_of_type("crah") if d.id != f.target
                 and site.mechanical[d.monitors].serves[0] == hall}
                | {(f"RM-{r.id}", p) for r in site.racks_in_hall(hall)
                   for p in ("inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c")})
    if f.kind == "chiller_trip":
        return {(d.id, None) for d in site.devices_of_type("chiller")}
    if f.kind == "pdu_breaker_open":
        return {(f.target, None)} | {(f"RM-{r.id}", None) for r in site.racks.values()
                                     if f.target in r.feeds}
    if f.kind == "ups_module_trip":
        group = site.electrical[f.target].group
        return {(c.id, None) for c in site.config.electrical
                if c.type == "ups_module" and c.group == group}
    return {(f.target, None)}


def matches(a: Anomaly, f: Fault, aff: set[tuple[str, str | None]], grace_s: float) -> bool:
    """Alert a names an affected series of f within its window, raised after it started."""
    s = a.series
    if (s.device, s.point) not in aff and (s.device, None) not in aff:
        return False
    end = (f.end_s or f.start_s) + grace_s
    return (f.start_s - 600) * NS <= a.since_ns <= end * NS and a.raised_ns >= f.start_s * NS


def status_detect(batch: Batch, f: Fault) -> float | None:
    """Delay (s) until the target's unit_status reads 3, the trivial status-word detector."""
    s = None
    for key, ser in batch.items():
        if key.device == f.target and key.point == "unit_status":
            s = ser
    if s is None:
        return None
    hit = np.flatnonzero((s.values >= 3) & (s.times_ns >= f.start_s * NS))
    return None if not hit.size else (s.times_ns[hit[0]] / NS - f.start_s)


def score(site, alerts: list[Anomaly], faults: list[Fault],  # type: ignore[no-untyped-def]
          batch: Batch) -> list[dict[str, object]]:
    """Per fault kind: n, recall, delay median/p90, designed-alert precision, status recall."""
    aff = {f.id: affected(site, f) for f in faults}
    rows = []
    for kind in DESIGNED:
        fs = [f for f in faults if f.kind == kind]
        if not fs:
            continue
        delays, layers = [], []
        for f in fs:
            hits = [a for a in alerts if matches(a, f, aff[f.id], 1800.0)]
            if hits:
                first = min(hits, key=lambda a: a.raised_ns)
                delays.append(first.raised_ns / NS - f.start_s)
                layers.append(f"{first.layer}/{first.kind}")
        mine = [a for a in alerts if (a.layer, a.kind) in DESIGNED[kind]]
        tp = sum(any(matches(a, f, aff[f.id], 1800.0) for f in faults) for a in mine)
        st = [status_detect(batch, f) for f in fs] if fs[0].category == "equipment" else []
        rows.append({"kind": kind, "n": len(fs), "recall": len(delays) / len(fs),
                     "delay_med_s": float(np.median(delays)) if delays else None,
                     "delay_p90_s": float(np.percentile(delays, 90)) if delays else None,
                     "alerts": len(mine), "precision": tp / len(mine) if mine else None,
                     "first_layer": max(set(layers), key=layers.count) if layers else "-",
                     "status_recall": (sum(d is not None for d in st) / len(st)) if st else None})
    return rows


def nab(cfg: RobustConfig) -> dict[str, object]:
    """Robust layer on NAB machine_temperature: window recall and FPs after the probation."""
    raw = np.genfromtxt(f"{NAB}.csv", delimiter=",", skip_header=1, dtype=str)
    t = np.array([np.datetime64(x) for x in raw[:, 0]]).astype("datetime64[ns]").astype(np.int64)
    v = raw[:, 1].astype(float)
    wins = [(np.datetime64(a).astype("datetime64[ns]").astype(np.int64),
             np.datetime64(b).astype("datetime64[ns]").astype(np.int64))
            for a, b in json.loads(Path(f"{NAB}.labels.json").read_text())["windows"]]
    probation = min(750, int(0.15 * len(t)))
    base = fit_robust(t[:probation], v[:probation], cfg)
    alerts = [a for a in robust_anomalies(SeriesKey("machine", "nab", "temperature"), t, v,
                                          base, cfg) if a.raised_ns >= t[probation]]
    hit = [any(lo <= a.raised_ns <= hi for a in alerts) for lo, hi in wins]
    fp = sum(not any(lo <= a.raised_ns <= hi for lo, hi in wins) for a in alerts)
    return {"windows": len(wins), "detected": sum(hit), "per_window": hit, "fp": fp,
            "alerts": len(alerts)}


def throughput(det: Detector, batch: Batch) -> list[tuple[str, float, int]]:
    """(layer, samples/s, samples) scoring the batch with one layer at a time, then all."""
    out = []
    n = sum(len(s.values) for s in batch.values())
    for layers in (("envelope",), ("rate",), ("robust",), ("sensor",), ("model",),
                   det.cfg.layers):
        t0 = time.perf_counter()
        det.detect(batch, layers)
        dt = time.perf_counter() - t0
        out.append(("all" if len(layers) > 1 else layers[0], n / dt, n))
    return out


def generic_scores(f: NabFile, cfg: GenericConfig) -> tuple[FloatArray, SeriesModel, float]:
    """Scores of one NAB file: fit on its probation rows, then online over the rest; seconds spent."""
    p = f.probation
    t0 = time.perf_counter()
    model = SeriesModel.fit(f.times_ns[:p], f.values[:p], cfg)
    sc = np.zeros(len(f.values))
    for i, (t, v) in enumerate(zip(f.times_ns[p:].tolist(), f.values[p:].tolist())):
        sc[p + i] = model.update(t, v).score
    return sc, model, time.perf_counter() - t0


def nab_main(argv: list[str]) -> None:
    """Score the generic detector (shipped defaults) on the NAB corpus with bench/nab.py."""
    ap = argparse.ArgumentParser(prog="bench/anomaly.py nab",
                                 description="generic detector on NAB, standard profile")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help=f"default {CORPUS}")
    ap.add_argument("--only", nargs="*", help="files whose name contains one of these")
    args = ap.parse_args(argv)
    cfg = GenericConfig()
    files = load_corpus(args.corpus, args.only)
    scores, shipped, spent, n_samples = [], [], 0.0, 0
    for f in tqdm(files, desc="NAB", unit="file", file=sys.stderr):
        sc, model, dt = generic_scores(f, cfg)
        scores.append(sc)
        spent += dt
        n_samples += len(f.values)
        thr = threshold_for_budget(cfg.false_alarms_per_week, model.interval_s)
        det = detections(f.times_ns, sc, thr, cfg.refractory_s)
        shipped.append((score_file(len(f.values), f.windows, det), thr, model))

    def detect(f: NabFile, s: FloatArray, thr: float) -> list[int]:
        return detections(f.times_ns, s, thr, cfg.refractory_s)

    grid = [1.0 - 10.0 ** -x for x in np.arange(1.0, 9.01, 0.125)]
    best_thr, best = sweep(files, scores, detect, grid)
    print(f"# bench/anomaly.py nab: generic detector, shipped defaults {cfg}")
    print(f"# {machine()}; corpus {args.corpus}")
    print("# each file: fit on its probation rows (15 %, at most 750), then online over the rest")
    print(f"{'file':<58}{'win':>4}{'tp':>4}{'fp':>4}{'raw':>8}{'score':>8}  threshold  note")
    cats: dict[str, list[FileScore]] = {}
    at_best: dict[str, list[FileScore]] = {}
    for f, sc, (fs, thr, model) in zip(files, scores, shipped):
        cats.setdefault(f.name.split("/")[0], []).append(fs)
        at_best.setdefault(f.name.split("/")[0], []).append(
            score_file(len(f.values), f.windows, detect(f, sc, best_thr)))
        note = model.declined or f"interval {model.interval_s:g} s"
        print(f"{f.name:<58}{fs.windows:>4}{fs.tp:>4}{fs.fp:>4}{fs.raw:>8.2f}{fs.normalised:>8.1f}"
              f"  {thr:.6f}  {note}")
    print(f"{'category':<48} {'budget':>8} {'optimal':>8}")
    for cat, fss in sorted(cats.items()):
        print(f"{cat:<48} {normalised_total(fss):>8.1f} {normalised_total(at_best[cat]):>8.1f}"
              f"  ({len(fss)} files, {sum(x.windows for x in fss)} windows, "
              f"FP {sum(x.fp for x in fss)} / {sum(x.fp for x in at_best[cat])})")
    print(f"throughput: {spent / n_samples * 1e6:.1f} us/sample (fit + online, {n_samples} samples)")
    print(f"NAB standard score at the corpus-optimal threshold {best_thr:.8f}: {best:.1f}")
    total = normalised_total([s[0] for s in shipped])
    print(f"NAB standard score on {len(files)} files: {total:.1f}")


def injected(kind: str, n: int, at: int, rng: np.random.Generator) -> FloatArray:
    """Noise (20, sd 0.5) with one fault of `kind` from index `at` (none for 'noise')."""
    v = rng.normal(20.0, 0.5, n)
    if kind == "spike":
        v[at] += 4.0
    elif kind == "level_shift":
        v[at:] += 2.0
    elif kind == "drift":
        v[at:] += np.arange(n - at) * 0.01  # 0.02 sd per sample
    elif kind == "variance":
        v[at:] = 20.0 + rng.normal(0.0, 2.0, n - at)
    elif kind == "stuck":
        v = np.round(v, 1)
        v[at:] = v[at - 1]
    return v


def generic_main(argv: list[str]) -> None:
    """Delay per kind and false alarms per week on noise, generic detector, shipped defaults."""
    ap = argparse.ArgumentParser(prog="bench/anomaly.py generic")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    cfg = GenericConfig()
    key = SeriesKey("bench", "generic", "value")
    print(f"# bench/anomaly.py generic: {args.runs} runs per cell; {machine()}")
    print("kind          interval  detected  delay_med(samples)  kind_named")
    for step in (60.0, 300.0, 3600.0):
        for kind in ("spike", "level_shift", "drift", "variance", "stuck"):
            found, delays, named = 0, [], 0
            for r in range(args.runs):
                rng = np.random.default_rng(r)
                v = injected(kind, 3000, 2500, rng)
                t = (T0 * NS + np.arange(3000) * int(step * NS)).astype(np.int64)
                m = SeriesModel.fit(t[:2000], v[:2000], cfg)
                hits = [a for a in generic_anomalies(key, t[2000:], v[2000:], m, cfg)
                        if a.raised_ns >= t[2500]]
                if hits and hits[0].raised_ns <= t[2900]:
                    found += 1
                    delays.append((hits[0].raised_ns - t[2500]) / NS / step)
                    named += hits[0].kind == kind
            med = f"{np.median(delays):.0f}" if delays else "-"
            print(f"{kind:<14}{step:>7.0f} s  {found:>3}/{args.runs}  {med:>18}  {named:>5}/{found}")
    print("\nfalse alarms per week on pure noise (budget 1 a week):")
    for step in (1.0, 60.0, 300.0, 1800.0, 3600.0):
        n = min(200_000, int(12 * 86400 * 7 / step))
        alerts, weeks, spent = 0, 0.0, 0.0
        for r in range(3):
            rng = np.random.default_rng(100 + r)
            v = rng.normal(5.0, 1.0, n)
            t = (T0 * NS + np.arange(n) * int(step * NS)).astype(np.int64)
            h = n // 6
            m = SeriesModel.fit(t[:h], v[:h], cfg)
            t0 = time.perf_counter()
            alerts += len(generic_anomalies(key, t[h:], v[h:], m, cfg))
            spent += time.perf_counter() - t0
            weeks += (n - h) * step / (7 * 86400)
        print(f"  interval {step:>6.0f} s: {alerts / weeks:5.2f} a week over {weeks:6.1f} weeks; "
              f"{spent / (3 * (n - h)) * 1e6:.0f} us/sample")


def main() -> None:
    """Train, run the fault-free and fault scenarios, score, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer days and faults")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="residual", choices=("residual", "iforest"))
    ap.add_argument("--fine-days", type=float, default=0.0,
                    help="train every layer on the last N days at one minute and give the "
                         "generic models the rest as 15-minute means (default: all at 1 min)")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="false alarms per series per week (alarms.anomaly.false_alarms_per_week)")
    args = ap.parse_args()
    wall = time.perf_counter()
    site = load_site(REPO / "config/cyberport5.yaml")
    rng = np.random.default_rng(args.seed)
    model = PlantModel(site, seed=args.seed)
    sensor = SensorFaults(seed=args.seed)
    # ten days: the generic models' profiles hold the week before the fault-free days (the
    # weekly change a Monday morning brings is then known); --quick: too short for that
    train_days, clean_days = (2, 1) if args.quick else (10, 2)
    n_sensor, n_equip = (2, 1) if args.quick else (5, 3)
    t = T0
    train = run(model, t, t + train_days * 86400, [], sensor)
    t += train_days * 86400
    from dcim.analytics.anomaly import DetectorConfig
    from dcim.analytics.anomaly_generic import GenericConfig
    # as the service runs it: generic models followed online, the site's budget
    det = Detector(site, DetectorConfig(model_method=args.method, follow=True,
                                        generic=GenericConfig(false_alarms_per_week=args.budget),
                                        generic_fit_s=2 * 86400.0))
    # as AnomalyStage reads the store by default: every layer gets all of it at one minute;
    # --fine-days N: the last N days at one minute, the rest as 15-minute means for the generic
    # models' profiles only (AnomalyStage(training_s=N days, profile_s=10 days))
    fine, older = (split_history(train, t - args.fine_days * 86400, 900.0) if args.fine_days
                   else (train, {}))
    t_fit = time.perf_counter()
    det.fit(fine, now_ns=int(t * NS), profile_history=older)
    t_fit = time.perf_counter() - t_fit
    clean = run(model, t, t + clean_days * 86400, [], sensor)
    t += clean_days * 86400
    fa = det.detect(clean)
    faults, t_end = schedule(model, t, n_sensor, n_equip, rng)
    scen = run(model, t, t_end, faults, sensor)
    t_scen = time.perf_counter()
    alerts = det.detect(scen)  # every sample new to the followed generic models: the online cost
    t_scen = time.perf_counter() - t_scen
    rows = score(site, alerts, faults, scen)
    print(f"# bench/anomaly.py seed={args.seed} quick={args.quick} method={args.method}")
    print(f"# {machine()}")
    print(f"# train {train_days} d, fault-free eval {clean_days} d, scenario "
          f"{(t_end - t) / 3600:.0f} h at {STEP:.0f} s; {len(scen)} series; fit {t_fit:.1f} s")
    print("\nkind              n  recall  delay_med  delay_p90  alerts  precision  "
          "first_layer              status_recall")
    for r in rows:
        def s(x: object, f: str = "{:.0f}") -> str:
            return "-" if x is None else f.format(x)
        print(f"{r['kind']:<17}{r['n']:>2}  {r['recall']:>6.2f}  {s(r['delay_med_s']):>8}s"
              f"  {s(r['delay_p90_s']):>8}s  {r['alerts']:>6}  {s(r['precision'], '{:.2f}'):>9}"
              f"  {r['first_layer']:<24} {s(r['status_recall'], '{:.2f}')}")
    print(f"\nfalse alarms per day on fault-free data ({clean_days} d):")
    by: dict[str, int] = {}
    for a in fa:
        by[f"{a.layer}/{a.kind}"] = by.get(f"{a.layer}/{a.kind}", 0) + 1
    for k, c in sorted(by.items()):
        print(f"  {k:<28}{c / clean_days:>7.1f}")
    print(f"  {'total':<28}{len(fa) / clean_days:>7.1f}")
    series_days = len(clean) * clean_days
    gen = [a for a in fa if a.layer == "generic"]
    print(f"false alarms per series-day: generic {len(gen) / series_days:.4f}, all layers "
          f"{len(fa) / series_days:.4f} ({len(clean)} series); budget {args.budget:g}/week = "
          f"{args.budget / 7:.4f}/day; paged (confidence >= 0.9): "
          f"{sum(a.confidence >= 0.9 for a in fa) / series_days:.4f}")
    points: dict[str, int] = {}
    for a in gen:
        points[a.series.point] = points.get(a.series.point, 0) + 1
    print("  generic false alarms by point: " + ", ".join(
        f"{k} {c}" for k, c in sorted(points.items(), key=lambda x: -x[1])[:8]))
    declined = sorted(det.notes.items())
    print(f"notes ({len(declined)}): " + "; ".join(f"{k}: {v}" for k, v in declined[:4]))
    nb = nab(RobustConfig())
    print(f"\nNAB machine_temperature, robust layer (window recall and FP count, not NAB score): "
          f"{nb['detected']}/{nb['windows']} windows {nb['per_window']}, {nb['fp']} FP "
          f"of {nb['alerts']} alerts after probation")
    n_scen = sum(len(x.values) for x in scen.values())
    print(f"\nscenario, all layers with the generic models followed: {n_scen / t_scen:,.0f} "
          f"samples/s ({n_scen:,} samples, {t_scen:.1f} s)")
    print("\nthroughput (scenario batch, generic models already advanced):")
    for name, rate, n in throughput(det, scen):
        print(f"  {name:<10}{rate:>14,.0f} samples/s  ({n:,} samples)")
    print("\nexamples:")
    for a in alerts[:: max(1, len(alerts) // 6)][:6]:
        print(f"  [{a.layer}/{a.kind}/{a.severity}] {a.message}")
    print(f"\nwall {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "nab":
        nab_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "generic":
        generic_main(sys.argv[2:])
    else:
        main()
