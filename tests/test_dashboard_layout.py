"""The dashboard's layout in a real headless Chromium at the widths it is used at.

One System on the reference site (simulated, embedded store, dashboard on a free loopback
port) serves the page; Chromium opens it at 1024, 1280, 1400 and 1920 px and the page's own
element rectangles (measured by JavaScript in the browser) must show that no power-chain
component is cut off or scrolled out of its panel, that each UPS system's modules sit
together under that system, that unmetered parts say so, and that the header shows the site's
date, time and zone (Hong Kong on a UTC machine), as do the alarm times. UPS module UPS-A3 is
tripped for the whole module, so the page has an alarm and a DOWN part to show. A full-page screenshot is taken at 1280,
1400 and 1920 px into the test's temporary folder; with DCIM_SCREENSHOTS=1 it is also copied
to docs/img/dashboard-<width>.png (how the images in docs/dashboard.md are regenerated).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from dcim.site import Site, load_site
from dcim.system import System, SystemOptions
from dcim.simulators.faults import FaultSpec
from tests.test_dashboard import get, ready_state, until, url
from tests.test_dashboard_alarms import Page, chromium_page

ROOT = Path(__file__).resolve().parents[1]
DOCS_IMG = ROOT / "docs" / "img"
SCREENSHOT_WIDTHS = (1280, 1400, 1920)
TRIPPED = "UPS-A3"
pytestmark = pytest.mark.asyncio(loop_scope="module")

# Everything the test reads from the page, measured in the browser in one go.
MEASURE = """(() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; };
  const chain = document.getElementById('chain-columns');
  const panel = document.getElementById('power-chain');
  return JSON.stringify({
    viewport: document.documentElement.clientWidth,
    page_scroll_width: document.documentElement.scrollWidth,
    chain: box(chain), chain_client: chain.clientWidth, chain_scroll: chain.scrollWidth,
    panel: box(panel),
    nodes: [...chain.querySelectorAll('.node')].map((n) => ({
      id: n.dataset.id, type: n.dataset.type, metered: n.dataset.metered, text: n.textContent,
      group: n.closest('.chain-group')?.dataset.chainGroup ?? null,
      group_head: n.closest('.chain-group')?.querySelector('.chain-group-head')?.textContent ?? null,
      ...box(n)})),
    columns: [...chain.querySelectorAll('.chain-col')].map((c) => ({
      top: Math.round(c.getBoundingClientRect().top), sub: Number(c.dataset.sub)})),
    legend: document.getElementById('chain-legend')?.textContent ?? '',
    clock: document.getElementById('site-clock-item').textContent.replace(/\\s+/g, ' ').trim(),
    since_head: document.querySelector('#alarms thead th:nth-child(4)').textContent,
    alarm_since: [...document.querySelectorAll('#alarm-rows tr.alarm')].map((r) => ({
      id: r.dataset.id, text: r.querySelector('.since')?.textContent,
      title: r.querySelector('.since')?.title})),
  });
})()"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    """The reference site running whole, its dashboard on a free loopback port."""
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    work = tmp_path_factory.mktemp("layout")
    cwd = os.getcwd()
    os.chdir(work)  # the reference site's embedded store lives under var/
    sys_ = System(site, SystemOptions(buffer_dir=str(work / "buffer"), backfill_s=3600.0,
                                      analytics_interval_s=30.0, dashboard_port=0))
    try:
        await sys_.start()
        await ready_state(sys_)
        assert sys_.simulator is not None
        sys_.simulator.inject(FaultSpec(kind="ups_module_trip", target=TRIPPED))

        async def alarmed() -> bool:
            _, state = await get(sys_, "/api/state")
            return any(a["id"] == f"unit:{TRIPPED}:down" for a in state["alarms"])
        await until(alarmed)
        yield sys_
    finally:
        await sys_.stop()
        os.chdir(cwd)


def ups_system_of(site: Site) -> dict[str, str]:
    """Module id -> the UPS system it feeds, from the site's configuration."""
    return {i: c.id for c in site.config.electrical if c.type == "ups_system" for i in c.inputs}


def unmetered(site: Site) -> set[str]:
    """Electrical components that no device monitors (buses, transformers, switchboards)."""
    monitored = {d.monitors for d in site.devices.values()}
    return {c.id for c in site.config.electrical if c.id not in monitored}


def site_clock_texts(zone: str, *instants_s: float) -> tuple[set[str], str]:
    """The dates ("Tue 8 Dec 2026") the header may show around the instants, and the zone."""
    tz = ZoneInfo(zone)
    dates = set()
    for t in instants_s:
        at = datetime.fromtimestamp(t, tz=timezone.utc).astimezone(tz)
        dates.add(f"{at:%a} {at.day} {at:%b %Y}")
    offset = at.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    name = f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "") if minutes else "UTC"
    return dates, f"{at.tzname()} ({name})"


