"""The alarm panel in a real headless Chromium, driven over the DevTools protocol.

The dashboard (`create_app`) serves a real LiveState that nothing feeds and a real
AlarmService (engine and SQLite journal) that is not started: conditions are fed to the
engine directly, so no simulator, collector or store runs. The browser types an operator's
name, acknowledges one alarm and shelves another, and the engine and the journal must hold
what the page shows; changes come to the page over the event stream, or by polling when the
stream fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from dcim.config.alarms import AlarmsConfig
from dcim.analytics.anomaly_base import Anomaly
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.service import AlarmService
from dcim.alarms.types import Action, AlarmState, Condition, Priority
from dcim.alarms.engine import AlarmEngine
from dcim.dashboards.app import DashboardServer, DashboardSettings, create_app
from dcim.live.service import LiveState
from dcim.site import Site, load_site
from dcim.storage.base import SeriesKey
from tests.conftest import require_program

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT_S = 10.0  # for any one thing the page must show (pushed; polled every 2 s)

TRIP = Condition(alarm_id="unit:UPS-A3:down", source="unit", priority=Priority.CRITICAL,
                 message="UPS-A3 is down: module trip", unit="UPS-A3", device="UPS-A3")
ONE_FEED = Condition(alarm_id="redundancy:racks_on_one_feed", source="redundancy",
                     priority=Priority.MEDIUM, message="3 racks on one feed")
RISING = Condition(alarm_id="anomaly:rate:RM-H1-A01", source="anomaly", priority=Priority.LOW,
                   message="RM-H1-A01 inlet rising 2.1 °C/min", unit="H1-A01",
                   device="RM-H1-A01")
# the device source has a 30 s on-delay: pending, so not an alarm the page may show yet
PENDING = Condition(alarm_id="device:PDU-A-H1-2:comm", source="device", priority=Priority.HIGH,
                    message="PDU-A-H1-2 not answering", device="PDU-A-H1-2")


def row(alarm_id: str, within: str = "#alarms") -> str:
    """JS: the alarm's row in a part of the page (null when absent)."""
    return f"document.querySelector({json.dumps(f'{within} tr.alarm[data-id={json.dumps(alarm_id)}]')})"


def button(alarm_id: str, action: str) -> str:
    """JS: the action button of the alarm's row (null when the action is not offered)."""
    return f"{row(alarm_id)}?.querySelector('button[data-action={json.dumps(action)}]')"


# ---------------------------------------------------------------- a small DevTools client


class Page:
    """One browser tab over the Chrome DevTools protocol (commands only, events ignored)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self._id += 1
        await self._ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await self._ws.receive(timeout=STEP_TIMEOUT_S)
            assert msg.type is aiohttp.WSMsgType.TEXT, f"DevTools socket: {msg.type} {msg.data}"
            doc = json.loads(msg.data)
            if doc.get("id") == self._id:
                assert "error" not in doc, f"{method}: {doc['error']}"
                return cast(dict[str, Any], doc["result"])

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        assert "exceptionDetails" not in result, f"{expression}: {result['exceptionDetails']}"
        return result["result"].get("value")

    async def until(self, expression: str, timeout_s: float = STEP_TIMEOUT_S) -> Any:
        """Evaluate until the value is truthy; fail after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"the page never showed: {expression}"
            await asyncio.sleep(0.1)

    async def click(self, expression: str) -> None:
        """Click the element an expression finds (which must exist)."""
        assert await self.js(f"(() => {{ const e = {expression}; if (!e) return false; "
                             "e.click(); return true; })()"), f"nothing to click: {expression}"

    async def type(self, element_id: str, value: str) -> None:
        """Set an input's value as typing does (an input event follows)."""
        await self.js(f"(() => {{ const e = document.getElementById({json.dumps(element_id)}); "
                      f"e.value = {json.dumps(value)}; "
                      "e.dispatchEvent(new Event('input', {bubbles: true})); })()")


