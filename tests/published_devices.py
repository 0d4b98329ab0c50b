"""Modbus devices laid out from published register maps, and a small server for them.

The registers are written from the documents (/work/shared/reference/domain.md,
sunspec-model-offsets.txt and the SunSpec Alliance's model_103.json), never from dcim's profiles, so a test that polls them with a
profile checks the profile against the document. The server answers functions 3 and 4 from the
map, exception 2 for any read touching an unmapped register (as PM5xxx meters do), 43/14
device identification when the device has objects, and logs every request it answered.
Used by tests/test_library_devices.py and tests/test_discover_interop_modbus.py.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

SUNSPEC_MODEL = 40070  # 'SunS' at 40000, model 1 at 40002 (ID, L, 66 registers)
WordOrder = Literal["ABCD", "CDAB"]


class Request(NamedTuple):
    """One request the server answered: unit, function, address, registers and exception."""

    unit: int
    function: int
    address: int
    registers: int
    exception: int | None


@dataclass
class Device:
    """Holding registers of one device as the document lays them out, the values a poll must
    give (None: the device says 'not available'), the raw numbers served, its 43/14 objects,
    and the log of requests it answered."""

    holding: dict[int, int] = field(default_factory=dict)
    expected: dict[str, float | None] = field(default_factory=dict)
    served: dict[str, int | float] = field(default_factory=dict)
    identity: dict[int, str] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    input: dict[int, int] = field(default_factory=dict)  # function 4, when the document maps it

    def words(self, address: int, data: bytes, order: WordOrder = "ABCD") -> None:
        """Big-endian bytes as registers from address; CDAB: the registers low word first."""
        regs = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
        for i, reg in enumerate(regs[::-1] if order == "CDAB" else regs):
            self.holding[address + i] = reg

    def put(self, name: str | None, address: int, fmt: str, raw: float,
            expected: float | None = None, order: WordOrder = "ABCD") -> None:
        """raw packed at address in the word order; expected in the profile's unit."""
        packed = struct.pack(">" + fmt, raw)
        self.words(address, packed, order)
        if name is not None:
            self.expected[name] = expected
            self.served[name] = struct.unpack(">" + fmt, packed)[0]

    def put_input(self, name: str | None, address: int, fmt: str, raw: float,
                  expected: float | None = None) -> None:
        """A one-register value (fmt 'h' or 'H') in the input table (function 4)."""
        packed = struct.pack(">" + fmt, raw)
        self.input[address] = int.from_bytes(packed, "big")
        if name is not None:
            self.expected[name] = expected
            self.served[name] = struct.unpack(">" + fmt, packed)[0]


def float32(value: float) -> float:
    """The float32 nearest value, as the float a device sends."""
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result


# ---------------------------------------------------------------- devices from the documents


def pm5560(order: WordOrder = "ABCD") -> Device:
    """domain.md, Schneider PM5xxx: float32, 0-based (manual number - 1); int64 Wh. Served in
    the given word order (a meter or gateway set word-swapped serves CDAB, low word first).
    43/14 objects as Schneider meter manuals list them: VendorName, ProductCode (the
    commercial reference), MajorMinorRevision."""
    d = Device(identity={0: "Schneider Electric", 1: "METSEPM5560", 2: "2.7.4"})
    for name, address, value in [
        ("current_a_a", 2999, 101.5), ("current_b_a", 3001, 99.3), ("current_c_a", 3003, 100.0),
        ("current_avg_a", 3009, 100.26667),
        ("voltage_ab_v", 3019, 400.5), ("voltage_bc_v", 3021, 399.7), ("voltage_ca_v", 3023, 401.1),
        ("voltage_ll_avg_v", 3025, 400.43333),
        ("voltage_an_v", 3027, 231.2), ("voltage_bn_v", 3029, 230.5), ("voltage_cn_v", 3031, 229.9),
        ("voltage_ln_avg_v", 3035, 230.53333),
        ("power_a_kw", 3053, 22.51), ("power_b_kw", 3055, 21.75), ("power_c_kw", 3057, 23.03),
        ("power_kw", 3059, 67.29), ("reactive_power_kvar", 3067, -12.47),
        ("apparent_power_kva", 3075, 70.61), ("power_factor_raw", 3083, 0.953),
        ("frequency_hz", 3109, 50.01),
    ]:
        d.put(name, address, "f", value, float32(value), order)
    d.put("energy_kwh", 3203, "q", 123_456_789_012, 123_456_789_012 / 1000, order)  # Wh -> kWh
    d.put("energy_received_kwh", 3207, "q", 5_000_000_001, 5_000_000_001 / 1000, order)
    return d


