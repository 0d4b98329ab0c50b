"""What one refresh of the dashboard's /api/state costs, on the reference and a 2,000-rack site.

Run: .venv/bin/python bench/dashboard.py [--repeat 20]

Per site: the newest sample of every series the page reads is written to an embedded store
(in a temporary directory), then timed (median of --repeat):
- baseline: `read_latest` of those series from the store (what any live view must read);
- `dashboard_state` on the samples read (pure: power chain, racks, redundancy, alarms);
- the JSON body aiohttp sends (`json.dumps` of the document), and its size.
The server rebuilds the document at most once a second however many browsers poll it.
Prints figures only; docs/performance.md ("Dashboard") keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import machine, table  # noqa: I001  (puts the repo on sys.path)

from dcim.dashboards.state import dashboard_state, live_points
from dcim.site import Site, load_site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.storage.base import Quality, Sample
from dcim.config.storage import EmbeddedStorageConfig
from dcim.storage.embedded import EmbeddedStorage

REPO = Path(__file__).resolve().parent.parent


async def median_ms(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median wall time of an awaitable factory in milliseconds (one warm-up call first)."""
    await fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def bench_site(name: str, site: Site, repeat: int, tmp: Path) -> list[list[object]]:
    points = live_points(site)
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp / f"{name}.sqlite")),
                              site_id=site.id)
    await storage.start()
    try:
        now = time.time_ns()
        await storage.write([Sample(k, now, 22.0 if "temp" in k.point else 1.0, Quality.GOOD)
                             for k in points.keys])
        latest = await storage.read_latest(points.keys)

        async def read() -> Any:
            return await storage.read_latest(points.keys)

        async def build() -> Any:
            return dashboard_state(site, latest, points=points, now_ns=now)

        doc = dashboard_state(site, latest, points=points, now_ns=now)

        async def dump() -> Any:
            return json.dumps(doc)

        base = await median_ms(read, repeat)
        build_ms = await median_ms(build, repeat)
        dump_ms = await median_ms(dump, repeat)
        size_kb = len(json.dumps(doc)) / 1024
    finally:
        await storage.close()
    label = f"{name}: {len(site.racks):,} racks, {len(points.keys):,} series"
    return [[label, "read_latest (baseline)", f"{base:,.1f}", "1.00"],
            [label, "dashboard_state", f"{build_ms:,.1f}", f"{build_ms / base:.2f}"],
            [label, f"json.dumps ({size_kb:,.0f} KiB)", f"{dump_ms:,.1f}", f"{dump_ms / base:.2f}"],
            [label, "refresh total", f"{base + build_ms + dump_ms:,.1f}",
             f"{(base + build_ms + dump_ms) / base:.2f}"]]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per figure")
    args = parser.parse_args()
    sites = [("reference", load_site(REPO / "config" / "cyberport5.yaml")),
             ("synthetic", site_from_dict(generate_site(SiteSpec(racks=2000, halls=4))))]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, site in sites:
            rows += await bench_site(name, site, args.repeat, Path(tmp))
    print(machine())
    print(table(["site", "step", "median ms", "vs baseline"], rows))


if __name__ == "__main__":
    asyncio.run(main())
