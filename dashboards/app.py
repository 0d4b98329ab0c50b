"""The live dashboard: an aiohttp app over the live state, bound to 127.0.0.1 by default.

`create_app` takes the narrow things it shows (a `StateSource`, an `AlarmView`, and
callables for metrics, health and stored trends, and an `Authenticator` when the site has an
`auth:` section), never the whole system. Routes (and the action each needs, dcim/auth/roles.py):

- `GET /`: the page (dashboards/static/index.html; app.js listens on /api/events) (view)
- `GET /api/events`: Server-Sent Events: the current document on connect, then each newer
  one (at most `max_pushes_per_s` a second), a heartbeat comment every `heartbeat_s` (view)
- `GET /api/state`: the same document (dashboards/state.py) as one JSON answer, with an ETag
- `GET /api/trend?point=pue_live&hours=6`: a stored analytics series, mean per bucket (view)
- `GET /api/series?device=D&point=P&since=1h&until=...&every=1m&agg=mean`: any stored point
  of the site's devices, raw or aggregated, at most MAX_SERIES_ROWS rows (view)
- `GET /metrics`: the collectors' health in Prometheus' text format (view)
- `GET /healthz`: 200 while collectors run and storage answers, 503 otherwise (public)
- `POST /api/alarms/{ack,shelve,unshelve,reset,out_of_service,return_to_service}`: operator
  actions, JSON `{alarm_id, comment | reason, minutes}` (the action of that name); 409 when
  the alarm's state does not allow it, 429 beyond the user's actions per minute
- `GET /api/alarms/history?hours=24&alarm_id=...`: the alarm journal's events (alarm_history)
- `GET /login`, `POST /api/login`, `POST /api/logout`, `GET /api/me`: sign-in
  (dashboards/signin.py)
- `GET /api/openapi.json`: the OpenAPI 3.1 description of these routes
  (dashboards/openapi.py) (view)

Every request passes the guard (dashboards/security.py): Host allow-list, Origin check on
POSTs, sign-in, CSRF token, permission; every response carries the security headers. With
sign-in, the journal's user is the signed-in one; without it (loopback only) the page sends
the name typed into it.

The document is rendered and serialised once per (state version, alarm version) and the
same bytes go to every stream and every /api/state request (`StateFeed`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from dcim.alarms.engine import AlarmError
from dcim.alarms.types import AlarmEvent
from dcim.auth.roles import ALARM_ACTIONS, ALARM_HISTORY, VIEW
from dcim.auth.service import Authenticator
from dcim.config.auth import LOOPBACK_NAMES
from dcim.dashboards import openapi, signin
from dcim.dashboards.actions import action_request
from dcim.dashboards.series import (MAX_SERIES_ROWS, SeriesStore,
                                    series_request)
from dcim.dashboards.security import (GUARD, IDENTITY, MAX_BODY_BYTES, PUBLIC, SIGNED_IN,
                                      Guard, Refused, guard, host_name, identify, is_loopback,
                                      read_json, security_headers)
from dcim.dashboards.state import state_document, state_health
from dcim.live.service import MEASUREMENT as ANALYTICS_MEASUREMENT
from dcim.live.source import AlarmView, StateSource, Version
from dcim.storage.base import Aggregate, Bucket, SeriesKey, StorageError
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
TREND_POINTS = ("pue_live", "pue_today", "ppue_cooling_live", "ppue_distribution_live",
                "dcie_live", "pue_live_coverage")
MAX_TREND_HOURS = 24 * 7
TREND_BUCKETS = 72  # points per trend line, whatever the period

TrendReader = Callable[[SeriesKey, int, int, int, Aggregate], Awaitable[list[Bucket]]]
"""A store's `read_aggregate` (dcim/storage/base.py): all the dashboard reads from storage."""
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
@dataclass(frozen=True)
class DashboardSettings:
    """Where the dashboard listens and how it pushes."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port
    heartbeat_s: float = 15.0  # a comment on an idle stream, so proxies keep it open
    max_pushes_per_s: float = 5.0  # changes closer together than this are sent as one
    retry_ms: int = 2000  # how soon a browser reconnects a broken stream
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES  # Host names answered (421 otherwise)
    keepalive_timeout_s: float = 15.0  # an idle connection, or one still sending headers
    body_timeout_s: float = 10.0  # a request body slower than this: 408
    write_timeout_s: float = 30.0  # a stream whose client stops reading is ended
    max_streams: int = 200  # event streams open at once (503 beyond)


@dataclass(frozen=True, slots=True)
class Document:
    """One rendering of the page's document, serialised once and shared by every client."""

    key: tuple[int, int]  # (state version, alarm version) it was rendered at
    id: str  # "<state version>.<alarm version>": the event id, quoted as the ETag
    body: bytes  # JSON, for /api/state
    event: bytes  # the same JSON as one Server-Sent Event

    @property
    def etag(self) -> str:
        """The HTTP entity tag of /api/state."""
        return f'"{self.id}"'


