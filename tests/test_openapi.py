"""The OpenAPI document of the dashboard (dashboards/openapi.py): valid OpenAPI 3.1, one
operation for every route the app really has (and no route it lacks), the same permission
the guard admits by, and real answers of a served app matching what it documents."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from openapi_spec_validator import validate

from dcim.auth.passwords import Passwords
from dcim.auth.roles import Role
from dcim.auth.service import Authenticator
from dcim.auth.store import UserStore
from dcim.config.auth import AuthConfig
from dcim.dashboards.app import (MAX_TREND_HOURS, ROUTE_ACTIONS, TREND_POINTS,
                                 DashboardSettings, create_app)
from dcim.dashboards.openapi import PATH, openapi_document
from dcim.live.service import LiveState
from dcim.site import Site, load_site
from tests.test_auth import FAST, PASSWORD, Clock
from tests.test_web_security import RecordingAlarms

ROOT = Path(__file__).resolve().parents[1]
DOC = openapi_document(TREND_POINTS, MAX_TREND_HOURS)
METHODS = {"get", "post", "put", "patch", "delete"}


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
def store(tmp_path: Path) -> Iterator[UserStore]:
    users = UserStore(tmp_path / "auth.sqlite", passwords=Passwords(FAST))
    users.add_user("otto", Role.OPERATOR, PASSWORD)
    users.add_user("vera", Role.VIEWER, PASSWORD)
    yield users
    users.close()


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, documented path) of every route the app answers; HEAD goes with GET."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path += "/{filename}"
        if route.method != "HEAD":
            found.add((route.method.lower(), path))
    return found


def documented_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in DOC["paths"].items() for method in item
            if method in METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOC)  # raises with the first error it finds
    assert DOC["openapi"].startswith("3.1")
    # every operation says who may call it and what comes back
    for method, path in documented_routes():
        op = DOC["paths"][path][method]
        assert op["summary"] and op["responses"] and "security" in op, (method, path)


def test_every_route_of_the_app_is_documented_and_nothing_else(site: Site) -> None:
    live = LiveState(site, None)  # not started: only its routes are looked at
    app = create_app(DashboardSettings(), live, None)
    real = app_routes(app)
    assert (("get", PATH)) in real
    assert real - documented_routes() == set(), "routes the document lacks"
    assert documented_routes() - real == set(), "documented routes the app lacks"


def test_each_operation_names_the_permission_the_guard_checks() -> None:
    for method, path in documented_routes():
        canonical = path.removesuffix("/{filename}")
        assert DOC["paths"][path][method]["x-dcim-action"] == ROUTE_ACTIONS[canonical], path


def check(method: str, path: str, status: int, body: Any) -> None:
    """The answer is documented for the operation, and its JSON fits the schema."""
    responses = DOC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}: {body}"
    content = responses[str(status)].get("content", {})
    if isinstance(body, (dict, list)):
        assert "application/json" in content, (path, status)
        schema = {**content["application/json"]["schema"], "components": DOC["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)
    elif content:
        assert "application/json" not in content, (path, status, body)


async def call(http: aiohttp.ClientSession, server: BaseTestServer, method: str, url: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, server.make_url(url), **kwargs) as r:
        body = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, body


# (method, url, documented path, token of: None / "otto" / "vera", JSON body, status)
CASES = [
    ("get", PATH, PATH, "vera", None, 200),
    ("get", PATH, PATH, None, None, 401),
    ("get", "/api/state", "/api/state", "vera", None, 200),
    ("get", "/api/state", "/api/state", None, None, 401),
    ("get", "/api/trend?point=nope", "/api/trend", "vera", None, 400),
    ("get", "/api/trend", "/api/trend", "vera", None, 503),  # no store given
    ("get", "/api/series?device=nope&point=x", "/api/series", "vera", None, 400),
    ("get", "/metrics", "/metrics", "vera", None, 503),
    ("get", "/healthz", "/healthz", None, None, 200),
    ("get", "/api/me", "/api/me", "otto", None, 200),
    ("get", "/api/alarms/history?hours=2", "/api/alarms/history", "otto", None, 200),
    ("get", "/api/alarms/history?hours=0", "/api/alarms/history", "otto", None, 400),
    ("post", "/api/alarms/ack", "/api/alarms/{action}", "otto",
     {"alarm_id": "ups:UPS-A:on_battery", "comment": "seen"}, 200),
    ("post", "/api/alarms/ack", "/api/alarms/{action}", "vera",
     {"alarm_id": "ups:UPS-A:on_battery"}, 403),
    ("post", "/api/alarms/shelve", "/api/alarms/{action}", "otto",
     {"alarm_id": "ups:UPS-A:on_battery", "reason": "works", "minutes": -1}, 400),
    ("post", "/api/login", "/api/login", None, {"user": "otto", "password": "wrong"}, 401),
    ("post", "/api/login", "/api/login", None, {"user": "otto", "password": PASSWORD}, 200),
]


@pytest.mark.parametrize("method,url,path,who,body,status", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[3]}-{c[5]}" for c in CASES])
async def test_real_answers_match_the_document(live: LiveState, store: UserStore,
                                               method: str, url: str, path: str,
                                               who: str | None, body: Any,
                                               status: int) -> None:
    auth = Authenticator(AuthConfig(), store, clock=Clock(time.time()))
    app = create_app(DashboardSettings(), live, RecordingAlarms(), auth=auth)
    headers = {}
    if who is not None:
        headers["Authorization"] = f"Bearer {store.create_token(who, f'{who}-api')}"
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        got, answer = await call(http, server, method, url, headers=headers,
                                 **({"json": body} if body is not None else {}))
    assert got == status, answer
    check(method, path, got, answer)
    if path == PATH and got == 200:
        assert answer == DOC  # what is served is the document the other tests check
    if path == "/api/state" and got == 200:
        assert answer["site"]["id"] == "cyberport5"


async def test_a_dashboard_without_sign_in_serves_it_on_loopback(live: LiveState) -> None:
    app = create_app(DashboardSettings(), live, None)
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        status, doc = await call(http, server, "get", PATH)
    assert status == 200 and doc["info"]["title"] == "dcim dashboard API"
    # the empty requirement: no credentials asked without `auth:`
    assert {} in doc["paths"]["/api/state"]["get"]["security"]
