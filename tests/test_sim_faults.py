"""Every fault kind of the simulators, injected and observed on the wire.

One simulator of the reference site (real Modbus TCP and OPC UA servers on loopback) with
a clock the tests move: no sleeping for simulated minutes. Modbus values are read with
pymodbus and decoded by the collector's codec; OPC UA values with asyncua by namespace URI.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from dcim.collectors.modbus_codec import DeviceDecoder, plan_reads
from dcim.site import Site, load_site
from dcim.config.site import ModbusPoint
from dcim.simulators.faults import ConfigError, FaultSpec, load_scenario
from dcim.simulators.runner import FaultError, Simulator

ROOT = Path(__file__).resolve().parents[1]
module_loop = pytest.mark.asyncio(loop_scope="module")
BMS_URI = "urn:dcim:cyberport5:bms"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Rig:
    """The simulator, its clock, and wire-level readers."""

    def __init__(self, sim: Simulator, clock: Clock):
        self.sim = sim
        self.clock = clock
        self.site: Site = sim.client_site()

    async def advance(self, seconds: float, step: float = 1.0) -> None:
        """Move simulated time forward, ticking the plant and the servers."""
        remaining = seconds
        while remaining > 1e-9:
            dt = min(step, remaining)
            self.clock.t += dt
            remaining -= dt
            await self.sim.tick()

    def fault(self, kind: str, target: str, point: str | None = None, **params: float) -> int:
        """Inject a fault now; returns its id."""
        return self.sim.inject(FaultSpec(kind=kind, target=target, point=point, params=params)).id

    async def modbus(self, device_id: str, timeout: float = 1.0) -> dict[str, float | str | None]:
        """Every point of a Modbus device, read over TCP and decoded."""
        device = self.site.devices[device_id]
        points = [p for p in device.profile.points if isinstance(p, ModbusPoint)]
        reads = plan_reads(points)
        client = AsyncModbusTcpClient(device.gateway.host, port=device.gateway.port,  # type: ignore[union-attr]
                                      timeout=timeout, retries=0, reconnect_delay=0)
        assert await client.connect()
        try:
            answers = []
            for read in reads:
                fn = {"holding": client.read_holding_registers, "input": client.read_input_registers,
                      "coil": client.read_coils, "discrete_input": client.read_discrete_inputs}
                result = await fn[read.table](read.address, count=read.count,
                                              device_id=device.unit_id or 1)
                assert not result.isError(), f"{device_id}: {result}"
                answers.append(result.bits[: read.count] if read.table in ("coil", "discrete_input")
                               else result.registers)
            return DeviceDecoder(reads).decode(answers)
        finally:
            client.close()

    async def opcua(self, device_id: str, leaf: str) -> tuple[float | None, str]:
        """A BMS variable's value and status name, resolved by namespace URI."""
        server = self.sim.opcua["bms"]
        async with Client(server.endpoint, timeout=4) as client:
            idx = await client.get_namespace_index(BMS_URI)
            data = await client.get_node(f"ns={idx};s={device_id}.{leaf}").read_data_value(
                raise_on_bad_status=False)
            return data.Value.Value, data.StatusCode.name


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    clock = Clock()
    truth = tmp_path_factory.mktemp("truth") / "truth.jsonl"
    sim = Simulator(load_site(ROOT / "config" / "cyberport5.yaml"), seed=3, free_ports=True,
                    autotick=False, clock=clock, start_s=1_782_900_000.0, truth_path=truth)
    await sim.start()
    try:
        yield Rig(sim, clock)
    finally:
        await sim.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def clean(rig: Rig) -> AsyncIterator[Rig]:
    """Clears every fault a test left, and lets the plant settle."""
    yield rig
    for fault_id in list(rig.sim.faults):
        rig.sim.clear(fault_id)
    await rig.advance(600, step=30)


# ---------------------------------------------------------------- equipment