class StateFeed:
    """The current document and a `changed` version that readers wait on."""

    def __init__(self, state: StateSource, alarms: AlarmView | None, *,
                 clock: Callable[[], float] = time.time,
                 device_types: Mapping[str, str] | None = None,
                 max_per_s: float = 5.0) -> None:
        self._state, self._alarms, self._clock = state, alarms, clock
        self._device_types = dict(device_types or {})
        self._min_interval_s = 1.0 / max_per_s
        self._doc: Document | None = None
        self.changed = Version()  # moves when a newer document is available (rate-limited)
        self.closing = False
        self.renders = 0  # documents rendered and serialised so far
        self.streams = 0  # event streams open now

    def site_id(self) -> str:
        """The site the state is of (the device of its stored analytics series)."""
        return self._state.current().site_id

    def key(self) -> tuple[int, int]:
        """The versions the document depends on."""
        return (self._state.version.value,
                self._alarms.version.value if self._alarms is not None else 0)

    def document(self) -> Document:
        """The document of the current versions, rendered at most once per version pair."""
        key = self.key()
        if self._doc is None or self._doc.key != key:
            state = self._state.current()
            alarms = self._alarms.active() if self._alarms is not None else []
            doc = state_document(state, alarms, int(self._clock() * 1e9),
                                 device_types=self._device_types)
            body = json.dumps(doc, separators=(",", ":")).encode()
            ident = f"{key[0]}.{key[1]}"
            event = b"".join((b"event: state\nid: ", ident.encode(), b"\ndata: ", body, b"\n\n"))
            self._doc = Document(key, ident, body, event)
            self.renders += 1
        return self._doc

    async def follow(self) -> None:
        """Move `changed` when the state or the alarms change, at most max_per_s a second."""
        sources = [self._state.version]
        if self._alarms is not None:
            sources.append(self._alarms.version)
        seen = [v.value for v in sources]
        while True:
            if [v.value for v in sources] == seen:
                waits = [asyncio.ensure_future(v.wait_past(s)) for v, s in zip(sources, seen)]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
            seen = [v.value for v in sources]
            self.changed.bump()
            await asyncio.sleep(self._min_interval_s)  # what changes meanwhile goes as one

    def close(self) -> None:
        """End every open stream (they return at once)."""
        self.closing = True
        self.changed.bump()


SETTINGS = web.AppKey("settings", DashboardSettings)
FEED = web.AppKey("feed", StateFeed)
ALARMS: web.AppKey[AlarmView | None] = web.AppKey("alarms")
METRICS: web.AppKey[Callable[[], str] | None] = web.AppKey("metrics")
HEALTH: web.AppKey[HealthCheck] = web.AppKey("health")
TREND: web.AppKey[TrendReader | None] = web.AppKey("trend")
SERIES: web.AppKey[SeriesStore | None] = web.AppKey("series")
POINTS: web.AppKey[Mapping[str, tuple[str, Mapping[str, str]]]] = web.AppKey("points")
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")


