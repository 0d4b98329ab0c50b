"""The analytics service: reads storage on a schedule, runs the pure analytics, writes results.

Results are stored as ordinary series (measurement `analytics`, device = the site id), so
dashboards and reports read them like any other data:

- `pue_live`, `pue_today`, `ppue_cooling_live`, `ppue_distribution_live`, `dcie_live`,
  `cue_today`, `wue_today`, `pue_live_coverage` (NaN with quality bad when a figure is withheld)
- `redundancy_<group>_needed`, `_available`, `_spare`; `concurrently_maintainable`,
  `fault_tolerant` (1/0); `racks_on_one_feed`; `single_points_of_failure`
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from dcim.analytics.pue import SiteFigures, energy_meters, periods, site_figures
from dcim.analytics.availability import FEED_DEAD_KW, TRIPPED, UTILITY_LOST_KW
from dcim.analytics.redundancy import RedundancyReport, analyse
from dcim.analytics.topology import Loads, compile_topology
from dcim.site import Site
from dcim.storage.base import Quality, Sample, SeriesKey, Storage
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)

MEASUREMENT = "analytics"
LOOKBACK_NS = 10 * 60 * 1_000_000_000  # read counters a little before the period: edge interpolation


@dataclass
class AnalysisResult:
    """What one run computed."""

    time_ns: int
    live: SiteFigures
    today: SiteFigures
    redundancy: RedundancyReport
    samples: list[Sample]
    anomalies: list = field(default_factory=list)  # active Anomaly records, newest data


def status_keys(site: Site) -> list[SeriesKey]:
    """The series unit_states_from_latest and rack_loads read: status words, rack feeds, meters."""
    return [d.series(p.name) for d in site.devices.values() for p in d.profile.points
            if p.role in ("unit_status", "it_power_kw", "power_kw")]


def unit_states_from_latest(site: Site, latest: dict[SeriesKey, Sample]) -> dict[str, bool]:
    """Which components are down, from the newest samples: tripped units, dead feeds, lost utility."""
    states: dict[str, bool] = {}
    value = {(k.device, k.point): s.value for k, s in latest.items() if s.quality is Quality.GOOD}
    for device in site.devices.values():
        status = value.get((device.id, "unit_status"))
        if status is not None and status >= TRIPPED and (
                device.monitors in site.electrical or device.monitors in site.mechanical):
            states[device.monitors] = False
    # a PDU whose every rack feed reads zero while the racks draw on their other feed is open
    feeds: dict[str, list[float]] = {}
    for rack in site.racks.values():
        monitor = f"RM-{rack.id}"
        for side, pdu in (("a", rack.feed_a), ("b", rack.feed_b)):
            kw = value.get((monitor, f"feed_{side}_power_kw"))
            if pdu is not None and kw is not None:
                feeds.setdefault(pdu, []).append(kw)
    for pdu, kws in feeds.items():
        if kws and max(kws) < FEED_DEAD_KW:
            states[pdu] = False
    for device in site.devices_of_type("meter"):
        comp = site.electrical.get(device.monitors)
        kw = value.get((device.id, "power_kw"))
        if comp is not None and comp.type == "utility_feed" and kw is not None and kw < UTILITY_LOST_KW:
            states[comp.id] = False
    return states


def rack_loads(site: Site, latest: dict[SeriesKey, Sample]) -> dict[str, float]:
    """Measured IT load per rack (sum of its feeds), where both readings are good."""
    out: dict[str, float] = {}
    for rack in site.racks.values():
        total = 0.0
        for side in ("a", "b"):
            sample = latest.get(SeriesKey("rack_monitor", f"RM-{rack.id}", f"feed_{side}_power_kw"))
            if sample is None or sample.quality is not Quality.GOOD:
                break
            total += sample.value
        else:
            out[rack.id] = total
    return out


class AnalyticsService:
    """Runs PUE and redundancy analytics every interval and stores the results."""

    def __init__(self, site: Site, storage: Storage, *, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.time, anomalies: bool = True,
                 model_dir: str | None = None):
        self.site = site
        self.storage = storage
        self.interval_s = interval_s
        self._clock = clock
        self.meters = energy_meters(site)
        self.topology = compile_topology(site)
        self._status_keys = status_keys(site)
        self.last: AnalysisResult | None = None
        self.anomaly_stage = None
        if anomalies:
            from dcim.anomaly_service import AnomalyStage

            self.anomaly_stage = AnomalyStage(site, storage, model_dir=model_dir)
        self._task: asyncio.Task[None] | None = None

    def _key(self, point: str) -> SeriesKey:
        return SeriesKey(MEASUREMENT, self.site.id, point)

    async def _series(self, keys: Iterable[SeriesKey], start_ns: int, end_ns: int
                      ) -> dict[SeriesKey, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        data = {}
        for key in keys:
            rows = await self.storage.read_range(key, start_ns, end_ns)
            data[key] = (np.array([r.time_ns for r in rows], dtype=np.int64),
                         np.array([r.value for r in rows], dtype=float),
                         np.array([int(r.quality) for r in rows], dtype=np.int8))
        return data

    async def run_once(self, now_ns: int | None = None) -> AnalysisResult:
        """Compute and store every result for the instant now_ns."""
        now_ns = now_ns if now_ns is not None else int(self._clock() * 1e9)
        tz = self.site.config.site.timezone
        live_p = periods("live", now_ns, tz)
        day_p = periods("day", now_ns, tz, to_date=True)
        data = await self._series(self.meters.all_series(), day_p.start_ns - LOOKBACK_NS, now_ns + 1)
        live = site_figures(self.site, data, live_p.start_ns, live_p.end_ns, meters=self.meters)
        today = site_figures(self.site, data, day_p.start_ns, day_p.end_ns, meters=self.meters)
        latest = await self.storage.read_latest(self._status_keys)
        states = unit_states_from_latest(self.site, latest)
        loads = rack_loads(self.site, latest)
        report = analyse(self.topology, states, Loads(rack_kw=loads or None))
        samples = self._samples(now_ns, live, today, report)
        current = []
        if self.anomaly_stage is not None:
            from dcim.anomaly_service import active

            current = active(await self.anomaly_stage.run(now_ns), now_ns)
            samples.append(Sample(self._key("anomalies_active"), now_ns, float(len(current))))
            samples.append(Sample(self._key("anomaly_models_trained"), now_ns,
                                  1.0 if self.anomaly_stage.trained else 0.0))
        await self.storage.write(samples)
        self.last = AnalysisResult(now_ns, live, today, report, samples, current)
        return self.last

    def _samples(self, t: int, live: SiteFigures, today: SiteFigures,
                 report: RedundancyReport) -> list[Sample]:
        out: list[Sample] = []

        def put(point: str, value: float | None) -> None:
            ok = value is not None and math.isfinite(value)
            out.append(Sample(self._key(point), t, float(value) if ok else math.nan,  # type: ignore[arg-type]
                              Quality.GOOD if ok else Quality.BAD))

        put("pue_live", live.pue.value)
        put("pue_live_coverage", live.pue.coverage)
        put("pue_today", today.pue.value)
        put("ppue_cooling_live", live.ppue_cooling.value)
        put("ppue_distribution_live", live.ppue_distribution.value)
        put("dcie_live", live.dcie.value)
        put("cue_today", today.cue.value)
        put("wue_today", today.wue.value)
        for group in report.groups:
            put(f"redundancy_{group.id}_needed", group.needed)
            put(f"redundancy_{group.id}_available", group.available)
            put(f"redundancy_{group.id}_spare", group.available - group.needed)
        put("concurrently_maintainable", 1.0 if report.concurrently_maintainable else 0.0)
        put("fault_tolerant", 1.0 if report.fault_tolerant else 0.0)
        put("racks_on_one_feed", len(report.one_feed_racks))
        put("single_points_of_failure", len(report.single_points_of_failure))
        return out

    async def start(self) -> None:
        """Run every interval in the background."""
        self._task = asyncio.create_task(self._run(), name="dcim-analytics")

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # one bad run is logged; the next one tries again
                log.exception("analytics run failed")
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Stop the background runs."""
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None