@module_loop
async def test_ups_module_trip(clean: Rig) -> None:
    before = await clean.modbus("UPS-A2")
    clean.fault("ups_module_trip", "UPS-A1")
    await clean.advance(2)
    tripped = await clean.modbus("UPS-A1")
    assert tripped["unit_status"] == 3 and tripped["fault"] == 1
    assert tripped["output_power_kw"] == pytest.approx(0.0, abs=0.1)
    after = await clean.modbus("UPS-A2")
    others = [(await clean.modbus(f"UPS-A{m}"))["output_power_kw"] for m in (2, 3, 4, 5)]
    assert after["output_power_kw"] > before["output_power_kw"] * 1.15  # 1/4 instead of 1/5
    assert max(others) - min(others) < 0.5  # shared equally by the four left


@module_loop
@pytest.mark.parametrize("kind,mode,flag", [("ups_bypass", 2, "on_bypass"),
                                             ("ups_battery", 3, "on_battery")])
async def test_ups_modes(clean: Rig, kind: str, mode: int, flag: str) -> None:
    clean.fault(kind, "UPS-B")
    await clean.advance(2)
    first = await clean.modbus("UPS-B3")
    assert first["ups_mode"] == mode and first[flag] == 1
    if kind == "ups_battery":
        await clean.advance(120, step=10)
        later = await clean.modbus("UPS-B3")
        assert later["battery_charge_pct"] < first["battery_charge_pct"]
        assert later["input_power_kw"] == pytest.approx(0.0, abs=0.1)


@module_loop
async def test_crah_trip_warms_its_hall(clean: Rig) -> None:
    racks = ["RM-H1-A01", "RM-H1-A05", "RM-H1-B01"]
    before = [(await clean.modbus(r))["inlet_temp_top_c"] for r in racks]
    clean.fault("crah_trip", "CRAH-H1-1")
    await clean.advance(300, step=10)
    assert await clean.opcua("CRAH-H1-1", "Status") == (3.0, "Good")
    assert (await clean.opcua("CRAH-H1-1", "Running"))[0] == 0.0
    after = [(await clean.modbus(r))["inlet_temp_top_c"] for r in racks]
    assert statistics.mean(a - b for a, b in zip(after, before)) > 0.3  # type: ignore[operator]


@module_loop
async def test_chiller_trip_then_standby_starts(clean: Rig) -> None:
    running = [c for c in ("CH-1", "CH-2", "CH-3") if (await clean.opcua(c, "Running"))[0] == 1.0]
    assert running
    victim = running[0]
    clean.fault("chiller_trip", victim)
    await clean.advance(2)
    assert await clean.opcua(victim, "Status") == (3.0, "Good")
    await clean.advance(360, step=10)
    now_running = [c for c in ("CH-1", "CH-2", "CH-3") if (await clean.opcua(c, "Running"))[0] == 1.0]
    assert victim not in now_running and len(now_running) >= len(running)


@module_loop
async def test_pump_failure(clean: Rig) -> None:
    clean.fault("pump_failure", "CHWP-1")
    await clean.advance(5)
    assert (await clean.opcua("CHWP-1", "Running"))[0] == 0.0
    assert (await clean.opcua("CHWP-1", "ElectricalPower"))[0] == pytest.approx(0.0, abs=0.01)


@module_loop
async def test_utility_loss_starts_generators(clean: Rig) -> None:
    clean.fault("utility_loss", "all")
    await clean.advance(2)
    assert (await clean.modbus("M-UTIL-A"))["power_kw"] == pytest.approx(0.0, abs=0.5)
    assert (await clean.modbus("UPS-A1"))["on_battery"] == 1
    await clean.advance(30, step=2)
    assert (await clean.modbus("ATS-A-CTRL"))["source"] == 2
    gens = [await clean.modbus(f"GEN-{g}-CTRL") for g in (1, 2, 3)]
    assert all(g["running"] == 1 for g in gens)
    assert sum(g["power_kw"] for g in gens) > 1000  # type: ignore[misc]


