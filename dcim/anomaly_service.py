"""Anomaly detection on a schedule: one-minute aggregates from storage into the Detector.

Training reads `training_s` of history (one-minute means; status words as maxima; ten days,
so the generic models' seasonal profiles hold the week before) and, when `profile_s` is longer,
the time before it as 15-minute means for those profiles alone; it fits the baselines and one
model per device class, saves each model with its version next to the
store, and is repeated when `retrain_due` says so (weekly by default). Detection reads the
last `window_s` the same way; layers that need training wait until enough history exists.

Every start trains again from the store (the baselines need the history anyway); the saved
models (`<class>.npz` + `<class>.json`, 0600, in a 0700 folder) are the record of what ran.
Models pickled by older versions (`*.pkl`) are never loaded, only reported once.

A site with no point of a role the detectors read (a monitoring-only site without roles) has
nothing to detect: `withheld` says why, once in the log, and runs return no anomalies.

Once trained, the generic detector runs on every series read, at the threshold set by the
site's false-alarm budget (`alarms.anomaly.false_alarms_per_week`), its models followed online
(each new minute scored once). Training runs in a worker thread so collection goes on. What a
layer declined, and series the site gives no role, are in `status()` and logged once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dcim.analytics.anomaly import Anomaly, Batch, Detector, DetectorConfig, SeriesData
from dcim.analytics.anomaly_model import LEGACY_SUFFIX, MODEL_SUFFIX, retrain_due, save_model
from dcim.site import Site
from dcim.storage.base import Aggregate, SeriesKey, Storage

log = logging.getLogger(__name__)

NS = 1_000_000_000
ROLES = ("inlet_temp_c", "inlet_rh_pct", "supply_temp_c", "return_temp_c", "chw_supply_temp_c",
         "chw_return_temp_c", "fan_power_kw", "valve_pct", "power_kw", "cooling_kw",
         "it_power_kw", "output_power_kw", "input_power_kw", "load_pct", "unit_status", "fault")
MAX_ROLES = ("unit_status", "fault")  # a trip inside a minute must not average away
UNTRAINED_LAYERS = ("envelope", "rate", "sensor", "status")


class AnomalyStage:
    """Trains and runs the Detector over a site's stored series."""

    def __init__(self, site: Site, storage: Storage, *, model_dir: str | Path | None = None,
                 window_s: float = 7200.0, training_s: float = 10 * 86400.0,
                 min_training_s: float = 6 * 3600.0, step_s: float = 60.0,
                 retrain_every_s: float = 7 * 86400.0, generic_fit_s: float = 2 * 86400.0,
                 profile_s: float | None = None, profile_step_s: float = 900.0):
        self.site = site
        self.storage = storage
        self.model_dir = Path(model_dir) if model_dir else Path("var") / "models" / site.id
        self.window_s, self.training_s, self.step_s = window_s, training_s, step_s
        self.profile_s = training_s if profile_s is None else profile_s
        self.profile_step_s = profile_step_s
        self.min_training_s = min_training_s
        self.retrain_every_s = retrain_every_s
        # ten days at one minute for every layer (the week before the day scored, and the
        # reference before it); the generic models are warmed sample by sample on the last two
        # only (~30 us a sample and series). A shorter training_s with a longer profile_s reads
        # the older part as 15-minute means for the generic models' profiles alone: cheaper
        # (672 values a series instead of 10,080), but on the simulator's fault-free Monday and
        # Tuesday 3 + 7 days raised 0.170 false alarms per series-day against 0.107 with ten
        # days at one minute (budget 0.143): counters get no coarse history, and the class
        # models trained on three days raise more (docs/anomaly.md)
        self.config = DetectorConfig(
            generic=replace(DetectorConfig().generic, false_alarms_per_week=(
                site.config.alarms.anomaly.false_alarms_per_week)),
            generic_fit_s=generic_fit_s, follow=True)
        self._told: set[str] = set()  # causes already logged, across retrainings
        self.keys = anomaly_keys(site)
        self.withheld = why_no_anomalies(site)
        if self.withheld is not None:
            log.info("anomaly detection withheld", extra={"reason": self.withheld})
        # said, not silent: the points the detectors do not read (no detector role, or meters)
        self.unread = unread_points(site, self.keys)
        if self.keys and self.unread:
            log.info("anomaly detection reads the points with a detector role only",
                     extra={"read": len(self.keys), "not_read": sum(self.unread.values()),
                            "not_read_points": ", ".join(list(self.unread)[:12])})
        self._max = {k for k in self.keys if k.point in ("unit_status", "fault")}
        self.detector: Detector | None = None
        self.trained = False
        self._last_attempt_ns: int | None = None
        self._legacy_told = False

    async def _first_data_ns(self, start_ns: int, end_ns: int) -> int | None:
        """Start of the stored history in [start, end), found with hourly counts of one series."""
        probe = next((k for k in self.keys if k.point.startswith("inlet_temp")), self.keys[0])
        hours = await self.storage.read_aggregate(probe, start_ns, end_ns, 3600 * NS,
                                                  Aggregate.COUNT)
        first = next((b.start_ns for b in hours if b.count), None)
        if first is None:
            return None
        # to the minute: the empty minutes of the first hour are before the history began,
        # not a dropout (every series once read "no good value for 57 samples" at start-up)
        minutes = await self.storage.read_aggregate(probe, max(first, start_ns),
                                                    min(first + 3600 * NS, end_ns), 60 * NS,
                                                    Aggregate.COUNT)
        first = next((b.start_ns for b in minutes if b.count), first)
        return max(first, start_ns)

    async def _batch(self, start_ns: int, end_ns: int, step_s: float | None = None,
                     find_first: bool = True) -> Batch:
        every = int((step_s or self.step_s) * NS)
        batch: Batch = {}
        if find_first:
            first = await self._first_data_ns(start_ns, end_ns)
            if first is None:
                return batch
            start_ns = first
        for key in self.keys:
            fn = Aggregate.MAX if key in self._max else Aggregate.MEAN
            buckets = await self.storage.read_aggregate(key, start_ns, end_ns, every, fn)
            if not buckets or (not find_first and all(b.value is None for b in buckets)):
                continue
            batch[key] = SeriesData(
                np.array([b.start_ns for b in buckets], dtype=np.int64),
                np.array([np.nan if b.value is None else b.value for b in buckets], dtype=float))
        return batch

    def _due(self, now_ns: int) -> bool:
        if self.detector is None:
            return True
        if not self.trained:  # try again hourly: history may now be long enough
            return self._last_attempt_ns is None or now_ns - self._last_attempt_ns >= 3600 * NS
        return any(retrain_due(m, now_ns, self.retrain_every_s)
                   for m in self.detector.models.values())

    async def train(self, now_ns: int) -> None:
        """Fit on the stored history; save the models; fall back to untrained layers."""
        self._last_attempt_ns = now_ns
        history = await self._batch(now_ns - int(self.training_s * NS), now_ns)
        span_s = 0.0
        for series in history.values():
            seen = series.times_ns[np.isfinite(series.values)]
            if len(seen) > 1:
                span_s = max(span_s, float(seen[-1] - seen[0]) / NS)
        if span_s < self.min_training_s:
            self.detector = Detector(self.site, replace(self.config, layers=UNTRAINED_LAYERS),
                                     told=self._told)
            self.trained = False
            log.info("anomaly models not trained yet: not enough history",
                     extra={"history_h": round(span_s / 3600, 2),
                            "needed_h": self.min_training_s / 3600})
            return
        detector = Detector(self.site, self.config, told=self._told)
        # the profiles' older history, as 15-minute means aligned to whole buckets
        fine_from = min((int(x.times_ns[0]) for x in history.values() if x.times_ns.size),
                        default=now_ns)
        step = int(self.profile_step_s * NS)
        coarse_from = (now_ns - int(self.profile_s * NS)) // step * step
        older = (await self._batch(coarse_from, fine_from // step * step, self.profile_step_s,
                                   find_first=False)) if coarse_from < fine_from // step * step \
            else {}
        # seconds of CPU on a large site: in a thread, so the collectors' loop keeps running
        await asyncio.to_thread(detector.fit, history, now_ns, "1", older)
        self.model_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._tell_legacy()
        for cls, model in detector.models.items():
            save_model(model, self.model_dir / f"{cls}{MODEL_SUFFIX}")
        self.detector, self.trained = detector, True
        log.info("anomaly models trained", extra={"classes": sorted(detector.models),
                                                  "history_h": round(span_s / 3600, 1)})

    def _tell_legacy(self) -> None:
        """Say once that pickled models of an older version are left alone, never loaded."""
        if self._legacy_told:
            return
        self._legacy_told = True
        for old in sorted(self.model_dir.glob(f"*{LEGACY_SUFFIX}")):
            log.warning("pickled anomaly model of an older version ignored (never loaded: a "
                        "pickle can run code); retrained models are saved as .npz + .json, "
                        "delete it", extra={"path": str(old)})

    async def run(self, now_ns: int) -> list[Anomaly]:
        """Anomalies in the last window (retraining first when due); none without keys."""
        if not self.keys:
            return []
        if self._due(now_ns):
            await self.train(now_ns)
        assert self.detector is not None
        batch = await self._batch(now_ns - int(self.window_s * NS), now_ns)
        return self.detector.detect(batch)

    def status(self) -> dict[str, Any]:
        """What the stage does and what it declined: trained, withheld, and per layer or
        series why it does not run (unknown series run the generic detector only)."""
        notes = dict(self.detector.notes) if self.detector is not None else {}
        return {"trained": self.trained, "withheld": self.withheld, "series": len(self.keys),
                "not_read": dict(self.unread),
                "false_alarms_per_week": self.config.generic.false_alarms_per_week,
                "notes": notes}


