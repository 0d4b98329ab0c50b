"""Backfill a store with accelerated plant history (no wire): `dcim simulate --backfill 30d`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from tqdm import tqdm

from dcim.site import Site
from dcim.simulators.faults import FaultSpec, category_of, parse_duration
from dcim.simulators.snapshot import DeviceHealth, Snapshot
from dcim.storage.base import Quality, Sample, SeriesKey, Storage
from dcim.storage.writer import BatchWriter

if TYPE_CHECKING:
    from dcim.live.service import LiveState
    from dcim.simulators.plant import PlantModel


BACKFILL_BATCH = 100_000


def snapshot_samples(site: Site, snapshot: Snapshot,
                     keys: dict[tuple[str, str], SeriesKey] | None = None) -> Iterator[Sample]:
    """Samples of every point in a snapshot, as a perfect collector would store them."""
    t_ns = int(round(snapshot.time_s * 1e9))
    for device_id, reading in snapshot.devices.items():
        device = site.devices.get(device_id)
        if device is None:
            continue
        for point, value in reading.values.items():
            health = reading.point_health.get(point, reading.health)
            quality = Quality.BAD if health is DeviceHealth.NO_DATA else Quality.GOOD
            key = keys.get((device_id, point)) if keys is not None else None
            if key is None:
                key = device.series(point)
                if keys is not None:
                    keys[(device_id, point)] = key
            yield Sample(key, t_ns, float(value), quality)


def equipment_timeline(faults: Sequence[FaultSpec], start_s: float, end_s: float,
                       step_s: float) -> list[tuple[float, str, str, bool]]:
    """(time, kind, target, active) changes of the equipment faults of a scenario, on the step
    grid from start_s; sensor and comms faults are not part of a backfill (no wire)."""
    changes = []
    for spec in faults:
        if category_of(spec.kind) != "equipment":
            continue
        on = start_s + parse_duration(spec.at)
        off = on + parse_duration(spec.duration) if spec.duration is not None else None
        for t, active in ((on, True), (off, False)):
            if t is None or t >= end_s:
                continue
            grid = start_s + math.ceil(max(0.0, t - start_s) / step_s) * step_s
            changes.append((grid, spec.kind, spec.target, active))
    return sorted(changes, key=lambda c: (c[0], c[3]))


@dataclass(frozen=True)
class Tier:
    """One stretch of a tiered backfill: the last `span_s` before the end (up to the next,
    finer tier), a step every `step_s`, the live state rebuilt every `live_every_s` and at
    the steps in the `lead_s` before (live PUE needs energy counters from before its
    15-minute window), which are `lead_step_s` apart when set."""

    span_s: float
    step_s: float
    live_every_s: float
    lead_s: float = 0.0
    lead_step_s: float = 0.0


class Run(NamedTuple):
    """One stretch of history as planned: from, to (exclusive), and its tier's cadences."""

    start_s: float
    end_s: float
    step_s: float
    live_every_s: float  # 0: the live state rebuilt every step
    lead_s: float = 0.0
    lead_step_s: float = 0.0


# The demo's history (dcim/demo.py): a week, coarse (20 min; 10 min before each live PUE,
# every 3 h), for the anomaly training (three days of one-minute means, six hours at least)
# and a week's trend; the last 6.5 h a sample a minute, live PUE every 5 min, for the
# dashboard's 6-hour trend (5-minute buckets) and the anomaly detection window (2 h of
# one-minute means). A week of every point every minute would be 23 M samples; this is 2.0 M.
DEMO_TIERS = (Tier(7 * 86400.0, 1200.0, 3 * 3600.0, lead_s=1200.0, lead_step_s=600.0),
              Tier(6.5 * 3600.0, 60.0, 300.0))