@module_loop
async def test_single_feed_loss_moves_its_side_to_generators(clean: Rig) -> None:
    """In this design each side's ATS chooses its own utility or the generator bus."""
    before_b = (await clean.modbus("M-UTIL-B"))["power_kw"]
    clean.fault("utility_loss", "UTIL-A")
    await clean.advance(30, step=2)
    assert (await clean.modbus("M-UTIL-A"))["power_kw"] == pytest.approx(0.0, abs=0.5)
    assert (await clean.modbus("ATS-A-CTRL"))["source"] == 2
    assert (await clean.modbus("ATS-B-CTRL"))["source"] == 1
    assert (await clean.modbus("M-UTIL-B"))["power_kw"] == pytest.approx(before_b, rel=0.1)
    gens = [await clean.modbus(f"GEN-{g}-CTRL") for g in (1, 2, 3)]
    assert sum(g["power_kw"] for g in gens) > 300  # type: ignore[misc]


@module_loop
async def test_pdu_breaker_open_drops_one_feed(clean: Rig) -> None:
    before = await clean.modbus("RM-H1-A01")
    clean.fault("pdu_breaker_open", "PDU-A-H1-1")
    await clean.advance(2)
    after = await clean.modbus("RM-H1-A01")
    assert after["feed_a_power_kw"] == 0.0
    total_before = before["feed_a_power_kw"] + before["feed_b_power_kw"]  # type: ignore[operator]
    assert after["feed_b_power_kw"] == pytest.approx(total_before, rel=0.1)
    assert (await clean.modbus("PDU-A-H1-1"))["output_power_kw"] == pytest.approx(0.0, abs=0.05)


# ---------------------------------------------------------------- sensors

POINT = ("RM-H1-A02", "inlet_temp_middle_c")
NEIGHBOUR = "inlet_temp_bottom_c"


async def _series(rig: Rig, n: int, step: float = 5.0) -> list[tuple[float, float]]:
    out = []
    for _ in range(n):
        await rig.advance(step)
        values = await rig.modbus(POINT[0])
        out.append((values[POINT[1]], values[NEIGHBOUR]))  # type: ignore[arg-type]
    return out


@module_loop
async def test_stuck_value(clean: Rig) -> None:
    clean.fault("stuck", *POINT)
    # minutes apart: the neighbour's 0.1 K steps once stayed put over 30 s
    series = await _series(clean, 8, step=60.0)
    assert len({v for v, _ in series}) == 1
    assert len({n for _, n in series}) > 1  # the neighbour still moves


@module_loop
async def test_drift(clean: Rig) -> None:
    base = await _series(clean, 1)
    clean.fault("drift", *POINT, rate_per_h=6.0)
    await clean.advance(3600, step=60)
    (value, neighbour), = await _series(clean, 1)
    gap_before = base[0][0] - base[0][1]
    assert (value - neighbour) - gap_before == pytest.approx(6.0, abs=1.0)


@module_loop
async def test_spike(clean: Rig) -> None:
    (value, neighbour), = await _series(clean, 1)
    clean.fault("spike", *POINT, magnitude=15.0)
    (spiked, neighbour2), = await _series(clean, 1, step=1)
    assert (spiked - neighbour2) - (value - neighbour) == pytest.approx(15.0, abs=1.0)


@module_loop
async def test_dropout_sends_the_no_data_marker(clean: Rig) -> None:
    clean.fault("dropout", *POINT)
    await clean.advance(1)
    values = await clean.modbus(POINT[0])
    assert values[POINT[1]] is None  # raw 0x8000 = the profile's nan_value
    assert isinstance(values[NEIGHBOUR], float)


@module_loop
async def test_noise_burst(clean: Rig) -> None:
    quiet = await _series(clean, 12, step=1)
    clean.fault("noise_burst", *POINT, sigma=4.0)
    noisy = await _series(clean, 12, step=1)
    spread = lambda s: statistics.pstdev(v - n for v, n in s)  # noqa: E731
    assert spread(noisy) > 4 * spread(quiet) + 1.0


# ---------------------------------------------------------------- communications


