"""A small HTTP control API for a running simulator, on loopback only.

GET /status, GET /faults, POST /faults (a FaultSpec as JSON), DELETE /faults/{id}, GET /truth.

It injects faults into servers that look like a plant, so it is guarded like the dashboard
(dashboards/security.py), without sign-in: the Host header must be a loopback name or the
address bound (421, against DNS rebinding), an Origin header must be this API's own and a
state-changing request must not say it comes from another site (Sec-Fetch-Site) (403), a
POST body must be `application/json` (415: a cross-site form or text/plain post cannot set
that type without a preflight, never granted), at most MAX_BODY_BYTES (413), with nesting and
numbers bounded (400, never 500); every answer carries nosniff and frame-ancestors 'none'.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dcim.dashboards.security import host_name, parse_json
from dcim.simulators.faults import Fault, FaultSpec
from dcim.simulators.runner import FaultError, Simulator

SIMULATOR: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
ALLOWED_HOSTS: web.AppKey[frozenset[str]] = web.AppKey("allowed_hosts", frozenset)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_BODY_BYTES = 16 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _fault_json(fault: Fault) -> dict[str, Any]:
    doc = asdict(fault)
    doc.pop("baseline", None)
    return doc


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, then Origin, then the body's type: refused before any handler runs."""
    name = host_name(request.host)
    if name not in request.app[ALLOWED_HOSTS]:
        return _error(421, f"the simulator's control API does not answer to {name[:100]!r}; "
                           "use 127.0.0.1 or localhost")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return _error(403, f"cross-origin request refused (Origin {origin[:100]!r})")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site not in (None, "same-origin", "none") and request.method not in SAFE_METHODS:
        return _error(403, f"cross-site request refused (Sec-Fetch-Site {fetch_site[:20]!r})")
    if request.method == "POST" and request.content_type != "application/json":
        return _error(415, "Content-Type must be application/json")
    return await handler(request)


async def _security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: on every answer, errors from aiohttp itself included."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].status())


async def _list(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response([_fault_json(f) for f in sim.faults.values()])


async def _inject(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"the body may have at most {MAX_BODY_BYTES // 1024} KiB")
    try:
        doc = parse_json(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _error(400, f"the body must be a JSON object: {str(exc)[:200]}")
    if not isinstance(doc, dict):
        return _error(400, "the body must be a JSON object (a FaultSpec)")
    try:
        fault = sim.inject(FaultSpec.model_validate(doc))
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return web.json_response({"error": "invalid fault", "details": errors}, status=400)
    except (FaultError, ValueError) as exc:
        return _error(400, str(exc))
    return web.json_response(_fault_json(fault), status=201)


async def _clear(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        fault = sim.clear(int(request.match_info["fault_id"]))
    except (KeyError, ValueError):
        return _error(404, "no such fault")
    return web.json_response(_fault_json(fault))


async def _truth(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].truth.as_list())


def _own_name(host: str) -> set[str]:
    """The address bound, as a client names it; nothing for every interface (0.0.0.0, ::)."""
    name = host.strip().strip("[]").lower()
    try:
        return set() if ipaddress.ip_address(name).is_unspecified else {name}
    except ValueError:
        return {name} if name else set()


def create_control_app(sim: Simulator, host: str = "127.0.0.1") -> web.Application:
    """The control API application for one simulator bound to `host`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_guard])
    app[SIMULATOR] = sim
    app[ALLOWED_HOSTS] = frozenset(LOOPBACK_NAMES | _own_name(host))
    app.router.add_routes([
        web.get("/status", _status), web.get("/faults", _list), web.post("/faults", _inject),
        web.delete("/faults/{fault_id}", _clear), web.get("/truth", _truth),
    ])
    app.on_response_prepare.append(_security_headers)
    return app


async def start_control(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve the control API; returns the runner (its port via runner.addresses)."""
    runner = web.AppRunner(create_control_app(sim, host), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