def apc_smart_ups() -> Device:
    """domain.md, APC Smart-UPS: value = raw / 2^n; two-register values high word first."""
    d = Device()
    d.put("transfer_cause", 2, "H", 8, 8)
    d.put("battery_runtime_s", 128, "I", 70_000, 70_000)  # > 65535: the word order shows
    d.put("battery_charge_pct", 130, "H", 47_360, 92.5)  # / 2^9
    d.put("battery_voltage_v", 131, "H", 1_744, 54.5)  # / 2^5
    d.put("battery_temp_c", 135, "h", -640, -5.0)  # / 2^7, signed
    d.put("load_pct", 136, "H", 11_520, 45.0)  # / 2^8
    d.put("output_current_a", 140, "H", 520, 16.25)  # / 2^5
    d.put("output_voltage_v", 142, "H", 14_720, 230.0)  # / 2^6
    d.put("output_frequency_hz", 144, "H", 6_400, 50.0)  # / 2^7
    d.put("output_energy_kwh", 145, "I", 1_234_567, 1_234.567)  # Wh
    d.put("input_voltage_v", 151, "H", 0xFFFF, None)  # 0xFFFF = not available
    d.put("efficiency_pct", 154, "h", 12_160, 95.0)  # / 2^7
    return d


def _sunspec_chain(d: Device, model_id: int, length: int, fill: int) -> None:
    """'SunS', a common model (model 1: Mn, Md, Opt, Vr, SN, DA, pad), the meter model
    filled with `fill`, the end marker."""
    d.words(40000, b"SunS")
    d.holding.update({40002: 1, 40003: 66, **{40004 + i: 0 for i in range(66)}})
    d.words(40004, b"Acme Metering".ljust(32, b"\0"))  # Mn, offset 2, 16 registers
    d.words(40020, f"AM-{model_id}".encode().ljust(32, b"\0"))  # Md, offset 18
    d.holding.update({SUNSPEC_MODEL: model_id, SUNSPEC_MODEL + 1: length})
    d.holding.update({SUNSPEC_MODEL + 2 + i: fill for i in range(length)})
    d.holding.update({SUNSPEC_MODEL + 2 + length: 0xFFFF, SUNSPEC_MODEL + 3 + length: 0})


def sunspec_203() -> Device:
    """sunspec-model-offsets.txt, model 203: int16 x 10^SF, acc32 Wh; offsets from the ID."""
    d = Device()
    _sunspec_chain(d, 203, 105, 0x8000)  # every register 'not implemented' until written
    for i in range(38, 104):
        d.holding[SUNSPEC_MODEL + i] = 0  # acc32 'not implemented' is 0

    def at(offset: int) -> int:
        return SUNSPEC_MODEL + offset

    d.put(None, at(6), "h", -2)  # A_SF
    for name, offset, raw in [("current_a", 2, 30_075), ("current_a_a", 3, 10_050),
                              ("current_b_a", 4, 9_975), ("current_c_a", 5, 10_050)]:
        d.put(name, at(offset), "h", raw, raw / 100)
    d.put(None, at(15), "h", -1)  # V_SF
    for name, offset, raw in [("voltage_ln_v", 7, 2_305), ("voltage_an_v", 8, 2_310),
                              ("voltage_bn_v", 9, 2_300), ("voltage_cn_v", 10, 2_305),
                              ("voltage_ll_v", 11, 3_992), ("voltage_ab_v", 12, 3_995),
                              ("voltage_bc_v", 13, 3_990), ("voltage_ca_v", 14, 3_991)]:
        d.put(name, at(offset), "h", raw, raw / 10)
    d.put(None, at(17), "h", -2)  # Hz_SF
    d.put("frequency_hz", at(16), "h", 4_998, 49.98)
    d.put(None, at(22), "h", 1)  # W_SF: tens of watts
    for name, offset, raw in [("power_kw", 18, 6_725), ("power_a_kw", 19, 2_250),
                              ("power_b_kw", 20, 2_175), ("power_c_kw", 21, -2_300)]:
        d.put(name, at(offset), "h", raw, raw * 10 / 1000)  # W -> kW
    d.put(None, at(27), "h", 1)  # VA_SF
    d.put("apparent_power_kva", at(23), "h", 7_050, 70.5)
    d.put(None, at(32), "h", 0)  # VAR_SF
    d.put("reactive_power_kvar", at(28), "h", -12_500, -12.5)
    d.put(None, at(37), "h", -1)  # PF_SF
    d.put("power_factor", at(33), "h", 953, 0.953)  # percent x 10^-1 -> ratio
    d.put(None, at(54), "h", 2)  # TotWh_SF
    d.put("energy_exported_kwh", at(38), "I", 12_345, 1_234.5)  # Wh x 10^2 -> kWh
    d.put("energy_kwh", at(46), "I", 4_000_000_000, 400_000_000.0)  # near the acc32 top
    return d