@module_loop
@pytest.mark.parametrize("kind,params", [("timeout", {}), ("disconnect", {}), ("garbage", {})])
async def test_comm_fault_fails_reads_of_that_unit_only(clean: Rig, kind: str,
                                                        params: dict[str, float]) -> None:
    clean.fault(kind, "RM-H1-A03", **params)
    with pytest.raises((ModbusException, AssertionError, asyncio.TimeoutError)):
        await clean.modbus("RM-H1-A03", timeout=0.5)
    neighbour = await clean.modbus("RM-H1-A04")  # same gateway, other unit id
    assert isinstance(neighbour["inlet_temp_middle_c"], float)


@module_loop
async def test_exception_response(clean: Rig) -> None:
    clean.fault("exception", "PDU-B-H2-3", code=6)
    device = clean.site.devices["PDU-B-H2-3"]
    client = AsyncModbusTcpClient(device.gateway.host, port=device.gateway.port,  # type: ignore[union-attr]
                                  timeout=1, retries=0, reconnect_delay=0)
    await client.connect()
    try:
        result = await client.read_holding_registers(40000, count=2, device_id=device.unit_id or 1)
        assert result.isError() and result.exception_code == 6
    finally:
        client.close()


@module_loop
async def test_delay(clean: Rig) -> None:
    clean.fault("delay", "RM-H2-A01", seconds=0.6)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await clean.modbus("RM-H2-A01", timeout=2.0)
    assert loop.time() - started >= 0.55


@module_loop
async def test_opcua_restart(clean: Rig) -> None:
    server = clean.sim.opcua["bms"]
    index_before = server.namespace_index
    clean.fault("opcua_restart", "bms", down_s=1.0)
    await asyncio.sleep(0.3)
    assert not server.running or server.namespace_index == index_before
    for _ in range(50):
        await asyncio.sleep(0.1)
        if server.running and server.namespace_index != index_before:
            break
    assert server.namespace_index != index_before
    await clean.advance(1)
    value, status = await clean.opcua("CH-1", "ChwSupplyTemp")
    assert status == "Good" and 4 < value < 20  # type: ignore[operator]


# ---------------------------------------------------------------- truth, scenarios, API


@module_loop
async def test_ground_truth_records_start_and_end(clean: Rig) -> None:
    fault_id = clean.fault("crah_trip", "CRAH-H2-2")
    await clean.advance(10)
    clean.sim.clear(fault_id)
    await clean.advance(1)
    record = clean.sim.truth.records[fault_id]
    assert record.kind == "crah_trip" and record.category == "equipment"
    assert record.end_s is not None and record.end_s - record.start_s == pytest.approx(10, abs=1.5)
    lines = clean.sim.truth.path.read_text().splitlines()  # type: ignore[union-attr]
    assert any(f'"fault_id": {fault_id}' in line and '"event": "end"' in line for line in lines)


