"""The dashboard over the whole running system: simulators -> collectors -> live state -> page.

One System on the reference site (simulated, embedded store, dashboard on a free loopback
port) serves every test of this module; the page is loaded by a real headless Chromium over
the DevTools protocol (it keeps an event stream open, so Chromium's virtual-time
--dump-dom, which waits for the network to go idle, cannot be used).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from dcim.simulators.faults import FaultSpec
from dcim.site import load_site
from dcim.storage.base import Quality, SeriesKey
from dcim.system import System, SystemOptions
from tests.test_dashboard_alarms import chromium_page

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    work = tmp_path_factory.mktemp("dashboard")
    cwd = os.getcwd()
    os.chdir(work)  # the reference site's embedded store lives under var/
    sys_ = System(site, SystemOptions(buffer_dir=str(work / "buffer"), backfill_s=3600.0,
                                      analytics_interval_s=30.0, dashboard_port=0))
    try:
        await sys_.start()
        yield sys_
    finally:
        await sys_.stop()
        os.chdir(cwd)


def url(system: System) -> str:
    """Where the system's dashboard serves."""
    assert system.dashboard is not None
    return system.dashboard.url


async def get(system: System, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url(system).rstrip("/") + path) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float = 40.0) -> Any:
    """Call check until it returns something truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.5)


async def ready_state(system: System) -> dict[str, Any]:
    """The first /api/state with every device up, a live PUE and every rack's inlet."""
    async def check() -> dict[str, Any] | None:
        _, state = await get(system, "/api/state")
        c = state["collection"]
        if (c.get("up") == c.get("devices") == 270 and state["headline"]["pue"]
                and state["headline"]["pue"]["value"] is not None
                and all(r["inlet_c"] is not None for r in state["racks"])):
            return state
        return None
    return await until(check)


async def test_state_shows_the_live_values_and_the_store_gets_them(system: System) -> None:
    await ready_state(system)
    live, storage = system.live, system.storage
    assert live is not None and storage is not None
    racks = ["H1-A01", "H2-B05", "H2-D10"]
    keys = {r: [SeriesKey("rack_monitor", f"RM-{r}", p) for p in
                ("inlet_temp_bottom_c", "inlet_temp_middle_c", "inlet_temp_top_c")]
            for r in racks}
    feeds = [SeriesKey("rack_monitor", f"RM-{r}", f"feed_{s}_power_kw")
             for r in system.site.racks for s in "ab"]

    async def same_snapshot() -> tuple[dict[str, Any], Any] | None:
        _, state = await get(system, "/api/state")
        snap = live.current()  # a newer one may be built meanwhile: then try again
        return (state, snap) if state["seq"] == snap.seq else None

    state, snap = await until(same_snapshot)
    by_id = {r["id"]: r for r in state["racks"]}
    for r in racks:
        assert by_id[r]["inlet_c"] == max(snap.values[k].value for k in keys[r])
    assert math.isclose(state["headline"]["it_kw"], sum(snap.values[k].value for k in feeds),
                        rel_tol=1e-9)

    async def stored() -> bool:  # what the page showed reaches the store (durable buffer)
        latest = await storage.read_latest(keys["H1-A01"])
        return all(k in latest and latest[k].time_ns >= snap.values[k].time_ns
                   for k in keys["H1-A01"])
    await until(stored)


async def test_state_carries_analytics_and_a_sound_power_chain(system: System) -> None:
    state = await ready_state(system)
    assert system.live is not None
    snap = system.live.current()
    assert snap.redundancy is not None
    pue = state["headline"]["pue"]
    assert 1.1 < pue["value"] < 1.8 and pue["category"] == "PUE3"
    assert state["redundancy"]["concurrently_maintainable"] is True
    assert {g["id"] for g in state["redundancy"]["groups"]} == {g.id for g in snap.redundancy.groups}
    chain = state["power_chain"]
    assert len(chain) == len(system.site.config.electrical)
    assert {c["status"] for c in chain} == {"up"}, [c for c in chain if c["status"] != "up"]
    assert all(r["band"] == "recommended" and r["quality"] == "good" for r in state["racks"])
    assert 0 < state["headline"]["it_kw"] < state["headline"]["facility_kw"]


async def test_a_device_that_stops_answering_shows_on_the_dashboard(system: System) -> None:
    await ready_state(system)
    assert system.simulator is not None
    fault = system.simulator.inject(FaultSpec(kind="timeout", target="PDU-A-H1-2"))
    try:
        async def listed() -> dict[str, Any] | None:
            _, state = await get(system, "/api/state")
            down = [d for d in state["devices_not_up"] if d["id"] == "PDU-A-H1-2"]
            return down[0] if down else None
        entry = await until(listed)
        assert entry["type"] == "pdu" and "No response" in entry["last_error"]
        _, state = await get(system, "/api/state")
        pdu = next(c for c in state["power_chain"] if c["id"] == "PDU-A-H1-2")
        assert (pdu["status"], pdu["kw"]) == ("unknown", None)  # not "down": it may be fine
        assert state["collection"]["up"] < state["collection"]["devices"]
    finally:
        system.simulator.clear(fault.id)

    async def recovered() -> bool:
        _, state = await get(system, "/api/state")
        return not any(d["id"] == "PDU-A-H1-2" for d in state["devices_not_up"])
    await until(recovered, timeout_s=60.0)


