"""The dashboard's HTTP API described as an OpenAPI 3.1 document, served at
GET /api/openapi.json (view permission).

Written as data, beside the handlers it describes (dashboards/app.py, signin.py); a test
(tests/test_openapi.py) validates it and checks it against the routes the app really has,
and a few of its responses against real answers. Each operation names the action it needs
(dcim/auth/roles.py) under `x-dcim-action`, the same table the guard admits requests by.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dcim import __version__
from dcim.auth.roles import ALARM_ACTIONS, ALARM_HISTORY, VIEW
from dcim.dashboards.security import (COOKIE, CSRF_HEADER, MAX_BODY_BYTES, PUBLIC,
                                      SECURE_COOKIE, SIGNED_IN, UNGUARDED_HOST)
from dcim.dashboards.series import MAX_SERIES_ROWS
from dcim.storage.base import Aggregate

PATH = "/api/openapi.json"
OPENAPI_JSON = web.AppKey("openapi_json", bytes)

Json = dict[str, Any]

# who may call: a session cookie or a bearer token; nothing at all on a dashboard without
# `auth:` (loopback only), which the empty requirement `{}` stands for
READ: list[Json] = [{"session": []}, {"bearer": []}, {}]
WRITE: list[Json] = [{"session": [], "csrf": []}, {"bearer": []}, {}]
OPEN: list[Json] = []


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str, headers: Json | None = None) -> Json:
    """A JSON response."""
    response: Json = {"description": description,
                      "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str) -> Json:
    return _json(_ref("Error"), description)


def _text(media: str, description: str) -> Json:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _query(name: str, schema: Json, description: str, required: bool = False) -> Json:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


# the refusals of the guard (dashboards/security.py), common to every guarded operation
GUARDED = {
    "401": _error("not signed in (no session, or a bad token); WWW-Authenticate: Bearer"),
    "403": _error("the role may not take this action, or a cross-origin request"),
    "421": _error("the Host header does not name this dashboard (auth.allowed_hosts)"),
}
POSTED = {
    "400": _error("the body is not a JSON object, or a field is wrong (the message says "
                  "which)"),
    "403": _error(f"cross-origin, a missing or wrong {CSRF_HEADER} header on a cookie "
                  "session, or the role may not take this action"),
    "408": _error("the body did not arrive in time"),
    "413": _error(f"a body over {MAX_BODY_BYTES // 1024} KiB"),
    "415": _error("Content-Type is not application/json"),
}


def _op(summary: str, action: str, responses: Json, *, tag: str,
        parameters: Sequence[Json] = (), body: Json | None = None,
        security: list[Json] | None = None) -> Json:
    """One operation; the guard's refusals added unless it is public."""
    op: Json = {"summary": summary, "tags": [tag], "x-dcim-action": action,
                "responses": dict(responses)}
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    if action != PUBLIC:
        op["responses"] = {**GUARDED, **(POSTED if body is not None else {}), **op["responses"]}
        op["security"] = security if security is not None else (
            WRITE if body is not None else READ)
    else:
        op["responses"].setdefault("421", GUARDED["421"])
        op["security"] = OPEN
    return op


