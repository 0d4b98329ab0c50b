"""How many devices and requests per second the simulators serve (docs/performance.md).

Run: .venv/bin/python bench/simulators.py [--quick] [--seconds N] [--runs N] [--parts ...]

Servers and load generators run in separate processes; server CPU is read from /proc, so it
is the server's alone, though every process shares the machine's cores. A "poll" is all the
planned reads (collectors.modbus_codec.plan_reads) of one device, done one after another.
Parts: reference (the reference site in one Simulator process), synthetic (a ~2,000-device
site over 3 worker processes), servers (our Modbus server vs pymodbus's), opcua (the BMS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import REPO, cpu_seconds, machine, table

from dcim.collectors.modbus_codec import plan_reads
from dcim.site import Site, load_site
from dcim.config.site import ModbusPoint

REFERENCE = REPO / "config" / "cyberport5.yaml"
WARMUP_S = 0.5
Read = tuple[int, int, int]  # function code, address, count


@dataclass(frozen=True)
class DevicePlan:
    """One device as the load generator polls it."""

    gateway: str
    host: str
    port: int
    unit: int
    reads: list[Read]


def device_plans(site: Site, endpoints: dict[str, tuple[str, int]]) -> list[DevicePlan]:
    """Every Modbus device of the served gateways with its planned reads, in gateway order."""
    plans = []
    for device in site.devices.values():
        if device.protocol != "modbus" or device.gateway.id not in endpoints:
            continue
        points = [p for p in device.profile.points if isinstance(p, ModbusPoint)]
        reads = [(r.function_code, r.address, r.count)
                 for r in plan_reads(points, max_gap=device.profile.max_gap)]
        host, port = endpoints[device.gateway.id]
        assert device.unit_id is not None
        plans.append(DevicePlan(device.gateway.id, host, port, device.unit_id, reads))
    return sorted(plans, key=lambda p: p.gateway)


def split_pollers(plans: list[DevicePlan], pollers: int) -> list[list[int]]:
    """Contiguous chunks of similar read counts: each poller touches few gateways."""
    total = sum(len(p.reads) for p in plans)
    chunks: list[list[int]] = [[] for _ in range(pollers)]
    done = 0
    for i, plan in enumerate(plans):
        chunks[min(pollers - 1, done * pollers // total)].append(i)
        done += len(plan.reads)
    return [c for c in chunks if c]


# ---------------------------------------------------------------- load generator (child)


class RawConnection:
    """A minimal Modbus TCP client: one request in flight, pre-packed frames, little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.tid = reader, writer, 0

    async def read(self, unit: int, fc: int, address: int, count: int) -> bool:
        """Send one read and wait for its answer; False on an exception answer."""
        self.tid = (self.tid + 1) & 0xFFFF
        self.writer.write(self.tid.to_bytes(2, "big") + b"\0\0\0\x06" + bytes((unit, fc))
                          + address.to_bytes(2, "big") + count.to_bytes(2, "big"))
        header = await self.reader.readexactly(8)
        await self.reader.readexactly(int.from_bytes(header[4:6], "big") - 2)
        return int.from_bytes(header[:2], "big") == self.tid and header[7] == fc

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()


