"""Modbus TCP discovery: which unit ids answer behind a gateway, and what they are.

Read-only by construction: the only requests ever built are function 3 (holding), 4 (input)
and 43/14 (read device identification). A scan is bounded in requests and in time, and
stops early when the gateway has answered nothing at all. The frame building, answer
parsing and SunSpec walk bookkeeping are pure (the draft site fragment is built from a
`ScanResult` in discover_modbus_draft.py); the one I/O edge is
`TcpTransport` (raw MBAP over asyncio streams, so a late answer to a timed-out request is
recognised by its transaction id and dropped instead of being taken for the next one).
A unit matching a library file's `identify:` rules (dcim/library/identify.py) is recognised
here; the draft names it as `{library: NAME}`, with an `order:` override when the library's
order check says so.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dcim.collectors.modbus_codec import registers_to_raw
from dcim.library import identifiers as library_identifiers
from dcim.library.identify import ORDERS, Identify, OrderCheck, Recognised, recognise

FC_READ_HOLDING = 3
FC_READ_INPUT = 4
FC_MEI = 0x2B
MEI_DEVICE_ID = 0x0E
READ_FUNCTIONS = (FC_READ_HOLDING, FC_READ_INPUT, FC_MEI)  # everything discovery may send
MAX_READ_REGISTERS = 125
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_BASES = (40000, 0, 50000)  # the usual base first
SUNSPEC_END = 0xFFFF
SUNSPEC_COMMON = 1
MAX_MODELS = 64  # a chain longer than this is broken, not a device
MAX_ID_ROUNDS = 4  # 43/14 "more follows" rounds per unit
# exceptions by which a gateway says "no such unit behind me"
ABSENT_EXCEPTIONS = frozenset({0x0A, 0x0B})
DEVICE_FAILURE = 4  # absent too when it is all a unit ever answers
DEVICE_ID_OBJECTS = {0: "vendor", 1: "product_code", 2: "revision", 3: "vendor_url",
                     4: "product_name", 5: "model_name", 6: "user_application_name"}
ID_PATTERN = re.compile(r"[^A-Za-z0-9_.\-]+")
_MBAP = struct.Struct(">HHHB")


class BudgetExhausted(Exception):
    """The scan used its requests or its time."""


# ---------------------------------------------------------------- pure: frames and answers


def parse_units(text: str) -> list[int]:
    """'1-10,20' -> [1..10, 20]; ValueError names a unit id outside 1-247."""
    units: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if not 1 <= first <= last <= 247:
            raise ValueError(f"unit range {part!r}: expected ids 1-247, low to high")
        units.update(range(first, last + 1))
    if not units:
        raise ValueError(f"no unit ids in {text!r}")
    return sorted(units)


def read_pdu(function: int, address: int, count: int) -> bytes:
    """A read request PDU (function 3 or 4 only)."""
    if function not in (FC_READ_HOLDING, FC_READ_INPUT):
        raise ValueError(f"discovery reads with function 3 or 4, not {function}")
    if not 1 <= count <= MAX_READ_REGISTERS or not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"read of {count} registers at {address} is outside the protocol")
    return struct.pack(">BHH", function, address, count)


def device_id_pdu(object_id: int = 0, code: int = 1) -> bytes:
    """A 43/14 read device identification request (code 1: basic stream from object_id)."""
    return bytes((FC_MEI, MEI_DEVICE_ID, code, object_id))


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    """The MBAP frame of a PDU."""
    return _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu


def exception_code(pdu: bytes) -> int | None:
    """The exception code of an answer, or None when it is a normal answer."""
    if len(pdu) >= 2 and pdu[0] & 0x80:
        return pdu[1]
    return None


def parse_registers(pdu: bytes, count: int) -> list[int]:
    """Registers of a normal read answer; ValueError when it is malformed."""
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise ValueError(f"malformed read answer ({len(pdu)} bytes for {count} registers)")
    return list(struct.unpack(f">{count}H", pdu[2:]))


@dataclass(frozen=True, slots=True)
class DeviceIdPage:
    """One 43/14 answer: objects, and where to continue if more follow."""

    objects: dict[int, str]
    more: bool
    next_object: int


def parse_device_id(pdu: bytes) -> DeviceIdPage:
    """Parse a 43/14 answer (ValueError when malformed)."""
    if len(pdu) < 7 or pdu[0] != FC_MEI or pdu[1] != MEI_DEVICE_ID:
        raise ValueError("not a read device identification answer")
    more, next_object, count = pdu[4] == 0xFF, pdu[5], pdu[6]
    objects: dict[int, str] = {}
    pos = 7
    for _ in range(count):
        if pos + 2 > len(pdu):
            raise ValueError("device identification answer cut short")
        obj, length = pdu[pos], pdu[pos + 1]
        raw = pdu[pos + 2: pos + 2 + length]
        if len(raw) != length:
            raise ValueError("device identification object cut short")
        objects[obj] = raw.decode("ascii", "replace").strip("\x00 ").strip()
        pos += 2 + length
    return DeviceIdPage(objects, more, next_object)


def registers_text(registers: list[int]) -> str:
    """A SunSpec string: two ASCII characters per register, NUL padded."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers)
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def parse_common_model(body: list[int]) -> dict[str, str]:
    """Manufacturer, model, options, version and serial of a SunSpec common model (1) body."""
    fields = {"manufacturer": (0, 16), "model": (16, 16), "options": (32, 8),
              "version": (40, 8), "serial": (48, 16)}
    return {name: registers_text(body[start:start + size])
            for name, (start, size) in fields.items() if len(body) >= start + size}


