"""A small HTTP control API for a running simulator, on loopback only.

GET /status, GET /faults, POST /faults (a FaultSpec as JSON), DELETE /faults/{id}, GET /truth.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from dcim.simulators.faults import Fault, FaultSpec
from dcim.simulators.runner import FaultError, Simulator

SIMULATOR: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)


def _fault_json(fault: Fault) -> dict[str, Any]:
    doc = asdict(fault)
    doc.pop("baseline", None)
    return doc


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].status())


async def _list(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response([_fault_json(f) for f in sim.faults.values()])


async def _inject(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        spec = FaultSpec.model_validate(await request.json())
        fault = sim.inject(spec)
    except ValidationError as exc:
        errors = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return web.json_response({"error": "invalid fault", "details": errors}, status=400)
    except (FaultError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(_fault_json(fault), status=201)


async def _clear(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        fault = sim.clear(int(request.match_info["fault_id"]))
    except (KeyError, ValueError):
        return web.json_response({"error": "no such fault"}, status=404)
    return web.json_response(_fault_json(fault))


async def _truth(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].truth.as_list())


def create_control_app(sim: Simulator) -> web.Application:
    """The control API application for one simulator."""
    app = web.Application()
    app[SIMULATOR] = sim
    app.router.add_routes([
        web.get("/status", _status), web.get("/faults", _list), web.post("/faults", _inject),
        web.delete("/faults/{fault_id}", _clear), web.get("/truth", _truth),
    ])
    return app


async def start_control(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve the control API; returns the runner (its port via runner.addresses)."""
    runner = web.AppRunner(create_control_app(sim), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
