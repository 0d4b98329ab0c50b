"""The Modbus TCP collector: one per gateway, many unit ids, reads planned once at start-up.

Requests in flight per gateway are limited to the gateway's `max_in_flight` (one
connection each: the pymodbus client never pipelines). A device that fails is marked bad,
retried with exponential backoff and jitter, and skipped meanwhile, so it costs the others
at most one timeout per backoff period. Nothing is written to a device unless the point is
`writable` in the config.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from dcim.collectors.base import (
    Backoff, CycleMarks, DeviceHealth, DeviceStatus, PointTable, SampleSink,
)
from dcim.collectors.modbus_codec import (
    DeviceDecoder, ReadRequest, engineering_to_registers, plan_reads,
)
from dcim.collectors.scheduler import Cadence, start_cadences
from dcim.tasks import cancel_and_wait
from dcim.site.model import SiteDevice
from dcim.config.site import ModbusGateway, ModbusPoint, ModbusRtuGateway
from dcim.storage.base import Quality, SampleColumns

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 3


class DeviceError(Exception):
    """A device answered with a Modbus exception (the connection is fine)."""


class GatewayDown(Exception):
    """No connection to the gateway could be made."""


@dataclass
class _Device:
    device: SiteDevice
    reads: list[ReadRequest]
    decoder: DeviceDecoder
    points: PointTable
    health: DeviceHealth
    backoff: Backoff
    unit: int = 1
    # per read: client method name, address, count, True for bit tables (fixed at start-up)
    ops: tuple[tuple[str, int, int, bool], ...] = ()
    # picks the stored values out of the decoder's (None: all of them)
    pick: Callable[[list[float | None]], Sequence[float | None]] | None = None
    # per read: the stored points it serves, by index in the stored order, with the points
    # scaled by a scale factor it holds (what a refused read leaves without a value)
    read_slots: tuple[tuple[int, ...], ...] = ()
    # reads refused with an exception in the current poll (None when all answered)
    refused: list[tuple[int, int]] | None = None
    silent: bool = False  # its last attempt got no answer at all (timeout, refused, reset)
    warned: bool = False  # its own "not answering" warning is out for the current failure run


# A poll whose reads all answered: the device, its answers, the round trip in seconds.
_Answered = tuple["_Device", list[list[int] | list[bool]], float]


def _picker(indexes: list[int]) -> Callable[[list[float | None]], Sequence[float | None]]:
    if len(indexes) == 1:
        index = indexes[0]
        return lambda values: (values[index],)
    return operator.itemgetter(*indexes)  # type: ignore[return-value]


def make_client(gateway: ModbusGateway | ModbusRtuGateway) -> Any:
    """A pymodbus client for a TCP gateway or a serial RTU line (no automatic reconnects)."""
    if isinstance(gateway, ModbusRtuGateway):
        return AsyncModbusSerialClient(gateway.serial_port, baudrate=gateway.baudrate,
                                       parity=gateway.parity, bytesize=gateway.bytesize,
                                       stopbits=gateway.stopbits, timeout=gateway.timeout_s,
                                       retries=0, reconnect_delay=0)
    return AsyncModbusTcpClient(gateway.host, port=gateway.port, timeout=gateway.timeout_s,
                                retries=0, reconnect_delay=0)


class _Connection:
    """One pymodbus client to the gateway, connected lazily and dropped on I/O errors."""

    def __init__(self, gateway: ModbusGateway | ModbusRtuGateway):
        self.gateway = gateway
        self.client: Any = None

    async def get(self) -> Any:
        if self.client is None or not self.client.connected:
            self.drop()
            client = make_client(self.gateway)
            if not await client.connect():
                client.close()
                where = (self.gateway.serial_port if isinstance(self.gateway, ModbusRtuGateway)
                         else f"{self.gateway.host}:{self.gateway.port}")
                raise GatewayDown(f"cannot connect to {where}")
            self.client = client
        return self.client

    def drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class _Pool:
    """Free connections, handed to waiters first come, first served.

    What asyncio.Queue does here, for a fraction of its cost per poll: taking a free
    connection is a deque pop, and a returned one goes straight to the oldest waiter.
    """

    def __init__(self, connections: list[_Connection]):
        self._free = collections.deque(connections)
        self._waiters: collections.deque[asyncio.Future[_Connection]] = collections.deque()

    def take_nowait(self) -> _Connection | None:
        """A free connection, or None."""
        return self._free.popleft() if self._free else None

    async def take(self) -> _Connection:
        """A free connection, waiting for one if none is."""
        if self._free:
            return self._free.popleft()
        waiter: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give(waiter.result())  # handed over as the cancel came: pass it on
            raise

    def give(self, conn: _Connection) -> None:
        """Return a connection: to the oldest waiter still waiting, else to the free ones."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)


