"""What collection logs: library chatter kept at DEBUG, one line per gateway outage.

The gateway tests serve one Modbus gateway of a generated site on loopback, take it away
(server stopped, or every request left unanswered) and bring it back, driving the cycles by
hand with a clock the test moves: only the network round trips take real time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from pymodbus.logging import Log, pymodbus_apply_logging_config

from dcim.collectors import service as service_module
from dcim.collectors.modbus import ModbusCollector
from dcim.collectors.service import CollectorService
from dcim.config.site import ModbusGateway
from dcim.logs import LIBRARIES, setup_logging
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.site import Site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.site.model import SiteDevice
from dcim.storage.base import Sample

GATEWAY = "gw-racks-h1-1"
T0 = 1_800_000_000.0
MANAGED = (*LIBRARIES, "pymodbus.logging", "asyncua.client.ua_session")


class Records(logging.Handler):
    """Every record that reaches the root logger's handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def library(self, at_least: int = logging.INFO) -> list[tuple[str, str, str]]:
        """(logger, level, message) of library records at or above a level."""
        return [(r.name, r.levelname, r.getMessage()) for r in self.records
                if r.name.split(".")[0] in LIBRARIES and r.levelno >= at_least]

    def dcim(self, text: str) -> list[logging.LogRecord]:
        """dcim's records whose message contains text."""
        return [r for r in self.records if r.name.startswith("dcim.") and text in r.getMessage()]


@pytest.fixture
def logs() -> Iterator[Records]:
    """setup_logging's result is undone afterwards, library loggers included."""
    saved = {name: (lg.level, lg.propagate, lg.handlers[:])
             for name in MANAGED for lg in [logging.getLogger(name)]}
    yield Records()
    for name, (level, propagate, handlers) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers


def _setup(records: Records, level: str = "INFO", library_level: str | None = None) -> None:
    setup_logging(level, library_level=library_level)
    logging.getLogger().addHandler(records)


# ---------------------------------------------------------------- setup_logging


@pytest.mark.parametrize(("level", "library_level", "expected"), [
    ("INFO", None, []),
    ("WARNING", None, []),
    ("DEBUG", None, [("pymodbus.logging", "DEBUG"), ("asyncua.client.ua_client", "DEBUG"),
                     ("asyncua.common.subscription", "DEBUG")]),
    ("INFO", "WARNING", [("pymodbus.logging", "ERROR"), ("asyncua.client.ua_client", "WARNING"),
                         ("asyncua.common.subscription", "ERROR")]),
    ("INFO", "DEBUG", [("pymodbus.logging", "DEBUG"), ("pymodbus.logging", "ERROR"),
                       ("asyncua.client.ua_client", "INFO"), ("asyncua.client.ua_client", "WARNING"),
                       ("asyncua.common.subscription", "ERROR")]),
], ids=["defaults", "warning", "debug-demoted", "libraries-warning", "libraries-debug"])
def test_library_records_reach_the_root_at_debug_unless_asked_for(
        logs: Records, level: str, library_level: str | None,
        expected: list[tuple[str, str]]) -> None:
    _setup(logs, level, library_level)
    Log.debug("a frame {}", f"{level}-{library_level}")  # built only when DEBUG is on for it
    Log.error("no response {}", f"{level}-{library_level}")  # + a hex dump of the last frames
    logging.getLogger("asyncua.client.ua_client").info("built a node")
    logging.getLogger("asyncua.client.ua_client").warning("publish failed")
    logging.getLogger("asyncua.common.subscription").error("subscription lost")
    logging.getLogger("dcim.collectors.modbus").warning("device not answering")
    assert [(n, lv) for n, lv, _ in logs.library(logging.DEBUG)] == expected
    assert [r.levelname for r in logs.dcim("device not answering")] == ["WARNING"]


def test_pymodbus_own_logging_config_does_not_bypass_it(logs: Records) -> None:
    """pymodbus_apply_logging_config gives "pymodbus.logging" a DEBUG level and a stream
    handler of its own; setup_logging takes both back."""
    pymodbus_apply_logging_config("DEBUG")
    _setup(logs)
    Log.error("no response after apply")
    frames = logging.getLogger("pymodbus.logging")
    assert not frames.isEnabledFor(logging.DEBUG) and not frames.handlers
    assert logs.library(logging.DEBUG) == []


# ---------------------------------------------------------------- gateway outages


class Clock:
    """Wall-clock time the test moves (the collectors' backoff reads it)."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@dataclass
class CycleSink:
    """A sink with cycle markers, keeping what it is given."""

    samples: list[Sample] = field(default_factory=list)
    marks: list[tuple[str, str, int]] = field(default_factory=list)  # (what, tag, count)

    def begin_cycle(self, tag: str, expected: int) -> None:
        self.marks.append(("begin", tag, expected))

    def add(self, samples: Sample | Iterable[Sample], *, cycle: str | None = None) -> None:
        batch = [samples] if isinstance(samples, Sample) else list(samples)
        self.samples += batch
        if cycle is not None:
            self.marks.append(("add", cycle, len(batch)))


class Rig:
    """One served gateway, a CollectorService over the site, and the gateway's cycle."""

    def __init__(self, site: Site, server: ModbusSimServer, service: CollectorService,
                 clock: Clock, sink: CycleSink):
        self.site, self.server, self.service, self.clock, self.sink = (
            site, server, service, clock, sink)
        self.port = server.port  # the stopped server forgets it
        self.collector = next(c for c in service.collectors if c.gateway.id == GATEWAY)
        self.devices: list[SiteDevice] = [d for d in site.devices.values()
                                          if d.gateway.id == GATEWAY]
        self._cycle = self.collector._cycle_for(list(self.collector._devices.values()))

    async def cycle(self, after_s: float = 5.0) -> None:
        """Move the clock on (past every backoff) and run one cycle of the gateway."""
        self.clock.t += after_s
        await self._cycle(self.clock.t)

    async def stop_server(self) -> None:
        """The gateway host goes away: connections are refused."""
        await self.server.stop()

    async def restart_server(self) -> None:
        """The gateway comes back on the same port."""
        gateway = self.site.config.gateways[[g.id for g in self.site.config.gateways]
                                            .index(GATEWAY)]
        self.server = ModbusSimServer(gateway, self.devices, host="127.0.0.1",  # type: ignore[arg-type]
                                      port=self.port)
        await self.server.start()


