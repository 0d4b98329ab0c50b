"""Modbus TCP discovery: which unit ids answer behind a gateway, and what they are.

Read-only by construction: the only requests ever built are function 3 (holding), 4 (input)
and 43/14 (read device identification). A scan is bounded in requests and in time, and
stops early when the gateway has answered nothing at all. The frame building, answer
parsing, SunSpec walk bookkeeping and the draft site fragment are pure; the one I/O edge is
`TcpTransport` (raw MBAP over asyncio streams, so a late answer to a timed-out request is
recognised by its transaction id and dropped instead of being taken for the next one).
A unit matching a library file's `identify:` rules (dcim/library/identify.py) is drafted as
`{library: NAME}`, with an `order:` override when the library's order check says so.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dcim.collectors.modbus_codec import registers_to_raw
from dcim.library import draft_entry
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


# SunSpec meter points worth collecting: name, role, offset from the model's ID register,
# type, scale (the device's unit to the role's), and the scale factor's name and offset (integer
# models 201-204; the float models 211-214 have none).
_INT_METER = (
    ("current_a", "current_a", 2, "int16", 1.0, "a_sf", 6),
    ("voltage_ln_v", "voltage_v", 7, "int16", 1.0, "v_sf", 15),
    ("frequency_hz", "frequency_hz", 16, "int16", 1.0, "hz_sf", 17),
    ("power_kw", "power_kw", 18, "int16", 0.001, "w_sf", 22),
    ("apparent_power_kva", "apparent_power_kva", 23, "int16", 0.001, "va_sf", 27),
    ("reactive_power_kvar", "reactive_power_kvar", 28, "int16", 0.001, "var_sf", 32),
    ("power_factor", "power_factor", 33, "int16", 0.01, "pf_sf", 37),
    ("energy_kwh", "energy_kwh", 46, "acc32", 0.001, "totwh_sf", 54),
)
_FLOAT_METER = (
    ("current_a", "current_a", 2, 1.0), ("voltage_ln_v", "voltage_v", 10, 1.0),
    ("frequency_hz", "frequency_hz", 26, 1.0), ("power_kw", "power_kw", 28, 0.001),
    ("apparent_power_kva", "apparent_power_kva", 36, 0.001),
    ("reactive_power_kvar", "reactive_power_kvar", 44, 0.001),
    ("power_factor", "power_factor", 52, 1.0), ("energy_kwh", "energy_kwh", 68, 0.001),
)


def sunspec_meter_points(model: SunspecModel) -> list[dict[str, Any]]:
    """Profile points of a SunSpec meter model (201-204 integer + sf, 211-214 float)."""
    a = model.address
    points: list[dict[str, Any]] = []
    if 201 <= model.model_id <= 204:
        for name, role, offset, type_, scale, sf_name, sf in _INT_METER:
            points.append({"name": sf_name, "table": "holding", "address": a + sf,
                           "type": "sunssf"})
            point: dict[str, Any] = {"name": name, "role": role, "table": "holding",
                                     "address": a + offset, "type": type_,
                                     "scale_factor_point": sf_name}
            if scale != 1.0:
                point["scale"] = scale
            points.append(point)
    elif 211 <= model.model_id <= 214:
        for name, role, offset, scale in _FLOAT_METER:
            point = {"name": name, "role": role, "table": "holding", "address": a + offset,
                     "type": "float32"}
            if scale != 1.0:
                point["scale"] = scale
            points.append(point)
    return points


def slug(text: str, fallback: str) -> str:
    """An id (letters, digits, . _ -, at most 64) made from free text."""
    out = ID_PATTERN.sub("-", text).strip("-._")[:64].rstrip("-._")
    return out or fallback


@dataclass
class Draft:
    """A site fragment (gateways, profiles, devices) and a comment per profile."""

    data: dict[str, Any]
    notes: dict[str, list[str]]  # profile id -> comment lines
    header: list[str]


def _profile_for(info: UnitInfo) -> tuple[dict[str, Any], list[str], str]:
    """(profile, comment lines, name hint) of a unit."""
    if info.library is not None:
        return draft_entry(info.library, info.orders, info.order_seen)
    meter = next((m for m in info.models if 201 <= m.model_id <= 214), None)
    if info.sunspec_base is not None:
        name = f"{info.common.get('manufacturer', '')} {info.common.get('model', '')}".strip()
        vendor_model = f"{name} (SunSpec models {' '.join(map(str, info.model_ids))})"
    elif info.identity:
        name = f"{info.identity.get('vendor', '')} {info.identity.get('product_code', '')}"
        vendor_model = " ".join(filter(None, (name.strip(), info.identity.get("revision"))))
    else:
        name, vendor_model = "unknown", "unknown device"
    points = sunspec_meter_points(meter) if meter else []
    notes = []
    if meter is None:
        notes = ["TODO: fill in points from the device's register map; the point below only",
                 "makes the draft load. device_type 'meter' is a guess: set the real one."]
        table = "input" if info.answers.get("input 0") == "ok" \
            and info.answers.get("holding 0") != "ok" else "holding"
        points = [{"name": f"todo_{table}_0", "table": table, "address": 0, "type": "uint16"}]
    else:
        notes = [f"points of SunSpec meter model {meter.model_id} at {meter.address}: check the "
                 "roles (import vs export energy) before use"]
    profile = {"protocol": "modbus", "device_type": "meter", "vendor_model": vendor_model,
               "points": points}
    return profile, notes, name.strip() or "unknown"


def build_draft(result: ScanResult, *, gateway_id: str = "gw1", monitors: str | None = None,
                timeout_s: float = 1.0) -> Draft:
    """Gateway + one profile per distinct device kind + one device per unit found."""
    gateway = {"id": gateway_id, "protocol": "modbus_tcp", "host": result.host,
               "port": result.port, "timeout_s": timeout_s}
    profiles: dict[str, dict[str, Any]] = {}
    notes: dict[str, list[str]] = {}
    by_kind: dict[tuple[str, ...], str] = {}
    devices = []
    for info in result.units:
        key = info.kind()
        if key not in by_kind:
            profile, lines, hint = _profile_for(info)
            pid = base = slug(hint, "unknown").lower()
            n = 2
            while pid in profiles:
                pid, n = f"{base[:60]}-{n}", n + 1
            by_kind[key] = pid
            profiles[pid] = profile
            notes[pid] = [info.describe(), *lines]
        device: dict[str, Any] = {"id": f"{gateway_id}-u{info.unit_id}",
                                  "profile": by_kind[key], "gateway": gateway_id,
                                  "unit_id": info.unit_id}
        if monitors is not None:  # omitted: the device measures the site as a whole
            device["monitors"] = monitors
        devices.append(device)
    header = [f"Draft from: dcim discover modbus {result.host}:{result.port}",
              f"{len(result.units)} unit(s) found with {result.requests} requests in "
              f"{result.elapsed_s:.1f} s" + (f"; stopped: {result.stopped}" if result.stopped
                                              else ""),
              "Paste into a site file; give each device a better id and, if it measures a",
              "component or rack of the plant, monitors: (omitted, it measures the site)."]
    return Draft({"gateways": [gateway], "profiles": profiles, "devices": devices}, notes, header)


def render_draft(draft: Draft) -> str:
    """The draft as YAML with its comments (one comment block before each profile)."""
    import yaml

    def dump(value: Any) -> str:
        return yaml.safe_dump(value, sort_keys=False, default_flow_style=False)

    out = [f"# {line}" for line in draft.header]
    out.append(dump({"gateways": draft.data["gateways"]}).rstrip())
    out.append("profiles:")
    for pid, profile in draft.data["profiles"].items():
        out += [f"  # {line}" for line in draft.notes.get(pid, [])]
        out.append("\n".join(f"  {line}" for line in dump({pid: profile}).splitlines()))
    if draft.data["devices"]:
        out.append(dump({"devices": draft.data["devices"]}).rstrip())
    else:
        out.append("devices: []")
    return "\n".join(out) + "\n"
