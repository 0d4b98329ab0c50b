"""Run every collector of a site into one sink, and report their health.

One collector per gateway: Modbus TCP gateways get a ModbusCollector, OPC UA servers an
OpcuaCollector. The registry below is the only place that knows the protocols.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dcim.collectors.base import DeviceHealth, DeviceStatus, SampleSink
from dcim.site import Site
from dcim.site.model import SiteDevice
from dcim.config.site import ModbusGateway, ModbusRtuGateway, OpcuaGateway

log = logging.getLogger(__name__)


def _modbus(gateway: Any, devices: list[SiteDevice], sink: SampleSink) -> Any:
    from dcim.collectors.modbus import ModbusCollector

    return ModbusCollector(gateway, devices, sink)


def _opcua(gateway: Any, devices: list[SiteDevice], sink: SampleSink) -> Any:
    from dcim.collectors.opcua import OpcuaCollector

    return OpcuaCollector(gateway, devices, sink)


REGISTRY: dict[type, Callable[[Any, list[SiteDevice], SampleSink], Any]] = {
    ModbusGateway: _modbus,
    ModbusRtuGateway: _modbus,
    OpcuaGateway: _opcua,
}


@dataclass
class ServiceSummary:
    """What the terminal summary and the dashboard show about collection."""

    devices: int
    up: int
    stale: int  # answered before, nothing fresh now
    down: int
    connecting: int  # not answered once yet and no error yet (start-up); not in stale
    polls: int
    errors: int
    requests: int
    missed_cycles: int


class CollectorService:
    """All collectors of a site, started and closed together."""

    def __init__(self, site: Site, sink: SampleSink, *, protocols: tuple[str, ...] = ("modbus",
                                                                                   "opcua")):
        self.site = site
        self.sink = sink
        self.collectors: list[Any] = []
        for gateway in site.config.gateways:
            proto = "opcua" if isinstance(gateway, OpcuaGateway) else "modbus"
            if proto not in protocols:
                continue
            devices = [d for d in site.devices.values() if d.gateway.id == gateway.id]
            if devices:
                self.collectors.append(REGISTRY[type(gateway)](gateway, devices, sink))
        self.started_at = 0.0

    async def start(self) -> None:
        """Start every collector; one that fails to start is logged, the rest run."""
        self.started_at = time.time()
        for collector in self.collectors:
            await collector.start()

    async def close(self) -> None:
        """Close every collector."""
        for collector in self.collectors:
            await collector.close()

    def health(self) -> dict[str, DeviceHealth]:
        """Health of every device, by id."""
        out: dict[str, DeviceHealth] = {}
        for collector in self.collectors:
            out.update(collector.health)
        return out

    def gateways_down(self) -> tuple[str, ...]:
        """Ids of the gateways none of whose devices answer (once they have been tried)."""
        return tuple(c.gateway.id for c in self.collectors if c.gateway_down)

    def summary(self) -> ServiceSummary:
        """Counts across all collectors."""
        health = list(self.health().values())
        connecting = sum(h.connecting for h in health)
        return ServiceSummary(
            devices=len(health),
            up=sum(h.status is DeviceStatus.UP for h in health),
            stale=sum(h.status is DeviceStatus.STALE for h in health) - connecting,
            down=sum(h.status is DeviceStatus.DOWN for h in health),
            connecting=connecting,
            polls=sum(h.polls for h in health),
            errors=sum(h.errors for h in health),
            requests=sum(getattr(c, "requests", 0) for c in self.collectors),
            missed_cycles=sum(cad.stats.missed for c in self.collectors
                              for cad in getattr(c, "cadences", [])),
        )
