"""The OPC UA part of bench/simulators.py: the BMS server's read and subscription rates.

Run through bench/simulators.py (`--parts opcua`). Servers run in their own processes:
the reference site's Simulator (plant ticking at 1 Hz, OPC UA gateway only, via
simulators.procs) and a bare OpcuaSimServer whose every variable changes on each update.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from _common import REPO, cpu_seconds, table
from asyncua import Client, Node, ua

from dcim.site import load_site
from dcim.config.site import OpcuaGateway

REFERENCE = REPO / "config" / "cyberport5.yaml"
READ_BATCH = 100


def bms_devices() -> tuple[OpcuaGateway, list[Any]]:
    """The reference site's BMS gateway and its devices."""
    site = load_site(REFERENCE)
    gateway = next(g for g in site.config.gateways if isinstance(g, OpcuaGateway))
    return gateway, [d for d in site.devices.values() if d.gateway.id == gateway.id]


async def bms_nodes(client: Client) -> list[Node]:
    """Every BMS variable, resolved through the server's namespace array."""
    from dcim.simulators.opcua_space import plan_address_space

    plan = plan_address_space(bms_devices()[1])
    idx = await client.get_namespace_index(plan.namespace_uri)
    return [client.get_node(ua.NodeId(v.node_id, idx)) for d in plan.devices  # type: ignore[arg-type]
            for v in d.variables]


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def datachange_notification(self, node: Node, val: object, data: object) -> None:
        self.n += 1


async def read_rate(client: Client, nodes: list[Node], pid: int, seconds: float) -> list[float]:
    """read_values of READ_BATCH nodes back to back: calls/s and server CPU µs per call."""
    batch = nodes[:READ_BATCH]
    await client.read_values(batch)
    calls, cpu0, t0 = 0, cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await client.read_values(batch)
        calls += 1
    elapsed, used = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return [calls / elapsed, calls * len(batch) / elapsed, 1e6 * used / calls, 100 * used / elapsed]


async def subscription_rate(client: Client, nodes: list[Node], period_ms: int, pid: int,
                            seconds: float) -> list[float]:
    """Notifications/s of a subscription of every node: rate and server % of a core."""
    counter = _Counter()
    sub = await client.create_subscription(period_ms, counter)
    await sub.subscribe_data_change(nodes, sampling_interval=period_ms)
    await asyncio.sleep(1.5)  # past the initial values of every item
    start_n, cpu0, t0 = counter.n, cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed, used = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    rate = (counter.n - start_n) / elapsed
    await sub.delete()
    return [rate, 100 * used / elapsed]


async def opcua_part(args: argparse.Namespace) -> list[str]:
    """All OPC UA cases; returns Markdown."""
    from dcim.simulators import procs

    seconds = max(args.seconds, 3.0)  # whole publishing intervals at 1,000 ms
    rows: list[list[object]] = []
    workers = procs.launch(REFERENCE, 1, protocols=("opcua",))
    try:
        pid = workers[0].process.pid
        host, port = next(iter(workers[0].endpoints.values()))
        client = Client(f"opc.tcp://{host}:{port}/dcim/bms", timeout=10)
        await client.connect()
        try:
            nodes = await bms_nodes(client)
            for run in range(1, args.runs + 1):
                calls, values, us, core = await read_rate(client, nodes, pid, args.seconds)
                rows.append([run, "Simulator (plant at 1 Hz)", f"read_values({READ_BATCH})",
                             calls, values, "-", "-", us, core])
                rate, core = await subscription_rate(client, nodes, 1000, pid, seconds)
                rows.append([run, "Simulator (plant at 1 Hz)",
                             f"subscription of {len(nodes)} @ 1,000 ms", rate, "-",
                             len(nodes), rate / len(nodes), "-", core])
                print(f"  opcua run {run}: read {calls:,.0f} calls/s, sub {rate:,.0f}/s",
                      flush=True)
        finally:
            await client.disconnect()
    finally:
        procs.stop(workers)
    for hz, period_ms in ((1.0, 1000), (10.0, 100)):
        rows += await _forced(hz, period_ms, seconds, args.runs)
    rows.sort(key=lambda r: (r[0], str(r[1]), str(r[2])))
    heads = ["run", "server", "case", "calls or notifications/s", "values read/s",
             "expected notifications/s", "delivered / expected", "server CPU µs / call",
             "server % core"]
    return [f"### OPC UA BMS (reference site: {len(nodes)} variables on 28 devices), "
            "no security", table(heads, rows)]


async def _forced(hz: float, period_ms: int, seconds: float, runs: int) -> list[list[object]]:
    """A bare server changing every variable hz times a second, subscribed at period_ms."""
    server = subprocess.Popen([sys.executable, str(REPO / "bench" / "simulators.py"),
                               "_serve_bms", str(hz)], stdout=subprocess.PIPE, text=True)
    rows: list[list[object]] = []
    try:
        assert server.stdout is not None
        endpoint = json.loads(server.stdout.readline())["endpoint"]
        client = Client(endpoint, timeout=10)
        await client.connect()
        try:
            nodes = await bms_nodes(client)
            expected = len(nodes) * min(hz, 1000 / period_ms)
            for run in range(1, runs + 1):
                rate, core = await subscription_rate(client, nodes, period_ms, server.pid,
                                                     seconds)
                rows.append([run, f"all values change at {hz:g} Hz",
                             f"subscription of {len(nodes)} @ {period_ms:,} ms", rate, "-",
                             expected, rate / expected, "-", core])
                print(f"  opcua forced {hz:g} Hz run {run}: {rate:,.0f}/s", flush=True)
        finally:
            await client.disconnect()
    finally:
        server.terminate()
        server.wait()
    return rows


def serve_bms(hz: float) -> None:
    """Child: the reference BMS on a free port, every variable changing hz times a second."""
    from dcim.simulators.opcua_server import OpcuaSimServer
    from dcim.simulators.snapshot import DeviceReading, Snapshot

    gateway, devices = bms_devices()

    async def serve() -> None:
        server = OpcuaSimServer(gateway, devices, port=0)
        await server.start()
        print(json.dumps({"endpoint": server.endpoint}), flush=True)
        tick, next_at = 0, time.monotonic()
        while True:
            tick += 1
            await server.update(Snapshot(1.7e9 + tick / hz, {
                d.id: DeviceReading({p.name: 100.0 * i + j + 0.25 + 0.5 * tick
                                     for j, p in enumerate(d.profile.points)})
                for i, d in enumerate(devices)}))
            next_at += 1 / hz
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    asyncio.run(serve())