def sunspec_213() -> Device:
    """sunspec-model-offsets.txt, model 213: float32 ABCD, NaN = not implemented."""
    d = Device()
    nan = struct.unpack(">HH", struct.pack(">f", math.nan))
    _sunspec_chain(d, 213, 124, 0)
    for i in range(2, 126, 2):
        d.holding[SUNSPEC_MODEL + i], d.holding[SUNSPEC_MODEL + i + 1] = nan
    for name, offset, value, expected in [
        ("current_a", 2, 300.75, 300.75), ("current_a_a", 4, 100.5, 100.5),
        ("current_b_a", 6, 99.75, 99.75), ("current_c_a", 8, 100.5, 100.5),
        ("voltage_ln_v", 10, 230.5, 230.5), ("voltage_an_v", 12, 231.0, 231.0),
        ("voltage_bn_v", 14, 230.0, 230.0), ("voltage_cn_v", 16, 230.5, 230.5),
        ("voltage_ll_v", 18, 399.25, 399.25), ("voltage_ab_v", 20, 399.5, 399.5),
        ("voltage_bc_v", 22, 399.0, 399.0), ("voltage_ca_v", 24, 399.25, 399.25),
        ("frequency_hz", 26, 49.984375, 49.984375),
        ("power_kw", 28, 67_250.0, 67.25), ("power_a_kw", 30, 22_500.0, 22.5),
        ("power_b_kw", 32, 21_750.0, 21.75), ("power_c_kw", 34, 23_000.0, 23.0),
        ("apparent_power_kva", 36, 70_500.0, 70.5), ("reactive_power_kvar", 44, -12_500.0, -12.5),
        ("power_factor", 52, 0.953125, 0.953125),
        ("energy_exported_kwh", 60, 1_234_500.0, 1_234.5),
        ("energy_kwh", 68, 98_765_432.0, 98_765.432),
    ]:
        d.put(name, SUNSPEC_MODEL + offset, "f", value, expected)
    return d