async def _devtools_url(proc: asyncio.subprocess.Process, log: Path) -> str:
    """The browser's DevTools websocket, from the line Chromium writes to stderr."""
    deadline = time.monotonic() + 20.0
    while True:
        found = re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert proc.returncode is None, f"chromium exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"chromium did not start: {log.read_text()[-2000:]}"
        await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """End the browser and every process it started (its own process group)."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), wait_s)
        except TimeoutError:
            continue
    try:  # helpers that outlived the browser itself
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@asynccontextmanager
async def chromium_page(tmp_path: Path, window: str = "1400,1000") -> AsyncIterator[Page]:
    """A headless Chromium tab (about:blank), closed and killed afterwards (also used by
    tests/test_dashboard.py)."""
    chromium = require_program("chromium", "apt-get install chromium")
    log = tmp_path / "chromium.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            chromium, "--headless=new", "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'profile'}", "--no-sandbox", "--no-first-run",
            "--disable-gpu", f"--window-size={window}", "about:blank",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "HOME": str(tmp_path)}, start_new_session=True)
    try:
        browser = await _devtools_url(proc, log)
        port = int(re.match(r"ws://[^:/]+:(\d+)/", browser).group(1))  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            tab = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        await _stop(proc)


@pytest_asyncio.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A headless Chromium tab for one test."""
    async with chromium_page(tmp_path) as tab:
        yield tab


# ---------------------------------------------------------------- the server


@dataclass
class Served:
    url: str
    service: AlarmService
    journal: AlarmJournal

    def journaled(self, alarm_id: str) -> list[tuple[str, str, str]]:
        """(action, user, comment) of every journal event of one alarm, oldest first."""
        return [(e.action.value, e.user, e.comment) for e in self.journal.events(alarm_id=alarm_id)]


@pytest.fixture(scope="module")
def site() -> Site:
    """The reference site (read only; loading it takes a second)."""
    return load_site(ROOT / "config" / "cyberport5.yaml")


Middleware = Any  # an aiohttp middleware: (request, handler) -> response


async def _serve(tmp_path: Path, site: Site,
                 middlewares: tuple[Middleware, ...] = ()) -> AsyncIterator[Served]:
    """The dashboard over a real alarm engine with three alarms raised and one pending."""
    journal = AlarmJournal(tmp_path / "alarms.sqlite")
    engine = AlarmEngine(AlarmsConfig(), journal)
    raised = engine.evaluate([TRIP, ONE_FEED, RISING, PENDING], time.time_ns())
    assert {e.alarm_id for e in raised} == {TRIP.alarm_id, ONE_FEED.alarm_id, RISING.alarm_id}
    # the live state carries only the detector episode behind the RISING alarm
    now_ns = time.time_ns()
    episode = Anomaly(series=SeriesKey("rack_monitor", "RM-H1-A01", "inlet_temp_top_c"),
                      layer="rate", kind="rate_of_change", since_ns=now_ns - 120 * 10**9,
                      last_ns=now_ns, raised_ns=now_ns - 60 * 10**9, value=29.4, expected=None,
                      score=4.2, severity="minor", message="inlet rising 2.1 °C/min")
    live = LiveState(site, None, analytics=lambda: (None, [episode]))
    await live.start()
    service = AlarmService(site, engine, live)  # not started: the test raises the conditions
    app = create_app(DashboardSettings(), live, service,
                     device_types={d.id: d.device_type for d in site.devices.values()})
    app.middlewares.extend(middlewares)
    server = DashboardServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Served(server.url, service, journal)
    finally:
        await server.stop()
        await live.close()
        journal.close()


@pytest_asyncio.fixture
async def served(tmp_path: Path, site: Site) -> AsyncIterator[Served]:
    """The dashboard, its page fed by the event stream."""
    async for s in _serve(tmp_path, site):
        yield s


@web.middleware
async def _no_stream(request: web.Request, handler: Any) -> web.StreamResponse:
    """A proxy that will not pass event streams on."""
    if request.path == "/api/events":
        return web.Response(status=502, text="no streams here")
    return cast(web.StreamResponse, await handler(request))