def plan_runs(start_s: float, end_s: float, step_s: float,
              tiers: Sequence[Tier] = ()) -> list[Run]:
    """The stretches covering start..end, end included, coarsest first; without tiers one
    stretch of step_s, the live state rebuilt every step."""
    if not tiers:
        steps = int((end_s - start_s) // step_s) + 1
        return [Run(start_s, start_s + steps * step_s, step_s, 0.0)]
    ordered = sorted(tiers, key=lambda t: -t.span_s)
    froms = [max(start_s, end_s - t.span_s) for t in ordered]
    runs = []
    for i, tier in enumerate(ordered):
        lo = froms[i]
        hi = froms[i + 1] if i + 1 < len(ordered) else end_s + tier.step_s / 2
        if hi > lo:
            runs.append(Run(lo, hi, tier.step_s, tier.live_every_s, tier.lead_s,
                            tier.lead_step_s))
    return runs


def segments(run: Run) -> list[tuple[float, float, float]]:
    """(from, to, step_s) of one run: its step, and the lead step in the lead before each
    rebuild that is due (every live_every_s from the run's start)."""
    fine = run.lead_step_s
    if run.live_every_s <= 0 or not 0 < fine < run.step_s or run.lead_s <= 0:
        return [(run.start_s, run.end_s, run.step_s)]
    out: list[tuple[float, float, float]] = []
    t, due = run.start_s, run.start_s + run.live_every_s
    while t < run.end_s:
        for until, step in ((due - run.lead_s, run.step_s), (due, fine)):
            until = min(until, run.end_s)
            if until > t:
                out.append((t, until, step))
                t = until
        due += run.live_every_s
    return out


def _on_grid(t: float, lo: float, step_s: float) -> float:
    """The first time of the grid lo + k step_s at or after t."""
    return lo + math.ceil((t - lo) / step_s - 1e-9) * step_s


def _steps(lo: float, hi: float, step_s: float) -> int:
    return max(0, math.ceil((hi - lo) / step_s - 1e-9))


async def _flush_behind(writer: BatchWriter, flushing: asyncio.Task[bool] | None
                        ) -> asyncio.Task[bool] | None:
    """Write full batches while the next steps are computed (the store's own thread works
    beside the plant); at most one batch waits beyond the one being written."""
    if flushing is not None and flushing.done():
        flushing.result()  # a failure surfaces here, not lost in a task
        flushing = None
    full = writer.options.batch_size
    if flushing is not None and writer.pending >= 2 * full:
        await flushing
        flushing = None
    if flushing is None and writer.pending >= full:
        flushing = asyncio.create_task(writer.flush(), name="dcim-backfill-flush")
    await asyncio.sleep(0)  # let the flush hand its batch to the store's thread
    return flushing


@contextlib.contextmanager
def _history_is_not_news() -> Iterator[None]:
    """The live state logs each unit and verdict change as it happens; while history is
    written those are stored (series `transitions`), not told: INFO lines are held back."""
    logger = logging.getLogger("dcim.live.service")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


async def backfill(site: Site, storage: Storage, *, start_s: float, end_s: float, step_s: float,
                   seed: int = 0, progress: bool | None = True,
                   plant: PlantModel | None = None,
                   faults: Sequence[FaultSpec] = (), live: bool = False,
                   tiers: Sequence[Tier] = ()) -> dict[str, float]:
    """Step the plant from start to end and write every point; returns counts and timings.

    Equipment faults of a scenario (`faults`, offsets from start_s) trip and restore units
    on the way, so the history holds incidents as the live simulators would produce them.
    With `live`, the steps also go through a live state (dcim/live/), so the history holds
    what the running system derives and stores too: live PUE, redundancy, unit transitions
    (every step; with `tiers`, every tier's live_every_s). `tiers` make older history coarser
    (DEMO_TIERS). `progress`: a bar on stderr (None: only on a terminal)."""
    if plant is None:
        from dcim.simulators.plant import PlantModel  # scipy: only when history is written

        plant = PlantModel(site, seed=seed)
    # history goes straight to the store in large transactions (no live data to interleave)
    writer = BatchWriter(storage, site.config.storage.write.model_copy(
        update={"batch_size": BACKFILL_BATCH}))
    keys: dict[tuple[str, str], SeriesKey] = {}
    state: LiveState | None = None
    if live:
        from dcim.live.service import LiveState

        # live PUE over 15 min every 5 min of history is plenty, and it is the costly part
        state = LiveState(site, writer, store_every_s=max(step_s, 60.0),
                          pue_every_s=max(step_s, 300.0))
    runs = plan_runs(start_s, end_s, step_s, tiers)
    changes = equipment_timeline(faults, start_s, runs[-1].end_s, step_s)
    steps = sum(_steps(*seg) for run in runs for seg in segments(run))
    started = time.perf_counter()
    written = 0
    flushing: asyncio.Task[bool] | None = None
    with _history_is_not_news(), tqdm(total=steps, desc="backfill", unit="step", leave=False,
                                      disable=None if progress is None else not progress) as bar:
        for run in runs:
            if state is not None and run.live_every_s > 0:
                # a hair under the interval: float grids must not skip a due rebuild
                state.store_every_s = state.pue_every_s = run.live_every_s * 0.999
            due_s = -math.inf
            for lo, hi, step in segments(run):
                mine = [c for c in changes if lo <= c[0] < hi]
                cuts = {_on_grid(c[0], lo, step) for c in mine}
                bounds = sorted({lo, hi} | {c for c in cuts if c < hi})
                for a, b in zip(bounds, bounds[1:]):
                    for t, kind, target, active in mine:
                        if _on_grid(t, lo, step) == a:
                            plant.set_fault(kind, target, active)
                            due_s = -math.inf  # see the change at once
                    for snapshot in plant.simulate_range(a, b, step):
                        batch = list(snapshot_samples(site, snapshot, keys))
                        now_s = snapshot.time_s
                        if state is None:
                            writer.add(batch)
                        else:
                            state.add(batch)
                            if run.live_every_s <= 0 or now_s >= due_s - run.lead_s - step * 1e-3:
                                state.rebuild(int(round(now_s * 1e9)))
                                if now_s >= due_s - step * 1e-3:
                                    due_s = now_s + run.live_every_s
                        written += len(batch)
                        flushing = await _flush_behind(writer, flushing)
                        bar.update()
    if flushing is not None:
        await flushing
    await writer.close()
    return {"steps": steps, "samples": written, "seconds": time.perf_counter() - started,
            "faults": len(changes)}
