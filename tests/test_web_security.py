"""The dashboard's guard over real HTTP (aiohttp's TestServer): sign-in, roles, tokens, CSRF,
Host and Origin checks, bounded bodies, rate limits, security headers, slow clients, TLS,
and the refusal to serve beyond loopback without sign-in (docs/security.md).

The alarm view is a recording fake (what the dashboard talks to); the live state, the users
file, the authenticator and the app are real. Time is moved by hand where expiry matters.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from dcim.alarms.types import Action, Alarm, AlarmEvent, AlarmState, Priority
from dcim.auth.passwords import Passwords
from dcim.auth.roles import ALARM_ACTIONS, PERMISSIONS, Role
from dcim.auth.service import Authenticator
from dcim.auth.store import UserStore
from dcim.config.auth import AuthConfig
from dcim.dashboards.app import DashboardServer, DashboardSettings, create_app
from dcim.dashboards.security import SECURITY_HEADERS, json_depth
from dcim.live.service import LiveState
from dcim.live.source import Version
from dcim.site import ConfigError, Site, load_site
from dcim.system import System, SystemOptions
from tests.test_auth import FAST, PASSWORD, Clock

ROOT = Path(__file__).resolve().parents[1]
ALARM = "redundancy:site:not_concurrently_maintainable"
USERS = {"vera": Role.VIEWER, "otto": Role.OPERATOR, "suki": Role.SUPERVISOR,
         "ada": Role.ADMIN, "aud": Role.AUDITOR}
NAME_OF = {role: name for name, role in USERS.items()}
# a body every action accepts (minutes within every role's limit)
BODY = {"alarm_id": ALARM, "reason": "breaker maintenance", "minutes": 30}


class RecordingAlarms:
    """An AlarmView that takes every action and records (action, user, text, duration_s)."""

    def __init__(self) -> None:
        self.version = Version()
        self.calls: list[tuple[str, str, str, float | None]] = []

    def active(self) -> list[Alarm]:
        return []

    def history(self, start_ns: int, end_ns: int, alarm_id: str | None = None,
                limit: int = 1000) -> Sequence[AlarmEvent]:
        return []

    def _took(self, action: Action, alarm_id: str, user: str, text: str,
              duration_s: float | None = None) -> AlarmEvent:
        self.calls.append((action.value, user, text, duration_s))
        self.version.bump()
        return AlarmEvent(time.time_ns(), alarm_id, action, AlarmState.ACKED, Priority.HIGH,
                          "not concurrently maintainable", user=user, comment=text,
                          seq=len(self.calls))

    def acknowledge(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        return self._took(Action.ACK, alarm_id, user, comment)

    def shelve(self, alarm_id: str, user: str, duration_s: float, reason: str) -> AlarmEvent:
        return self._took(Action.SHELVE, alarm_id, user, reason, duration_s)

    def unshelve(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        return self._took(Action.UNSHELVE, alarm_id, user, comment)

    def reset(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        return self._took(Action.RESET, alarm_id, user, comment)

    def remove_from_service(self, alarm_id: str, user: str, reason: str,
                            duration_s: float) -> AlarmEvent:
        return self._took(Action.OUT_OF_SERVICE, alarm_id, user, reason, duration_s)

    def return_to_service(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        return self._took(Action.RETURN_TO_SERVICE, alarm_id, user, comment)


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(ROOT / "config" / "cyberport5.yaml")


@pytest_asyncio.fixture
async def live(site: Site) -> AsyncIterator[LiveState]:
    state = LiveState(site, None)
    await state.start()
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[UserStore]:
    users = UserStore(tmp_path / "auth.sqlite", passwords=Passwords(FAST), clock_ns=clock.ns)
    for name, role in USERS.items():
        users.add_user(name, role, PASSWORD)
    yield users
    users.close()


def authenticator(store: UserStore, clock: Clock, **fields: Any) -> Authenticator:
    return Authenticator(AuthConfig(**fields), store, clock=clock)


@asynccontextmanager
async def dashboard(live: LiveState, alarms: RecordingAlarms | None,
                    auth: Authenticator | None = None, **settings: Any
                    ) -> AsyncIterator[TestServer]:
    app = create_app(DashboardSettings(**settings), live, alarms, auth=auth)
    server = TestServer(app)  # 127.0.0.1, a free port
    async with server:
        yield server


class Browser:
    """A client with cookies of its own that sends what the page sends (Origin, CSRF)."""

    def __init__(self, server: TestServer, connector: aiohttp.BaseConnector | None = None,
                 base: str | None = None) -> None:
        self.base = base or str(server.make_url("/")).rstrip("/")
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          connector=connector)
        self.csrf: str | None = None

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def sign_in(self, user: str, password: str = PASSWORD) -> int:
        status, doc = await self.post("/api/login", {"user": user, "password": password})
        if status == 200:
            self.csrf = doc["csrf_token"]
        return status

    async def post(self, path: str, body: Any, headers: Mapping[str, str | None] | None = None,
                   raw: bytes | None = None) -> tuple[int, Any]:
        defaults = {"Content-Type": "application/json", "Origin": self.base,
                    "X-CSRF-Token": self.csrf}
        sent = {k: v for k, v in {**defaults, **(headers or {})}.items() if v is not None}
        async with self.http.post(self.base + path, headers=sent,
                                  data=raw if raw is not None else json.dumps(body)) as r:
            return r.status, await r.json() if r.content_type == "application/json" else None

    async def get(self, path: str, headers: Mapping[str, str | None] | None = None
                  ) -> tuple[int, Any]:
        sent = {k: v for k, v in (headers or {}).items() if v is not None}
        async with self.http.get(self.base + path, headers=sent, allow_redirects=False) as r:
            doc = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, doc


# ---------------------------------------------------------------- the reviewer's requests


def _rebinding(server: TestServer) -> dict[str, str]:
    evil = f"attacker.example:{server.port}"
    return {"Host": evil, "Origin": f"http://{evil}"}


@pytest.mark.parametrize(("case", "body", "status", "error"), [
    ("out-of-service-anyone", {"alarm_id": ALARM, "user": "anyone", "reason": "hide it"},
     401, "sign in"),
    ("as-system", {"alarm_id": ALARM, "user": "system"}, 401, "sign in"),
    ("dns-rebinding", {"alarm_id": ALARM, "user": "anyone"}, 421, "attacker.example"),
], ids=lambda v: v if isinstance(v, str) else None)
async def test_with_sign_in_the_reviewers_requests_are_refused(
        live: LiveState, store: UserStore, clock: Clock, case: str, body: Any, status: int,
        error: str) -> None:
    alarms = RecordingAlarms()
    async with dashboard(live, alarms, authenticator(store, clock)) as server, \
            Browser(server) as anyone:
        action = "out_of_service" if case.startswith("out") else "ack"
        headers = _rebinding(server) if case == "dns-rebinding" else None
        got, doc = await anyone.post(f"/api/alarms/{action}", body, headers)
        assert (got, alarms.calls) == (status, []) and error in doc["error"]


DEEP = b'{"alarm_id": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NESTED = b'{"alarm_id": "x", "n": ' + b"[" * 2_000 + b"]" * 2_000 + b"}"
DIGITS = b'{"alarm_id": "%s", "user": "kwong", "reason": "r", "minutes": 1%s}' % (
    ALARM.encode(), b"0" * 3_999)


@pytest.mark.parametrize(("action", "body", "headers", "status", "error"), [
    ("out_of_service", {"alarm_id": ALARM, "user": "anyone", "reason": "hide it"}, None,
     400, "minutes must be a number"),
    ("ack", {"alarm_id": ALARM, "user": "system"}, None, 400, "engine's own name"),
    ("ack", {"alarm_id": ALARM, "user": "ky\u200bong"}, None, 400, "U+200B"),
    ("ack", {"alarm_id": ALARM, "user": "x" * 65}, None, 400, "1 to 64"),
    ("ack", {"alarm_id": ALARM, "user": "kwong", "comment": "ok\nINFO forged"}, None,
     400, "U+000A"),
    ("ack", {"alarm_id": ALARM, "user": "kwong", "comment": "\x1b[2J"}, None, 400, "U+001B"),
    ("ack", {"alarm_id": ALARM, "user": "kwong", "comment": "\x07"}, None, 400, "U+0007"),
    ("ack", {"alarm_id": ALARM, "user": "kwong", "comment": "a\x00b"}, None, 400, "U+0000"),
    ("shelve", b'{"alarm_id": "a", "user": "kwong", "reason": "r", "minutes": 1e999}', None,
     400, "not a finite number"),
    ("shelve", {"alarm_id": ALARM, "user": "kwong", "reason": "r", "minutes": float("nan")},
     None, 400, "NaN is not a number"),
    ("shelve", DIGITS, None, 400, "at most 30 characters"),
    ("shelve", NESTED, None, 400, "nested deeper"),
    ("shelve", DEEP, None, 413, "16 KiB"),
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, "rebinding", 421, "attacker.example"),
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, {"Origin": "http://evil.example"},
     403, "cross-origin"),
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, {"Origin": None, "Sec-Fetch-Site": "cross-site"},
     403, "cross-site"),
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, {"Origin": "null"}, 403, "cross-origin"),
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, {"Origin": None}, 200, None),  # curl, the CLI
    ("ack", {"alarm_id": ALARM, "user": "kwong"}, {"Content-Type": "text/plain"}, 415,
     "application/json"),
], ids=["out-of-service-without-expiry", "as-system", "zero-width-name", "long-name",
        "newline-comment", "escape-comment", "bell-comment", "nul-comment", "infinite-minutes", "nan-minutes",
        "4000-digit-minutes", "nested-2000", "nested-100000-too-large", "dns-rebinding",
        "cross-origin", "cross-site-fetch", "null-origin", "no-origin-not-a-browser",
        "text-plain"])
async def test_without_sign_in_loopback_requests_are_checked(
        live: LiveState, action: str, body: Any, headers: Any, status: int,
        error: str | None) -> None:
    alarms = RecordingAlarms()
    async with dashboard(live, alarms) as server, Browser(server) as browser:
        if headers == "rebinding":
            headers = _rebinding(server)
        raw = body if isinstance(body, bytes) else None
        got, doc = await browser.post(f"/api/alarms/{action}", body, headers, raw=raw)
        assert got == status, doc
        if error is None:
            assert alarms.calls == [("ack", "kwong", "", None)]
        else:
            assert error in doc["error"] and alarms.calls == []


def test_json_depth_skips_strings() -> None:
    assert json_depth('{"a": "[[[[{{{", "b": [[1], {"c": "\\"]]"}]}') == 3
    assert json_depth("[" * 50) == 50


# ---------------------------------------------------------------- roles


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
async def test_every_action_for_every_role(live: LiveState, store: UserStore, clock: Clock,
                                           role: Role) -> None:
    alarms = RecordingAlarms()
    async with dashboard(live, alarms, authenticator(store, clock)) as server, \
            Browser(server) as browser:
        assert await browser.sign_in(NAME_OF[role]) == 200
        got = {}
        for action in ALARM_ACTIONS:
            got[action], _ = await browser.post(f"/api/alarms/{action}", BODY)
        got["history"], _ = await browser.get("/api/alarms/history?hours=1")
        got["state"], _ = await browser.get("/api/state")
        expected = {a: 200 if a in PERMISSIONS[role] else 403 for a in ALARM_ACTIONS}
        expected |= {"history": 200 if role is not Role.VIEWER else 403, "state": 200}
        assert got == expected
        # the journal names the signed-in user, whatever the body says
        assert {user for _, user, _, _ in alarms.calls} <= {NAME_OF[role]}
        status, doc = await browser.post("/api/alarms/ack", {**BODY, "user": "system"})
        if role in (Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN):
            assert status == 200 and alarms.calls[-1][1] == NAME_OF[role]
        else:
            assert status == 403 and f"{role.value} may not ack" in doc["error"]


@pytest.mark.parametrize(("role", "action", "minutes", "status", "error"), [
    (Role.OPERATOR, "shelve", 120, 200, None),
    (Role.OPERATOR, "shelve", 121, 400, "operator may shelve for at most 120 minutes"),
    (Role.SUPERVISOR, "shelve", 720, 200, None),
    (Role.SUPERVISOR, "shelve", 721, 400, "at most 720 minutes"),
    (Role.SUPERVISOR, "out_of_service", 7 * 1440, 200, None),
    (Role.SUPERVISOR, "out_of_service", 7 * 1440 + 1, 400, "at most 10080 minutes"),
    (Role.SUPERVISOR, "out_of_service", None, 400, "minutes must be a number"),
    (Role.SUPERVISOR, "out_of_service", 0, 400, "positive"),
    (Role.SUPERVISOR, "out_of_service", True, 400, "minutes must be a number"),
], ids=["operator-2h", "operator-over", "supervisor-12h", "supervisor-over", "oos-7d",
        "oos-over", "oos-without-expiry", "oos-zero", "oos-boolean"])
async def test_durations_are_bounded_by_the_role(
        live: LiveState, store: UserStore, clock: Clock, role: Role, action: str,
        minutes: Any, status: int, error: str | None) -> None:
    alarms = RecordingAlarms()
    async with dashboard(live, alarms, authenticator(store, clock)) as server, \
            Browser(server) as browser:
        await browser.sign_in(NAME_OF[role])
        body = {k: v for k, v in {**BODY, "minutes": minutes}.items() if v is not None}
        got, doc = await browser.post(f"/api/alarms/{action}", body)
        assert got == status, doc
        if error:
            assert error in doc["error"] and alarms.calls == []
        else:
            assert alarms.calls == [(action, NAME_OF[role], BODY["reason"], minutes * 60.0)]


# ---------------------------------------------------------------- sign-in and sessions


async def test_sign_in_me_and_sign_out(live: LiveState, store: UserStore, clock: Clock) -> None:
    async with dashboard(live, RecordingAlarms(), authenticator(store, clock)) as server, \
            Browser(server) as browser:
        status, page = await browser.get("/")
        assert status == 302  # the page sends a stranger to sign in
        assert (await browser.get("/api/state"))[0] == 401
        assert (await browser.get("/login"))[0] == 200
        assert (await browser.get("/static/login.js"))[0] == 200
        assert (await browser.get("/healthz"))[0] in (200, 503)
        assert await browser.sign_in("otto", "wrong password!") == 401
        assert await browser.sign_in("otto") == 200
        cookie = next(iter(browser.http.cookie_jar))
        assert cookie.key == "dcim_session" and cookie["httponly"] and cookie["path"] == "/"
        assert cookie["samesite"] == "Strict" and not cookie["secure"]  # plain HTTP here
        status, me = await browser.get("/api/me")
        assert status == 200 and (me["user"], me["role"], me["via"]) == ("otto", "operator",
                                                                          "session")
        assert me["csrf_token"] == browser.csrf and me["shelve_max_minutes"] == 120
        assert me["out_of_service_max_minutes"] is None and "ack" in me["permissions"]
        assert (await browser.get("/"))[0] == 200
        assert (await browser.post("/api/logout", {}))[0] == 200
        assert (await browser.get("/api/state"))[0] == 401


async def test_a_session_ends_when_idle_expired_or_the_user_disabled(
        live: LiveState, store: UserStore, clock: Clock) -> None:
    auth = authenticator(store, clock, session_idle_s=600, session_max_s=3600)
    async with dashboard(live, RecordingAlarms(), auth) as server, Browser(server) as browser:
        await browser.sign_in("otto")
        clock.now += 599
        assert (await browser.get("/api/state"))[0] == 200
        clock.now += 601
        assert (await browser.get("/api/state"))[0] == 401  # idle too long
        await browser.sign_in("otto")
        for _ in range(6):
            clock.now += 590
            assert (await browser.get("/api/state"))[0] == 200
        clock.now += 100
        assert (await browser.get("/api/state"))[0] == 401  # an hour after sign-in
        await browser.sign_in("otto")
        store.set_disabled("otto")  # from the CLI, say: the next request is refused
        assert (await browser.get("/api/state"))[0] == 401
        assert await browser.sign_in("otto") == 401


async def test_sign_in_is_rate_limited_and_every_failure_logged(
        live: LiveState, store: UserStore, clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dcim.auth")
    async with dashboard(live, RecordingAlarms(), authenticator(store, clock)) as server, \
            Browser(server) as browser:
        for _ in range(5):
            assert await browser.sign_in("otto", "guess 123456") == 401
        async with browser.http.post(browser.base + "/api/login", headers={
                "Origin": browser.base}, json={"user": "otto", "password": PASSWORD}) as r:
            assert r.status == 429 and 0 < int(r.headers["Retry-After"]) <= 300
        # the address is limited too: other names from it are refused without a guess
        assert await browser.sign_in("suki") == 429
        clock.now += 301
        assert await browser.sign_in("otto") == 200
    refused = [r for r in caplog.records if r.getMessage() == "sign-in refused"]
    assert len(refused) == 7 and {r.__dict__["reason"] for r in refused} == {
        "wrong password", "too many failures"}
    assert all(r.__dict__["client"] == "127.0.0.1" for r in refused)
    assert "guess 123456" not in caplog.text and PASSWORD not in caplog.text


async def test_guesses_at_once_do_not_slip_past_the_limit(
        live: LiveState, store: UserStore, clock: Clock) -> None:
    async with dashboard(live, RecordingAlarms(), authenticator(store, clock)) as server, \
            Browser(server) as browser:
        for _ in range(8):  # a shift signing in from one office address: never limited
            assert await browser.sign_in("otto") == 200
        guesses = await asyncio.gather(*(browser.sign_in("suki", f"guess {i:06d}")
                                         for i in range(20)))
        assert sorted(guesses) == [401] * 5 + [429] * 15


async def test_csrf_token_is_needed_with_a_session(live: LiveState, store: UserStore,
                                                   clock: Clock) -> None:
    alarms = RecordingAlarms()
    async with dashboard(live, alarms, authenticator(store, clock)) as server, \
            Browser(server) as browser:
        await browser.sign_in("otto")
        refused: list[dict[str, str | None]] = [
            {"X-CSRF-Token": None}, {"X-CSRF-Token": "guess"}, {"Origin": "http://evil.example"}]
        for headers in refused:
            status, doc = await browser.post("/api/alarms/ack", BODY, headers)
            assert status == 403, headers
        assert alarms.calls == []
        assert (await browser.post("/api/alarms/ack", BODY))[0] == 200
        assert (await browser.post("/api/logout", {}, {"X-CSRF-Token": None}))[0] == 403


async def test_tokens_act_without_csrf_and_stop_when_revoked(
        live: LiveState, store: UserStore, clock: Clock) -> None:
    alarms = RecordingAlarms()
    secret = store.create_token("suki", "bms-bridge", Role.OPERATOR)
    async with dashboard(live, alarms, authenticator(store, clock)) as server, \
            Browser(server) as machine:
        bearer: dict[str, str | None] = {"Authorization": f"Bearer {secret}", "Origin": None}
        assert (await machine.post("/api/alarms/ack", BODY, bearer))[0] == 200
        assert alarms.calls[-1][:2] == ("ack", "suki")
        status, doc = await machine.post("/api/alarms/reset", BODY, bearer)
        assert status == 403 and "operator may not reset" in doc["error"]  # the token's role
        status, me = await machine.get("/api/me", bearer)
        assert (me["user"], me["role"], me["via"], me["csrf_token"]) == (
            "suki", "operator", "token", None)
        assert store.tokens()[0].last_used_ns is not None
        for wrong in (f"Bearer {secret}x", f"Basic {secret}", "Bearer "):
            assert (await machine.get("/api/state", {"Authorization": wrong}))[0] == 401
        store.revoke_token("bms-bridge")
        assert (await machine.post("/api/alarms/ack", BODY, bearer))[0] == 401
        # a bad token is not rescued by a good cookie
        await machine.sign_in("suki")
        assert (await machine.get("/api/state", {"Authorization": f"Bearer {secret}"}))[0] == 401


async def test_a_trusted_proxy_names_the_user(live: LiveState, store: UserStore,
                                              clock: Clock) -> None:
    alarms = RecordingAlarms()
    for proxies, status in ((["127.0.0.1"], 200), (["10.9.9.9"], 401)):
        auth = authenticator(store, clock, trusted_proxy_header="X-Forwarded-User",
                             trusted_proxies=proxies)
        async with dashboard(live, alarms, auth, allowed_hosts=("127.0.0.1", "dcim.example")
                             ) as server, Browser(server) as proxied:
            named = {"X-Forwarded-User": "otto"}
            got, me = await proxied.get("/api/me", named)
            assert got == status
            if status == 200:
                assert (me["user"], me["via"]) == ("otto", "proxy")
                assert (await proxied.post("/api/alarms/ack", BODY, named))[0] == 403  # CSRF
                sent = {**named, "X-CSRF-Token": me["csrf_token"]}
                assert (await proxied.post("/api/alarms/ack", BODY, sent))[0] == 200
                assert (await proxied.get("/api/me", {"X-Forwarded-User": "nobody"}))[0] == 401
                # TLS ends at the proxy: the name and scheme it was reached by are the origin
                public = {**sent, "X-Forwarded-Host": "dcim.example",
                          "Origin": "https://dcim.example", "X-Forwarded-Proto": "https"}
                assert (await proxied.post("/api/alarms/ack", BODY, public))[0] == 200
                rebound = {**public, "X-Forwarded-Host": "evil.example",
                           "Origin": "https://evil.example"}
                assert (await proxied.post("/api/alarms/ack", BODY, rebound))[0] == 421
    assert [c[:2] for c in alarms.calls] == [("ack", "otto")] * 2


async def test_actions_per_minute_are_limited(live: LiveState, store: UserStore,
                                              clock: Clock) -> None:
    auth = authenticator(store, clock, actions_per_minute=3)
    async with dashboard(live, RecordingAlarms(), auth) as server, Browser(server) as browser:
        await browser.sign_in("otto")
        statuses = [(await browser.post("/api/alarms/ack", BODY))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        clock.now += 60.1
        assert (await browser.post("/api/alarms/ack", BODY))[0] == 200


async def test_the_stream_ends_when_the_session_does(live: LiveState, store: UserStore,
                                                     clock: Clock) -> None:
    async with dashboard(live, RecordingAlarms(), authenticator(store, clock),
                         heartbeat_s=0.05) as server, Browser(server) as browser:
        await browser.sign_in("otto")
        async with browser.http.get(browser.base + "/api/events") as stream:
            assert stream.status == 200
            await stream.content.readuntil(b"\n\n")  # retry
            await browser.post("/api/logout", {})
            await asyncio.wait_for(stream.content.read(), 2.0)  # the server ended it
            assert stream.content.at_eof()


# ---------------------------------------------------------------- headers


@pytest.mark.parametrize("path", ["/", "/login", "/static/app.js", "/api/state", "/api/me",
                                  "/healthz", "/nowhere"])
async def test_every_response_carries_the_security_headers(
        live: LiveState, store: UserStore, clock: Clock, path: str) -> None:
    async with dashboard(live, None, authenticator(store, clock)) as server, \
            Browser(server) as browser:
        async with browser.http.get(browser.base + path, allow_redirects=False) as r:
            for name, value in SECURITY_HEADERS.items():
                assert r.headers.get(name) == value, (path, name)
            assert r.headers["Server"] == "dcim" and "Strict-Transport-Security" not in r.headers


async def test_the_pages_have_no_inline_script_or_style(live: LiveState) -> None:
    async with dashboard(live, None) as server, Browser(server) as browser:
        for page in ("/static/index.html", "/static/login.html"):
            _, html = await browser.get(page)
            assert "<script>" not in html and "<style" not in html and " style=" not in html
            assert not re.search(r"\son[a-z]+\s*=", html)  # no onclick= and the like


# ---------------------------------------------------------------- where and how it listens


async def test_without_sign_in_only_loopback_is_served(live: LiveState, site: Site) -> None:
    app = create_app(DashboardSettings(host="0.0.0.0"), live, None)
    with pytest.raises(ValueError, match="without sign-in"):
        await DashboardServer(app, port=0).start()
    system = System(site, SystemOptions(dashboard_port=0, dashboard_host="0.0.0.0"))
    with pytest.raises(ConfigError) as refused:
        await system.start()  # refused before anything starts
    message = str(refused.value)
    assert "auth" in message and "docs/security.md" in message and "0.0.0.0" in message
    assert system.simulator is None and system.storage is None


async def test_a_client_that_never_finishes_its_request_is_dropped(live: LiveState) -> None:
    app = create_app(DashboardSettings(keepalive_timeout_s=0.3, body_timeout_s=0.3), live,
                     RecordingAlarms())
    server = DashboardServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert await asyncio.wait_for(reader.read(), 3.0) == b""  # closed by the server
        writer.close()
        await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /api/alarms/ack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        answer = await asyncio.wait_for(reader.read(200), 3.0)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert await asyncio.wait_for(reader.read(), 3.0)  # the rest, then closed
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


async def test_over_tls_the_cookie_is_secure_and_hsts_sent(
        tmp_path: Path, live: LiveState, store: UserStore, clock: Clock) -> None:
    from dcim.dashboards.security import tls_context

    cert, key = _self_signed(tmp_path)
    auth = authenticator(store, clock, tls_certificate=cert, tls_private_key=key)
    app = create_app(DashboardSettings(), live, RecordingAlarms(), auth=auth)
    server = DashboardServer(app, "127.0.0.1", 0, ssl_context=tls_context(cert, key))
    await server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=cert)
        async with Browser(None,  # type: ignore[arg-type]
                           connector=aiohttp.TCPConnector(ssl=trust),
                           base=server.url.rstrip("/")) as browser:
            assert await browser.sign_in("otto") == 200
            cookie = next(iter(browser.http.cookie_jar))
            assert cookie.key == "__Host-dcim_session" and cookie["secure"]
            async with browser.http.get(browser.base + "/api/state") as r:
                assert r.status == 200 and r.headers["Strict-Transport-Security"]
            assert (await browser.post("/api/alarms/ack", BODY))[0] == 200
    finally:
        await server.stop()