@pytest_asyncio.fixture
async def served_without_stream(tmp_path: Path, site: Site) -> AsyncIterator[Served]:
    """The dashboard behind a proxy that refuses /api/events: the page must poll."""
    async for s in _serve(tmp_path, site, middlewares=(_no_stream,)):
        yield s


async def _open(page: Page, served: Served, feed: str = "live") -> None:
    await page.call("Page.navigate", url=served.url)
    await page.until(f"{row(TRIP.alarm_id)} !== null")
    await page.until(f"document.getElementById('conn-state').dataset.mode === {feed!r}")


# ---------------------------------------------------------------- tests


async def test_an_operator_acknowledges_one_alarm_and_shelves_another(
        page: Page, served: Served) -> None:
    await _open(page, served)
    engine = served.service.engine
    # what the page shows before anyone acts
    shown = await page.js("[...document.querySelectorAll('#alarm-rows tr.alarm')]"
                          ".map((r) => [r.dataset.id, r.dataset.priority, r.dataset.state])")
    assert shown == [[TRIP.alarm_id, "critical", "active_unacknowledged"],
                     [ONE_FEED.alarm_id, "medium", "active_unacknowledged"],
                     [RISING.alarm_id, "low", "active_unacknowledged"]]
    tile = await page.js("(() => { const t = document.getElementById('tile-alarms'); return "
                         "[t.dataset.state, t.dataset.worst, "
                         "document.getElementById('alarm-count').textContent, "
                         "document.getElementById('alarm-unack').textContent, "
                         "document.getElementById('alarm-breakdown').textContent]; })()")
    assert tile == ["bad", "critical", "3", "3 unacknowledged", "1 critical · 1 medium · 1 low"]

    await page.type("operator", "kwong")
    assert await page.js("localStorage.getItem('dcim.operator')") == "kwong"

    # acknowledge the trip: the row turns acknowledged and offers no ack any more
    await page.click(button(TRIP.alarm_id, "ack"))
    await page.until(f"{row(TRIP.alarm_id)}?.dataset.state === 'active_acknowledged'")
    assert await page.js(f"{button(TRIP.alarm_id, 'ack')} === null")
    assert "acked by kwong" in await page.js(f"{row(TRIP.alarm_id)}.textContent")
    assert await page.js("document.getElementById('tile-alarms').dataset.worst") == "medium"
    trip = engine.alarms[TRIP.alarm_id]
    assert (trip.state, trip.acked_by) == (AlarmState.ACKED, "kwong")
    assert served.journaled(TRIP.alarm_id) == [("raise", "system", ""), ("ack", "kwong", "")]

    # shelve the rising inlet: a reason is required, then it moves to the hidden group
    await page.click(button(RISING.alarm_id, "shelve"))
    await page.until("!document.getElementById('alarm-action').hidden")
    await page.click("document.getElementById('action-submit')")
    message = await page.until("(() => { const m = document.getElementById('alarm-action-msg');"
                               " return m.dataset.kind === 'error' && m.textContent; })()")
    assert "needs a reason" in message and engine.alarms[RISING.alarm_id].shelved_by is None
    await page.type("action-reason", "sensor being replaced")
    await page.js("document.getElementById('action-minutes').value = '240'")
    before_ns = time.time_ns()
    await page.click("document.getElementById('action-submit')")
    await page.until(f"{row(RISING.alarm_id, '#alarm-hidden-rows')} !== null")
    assert await page.js(f"{row(RISING.alarm_id, '#alarm-rows')} === null")
    assert await page.js("document.getElementById('alarm-action').hidden")
    assert await page.js("document.getElementById('alarm-hidden-count').textContent") == "1"
    hidden = await page.js(f"{row(RISING.alarm_id)}.textContent")
    assert "shelved by kwong" in hidden and "sensor being replaced" in hidden
    assert await page.js(f"{button(RISING.alarm_id, 'unshelve')} !== null")
    rising = engine.alarms[RISING.alarm_id]
    assert (rising.shelved_by, rising.shelve_reason) == ("kwong", "sensor being replaced")
    assert rising.shelved_until_ns is not None
    assert 0 <= rising.shelved_until_ns - before_ns - 240 * 60 * 10**9 < 10 * 10**9
    assert served.journaled(RISING.alarm_id) == [
        ("raise", "system", ""), ("shelve", "kwong", "sensor being replaced (for 240 min)")]
    # the tile counts what is still announced, and says what is hidden
    assert await page.until("document.getElementById('alarm-count').textContent === '2'")
    assert "1 shelved" in await page.js(
        "document.getElementById('alarm-hidden-summary').textContent")
    # the pending alarm was never shown, anywhere
    assert await page.js(f"{row(PENDING.alarm_id)} === null")
    # the detector episode behind the shelved alarm is still listed, compactly
    assert await page.js("document.getElementById('anomaly-count').textContent") == "1"
    assert await page.js("[...document.querySelectorAll('#anomaly-list li.episode')]"
                         ".map((e) => e.dataset.device)") == ["RM-H1-A01"]


