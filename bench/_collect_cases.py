"""The cases bench/collect.py runs, each in a child process of its own (CPU read from /proc).

Every case but naive works in rounds: a round polls every Modbus device of the site once (the
same mix of devices in every case), rounds run back to back for the window.
collector: the real ModbusCollector (one per gateway, as the service builds them) ->
           StoreAndForward (DurableBuffer in a temp dir) -> influxdb1 backend -> influxd. A
           round runs every collector's real cycle (`_cycle_for`: a poll of each device of the
           gateway, max_in_flight requests in flight) at one boundary, as aligned cadences do.
bare:      asyncio + one pymodbus client per device, at most max_in_flight requests in flight
           per gateway (as the collector), struct decoding, line protocol POSTed in batches.
naive:     one request per point, one device at a time, the whole site in sequence.
limit:     the site's planned reads, raw pymodbus, max_in_flight clients per gateway; no
           decoding, no storage.
interval:  the real collector on its aligned cadences at --interval; Cadence stats.
Diagnostic switches (environment; docs/performance.md "What holds the rate" uses them):
DCIM_BENCH_PROFILE=FILE        cProfile each child into FILE.<case>
DCIM_BENCH_NULL_SINK=1         the collector hands samples to a sink that drops them
DCIM_BENCH_NULL_STORAGE=1      buffer and forwarder as usual, storage drops the batches
DCIM_BENCH_NO_GOOD_QUALITY=1   good samples are written without the quality field
DCIM_BENCH_FSYNC_TIME=1        print the calls to and time blocked in the buffer's fsync
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from _common import cpu_seconds, cpu_split
from pymodbus.client import AsyncModbusTcpClient

from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.collectors.modbus import ModbusCollector
from dcim.collectors.modbus_codec import BIT_TABLES, plan_reads, point_size
from dcim.site import Site, load_site
from dcim.site.model import SiteDevice
from dcim.config.site import ModbusGateway, ModbusPoint
from dcim.config.storage import InfluxDB1StorageConfig
from dcim.storage.factory import open_storage

BATCH_LINES = 5000
_CODES = {"int16": "h", "uint16": "H", "sunssf": "h", "bool": "H", "int32": "i", "uint32": "I",
          "acc32": "I", "float32": "f", "int64": "q", "uint64": "Q", "float64": "d"}


def modbus_by_gateway(site: Site) -> dict[str, tuple[ModbusGateway, list[SiteDevice]]]:
    """Modbus TCP gateways with their devices, in site order."""
    out: dict[str, tuple[ModbusGateway, list[SiteDevice]]] = {}
    for device in site.devices.values():
        gw = device.gateway
        if device.protocol == "modbus" and isinstance(gw, ModbusGateway):
            out.setdefault(gw.id, (gw, []))[1].append(device)
    return out


def _points(device: SiteDevice) -> list[ModbusPoint]:
    return [p for p in device.profile.points if isinstance(p, ModbusPoint)]


async def _read(client: AsyncModbusTcpClient, table: str, address: int, count: int,
                unit: int) -> Any:
    if table == "holding":
        return await client.read_holding_registers(address, count=count, device_id=unit)
    if table == "input":
        return await client.read_input_registers(address, count=count, device_id=unit)
    if table == "coil":
        return await client.read_coils(address, count=count, device_id=unit)
    return await client.read_discrete_inputs(address, count=count, device_id=unit)


async def _connect(host: str, port: int) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient(host, port=port, timeout=2.0, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"cannot connect to {host}:{port}")
    return client


class LineWriter:
    """Line protocol batched to influxd's /write, one request in flight (bare and naive)."""

    def __init__(self, url: str, db: str) -> None:
        self.url, self.db = url, db
        self.lines: list[str] = []
        self.written = 0
        self._inflight: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        async with self._session.post(f"{self.url}/query", data={"q": f'CREATE DATABASE "{self.db}"'}) as r:
            await r.read()

    async def _post(self, body: bytes, n: int) -> None:
        assert self._session is not None
        async with self._session.post(f"{self.url}/write", params={"db": self.db, "precision": "ns"},
                                      data=body) as resp:
            await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"/write -> {resp.status}")
        self.written += n

    async def maybe_flush(self) -> None:
        if len(self.lines) >= BATCH_LINES:
            await self.flush(wait=False)

    async def flush(self, wait: bool = True) -> None:
        if self._inflight is not None:
            await self._inflight
            self._inflight = None
        if self.lines:
            lines, self.lines = self.lines, []
            self._inflight = asyncio.create_task(self._post("\n".join(lines).encode(), len(lines)))
        if wait and self._inflight is not None:
            await self._inflight
            self._inflight = None

    async def close(self) -> None:
        await self.flush()
        if self._session is not None:
            await self._session.close()