# the action each route needs (dcim/auth/roles.py): "{action}" is the path segment's
ROUTE_ACTIONS: Mapping[str, str] = {
    "/": VIEW, "/api/state": VIEW, "/api/events": VIEW, "/api/trend": VIEW, "/api/series": VIEW,
    "/metrics": VIEW, openapi.PATH: VIEW,
    "/api/alarms/history": ALARM_HISTORY, "/api/alarms/{action}": "{action}",
    "/api/me": SIGNED_IN, "/api/logout": SIGNED_IN,
    "/login": PUBLIC, "/api/login": PUBLIC, "/static": PUBLIC, "/healthz": PUBLIC,
}


def create_app(settings: DashboardSettings, state: StateSource, alarms: AlarmView | None, *,
               metrics: Callable[[], str] | None = None,
               health: HealthCheck | None = None,
               trend: TrendReader | None = None,
               device_types: Mapping[str, str] | None = None,
               points: Mapping[str, Mapping[str, str]] | None = None,
               series: SeriesStore | None = None,
               auth: Authenticator | None = None,
               clock: Callable[[], float] = time.time) -> web.Application:
    """The dashboard app. Without `health`, /healthz judges the live state's collection;
    without `metrics`, `trend`, `series` or `alarms` those routes answer 503; without `auth`,
    nobody signs in and only a loopback bind may act on alarms. `points` (device -> point ->
    unit) is what /api/series may read; each of its devices needs its type in `device_types`
    (the series' measurement)."""
    types = device_types or {}
    untyped = sorted(set(points or {}) - set(types))
    if untyped:
        raise ValueError(f"points of devices without a device type: {', '.join(untyped[:5])}")
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[guard])
    hosts = {host_name(h) for h in settings.allowed_hosts}
    if settings.host and not _unspecified(settings.host):  # the address bound is its own name
        hosts.add(settings.host.strip("[]").lower())
    app[GUARD] = Guard(auth, frozenset(hosts), is_loopback(settings.host), ROUTE_ACTIONS,
                       body_timeout_s=settings.body_timeout_s)
    app[SETTINGS] = settings
    app[FEED] = StateFeed(state, alarms, clock=clock, device_types=device_types,
                          max_per_s=settings.max_pushes_per_s)
    app[ALARMS] = alarms
    app[METRICS] = metrics
    app[HEALTH] = health if health is not None else lambda: state_health(state.current())
    app[TREND] = trend
    app[SERIES] = series
    app[POINTS] = {d: (types[d], units) for d, units in (points or {}).items()}
    app[CLOCK] = clock
    app[openapi.OPENAPI_JSON] = openapi.openapi_json(TREND_POINTS, MAX_TREND_HOURS)
    app.add_routes(routes)
    app.add_routes(signin.routes)
    app.add_routes(openapi.routes)
    app.router.add_static("/static/", STATIC)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_follow_changes)
    app.on_shutdown.append(_close_streams)
    return app


def _unspecified(host: str) -> bool:
    """0.0.0.0, :: or empty: every interface, not a name a client sends."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


async def _follow_changes(app: web.Application) -> AsyncIterator[None]:
    """The task that turns state and alarm changes into pushes, for the app's lifetime."""
    feed = app[FEED]
    task = asyncio.create_task(feed.follow(), name="dashboard-feed")
    yield
    feed.close()
    await cancel_task(task)


async def _close_streams(app: web.Application) -> None:
    # before the server waits for handlers to end: an open stream would hold it
    app[FEED].close()