async def test_the_page_asks_for_a_name_shows_refusals_and_lists_the_journal(
        page: Page, served: Served) -> None:
    await _open(page, served)
    msg = "document.getElementById('alarm-action-msg')"

    # no operator name: nothing is sent, the page says why
    await page.click(button(TRIP.alarm_id, "ack"))
    assert "Operator" in await page.until(f"{msg}.dataset.kind === 'error' && {msg}.textContent")
    assert served.journaled(TRIP.alarm_id) == [("raise", "system", "")]
    assert await page.js("document.activeElement.id") == "operator"

    # a colleague acknowledged it first: the stale button's POST is refused with the
    # server's reason, and the refresh that follows shows the alarm acknowledged
    await page.type("operator", "chan")
    await page.js(f"window.staleAck = {button(ONE_FEED.alarm_id, 'ack')}")
    served.service.acknowledge(ONE_FEED.alarm_id, "kwong", "on it")
    await page.js("window.staleAck.click()")
    refused = await page.until(f"{msg}.dataset.kind === 'error' && {msg}.textContent")
    assert "nothing to acknowledge" in refused
    await page.until(f"{row(ONE_FEED.alarm_id)}?.dataset.state === 'active_acknowledged'")

    # an action with a comment, then the alarm's journal
    await page.type("action-comment", "module 2 reset by vendor")
    await page.click(button(TRIP.alarm_id, "ack"))
    await page.until(f"{row(TRIP.alarm_id)}?.dataset.state === 'active_acknowledged'")
    assert await page.js("document.getElementById('action-comment').value") == ""
    await page.click(f"{row(TRIP.alarm_id)}.querySelector('button[data-history]')")
    await page.until("document.getElementById('alarm-history').dataset.loaded === 'true'")
    events = await page.js(
        "[...document.querySelectorAll('#history-rows tr.event')].map((r) => "
        "[r.dataset.action, ...[...r.cells].slice(3).map((c) => c.textContent)])")
    assert events == [["ack", "chan", "module 2 reset by vendor"], ["raise", "system", "–"]]
    assert served.journaled(TRIP.alarm_id)[-1] == ("ack", "chan", "module 2 reset by vendor")
    assert [e.action for e in served.journal.events(alarm_id=ONE_FEED.alarm_id)] == [
        Action.RAISE, Action.ACK]


async def test_without_the_stream_the_page_polls_and_still_shows_changes(
        page: Page, served_without_stream: Served) -> None:
    served = served_without_stream
    await _open(page, served, feed="polling")
    assert "polling" in await page.js("document.getElementById('conn-state').textContent")
    assert await page.js("document.getElementById('conn-banner').hidden")
    # a colleague acknowledges: the next poll shows it
    served.service.acknowledge(TRIP.alarm_id, "kwong", "on it")
    await page.until(f"{row(TRIP.alarm_id)}?.dataset.state === 'active_acknowledged'")
    # an action from this page goes through and shows too
    await page.type("operator", "chan")
    await page.click(button(ONE_FEED.alarm_id, "ack"))
    await page.until(f"{row(ONE_FEED.alarm_id)}?.dataset.state === 'active_acknowledged'")
    assert served.journaled(ONE_FEED.alarm_id)[-1] == ("ack", "chan", "")