# ---------------------------------------------------------------- what a unit is


@dataclass(frozen=True, slots=True)
class SunspecModel:
    """One model of a SunSpec chain: its id, the address of its ID register and its length."""

    model_id: int
    address: int
    length: int


@dataclass
class UnitInfo:
    """What one unit id told us."""

    unit_id: int
    identity: dict[str, str] = field(default_factory=dict)  # 43/14 objects by name
    sunspec_base: int | None = None
    models: list[SunspecModel] = field(default_factory=list)
    common: dict[str, str] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)  # probe -> "ok" | "exception N"
    library: Recognised | None = None  # the library profile it matched, and why
    # byte orders in which the library's order check read a plausible value (None: not read)
    orders: list[str] | None = None
    order_seen: str = ""  # what the order check read, for the draft's comment

    @property
    def model_ids(self) -> list[int]:
        """The SunSpec model ids in chain order."""
        return [m.model_id for m in self.models]

    def kind(self) -> tuple[str, ...]:
        """The key that groups identical devices into one profile."""
        if self.library is not None:
            return ("library", self.library.name, *(self.orders or ()))
        if self.sunspec_base is not None:
            return ("sunspec", self.common.get("manufacturer", ""), self.common.get("model", ""),
                    str(self.sunspec_base), *map(str, self.model_ids))
        if self.identity:
            return ("identity", self.identity.get("vendor", ""),
                    self.identity.get("product_code", ""))
        return ("unknown", *sorted(f"{k}={v}" for k, v in self.answers.items()))

    def describe(self) -> str:
        """One line for the console."""
        parts = [f"unit {self.unit_id}"]
        if self.identity:
            parts.append("id: " + ", ".join(f"{k}={v}" for k, v in self.identity.items()))
        if self.sunspec_base is not None:
            parts.append(f"SunSpec at {self.sunspec_base}: {self.common.get('manufacturer', '?')}"
                         f" {self.common.get('model', '?')}, models "
                         + " ".join(map(str, self.model_ids)))
        if self.library is not None:
            parts.append(f"library profile {self.library.name}")
        if len(parts) == 1:
            parts.append("unknown device (answers: "
                         + ", ".join(f"{k} {v}" for k, v in self.answers.items()) + ")")
        return "; ".join(parts)


@dataclass
class ScanResult:
    """A whole scan: the units found and how it ended."""

    host: str
    port: int
    units: list[UnitInfo]
    requests: int
    elapsed_s: float
    stopped: str | None = None  # why the scan ended before the last unit, if it did


# ---------------------------------------------------------------- I/O edge


