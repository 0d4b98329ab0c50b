"""The running system under faults of its own parts: a part that cannot start, a full disk
under the durable buffer. Real simulators on loopback, the embedded store."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dcim.simulators.faults import FaultSpec
from dcim.site import load_site
from dcim.system import System, SystemOptions

ROOT = Path(__file__).resolve().parents[1]


async def until(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
    return result


async def test_a_part_that_fails_to_start_stops_what_was_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    system = System(site, SystemOptions(buffer_dir=str(tmp_path / "buffer"), protocols=("modbus",),
                                        dashboard_port=port,
                                        alarm_journal=str(tmp_path / "alarms.sqlite")))
    try:
        with pytest.raises(OSError):
            await system.start()  # the dashboard is last: everything else had started
    finally:
        taken.close()
    assert system.simulator is not None and system.collectors is not None
    await asyncio.sleep(0.1)
    # nothing keeps running: no task of the system is left, the simulators' ports are closed
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []
    host, sim_port = next(iter(system.simulator.endpoints().values()))
    with pytest.raises(OSError):
        socket.create_connection((host, sim_port), timeout=1).close()
    await system.stop()  # a second stop does nothing


@pytest.mark.slow
async def test_a_full_disk_under_the_buffer_is_its_own_alarm_and_alarms_still_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    system = System(site, SystemOptions(buffer_dir=str(tmp_path / "buffer"), protocols=("modbus",),
                                        alarm_journal=str(tmp_path / "alarms.sqlite")))
    await system.start()
    try:
        assert system.live is not None and system.alarms is not None
        assert system.simulator is not None
        await until(lambda: system.live.current().units["UPS-A3"].state == "up")
        real = os.pwrite

        def full(fd: int, data: bytes, offset: int) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "pwrite", full)  # the buffer's disk is full from now on
        system.simulator.inject(FaultSpec(kind="ups_module_trip", target="UPS-A3"))
        engine = system.alarms.engine
        trip = await until(lambda: engine.alarms.get("unit:UPS-A3:down"))
        buffer = await until(lambda: engine.alarms.get("storage:buffer:cannot_write"))
        assert trip.condition and buffer.priority.value == "high"
        assert "No space left on device" in buffer.message
        collection = system.live.current().collection
        assert collection.lost_samples > 0 and collection.buffer_error
        assert f"LOST {collection.lost_samples:,}"[:8] in system.status_line()
        assert "\ndcim_buffer_error 1.0\n" in system.metrics_text()
        monkeypatch.setattr(os, "pwrite", real)  # space freed: the buffer writes again
        await until(lambda: not system.live.current().collection.buffer_error, 15)
    finally:
        await system.stop()