Decoder = Callable[[list[int]], list[tuple[str, float]]]


def bare_decoder(device: SiteDevice, site_id: str, table: str, address: int, count: int) -> Any:
    """Pre-compiled struct decoding of one read block: (line prefix, Struct, byte offset, ...)."""
    fields = []
    for p in _points(device):
        if p.table != table or not address <= p.address < address + count:
            continue
        if p.type in ("string", "sunssf"):
            continue
        prefix = (f"{device.profile.device_type},device={device.id},point={p.name},site={site_id}"
                  " value=")
        size = point_size(p)
        if table in BIT_TABLES:
            fields.append((prefix, None, p.address - address, 0, 1.0, 0.0, None))
            continue
        endian = ">" if p.order in ("ABCD", "CDAB") else "<"
        reverse = p.order in ("CDAB", "BADC") and size > 1
        fields.append((prefix, struct.Struct(endian + _CODES[p.type]), p.address - address, size,
                       p.scale, p.offset, reverse))
    return fields


async def run_bare(site: Site, url: str, db: str, seconds: float) -> dict[str, Any]:
    """One pymodbus client per device; per-gateway semaphore of max_in_flight."""
    writer = LineWriter(url, db)
    await writer.start()
    gws = modbus_by_gateway(site)
    groups: list[list[Any]] = []
    for gw, devices in gws.values():
        sem = asyncio.Semaphore(gw.max_in_flight)
        group = []
        for d in devices:
            reads = [(r.table, r.address, r.count, bare_decoder(d, site.config.site.id, r.table,
                                                                  r.address, r.count))
                     for r in plan_reads(_points(d), max_gap=d.profile.max_gap)]
            group.append((d, sem, await _connect(gw.host, gw.port), reads))
        groups.append(group)
    polls = requests = 0

    async def poll(entry: Any) -> None:
        nonlocal polls, requests
        d, sem, client, reads = entry
        unit = d.unit_id or 1
        t = time.time_ns()
        async with sem:
            answers = []
            for table, address, count, _ in reads:
                answers.append(await _read(client, table, address, count, unit))
            requests += len(reads)
        lines = writer.lines
        for (table, _, count, fields), rr in zip(reads, answers):
            if table in BIT_TABLES:
                bits = rr.bits
                for prefix, _, off, _, _, _, _ in fields:
                    lines.append(f"{prefix}{1.0 if bits[off] else 0.0} {t}")
                continue
            regs = rr.registers
            block = struct.pack(f">{count}H", *regs)
            for prefix, st, off, size, scale, offset, reverse in fields:
                if reverse:
                    value = st.unpack(struct.pack(f">{size}H", *regs[off: off + size][::-1]))[0]
                else:
                    value = st.unpack_from(block, 2 * off)[0]
                lines.append(f"{prefix}{float(value) * scale + offset!r} {t}")
        polls += 1
        await writer.maybe_flush()

    await asyncio.gather(*(poll(e) for g in groups for e in g))  # warm-up round
    stop = [0.0]

    async def window() -> None:
        stop[0] = time.monotonic() + seconds
        while time.monotonic() < stop[0]:
            await asyncio.gather(*(poll(e) for g in groups for e in g))

    return await _measure(window, seconds, lambda: (polls, requests), writer.close,
                          lambda: writer.written, connections=sum(len(g) for g in groups))


async def run_naive(site: Site, url: str, db: str, seconds: float) -> dict[str, Any]:
    """One request per point, one device at a time, sequential over the whole site."""
    writer = LineWriter(url, db)
    await writer.start()
    gws = modbus_by_gateway(site)
    clients = {gid: await _connect(gw.host, gw.port) for gid, (gw, _) in gws.items()}
    devices = [(d, clients[gid], [(p, bare_decoder(d, site.config.site.id, p.table, p.address,
                                                     point_size(p))) for p in _points(d)
                                  if p.type not in ("string", "sunssf")])
               for gid, (_, ds) in gws.items() for d in ds]
    polls = requests = 0
    deadline = [0.0]

    async def one_pass() -> None:
        nonlocal polls, requests
        for d, client, points in devices:
            unit = d.unit_id or 1
            t = time.time_ns()
            for p, fields in points:
                rr = await _read(client, p.table, p.address, point_size(p), unit)
                requests += 1
                for prefix, st, _, size, scale, offset, reverse in fields:
                    if st is None:
                        value = 1.0 if rr.bits[0] else 0.0
                    else:
                        regs = rr.registers[::-1] if reverse else rr.registers
                        value = float(st.unpack(struct.pack(f">{size}H", *regs))[0]) * scale + offset
                    writer.lines.append(f"{prefix}{value!r} {t}")
            polls += 1
            await writer.maybe_flush()
            if time.monotonic() >= deadline[0]:
                return

    deadline[0] = time.monotonic() + 0.3
    await one_pass()  # warm-up (partial)

    async def window_pass() -> None:
        deadline[0] = time.monotonic() + seconds
        while time.monotonic() < deadline[0]:
            await one_pass()

    return await _measure(window_pass, seconds, lambda: (polls, requests), writer.close,
                          lambda: writer.written, connections=len(clients))