class PymodbusConnection:
    """pymodbus's AsyncModbusTcpClient, as a collector uses it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = {1: client.read_coils, 2: client.read_discrete_inputs,
                      3: client.read_holding_registers, 4: client.read_input_registers}

    async def read(self, unit: int, fc: int, address: int, count: int) -> bool:
        """One read; False on an exception answer."""
        answer = await self.calls[fc](address, count=count, device_id=unit)
        return not answer.isError()

    def close(self) -> None:
        """Close the socket."""
        self.client.close()


async def connect(kind: str, host: str, port: int) -> RawConnection | PymodbusConnection:
    """A connection of the given client kind."""
    if kind == "raw":
        return RawConnection(*await asyncio.open_connection(host, port))
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(host, port=port, timeout=5, retries=0)
    if not await client.connect():
        raise ConnectionError(f"cannot connect to {host}:{port}")
    return PymodbusConnection(client)


async def generate_load(spec: dict[str, Any]) -> None:
    """Poll devices round-robin from spec["pollers"]; print 'start' when counting begins."""
    devices = [DevicePlan(d[0], d[1], d[2], d[3], [tuple(r) for r in d[4]])  # type: ignore[misc]
               for d in spec["devices"]]
    counts = {"requests": 0, "polls": 0, "errors": 0}
    per_gateway = dict.fromkeys({d.gateway for d in devices}, 0)
    conns: list[RawConnection | PymodbusConnection] = []
    sockets: list[dict[tuple[str, int], RawConnection | PymodbusConnection]] = []
    for indexes in spec["pollers"]:  # connect everything before the clock starts
        mine: dict[tuple[str, int], RawConnection | PymodbusConnection] = {}
        for key in dict.fromkeys((devices[i].host, devices[i].port) for i in indexes):
            mine[key] = await connect(spec["client"], *key)
            conns.append(mine[key])
        sockets.append(mine)

    async def poller(indexes: list[int], mine: dict[tuple[str, int], Any]) -> None:
        while True:
            for i in indexes:
                device = devices[i]
                conn = mine[(device.host, device.port)]
                for fc, address, count in device.reads:
                    ok = await conn.read(device.unit, fc, address, count)
                    counts["requests"] += 1
                    counts["errors"] += not ok
                    per_gateway[device.gateway] += 1
                counts["polls"] += 1

    tasks = [asyncio.create_task(poller(p, m)) for p, m in zip(spec["pollers"], sockets)]
    await asyncio.sleep(WARMUP_S)
    before, gw_before = dict(counts), dict(per_gateway)
    start = time.perf_counter()
    print("start", flush=True)
    await asyncio.sleep(spec["seconds"])
    elapsed = time.perf_counter() - start
    result = {k: (counts[k] - before[k]) / elapsed for k in counts}
    result["per_gateway"] = {g: (per_gateway[g] - gw_before[g]) / elapsed for g in per_gateway}
    result["connections"] = len(conns)
    result["failed"] = [repr(t.exception()) for t in tasks if t.done() and t.exception()]
    print(json.dumps(result), flush=True)
    # Leave at once: pymodbus clients cancelled mid-request may keep reconnecting.
    os._exit(0)


def run_load(plans: list[DevicePlan], pollers: int, client: str, seconds: float,
             server_pids: list[int]) -> dict[str, Any]:
    """Run the load generator in a child process; add server and client CPU to its result."""
    spec = {"client": client, "seconds": seconds,
            "devices": [[p.gateway, p.host, p.port, p.unit, p.reads] for p in plans],
            "pollers": split_pollers(plans, pollers)}
    child = subprocess.Popen([sys.executable, __file__, "_load"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(json.dumps(spec) + "\n")
        child.stdin.flush()
        if child.stdout.readline().strip() != "start":
            raise RuntimeError("load generator failed to start")
        cpu0 = [cpu_seconds(pid) for pid in server_pids + [child.pid]]
        t0 = time.perf_counter()
        line = child.stdout.readline()
        cpu1 = [cpu_seconds(pid) for pid in server_pids + [child.pid]]
        elapsed = time.perf_counter() - t0
    finally:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    result: dict[str, Any] = json.loads(line)
    if result["failed"]:
        raise RuntimeError(f"pollers failed: {result['failed']}")
    used = [b - a for a, b in zip(cpu0, cpu1)]
    result["server_core"] = [u / elapsed for u in used[:-1]]  # fraction of one core each
    result["client_core"] = used[-1] / elapsed
    return result


def idle_core(pids: list[int], seconds: float) -> list[float]:
    """Fraction of a core each process uses with no client (ticking only)."""
    cpu0 = [cpu_seconds(pid) for pid in pids]
    time.sleep(seconds)
    return [(cpu_seconds(pid) - c) / seconds for pid, c in zip(pids, cpu0)]


def per_10k(core: float, rate: float) -> float:
    """CPU seconds per 10,000 requests from a fraction of a core and a request rate."""
    return 10_000 * core / rate if rate else float("nan")


# ---------------------------------------------------------------- parts


def modbus_site(name: str, site_path: Path, workers: int, connections: tuple[int, ...],
                args: argparse.Namespace) -> list[str]:
    """Serve a site via simulators.procs and load it at each concurrency; Markdown out."""
    from dcim.simulators import procs

    site = load_site(site_path)
    started = time.perf_counter()
    served = procs.launch(site_path, workers)
    out = [f"### {name}: {len(site.devices)} devices, {workers} simulator process(es)"]
    try:
        startup = time.perf_counter() - started
        endpoints = {k: v for w in served for k, v in w.endpoints.items()}
        plans = device_plans(site, endpoints)
        need = sum(len(p.reads) for p in plans)  # requests of a 1 Hz poll of every device
        pids = [w.process.pid for w in served]
        idle = idle_core(pids, args.seconds)
        out.append(f"{len(plans)} Modbus devices on {len({p.gateway for p in plans})} gateways; "
                   f"a poll of every device is {need:,} requests ({need / len(plans):.2f} a "
                   f"device). Start-up {startup:.1f} s. Idle (ticking at 1 Hz, no client): "
                   + ", ".join(f"{100 * c:.0f} %" for c in idle) + " of a core per process.\n")
        rows = []
        for run in range(1, args.runs + 1):
            for client in args.clients:
                for conns in connections:
                    r = run_load(plans, conns, client, args.seconds, pids)
                    rows.append(_site_row(run, client, conns, r, need, len(plans), served))
                    print(f"  {name} run {run} {client} x{conns}: {r['requests']:,.0f} req/s",
                          flush=True)
        heads = ["run", "client", "pollers (sockets)", "requests/s", "device polls/s",
                 "served / 1 Hz need", "server % core", "server CPU s / 10k req",
                 "client % core", "errors/s"]
        if workers > 1:
            heads.insert(7, "% core per worker")
        out.append(table(heads, rows))
    finally:
        procs.stop(served)
    return out


def _site_row(run: int, client: str, conns: int, r: dict[str, Any], need: int, devices: int,
              served: list[Any]) -> list[object]:
    server_core = sum(r["server_core"])
    row: list[object] = [run, client, f"{conns} ({r['connections']})", r["requests"],
                         r["polls"], r["requests"] / need, 100 * server_core,
                         per_10k(server_core, r["requests"]), 100 * r["client_core"],
                         r["errors"]]
    if len(served) > 1:
        per_worker = []
        for worker, core in zip(served, r["server_core"]):
            rate = sum(r["per_gateway"].get(g, 0.0) for g in worker.gateways)
            per_worker.append(f"{100 * core:.0f} ({per_10k(core, rate):.2f} s/10k)")
        row.insert(7, ", ".join(per_worker))
    return row


def servers_part(args: argparse.Namespace) -> list[str]:
    """Our ModbusSimServer vs pymodbus's ModbusTcpServer on the gw-pdu map."""
    site = load_site(REFERENCE)
    gateway = site.config.gateways[[g.id for g in site.config.gateways].index("gw-pdu")]
    pdus = device_plans(site, {"gw-pdu": ("127.0.0.1", 0)})
    cases = [("planned poll of a PDU", 1), ("planned poll of a PDU", 10),
             ("one 125-register read", 1), ("one 125-register read", 10)]
    rows = []
    for run in range(1, args.runs + 1):
        for kind in ("pymodbus", "ours"):
            server = subprocess.Popen([sys.executable, __file__, "_serve_map", kind],
                                      stdout=subprocess.PIPE, text=True)
            try:
                assert server.stdout is not None
                port = int(server.stdout.readline())
                for label, clients in cases:
                    plans = [DevicePlan(gateway.id, "127.0.0.1", port, p.unit,
                                        p.reads if label.startswith("planned")
                                        else [(3, 40000, 125)]) for p in pdus[:clients]]
                    r = run_load(plans, clients, "raw", args.seconds, [server.pid])
                    rows.append([run, kind, label, clients, r["requests"],
                                 1e6 * r["server_core"][0] / r["requests"],
                                 100 * r["server_core"][0], 100 * r["client_core"],
                                 r["errors"]])
                    print(f"  servers run {run} {kind} {label} x{clients}: "
                          f"{r['requests']:,.0f} req/s", flush=True)
            finally:
                server.terminate()
                server.wait()
    base = {(r[0], r[2], r[3]): r[4] for r in rows if r[1] == "pymodbus"}
    for r in rows:
        r.insert(5, r[4] / base[(r[0], r[2], r[3])])
    heads = ["run", "server", "requests", "clients", "requests/s", "vs pymodbus",
             "server CPU µs / request", "server % core", "client % core", "errors/s"]
    return [f"### Modbus servers on the same map (gw-pdu: {len(pdus)} SunSpec PDUs, "
            f"{gateway.id}), raw load generator", table(heads, rows)]


