"""The OPC UA collector: one client per server, subscribed (or polled), sampled on a cadence.

Subscribed points keep their latest value, status and arrival time ("sample and hold");
every aligned boundary of a device's interval turns them into samples. With the gateway's
`timestamps: source` (or `server`) a new value is stored once at the device's time for it
and a held one at the boundary's time (moved back by the device's lag in whole intervals,
so a late-dated next change never comes before it); with `poll` every sample carries the
boundary, so redundant collectors write identical timestamps. Poll-mode devices are read in
one batched Read per boundary instead. Node ids are resolved from namespace URIs on every
connection. After a lost connection the old client and its subscription are torn
down and exactly one new subscription is made on the next connection (asyncua's own
auto-reconnect is off: it would restore monitored items with stale namespace indexes).
The collector never writes to the server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from dcim.collectors.base import (
    Backoff, CycleMarks, DeviceHealth, DeviceStatus, SampleSink,
)
from dcim.collectors.opcua_client import (
    ClientSettings,
    UntrustedServer,
    close_client,
    insecure_settings,
    open_client,
)
from dcim.collectors.opcua_nodes import (
    PointAddress,
    as_number,
    judge_time,
    parse_address,
    quality_of,
    resolve,
    status_name,
    value_time_ns,
)
from dcim.collectors.scheduler import Cadence, start_cadences
from dcim.tasks import cancel_and_wait

from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaGateway, OpcuaPoint
from dcim.storage.base import Quality, Sample, SeriesKey

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 3
QUEUE_SIZE = 1  # per monitored item: only the latest value matters for sample and hold
MAX_NODES_PER_READ = 1000  # one Read request at most; servers limit MaxNodesPerRead
LIFETIME_KEEPALIVES = 5  # a server drops an orphaned subscription after this many keep-alives
# Servers revise smaller keep-alive counts up (node-opcua: to 2, with the lifetime to 3x),
# and asyncua's stale-subscription watchdog trusts the requested count: a count of 1 made it
# find every quiet subscription stale and recreate it (docs/collectors.md).
MIN_KEEPALIVE_COUNT = 3
CLOSE_TIMEOUT_S = 1.0
# Points that say a unit tripped or stopped: sampled and published fast, and each data change
# handed to the live state at once (sink.note), so a trip is alarmed within the device's
# interval + 1 s even though the stored sample waits for the next sampling boundary. They
# change rarely, so fast sampling costs the server and the network next to nothing.
EVENT_ROLES = frozenset({"unit_status", "running", "fault"})
EVENT_SAMPLING_MS = 500.0


@dataclass(eq=False)
class _Point:
    """A point's address, its node id on the current connection, and its held value."""

    device_id: str
    name: str
    series: SeriesKey
    address: PointAddress
    mode: str
    sampling_ms: float
    deadband: float | None
    scale: float
    offset: float
    fast: bool = False  # an event point (EVENT_ROLES): fast sampling, changes noted at once
    late_ns: int = 0  # how late a change may arrive after its device time (the interval)
    node_id: ua.NodeId | None = None
    error: str = ""  # why it has no node id on this connection
    value: float = math.nan  # latest value of any status
    status: int = ua.StatusCodes.Good
    last_good: float = math.nan
    received: bool = False  # something arrived on the current connection
    received_mono: float = 0.0
    ever: bool = False  # something arrived since start
    # timestamps source/server: the device time of the held value as sent (0: none) and the
    # time to store it at (0: the boundary's), and the time of the point's last sample
    device_ns: int = 0
    time_ns: int = 0
    written_ns: int = 0
    # how far the device time of the newest value was behind its arrival (0 or more): held
    # values are dated that far back (in whole intervals), so that the next change, dated
    # by the same device, does not come before them
    lag_ns: int = 0

    @property
    def key(self) -> tuple[str, str]:
        """(device id, point name)."""
        return (self.device_id, self.name)


@dataclass(eq=False)
class _Device:
    device: SiteDevice
    points: list[_Point]
    health: DeviceHealth
    mode: str
    own_fault: bool = False  # DOWN because the server reports all its points Bad

    @property
    def stale_after_s(self) -> float:
        return self.device.interval_s * STALE_AFTER_INTERVALS