async def run_limit(site: Site, seconds: float) -> dict[str, Any]:
    """The site's planned reads, max_in_flight pymodbus clients per gateway, nothing else."""
    loops = []
    for gw, devices in modbus_by_gateway(site).values():
        reads = [(r.table, r.address, r.count, d.unit_id or 1) for d in devices
                 for r in plan_reads(_points(d), max_gap=d.profile.max_gap)]
        n = gw.max_in_flight
        for i in range(n):
            loops.append((await _connect(gw.host, gw.port), reads[i::n] or reads))
    requests = 0
    stop = [0.0]

    async def run(client: AsyncModbusTcpClient, reads: list[Any]) -> None:
        nonlocal requests
        for table, address, count, unit in reads:
            await _read(client, table, address, count, unit)
            requests += 1

    await asyncio.gather(*(run(c, r) for c, r in loops))  # warm-up round
    reads_per_round = sum(len(r) for _, r in loops)
    devices = sum(len(ds) for _, ds in modbus_by_gateway(site).values())

    async def window() -> None:
        stop[0] = time.monotonic() + seconds
        while time.monotonic() < stop[0]:
            await asyncio.gather(*(run(c, r) for c, r in loops))

    out = await _measure(window, 0.0, lambda: (0, requests), None, lambda: 0,
                         connections=len(loops))
    out["polls_per_s"] = out["requests_per_s"] * devices / reads_per_round  # equivalent polls
    return out


async def _storage_sink(site: Site, url: str, db: str, tmp: str) -> StoreAndForward:
    config = InfluxDB1StorageConfig(backend="influxdb1", url=url, database=db)  # type: ignore[arg-type]
    storage: Any = open_storage(config, site_id=site.config.site.id)
    if os.environ.get("DCIM_BENCH_NO_GOOD_QUALITY"):  # experiment: what the quality field costs
        from dcim.storage import lineprotocol  # influxd then stores one field per good sample
        lineprotocol._AFTER_VALUE[0] = " "
    if os.environ.get("DCIM_BENCH_NULL_STORAGE"):  # experiment: buffer and forwarder, no influxd
        class _NullStorage:
            async def start(self) -> None: ...
            async def close(self) -> None: ...
            async def write(self, samples: Any) -> None:
                self.lines = len(samples)
        storage = _NullStorage()
    await storage.start()
    if os.environ.get("DCIM_BENCH_FSYNC_TIME"):  # experiment: time spent blocked in fsync
        spent = [0.0, 0]

        def timed_fsync(fd: int) -> None:
            t = time.perf_counter()
            os.fsync(fd)
            spent[0] += time.perf_counter() - t
            spent[1] += 1
        import atexit
        atexit.register(lambda: print(f"fsync: {spent[1]} calls, {spent[0]:.3f} s", file=sys.stderr, flush=True))
        forward = StoreAndForward(storage, DurableBuffer(tmp, fsync=timed_fsync))
    else:
        forward = StoreAndForward(storage, DurableBuffer(tmp))
    await forward.start()
    return forward


class _NullSink:
    def add(self, samples: Any) -> None:
        pass