class Transport(Protocol):
    """Sends one request PDU to a unit; the answer PDU, or None when none came in time."""

    async def request(self, unit: int, pdu: bytes) -> bytes | None:
        """One request, one answer (or None)."""
        ...


class TcpTransport:
    """Raw Modbus TCP: one connection, one request in flight, answers matched by id."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tid = 0

    async def connect(self) -> None:
        """Open the TCP connection (OSError when refused or unreachable)."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout_s)

    async def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
            self._writer = self._reader = None

    async def request(self, unit: int, pdu: bytes) -> bytes | None:
        """Send and wait for the answer with this transaction id (None on timeout)."""
        if pdu[0] not in READ_FUNCTIONS:  # the guard that keeps discovery read-only
            raise ValueError(f"function {pdu[0]} is not a read")
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._tid = (self._tid + 1) & 0xFFFF
        tid = self._tid
        self._writer.write(frame(tid, unit, pdu))
        await self._writer.drain()
        try:
            return await asyncio.wait_for(self._answer(tid), self.timeout_s)
        except TimeoutError:
            return None
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()  # reconnect on the next request
            return None

    async def _answer(self, tid: int) -> bytes:
        assert self._reader is not None
        while True:
            header = await self._reader.readexactly(_MBAP.size)
            got_tid, _, length, _ = _MBAP.unpack(header)
            body = await self._reader.readexactly(length - 1)
            if got_tid == tid:
                return body  # earlier ids are late answers to timed-out requests


# ---------------------------------------------------------------- the scan


class _Budgeted:
    """A transport that counts requests and refuses past the budget or the deadline."""

    def __init__(self, inner: Transport, max_requests: int, deadline: float,
                 clock: Callable[[], float]) -> None:
        self.inner, self.max_requests, self.deadline, self.clock = (
            inner, max_requests, deadline, clock)
        self.sent = 0
        self.answered = 0

    async def request(self, unit: int, pdu: bytes) -> bytes | None:
        if self.sent >= self.max_requests:
            raise BudgetExhausted(f"request budget ({self.max_requests}) used")
        if self.clock() >= self.deadline:
            raise BudgetExhausted("time budget used")
        self.sent += 1
        answer = await self.inner.request(unit, pdu)
        if answer is not None:
            self.answered += 1
        return answer


async def _read(t: _Budgeted, unit: int, function: int, address: int, count: int
                ) -> list[int] | int | None:
    """Registers, an exception code, or None (no answer / malformed)."""
    answer = await t.request(unit, read_pdu(function, address, count))
    if answer is None:
        return None
    code = exception_code(answer)
    if code is not None:
        return code
    try:
        return parse_registers(answer, count)
    except ValueError:
        return None


async def _identity(t: _Budgeted, unit: int, info: UnitInfo) -> None:
    object_id = 0
    for _ in range(MAX_ID_ROUNDS):
        answer = await t.request(unit, device_id_pdu(object_id))
        if answer is None or exception_code(answer) is not None:
            info.answers["43/14"] = "none" if answer is None else f"exception {answer[1]}"
            return
        try:
            page = parse_device_id(answer)
        except ValueError:
            info.answers["43/14"] = "malformed"
            return
        info.answers["43/14"] = "ok"
        for obj, text in page.objects.items():
            info.identity[DEVICE_ID_OBJECTS.get(obj, f"object_{obj:#04x}")] = text
        if not page.more or page.next_object <= object_id:
            return
        object_id = page.next_object


async def _sunspec(t: _Budgeted, unit: int, info: UnitInfo, first: list[int] | int | None
                   ) -> None:
    """Find 'SunS' at a base register and walk the model chain to 0xFFFF."""
    for base in SUNSPEC_BASES:
        marker = first if base == SUNSPEC_BASES[0] else await _read(
            t, unit, FC_READ_HOLDING, base, 2)
        if marker == list(SUNS_MARKER):
            info.sunspec_base = base
            break
    else:
        return
    address = base + 2
    for _ in range(MAX_MODELS):
        if address > 0xFFFF - 1:
            return
        header = await _read(t, unit, FC_READ_HOLDING, address, 2)
        if not isinstance(header, list) or header[0] == SUNSPEC_END:
            return
        model_id, length = header
        info.models.append(SunspecModel(model_id, address, length))
        if model_id == SUNSPEC_COMMON and 0 < length <= MAX_READ_REGISTERS:
            body = await _read(t, unit, FC_READ_HOLDING, address + 2, length)
            if isinstance(body, list):
                info.common = parse_common_model(body)
        address += 2 + length


