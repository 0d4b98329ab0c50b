"""Backfill a store with accelerated plant history (no wire): `dcim simulate --backfill 30d`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from dcim.site import Site
from dcim.simulators.faults import FaultSpec, category_of, parse_duration
from dcim.simulators.plant import PlantModel
from dcim.simulators.snapshot import DeviceHealth, Snapshot
from dcim.storage.base import Quality, Sample, SeriesKey, Storage
from dcim.storage.writer import BatchWriter

if TYPE_CHECKING:
    from dcim.live.service import LiveState


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


async def backfill(site: Site, storage: Storage, *, start_s: float, end_s: float, step_s: float,
                   seed: int = 0, progress: bool = True,
                   plant: PlantModel | None = None,
                   faults: Sequence[FaultSpec] = (), live: bool = False) -> dict[str, float]:
    """Step the plant from start to end and write every point; returns counts and timings.

    Equipment faults of a scenario (`faults`, offsets from start_s) trip and restore units
    on the way, so the history holds incidents as the live simulators would produce them.
    With `live`, every step also goes through a live state (dcim/live/), so the history holds
    what the running system derives and stores too: live PUE, redundancy, unit transitions."""
    plant = plant if plant is not None else PlantModel(site, seed=seed)
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
    steps = int((end_s - start_s) // step_s) + 1
    stop_s = start_s + steps * step_s
    changes = equipment_timeline(faults, start_s, stop_s, step_s)
    bounds = sorted({start_s, stop_s} | {t for t, *_ in changes})
    started = time.perf_counter()
    written = 0
    with tqdm(total=steps, desc="backfill", unit="step", disable=not progress) as bar:
        for lo, hi in zip(bounds, bounds[1:]):
            for t, kind, target, active in changes:
                if t == lo:
                    plant.set_fault(kind, target, active)
            for snapshot in plant.simulate_range(lo, hi, step_s):
                batch = list(snapshot_samples(site, snapshot, keys))
                if state is not None:
                    state.add(batch)
                    state.rebuild(int(round(snapshot.time_s * 1e9)))
                else:
                    writer.add(batch)
                written += len(batch)
                if writer.pending >= writer.options.batch_size:
                    await writer.flush()
                bar.update()
    await writer.close()
    return {"steps": steps, "samples": written, "seconds": time.perf_counter() - started,
            "faults": len(changes)}