async def run_collector(site: Site, url: str, db: str, seconds: float) -> dict[str, Any]:
    """The real collectors; each runs its own cycle (every device of its gateway) back to back."""
    with tempfile.TemporaryDirectory(prefix="dcim-bench-buffer-") as tmp:
        forward = await _storage_sink(site, url, db, tmp)
        sink: Any = forward
        if os.environ.get("DCIM_BENCH_NULL_SINK"):  # experiment: the poll path alone
            sink = _NullSink()
        collectors = [ModbusCollector(gw, devices, sink)
                      for gw, devices in modbus_by_gateway(site).values()]
        cycles = [c._cycle_for(list(c._devices.values())) for c in collectors]
        await asyncio.gather(*(cycle(time.time()) for cycle in cycles))  # warm-up: connect
        stop = [0.0]

        async def window() -> None:
            stop[0] = time.monotonic() + seconds
            while time.monotonic() < stop[0]:
                t = time.time()
                await asyncio.gather(*(cycle(t) for cycle in cycles))

        def counts() -> tuple[int, int]:
            return (sum(h.polls for c in collectors for h in c.health.values()),
                    sum(c.requests for c in collectors))

        async def close() -> None:
            for c in collectors:
                await c.close()
            await forward.close(timeout_s=60.0)
            await forward.storage.close()

        errors_before = sum(h.errors for c in collectors for h in c.health.values())
        out = await _measure(window, 0.0, counts, close, lambda: forward.written,
                             connections=sum(len(c._connections) for c in collectors))
        out["errors"] = sum(h.errors for c in collectors for h in c.health.values()) - errors_before
        out["left_in_buffer"] = forward.buffered
        return out


async def run_interval(site: Site, url: str, db: str, seconds: float, interval: float) -> dict[str, Any]:
    """The real collectors on aligned cadences at `interval`; missed polls from Cadence stats."""
    with tempfile.TemporaryDirectory(prefix="dcim-bench-buffer-") as tmp:
        forward = await _storage_sink(site, url, db, tmp)
        collectors = [ModbusCollector(gw, [dataclasses.replace(d, interval_s=interval) for d in ds],
                                      forward)
                      for gw, ds in modbus_by_gateway(site).values()]
        cpu0, t0 = cpu_seconds(), time.monotonic()
        for c in collectors:
            await c.start()
        await asyncio.sleep(seconds)
        stats = [cad.stats for c in collectors for cad in c.cadences]
        cpu1, t1 = cpu_seconds(), time.monotonic()
        polls = sum(h.polls for c in collectors for h in c.health.values())
        errors = sum(h.errors for c in collectors for h in c.health.values())
        for c in collectors:
            await c.close()
        await forward.close(timeout_s=60.0)
        await forward.storage.close()
        return {"interval_s": interval, "cycles": min(s.cycles for s in stats),
                "missed": sum(s.missed for s in stats), "overruns": sum(s.overruns for s in stats),
                "max_cycle_s": max(s.max_duration_s for s in stats), "polls": polls,
                "errors": errors, "core": (cpu1 - cpu0) / (t1 - t0), "written": forward.written}


async def _measure(work: Callable[[], Any], seconds: float, counts: Callable[[], tuple[int, int]],
                   close: Callable[[], Any] | None, written: Callable[[], int], *,
                   connections: int) -> dict[str, Any]:
    """Run work once (it loops for its window); CPU includes flushing what it produced."""
    polls0, req0 = counts()
    split0 = cpu_split()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    await work()
    t1 = time.monotonic()
    polls, requests = counts()
    if close is not None:
        await close()
    cpu1 = cpu_seconds()
    split1 = cpu_split()
    polls -= polls0
    requests -= req0
    elapsed = t1 - t0
    return {"seconds": elapsed, "polls": polls, "requests": requests,
            "polls_per_s": polls / elapsed, "requests_per_s": requests / elapsed,
            "cpu_s": cpu1 - cpu0, "core": (cpu1 - cpu0) / elapsed,
            "cpu_per_10k_polls": (cpu1 - cpu0) / polls * 10_000 if polls else None,
            "cpu_per_10k_requests": (cpu1 - cpu0) / requests * 10_000 if requests else None,
            "written": written(), "connections": connections,
            "user_s": split1[0] - split0[0], "system_s": split1[1] - split0[1]}


def child_main(case: str, site_path: str, endpoints: str, url: str, db: str, seconds: float,
               interval: float) -> None:
    """Entry point of a child: run one case, print its result as one JSON line."""
    site = load_site(site_path).with_endpoints(
        {k: (h, p) for k, (h, p) in json.loads(endpoints).items()})
    if case == "collector":
        coro = run_collector(site, url, db, seconds)
    elif case == "bare":
        coro = run_bare(site, url, db, seconds)
    elif case == "naive":
        coro = run_naive(site, url, db, seconds)
    elif case == "limit":
        coro = run_limit(site, seconds)
    elif case == "interval":
        coro = run_interval(site, url, db, seconds, interval)
    else:
        raise SystemExit(f"unknown case {case}")
    profile_to = os.environ.get("DCIM_BENCH_PROFILE")  # cProfile the child into this file
    if profile_to:
        import cProfile
        with cProfile.Profile() as prof:
            result = asyncio.run(coro)
        prof.dump_stats(f"{profile_to}.{case}")
    else:
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)
