"""Rough throughput of the OPC UA collector against the BMS simulator (same machine).

    .venv/bin/python -m dcim.collectors.opcua_bench [seconds]

Runs the reference site's `bms` devices (28 devices, 200 points) at a 0.1 s interval, in
poll mode and then in subscribe mode with the simulator changing every value every 0.1 s,
and prints samples/s, notifications or reads/s, cycle times and the process CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from pathlib import Path

from dcim.collectors.opcua import OpcuaCollector
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.snapshot import DeviceReading, Snapshot

from dcim.site import load_site
from dcim.site.model import SiteDevice
from dcim.storage.base import Sample

INTERVAL_S = 0.1


class _CountingSink:
    def __init__(self) -> None:
        self.count = 0

    def add(self, samples: object) -> None:
        self.count += 1 if isinstance(samples, Sample) else len(samples)  # type: ignore[arg-type]


def _snapshot(devices: list[SiteDevice], tick: int) -> Snapshot:
    return Snapshot(time.time(), {d.id: DeviceReading(
        {p.name: i * 100 + j + tick * 0.01 for j, p in enumerate(d.profile.points)})
        for i, d in enumerate(devices)})


async def _run(mode: str, seconds: float) -> None:
    site = load_site(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
    devices = [d for d in site.devices.values() if d.gateway.id == "bms"]
    server = OpcuaSimServer(devices[0].gateway, devices, port=0)  # type: ignore[arg-type]
    await server.start()
    await server.update(_snapshot(devices, 0))
    aimed = site.with_endpoints({"bms": (server.host, server.port)})
    fast = [dataclasses.replace(d, interval_s=INTERVAL_S,
                                profile=d.profile.model_copy(update={"mode": mode}))
            for d in aimed.devices.values() if d.gateway.id == "bms"]
    sink = _CountingSink()
    collector = OpcuaCollector(fast[0].gateway, fast, sink)  # type: ignore[arg-type]
    await collector.start()
    await asyncio.sleep(2)  # connected, first values in
    sink.count, collector.requests = 0, 0
    cpu, wall, tick = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - wall < seconds:
        if mode == "subscribe":
            tick += 1
            await server.update(_snapshot(devices, tick))
        await asyncio.sleep(INTERVAL_S)
    elapsed = time.perf_counter() - wall
    stats = collector.cadences[0].stats
    print(f"{mode:9s}: {sink.count / elapsed:8.0f} samples/s, {collector.requests / elapsed:7.0f} "
          f"{'reads' if mode == 'poll' else 'notifications'}/s, cycle max "
          f"{stats.max_duration_s * 1000:.1f} ms, read round trip "
          f"{next(iter(collector.health.values())).latency_ewma_s * 1000:.1f} ms, overruns {stats.overruns}, CPU (server and "
          f"collector in one process) {100 * (time.process_time() - cpu) / elapsed:.0f} %")
    await collector.close()
    await server.stop()


def main() -> None:
    """Measure poll mode, then subscribe mode."""
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    for mode in ("poll", "subscribe"):
        asyncio.run(_run(mode, seconds))


if __name__ == "__main__":
    main()
