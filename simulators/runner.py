"""Run a site's simulators: the plant model, its Modbus and OPC UA servers, and faults.

Time is simulated: sim_time = start + (monotonic elapsed) x speed, so speed 60 runs an hour
a minute. Every tick the plant is stepped, active sensor faults change values, and the
servers are updated. Faults come from a scenario file or at run time (control API, CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dcim.site import Site
from dcim.config.site import OpcuaGateway
from dcim.simulators.faults import (
    Fault, FaultSpec, Scenario, SensorFaults, TruthLog, category_of, check_fault, parse_duration,
)
from dcim.simulators.modbus_server import ModbusSimServer, serve_site_modbus
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.plant import PlantModel
from dcim.simulators.snapshot import Snapshot
from dcim.tasks import cancel_and_wait, cancel_task

log = logging.getLogger(__name__)


class FaultError(ValueError):
    """A fault that does not fit the site (unknown target, wrong kind of component)."""


class Simulator:
    """Every simulated device of a site, on real servers, with injectable faults."""

    def __init__(self, site: Site, *, seed: int = 0, speed: float = 1.0,
                 start_s: float | None = None, tick_s: float = 1.0, host: str = "127.0.0.1",
                 free_ports: bool = False, truth_path: str | Path | None = None,
                 clock: Callable[[], float] = time.monotonic, autotick: bool = True,
                 gateways: set[str] | None = None,
                 opcua_security: dict[str, Any] | None = None,
                 plant: PlantModel | None = None) -> None:
        self.site = site
        self.speed = speed
        self.tick_s = tick_s
        self.host = host
        self.free_ports = free_ports
        self.autotick = autotick
        self.gateways = gateways  # serve only these (None: all); for multi-process sites
        self.opcua_security = opcua_security or {}  # gateway id -> ServerSecurity
        self._clock = clock
        self._start_s = start_s if start_s is not None else time.time()
        self._t0 = clock()
        # a plant already stepped (by a backfill) continues its counters without a seam
        self.plant = plant if plant is not None else PlantModel(site, seed=seed)
        self.sensor_faults = SensorFaults(seed)
        self.truth = TruthLog(truth_path)
        self.faults: dict[int, Fault] = {}
        self._ids = itertools.count(1)
        self.modbus: dict[str, ModbusSimServer] = {}
        self.opcua: dict[str, OpcuaSimServer] = {}
        self.snapshot: Snapshot | None = None
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ time and lifecycle

    def now_s(self) -> float:
        """Simulated time, seconds since the Unix epoch."""
        return self._start_s + (self._clock() - self._t0) * self.speed

    async def start(self) -> None:
        """Compute the first snapshot, start every server, then tick in the background."""
        self.snapshot = self.plant.step(self.now_s())
        served = self.site
        if self.gateways is not None:
            keep = [g for g in self.site.config.gateways if g.id in self.gateways]
            served = Site(config=self.site.config.model_copy(update={"gateways": keep}),
                          source=self.site.source, racks=self.site.racks,
                          devices={k: d for k, d in self.site.devices.items()
                                   if d.gateway.id in self.gateways})
        self.modbus = await serve_site_modbus(served, self.snapshot, host=self.host,
                                              free_ports=self.free_ports)
        for gw in served.config.gateways:
            if isinstance(gw, OpcuaGateway):
                devices = [d for d in self.site.devices.values() if d.gateway.id == gw.id]
                server = OpcuaSimServer(gw, devices, host=self.host,
                                        port=0 if self.free_ports else None,
                                        security=self.opcua_security.get(gw.id))
                await server.start()
                await server.update(self.snapshot)
                self.opcua[gw.id] = server
        if self.autotick:
            self._task = asyncio.create_task(self._run(), name="simulator-tick")
        log.info("simulator started", extra={"site": self.site.id, "devices": len(self.site.devices),
                                             "endpoints": self.endpoints()})

    async def stop(self) -> None:
        """Stop ticking and close every server."""
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None
        await cancel_and_wait(list(self._background))
        for server in self.modbus.values():
            await server.stop()
        for ua_server in self.opcua.values():
            await ua_server.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def endpoints(self) -> dict[str, tuple[str, int]]:
        """Where each gateway is served: gateway id -> (host, port)."""
        out = {gid: (self.host, s.port) for gid, s in self.modbus.items()}
        out.update({gid: (self.host, s.port) for gid, s in self.opcua.items()})
        return out

    def client_site(self) -> Site:
        """The site as a collector should see it: gateways at the servers' real ports."""
        return self.site.with_endpoints(self.endpoints())

    async def _run(self) -> None:
        next_at = self._clock()
        while True:
            next_at += self.tick_s
            try:
                await self.tick()
            except Exception:  # a bad tick must not stop the plant: log and go on
                log.exception("simulator tick failed")
            await asyncio.sleep(max(0.0, next_at - self._clock()))

    async def tick(self) -> Snapshot:
        """Advance the plant to now, apply faults, update every server."""
        now = self.now_s()
        self._schedule(now)
        snapshot = self.plant.step(now)
        self.sensor_faults.apply(snapshot, list(self.faults.values()))
        for server in self.modbus.values():
            server.update(snapshot)
        for ua_server in self.opcua.values():
            if ua_server.running:
                await ua_server.update(snapshot)
        self.snapshot = snapshot
        self.ticks += 1
        return snapshot

    # ------------------------------------------------------------ faults

    def load_scenario(self, scenario: Scenario) -> list[Fault]:
        """Schedule every fault of a scenario relative to now."""
        base = self.now_s()
        return [self.inject(spec, base=base) for spec in scenario.faults]

    def inject(self, spec: FaultSpec, *, base: float | None = None) -> Fault:
        """Schedule (or start now) one fault; raises FaultError when it does not fit the site."""
        problem = check_fault(self.site, spec)
        if problem:
            raise FaultError(problem)
        start = (base if base is not None else self.now_s()) + parse_duration(spec.at)
        end = start + parse_duration(spec.duration) if spec.duration is not None else None
        fault = Fault(next(self._ids), spec.kind, spec.target, spec.point, start, end,
                      dict(spec.params))
        self.faults[fault.id] = fault
        self._schedule(self.now_s())
        return fault

    def clear(self, fault_id: int) -> Fault:
        """End a fault now; raises KeyError for an unknown id."""
        fault = self.faults[fault_id]
        fault.end_s = min(fault.end_s or self.now_s(), self.now_s())
        self._schedule(self.now_s())
        return fault

    def _schedule(self, now: float) -> None:
        for fault in list(self.faults.values()):
            if not fault.active and fault.start_s <= now and (fault.end_s is None or now < fault.end_s):
                fault.active = True
                self._apply(fault, True)
                self.truth.record(fault)
                log.info("fault started", extra={"fault": fault.id, "kind": fault.kind,
                                                 "target": fault.target, "point": fault.point})
            elif fault.active and fault.end_s is not None and now >= fault.end_s:
                fault.active = False
                self._apply(fault, False)
                self.truth.record(fault, end_s=fault.end_s)
                log.info("fault ended", extra={"fault": fault.id, "kind": fault.kind,
                                               "target": fault.target})
                del self.faults[fault.id]
            elif not fault.active and fault.end_s is not None and now >= fault.end_s:
                del self.faults[fault.id]  # scheduled and cleared before it began

    def _apply(self, fault: Fault, active: bool) -> None:
        category = category_of(fault.kind)
        if category == "equipment":
            self.plant.set_fault(fault.kind, fault.target, active)
        elif category == "sensor":
            fault.baseline = None
        elif fault.kind == "opcua_restart":
            if active:
                opcua_server = self.opcua[fault.target]
                down = float(fault.params.get("down_s", 2.0))
                task = asyncio.get_running_loop().create_task(opcua_server.restart(down_s=down))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        else:
            server, unit = self._comm_target(fault.target)
            if active:
                params: dict[str, Any] = dict(fault.params)
                if "code" in params:
                    params["code"] = int(params["code"])
                server.set_comm_fault(unit, fault.kind, **params)
            else:
                server.clear_comm_fault(unit, fault.kind)

    def _comm_target(self, target: str) -> tuple[ModbusSimServer, int | None]:
        if target in self.modbus:
            return self.modbus[target], None
        device = self.site.devices[target]
        return self.modbus[device.gateway.id], device.unit_id

    def status(self) -> dict[str, Any]:
        """What the control API's /status shows."""
        return {
            "site": self.site.id, "sim_time_s": self.now_s(), "speed": self.speed,
            "ticks": self.ticks, "devices": len(self.site.devices),
            "endpoints": {k: f"{h}:{p}" for k, (h, p) in self.endpoints().items()},
            "modbus_requests": {k: s.requests_served for k, s in self.modbus.items()},
            "active_faults": [f.id for f in self.faults.values() if f.active],
        }


@contextlib.asynccontextmanager
async def running_simulator(site: Site, **kwargs: Any):  # type: ignore[no-untyped-def]
    """`async with running_simulator(site, free_ports=True) as sim:` for tests and benches."""
    sim = Simulator(site, **kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