def sunspec_103() -> Device:
    """SunSpec inverter model 103 (sunspec/models json/model_103.json; offsets are the sum
    of the sizes before each point, L = 50): uint16/int16 x 10^SF, acc32 Wh."""
    d = Device()
    _sunspec_chain(d, 103, 50, 0x8000)

    def at(offset: int) -> int:
        return SUNSPEC_MODEL + offset

    d.put(None, at(6), "h", -1)  # A_SF
    for name, offset, raw in [("current_a", 2, 1_203), ("current_a_a", 3, 401),
                              ("current_b_a", 4, 400), ("current_c_a", 5, 402)]:
        d.put(name, at(offset), "H", raw, raw / 10)  # A, AphA-C
    d.put(None, at(13), "h", -1)  # V_SF
    for name, offset, raw in [("voltage_ab_v", 7, 4_002), ("voltage_bc_v", 8, 3_998),
                              ("voltage_ca_v", 9, 4_001), ("voltage_an_v", 10, 2_311),
                              ("voltage_bn_v", 11, 2_309), ("voltage_cn_v", 12, 2_310)]:
        d.put(name, at(offset), "H", raw, raw / 10)  # PPVphAB-CA, PhVphA-C
    d.put(None, at(15), "h", 1)  # W_SF: tens of watts
    d.put("ac_power_kw", at(14), "h", 2_750, 27.5)  # W
    d.put(None, at(17), "h", -2)  # Hz_SF
    d.put("frequency_hz", at(16), "H", 5_002, 50.02)  # Hz
    d.put(None, at(19), "h", 1)  # VA_SF
    d.put("apparent_power_kva", at(18), "h", 2_800, 28.0)  # VA
    d.put(None, at(21), "h", 0)  # VAr_SF
    d.put("reactive_power_kvar", at(20), "h", -1_500, -1.5)  # VAr
    d.put(None, at(23), "h", -1)  # PF_SF
    d.put("power_factor_pct", at(22), "h", 982, 98.2)  # PF, percent
    d.put(None, at(26), "h", 0)  # WH_SF
    d.put("ac_energy_kwh", at(24), "I", 3_456_789_012, 3_456_789.012)  # WH, acc32
    d.put(None, at(28), "h", -2)  # DCA_SF
    d.put("dc_current_a", at(27), "H", 4_025, 40.25)  # DCA
    d.put(None, at(30), "h", -1)  # DCV_SF
    d.put("dc_voltage_v", at(29), "H", 7_125, 712.5)  # DCV
    d.put(None, at(32), "h", 1)  # DCW_SF
    d.put("dc_power_kw", at(31), "h", 2_860, 28.6)  # DCW
    d.put(None, at(37), "h", -1)  # Tmp_SF
    for name, offset, raw in [("cabinet_temp_c", 33, 412), ("heat_sink_temp_c", 34, 553),
                              ("transformer_temp_c", 35, -51), ("other_temp_c", 36, 250)]:
        d.put(name, at(offset), "h", raw, raw / 10)  # TmpCab, TmpSnk, TmpTrns, TmpOt
    d.put("operating_state", at(38), "H", 4, 4)  # St: 4 = MPPT
    d.put("vendor_state", at(39), "H", 17, 17)  # StVnd
    d.put("events", at(40), "I", 0x0000_8081, 0x8081)  # Evt1: bits 0, 7, 15
    return d


def raritan_px() -> Device:
    """Raritan PX2/PX3 Modbus Interface 3.6.1 as tabled at star.ke.st (0-based, from the
    document's hex addresses): basic parameters at 0-3, inlet 1 sensors float32 big-endian
    (RMS voltage 12296, RMS current 12298, active power 12306 W, apparent power 12308 VA,
    power factor 12310, line frequency 12322); nothing else in 12296-12323 is listed."""
    d = Device()
    d.put("register_set_version", 0, "H", 1, 1)
    d.put("inlet_count", 1, "H", 1, 1)
    d.put("overcurrent_protector_count", 2, "H", 2, 2)
    d.put("outlet_count", 3, "H", 24, 24)
    d.put("inlet_voltage_v", 12296, "f", 229.7, float32(229.7))
    d.put("inlet_current_a", 12298, "f", 13.42, float32(13.42))
    d.put("it_power_kw", 12306, "f", 2_951.5, float32(2_951.5) / 1000)  # W
    d.put("inlet_apparent_power_kva", 12308, "f", 3_082.6, float32(3_082.6) / 1000)  # VA
    d.put("inlet_power_factor", 12310, "f", 0.9575, float32(0.9575))
    d.put("inlet_frequency_hz", 12322, "f", 50.02, float32(50.02))
    return d


