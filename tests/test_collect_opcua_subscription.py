"""The OPC UA subscription's timing: one subscription per connection, never found stale.

A keep-alive count of 1 (a subscription without event points: publishing interval = device
interval) was revised up to 2 by node-opcua; asyncua's stale-subscription watchdog trusts the
requested count, so it found the quiet subscription stale after 1.5 intervals, recreated it,
and the Publish in flight was answered BadNoSubscription, over and over. The test server
here revises keep-alive counts the way node-opcua does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from dcim.collectors.opcua import EVENT_ROLES, MIN_KEEPALIVE_COUNT, subscription_timing
from dcim.simulators.opcua_server import OpcuaSimServer
from tests.test_collect_opcua import (
    DEVICES, GATEWAY, collecting, fast, server_subscriptions, snapshot, until,
)

module_loop = pytest.mark.asyncio(loop_scope="module")
NOISE = ("is stale", "BadNoSubscription", "Revised values", "ServiceFault",
         "unknown subscription")


@pytest.mark.parametrize(("interval_s", "fast_ms", "expected"), [
    pytest.param(1.0, None, (500.0, 3, 15), id="1s-no-event-points"),
    pytest.param(5.0, None, (2500.0, 3, 15), id="5s-no-event-points"),
    pytest.param(1.0, 500.0, (500.0, 3, 15), id="1s-event-points"),
    pytest.param(5.0, 500.0, (500.0, 15, 75), id="5s-event-points"),
    pytest.param(60.0, 500.0, (500.0, 180, 900), id="60s-event-points"),
    pytest.param(0.5, 500.0, (250.0, 3, 15), id="half-second"),
])
def test_subscription_timing(interval_s: float, fast_ms: float | None,
                             expected: tuple[float, int, int]) -> None:
    """A keep-alive at least every half stale period (3 intervals), with a count servers
    keep; event points bound the publishing interval."""
    publish_ms, keepalive, lifetime = subscription_timing(interval_s, fast_ms, 3)
    assert (publish_ms, keepalive, lifetime) == expected
    assert keepalive >= MIN_KEEPALIVE_COUNT and lifetime >= 3 * keepalive
    assert publish_ms * keepalive <= 3 * interval_s * 1000 / 2


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def revising() -> AsyncIterator[OpcuaSimServer]:
    """A BMS server that revises keep-alive counts below 2 up to 2, as node-opcua does."""
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0)
    await server.start()
    await server.update(snapshot(0))
    assert server._server is not None
    service = server._server.iserver.subscription_service
    clamp = service._clamp_keep_alive_count
    service._clamp_keep_alive_count = lambda requested: max(2, clamp(requested))  # type: ignore[method-assign]
    yield server
    await server.stop()


@module_loop
@pytest.mark.parametrize("events", [False, True], ids=["no-event-points", "event-points"])
async def test_a_start_makes_one_subscription_and_no_stale_noise(
        revising: OpcuaSimServer, events: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    device = DEVICES[0]
    points = [p for p in device.profile.points if events or p.role not in EVENT_ROLES]
    gateway = GATEWAY.model_copy(update={"endpoint": revising.endpoint})
    devices = [dataclasses.replace(d, gateway=gateway) for d in fast([device], points=points)]
    assert revising._server is not None
    service = revising._server.iserver.subscription_service
    created_before = service._sub_id_counter
    async with collecting(devices) as (collector, sink):
        await until(lambda: len(sink.samples) >= len(points))
        await asyncio.sleep(3.5)  # the old watchdog fired after 1.5 s without a publish
        assert server_subscriptions(revising) == 1
        assert collector.subscriptions_created == 1
    assert service._sub_id_counter - created_before == 1  # never recreated
    await until(lambda: server_subscriptions(revising) == 0, 3)  # closed with the session
    noise = [r.getMessage()[:120] for r in caplog.records
             if r.levelno >= logging.INFO and any(n in r.getMessage() for n in NOISE)]
    assert noise == []