def anomaly_keys(site: Site) -> list[SeriesKey]:
    """The series the detectors read: points with a detector role, meters aside; a CRAH only
    with the mechanical unit it monitors (its features need the hall that unit serves)."""
    return [d.series(p.name) for d in site.devices.values() for p in d.profile.points
            if p.role in ROLES and d.device_type != "meter"
            and (d.device_type != "crah" or d.monitors in site.mechanical)]


def unread_points(site: Site, keys: list[SeriesKey]) -> dict[str, int]:
    """Points of the site the detectors do not read, by point name (how many series each),
    the most common first: voltages, battery figures, meters' series and the like."""
    read = set(keys)
    counts: dict[str, int] = {}
    for d in site.devices.values():
        for p in d.profile.points:
            if d.series(p.name) not in read:
                counts[p.name] = counts.get(p.name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def why_no_anomalies(site: Site) -> str | None:
    """What the site lacks for anomaly detection, or None when the detectors have series."""
    if anomaly_keys(site):
        return None
    loose = [d.id for d in site.devices_of_type("crah") if d.monitors not in site.mechanical]
    also = (f"; CRAH devices count only with the mechanical unit they monitor "
            f"({', '.join(loose[:3])} monitor none)") if loose else ""
    return (f"anomaly detection needs points with roles ({', '.join(ROLES[:4])}, ...) on "
            f"devices other than meters; the site has none{also}")


def active(anomalies: list[Anomaly], now_ns: int, step_s: float = 60.0) -> list[Anomaly]:
    """Anomalies still going on at now (their last sample within two steps)."""
    return [a for a in anomalies if a.last_ns >= now_ns - int(2 * step_s * NS)]


def as_series(site: Site, point: str) -> SeriesKey:
    """Where the service stores an anomaly count."""
    return SeriesKey("analytics", site.id, point)