def liebert_hpc() -> Device:
    """Liebert IntelliSlot Modbus 'Thermal Management Products', Table 15 Liebert HPC
    (Chiller), iCOM v4: input registers numbered 3xxxx (input address = number - 30001),
    one register each, Int16 temperatures x 10 in deg C with the deg F twin at the next
    number, Uint16 percent and states. Every register the table lists in 30469-30511 is
    laid out; the numbers it does not list are holes (exception 2)."""
    d = Device()

    def at(number: int) -> int:
        return number - 30001

    def temp(name: str | None, number: int, deg_c_x10: int) -> None:
        d.put_input(name, at(number), "h", deg_c_x10, deg_c_x10 / 10)
        d.put_input(None, at(number + 1), "h", round((deg_c_x10 * 9 / 5) + 320))  # deg F x 10

    temp("evaporator_return_temp_c", 30469, 153)
    d.put_input(None, at(30474), "h", -5)  # Supply Brine Temp Set Point, deg C, no scale
    d.put_input(None, at(30475), "h", 23)  # ... deg F
    d.put_input(None, at(30479), "H", 1)  # Standby Units
    d.put_input("system_status", at(30483), "H", 8, 8)  # 8 = Normal with Warning
    d.put_input("operating_state", at(30484), "H", 1, 1)  # 1 = on
    d.put_input(None, at(30485), "H", 0)  # System Control Mode: internal
    d.put_input(None, at(30486), "H", 6)  # Operating State Reason: local display
    d.put_input(None, at(30487), "H", 1)  # System On/Off Control: on
    temp("chw_return_temp_c", 30491, 168)
    temp("chw_supply_temp_c", 30493, 102)
    temp("chw_supply_setpoint_c", 30495, 100)
    temp("condenser_inlet_temp_c", 30497, 295)
    temp("condenser_outlet_temp_c", 30499, 351)
    d.put_input(None, at(30501), "h", 45)  # Supply Heated Water Temp Set Point, deg C
    d.put_input(None, at(30502), "h", 113)  # ... deg F
    d.put_input("free_cooling_pct", at(30503), "H", 35, 35)
    d.put_input(None, at(30504), "H", 0)  # Reheat Utilization
    d.put_input("compressor_pct", at(30505), "H", 62, 62)
    temp("ambient_temp_c", 30506, -42)  # below zero: the Int16 sign shows
    d.put_input(None, at(30508), "H", 0)  # Compressor Economizer Utilization
    d.put_input(None, at(30509), "H", 0)  # Condenser Adiabatic Cooling Utilization
    d.put_input("pump_1_on", at(30510), "H", 1, 1)
    d.put_input("pump_2_on", at(30511), "H", 0, 0)
    return d


DEVICES = {"schneider-pm5560": pm5560, "apc-smart-ups": apc_smart_ups,
           "sunspec-meter-203": sunspec_203, "sunspec-meter-213": sunspec_213,
           "sunspec-inverter-103": sunspec_103, "raritan-px-pdu": raritan_px,
           "liebert-hpc-icom": liebert_hpc}


# ---------------------------------------------------------------- a device server


def _device_id_answer(identity: dict[int, str]) -> bytes:
    """43/14 basic stream answer: all objects in one page, conformity 'basic, stream'."""
    objects = b"".join(bytes((obj, len(text))) + text.encode("ascii")
                       for obj, text in sorted(identity.items()))
    return bytes((0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, len(identity))) + objects


def _answer(device: Device, unit_id: int, unit: int, pdu: bytes) -> tuple[bytes, Request]:
    fc = pdu[0]
    if fc == 0x2B:
        request = Request(unit, fc, 0, 0, None)
        if unit == unit_id and device.identity and pdu[1:2] == b"\x0e":
            return _device_id_answer(device.identity), request
        refusal = 0x0B if unit != unit_id else 1
        return bytes((fc | 0x80, refusal)), request._replace(exception=refusal)
    address, count = struct.unpack_from(">HH", pdu, 1)
    span = range(address, address + count)
    # function 4 only where the document maps input registers; else illegal function as before
    table = device.input if fc == 4 and device.input else device.holding
    served = fc == 3 or table is device.input
    code: int | None = (0x0B if unit != unit_id else 1 if not served
            else 2 if any(a not in table for a in span) else None)
    request = Request(unit, fc, address, count, code)
    if code is not None:
        return bytes((fc | 0x80, code)), request
    return bytes((fc, 2 * count)) + struct.pack(
        f">{count}H", *(table[a] for a in span)), request


@asynccontextmanager
async def serve(device: Device, unit_id: int = 1) -> AsyncIterator[int]:
    """A Modbus TCP server of one unit answering FC 3 from the map (exception 2 over holes)
    and 43/14; logs every request in device.log; yields its port."""

    handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers[task] = writer
        try:
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                answer, request = _answer(device, unit_id, unit, await reader.readexactly(length - 1))
                device.log.append(request)
                writer.write(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for writer in handlers.values():  # ends each handler's read: no task left pending
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