async def _plain_reads(t: _Budgeted, unit: int, info: UnitInfo) -> None:
    for function, name in ((FC_READ_HOLDING, "holding 0"), (FC_READ_INPUT, "input 0")):
        if name not in info.answers:
            got = await _read(t, unit, function, 0, 1)
            info.answers[name] = "ok" if isinstance(got, list) else (
                "none" if got is None else f"exception {got}")


async def _order_check(t: _Budgeted, unit: int, info: UnitInfo, check: OrderCheck) -> None:
    """Read the library's order-check register; keep the byte orders that give a plausible
    value (a NaN or an out-of-range number rules an order out)."""
    got = await _read(t, unit, FC_READ_HOLDING, check.address, 2)
    if not isinstance(got, list):
        info.order_seen = f"register {check.address}: " + (
            "no answer" if got is None else f"exception {got}")
        info.orders = []
        return
    values = {order: registers_to_raw(got, check.type, order) for order in ORDERS}
    info.orders = [o for o, v in values.items() if check.min <= v <= check.max]
    info.order_seen = f"register {check.address} ({check.type}) reads " + ", ".join(
        f"{v:.6g} as {o}" for o, v in values.items())


async def probe_unit(t: _Budgeted, unit: int,
                     identifiers: Sequence[tuple[str, Identify]] = ()) -> UnitInfo | None:
    """What the unit is, or None when the gateway says it is absent (or nothing answers);
    a unit that matches a library entry's identify rules is marked with it."""
    first = await _read(t, unit, FC_READ_HOLDING, SUNSPEC_BASES[0], 2)
    if first is None or (isinstance(first, int) and first in ABSENT_EXCEPTIONS):
        return None
    info = UnitInfo(unit)
    info.answers[f"holding {SUNSPEC_BASES[0]}"] = "ok" if isinstance(first, list) \
        else f"exception {first}"
    if first == DEVICE_FAILURE:
        # pymodbus (and some gateways) answer 4 for a unit that is not there, and answer
        # 43/14 for any unit: only a register that reads proves the unit is present
        await _plain_reads(t, unit, info)
        if "ok" not in info.answers.values():
            return None
    await _identity(t, unit, info)
    await _sunspec(t, unit, info, first)
    info.library = recognise(info.identity, info.common,
                             [(m.model_id, m.address, m.length) for m in info.models], identifiers)
    if info.library is not None and info.library.order_check is not None:
        await _order_check(t, unit, info, info.library.order_check)
    if info.sunspec_base is None and not info.identity:
        await _plain_reads(t, unit, info)
    return info


async def scan(transport: Transport, units: list[int], *, host: str = "", port: int = 0,
               max_requests: int = 2000, budget_s: float = 60.0, silent_limit: int = 3,
               clock: Callable[[], float] = time.monotonic,
               identifiers: Sequence[tuple[str, Identify]] | None = None) -> ScanResult:
    """Probe the units in order within the budgets; stop when the first silent_limit units
    have all gone unanswered (a gateway that answers nothing is not worth 247 timeouts).
    Units are matched against `identifiers` (default: the device library's)."""
    if identifiers is None:
        identifiers = library_identifiers()
    start = clock()
    t = _Budgeted(transport, max_requests, start + budget_s, clock)
    found: list[UnitInfo] = []
    stopped = None
    for n, unit in enumerate(units, 1):
        try:
            info = await probe_unit(t, unit, identifiers)
        except BudgetExhausted as exc:
            stopped = f"{exc} before unit {unit}"
            break
        if info is not None:
            found.append(info)
        if t.answered == 0 and n >= silent_limit and n < len(units):
            stopped = f"no answer at all from the first {n} units: is this a Modbus gateway?"
            break
    return ScanResult(host, port, found, t.sent, clock() - start, stopped)


# ---------------------------------------------------------------- the draft

