"""What the live dashboard costs its server: pushed to 100 browsers, polled by 200.

Run: .venv/bin/python bench/dashboard.py [--seconds 20] [--streams 100] [--pollers 200]

The server runs in a child process (this file with --serve) on the reference site, over a
state source whose snapshot changes once a second (pre-built snapshots of the live builder,
cycled, so the child's CPU is the dashboard's, not the builder's). The parent opens the
clients and reads the child's CPU time from /proc over the measured window. Scenarios:

- stream: `--streams` clients on /api/events; latency = from the snapshot's version bump in
  the server to the whole event read by a client (same host, one wall clock);
- poll: `--pollers` clients each GET /api/state once a second (spread over the second);
  latency = request round trip;
- baseline, same run: the previous design's serving path on a bare aiohttp handler: the
  document dict kept for a second and serialised per request (`web.json_response`), polled
  the same way, and by `--streams` clients every 2 s as the old page did.

Also the one-off cost of rendering and serialising a document (reference and 2,000 racks).
Prints figures only; docs/performance.md ("Dashboard: live push") keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _common import cpu_seconds, machine, median_ms, table  # noqa: I001  (puts the repo on sys.path)

import aiohttp
from aiohttp import web

from dcim.dashboards.app import DashboardServer, DashboardSettings, create_app
from dcim.dashboards.state import state_document
from dcim.live.build import build_state, plan
from dcim.live.source import Version
from dcim.live.state import Collection, SiteState
from dcim.site import Site, load_site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.storage.base import Quality, Sample

REPO = Path(__file__).resolve().parent.parent
CHANGE_EVERY_S = 1.0
WARM_UP_S = 3.0


# ---------------------------------------------------------------- the server (child process)


def snapshots(site: Site, n: int = 10) -> list[SiteState]:
    """n live snapshots of a healthy site whose readings differ a little."""
    p = plan(site)
    now = time.time_ns()
    out = []
    for i in range(n):
        values = {k: Sample(k, now, 22.0 + 0.1 * ((hash(k) + i) % 30) if "temp" in k.point
                            else 0.0 if k.point == "unit_status" else 1.0 + 0.01 * i,
                            Quality.GOOD) for k in p.keys}
        out.append(build_state(p, values, None, seq=i, now_ns=now,
                               collection=Collection(devices=270, up=270)))
    return out


class CycledState:
    """A StateSource whose snapshot moves on to the next pre-built one on each `advance`."""

    def __init__(self, states: list[SiteState]) -> None:
        self._states, self._i = states, 0
        self._current = states[0]
        self.version = Version()

    def current(self) -> SiteState:
        return self._current

    def advance(self) -> int:
        self._i += 1
        base = self._states[self._i % len(self._states)]
        self._current = replace(base, seq=self._i, time_ns=time.time_ns())
        return self.version.bump()


def old_app(source: CycledState) -> web.Application:
    """The previous serving path: a dict kept per snapshot, serialised on every request."""
    cache: dict[int, dict[str, Any]] = {}

    async def state(request: web.Request) -> web.Response:
        key = source.version.value
        if key not in cache:
            cache.clear()
            cache[key] = state_document(source.current(), [], time.time_ns())
        return web.json_response(cache[key], headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/api/state", state)
    return app


async def serve(mode: str) -> None:
    """Serve until stdin closes; print the port first and the change times last."""
    source = CycledState(snapshots(load_site(REPO / "config" / "cyberport5.yaml")))
    app = create_app(DashboardSettings(), source, None) if mode == "new" else old_app(source)
    server = DashboardServer(app, "127.0.0.1", 0)
    await server.start()
    print(f"PORT {server.port}", flush=True)
    changes: dict[int, int] = {}

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        at = loop.time()
        while True:
            at += CHANGE_EVERY_S
            await asyncio.sleep(max(0.0, at - loop.time()))
            version = source.advance()
            changes[version] = time.time_ns()

    ticker = asyncio.create_task(tick())
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    ticker.cancel()
    await server.stop()
    print(json.dumps(changes), flush=True)


# ---------------------------------------------------------------- the clients (parent)


@dataclass
class Result:
    scenario: str
    cpu_pct: float
    latencies_ms: list[float]
    bytes_per_s: float

    def row(self, baseline_cpu: float) -> list[object]:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        return [self.scenario, round(self.cpu_pct, 1), round(self.cpu_pct / baseline_cpu, 2),
                round(p50, 1), round(p99, 1), len(lat), round(self.bytes_per_s / 1e6, 1)]


class Child:
    """The server process of one scenario."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port

    @classmethod
    async def start(cls, mode: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", mode, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("PORT "), line
        return cls(proc, int(line.split()[1]))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> dict[int, int]:
        """Stop the server; the version -> change time (ns) it recorded."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = await asyncio.wait_for(self.proc.stdout.read(), 30)
        await self.proc.wait()
        return {int(k): v for k, v in json.loads(out.decode().strip().splitlines()[-1]).items()}


def measure_cpu(child: Child) -> Callable[[], float]:
    """Start measuring the child's CPU; the returned call gives % of one core since then."""
    cpu0, t0 = cpu_seconds(child.proc.pid), time.monotonic()
    return lambda: 100.0 * (cpu_seconds(child.proc.pid) - cpu0) / (time.monotonic() - t0)


def connector() -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=0)  # aiohttp's default pool holds 100 connections


