"""OPC UA sample times: the gateway's `timestamps` policy (source, server, poll), the clock
skew bound, and sample and hold without rewriting a value at its old time."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from asyncua import ua

from dcim.collectors.opcua_nodes import judge_time, timestamp_ns, value_time_ns
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.snapshot import DeviceReading, Snapshot
from dcim.site.model import SiteDevice
from tests.test_collect_opcua import DEVICES, GATEWAY, SEC, collecting, fast, until

module_loop = pytest.mark.asyncio(loop_scope="module")
MS = 1_000_000
DEVICE = DEVICES[0]


@pytest.mark.parametrize(("source", "server", "policy", "expected"), [
    pytest.param(datetime(2026, 1, 1, 0, 0, 1, 250, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 2,
                 tzinfo=UTC), "source", 1_767_225_601_000_250_000, id="source"),
    pytest.param(None, datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC), "source",
                 1_767_225_602_000_000_000, id="source-falls-back-to-server"),
    pytest.param(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 2,
                 tzinfo=UTC), "server", 1_767_225_602_000_000_000, id="server"),
    pytest.param(datetime(2026, 1, 1, 0, 0, 1), None, "source", 1_767_225_601_000_000_000,
                 id="naive-is-utc"),
    pytest.param(datetime(1601, 1, 1, tzinfo=UTC), None, "source", None, id="zero-is-none"),
    pytest.param(None, None, "source", None, id="none"),
])
def test_value_time_by_policy(source: datetime | None, server: datetime | None, policy: str,
                              expected: int | None) -> None:
    data = ua.DataValue(ua.Variant(1.0), SourceTimestamp=source,  # type: ignore[arg-type]
                        ServerTimestamp=server)  # type: ignore[arg-type]
    assert value_time_ns(data, policy) == expected


NOW = 1_800_000_000 * SEC
SKEW = 10 * SEC
LATE = 5 * SEC


@pytest.mark.parametrize(("value_ns", "first", "expected"), [
    pytest.param(NOW - 300 * MS, False, (NOW - 300 * MS, None), id="fresh-change"),
    pytest.param(NOW + 2 * SEC, False, (NOW + 2 * SEC, None), id="ahead-within-bound"),
    pytest.param(NOW - 14 * SEC, False, (NOW - 14 * SEC, None), id="late-within-interval+bound"),
    pytest.param(NOW + 11 * SEC, False, (NOW, 11 * SEC), id="ahead-beyond-bound"),
    pytest.param(NOW + 11 * SEC, True, (NOW, 11 * SEC), id="first-ahead-beyond-bound"),
    pytest.param(NOW - 16 * SEC, False, (NOW, -16 * SEC), id="change-behind-beyond-bound"),
    pytest.param(NOW - 3600 * SEC, True, (0, None), id="first-value-old-unchanged"),
])
def test_judge_time(value_ns: int, first: bool, expected: tuple[int, int | None]) -> None:
    assert judge_time(value_ns, NOW, first=first, max_skew_ns=SKEW, late_ns=LATE) == expected


def test_timestamp_ns_keeps_microseconds() -> None:
    assert timestamp_ns(datetime.fromtimestamp(1_767_225_600.123456, UTC)) == \
        1_767_225_600_123_456_000


# ---------------------------------------------------------------- against the simulator


def value_of(tick: int, j: int) -> float:
    """The value of the j-th point at a tick (distinct across ticks and points)."""
    return 1000.0 * tick + j + 0.5


def reading_snapshot(time_s: float, tick: int) -> Snapshot:
    """Values of the first device that differ every tick, dated time_s."""
    values = {p.name: value_of(tick, j) for j, p in enumerate(DEVICE.profile.points)}
    return Snapshot(time_s, {DEVICE.id: DeviceReading(values)})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[OpcuaSimServer]:
    """A BMS server for the first device only."""
    sim = OpcuaSimServer(GATEWAY, [DEVICE], port=0)
    await sim.start()
    yield sim
    await sim.stop()


def devices_for(sim: OpcuaSimServer, policy: str, mode: str) -> list[SiteDevice]:
    gateway = GATEWAY.model_copy(update={"endpoint": sim.endpoint, "timestamps": policy})
    return [dataclasses.replace(d, gateway=gateway) for d in fast([DEVICE], mode=mode)]


def shown_ns(sim: OpcuaSimServer, point: str, policy: str) -> int:
    """The time the server shows for a point's current value, under a policy."""
    time_ns = value_time_ns(sim._shown[(DEVICE.id, point)], policy)
    assert time_ns is not None
    return time_ns


