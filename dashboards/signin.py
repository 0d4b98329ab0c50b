"""Sign-in routes of the dashboard: the sign-in page, POST /api/login, POST /api/logout and
GET /api/me (who the page is signed in as, their role, permissions and CSRF token)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from aiohttp import web

from dcim.auth.passwords import MAX_PASSWORD
from dcim.auth.service import Identity, SignInRefused
from dcim.dashboards.security import (GUARD, IDENTITY, Guard, Refused, client_address,
                                      cookie_name, over_tls, read_json)

STATIC = Path(__file__).with_name("static")

routes = web.RouteTableDef()


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60.0


def me_doc(identity: Identity, guard: Guard) -> dict[str, Any]:
    """What the page needs to know of who it is signed in as."""
    auth = guard.auth
    return {"auth": auth is not None,
            "user": identity.name if identity.signed_in else None,
            "role": identity.role.value if identity.role else None,
            "via": identity.via,
            "csrf_token": identity.csrf,
            "permissions": sorted(identity.permissions),
            # None: no limit of the role's (the alarm engine still bounds every shelve)
            "shelve_max_minutes": _minutes(auth.shelve_max_s(identity.role)) if auth else None,
            "out_of_service_max_minutes":
                _minutes(auth.out_of_service_max_s(identity.role)) if auth else None}


@routes.get("/login")
async def _login_page(request: web.Request) -> web.StreamResponse:
    if request.app[GUARD].auth is None:  # nothing to sign in to
        raise web.HTTPFound("/")
    return web.FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-cache"})


@routes.post("/api/login")
async def _login(request: web.Request) -> web.Response:
    """JSON {user, password}: a session cookie, and the page's identity document."""
    guard = request.app[GUARD]
    auth = guard.auth
    if auth is None:
        raise Refused(404, "this dashboard has no sign-in (the site file has no auth: section)")
    body = await read_json(request)
    name, password = body.get("user"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name \
            or len(name) > 200 or len(password) > MAX_PASSWORD:
        raise Refused(400, "user and password must be strings")
    try:
        session, _ = await auth.sign_in(name, password, client_address(request, auth))
    except SignInRefused as refused:
        if refused.retry_after_s:
            raise Refused(429, str(refused),
                          {"Retry-After": str(math.ceil(refused.retry_after_s))}) from None
        raise Refused(401, str(refused)) from None
    old = request.cookies.get(cookie_name(request))
    if old:  # a new id at every sign-in: a planted cookie never becomes a session
        auth.sessions.drop(old)
    identity = auth.from_session(session.id)
    assert identity is not None
    response = web.json_response(me_doc(identity, guard), headers={"Cache-Control": "no-store"})
    response.set_cookie(cookie_name(request), session.id, path="/", httponly=True,
                        secure=over_tls(request), samesite="Strict")
    return response


@routes.post("/api/logout")
async def _logout(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    if guard.auth is not None:
        guard.auth.sign_out(request[IDENTITY])
    response = web.json_response({"signed_out": True})
    response.del_cookie(cookie_name(request), path="/", secure=over_tls(request),
                        httponly=True, samesite="Strict")
    return response


@routes.get("/api/me")
async def _me(request: web.Request) -> web.Response:
    return web.json_response(me_doc(request[IDENTITY], request.app[GUARD]),
                             headers={"Cache-Control": "no-store"})