def _schemas(trend_points: Sequence[str]) -> Json:
    number_or_null = {"type": ["number", "null"]}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "State": {
            "type": "object",
            "description": "the live state document (dashboards/state.py); the same JSON is "
                           "each event of /api/events",
            "required": ["seq", "site", "headline", "collection", "redundancy",
                         "power_chain", "cooling", "racks", "ashrae", "alarms",
                         "alarm_counts", "anomalies", "devices_not_up", "withheld",
                         "device_values"],
            "properties": {
                "seq": {"type": "integer"},
                "site": {"type": "object", "required": ["id", "name", "time_ms", "timezone"],
                         "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                        "time_ms": {"type": "integer"},
                                        "timezone": {"type": "string"}}},
                "headline": {"type": "object"},
                "collection": {"type": "object"},
                "redundancy": {"type": ["object", "null"]},
                "power_chain": {"type": "array", "items": {"type": "object"}},
                "cooling": {"type": "array", "items": {"type": "object"}},
                "racks": {"type": "array", "items": {"type": "object"}},
                "ashrae": {"type": ["object", "null"]},
                "alarms": {"type": "array", "items": {"type": "object"}},
                "alarm_counts": {"type": "object"},
                "anomalies": {"type": "array", "items": {"type": "object"}},
                "devices_not_up": {"type": "array", "items": {"type": "object"}},
                "withheld": {"type": "object", "additionalProperties": {"type": "string"}},
                "device_values": {"type": "array"},
            },
        },
        "Trend": {
            "type": "object", "required": ["point", "every_s", "points"],
            "properties": {
                "point": {"type": "string", "enum": list(trend_points)},
                "every_s": {"type": "number"},
                "points": {"type": "array", "description": "[epoch ms, mean or null]",
                           "items": {"type": "array", "prefixItems": [
                               {"type": "integer"}, number_or_null],
                               "minItems": 2, "maxItems": 2}},
            },
        },
        "Series": {
            "type": "object",
            "required": ["device", "point", "unit", "every_s", "agg", "points"],
            "properties": {
                "device": {"type": "string"}, "point": {"type": "string"},
                "unit": {"type": "string"},
                "every_s": {"type": ["number", "null"], "description": "null: raw samples"},
                "agg": {"type": ["string", "null"], "enum": [*(a.value for a in Aggregate),
                                                              None]},
                "points": {"type": "array", "maxItems": MAX_SERIES_ROWS,
                           "description": "[epoch ms, value or null, quality]; a bucket's "
                                          "quality is good, or null when it has no sample",
                           "items": {"type": "array", "prefixItems": [
                               {"type": "integer"}, number_or_null,
                               {"type": ["string", "null"],
                                "enum": ["good", "stale", "bad", None]}],
                               "minItems": 3, "maxItems": 3}},
            },
        },
        "Health": {
            "type": "object", "required": ["ok"],
            "properties": {"ok": {"type": "boolean"}, "devices": {"type": "integer"},
                           "up": {"type": "integer"}, "buffered": {"type": "integer"},
                           "storage_outage_s": {"type": "number"},
                           "last_error": {"type": "string"}},
            "additionalProperties": True,
        },
        "AlarmAction": {
            "type": "object", "required": ["alarm_id"],
            "properties": {
                "alarm_id": {"type": "string", "maxLength": 500},
                "comment": {"type": "string", "maxLength": 500},
                "reason": {"type": "string", "maxLength": 500,
                           "description": "shelve and out_of_service: why"},
                "minutes": {"type": "number", "exclusiveMinimum": 0,
                            "description": "shelve and out_of_service: how long (within "
                                           "the role's limit, /api/me)"},
                "user": {"type": "string", "description": "only without sign-in (loopback): "
                                                          "the name typed into the page"},
            },
        },
        "AlarmEventRef": {
            "type": "object", "required": ["seq", "alarm_id", "action", "state"],
            "properties": {"seq": {"type": "integer"}, "alarm_id": {"type": "string"},
                           "action": {"type": "string"}, "state": {"type": "string"}},
        },
        "AlarmEvent": {
            "type": "object",
            "required": ["seq", "time_ms", "alarm_id", "action", "state", "priority",
                         "message", "user", "comment", "announced"],
            "properties": {
                "seq": {"type": "integer"}, "time_ms": {"type": "integer"},
                "alarm_id": {"type": "string"}, "action": {"type": "string"},
                "state": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                "message": {"type": "string"}, "user": {"type": "string"},
                "comment": {"type": "string"}, "announced": {"type": "boolean"},
            },
        },
        "Login": {
            "type": "object", "required": ["user", "password"],
            "properties": {"user": {"type": "string", "minLength": 1, "maxLength": 200},
                           "password": {"type": "string", "format": "password"}},
        },
        "Me": {
            "type": "object",
            "required": ["auth", "user", "role", "via", "csrf_token", "permissions",
                         "shelve_max_minutes", "out_of_service_max_minutes"],
            "properties": {
                "auth": {"type": "boolean", "description": "whether the site has sign-in"},
                "user": {"type": ["string", "null"]}, "role": {"type": ["string", "null"]},
                "via": {"type": "string"},
                "csrf_token": {"type": ["string", "null"],
                               "description": f"send it as {CSRF_HEADER} on every POST of "
                                              "a cookie session"},
                "permissions": {"type": "array", "items": {"type": "string"}},
                "shelve_max_minutes": number_or_null,
                "out_of_service_max_minutes": number_or_null,
            },
        },
    }


