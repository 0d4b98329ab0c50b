"""Serve a large site from several processes (the 2-core machine's way to scale out).

`launch(site_path, workers)` splits the gateways round-robin across worker processes, each
running `python -m dcim.simulators.procs SITE --gateways ...` on free loopback ports, and
returns their endpoints. Each worker steps its own copy of the plant (same seed, so the
numbers agree); faults are per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dcim.site import load_site


@dataclass
class Worker:
    """One simulator process and the gateways it serves."""

    process: subprocess.Popen[str]
    gateways: list[str]
    endpoints: dict[str, tuple[str, int]] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def split_gateways(gateway_ids: list[str], workers: int) -> list[list[str]]:
    """Round-robin split, so each worker gets a similar mix."""
    groups: list[list[str]] = [[] for _ in range(max(1, workers))]
    for i, gid in enumerate(gateway_ids):
        groups[i % len(groups)].append(gid)
    return [g for g in groups if g]


def launch(site_path: str | Path, workers: int, *, seed: int = 0, protocols: tuple[str, ...] = (
        "modbus_tcp", "opcua"), timeout_s: float = 60.0) -> list[Worker]:
    """Start the worker processes; returns once every one has reported its endpoints."""
    site = load_site(site_path)
    ids = [g.id for g in site.config.gateways if g.protocol in protocols]
    started: list[Worker] = []
    try:
        for group in split_gateways(ids, workers):
            cmd = [sys.executable, "-m", "dcim.simulators.procs", str(site_path), "--seed",
                   str(seed), "--gateways", ",".join(group)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            started.append(Worker(proc, group))
        deadline = time.monotonic() + timeout_s
        for worker in started:
            assert worker.process.stdout is not None
            line = worker.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"simulator worker for {worker.gateways} did not start")
            worker.endpoints = {k: (h, p) for k, (h, p) in json.loads(line).items()}
    except BaseException:
        stop(started)
        raise
    return started


def stop(workers: list[Worker]) -> None:
    """Terminate every worker and wait for it."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()


async def _serve(site_path: str, gateways: set[str], seed: int) -> None:
    from dcim.simulators.runner import Simulator

    sim = Simulator(load_site(site_path), seed=seed, free_ports=True, gateways=gateways)
    await sim.start()
    print(json.dumps(sim.endpoints()), flush=True)
    stop_event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_event.set)
    await stop_event.wait()
    await sim.stop()


def main() -> None:
    """Worker entry point: serve some gateways of a site, print endpoints as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("site")
    parser.add_argument("--gateways", required=True, help="comma-separated gateway ids")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_serve(args.site, set(args.gateways.split(",")), args.seed))


if __name__ == "__main__":
    main()