@module_loop
async def test_scenario_schedules_relative_faults(clean: Rig, tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(
        "name: crah then drift\nfaults:\n"
        "  - {kind: crah_trip, target: CRAH-H2-3, at: 1m, duration: 2m}\n"
        "  - {kind: drift, target: RM-H2-B02, point: inlet_temp_top_c, at: 30s,\n"
        "     params: {rate_per_h: 2}}\n")
    faults = clean.sim.load_scenario(load_scenario(path, clean.sim.site))
    assert not any(f.active for f in faults)
    await clean.advance(45, step=5)
    assert [f.active for f in faults] == [False, True]
    await clean.advance(30, step=5)
    assert [f.active for f in faults] == [True, True]
    await clean.advance(150, step=10)
    assert faults[0].id not in clean.sim.faults  # ended after its 2 minutes
    assert clean.sim.truth.records[faults[0].id].end_s is not None


def test_bad_scenario_names_file_line_and_problem(tmp_path: Path) -> None:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nfaults:\n  - kind: crah_trip\n    target: CRAH-H9-1\n"
                    "  - kind: stuck\n    target: RM-H1-A01\n    point: nope\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path, site)
    text = str(info.value)
    assert f"{path}:4: faults[0].target: crah_trip: 'CRAH-H9-1' is not a component" in text
    assert f"{path}:6: faults[1].target: stuck: point 'nope' is not on RM-H1-A01" in text


@module_loop
async def test_wrong_target_kind_is_refused(rig: Rig) -> None:
    with pytest.raises(FaultError, match="is a pdu; expected crah"):
        rig.fault("crah_trip", "PDU-A-H1-1")


# ---------------------------------------------------------------- the control API, over HTTP

FAULT = {"kind": "crah_trip", "target": "CRAH-H1-2", "duration": "1m"}
JSON = {"Content-Type": "application/json"}
GUARDED = [
    # (id, method, headers, body, status): what a browser on another site, or a name that is
    # not this machine's (DNS rebinding), can send, and bodies that once gave a 500
    ("cross-site-text-plain", "POST", {"Content-Type": "text/plain"}, FAULT, 415),
    ("form", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, FAULT, 415),
    ("no-type", "POST", {}, FAULT, 415),
    ("other-host", "POST", {**JSON, "Host": "evil.example:8081"}, FAULT, 421),
    ("other-host-get", "GET", {"Host": "rebound.example"}, None, 421),
    ("other-origin", "POST", {**JSON, "Origin": "http://evil.example"}, FAULT, 403),
    ("null-origin", "DELETE", {"Origin": "null"}, None, 403),
    ("cross-site-fetch", "POST", {**JSON, "Sec-Fetch-Site": "cross-site"}, FAULT, 403),
    ("too-big", "POST", JSON, {**FAULT, "pad": "x" * 20_000}, 413),
    ("too-deep", "POST", JSON, "[" * 5000 + "]" * 5000, 400),
    ("huge-number", "POST", JSON, '{"kind": "crah_trip", "target": "CRAH-H1-2", '
                                  '"params": {"x": 1' + "0" * 5000 + "}}", 400),
    ("nan", "POST", JSON, '{"kind": "crah_trip", "target": "CRAH-H1-2", '
                          '"params": {"x": NaN}}', 400),
    ("not-an-object", "POST", JSON, "[1, 2]", 400),
    ("not-utf8", "POST", JSON, b"\xff\xfe{}", 400),
]


@module_loop
@pytest.mark.parametrize(("method", "headers", "body", "status"), [g[1:] for g in GUARDED],
                         ids=[g[0] for g in GUARDED])
async def test_control_api_refuses_what_a_browser_elsewhere_could_send(
        rig: Rig, method: str, headers: dict[str, str], body: object, status: int) -> None:
    import json

    import aiohttp

    from dcim.simulators.control import start_control

    runner = await start_control(rig.sim)
    port = runner.addresses[0][1]
    path = {"POST": "/faults", "DELETE": "/faults/1"}.get(method, "/status")
    data = body if isinstance(body, (str, bytes)) else json.dumps(body) if body else None
    try:
        async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as http:
            async with http.request(method, f"http://127.0.0.1:{port}{path}", data=data,
                                    headers=headers) as reply:
                answer = await reply.read()
                assert reply.status == status, answer
                assert reply.headers["X-Content-Type-Options"] == "nosniff"
                assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    finally:
        await runner.cleanup()
    assert rig.sim.faults == {}  # nothing was injected


@module_loop
async def test_control_api_serves_its_own_client(clean: Rig) -> None:
    import aiohttp

    from dcim.simulators.control import start_control

    runner = await start_control(clean.sim)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/faults", json=FAULT,
                                 headers={"Origin": base, "Sec-Fetch-Site": "same-origin"}) as r:
                assert r.status == 201 and r.headers["X-Frame-Options"] == "DENY"
                fault = await r.json()
            async with http.get(f"{base}/faults", headers={"Host": "localhost"}) as r:
                assert [f["id"] for f in await r.json()] == [fault["id"]]
            async with http.delete(f"{base}/faults/{fault['id']}") as r:
                assert r.status == 200
            async with http.get(f"{base}/nope") as r:  # aiohttp's own 404 gets them too
                assert r.status == 404 and r.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        await runner.cleanup()
