"""Sign-in in a real headless Chromium (the DevTools helper of tests/test_dashboard_alarms.py).

The dashboard serves a real alarm engine and journal with sign-in on: a stranger is sent to
the sign-in page; an operator signs in, sees who they are, acknowledges an alarm (journaled
under their name) and is offered only what an operator may do; a viewer is offered no action
and the API refuses one forced from the page (403); signing out ends the session. Neither
page breaks its Content-Security-Policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.service import AlarmService
from dcim.auth.passwords import Passwords
from dcim.auth.roles import Role
from dcim.auth.service import Authenticator
from dcim.auth.store import UserStore
from dcim.config.alarms import AlarmsConfig
from dcim.config.auth import AuthConfig
from dcim.dashboards.app import DashboardServer, DashboardSettings, create_app
from dcim.live.service import LiveState
from dcim.site import Site, load_site
from tests.test_auth import FAST, PASSWORD
from tests.test_dashboard_alarms import ONE_FEED, TRIP, Page, button, chromium_page, row

ROOT = Path(__file__).resolve().parents[1]
# every Content-Security-Policy violation of a page, from before its first script runs
CSP_WATCH = ("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
             "(e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")


@dataclass
class Served:
    url: str
    journal: AlarmJournal


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(ROOT / "config" / "cyberport5.yaml")


@pytest_asyncio.fixture
async def served(tmp_path: Path, site: Site) -> AsyncIterator[Served]:
    store = UserStore(tmp_path / "auth.sqlite", passwords=Passwords(FAST))
    store.add_user("otto", Role.OPERATOR, PASSWORD)
    store.add_user("vera", Role.VIEWER, PASSWORD)
    journal = AlarmJournal(tmp_path / "alarms.sqlite")
    engine = AlarmEngine(AlarmsConfig(), journal)
    engine.evaluate([TRIP, ONE_FEED], time.time_ns())
    live = LiveState(site, None)
    await live.start()
    app = create_app(DashboardSettings(), live, AlarmService(site, engine, live),
                     auth=Authenticator(AuthConfig(), store))
    server = DashboardServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Served(server.url, journal)
    finally:
        await server.stop()
        await live.close()
        journal.close()
        store.close()


async def sign_in(page: Page, served: Served, user: str) -> None:
    """Open the dashboard, be sent to the sign-in page, sign in, be back on the dashboard."""
    await page.call("Page.navigate", url=served.url)
    await page.until("location.pathname === '/login' && "
                     "document.getElementById('login-submit')?.disabled === false")
    await page.type("login-user", user)
    await page.type("login-password", PASSWORD)
    await page.click("document.getElementById('login-submit')")
    # the new page's DOM may not be there yet when its location already is
    await page.until("location.pathname === '/' && "
                     "document.getElementById('signed-in')?.hidden === false")
    await page.until(f"{row(TRIP.alarm_id)} !== null")


async def test_an_operator_signs_in_acknowledges_and_a_viewer_cannot(
        tmp_path: Path, served: Served) -> None:
    async with chromium_page(tmp_path) as page:
        await page.call("Page.enable")
        await page.call("Page.addScriptToEvaluateOnNewDocument", source=CSP_WATCH)
        # a wrong password: said on the page, nobody signed in
        await page.call("Page.navigate", url=served.url)
        await page.until("location.pathname === '/login' && "
                         "document.getElementById('login-submit')?.disabled === false")
        await page.type("login-user", "otto")
        await page.type("login-password", "not the password")
        await page.click("document.getElementById('login-submit')")
        refused = await page.until("!document.getElementById('login-msg').hidden && "
                                   "document.getElementById('login-msg').textContent")
        assert "wrong user name or password" in refused
        assert await page.js("window.cspViolations") == []

        await sign_in(page, served, "otto")
        assert await page.js("[document.getElementById('who-name').textContent, "
                             "document.getElementById('who-role').textContent, "
                             "document.getElementById('operator-field').hidden]") == [
            "otto", "operator", True]
        offered = await page.js(f"[...{row(TRIP.alarm_id)}.querySelectorAll('button.act')]"
                                ".map((b) => b.dataset.action)")
        assert offered == ["ack", "shelve"]  # no out of service, no reset: a supervisor's
        # an operator's shelve is two hours at most: longer choices are not offered
        await page.click(button(ONE_FEED.alarm_id, "shelve"))
        assert await page.js("[...document.getElementById('action-minutes').options]"
                             ".map((o) => o.value)") == ["15", "60"]
        await page.click("document.getElementById('action-cancel')")
        # acknowledge: journaled as the signed-in user, no name typed
        await page.click(button(TRIP.alarm_id, "ack"))
        await page.until(f"{row(TRIP.alarm_id)}?.dataset.state === 'active_acknowledged'")
        assert [(e.action.value, e.user) for e in served.journal.events(
            alarm_id=TRIP.alarm_id)] == [("raise", "system"), ("ack", "otto")]
        assert await page.js("document.cookie") == ""  # HttpOnly: no script sees the session
        assert await page.js("window.cspViolations") == []

        # sign out: back to the sign-in page, and the session is gone
        await page.click("document.getElementById('sign-out')")
        await page.until("location.pathname === '/login'")
        assert await page.js("fetch('/api/state').then((r) => r.status)") == 401

        # a viewer: no action offered, and one forced from the page is refused by the API
        await sign_in(page, served, "vera")
        assert await page.js("document.getElementById('who-role').textContent") == "viewer"
        assert await page.js("document.querySelectorAll('#alarms button.act').length") == 0
        assert await page.js("document.querySelectorAll('#alarms button[data-history]').length") == 0
        forced = await page.js(
            "fetch('/api/alarms/ack', {method: 'POST', headers: {'Content-Type': "
            "'application/json', 'X-CSRF-Token': me.csrf_token}, body: JSON.stringify("
            f"{{alarm_id: {json.dumps(ONE_FEED.alarm_id)}}})}})"
            ".then(async (r) => [r.status, (await r.json()).error])")
        assert forced == [403, "viewer may not ack"]
        assert [e.action.value for e in served.journal.events(
            alarm_id=ONE_FEED.alarm_id)] == ["raise"]
        assert await page.js("window.cspViolations") == []