class DashboardServer:
    """Serves an app on its settings' host:port (port 0: a free one, unless host or port are
    given here), over TLS with an ssl_context; `url` tells where once started. An app
    without sign-in is served on loopback only (ValueError)."""

    def __init__(self, app: web.Application, host: str | None = None, port: int | None = None,
                 shutdown_timeout_s: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        settings = app.get(SETTINGS) or DashboardSettings()
        self.app = app
        self.host = settings.host if host is None else host
        self.port = settings.port if port is None else port
        self._keepalive_timeout_s = settings.keepalive_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        """Bind and serve."""
        guarded = self.app.get(GUARD)
        if (guarded is None or guarded.auth is None) and not is_loopback(self.host):
            raise ValueError(f"refusing to serve the dashboard on {self.host!r} without "
                             "sign-in: configure auth (docs/security.md) or bind 127.0.0.1")
        # keepalive_timeout also closes a connection that never finishes its headers;
        # lingering_time bounds the reading of a body left unread (after a 408, say)
        self._runner = web.AppRunner(self.app, access_log=None,
                                     shutdown_timeout=self._shutdown_timeout_s,
                                     keepalive_timeout=self._keepalive_timeout_s,
                                     lingering_time=1.0)
        await self._runner.setup()  # starts the app's cleanup_ctx (the feed task)
        try:
            await web.TCPSite(self._runner, self.host, self.port,
                              ssl_context=self._ssl).start()
        except BaseException:  # the port is taken, say: undo the setup, leave nothing running
            await self._runner.cleanup()
            self._runner = None
            raise
        if self._runner.addresses:  # the port actually bound (port 0 asks for a free one)
            self.port = self._runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{'https' if self._ssl else 'http'}://{host}:{self.port}/"
        log.info("dashboard serving", extra={"url": self.url})

    async def stop(self) -> None:
        """Close open streams, stop serving, run the app's cleanup."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- handlers -----------------------------------------------------------------------------

routes = web.RouteTableDef()


@routes.get("/")
async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@routes.get("/api/state")
async def _state(request: web.Request) -> web.Response:
    doc = request.app[FEED].document()
    headers = {"Cache-Control": "no-cache", "ETag": doc.etag}
    if request.headers.get("If-None-Match") == doc.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc.body, content_type="application/json", headers=headers)


@routes.get("/api/events")
async def _events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the document now, then each newer one; heartbeats between. The
    stream ends when the client stops reading, goes away, or its session ends."""
    feed, settings = request.app[FEED], request.app[SETTINGS]
    if feed.streams >= settings.max_streams:
        raise Refused(503, "too many open event streams; the page polls /api/state instead")
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})  # nginx: pass events on as they come
    await response.prepare(request)
    feed.streams += 1

    async def send(data: bytes) -> None:  # a client that stops reading must not hold us
        await asyncio.wait_for(response.write(data), settings.write_timeout_s)

    try:
        await send(f"retry: {settings.retry_ms}\n\n".encode())
        # a browser reconnecting with the newest id has it already
        sent = request.headers.get("Last-Event-ID")
        seen = feed.changed.value
        while not feed.closing and _still_signed_in(request):
            doc = feed.document()
            if doc.id != sent:
                await send(doc.event)
                sent = doc.id
            try:
                seen = await feed.changed.wait_past(seen, settings.heartbeat_s)
            except TimeoutError:
                await send(b": heartbeat\n\n")
    except (ConnectionResetError, TimeoutError):  # the browser went away, or stopped reading
        if request.transport is not None:
            request.transport.abort()
    finally:
        feed.streams -= 1
    return response


def _still_signed_in(request: web.Request) -> bool:
    """Whether the stream's identity still holds (not signed out, expired or disabled)."""
    guard = request.app[GUARD]
    if guard.auth is None:
        return True
    identity = identify(request, guard, touch=False)
    return identity is not None and identity.name == request[IDENTITY].name


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _hours(request: web.Request, default: str) -> float | web.Response:
    """The hours query parameter, or the 400 that says what is wrong with it."""
    try:
        hours = float(request.query.get("hours", default))
    except ValueError:
        return _bad_request(f"hours must be a number, not {request.query.get('hours')!r}")
    if not 0 < hours <= MAX_TREND_HOURS:
        return _bad_request(f"hours must be in (0, {MAX_TREND_HOURS}], not {hours:g}")
    return hours


