"""Write throughput of the storage backends against a real influxd, side by side with a baseline.

Run: .venv/bin/python bench/storage.py [--points 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from dcim.storage.base import Quality, Sample, SeriesKey, Storage  # noqa: E402
from dcim.config.storage import (  # noqa: E402
    EmbeddedStorageConfig,
    InfluxDB1StorageConfig,
    InfluxDB2StorageConfig,
    WriteOptions,
)
from dcim.storage.factory import open_storage  # noqa: E402
from dcim.storage.lineprotocol import LineBuilder  # noqa: E402
from tests.influxd import InfluxdProcess, free_port, influxd_binary  # noqa: E402

SITE = "cyberport5"
T0_NS = 1_700_000_000_000_000_000
SERIES_COUNT = 2_000  # about the reference site's cardinality


def make_samples(points: int) -> list[Sample]:
    """Samples of SERIES_COUNT series, one per series per second, as a poller would produce."""
    keys = [SeriesKey("rack_monitor", f"RM-{i // 8:03d}", f"point_{i % 8}") for i in range(SERIES_COUNT)]
    return [Sample(keys[i % SERIES_COUNT], T0_NS + (i // SERIES_COUNT) * 10**9 + 17, 20.0 + (i % 1000) / 7,
                   Quality.GOOD) for i in range(points)]


async def timed(label: str, points: int, run: Callable[[], Awaitable[None]]) -> tuple[str, float]:
    start = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - start
    return label, points / elapsed


async def baseline(url: str, db: str, bodies: list[bytes]) -> None:
    """Pre-built line protocol posted to /write, one request in flight."""
    async with aiohttp.ClientSession() as http:
        for body in bodies:
            async with http.post(f"{url}/write", params={"db": db, "precision": "ns"}, data=body) as resp:
                if resp.status != 204:
                    raise RuntimeError(await resp.text())


async def create_database(url: str, db: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(
        f"{url}/query", data={"q": f'CREATE DATABASE "{db}"'}
    ) as resp:
        resp.raise_for_status()


async def backend_run(store: Storage, samples: list[Sample], batch: int) -> None:
    await store.start()
    try:
        for i in range(0, len(samples), batch):
            await store.write(samples[i : i + batch])
    finally:
        await store.close()


def run_sink(port: int) -> None:
    """A write sink answering 204 to everything: measures the client alone."""

    async def sink(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", sink)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def main(points: int, batch: int) -> None:
    binary = influxd_binary()
    if binary is None:
        raise SystemExit("influxd not found: apt-get install -y influxdb")
    samples = make_samples(points)

    start = time.perf_counter()
    builder = LineBuilder(SITE)
    bodies = [builder.build(samples[i : i + batch]).encode() for i in range(0, points, batch)]
    build_rate = points / (time.perf_counter() - start)
    cached = time.perf_counter()
    for i in range(0, points, batch):
        builder.build(samples[i : i + batch])
    cached_rate = points / (time.perf_counter() - cached)

    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="dcim-bench-") as tmp:
        influxd = InfluxdProcess(Path(tmp), binary)
        influxd.start()
        sink_port = free_port()
        sink = await asyncio.create_subprocess_exec(sys.executable, __file__, "--sink-port", str(sink_port))
        try:
            await create_database(influxd.url, "base")
            results.append(await timed("baseline: pre-built lines, aiohttp /write", points,
                                       lambda: baseline(influxd.url, "base", bodies)))
            options = WriteOptions(batch_size=batch)
            cfg1 = InfluxDB1StorageConfig(backend="influxdb1", url=influxd.url, database="b1", write=options)
            results.append(await timed("influxdb1 backend (Samples -> lines -> /write)", points,
                                       lambda: backend_run(open_storage(cfg1, site_id=SITE), samples, batch)))
            cfg_e = EmbeddedStorageConfig(path=str(Path(tmp) / "bench.sqlite"), write=options)
            results.append(await timed("embedded backend (SQLite WAL)", points,
                                       lambda: backend_run(open_storage(cfg_e, site_id=SITE), samples, batch)))
            await _wait_port(sink_port)
            os.environ.setdefault("DCIM_BENCH_TOKEN", "bench")
            cfg2 = InfluxDB2StorageConfig(backend="influxdb2", url=f"http://127.0.0.1:{sink_port}", org="o",
                                          bucket="b", token_env="DCIM_BENCH_TOKEN", write=options)
            results.append(await timed("influxdb2 backend -> 204 sink (client only)", points,
                                       lambda: backend_run(open_storage(cfg2, site_id=SITE), samples, batch)))
        finally:
            sink.terminate()
            await sink.wait()
            influxd.stop()

    base = results[0][1]
    print(f"\n{points} points, batch {batch}, {SERIES_COUNT} series, one request in flight\n")
    print(f"| {'case':<48} | {'points/s':>10} | {'vs baseline':>11} |")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 13}|")
    for label, rate in results:
        print(f"| {label:<48} | {rate:>10,.0f} | {rate / base:>10.2f}x |")
    print(f"\nline protocol building alone: {build_rate:,.0f} lines/s (cold prefix cache), "
          f"{cached_rate:,.0f} lines/s (warm)")


async def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("sink did not start")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--sink-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink_port:
        run_sink(args.sink_port)
    else:
        asyncio.run(main(args.points, args.batch))