async def stream_scenario(streams: int, seconds: float) -> Result:
    """Clients on /api/events; latency from the server's version bump to the event read."""
    child = await Child.start("new")
    received: list[tuple[int, int]] = []  # (state version, time read ns)
    size = [0]

    async def client(http: aiohttp.ClientSession) -> None:
        async with http.get(child.url("/api/events"), timeout=aiohttp.ClientTimeout()) as r:
            while True:
                block = await r.content.readuntil(b"\n\n", max_size=2**24)
                read_ns = time.time_ns()
                if block.startswith(b"event: state\nid: "):
                    received.append((int(block[17:block.index(b".", 17)]), read_ns))
                    size[0] += len(block)

    async with aiohttp.ClientSession(connector=connector()) as http:
        tasks = [asyncio.create_task(client(http)) for _ in range(streams)]
        await asyncio.sleep(WARM_UP_S)
        received.clear()
        size[0] = 0
        start_ns, cpu = time.time_ns(), measure_cpu(child)
        await asyncio.sleep(seconds)
        cpu_pct, end_ns = cpu(), time.time_ns()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    changes = await child.stop()
    latencies = [(read - changes[v]) / 1e6 for v, read in received
                 if v in changes and start_ns <= changes[v] <= end_ns]
    return Result(f"stream: {streams} clients on /api/events", cpu_pct, latencies,
                  size[0] / seconds)


async def poll_scenario(mode: str, pollers: int, every_s: float, seconds: float,
                        label: str) -> Result:
    """Clients each GET /api/state every every_s, spread evenly; latency = round trip."""
    child = await Child.start(mode)
    latencies: list[float] = []
    size = [0]
    measuring = [False]

    async def poller(http: aiohttp.ClientSession, offset_s: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + offset_s
        while True:
            await asyncio.sleep(max(0.0, at - loop.time()))
            t0 = time.perf_counter()
            async with http.get(child.url("/api/state")) as r:
                body = await r.read()
            if measuring[0]:
                latencies.append((time.perf_counter() - t0) * 1000)
                size[0] += len(body)
            at += every_s

    async with aiohttp.ClientSession(connector=connector()) as http:
        tasks = [asyncio.create_task(poller(http, every_s * i / pollers))
                 for i in range(pollers)]
        await asyncio.sleep(WARM_UP_S)
        measuring[0], cpu = True, measure_cpu(child)
        await asyncio.sleep(seconds)
        cpu_pct = cpu()
        measuring[0] = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await child.stop()
    return Result(label, cpu_pct, latencies, size[0] / seconds)


def render_costs(repeat: int) -> list[list[object]]:
    """One render + serialisation per site size (what a version change costs, once)."""
    rows: list[list[object]] = []
    sites = [("reference, 200 racks", load_site(REPO / "config" / "cyberport5.yaml")),
             ("synthetic, 2,000 racks",
              site_from_dict(generate_site(SiteSpec(racks=2000, halls=4))))]
    for name, site in sites:
        state = snapshots(site, 1)[0]
        now = time.time_ns()
        doc = state_document(state, [], now)
        render = median_ms(lambda: state_document(state, [], now), repeat)  # noqa: B023
        dump = median_ms(lambda: json.dumps(doc, separators=(",", ":")), repeat)  # noqa: B023
        rows.append([name, round(render, 2), round(dump, 2),
                     round(len(json.dumps(doc, separators=(",", ":"))) / 1024)])
    return rows


def scenarios(args: argparse.Namespace) -> Iterator[Any]:
    yield poll_scenario("old", args.pollers, 1.0, args.seconds,
                        f"baseline: {args.pollers} polling old /api/state, 1/s")
    yield poll_scenario("new", args.pollers, 1.0, args.seconds,
                        f"poll: {args.pollers} polling /api/state, 1/s")
    yield poll_scenario("old", args.streams, 2.0, args.seconds,
                        f"baseline: {args.streams} old pages polling every 2 s")
    yield stream_scenario(args.streams, args.seconds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per scenario")
    parser.add_argument("--streams", type=int, default=100, help="clients on /api/events")
    parser.add_argument("--pollers", type=int, default=200, help="clients polling /api/state")
    parser.add_argument("--repeat", type=int, default=20, help="timed renders per figure")
    parser.add_argument("--serve", choices=("new", "old"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return
    results = [await scenario for scenario in scenarios(args)]
    baseline = results[0].cpu_pct
    print(machine())
    print(f"state changes every {CHANGE_EVERY_S:g} s; {args.seconds:g} s measured per scenario "
          f"after {WARM_UP_S:g} s warm-up; CPU of the server process only\n")
    print(table(["scenario", "server CPU % of a core", "vs baseline", "p50 ms", "p99 ms",
                 "samples", "MB/s sent"], [r.row(baseline) for r in results]))
    print()
    print(table(["site", "state_document ms", "json.dumps ms", "document KiB"],
                render_costs(args.repeat)))


if __name__ == "__main__":
    asyncio.run(main())