def _paths(trend_points: Sequence[str], max_trend_hours: float) -> Json:
    hours = {"type": "number", "exclusiveMinimum": 0, "maximum": max_trend_hours}
    not_running = _error("that part of the system is not running")
    html = _text("text/html", "the page")
    etag = {"ETag": {"schema": {"type": "string"}, "description": "quoted '<state>.<alarms>'"}}
    return {
        "/": {"get": _op("The dashboard page (a redirect to /login without a session)", VIEW,
                         {"200": html, "302": {"description": "to /login: sign in first"}},
                         tag="page")},
        "/api/state": {"get": _op(
            "The live state document", VIEW,
            {"200": _json(_ref("State"), "the document", etag),
             "304": {"description": "If-None-Match named the current ETag"}},
            tag="state",
            parameters=[{"name": "If-None-Match", "in": "header", "required": False,
                         "schema": {"type": "string"}}])},
        "/api/events": {"get": _op(
            "Server-Sent Events: the state document now, then each newer one", VIEW,
            {"200": _text("text/event-stream", "`event: state`, `id: <state>.<alarms>`, "
                                               "`data: <State JSON>`; heartbeat comments"),
             "503": _error("too many open event streams (poll /api/state instead)")},
            tag="state",
            parameters=[{"name": "Last-Event-ID", "in": "header", "required": False,
                         "schema": {"type": "string"}}])},
        "/api/trend": {"get": _op(
            "A stored analytics series of the site, mean per bucket (about 72 buckets)", VIEW,
            {"200": _json(_ref("Trend"), "the buckets, oldest first"),
             "400": _error("point or hours out of range"), "503": not_running},
            tag="history",
            parameters=[_query("point", {"type": "string", "enum": list(trend_points),
                                         "default": "pue_live"}, "which series"),
                        _query("hours", {**hours, "default": 6}, "how far back")])},
        "/api/series": {"get": _op(
            f"Any stored point of the site's devices, raw or aggregated (at most "
            f"{MAX_SERIES_ROWS} rows)", VIEW,
            {"200": _json(_ref("Series"), "the samples or buckets, oldest first"),
             "400": _error("unknown device, point or parameter, a bad window, or more than "
                           f"{MAX_SERIES_ROWS} rows"),
             "503": not_running},
            tag="history",
            parameters=[
                _query("device", {"type": "string"}, "a device id of the site", True),
                _query("point", {"type": "string"}, "a point of that device", True),
                _query("since", {"type": "string", "default": "1h"},
                       "a duration before now (6h) or an ISO 8601 time"),
                _query("until", {"type": "string"}, "like since; default now"),
                _query("every", {"type": "string"},
                       "bucket width (at least 1s); without it, raw samples"),
                _query("agg", {"type": "string", "enum": [a.value for a in Aggregate],
                               "default": "mean"}, "aggregate per bucket (needs every)")])},
        "/metrics": {"get": _op(
            "Collector, buffer and live-state health in Prometheus' text format", VIEW,
            {"200": _text("text/plain", "the exposition"),
             "503": _text("text/plain", "collectors not running")},
            tag="health")},
        "/healthz": {"get": _op(
            "Whether collection and storage work", PUBLIC,
            {"200": _json(_ref("Health"), "healthy"),
             "503": _json(_ref("Health"), "unhealthy: storage out, or the buffer cannot "
                                          "write")},
            tag="health")},
        "/api/alarms/{action}": {"post": _op(
            "An operator action on an alarm (the action of that name is needed)", "{action}",
            {"200": _json(_ref("AlarmEventRef"), "the journal event it made"),
             "404": _error("no such action"),
             "409": _error("the alarm's state does not allow it"),
             "429": _error("beyond the user's alarm actions a minute (Retry-After)"),
             "503": not_running},
            tag="alarms", body=_ref("AlarmAction"),
            parameters=[{"name": "action", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": list(ALARM_ACTIONS)}}])},
        "/api/alarms/history": {"get": _op(
            "The alarm journal's events, newest last (at most 1000)", ALARM_HISTORY,
            {"200": _json({"type": "object", "required": ["events"],
                           "properties": {"events": {"type": "array",
                                                     "items": _ref("AlarmEvent")}}},
                          "the events"),
             "400": _error("hours out of range"), "503": not_running},
            tag="alarms",
            parameters=[_query("hours", {**hours, "default": 24}, "how far back"),
                        _query("alarm_id", {"type": "string"}, "one alarm's events only")])},
        "/login": {"get": _op(
            "The sign-in page (a redirect to / without sign-in configured)", PUBLIC,
            {"200": html, "302": {"description": "to /: this dashboard has no sign-in"}},
            tag="sign-in")},
        "/api/login": {"post": _op(
            "Sign in: a session cookie and the identity document", PUBLIC,
            {"200": _json(_ref("Me"), "signed in",
                          {"Set-Cookie": {"schema": {"type": "string"},
                                          "description": f"{COOKIE} ({SECURE_COOKIE} over "
                                                         "TLS), HttpOnly, SameSite=Strict"}}),
             **{k: v for k, v in POSTED.items() if k != "403"},
             "401": _error("wrong user or password"),
             "403": _error("cross-origin request"),
             "404": _error("this dashboard has no sign-in"),
             "429": _error("too many failures: wait (Retry-After)")},
            tag="sign-in", body=_ref("Login"))},
        "/api/logout": {"post": _op(
            "Sign out: the session ends and its cookie is deleted", SIGNED_IN,
            {"200": _json({"type": "object", "required": ["signed_out"],
                           "properties": {"signed_out": {"const": True}}}, "signed out")},
            tag="sign-in", security=WRITE)},
        "/api/me": {"get": _op(
            "Who the caller is: role, permissions, CSRF token, limits", SIGNED_IN,
            {"200": _json(_ref("Me"), "the identity")}, tag="sign-in")},
        PATH: {"get": _op("This document", VIEW,
                          {"200": {"description": "OpenAPI 3.1",
                                   "content": {"application/json": {
                                       "schema": {"type": "object"}}}}},
                          tag="meta")},
        "/static/{filename}": {"get": _op(
            "The page's scripts, styles and images", PUBLIC,
            {"200": {"description": "the file"}, "404": {"description": "no such file"}},
            tag="page",
            parameters=[{"name": "filename", "in": "path", "required": True,
                         "schema": {"type": "string"}}])},
    }


def openapi_document(trend_points: Sequence[str], max_trend_hours: float) -> Json:
    """The OpenAPI 3.1 description of every route of the dashboard app."""
    paths = _paths(trend_points, max_trend_hours)
    for path in UNGUARDED_HOST:  # probes name the host by address: no Host check
        paths[path]["get"]["responses"].pop("421", None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dcim dashboard API", "version": __version__,
            "description": "The live dashboard's HTTP API (docs/dashboard.md, "
                           "docs/security.md). Every request passes the guard: Host "
                           "allow-list (421), Origin check on POSTs (403), sign-in (401), "
                           f"the {CSRF_HEADER} header on POSTs of a cookie session (403) and "
                           "the route's permission (403, `x-dcim-action`). A dashboard "
                           "without `auth:` serves loopback only and asks for no "
                           "credentials.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("page", "state", "history", "health", "alarms",
                                       "sign-in", "meta")],
        "paths": paths,
        "components": {
            "schemas": _schemas(trend_points),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": COOKIE,
                            "description": f"from POST /api/login; named {SECURE_COOKIE} "
                                           "over TLS"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API token (dcim users token ...)"},
                "csrf": {"type": "apiKey", "in": "header", "name": CSRF_HEADER,
                         "description": "csrf_token of /api/me, on every POST of a cookie "
                                        "session"},
            },
        },
    }


def openapi_json(trend_points: Sequence[str], max_trend_hours: float) -> bytes:
    """The document serialised once, for the app to serve."""
    return json.dumps(openapi_document(trend_points, max_trend_hours),
                      separators=(",", ":")).encode()


routes = web.RouteTableDef()


@routes.get(PATH)
async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_JSON], content_type="application/json",
                        headers={"Cache-Control": "no-cache"})
