"""History-side analytics: today's PUE family and the anomaly detectors, from the store.

What needs history runs here on a schedule: the day's PUE, CUE and WUE from energy counters
since local midnight, and the anomaly detectors (trained on days of data). What needs only
the newest values (unit states, energisation, redundancy, live PUE) is the live state's job
(dcim/live/); nothing here re-derives it from storage.

Results go into the sample sink (the durable store-and-forward in the running system), as
ordinary series of measurement `analytics`, device = the site id: `pue_today`, `cue_today`,
`wue_today`, `anomalies_active`, `anomaly_models_trained` (NaN with quality bad when a figure
is withheld). The live state adds `pue_live`, redundancy and the Tier III verdicts.

A site without the meters PUE needs (a monitoring-only site) gets no PUE figures at all: the
reason is said once at start and in `withheld`, and the series are written as NaN/bad.

A failing run logs one line with its cause, again only when the cause changes (the traceback
goes to DEBUG). `AnalysisResult.anomaly_status` says what the anomaly layers declined and why
(`AnomalyStage.status()`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dcim.analytics.pue import SiteFigures, periods, site_figures
from dcim.collectors.base import SampleSink
from dcim.live.build import pue_meters
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
    live: SiteFigures | None  # over the live window, from the store (None: PUE withheld)
    today: SiteFigures | None
    samples: list[Sample]
    anomalies: list[Any] = field(default_factory=list)  # active Anomaly records, newest data
    withheld: dict[str, str] = field(default_factory=dict)  # analysis -> what the site lacks
    anomaly_status: dict[str, Any] = field(default_factory=dict)  # AnomalyStage.status()


class AnalyticsService:
    """Runs today's PUE family and anomaly detection every interval; results into a sink."""

    def __init__(self, site: Site, storage: Storage, *, sink: SampleSink | None = None,
                 interval_s: float = 60.0, clock: Callable[[], float] = time.time,
                 anomalies: bool = True, model_dir: str | None = None,
                 on_result: Callable[[], None] | None = None):
        self.site = site
        self.storage = storage
        self.on_result = on_result  # told after each run (the live state takes the results)
        self.sink = sink
        self.interval_s = interval_s
        self._clock = clock
        self.meters, self.why_no_pue = pue_meters(site)
        if self.why_no_pue is not None:
            log.info("PUE withheld", extra={"reason": self.why_no_pue})
        self.last: AnalysisResult | None = None
        self.anomaly_stage = None
        if anomalies:
            from dcim.anomaly_service import AnomalyStage

            self.anomaly_stage = AnomalyStage(site, storage, model_dir=model_dir)
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.last_error = ""

    def _key(self, point: str) -> SeriesKey:
        return SeriesKey(MEASUREMENT, self.site.id, point)

    def latest(self) -> tuple[SiteFigures | None, Sequence[Any]]:
        """Today's figures and the open anomalies of the last run (for the live state)."""
        if self.last is None:
            return None, ()
        return self.last.today, tuple(self.last.anomalies)

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
        """Compute every result for the instant now_ns and hand the samples to the sink (or,
        without one, write them to the store directly: tools and backfills)."""
        now_ns = now_ns if now_ns is not None else int(self._clock() * 1e9)
        tz = self.site.config.site.timezone
        live_p = periods("live", now_ns, tz)
        day_p = periods("day", now_ns, tz, to_date=True)
        live: SiteFigures | None = None
        today: SiteFigures | None = None
        withheld: dict[str, str] = {}
        if self.meters is not None:
            data = await self._series(self.meters.all_series(), day_p.start_ns - LOOKBACK_NS,
                                      now_ns + 1)
            live = site_figures(self.site, data, live_p.start_ns, live_p.end_ns,
                                meters=self.meters)
            today = site_figures(self.site, data, day_p.start_ns, day_p.end_ns,
                                 meters=self.meters)
        elif self.why_no_pue is not None:
            withheld["pue"] = self.why_no_pue
        samples = self._samples(now_ns, today)
        current = []
        status: dict[str, Any] = {}
        if self.anomaly_stage is not None and self.anomaly_stage.withheld is not None:
            withheld["anomalies"] = self.anomaly_stage.withheld
        elif self.anomaly_stage is not None:
            from dcim.anomaly_service import active

            current = active(await self.anomaly_stage.run(now_ns), now_ns)
            samples.append(Sample(self._key("anomalies_active"), now_ns, float(len(current))))
            samples.append(Sample(self._key("anomaly_models_trained"), now_ns,
                                  1.0 if self.anomaly_stage.trained else 0.0))
            status = self.anomaly_stage.status()
        if self.sink is not None:
            self.sink.add(samples)
        else:
            await self.storage.write(samples)
        self.last = AnalysisResult(now_ns, live, today, samples, current, withheld, status)
        return self.last

    def _samples(self, t: int, today: SiteFigures | None) -> list[Sample]:
        out: list[Sample] = []

        def put(point: str, value: float | None) -> None:
            ok = value is not None and math.isfinite(value)
            out.append(Sample(self._key(point), t, float(value) if ok else math.nan,  # type: ignore[arg-type]
                              Quality.GOOD if ok else Quality.BAD))

        put("pue_today", today.pue.value if today is not None else None)
        put("cue_today", today.cue.value if today is not None else None)
        put("wue_today", today.wue.value if today is not None else None)
        return out

    async def start(self) -> None:
        """Run every interval in the background."""
        self._task = asyncio.create_task(self._run(), name="dcim-analytics")

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
                if self.on_result is not None:
                    self.on_result()
                if self.last_error:
                    log.info("analytics runs again", extra={"after_failures": self.failures})
                self.last_error, self.failures = "", 0
            except Exception as exc:  # one bad run is logged; the next one tries again
                self.failures += 1
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # one line per distinct cause; traceback at DEBUG
                    log.error("analytics run failed", extra={"error": error})
                    log.debug("analytics run failure", exc_info=True)
                self.last_error = error
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Stop the background runs."""
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None
