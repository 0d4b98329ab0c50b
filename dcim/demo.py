"""`dcim demo`: run dcim on a site end to end and show what it does.

Today: validate the site, then exercise its configured store with one hour of one-minute
samples for every point of the site (written in batches, read back, aggregated), and print
the figures. It grows into the full system (simulators, collectors, dashboard) with the
issues that bring those parts.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

from tqdm import tqdm

from dcim.site import Site, load_site
from dcim.site.summary import summarize
from dcim.storage.base import Aggregate, Sample
from dcim.storage.factory import open_storage
from dcim.storage.writer import BatchWriter

MINUTE_NS = 60_000_000_000


async def exercise_store(site: Site, minutes: int = 60) -> dict[str, float]:
    """Write `minutes` of one-minute samples for every point, read them back; returns figures."""
    storage = open_storage(site.config.storage, site_id=site.id)
    await storage.start()
    writer = BatchWriter(storage, site.config.storage.write)
    series = [dev.series(p.name) for dev in site.devices.values() for p in dev.profile.points]
    end_ns = time.time_ns() // MINUTE_NS * MINUTE_NS
    start_ns = end_ns - minutes * MINUTE_NS
    started = time.perf_counter()
    try:
        for minute in tqdm(range(minutes), desc="writing", unit="min", leave=False):
            t_ns = start_ns + minute * MINUTE_NS
            writer.add(Sample(key, t_ns, float(i % 97) + math.sin(minute / 9.0))
                       for i, key in enumerate(series))
            await writer.flush()
        await writer.close()
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        latest = await storage.read_latest(series)
        raw = await storage.read_range(series[0], start_ns, end_ns)
        buckets = await storage.read_aggregate(series[0], start_ns, end_ns, 15 * MINUTE_NS,
                                               Aggregate.MEAN)
        read_s = time.perf_counter() - started
    finally:
        await storage.close()
    if len(latest) != len(series) or len(raw) != minutes:
        raise RuntimeError(f"store check failed: {len(latest)}/{len(series)} series, "
                           f"{len(raw)}/{minutes} samples read back")
    return {"series": len(series), "samples": len(series) * minutes, "write_s": write_s,
            "read_s": read_s, "buckets": len(buckets)}


def run_demo(path: str | Path) -> int:
    """Validate the site and exercise its store; prints what happened."""
    site = load_site(path)
    print(summarize(site))
    figures = asyncio.run(exercise_store(site))
    rate = figures["samples"] / figures["write_s"]
    print(f"\nstore ({site.config.storage.backend}): wrote {figures['samples']:,.0f} samples "
          f"of {figures['series']:,.0f} series in {figures['write_s']:.1f} s ({rate:,.0f}/s), "
          f"read latest of every series, a raw hour and {figures['buckets']:.0f} "
          f"15-minute means back in {figures['read_s']:.2f} s")
    print("Simulators, collectors and the dashboard join the demo as their issues land.")
    return 0
