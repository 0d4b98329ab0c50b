"""The live dashboard: an aiohttp app over a running System, bound to 127.0.0.1 by default.

Routes:
- `GET /`: the page (dashboards/static/index.html; app.js polls the API every 2 s)
- `GET /api/state`: what the page shows (dashboards/state.py), rebuilt at most once a second
  however many browsers ask
- `GET /api/trend?point=pue_live&hours=6`: a stored analytics series, mean per bucket
- `GET /metrics`: the collectors' health in Prometheus' text format
- `GET /healthz`: 200 while collectors run and storage answers, 503 otherwise
- `POST /api/alarms/{ack,shelve,unshelve,reset,out_of_service,return_to_service}`: operator
  actions, JSON `{alarm_id, user, comment | reason, minutes}`; 409 when the alarm's state
  does not allow it. There is no login yet: the name given is journaled as given, so keep
  the dashboard on 127.0.0.1 or behind a proxy that authenticates.
- `GET /api/alarms/history?hours=24&alarm_id=...`: the alarm journal's events
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dcim.alarm_types import AlarmEvent
from dcim.alarms import AlarmError
from dcim.analysis import MEASUREMENT as ANALYTICS_MEASUREMENT
from dcim.collectors.metrics import collect_metrics, prometheus_text
from dcim.dashboards.state import dashboard_state, live_points
from dcim.storage.base import Aggregate, SeriesKey, StorageError

if TYPE_CHECKING:
    from dcim.system import System

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
TREND_POINTS = ("pue_live", "pue_today", "ppue_cooling_live", "ppue_distribution_live",
                "dcie_live", "pue_live_coverage")
MAX_TREND_HOURS = 24 * 7
TREND_BUCKETS = 72  # points per trend line, whatever the period
STATE_MAX_AGE_S = 1.0

class Dashboard:
    """Builds the dashboard's documents from a System and serves them."""

    def __init__(self, system: System, *, host: str = "127.0.0.1", port: int = 8080,
                 clock: Any = time.time):
        self.system = system
        self.host = host
        self.port = port
        self._clock = clock
        self._points = live_points(system.site)
        self._state: dict[str, Any] | None = None
        self._state_at = -math.inf
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- documents -------------------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        """The /api/state document, rebuilt when older than STATE_MAX_AGE_S."""
        async with self._lock:
            now = time.monotonic()
            if self._state is None or now - self._state_at >= STATE_MAX_AGE_S:
                self._state = await self._build_state()
                self._state_at = now
            return self._state

    async def _build_state(self) -> dict[str, Any]:
        system = self.system
        latest = {}
        storage_error = None
        if system.storage is not None:
            try:
                latest = await system.storage.read_latest(self._points.keys)
            except StorageError as exc:  # the page says so; the rest still shows
                storage_error = str(exc)
        health = system.collectors.health() if system.collectors is not None else {}
        collection: dict[str, Any] = {}
        if system.collectors is not None:
            s = system.collectors.summary()
            elapsed = max(1e-9, time.time() - system.collectors.started_at)
            collection = {"devices": s.devices, "up": s.up, "stale": s.stale, "down": s.down,
                          "polls": s.polls, "polls_per_s": s.polls / elapsed,
                          "errors": s.errors, "missed_cycles": s.missed_cycles}
        if system.forward is not None:
            f = system.forward.stats()
            collection |= {"stored": f.written, "buffered": f.buffered,
                           "storage_outage_s": f.outage_s}
        collection["storage_error"] = storage_error
        service = getattr(system, "alarms", None)
        alarms = service.engine.active() if service is not None else None
        return dashboard_state(system.site, latest, points=self._points,
                               now_ns=int(self._clock() * 1e9),
                               analysis=getattr(system.analytics, "last", None),
                               health=health, collection=collection, alarms=alarms)

    def now_ns(self) -> int:
        """The dashboard's clock, in ns."""
        return int(self._clock() * 1e9)

    def invalidate(self) -> None:
        """Rebuild /api/state on the next request (an operator just changed an alarm)."""
        self._state = None

    async def trend(self, point: str, hours: float) -> dict[str, Any]:
        """Mean of a stored analytics series per bucket over the last hours."""
        if self.system.storage is None:
            raise StorageError("storage is not running")
        end_ns = int(self._clock() * 1e9)
        every_ns = max(1, int(hours * 3600e9 / TREND_BUCKETS))
        every_ns = max(60_000_000_000, every_ns - every_ns % 60_000_000_000)  # whole minutes
        end_ns -= end_ns % every_ns
        end_ns += every_ns  # the bucket in progress too
        start_ns = end_ns - every_ns * math.ceil(hours * 3600e9 / every_ns)
        key = SeriesKey(ANALYTICS_MEASUREMENT, self.system.site.id, point)
        buckets = await self.system.storage.read_aggregate(key, start_ns, end_ns, every_ns,
                                                           Aggregate.MEAN)
        return {"point": point, "every_s": every_ns / 1e9,
                "points": [[b.start_ns // 1_000_000,
                            None if b.value is None or not math.isfinite(b.value) else b.value]
                           for b in buckets]}

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Whether collection and storage work, with the figures that say so."""
        system = self.system
        info: dict[str, Any] = {}
        ok = system.collectors is not None and system.forward is not None
        if system.forward is not None:
            stats = system.forward.stats()
            info |= {"buffered": stats.buffered, "storage_outage_s": stats.outage_s,
                     "last_error": stats.last_error}
            ok = ok and stats.outage_s == 0
        if system.collectors is not None:
            s = system.collectors.summary()
            info |= {"devices": s.devices, "up": s.up}
        return ok, info

    # -- server ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application (also used directly by tests)."""
        app = web.Application()
        app[DASHBOARD] = self
        app.router.add_get("/", _index)
        app.router.add_get("/api/state", _state)
        app.router.add_get("/api/trend", _trend)
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/api/alarms/history", _alarm_history)
        app.router.add_post("/api/alarms/{action}", _alarm_action)
        app.router.add_static("/static/", STATIC)
        return app

    async def start(self) -> None:
        """Serve on host:port (port 0: a free one); `url` tells where."""
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self._runner.addresses:  # the port actually bound (port 0 asks for a free one)
            self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}/"
        log.info("dashboard serving", extra={"url": self.url})

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _state(request: web.Request) -> web.Response:
    state = await request.app[DASHBOARD].state()
    return web.json_response(state, headers={"Cache-Control": "no-store"})


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _trend(request: web.Request) -> web.Response:
    point = request.query.get("point", "pue_live")
    if point not in TREND_POINTS:
        return _bad_request(f"point must be one of {', '.join(TREND_POINTS)}, not {point!r}")
    try:
        hours = float(request.query.get("hours", "6"))
    except ValueError:
        return _bad_request(f"hours must be a number, not {request.query.get('hours')!r}")
    if not 0 < hours <= MAX_TREND_HOURS:
        return _bad_request(f"hours must be in (0, {MAX_TREND_HOURS}], not {hours:g}")
    try:
        trend = await request.app[DASHBOARD].trend(point, hours)
    except StorageError as exc:
        return web.json_response({"error": f"storage: {exc}"}, status=503)
    return web.json_response(trend, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    system = request.app[DASHBOARD].system
    if system.collectors is None:
        return web.Response(status=503, text="collectors not running\n")
    text = prometheus_text(collect_metrics(system.collectors, system.forward))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _healthz(request: web.Request) -> web.Response:
    ok, info = request.app[DASHBOARD].healthy()
    return web.json_response({"ok": ok, **info}, status=200 if ok else 503)


# -- alarms -------------------------------------------------------------------------------

ALARM_ACTIONS = ("ack", "shelve", "unshelve", "reset", "out_of_service", "return_to_service")
MAX_TEXT = 500


async def _alarm_action(request: web.Request) -> web.Response:
    """POST /api/alarms/{action} with JSON {alarm_id, user, comment | reason, minutes}."""
    dashboard = request.app[DASHBOARD]
    service = dashboard.system.alarms
    action = request.match_info["action"]
    if service is None:
        return web.json_response({"error": "alarms are not running"}, status=503)
    if action not in ALARM_ACTIONS:
        return web.json_response({"error": f"action must be one of {', '.join(ALARM_ACTIONS)}"},
                                 status=404)
    if request.content_type != "application/json":
        # a cross-site form or text/plain "simple request" cannot set this type without a
        # CORS preflight, which this server never grants: cheap protection against CSRF
        return web.json_response({"error": "Content-Type must be application/json"},
                                 status=415)
    try:
        body = await request.json()
    except ValueError:
        return _bad_request("the body must be a JSON object")
    if not isinstance(body, dict):
        return _bad_request("the body must be a JSON object")
    alarm_id, user = body.get("alarm_id"), body.get("user")
    text = body.get("reason", body.get("comment", ""))
    for name, value in (("alarm_id", alarm_id), ("user", user), ("comment/reason", text)):
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            return _bad_request(f"{name} must be a string of at most {MAX_TEXT} characters")
    assert isinstance(alarm_id, str) and isinstance(user, str) and isinstance(text, str)
    try:
        if action == "ack":
            event = service.acknowledge(alarm_id, user, text)
        elif action == "shelve":
            minutes = body.get("minutes")
            if not isinstance(minutes, int | float) or isinstance(minutes, bool):
                return _bad_request("minutes must be a number")
            event = service.shelve(alarm_id, user, float(minutes) * 60.0, text)
        elif action == "unshelve":
            event = service.unshelve(alarm_id, user, text)
        elif action == "reset":
            event = service.reset(alarm_id, user, text)
        elif action == "out_of_service":
            event = service.remove_from_service(alarm_id, user, text)
        else:
            event = service.return_to_service(alarm_id, user, text)
    except AlarmError as exc:
        dashboard.invalidate()  # a refusal means the page was out of date: refresh it at once
        return web.json_response({"error": str(exc)}, status=409)
    dashboard.invalidate()
    return web.json_response({"seq": event.seq, "alarm_id": event.alarm_id,
                              "action": event.action.value, "state": event.state.value})


async def _alarm_history(request: web.Request) -> web.Response:
    """GET /api/alarms/history?hours=24[&alarm_id=...]: journal events, newest last."""
    service = request.app[DASHBOARD].system.alarms
    if service is None or service.engine.journal is None:
        return web.json_response({"error": "the alarm journal is not open"}, status=503)
    try:
        hours = float(request.query.get("hours", "24"))
    except ValueError:
        return _bad_request("hours must be a number")
    if not 0 < hours <= MAX_TREND_HOURS:
        return _bad_request(f"hours must be in (0, {MAX_TREND_HOURS}], not {hours:g}")
    end_ns = request.app[DASHBOARD].now_ns() + 1
    events = service.engine.journal.events(end_ns - int(hours * 3600e9), end_ns,
                                           alarm_id=request.query.get("alarm_id"), limit=1000)
    return web.json_response({"events": [event_doc(e) for e in events]},
                             headers={"Cache-Control": "no-store"})


def event_doc(e: AlarmEvent) -> dict[str, Any]:
    """A journal event as JSON."""
    return {"seq": e.seq, "time_ms": e.time_ns // 1_000_000, "alarm_id": e.alarm_id,
            "action": e.action.value, "state": e.state.value, "priority": e.priority.value,
            "message": e.message, "user": e.user, "comment": e.comment,
            "announced": e.announce}