@module_loop
@pytest.mark.parametrize(("policy", "mode"), [
    ("source", "subscribe"), ("server", "subscribe"), ("source", "poll")])
async def test_stored_times_are_the_servers_and_held_values_go_on_at_boundaries(
        server: OpcuaSimServer, policy: str, mode: str) -> None:
    """A change is stored once at the server's time for it; while it holds, the value is
    stored at each boundary's time (never again at its own), one sample per point each."""
    tick = {"source": 1, "server": 3, "poll": 5}[policy if mode == "subscribe" else "poll"]
    await server.update(reading_snapshot(time.time() - 0.25, tick))
    points = [p.name for p in DEVICE.profile.points]
    async with collecting(devices_for(server, policy, mode)) as (collector, sink):
        await until(lambda: len(sink.samples) >= len(points))
        await server.update(reading_snapshot(time.time() - 0.123, tick + 1))
        changed = {p: shown_ns(server, p, policy) for p in points}
        changed_values = {p: value_of(tick + 1, j) for j, p in enumerate(points)}
        await until(lambda: {s.time_ns for s in sink.samples if s.value ==
                             changed_values[s.series.point]} >= set(changed.values())
                    and max(s.time_ns for s in sink.samples) > max(changed.values()) + SEC)
    by_point: dict[str, list[tuple[int, float]]] = {}
    for s in sink.samples:
        by_point.setdefault(s.series.point, []).append((s.time_ns, s.value))
    for point, samples in by_point.items():
        times = [t for t, _ in samples]
        assert times == sorted(times) and len(set(times)) == len(times), point
        new = [(t, v) for t, v in samples if v == changed_values[point]]
        assert new[0][0] == changed[point], point  # the change at the server's time
        assert new[1:] and all(t % SEC == 0 for t, _ in new[1:]), point  # then boundaries
    assert max(Counter((s.series, s.time_ns) for s in sink.samples).values()) == 1


@module_loop
async def test_poll_policy_stores_aligned_boundaries(server: OpcuaSimServer) -> None:
    await server.update(reading_snapshot(time.time() - 0.25, 7))
    async with collecting(devices_for(server, "poll", "subscribe")) as (_, sink):
        await until(lambda: len({s.time_ns for s in sink.samples}) >= 2)
    assert {s.time_ns % SEC for s in sink.samples} == {0}


@module_loop
async def test_a_skewed_device_clock_is_replaced_by_the_receive_time_and_logged_once(
        server: OpcuaSimServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcim.collectors.opcua")
    hour_ago = time.time() - 3600
    await server.update(reading_snapshot(hour_ago, 9))  # an old value: held, not skew
    points = [p.name for p in DEVICE.profile.points]
    async with collecting(devices_for(server, "source", "subscribe")) as (_, sink):
        await until(lambda: len(sink.samples) >= len(points))
        first = list(sink.samples)
        for k in (10, 11):  # changes an hour old: the device's clock is behind
            before = time.time_ns()
            await server.update(reading_snapshot(hour_ago + k, k))
            value = value_of(k, 0)
            await until(lambda v=value: any(s.value == v for s in sink.samples))  # type: ignore[misc]
            stored = next(s for s in sink.samples if s.value == value)
            assert before - SEC < stored.time_ns < time.time_ns() + SEC
    assert {s.time_ns % SEC for s in first} == {0}  # the old value at the boundary
    skews = [r for r in caplog.records if "clock is off" in r.getMessage()]
    assert len(skews) == 1
    assert skews[0].device == DEVICE.id  # type: ignore[attr-defined]
    assert -3601 < skews[0].skew_s < -3590  # type: ignore[attr-defined]