def serve_map(kind: str) -> None:
    """Child: serve gw-pdu of the reference site with our server or pymodbus's; print port."""
    site = load_site(REFERENCE)
    gateway = next(g for g in site.config.gateways if g.id == "gw-pdu")
    devices = [d for d in site.devices.values() if d.gateway.id == gateway.id]

    async def serve() -> None:
        if kind == "ours":
            from dcim.simulators.modbus_server import ModbusSimServer

            ours = ModbusSimServer(gateway, devices, host="127.0.0.1", port=0)  # type: ignore[arg-type]
            await ours.start()
            port = ours.port
        else:
            port = await _pymodbus_server(devices)
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


async def _pymodbus_server(devices: list[Any]) -> int:
    """pymodbus's ModbusTcpServer with each device's register blocks (values 0)."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    from dcim.simulators.registers import DeviceEncoder

    sims = []
    for device in devices:
        blocks = DeviceEncoder(device).image.blocks
        tables = [[SimData(b.start, b.count, 0, DataType.REGISTERS) for b in blocks
                   if b.table == t] for t in ("holding", "input")]
        bits = [SimData(0, 1, False, DataType.BITS)]
        filler = [SimData(0, 1, 0, DataType.REGISTERS)]
        sims.append(SimDevice(id=device.unit_id, simdata=(
            bits, list(bits), tables[0] or filler, tables[1] or list(filler))))
    server = ModbusTcpServer(sims, address=("127.0.0.1", 0))
    asyncio.get_running_loop().create_task(server.serve_forever())
    for _ in range(250):
        await asyncio.sleep(0.02)
        transport = getattr(server, "transport", None)
        if transport is not None and getattr(transport, "sockets", None):
            return int(transport.sockets[0].getsockname()[1])
    raise RuntimeError("pymodbus server did not start")


def main() -> None:
    """Run the chosen parts and print Markdown for docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of 1.5 s per case")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per case")
    parser.add_argument("--runs", type=int, default=2, help="repeat every case this often")
    parser.add_argument("--clients", default="raw,pymodbus",
                        help="load generators for the site parts: raw, pymodbus")
    parser.add_argument("--parts", default="reference,synthetic,servers,opcua")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 1.5, 1
    args.clients = args.clients.split(",")
    parts = args.parts.split(",")
    print(f"machine: {machine()}\ncommand: {' '.join(sys.argv)}\n", flush=True)
    out: list[str] = []
    if "reference" in parts:
        out += modbus_site("Reference site (cyberport5)", REFERENCE, 1, (1, 4, 16), args)
    if "synthetic" in parts:
        from dcim.site.generate import SiteSpec, generate_site, to_yaml

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "synth2000.yaml"
            path.write_text(to_yaml(generate_site(SiteSpec(
                racks=1800, halls=6, site_id="synth2000", name="synthetic 2000"))))
            out += modbus_site("Synthetic site (synth2000)", path, 3, (16, 32), args)
    if "servers" in parts:
        out += servers_part(args)
    if "opcua" in parts:
        from simulators_opcua import opcua_part

        out += asyncio.run(opcua_part(args))
    print("\n" + "\n\n".join(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_load"]:
        asyncio.run(generate_load(json.loads(sys.stdin.readline())))
    elif sys.argv[1:2] == ["_serve_map"]:
        serve_map(sys.argv[2])
    elif sys.argv[1:2] == ["_serve_bms"]:
        from simulators_opcua import serve_bms

        serve_bms(float(sys.argv[2]))
    else:
        main()