async def measure(page: Page, width: int, count: int) -> dict[str, Any]:
    """The page at `width` once its first document and the power chain are drawn."""
    await page.until("document.querySelectorAll('#halls .rack').length > 0 && "
                     "document.getElementById('conn-state').dataset.mode === 'live'", 30.0)
    await page.until(f"document.querySelectorAll('#chain-columns .node').length === {count}")
    await page.until("!document.getElementById('site-time').textContent.includes('\u2013')")
    await page.js("document.fonts.ready.then(() => true)")
    doc: dict[str, Any] = json.loads(await page.js(MEASURE))
    assert doc["viewport"] <= width
    return doc


async def full_page_png(page: Page, width: int, path: Path) -> None:
    """A screenshot of the whole page at `width` (the viewport grown to the page's height)."""
    height = int(await page.js("document.documentElement.scrollHeight"))
    await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                    deviceScaleFactor=1, mobile=False)
    await page.until(f"document.documentElement.clientHeight >= {height}")
    shot = await page.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("width", [1024, *SCREENSHOT_WIDTHS], ids=lambda w: f"{w}px")
async def test_the_power_chain_fits_and_follows_the_topology(system: System, tmp_path: Path,
                                                             width: int) -> None:
    _, state = await get(system, "/api/state")
    site = system.site
    chain_ids = {c.id for c in site.config.electrical}
    before_s = time.time()
    async with chromium_page(tmp_path, window=f"{width},1000") as page:
        await page.call("Page.navigate", url=url(system))
        doc = await measure(page, width, len(chain_ids))
        after_s = time.time()
        if width in SCREENSHOT_WIDTHS:
            shot = tmp_path / f"dashboard-{width}.png"
            await full_page_png(page, width, shot)
            assert shot.stat().st_size > 50_000  # a drawn page, not a blank one
            if os.environ.get("DCIM_SCREENSHOTS") == "1":
                DOCS_IMG.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, DOCS_IMG / shot.name)

    nodes = {n["id"]: n for n in doc["nodes"]}
    assert set(nodes) == chain_ids
    # nothing cut off: every component inside its panel and the viewport, nothing to scroll
    assert doc["page_scroll_width"] <= doc["viewport"]
    assert doc["chain_scroll"] <= doc["chain_client"] + 1
    outside = {i: (round(n["left"]), round(n["right"])) for i, n in nodes.items()
               if n["left"] < doc["chain"]["left"] - 0.5 or n["right"] > doc["chain"]["right"] + 0.5
               or n["right"] > doc["viewport"]}
    assert not outside, f"cut off at {width} px (chain {doc['chain']}): {outside}"
    assert all(n["bottom"] <= doc["panel"]["bottom"] for n in nodes.values())
    # the two ways it fits: narrow, levels wrap to a new line; wide, tall levels widen
    rows = len({c["top"] for c in doc["columns"]})
    widest = max(c["sub"] for c in doc["columns"])
    if width == 1024:
        assert rows > 1, doc["columns"]
    if width == 1920:
        assert rows == 1 and widest >= 3, doc["columns"]
    # each UPS system's modules together, under a heading that names that system
    systems = ups_system_of(site)
    assert systems, "the reference site has UPS systems"
    for module, ups in systems.items():
        assert nodes[module]["group"] == f"ups:{ups}", (module, nodes[module]["group"])
        assert ups in (nodes[module]["group_head"] or "")
    # parts without a meter say so and show their state from the topology, with a legend
    quiet = unmetered(site)
    assert {"GEN-BUS-A", "TX-A", "MSB-A"} <= quiet
    for part in quiet:
        assert nodes[part]["metered"] == "unmetered" and "energised" in nodes[part]["text"]
    assert "not metered" in doc["legend"]
    # the header: the site's date, time and zone, named as the site's clock names it
    dates, zone = site_clock_texts(site.config.site.timezone, before_s, after_s)
    assert zone == "HKT (UTC+8)"  # the reference site: Hong Kong, on a machine set to UTC
    assert zone in doc["clock"] and any(d in doc["clock"] for d in dates), doc["clock"]
    assert zone in doc["since_head"]  # the alarm times say which clock they are on
    tz = ZoneInfo(site.config.site.timezone)
    trip = next(a for a in state["alarms"] if a["id"] == f"unit:{TRIPPED}:down")
    since = datetime.fromtimestamp(trip["since_ms"] / 1000, tz=timezone.utc).astimezone(tz)
    shown = next(a for a in doc["alarm_since"] if a["id"] == trip["id"])
    assert (shown["text"], shown["title"]) == (f"{since:%H:%M:%S}", f"{since:%Y-%m-%d %H:%M:%S}")
    assert nodes[TRIPPED]["text"].count("DOWN") == 1