@pytest_asyncio.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    site = site_from_dict(generate_site(SiteSpec(site_id="t", name="t", racks=20, halls=1)))
    gateway = next(g for g in site.config.gateways if g.id == GATEWAY)
    assert isinstance(gateway, ModbusGateway)
    devices = [d for d in site.devices.values() if d.gateway.id == GATEWAY]
    server = ModbusSimServer(gateway, devices, host="127.0.0.1", port=0)
    await server.start()
    clock = Clock()

    def modbus(gw: Any, devs: list[SiteDevice], sink: Any) -> ModbusCollector:
        fast = gw.model_copy(update={"timeout_s": 0.2, "max_in_flight": 5})
        return ModbusCollector(fast, devs, sink, clock=clock, backoff_base_s=1.0,
                               backoff_cap_s=2.0)

    monkeypatch.setitem(service_module.REGISTRY, ModbusGateway, modbus)
    client_site = site.with_endpoints({GATEWAY: ("127.0.0.1", server.port)})
    sink = CycleSink()
    service = CollectorService(client_site, sink, protocols=("modbus",))
    rig = Rig(client_site, server, service, clock, sink)
    try:
        yield rig
    finally:
        await service.close()
        await rig.server.stop()


@pytest.mark.parametrize("outage", ["stopped", "silent"])
async def test_a_gateway_outage_is_one_warning_and_one_recovery(
        rig: Rig, logs: Records, outage: str) -> None:
    _setup(logs)
    library_seen = Records()
    for name in LIBRARIES:  # what the libraries say, ahead of setup_logging's handler
        logging.getLogger(name).handlers.insert(0, library_seen)
    n = len(rig.devices)
    total = len(rig.service.health())
    assert rig.service.summary().connecting == total
    await rig.cycle()
    summary = rig.service.summary()
    assert (summary.up, summary.connecting, summary.stale) == (n, total - n, 0)
    assert rig.service.gateways_down() == ()

    if outage == "stopped":
        await rig.stop_server()
    else:  # the host is there but nothing answers: every request times out
        rig.server.set_comm_fault(None, "timeout")
    for _ in range(3):
        await rig.cycle()
        assert rig.service.gateways_down() == (GATEWAY,)
    assert rig.service.summary().down == n
    if outage == "stopped":
        await rig.restart_server()
    else:
        rig.server.clear_comm_fault(None)
    await rig.cycle()
    assert rig.service.gateways_down() == ()
    assert rig.service.summary().up == n

    down = logs.dcim("unreachable")
    assert [(r.levelname, r.getMessage().split(": ")[0]) for r in down] == [
        ("WARNING", f"gateway {GATEWAY} unreachable")]
    assert f"{n} devices not answering: " in down[0].getMessage()
    assert [r.levelname for r in logs.dcim("answers again")] == ["INFO"]
    assert logs.dcim("device not answering") == [] and logs.dcim("device recovered") == []
    assert library_seen.library(logging.WARNING), "the outage made the libraries say nothing"
    assert logs.library() == []


@pytest.mark.parametrize("kind", ["timeout", "exception"])
async def test_a_single_failing_device_behind_a_working_gateway_gets_its_own_warning(
        rig: Rig, logs: Records, kind: str) -> None:
    _setup(logs)
    victim = rig.devices[3]
    await rig.cycle()
    rig.server.set_comm_fault(victim.unit_id, kind)
    for _ in range(3):
        await rig.cycle()
        assert rig.service.gateways_down() == ()
    rig.server.clear_comm_fault(victim.unit_id)
    await rig.cycle()
    warned = logs.dcim("device not answering")
    assert [(r.levelname, getattr(r, "device", None)) for r in warned] == [
        ("WARNING", victim.id)]
    assert [getattr(r, "device", None) for r in logs.dcim("device recovered")] == [victim.id]
    assert logs.dcim("unreachable") == [] and logs.dcim("answers again") == []
    assert logs.library() == []


async def test_each_cycle_is_announced_then_closed_by_its_add(rig: Rig) -> None:
    await rig.cycle()
    await rig.stop_server()
    await rig.cycle()
    tag = f"modbus:{GATEWAY}:5s"
    points = sum(len(d.profile.points) for d in rig.devices)
    marks = rig.sink.marks
    assert [(what, t) for what, t, _ in marks] == [("begin", tag), ("add", tag)] * 2
    for (_, _, expected), (_, _, delivered) in zip(marks[0::2], marks[1::2]):
        assert 0 < delivered == expected <= points  # every device tried: the bound is met
    assert len(rig.sink.samples) == marks[1][2] + marks[3][2]