@routes.get("/api/trend")
async def _trend(request: web.Request) -> web.Response:
    read = request.app[TREND]
    point = request.query.get("point", "pue_live")
    if point not in TREND_POINTS:
        return _bad_request(f"point must be one of {', '.join(TREND_POINTS)}, not {point!r}")
    hours = _hours(request, "6")
    if isinstance(hours, web.Response):
        return hours
    if read is None:
        return web.json_response({"error": "storage is not running"}, status=503)
    every_ns, start_ns, end_ns = trend_window(int(request.app[CLOCK]() * 1e9), hours)
    key = SeriesKey(ANALYTICS_MEASUREMENT, request.app[FEED].site_id(), point)
    try:
        buckets = await read(key, start_ns, end_ns, every_ns, Aggregate.MEAN)
    except StorageError as exc:
        return web.json_response({"error": f"storage: {exc}"}, status=503)
    return web.json_response(
        {"point": point, "every_s": every_ns / 1e9,
         "points": [[b.start_ns // 1_000_000,
                     None if b.value is None or not math.isfinite(b.value) else b.value]
                    for b in buckets]},
        headers={"Cache-Control": "no-store"})


def trend_window(now_ns: int, hours: float) -> tuple[int, int, int]:
    """(every_ns, start_ns, end_ns): about TREND_BUCKETS whole-minute buckets, the current one
    included."""
    every_ns = max(1, int(hours * 3600e9 / TREND_BUCKETS))
    every_ns = max(60_000_000_000, every_ns - every_ns % 60_000_000_000)
    end_ns = now_ns - now_ns % every_ns + every_ns
    start_ns = end_ns - every_ns * math.ceil(hours * 3600e9 / every_ns)
    return every_ns, start_ns, end_ns