class ModbusCollector:
    """Polls every Modbus device behind one gateway on its interval, into a sample sink."""

    def __init__(self, gateway: ModbusGateway | ModbusRtuGateway, devices: list[SiteDevice],
                 sink: SampleSink, *,
                 clock: Callable[[], float] = time.time,
                 stale_after_intervals: int = STALE_AFTER_INTERVALS,
                 backoff_base_s: float = 1.0, backoff_cap_s: float = 60.0):
        self.gateway = gateway
        self.sink = sink
        self._marks = CycleMarks(sink)
        self._clock = clock
        self._devices: dict[str, _Device] = {}
        # Devices of one profile share its read plan, decoder and picker (they hold no state):
        # one copy per profile also keeps what every poll reads warm in the CPU's caches.
        plans: dict[int, tuple[Any, ...]] = {}
        for device in devices:
            profile = device.profile
            assert profile.protocol == "modbus"
            plan = plans.get(id(profile))
            if plan is None:
                points = [p for p in profile.points if isinstance(p, ModbusPoint)]
                reads = plan_reads(points, max_gap=profile.max_gap)
                decoder = DeviceDecoder(reads)
                types = {p.name: p.type for p in points}
                # series in the decoder's value order; scale factors are read, not stored
                keep = [i for i, name in enumerate(decoder.names) if types[name] != "sunssf"]
                ops = tuple((_READ_METHODS[r.table], r.address, r.count, r.table in _BIT_TABLES)
                            for r in reads)
                pick = None if len(keep) == len(decoder.names) else _picker(keep)
                plan = plans[id(profile)] = (profile, reads, decoder, keep, ops, pick,
                                             _read_slots(reads, [decoder.names[i] for i in keep]))
            _, reads, decoder, keep, ops, pick, read_slots = plan
            series = {decoder.names[i]: device.series(decoder.names[i]) for i in keep}
            self._devices[device.id] = _Device(
                device, reads, decoder,
                PointTable(series, int(stale_after_intervals * device.interval_s * 1e9)),
                DeviceHealth(device.id, gateway.id),
                Backoff(backoff_base_s, backoff_cap_s), device.unit_id or 1, ops, pick,
                read_slots)
        self._connections = [_Connection(gateway) for _ in range(gateway.max_in_flight)]
        self._pool = _Pool(self._connections)
        self.cadences: list[Cadence] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.requests = 0
        # What the logs say about failures is settled after each cycle (_settle).
        self._silent = 0  # devices whose last attempt got no answer
        self._quiet = 0  # attempts that got no answer and polls skipped in backoff, ever
        self._pending: dict[str, tuple[_Device, str, float]] = {}  # failed, not yet warned
        self._last_error = ""  # of the last attempt that got no answer
        self._refused_logged: set[tuple[str, int]] = set()  # (profile, read index)
        self._down = False
        self._down_since = 0.0

    @property
    def health(self) -> dict[str, DeviceHealth]:
        """Health of each device, by device id."""
        return {d: dev.health for d, dev in self._devices.items()}

    @property
    def gateway_down(self) -> bool:
        """True while none of the gateway's devices answers (each tried at least once)."""
        return self._down

    def requests_per_poll(self, device_id: str) -> int:
        """Reads one poll of a device takes (after planning)."""
        return len(self._devices[device_id].reads)

    async def start(self) -> None:
        """Start one aligned cadence per distinct poll interval."""
        self.cadences, tasks = start_cadences(
            list(self._devices.values()), lambda d: d.device.interval_s, self._cycle_for,
            name=self.gateway.id, clock=self._clock)
        self._tasks += tasks

    async def close(self) -> None:
        """Stop polling and close every connection."""
        await cancel_and_wait(self._tasks)
        for conn in self._connections:
            conn.drop()

    def _cycle_for(self, members: list[_Device]) -> Callable[[float], asyncio.Future[None]]:
        tag = f"modbus:{self.gateway.id}:{members[0].device.interval_s:g}s"
        # An upper bound: every device gives one sample per point, except one skipped in
        # backoff whose points are not stale yet (none), which is only known at its turn.
        expected = sum(len(dev.points.keys) for dev in members)
        begin, add = self._marks.begin, self._marks.add

        async def cycle(boundary_s: float) -> None:
            # max_in_flight workers take the members in turn (no task per device) and only
            # read; the answers are decoded in one pass once every read is done, the same code
            # over and over while it is warm in the CPU caches, rather than between two rounds
            # of network code (docs/performance.md, "Sixth run"). The cycle hands all its
            # samples to the sink in one add: one durable-buffer frame per cycle.
            begin(tag, expected)
            t_ns = int(round(boundary_s * 1e9))
            polls: list[SampleColumns | _Answered] = []
            todo = iter(members)
            quiet = self._quiet

            async def worker() -> None:
                task = asyncio.current_task()
                for dev in todo:
                    polls.append(await self._read(dev, t_ns))
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError()  # swallowed by 3.11's wait_for: stop now

            n = min(len(self._connections), len(members))
            if n == 1:
                await worker()
            else:
                await asyncio.gather(*(worker() for _ in range(n)))
            decoded = self._decoded
            batch = SampleColumns.join([decoded(*p, t_ns) if isinstance(p, tuple) else p
                                        for p in polls])
            add(batch, tag)
            if self._pending or self._silent or self._down:  # something is failing
                self._settle(answered=self._quiet - quiet < len(members))
        return cycle  # type: ignore[return-value]

    async def poll(self, dev: _Device, boundary_s: float) -> None:
        """Poll one device for the cycle at boundary_s (skipped while in backoff)."""
        quiet = self._quiet
        self.sink.add(await self._poll(dev, boundary_s))
        if self._pending or self._silent or self._down:
            self._settle(answered=self._quiet == quiet)

    async def _poll(self, dev: _Device, boundary_s: float) -> SampleColumns:
        """The samples of one poll of dev (or of its failure, or of its backoff)."""
        t_ns = int(round(boundary_s * 1e9))
        polled = await self._read(dev, t_ns)
        return self._decoded(*polled, t_ns) if isinstance(polled, tuple) else polled

    async def _read(self, dev: _Device, t_ns: int) -> SampleColumns | _Answered:
        """dev's answers with their round trip, or the samples of its failure or backoff."""
        health = dev.health
        if health.next_attempt_s and self._clock() < health.next_attempt_s:
            health.skipped_backoff += 1
            self._quiet += 1
            if health.status is DeviceStatus.UP:
                health.status = DeviceStatus.STALE
            return dev.points.failed(t_ns, Quality.STALE)
        started = time.perf_counter()
        try:
            answers = await self._read_all(dev)
        except DeviceError as exc:  # the gateway answered, with an exception or a short read
            return self._failed(dev, t_ns, exc, answered=True)
        except (GatewayDown, ModbusException, asyncio.TimeoutError, OSError,
                ValueError, IndexError, AttributeError, struct.error, OverflowError) as exc:
            return self._failed(dev, t_ns, exc, answered=False)
        except Exception as exc:  # a failure nobody foresaw stays with this device
            log.exception("unexpected error polling a device", extra={
                "device": dev.device.id, "gateway": self.gateway.id})
            return self._failed(dev, t_ns, exc, answered=False)
        return dev, answers, time.perf_counter() - started

    def _decoded(self, dev: _Device, answers: list[list[int] | list[bool]], latency_s: float,
                 t_ns: int) -> SampleColumns:
        """The samples of a poll whose reads were all answered (bad if they do not decode)."""
        try:
            values = dev.decoder.values(answers)
        except (ValueError, IndexError, AttributeError, struct.error, OverflowError) as exc:
            return self._failed(dev, t_ns, exc, answered=True)
        except Exception as exc:  # a failure nobody foresaw stays with this device
            log.exception("unexpected error polling a device", extra={
                "device": dev.device.id, "gateway": self.gateway.id})
            return self._failed(dev, t_ns, exc, answered=True)
        health = dev.health
        if health.consecutive_errors:
            if dev.silent:
                dev.silent = False
                self._silent -= 1
            if dev.warned:  # a device whose failure was the gateway's says nothing here
                dev.warned = False
                log.info("device recovered", extra={
                    "device": dev.device.id, "gateway": self.gateway.id,
                    "after_errors": health.consecutive_errors})
            dev.backoff.reset()
            health.next_attempt_s = 0.0
        health.ok(t_ns, latency_s)
        pick = dev.pick
        if dev.refused is not None:  # some reads were refused: their points are bad
            return dev.points.good_values(self._refused(dev, values if pick is None
                                                        else pick(values)), t_ns)
        return dev.points.good_values(values if pick is None else pick(values), t_ns)

    def _refused(self, dev: _Device, values: Sequence[float | None]) -> list[float | None]:
        """values with the points of dev's refused reads taken out (None: a bad sample);
        each refused read is logged once per profile, with the fix."""
        refused, dev.refused = dev.refused or [], None
        out = list(values)
        for index, code in refused:
            for slot in dev.read_slots[index]:
                out[slot] = None
            read = dev.reads[index]
            message = (f"exception {code} ({_EXCEPTION_NAMES.get(code, 'device exception')}) "
                       f"to FC{read.function_code} {read.table} {read.address}+{read.count}")
            dev.health.last_error = message
            key = (dev.device.profile_id, index)
            if key in self._refused_logged:
                continue
            self._refused_logged.add(key)
            log.warning(
                "Modbus read refused, its points marked bad, the device's other reads go on; "
                "split the read: lower max_gap of profile %s (now %d) or leave a gap in its "
                "map between these points", dev.device.profile_id,
                getattr(dev.device.profile, "max_gap", 0), extra={
                    "device": dev.device.id, "gateway": self.gateway.id,
                    "profile": dev.device.profile_id, "function": read.function_code,
                    "table": read.table, "address": read.address, "count": read.count,
                    "points": [pp.point.name for pp in read.points], "exception_code": code,
                    "error": message})
        return out

    def _failed(self, dev: _Device, t_ns: int, exc: BaseException, *,
                answered: bool) -> SampleColumns:
        """The samples of a failed poll; answered: the gateway said something (not a timeout,
        refusal or reset). The warning waits for the end of the cycle (_settle)."""
        message = f"{type(exc).__name__}: {exc}"
        dev.refused = None
        delay = dev.backoff.next_delay()
        dev.health.next_attempt_s = self._clock() + delay
        dev.health.failed(message)
        if answered:
            if dev.silent:
                dev.silent = False
                self._silent -= 1
        else:
            self._quiet += 1
            self._last_error = message
            if not dev.silent:
                dev.silent = True
                self._silent += 1
        if not dev.warned:
            self._pending[dev.device.id] = (dev, message, delay)
        return dev.points.failed(t_ns, Quality.BAD)

    def _settle(self, *, answered: bool) -> None:
        """After a cycle with failures: one warning for the gateway when none of its devices
        answers, else one per failing device, once per failure run.

        answered: some device of the cycle answered. Until one does, a failing device's
        warning waits, so a gateway that goes down across several cycles (cadences of
        different intervals, devices in backoff) is not first reported device by device.
        """
        gateway = self.gateway.id
        if self._silent == len(self._devices):
            self._pending.clear()  # the gateway's warning covers its devices
            if not self._down:
                self._down, self._down_since = True, self._clock()
                log.warning("gateway %s unreachable: %d devices not answering: %s", gateway,
                            self._silent, self._last_error, extra={
                                "gateway": gateway, "devices": self._silent,
                                "error": self._last_error})
            return
        if self._down:
            self._down = False
            log.info("gateway %s answers again", gateway, extra={
                "gateway": gateway, "down_s": round(self._clock() - self._down_since, 2),
                "not_answering": self._silent})
        if not answered:
            return
        for dev, message, delay in self._pending.values():
            if dev.health.consecutive_errors and not dev.warned:
                dev.warned = True
                log.warning("device not answering, marked bad; retrying with backoff", extra={
                    "device": dev.device.id, "gateway": gateway, "unit_id": dev.device.unit_id,
                    "error": message, "retry_in_s": round(delay, 2)})
        self._pending.clear()

    async def _read_all(self, dev: _Device) -> list[list[int] | list[bool]]:
        pool = self._pool
        conn = pool.take_nowait() or await pool.take()
        try:
            client = conn.client
            if client is None or not client.connected:
                client = await conn.get()
            unit = dev.unit
            answers: list[list[int] | list[bool]] = []
            refused: list[tuple[int, int]] | None = None
            for method, address, count, bits in dev.ops:
                self.requests += 1
                try:
                    result = await getattr(client, method)(address, count=count, device_id=unit)
                except (ModbusException, asyncio.TimeoutError, OSError):
                    conn.drop()  # a timed-out or broken connection may hold a late answer
                    raise
                if result.isError():
                    code: int = getattr(result, "exception_code", 0)
                    if code in _NOT_ANSWERING or len(dev.ops) == 1:
                        table = next(t for t, m in _READ_METHODS.items() if m == method)
                        raise DeviceError(f"exception code {code} reading {table} "
                                          f"{address}+{count}")
                    # This read is refused (e.g. exception 2: it spans an unmapped register);
                    # the others go on. Zeros stand in for its answer and are never stored.
                    if refused is None:
                        refused = []
                    refused.append((len(answers), code))
                    answers.append([False] * count if bits else [0] * count)
                    continue
                if bits:
                    answers.append(list(result.bits[:count]))
                else:
                    registers = result.registers
                    if len(registers) != count:
                        conn.drop()
                        raise DeviceError(f"{len(registers)} registers for {count}")
                    answers.append(registers)
            if refused is not None:
                if len(refused) == len(answers):  # nothing answered: the device failed
                    index, code = refused[0]
                    read = dev.reads[index]
                    raise DeviceError(f"exception code {code} reading {read.table} "
                                      f"{read.address}+{read.count}")
                dev.refused = refused
            return answers
        finally:
            pool.give(conn)

    async def write_point(self, device_id: str, point_name: str, value: float) -> None:
        """Write one point; refused unless the config marks it writable."""
        dev = self._devices[device_id]
        point = next((p for p in dev.device.profile.points if p.name == point_name), None)
        if not isinstance(point, ModbusPoint):
            raise KeyError(f"{device_id} has no Modbus point {point_name!r}")
        if not point.writable:
            raise PermissionError(f"point {point_name} of {device_id} is read-only "
                                  "(set writable: true in its profile to allow writes)")
        if point.table not in ("coil", "holding"):
            raise PermissionError(f"{point.table} points cannot be written")
        conn = await self._pool.take()
        try:
            client = await conn.get()
            unit = dev.device.unit_id or 1
            if point.table == "coil":
                result = await client.write_coil(point.address, bool(value), device_id=unit)
            else:
                regs = engineering_to_registers(point, value)
                result = await client.write_registers(point.address, regs, device_id=unit)
            if result.isError():
                raise DeviceError(f"write refused: exception {getattr(result, 'exception_code', '?')}")
        finally:
            self._pool.give(conn)


_READ_METHODS = {"holding": "read_holding_registers", "input": "read_input_registers",
                 "coil": "read_coils", "discrete_input": "read_discrete_inputs"}
_BIT_TABLES = ("coil", "discrete_input")
# Exception codes that say the device itself is not answering (through a gateway): the
# whole device fails, not one read.
_NOT_ANSWERING = frozenset({10, 11})
_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "server device failure", 6: "server device busy"}


def _read_slots(reads: Sequence[ReadRequest], stored: list[str]) -> tuple[tuple[int, ...], ...]:
    """Per read, the indexes in `stored` of its points and of the points scaled by a scale
    factor it holds: what has no value when that read is refused."""
    slot = {name: i for i, name in enumerate(stored)}
    out = []
    for read in reads:
        names = {pp.point.name for pp in read.points}
        names |= {pp.point.name for r in reads for pp in r.points
                  if pp.point.scale_factor_point in names}
        out.append(tuple(sorted(slot[n] for n in names if n in slot)))
    return tuple(out)