async def test_trend_metrics_and_health(system: System) -> None:
    await ready_state(system)
    status, trend = await get(system, "/api/trend?point=pue_live&hours=1")
    assert status == 200 and trend["point"] == "pue_live" and trend["every_s"] >= 60
    values = [v for _, v in trend["points"] if v is not None]
    stored = await system.storage.read_range(  # type: ignore[union-attr]
        SeriesKey("analytics", system.site.id, "pue_live"), 0, time.time_ns() + 10**9)
    good = [s.value for s in stored if s.quality is Quality.GOOD]
    assert values and good and min(good) - 1e-9 <= min(values) <= max(values) <= max(good) + 1e-9
    status, body = await get(system, "/api/trend?point=pue_live&hours=0")
    assert status == 400 and "hours must be in" in body["error"]
    status, body = await get(system, "/api/trend?point=secret&hours=1")
    assert status == 400 and "point must be one of" in body["error"]
    status, text = await get(system, "/metrics")
    assert status == 200
    up = [line for line in text.splitlines() if line.startswith("dcim_device_up{")]
    assert len(up) == 270
    status, health = await get(system, "/healthz")
    assert status == 200 and health["ok"] is True and health["devices"] == 270


class _Dom(HTMLParser):
    """Elements with their attributes, and the text under each id, from a DOM dump."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.text_by_id: dict[str, str] = {}
        self.elements: list[dict[str, str]] = []
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append({"tag": tag, **a})
        if tag in self.VOID:
            return
        self._open.append((tag, a.get("id")))
        if a.get("id"):
            self.text_by_id.setdefault(a["id"], "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, **{k: v or "" for k, v in attrs}})

    def handle_endtag(self, tag: str) -> None:
        while self._open:  # pop up to the element this tag closes
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.text_by_id[ident] += data


async def render(url: str, tmp: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of the page once its first document is drawn, from headless Chromium."""
    async with chromium_page(tmp, window="1600,1100") as page:
        await page.call("Page.navigate", url=url)
        await page.until("document.querySelectorAll('#halls .rack').length > 0 && "
                         "document.getElementById('conn-state').dataset.mode === 'live'", 30.0)
        await page.until("!document.getElementById('pue-trend').textContent"
                         ".includes('loading')", 30.0)
        if screenshot is not None:
            shot = await page.call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return str(await page.js("document.documentElement.outerHTML"))


async def test_the_page_renders_the_live_state_in_a_real_browser(system: System,
                                                                 tmp_path: Path) -> None:
    state = await ready_state(system)
    dom = _Dom()
    dom.feed(await render(url(system), tmp_path))
    racks = [e for e in dom.elements if "rack" in e.get("class", "").split() and e.get("data-id")]
    assert sorted(e["data-id"] for e in racks) == sorted(system.site.racks)
    assert {e["data-band"] for e in racks} == {"recommended"}
    nodes = {e["data-id"]: e for e in dom.elements if "node" in e.get("class", "").split()}
    assert set(nodes) == {c.id for c in system.site.config.electrical}
    assert {e["data-status"] for e in nodes.values()} == {"up"}
    # live PUE is recomputed every few seconds: the page shows the one fetched or a newer one
    assert system.live is not None and system.live.current().pue_live is not None
    assert dom.text_by_id["pue-value"].strip() in {
        f"{state['headline']['pue']['value']:.2f}",
        f"{system.live.current().pue_live.pue.value:.2f}"}  # type: ignore[union-attr]
    assert "270 / 270" in dom.text_by_id["devices-up"]
    assert dom.text_by_id["site-name"].strip() == "Cyberport 5 Data Centre"
    groups = {e["data-group"] for e in dom.elements if e.get("data-group")}
    assert groups == {g["id"] for g in state["redundancy"]["groups"]}
    assert "No active alarms" in dom.text_by_id["alarms"]
    shot = tmp_path / "dashboard.png"
    await render(url(system), tmp_path, screenshot=shot)
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one


async def test_a_tripped_ups_module_shows_in_the_browser(system: System, tmp_path: Path) -> None:
    await ready_state(system)
    assert system.simulator is not None
    fault = system.simulator.inject(FaultSpec(kind="ups_module_trip", target="UPS-A3"))
    try:
        async def tripped() -> dict[str, Any] | None:
            _, state = await get(system, "/api/state")
            node = next(c for c in state["power_chain"] if c["id"] == "UPS-A3")
            return state if node["status"] == "down" else None
        state = await until(tripped)
        dom = _Dom()
        dom.feed(await render(url(system), tmp_path))
        nodes = {e["data-id"]: e for e in dom.elements if "node" in e.get("class", "").split()}
        assert nodes["UPS-A3"]["data-status"] == "down"
        assert "DOWN" in dom.text_by_id["power-chain"]
        assert {k: v["data-status"] for k, v in nodes.items() if v["data-status"] != "up"} == {
            c["id"]: c["status"] for c in state["power_chain"] if c["status"] != "up"}
    finally:
        system.simulator.clear(fault.id)

    async def back() -> bool:  # the other tests of this module expect a healthy site
        _, state = await get(system, "/api/state")
        return all(c["status"] == "up" for c in state["power_chain"])
    await until(back, timeout_s=60.0)