@routes.get("/api/series")
async def _series(request: web.Request) -> web.Response:
    """GET /api/series: a stored point of the site, raw or per bucket, at most
    MAX_SERIES_ROWS rows (400 beyond, saying how to narrow)."""
    store = request.app[SERIES]
    try:
        want = series_request(request.query, request.app[POINTS],
                              int(request.app[CLOCK]() * 1e9))
    except ValueError as exc:
        return _bad_request(str(exc))
    if store is None:
        return web.json_response({"error": "storage is not running"}, status=503)
    too_many = (f"more than {MAX_SERIES_ROWS} samples between since and until: narrow them, "
                "or aggregate with every (such as every=1m)")
    points: list[list[Any]]
    try:
        if want.every_ns is None:
            # good samples counted first (one bucket or two): a long raw range is refused
            # before it is read
            counts = await store.read_aggregate(want.key, want.start_ns, want.end_ns,
                                                want.end_ns - want.start_ns, Aggregate.COUNT)
            if sum(b.count for b in counts) > MAX_SERIES_ROWS:
                return _bad_request(too_many)
            samples = await store.read_range(want.key, want.start_ns, want.end_ns)
            if len(samples) > MAX_SERIES_ROWS:
                return _bad_request(too_many)
            points = [[s.time_ns // 1_000_000, _finite(s.value), s.quality.name.lower()]
                      for s in samples]
        else:
            buckets = await store.read_aggregate(want.key, want.start_ns, want.end_ns,
                                                 want.every_ns, want.fn)
            points = [[b.start_ns // 1_000_000, _finite(b.value), "good" if b.count else None]
                      for b in buckets]
    except StorageError as exc:
        return web.json_response({"error": f"storage: {exc}"}, status=503)
    return web.json_response(
        {"device": want.key.device, "point": want.key.point, "unit": want.unit,
         "every_s": None if want.every_ns is None else want.every_ns / 1e9,
         "agg": None if want.every_ns is None else want.fn.value, "points": points},
        headers={"Cache-Control": "no-store"})


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@routes.get("/metrics")
async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if metrics is None:
        return web.Response(status=503, text="collectors not running\n")
    return web.Response(text=metrics(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/healthz")
async def _healthz(request: web.Request) -> web.Response:
    ok, info = request.app[HEALTH]()
    return web.json_response({"ok": ok, **info}, status=200 if ok else 503)


# -- alarms -------------------------------------------------------------------------------


@routes.post("/api/alarms/{action}")
async def _alarm_action(request: web.Request) -> web.Response:
    """POST /api/alarms/{action} with JSON {alarm_id, comment | reason, minutes} (and the
    typed `user` on a dashboard without sign-in); the guard has checked the permission."""
    alarms, auth = request.app[ALARMS], request.app[GUARD].auth
    action, identity = request.match_info["action"], request[IDENTITY]
    if alarms is None:
        raise Refused(503, "alarms are not running")
    if action not in ALARM_ACTIONS:
        raise Refused(404, f"action must be one of {', '.join(ALARM_ACTIONS)}")
    body = await read_json(request)
    wanted = action_request(
        action, body, identity,
        shelve_max_s=auth.shelve_max_s(identity.role) if auth else None,
        out_of_service_max_s=auth.out_of_service_max_s(identity.role) if auth else None)
    wait = auth.action_wait(identity) if auth else 0.0
    if wait:
        raise Refused(429, f"more than {auth.config.actions_per_minute if auth else 0} "
                           "alarm actions a minute", {"Retry-After": str(math.ceil(wait))})
    alarm_id, user, text = wanted.alarm_id, wanted.user, wanted.text
    try:
        if action == "ack":
            event = alarms.acknowledge(alarm_id, user, text)
        elif action == "shelve":
            event = alarms.shelve(alarm_id, user, wanted.duration_s or 0.0, text)
        elif action == "unshelve":
            event = alarms.unshelve(alarm_id, user, text)
        elif action == "reset":
            event = alarms.reset(alarm_id, user, text)
        elif action == "out_of_service":
            event = alarms.remove_from_service(alarm_id, user, text,
                                               duration_s=wanted.duration_s or 0.0)
        else:
            event = alarms.return_to_service(alarm_id, user, text)
    except AlarmError as exc:  # the page was out of date; the alarm view pushes the truth
        raise Refused(409, str(exc)) from None
    log.info("alarm action", extra={"action": action, "alarm_id": alarm_id, "user": user,
                                    "via": identity.via, "token": identity.token})
    # the alarm view bumps its version: every stream gets the change pushed
    return web.json_response({"seq": event.seq, "alarm_id": event.alarm_id,
                              "action": event.action.value, "state": event.state.value})


@routes.get("/api/alarms/history")
async def _alarm_history(request: web.Request) -> web.Response:
    """GET /api/alarms/history?hours=24[&alarm_id=...]: journal events, newest last."""
    alarms = request.app[ALARMS]
    if alarms is None:
        return web.json_response({"error": "alarms are not running"}, status=503)
    hours = _hours(request, "24")
    if isinstance(hours, web.Response):
        return hours
    end_ns = int(request.app[CLOCK]() * 1e9) + 1
    events = alarms.history(end_ns - int(hours * 3600e9), end_ns,
                            alarm_id=request.query.get("alarm_id"), limit=1000)
    return web.json_response({"events": [event_doc(e) for e in events]},
                             headers={"Cache-Control": "no-store"})


def event_doc(e: AlarmEvent) -> dict[str, Any]:
    """A journal event as JSON."""
    return {"seq": e.seq, "time_ms": e.time_ns // 1_000_000, "alarm_id": e.alarm_id,
            "action": e.action.value, "state": e.state.value, "priority": e.priority.value,
            "message": e.message, "user": e.user, "comment": e.comment,
            "announced": e.announce}