@dataclass(eq=False)
class _Connection:
    """One asyncua client and (at most) one subscription; discarded when lost."""

    client: Client | None = None
    subscription: Subscription | None = None
    handles: dict[int, _Point] = field(default_factory=dict)
    consumer: asyncio.Task[None] | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""
    connected_mono: float = 0.0
    got_data: bool = False

    def lose(self, reason: str) -> None:
        """Mark the connection dead (first reason wins); the run loop replaces it."""
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    def last_alive_mono(self) -> float:
        """Monotonic time of the last publish response (data or keep-alive)."""
        sub = self.subscription
        at = sub.last_publish_at if sub is not None else None
        return self.connected_mono if at is None else max(at, self.connected_mono)


class OpcuaCollector:
    """Collects every OPC UA device of one server (gateway) into a sample sink."""

    def __init__(self, gateway: OpcuaGateway, devices: list[SiteDevice],
                 sink: SampleSink, *,
                 clock: Callable[[], float] = time.time,
                 stale_after_intervals: int = STALE_AFTER_INTERVALS,
                 backoff_base_s: float = 1.0, backoff_cap_s: float = 30.0):
        self.gateway = gateway
        self.sink = sink
        self._marks = CycleMarks(sink)
        self._clock = clock
        self._stale_intervals = stale_after_intervals
        self._settings = ClientSettings.from_gateway(gateway)
        self._backoff = Backoff(backoff_base_s, backoff_cap_s)
        self._devices: dict[str, _Device] = {}
        for device in devices:
            profile = device.profile
            if profile.protocol != "opcua":
                raise ValueError(f"device {device.id} has a {profile.protocol} profile, "
                                 f"not opcua (gateway {gateway.id})")
            points = []
            for p in profile.points:
                assert isinstance(p, OpcuaPoint)
                fast = profile.mode == "subscribe" and p.role in EVENT_ROLES
                sampling = device.interval_s * 1000
                if fast:
                    sampling = min(sampling, EVENT_SAMPLING_MS)
                points.append(_Point(
                    device.id, p.name, device.series(p.name), parse_address(device, p),
                    profile.mode, float(p.sampling_interval_ms if p.sampling_interval_ms is not None
                                        else sampling), p.deadband,
                    p.scale, p.offset, fast=fast, late_ns=int(device.interval_s * 1e9)))
            self._devices[device.id] = _Device(device, points, DeviceHealth(device.id, gateway.id),
                                               profile.mode)
        self._points = [p for d in self._devices.values() for p in d.points]
        # the live state's fast path (LiveState.note); plain sinks do not have it
        self._note: Callable[[Sample], None] | None = getattr(sink, "note", None)
        self._stamped = gateway.timestamps != "poll"
        self._max_skew_ns = int(gateway.max_clock_skew_s * 1e9)
        self._skew_logged: set[str] = set()  # devices whose clock skew was logged
        self._conn: _Connection | None = None
        self._attempted = False  # a first connection attempt has finished
        self._outage_since: float | None = None
        self._last_error = ""
        self._warned: dict[tuple[str, str], str] = {}
        self._started_mono = 0.0
        self.cadences: list[Cadence] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.requests = 0
        self.reconnects = 0
        self.subscriptions_created = 0
        self.connections = 0
        self.namespaces: dict[str, int] = {}  # namespace index by URI on the current connection
        self.unresolved: dict[tuple[str, str], str] = {}  # (device, point) -> why

    @property
    def health(self) -> dict[str, DeviceHealth]:
        """Health of each device, by device id."""
        return {d: dev.health for d, dev in self._devices.items()}

    @property
    def gateway_down(self) -> bool:
        """True from a failed or lost connection until data flows again on a new one."""
        return self._outage_since is not None

    @property
    def connected(self) -> bool:
        """Whether a live connection (with its subscription, if any) is in place."""
        return self._conn is not None and not self._conn.lost.is_set()

    async def start(self) -> None:
        """Start the connection task and one aligned cadence per distinct device interval."""
        for warning in insecure_settings(self.gateway):  # every start: no one misses it
            log.warning(warning, extra={"gateway": self.gateway.id,
                                        "endpoint": self.gateway.endpoint})
        self._started_mono = time.monotonic()
        self._tasks.append(asyncio.create_task(self._run(), name=f"{self.gateway.id}/connection"))
        self.cadences, tasks = start_cadences(
            list(self._devices.values()), lambda d: d.device.interval_s, self._cycle_for,
            name=self.gateway.id, clock=self._clock)
        self._tasks += tasks

    async def close(self) -> None:
        """Stop sampling, delete the subscription and close the session."""
        await cancel_and_wait(self._tasks)

    # ------------------------------------------------------------ connection

    async def _run(self) -> None:
        """Connect, hold the connection until it is lost, tear down, back off, repeat."""
        while True:
            conn: _Connection | None = None
            try:
                conn = await self._connect()
                self._conn = conn
                await conn.lost.wait()
                reason = conn.reason
            except (TimeoutError, UntrustedServer, ua.UaError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # anything else from the stack: keep the loop alive
                log.exception("unexpected error on the OPC UA connection", extra={
                    "gateway": self.gateway.id})
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._conn = None
                self._attempted = True
                if conn is not None:
                    await self._teardown(conn)
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancel swallowed by wait_for
                raise asyncio.CancelledError
            self._connection_down(reason)
            await asyncio.sleep(self._backoff.next_delay())

    async def _connect(self) -> _Connection:
        conn = _Connection()

        async def on_lost(exc: Exception) -> None:
            conn.lose(f"connection lost: {type(exc).__name__}: {exc}")

        conn.client = client = await open_client(
            self._settings, on_lost=on_lost, watchdog_s=min(1.0, self._settings.timeout_s),
            session_timeout_s=max(60.0, 10 * max(d.device.interval_s for d in
                                                 self._devices.values())))
        try:
            resolution = await asyncio.wait_for(resolve(client, [p.address for p in self._points]),
                                                self._settings.timeout_s * 3)
            self.namespaces = dict(resolution.namespace_indexes)
            self.unresolved = dict(resolution.errors)
            for point in self._points:
                point.node_id = resolution.node_ids.get(point.key)
                point.error = resolution.errors.get(point.key, "")
                point.received = False
                if point.error and self._warned.get(point.key) != point.error:
                    self._warned[point.key] = point.error
                    log.warning("OPC UA point not resolved, marked bad", extra={
                        "gateway": self.gateway.id, "device": point.device_id,
                        "point": point.name, "address": point.address.text, "error": point.error})
            if any(p.mode == "subscribe" and p.node_id is not None for p in self._points):
                await asyncio.wait_for(self._subscribe(conn), self._settings.timeout_s * 3)
        except BaseException:
            await self._teardown(conn)
            raise
        conn.connected_mono = time.monotonic()
        self.connections += 1
        if self.connections > 1:
            self.reconnects += 1
        return conn

    async def _subscribe(self, conn: _Connection) -> None:
        """One subscription for all subscribe-mode points, queue size 1, optional deadband."""
        points = [p for p in self._points if p.mode == "subscribe" and p.node_id is not None]
        intervals = [self._devices[p.device_id].device.interval_s for p in points]
        params = ua.CreateSubscriptionParameters()
        fast_ms = [p.sampling_ms for p in points if p.fast]
        (params.RequestedPublishingInterval, params.RequestedMaxKeepAliveCount,
         params.RequestedLifetimeCount) = subscription_timing(
            min(intervals), min(fast_ms) if fast_ms else None, self._stale_intervals)
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        assert conn.client is not None
        sub = await conn.client.create_subscription(
            params, None, queue_maxsize=max(1000, 10 * len(points)))
        conn.subscription = sub
        self.subscriptions_created += 1
        conn.consumer = asyncio.create_task(self._consume(conn, sub),
                                            name=f"{self.gateway.id}/notifications")
        requests = []
        for handle, point in enumerate(points, start=1):
            conn.handles[handle] = point
            requests.append(_monitor_request(point, handle))
        results = await sub.create_monitored_items(requests)
        for (handle, point), result in zip(conn.handles.items(), results, strict=True):
            if isinstance(result, ua.StatusCode):
                point.node_id, point.error = None, f"monitored item refused ({result.name})"
                self.unresolved[point.key] = point.error
                del conn.handles[handle]
                if self._warned.get(point.key) != point.error:
                    self._warned[point.key] = point.error
                    log.warning("OPC UA point not monitored, marked bad", extra={
                        "gateway": self.gateway.id, "device": point.device_id,
                        "point": point.name, "error": point.error})

    async def _consume(self, conn: _Connection, sub: Subscription) -> None:
        """Store each data change; a Bad subscription status ends the connection."""
        async for event in sub:
            if conn.lost.is_set():
                return
            if isinstance(event, DataChangeEvent):
                point = conn.handles.get(event.data.monitored_item.ClientHandle)
                if point is not None and event.data.monitored_item.Value is not None:
                    self.requests += 1
                    self._store(conn, point, event.data.monitored_item.Value)
                    if point.fast and self._note is not None:
                        self._note(Sample(point.series, point.time_ns or time.time_ns(),
                                          point.value, quality_of(point.status)))
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if status is not None and not status.is_good():
                    conn.lose(f"subscription status {status.name}")

    async def _teardown(self, conn: _Connection) -> None:
        """Forget the connection's subscription and close its client (best effort)."""
        conn.lose(conn.reason or "closed")
        if conn.consumer is not None:
            conn.consumer.cancel()
            await asyncio.gather(conn.consumer, return_exceptions=True)
        # No DeleteSubscriptions of its own: CloseSession deletes the session's subscriptions
        # after asyncua has stopped its publish loop, where a DeleteSubscriptions first left
        # the Publish in flight to be answered BadNoSubscription (a ServiceFault warning).
        conn.subscription, conn.consumer = None, None
        conn.handles.clear()
        if conn.client is not None:
            alive = conn.client.uaclient.state is UaClientState.CONNECTED
            await close_client(conn.client, alive=alive, timeout_s=CLOSE_TIMEOUT_S)
            conn.client = None

    def _connection_down(self, reason: str) -> None:
        """After a failed attempt or a lost connection: devices DOWN, logged once per outage."""
        self._last_error = reason
        for point in self._points:
            point.received = False
        for dev in self._devices.values():
            dev.health.status = DeviceStatus.DOWN
            dev.health.last_error = reason
        delay_hint = self._backoff.base_s * 2 ** self._backoff.failures
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            level = logging.ERROR if "UntrustedServer" in reason or "ChannelRefused" in reason \
                else logging.WARNING
            log.log(level, "OPC UA server not reachable, its devices marked down; reconnecting "
                    "with backoff", extra={"gateway": self.gateway.id,
                                           "endpoint": self.gateway.endpoint, "error": reason,
                                           "devices": len(self._devices),
                                           "retry_in_s": round(min(delay_hint,
                                                                   self._backoff.cap_s), 2)})

    def _recovered(self, conn: _Connection) -> None:
        conn.got_data = True
        self._backoff.reset()
        if self._outage_since is not None:
            log.info("OPC UA server reachable again, data flowing", extra={
                "gateway": self.gateway.id, "endpoint": self.gateway.endpoint,
                "down_s": round(time.monotonic() - self._outage_since, 2),
                "reconnects": self.reconnects, "namespaces": self.namespaces})
            self._outage_since = None

    # ------------------------------------------------------------ values

    def _store(self, conn: _Connection, point: _Point, data: ua.DataValue) -> None:
        """Hold the latest value and status of a point (from a notification or a read)."""
        status = data.StatusCode.value if data.StatusCode is not None else ua.StatusCodes.Good
        number = as_number(data.Value.Value if data.Value is not None else None)
        if number is None and quality_of(status) is not Quality.BAD:
            status = ua.StatusCodes.BadTypeMismatch  # not a number we can store
        point.status = status
        point.value = math.nan if number is None else number * point.scale + point.offset
        if quality_of(status) is Quality.GOOD:
            point.last_good = point.value
        if self._stamped:
            self._stamp(point, data)
        point.received, point.ever = True, True
        point.received_mono = time.monotonic()
        if not conn.got_data:
            self._recovered(conn)

    def _stamp(self, point: _Point, data: ua.DataValue) -> None:
        """Note the device's time of a value (timestamps source or server): a value whose
        device time did not change since the held one is no new value and keeps its time."""
        received_ns = int(self._clock() * 1e9)
        device_ns = value_time_ns(data, self.gateway.timestamps)
        if device_ns is None:  # the server sends no time: each value is new, received now
            point.time_ns = received_ns
            return
        if device_ns == point.device_ns:
            return
        point.device_ns = device_ns
        point.time_ns, skew_ns = judge_time(device_ns, received_ns, first=not point.received,
                                            max_skew_ns=self._max_skew_ns,
                                            late_ns=point.late_ns)
        point.lag_ns = max(0, received_ns - device_ns) if point.time_ns == device_ns else 0
        if skew_ns is not None and point.device_id not in self._skew_logged:
            self._skew_logged.add(point.device_id)
            log.warning("OPC UA device clock is off by %.1f s (more than max_clock_skew_s): "
                        "its values are stored at their receive time", skew_ns / 1e9, extra={
                            "gateway": self.gateway.id, "device": point.device_id,
                            "point": point.name, "skew_s": round(skew_ns / 1e9, 3),
                            "max_clock_skew_s": self.gateway.max_clock_skew_s})

    def _sample_time(self, p: _Point, t_ns: int) -> int | None:
        """When a sample of p at the boundary t_ns is stored (None: not at this boundary).

        Poll policy: the boundary. Source or server: a new value at its own time, once; a
        held value at the boundary moved back by the device's lag rounded up to whole
        intervals (still an aligned boundary), and not at all when that is no later than the
        last sample. Dating a held value at the boundary itself would put it after the
        device's next change whenever the device's clock runs an interval or more behind
        the arrival (a BMS stamping values at its field controllers), and every later change
        would then be moved to a boundary too."""
        if not self._stamped:
            t = t_ns
        elif p.time_ns > p.written_ns:
            t = p.time_ns
        else:
            intervals_behind = -(-p.lag_ns // p.late_ns) if p.late_ns else 0  # rounded up
            t = t_ns - intervals_behind * p.late_ns
            if t <= p.written_ns:
                return None
        p.written_ns = max(p.written_ns, t)
        return t

    def _cycle_for(self, members: list[_Device]) -> Callable[[float], Awaitable[None]]:
        tag = f"opcua:{self.gateway.id}:{members[0].device.interval_s:g}s"
        # An upper bound: one sample per point at most; points whose first value is still on
        # its way, and every point before the first connection attempt, give none.
        expected = sum(len(dev.points) for dev in members)

        async def cycle(boundary_s: float) -> None:
            await self._cycle(members, boundary_s, tag, expected)
        return cycle

    async def _cycle(self, members: list[_Device], boundary_s: float, tag: str,
                     expected: int) -> None:
        """One boundary: read the poll-mode devices, then sample every member (a cycle of the
        sink's, `tag`, of at most `expected` samples)."""
        self._marks.begin(tag, expected)
        t_ns = round(boundary_s * 1e9)
        conn = self._conn
        latency = 0.0
        polled = [d for d in members if d.mode == "poll"]
        if polled and conn is not None and not conn.lost.is_set():
            latency = await self._poll(conn, polled)
        samples: list[Sample] = []
        for dev in members:
            samples += self._sample_device(dev, conn, t_ns, latency if dev in polled else 0.0)
        self._marks.add(samples, tag)

    async def _poll(self, conn: _Connection, devices: list[_Device]) -> float:
        """Batched Read of value and status of every resolved point; returns the round trip."""
        points = [p for d in devices for p in d.points if p.node_id is not None]
        assert conn.client is not None
        started = time.perf_counter()
        try:
            for i in range(0, len(points), MAX_NODES_PER_READ):
                chunk = points[i:i + MAX_NODES_PER_READ]
                self.requests += 1
                results = await asyncio.wait_for(conn.client.uaclient.read(
                    _read_parameters(chunk)), self._settings.timeout_s)
                for point, data in zip(chunk, results, strict=True):
                    self._store(conn, point, data)
        except (TimeoutError, ua.UaError, OSError, ConnectionError) as exc:
            conn.lose(f"read failed: {type(exc).__name__}: {exc}")
        return time.perf_counter() - started

    def _sample_device(self, dev: _Device, conn: _Connection | None, t_ns: int,
                       latency: float) -> list[Sample]:
        """Samples of one device at a boundary, and its health."""
        health = dev.health
        if conn is None or conn.lost.is_set():
            if not self._attempted:
                return []  # still connecting for the first time: nothing to say yet
            health.failed(self._last_error or "not connected")
            return [Sample(p.series, t_ns, p.last_good, Quality.BAD) for p in dev.points]
        now = time.monotonic()
        alive = now - conn.last_alive_mono() < dev.stale_after_s
        out: list[Sample] = []
        bad = stale = fresh = 0
        for p in dev.points:
            if p.node_id is None:
                out.append(Sample(p.series, t_ns, p.last_good, Quality.BAD))
                continue
            if not p.received:
                if not p.ever and now - conn.connected_mono < dev.stale_after_s:
                    continue  # initial value on its way
                at = self._sample_time(p, t_ns)
                if at is not None:
                    out.append(Sample(p.series, at, p.last_good, Quality.BAD))
                bad += 1
                continue
            quality = quality_of(p.status)
            if p.mode == "subscribe" and not (alive or now - p.received_mono < dev.stale_after_s):
                quality = max(quality, Quality.STALE)
            value = p.value if quality is not Quality.BAD and not math.isnan(p.value) \
                else p.last_good
            at = self._sample_time(p, t_ns)
            if at is not None:
                out.append(Sample(p.series, at, value, quality))
            bad += quality is Quality.BAD
            stale += quality is Quality.STALE
            fresh += 1
        self._device_health(dev, conn, t_ns, latency, bad=bad, stale=stale, fresh=fresh)
        return out

    def _device_health(self, dev: _Device, conn: _Connection, t_ns: int, latency: float, *,
                       bad: int, stale: int, fresh: int) -> None:
        health = dev.health
        if fresh == 0:
            return  # nothing arrived on this connection yet: the status stays as it was
        if bad == fresh:
            statuses = {status_name(p.status) for p in dev.points if p.received}
            if health.failed(f"server reports every point Bad ({', '.join(sorted(statuses))})") \
                    and conn.got_data:
                dev.own_fault = True
                log.warning("OPC UA device reports no good value, marked down", extra={
                    "gateway": self.gateway.id, "device": dev.device.id,
                    "status": sorted(statuses)})
            return
        if dev.own_fault:
            dev.own_fault = False
            log.info("OPC UA device has values again", extra={
                "gateway": self.gateway.id, "device": dev.device.id})
        health.ok(t_ns, latency)
        if stale == fresh - bad and stale:
            health.status = DeviceStatus.STALE


def subscription_timing(interval_s: float, fast_ms: float | None,
                        stale_intervals: int) -> tuple[float, int, int]:
    """(publishing interval ms, max keep-alive count, lifetime count) of the subscription of
    devices whose shortest interval is interval_s (fast_ms: the event points' sampling).

    Event points' changes must not wait for a publish, so their sampling bounds the
    publishing interval. A keep-alive comes at least every half stale period (it proves a
    quiet subscription alive), with a count of at least MIN_KEEPALIVE_COUNT, which servers
    keep as asked: the publishing interval is shortened to make both hold.
    """
    publish_ms = interval_s * 1000
    if fast_ms is not None:
        publish_ms = min(publish_ms, fast_ms)
    half_stale_ms = stale_intervals * interval_s * 1000 / 2
    keepalive = max(MIN_KEEPALIVE_COUNT, int(half_stale_ms / publish_ms))
    publish_ms = min(publish_ms, half_stale_ms / keepalive)
    return publish_ms, keepalive, keepalive * LIFETIME_KEEPALIVES


def _read_parameters(points: list[_Point]) -> ua.ReadParameters:
    """A Read of the points' values with both timestamps (the Read's default is Source)."""
    params = ua.ReadParameters()
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    for point in points:
        item = ua.ReadValueId()
        item.NodeId = point.node_id
        item.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(item)
    return params


def _monitor_request(point: _Point, handle: int) -> ua.MonitoredItemCreateRequest:
    """A monitored item on the Value attribute: queue size 1, absolute deadband if set."""
    item = ua.ReadValueId()
    item.NodeId = point.node_id
    item.AttributeId = ua.AttributeIds.Value
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = point.sampling_ms
    params.QueueSize = QUEUE_SIZE
    params.DiscardOldest = True
    if point.deadband is not None:
        params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                            DeadbandType=ua.DeadbandType.Absolute,
                                            DeadbandValue=point.deadband)
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request
