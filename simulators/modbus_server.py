"""Modbus TCP gateway simulator: one asyncio server per gateway, devices by unit id.

A small server of our own (MBAP + PDU for FC 1-6, 15, 16) rather than pymodbus's, because
wire faults need the transport: silence, resets, malformed frames, per-unit delays. Requests
on one connection are answered in order (pipelining works); connections are independent.

Answers, as a real gateway gives them:
- unknown unit id: exception 0x0B (gateway target device failed to respond);
- a read not lying entirely inside one mapped block of the device: exception 2;
- a count outside the protocol limits or a malformed PDU: exception 3;
- a function other than 1-6, 15, 16: exception 1;
- writes: exception 1 when the device has no writable point in that table, exception 2 when
  the range is not entirely writable points; otherwise written into the image and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from dcim.site.model import Site, SiteDevice
from dcim.config.site import ModbusGateway
from dcim.simulators.registers import DeviceEncoder
from dcim.simulators.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123
EXC_ILLEGAL_FUNCTION = 1
EXC_ILLEGAL_ADDRESS = 2
EXC_ILLEGAL_VALUE = 3
EXC_DEVICE_BUSY = 6
EXC_GATEWAY_TARGET = 0x0B
FAULT_KINDS = ("timeout", "disconnect", "exception", "garbage", "delay")
READ_TABLES = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
_HEADER = struct.Struct(">HHHB")
_ADDR_COUNT = struct.Struct(">HH")


@dataclass
class ServerStats:
    """Counters a benchmark or test reads; never reset by the server."""

    connections: int = 0
    requests: int = 0  # well-formed requests received
    answered: int = 0  # normal answers sent
    exceptions: Counter[int] = field(default_factory=Counter)  # exception answers by code
    dropped: int = 0  # requests left unanswered or answered with garbage/reset by a fault
    malformed: int = 0  # frames with a bad MBAP header (the connection is closed)
    writes: int = 0  # accepted writes


@dataclass
class _Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # None = until cleared
    probability: float


class ModbusSimServer:
    """Serves the devices behind one Modbus gateway; `update` re-encodes them from a snapshot."""

    def __init__(self, gateway: ModbusGateway, devices: list[SiteDevice], *,
                 host: str | None = None, port: int | None = None, seed: int | None = None) -> None:
        self.gateway = gateway
        self.host = host if host is not None else gateway.host
        self._requested_port = port if port is not None else gateway.port
        self._units: dict[int, DeviceEncoder] = {}
        self._by_id: dict[str, DeviceEncoder] = {}
        for device in devices:
            if device.unit_id is None:
                raise ValueError(f"device {device.id!r} has no unit_id")
            if device.unit_id in self._units:
                raise ValueError(f"gateway {gateway.id!r}: unit id {device.unit_id} is used by "
                                 f"{self._units[device.unit_id].device.id!r} and {device.id!r}")
            encoder = DeviceEncoder(device)
            self._units[device.unit_id] = encoder
            self._by_id[device.id] = encoder
        self._faults: dict[int | None, dict[str, _Fault]] = {}
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = ServerStats()
        self.written: deque[tuple[int, str, int, bytes]] = deque(maxlen=1000)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(self._connection, self.host,
                                                  self._requested_port)

    async def stop(self) -> None:
        """Close the listener and every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ModbusSimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (after start), else the configured one."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._requested_port

    @property
    def requests_served(self) -> int:
        """Requests answered, normally or with an exception."""
        return self.stats.answered + sum(self.stats.exceptions.values())

    @property
    def errors(self) -> int:
        """Exception answers, faulted requests and malformed frames."""
        return sum(self.stats.exceptions.values()) + self.stats.dropped + self.stats.malformed

    @property
    def open_connections(self) -> int:
        """Client connections currently open."""
        return len(self._conns)

    @property
    def unit_ids(self) -> list[int]:
        """Unit ids served, ascending."""
        return sorted(self._units)

    def encoder(self, unit_id: int) -> DeviceEncoder:
        """The compiled encoder (and image) of one unit."""
        return self._units[unit_id]

    # ------------------------------------------------------------ data and faults

    def update(self, snapshot: Snapshot) -> None:
        """Re-encode the devices of this gateway in the snapshot (call on the loop thread)."""
        readings = snapshot.devices
        for device_id, encoder in self._by_id.items():
            reading = readings.get(device_id)
            if reading is not None:
                encoder.encode(reading)

    def set_comm_fault(self, unit_id: int | None, kind: str, **params: Any) -> None:
        """Inject a wire fault for one unit (None = the whole gateway).

        Params: `count` (apply to the next N requests only), `probability` (0-1, default 1);
        exception: `code` (default 6); delay: `seconds` (default 1.0); garbage: `mode`
        'random' (random bytes, default) or 'mbap' (a header announcing more bytes than sent).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}, expected one of {FAULT_KINDS}")
        count = params.pop("count", None)
        probability = float(params.pop("probability", 1.0))
        self._faults.setdefault(unit_id, {})[kind] = _Fault(kind, params, count, probability)

    def clear_comm_fault(self, unit_id: int | None, kind: str | None = None) -> None:
        """Remove one fault kind (or all kinds, kind=None) of a unit or of the gateway."""
        if kind is None:
            self._faults.pop(unit_id, None)
        else:
            self._faults.get(unit_id, {}).pop(kind, None)

    def _active_faults(self, unit_id: int) -> list[_Fault]:
        """Faults that fire for this request (consumes counts)."""
        found: list[_Fault] = []
        for key in (unit_id, None):
            kinds = self._faults.get(key)
            if not kinds:
                continue
            for kind, fault in list(kinds.items()):
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del kinds[kind]
                found.append(fault)
        return found

    # ------------------------------------------------------------ wire

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._conns.add(writer)
        self.stats.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop() cancels handlers; finishing normally keeps asyncio's callback quiet
        finally:
            self._conns.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            header = await reader.readexactly(7)
            tid, protocol, length, unit = _HEADER.unpack(header)
            if protocol != 0 or not 2 <= length <= 254:
                self.stats.malformed += 1
                log.debug("%s: bad MBAP header %s, closing", self.gateway.id, header.hex())
                return
            pdu = await reader.readexactly(length - 1)
            self.stats.requests += 1
            if self._faults:
                faults = self._active_faults(unit)
                if faults:
                    answer = await self._faulted(faults, tid, unit, pdu, writer)
                    if answer is None:
                        return
                    if not answer:
                        continue
                    writer.write(answer)
                    continue
            writer.write(self._frame(tid, unit, self._answer(unit, pdu)))
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()

    async def _faulted(self, faults: list[_Fault], tid: int, unit: int, pdu: bytes,
                       writer: asyncio.StreamWriter) -> bytes | None:
        """Apply faults: the frame to send, b'' for no answer, None to drop the connection."""
        kinds = {f.kind: f for f in faults}
        if "delay" in kinds:
            await asyncio.sleep(float(kinds["delay"].params.get("seconds", 1.0)))
        if "disconnect" in kinds:
            self.stats.dropped += 1
            writer.transport.abort()
            return None
        if "timeout" in kinds:
            self.stats.dropped += 1
            return b""
        if "garbage" in kinds:
            self.stats.dropped += 1
            if kinds["garbage"].params.get("mode", "random") == "mbap":
                return _HEADER.pack(tid, 0, 200, unit) + bytes((pdu[0] if pdu else 3, 0xFF))
            return self._rng.randbytes(self._rng.randint(9, 20))
        if "exception" in kinds:
            code = int(kinds["exception"].params.get("code", EXC_DEVICE_BUSY))
            self.stats.exceptions[code] += 1
            return self._frame(tid, unit, bytes(((pdu[0] if pdu else 0) | 0x80, code)))
        return self._frame(tid, unit, self._answer(unit, pdu))

    @staticmethod
    def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
        return _HEADER.pack(tid, 0, len(pdu) + 1, unit) + pdu

    def _exception(self, fc: int, code: int) -> bytes:
        self.stats.exceptions[code] += 1
        return bytes((fc | 0x80, code))

    def _answer(self, unit: int, pdu: bytes) -> bytes:
        """The response PDU of one request PDU."""
        fc = pdu[0]
        encoder = self._units.get(unit)
        if encoder is None:
            return self._exception(fc, EXC_GATEWAY_TARGET)
        table = READ_TABLES.get(fc)
        if table is not None:
            if len(pdu) != 5:
                return self._exception(fc, EXC_ILLEGAL_VALUE)
            address, count = _ADDR_COUNT.unpack_from(pdu, 1)
            if fc <= 2:
                if not 1 <= count <= MAX_READ_BITS:
                    return self._exception(fc, EXC_ILLEGAL_VALUE)
                data = encoder.image.read_bits(table, address, count)
            else:
                if not 1 <= count <= MAX_READ_REGISTERS:
                    return self._exception(fc, EXC_ILLEGAL_VALUE)
                data = encoder.image.read_registers(table, address, count)
            if data is None:
                return self._exception(fc, EXC_ILLEGAL_ADDRESS)
            self.stats.answered += 1
            return bytes((fc, len(data))) + data
        if fc in (5, 6, 15, 16):
            return self._write(unit, encoder, pdu)
        return self._exception(fc, EXC_ILLEGAL_FUNCTION)

    def _write(self, unit: int, encoder: DeviceEncoder, pdu: bytes) -> bytes:
        """FC 5, 6, 15, 16: only into writable points."""
        fc = pdu[0]
        table = "coil" if fc in (5, 15) else "holding"
        if len(pdu) < 5:
            return self._exception(fc, EXC_ILLEGAL_VALUE)
        address, value = _ADDR_COUNT.unpack_from(pdu, 1)
        if fc == 5:
            if value not in (0x0000, 0xFF00) or len(pdu) != 5:
                return self._exception(fc, EXC_ILLEGAL_VALUE)
            count, payload = 1, bytes((1 if value else 0,))
        elif fc == 6:
            if len(pdu) != 5:
                return self._exception(fc, EXC_ILLEGAL_VALUE)
            count, payload = 1, pdu[3:5]
        else:
            count = value
            nbytes = pdu[5] if len(pdu) > 5 else -1
            limit = MAX_WRITE_BITS if fc == 15 else MAX_WRITE_REGISTERS
            need = (count + 7) // 8 if fc == 15 else 2 * count
            if not 1 <= count <= limit or nbytes != need or len(pdu) != 6 + need:
                return self._exception(fc, EXC_ILLEGAL_VALUE)
            raw = pdu[6:]
            payload = bytes((raw[i >> 3] >> (i & 7)) & 1 for i in range(count)) \
                if fc == 15 else raw
        if not any(t == table for t, _ in encoder.writable):
            return self._exception(fc, EXC_ILLEGAL_FUNCTION)
        found = encoder.image.locate(table, address, count)
        if found is None or any((table, a) not in encoder.writable
                                for a in range(address, address + count)):
            return self._exception(fc, EXC_ILLEGAL_ADDRESS)
        buf, elem = found
        width = 1 if table == "coil" else 2
        buf[width * elem: width * (elem + count)] = payload
        self.stats.writes += 1
        self.stats.answered += 1
        self.written.append((unit, table, address, bytes(payload)))
        return pdu if fc in (5, 6) else pdu[:5]


async def serve_site_modbus(site: Site, snapshot: Snapshot | None = None, *,
                            host: str = "127.0.0.1",
                            free_ports: bool = True) -> dict[str, ModbusSimServer]:
    """Start one server per Modbus gateway of the site (port 0 when free_ports), by gateway id."""
    servers: dict[str, ModbusSimServer] = {}
    try:
        for gateway in site.config.gateways:
            if not isinstance(gateway, ModbusGateway):
                continue
            devices = [d for d in site.devices.values()
                       if d.protocol == "modbus" and d.gateway.id == gateway.id]
            server = ModbusSimServer(gateway, devices, host=host,
                                     port=0 if free_ports else gateway.port)
            if snapshot is not None:
                server.update(snapshot)
            await server.start()
            servers[gateway.id] = server
    except BaseException:
        for server in servers.values():
            with contextlib.suppress(Exception):
                await server.stop()
        raise
    return servers
