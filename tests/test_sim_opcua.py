"""The BMS OPC UA simulator: address space, values, status codes, restart, security, node-opcua."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from dcim.simulators.opcua_security import (
    CertPair,
    PasswordUserManager,
    TestPki,
    certificate_validator,
    issue_certificate,
    make_test_pki,
)
from dcim.simulators.opcua_server import OpcuaSimServer, nid, opcua_device_docs, point_value
from dcim.simulators.opcua_space import NODE_PATTERN, UNITS, plan_address_space
from dcim.simulators.snapshot import DeviceHealth, DeviceReading, Snapshot

from dcim.site import Site, load_site
from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaGateway, OpcuaPoint, OpcuaProfile
from tests.conftest import require_program, servers_required

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "opcua_node"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FOLDERS = {"chiller": "Chillers", "pump": "Pumps", "cooling_tower": "CoolingTowers",
           "crah": "CRAH", "weather_station": "Weather", "water_meter": "Water"}
Ok, Bad, Unc = DeviceHealth.OK, DeviceHealth.NO_DATA, DeviceHealth.UNCERTAIN
S = ua.StatusCodes

# Async tests share the module-scoped servers, so they run in the module's event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


# ---------------------------------------------------------------- data


SITE: Site = load_site(ROOT / "config" / "cyberport5.yaml")
GATEWAY = next(g for g in SITE.config.gateways if isinstance(g, OpcuaGateway) and g.id == "bms")
DEVICES: list[SiteDevice] = [d for d in SITE.devices.values() if d.gateway.id == "bms"]


def values_at(tick: int) -> dict[str, dict[str, float]]:
    """Distinct engineering values per device and point, different every tick."""
    return {d.id: {p.name: round(100 * i + j + 0.25 + tick * 0.5, 3)
                   for j, p in enumerate(d.profile.points)}
            for i, d in enumerate(DEVICES)}


def snapshot(tick: int, readings: dict[str, DeviceReading] | None = None) -> Snapshot:
    """A handcrafted plant snapshot (all OK) with some readings replaced."""
    devices = {dev: DeviceReading(vals) for dev, vals in values_at(tick).items()}
    devices.update(readings or {})
    return Snapshot(T0 + tick, devices)


def node_string(device: SiteDevice, point: str) -> str:
    """The profile's node id with the device substituted (what a collector resolves)."""
    node = next(p.node for p in device.profile.points
                if isinstance(p, OpcuaPoint) and p.name == point)
    assert node is not None
    return node.replace("{device}", device.node_name)


async def resolve(client: Client, node: str) -> ua.NodeId:
    """Resolve 'nsu=<uri>;s=<id>' through the server's NamespaceArray."""
    match = NODE_PATTERN.match(node)
    assert match is not None
    return nid(match["id"], await client.get_namespace_index(match["uri"]))


async def connect(endpoint: str, pair: CertPair | None = None, server_cert: Path | None = None,
                  mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt) -> Client:
    """A connected asyncua client, secure when a certificate pair is given."""
    client = Client(endpoint, timeout=4)
    if pair is not None:
        client.application_uri = pair.application_uri
        await client.set_security(SecurityPolicyBasic256Sha256, pair.certificate, pair.private_key,
                                  server_certificate=str(server_cert), mode=mode)
    await client.connect()
    return client


# ---------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain() -> AsyncIterator[OpcuaSimServer]:
    """A NoSecurity server on a free port, shared by the tests that set their own values."""
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0)
    await server.start()
    await server.update(snapshot(0))
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(plain: OpcuaSimServer) -> AsyncIterator[Client]:
    """One client session on the plain server."""
    session = await connect(plain.endpoint)
    yield session
    await session.disconnect()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """Server, trusted and untrusted client certificates, plus node-opcua's trusted cert."""
    pki = make_test_pki(tmp_path_factory.mktemp("pki"))
    pki.trust_client(node_pair(pki).certificate)
    return pki


def node_pair(pki: TestPki) -> CertPair:
    """The node-opcua client's certificate (PEM), next to the test PKI."""
    folder = pki.server_trust_dir.parent / "node"
    cert = folder / "node_cert.pem"
    if cert.exists():
        return CertPair(cert, folder / "node_key.pem", "urn:dcim:test:node-client")
    return issue_certificate(folder, "node", "urn:dcim:test:node-client", pem=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(pki: TestPki) -> AsyncIterator[OpcuaSimServer]:
    """A server offering only Basic256Sha256 Sign and SignAndEncrypt."""
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0,
                            security=pki.server_security(modes=("Sign", "SignAndEncrypt")))
    await server.start()
    await server.update(snapshot(0))
    yield server
    await server.stop()


# ---------------------------------------------------------------- address space


@module_loop
async def test_browse_finds_every_device_and_point_with_units(
        plain: OpcuaSimServer, client: Client) -> None:
    snap = snapshot(1)
    await plain.update(snap)
    idx = await client.get_namespace_index("urn:dcim:cyberport5:bms")
    bms = await client.nodes.objects.get_child(f"{idx}:BMS")
    folders = {str((await f.read_browse_name()).Name): f for f in await bms.get_children()}
    assert set(folders) == {FOLDERS[d.device_type] for d in DEVICES}
    for device in DEVICES:
        obj = await folders[FOLDERS[device.device_type]].get_child(f"{idx}:{device.node_name}")
        variables = await obj.get_children(nodeclassmask=ua.NodeClass.Variable)
        assert len(variables) == len(device.profile.points)
        values = await client.read_values(variables)
        shown = dict(zip([str(v.nodeid.Identifier) for v in variables], values, strict=True))
        for point in device.profile.points:
            string_id = node_string(device, point.name).split(";s=", 1)[1]
            assert shown[string_id] == snap.devices[device.id].values[point.name], string_id
    # one variable in detail: type, timestamp, units, range, browse path
    power = await client.nodes.objects.get_child(
        [f"{idx}:BMS", f"{idx}:Chillers", f"{idx}:CH-1", f"{idx}:ElectricalPower"])
    assert power.nodeid == nid("CH-1.ElectricalPower", idx)
    assert await power.read_data_type() == nid(ua.ObjectIds.Double)
    data = await power.read_data_value()
    assert data.SourceTimestamp is not None and data.SourceTimestamp.timestamp() == T0 + 1
    eu = await (await power.get_child("0:EngineeringUnits")).read_value()
    assert (eu.UnitId, eu.DisplayName.Text) == (UNITS["kW"].unit_id, "kW")
    assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    valve = client.get_node(nid("CRAH-H1-1.ChwValve", idx))
    eu_range = await (await valve.get_child("0:EURange")).read_value()
    assert (eu_range.Low, eu_range.High) == (0.0, 100.0)
    assert await valve.read_type_definition() == nid(ua.ObjectIds.AnalogItemType)


@pytest.mark.parametrize(("unit", "code", "unit_id"), [
    ("kW", "KWT", 4937556), ("kWh", "KWH", 4937544), ("degC", "CEL", 4408652),
    ("m3/h", "MQH", 5067080), ("%", "P1", 20529), ("m3", "MTQ", 5067857),
], ids=["kW", "kWh", "degC", "m3h", "pct", "m3"])
def test_unece_unit_ids(unit: str, code: str, unit_id: int) -> None:
    assert (UNITS[unit].code, UNITS[unit].unit_id) == (code, unit_id)


def _with_points(device: SiteDevice, points: list[dict[str, Any]], node_name: str | None = None
                 ) -> SiteDevice:
    profile = OpcuaProfile.model_validate(
        {"protocol": "opcua", "device_type": device.device_type, "points": points})
    return SiteDevice(device.id, device.device_type, device.profile_id, profile, device.gateway,
                      None, node_name or device.node_name, device.monitors, device.interval_s)


def test_browse_path_points_resolve_to_the_same_variable() -> None:
    chiller = DEVICES[0]
    uri = "urn:dcim:cyberport5:bms"
    path = [f"{uri}|BMS", f"{uri}|Chillers", f"{uri}|{{device}}", f"{uri}|ElectricalPower"]
    plan = plan_address_space([_with_points(chiller, [{"name": "power_kw", "browse_path": path,
                                                       "unit": "kW"}])])
    var = plan.devices[0].variables[0]
    assert (var.node_id, var.leaf) == (f"{chiller.node_name}.ElectricalPower", "ElectricalPower")
    assert plan.browse_path(plan.devices[0], var) == [p.replace("{device}", chiller.node_name)
                                                      for p in path]


@pytest.mark.parametrize(("points", "message"), [
    ([{"name": "a", "browse_path": ["urn:x|BMS", "urn:x|Pumps", "urn:x|{device}", "urn:x|P"]}],
     "does not match"),
    ([{"name": "a", "node": "nsu=urn:x;i=5"}], "is not 'nsu=<uri>;s=<string id>'"),
    ([{"name": "a", "node": "nsu=urn:x;s={device}.A"}, {"name": "b", "node": "nsu=urn:y;s={device}.B"}],
     "one namespace URI"),
    ([{"name": "a", "node": "nsu=urn:x;s=Fixed", "unit": "furlong"}], "no UNECE code"),
], ids=["browse-path-wrong-folder", "numeric-node-id", "two-namespaces", "unknown-unit"])
def test_plan_rejects_what_it_cannot_serve(points: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_address_space([_with_points(DEVICES[0], points)])


def test_plan_rejects_two_devices_on_one_node_name() -> None:
    with pytest.raises(ValueError, match="distinct node_name"):
        plan_address_space([DEVICES[0], _with_points(DEVICES[1], [
            p.model_dump(exclude_none=True) for p in DEVICES[1].profile.points], "CH-1")])


# ---------------------------------------------------------------- status codes


STATUS_CASES = [
    # (device, point, reading of that device, expected StatusCode, expected value)
    ("CH-1", "power_kw", DeviceReading({}, Bad), S.BadNoCommunication, None),
    ("CH-2", "chw_supply_temp_c", DeviceReading({"chw_supply_temp_c": 6.5}, Unc),
     S.UncertainLastUsableValue, 6.5),
    ("CH-3", "chw_supply_temp_c", DeviceReading({"chw_supply_temp_c": 9.0, "power_kw": 5.0},
                                                 point_health={"chw_supply_temp_c": Bad}),
     S.BadSensorFailure, None),
    ("CH-3", "power_kw", DeviceReading({"chw_supply_temp_c": 9.0, "power_kw": 5.0},
                                        point_health={"chw_supply_temp_c": Bad}), S.Good, 5.0),
    ("CHWP-1", "speed_pct", DeviceReading({"speed_pct": 40.0}, point_health={"speed_pct": Unc}),
     S.UncertainSensorNotAccurate, 40.0),
    ("CWP-1", "unit_status", DeviceReading({"unit_status": 1.0, "power_kw": 3.0},
                                            DeviceHealth.FAULT), S.Good, 3.0),
    ("CWP-1", "power_kw", DeviceReading({"unit_status": 1.0, "power_kw": 3.0},
                                         DeviceHealth.FAULT), S.Good, 3.0),
    ("CT-1", "speed_pct", DeviceReading({"speed_pct": float("nan")}), S.BadSensorFailure, None),
    ("CT-2", "speed_pct", None, S.BadNoCommunication, None),
    ("CRAH-H1-1", "valve_pct", DeviceReading({"valve_pct": 55.0}), S.Good, 55.0),
]


@pytest.mark.parametrize(("device_id", "point", "reading", "code", "value"), STATUS_CASES,
                         ids=["no-data", "uncertain", "sensor-dropout", "other-point-good",
                              "point-uncertain", "fault-trips-status", "fault-values-good",
                              "nan", "device-missing", "ok"])
@module_loop
async def test_health_shows_as_status_code(
        plain: OpcuaSimServer, client: Client, device_id: str, point: str,
        reading: DeviceReading | None, code: int, value: float | None) -> None:
    await plain.update(snapshot(2))
    snap = snapshot(3)
    if reading is None:
        del snap.devices[device_id]
    else:
        snap.devices[device_id] = reading
    await plain.update(snap)
    device = SITE.devices[device_id]
    data = await client.get_node(await resolve(client, node_string(device, point))) \
        .read_data_value(raise_on_bad_status=False)
    assert data.StatusCode is not None and data.StatusCode.value == code
    assert data.Value is not None
    assert data.Value.Value == value


def test_point_value_keeps_last_value_when_bad() -> None:
    plan = plan_address_space(DEVICES[:1])
    device, var = plan.devices[0], plan.devices[0].variables[0]
    assert point_value(device, var, None, None) == (0.0, S.BadNoCommunication)
    assert point_value(device, var, DeviceReading({}, Bad), 7.0) == (7.0, S.BadNoCommunication)
    assert point_value(device, var, DeviceReading({}), 7.0) == (7.0, S.BadSensorFailure)


# ---------------------------------------------------------------- subscriptions


class Changes:
    """Collects data-change notifications and wakes a waiter on the one it expects."""

    def __init__(self) -> None:
        self.seen: list[tuple[ua.NodeId, float, ua.DataValue]] = []
        self.event = asyncio.Event()
        self.want: dict[ua.NodeId, float] = {}

    def datachange_notification(self, node: Node, val: float, data: Any) -> None:
        """asyncua's handler hook."""
        self.seen.append((node.nodeid, val, data.monitored_item.Value))
        if self.want and all(any(n == k and v == w for n, v, _ in self.seen)
                             for k, w in self.want.items()):
            self.event.set()


@module_loop
@pytest.mark.parametrize("period_ms", [100, 1000])
async def test_subscription_sees_each_update(plain: OpcuaSimServer, client: Client,
                                             period_ms: int) -> None:
    await plain.update(snapshot(4))
    changes = Changes()
    subscription = await client.create_subscription(period_ms, changes)
    chiller = SITE.devices["CH-1"]
    points = [p.name for p in chiller.profile.points]
    nodes = [client.get_node(await resolve(client, node_string(chiller, p))) for p in points]
    await subscription.subscribe_data_change(nodes, sampling_interval=ua.Double(period_ms))
    try:
        for tick in (5, 6):
            changes.event.clear()
            changes.want = {n.nodeid: values_at(tick)["CH-1"][p] for n, p in zip(
                nodes, points, strict=True)}
            await plain.update(snapshot(tick))
            await asyncio.wait_for(changes.event.wait(), timeout=3 + 3 * period_ms / 1000)
        stamps = {d.SourceTimestamp.timestamp() if d.SourceTimestamp else None
                  for n, v, d in changes.seen
                  if n == nodes[0].nodeid and v == values_at(6)["CH-1"]["power_kw"]}
        assert stamps == {T0 + 6}
    finally:
        await subscription.delete()


# ---------------------------------------------------------------- restart


@module_loop
async def test_restart_changes_namespace_index_and_uri_resolution_survives() -> None:
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0)
    await server.start()
    try:
        await server.update(snapshot(7))
        node = node_string(SITE.devices["CRAH-H2-3"], "supply_temp_c")
        expected = values_at(7)["CRAH-H2-3"]["supply_temp_c"]
        before = await connect(server.endpoint)
        cached = await resolve(before, node)
        assert await before.get_node(cached).read_value() == expected
        port = server.port
        await before.disconnect()
        await server.restart(down_s=0.2)
        assert server.port == port
        after = await connect(server.endpoint)
        try:
            fresh = await resolve(after, node)
            assert fresh.NamespaceIndex != cached.NamespaceIndex
            assert fresh.NamespaceIndex == server.namespace_index
            assert await after.get_node(fresh).read_value() == expected
            stale = await after.get_node(cached).read_data_value(raise_on_bad_status=False)
            assert stale.StatusCode is not None
            assert stale.StatusCode.value == S.BadNodeIdUnknown
        finally:
            await after.disconnect()
    finally:
        await server.stop()


# ---------------------------------------------------------------- security


@pytest.mark.parametrize("mode", [ua.MessageSecurityMode.SignAndEncrypt,
                                  ua.MessageSecurityMode.Sign], ids=["SignAndEncrypt", "Sign"])
@module_loop
async def test_trusted_client_reads_over_a_secure_channel(
        secure: OpcuaSimServer, pki: TestPki, mode: ua.MessageSecurityMode) -> None:
    client = await connect(secure.endpoint, pki.client, pki.server.certificate, mode)
    try:
        client_node = await resolve(client, node_string(SITE.devices["CT-3"], "fan_power_kw"))
        assert await client.get_node(client_node).read_value() == values_at(0)["CT-3"]["fan_power_kw"]
    finally:
        await client.disconnect()


@module_loop
async def test_untrusted_client_certificate_is_rejected(secure: OpcuaSimServer,
                                                        pki: TestPki) -> None:
    with pytest.raises(ua.UaStatusCodeError) as caught:
        await connect(secure.endpoint, pki.untrusted, pki.server.certificate)
    assert caught.value.code == S.BadCertificateUntrusted


@module_loop
async def test_only_basic256sha256_endpoints_are_offered(secure: OpcuaSimServer) -> None:
    client = Client(secure.endpoint, timeout=4)
    endpoints = await client.connect_and_get_server_endpoints()
    assert {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode) for e in endpoints} == {
        ("Basic256Sha256", ua.MessageSecurityMode.Sign),
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
    assert {e.EndpointUrl for e in endpoints} == {secure.endpoint}
    with pytest.raises(ua.UaError, match="No matching endpoints"):
        await connect(secure.endpoint)


@module_loop
@pytest.mark.parametrize("trusts_server", [True, False], ids=["trusted", "unknown-server"])
async def test_client_checks_the_server_certificate(
        secure: OpcuaSimServer, pki: TestPki, trusts_server: bool) -> None:
    client = Client(secure.endpoint, timeout=4)
    client.application_uri = pki.client.application_uri
    await client.set_security(SecurityPolicyBasic256Sha256, pki.client.certificate,
                              pki.client.private_key, server_certificate=str(pki.server.certificate))
    trust = pki.client_trust_dir if trusts_server else pki.untrusted.certificate.parent
    client.certificate_validator = await certificate_validator(trust, peer="server")
    if not trusts_server:
        with pytest.raises(ua.UaStatusCodeError) as caught:
            await client.connect()
        assert caught.value.code == S.BadCertificateUntrusted
        return
    await client.connect()
    await client.disconnect()


def test_password_user_manager() -> None:
    users = PasswordUserManager({"bms": "s3cret"})
    assert users.get_user(None, "bms", "s3cret") is not None
    for name, password in [("bms", "wrong"), ("other", "s3cret"), (None, None), ("bms", None)]:
        assert users.get_user(None, name, password) is None


# ---------------------------------------------------------------- node-opcua


@pytest.fixture(scope="module")
def node_opcua() -> str:
    """node with node-opcua-client installed (scripts/install-node-deps.sh, once)."""
    node = require_program("node", "apt-get install -y nodejs npm")
    require_program("npm", "apt-get install -y npm")
    done = subprocess.run([str(ROOT / "scripts" / "install-node-deps.sh")], capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        message = f"install-node-deps.sh failed: {done.stderr.strip()[-500:]}"
        if servers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return node


async def run_node(node: str, *args: str) -> dict[str, Any]:
    """Run read.js and parse its JSON result line."""
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "read.js"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("DCIM-RESULT ")]
    assert lines, f"read.js gave no result; stdout/stderr: {out.decode()[-800:]} {err.decode()[-800:]}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("DCIM-RESULT "))
    assert proc.returncode == 0 and "error" not in result, result
    return result


@module_loop
async def test_node_opcua_browses_and_reads_without_security(
        plain: OpcuaSimServer, node_opcua: str, pki: TestPki, tmp_path: Path) -> None:
    snap = snapshot(8)
    await plain.update(snap)
    pair = node_pair(pki)
    got = await run_node(node_opcua, "--endpoint", plain.endpoint, "--namespace",
                         plain.namespace_uri, "--pki", str(tmp_path / "node-pki"),
                         "--cert", str(pair.certificate), "--key", str(pair.private_key),
                         "--app-uri", pair.application_uri)
    assert got["namespaceIndex"] == plain.namespace_index
    assert {folder: sorted(devices) for folder, devices in got["tree"].items()} == {
        folder: sorted(d.node_name for d in DEVICES if FOLDERS[d.device_type] == folder)
        for folder in {FOLDERS[d.device_type] for d in DEVICES}}
    expected = {node_string(d, p.name).split(";s=", 1)[1]: snap.devices[d.id].values[p.name]
                for d in DEVICES for p in d.profile.points}
    assert {k: v["value"] for k, v in got["values"].items()} == expected
    assert {v["status"] for v in got["values"].values()} == {"Good"}
    assert got["values"]["CH-1.ElectricalPower"]["sourceTimestamp"] == "2026-01-01T00:00:08.000Z"


@module_loop
async def test_node_opcua_reads_over_sign_and_encrypt(
        secure: OpcuaSimServer, node_opcua: str, pki: TestPki, tmp_path: Path) -> None:
    snap = snapshot(9, {"CH-2": DeviceReading({"power_kw": 1.0}, Bad)})
    await secure.update(snap)
    pair = node_pair(pki)
    ids = ["CH-1.ElectricalPower", "CT-2.FanSpeed", "CH-2.ElectricalPower"]
    got = await run_node(node_opcua, "--endpoint", secure.endpoint, "--namespace",
                         secure.namespace_uri, "--nodes", ",".join(ids), "--security",
                         "SignAndEncrypt", "--pki", str(tmp_path / "node-pki"), "--cert",
                         str(pair.certificate), "--key", str(pair.private_key), "--app-uri",
                         pair.application_uri)
    values = got["values"]
    assert values["CH-1.ElectricalPower"] == {
        "value": snap.devices["CH-1"].values["power_kw"], "status": "Good",
        "sourceTimestamp": "2026-01-01T00:00:09.000Z"}
    assert values["CT-2.FanSpeed"]["value"] == snap.devices["CT-2"].values["speed_pct"]
    assert values["CH-2.ElectricalPower"]["status"] == "BadNoCommunication"


# ---------------------------------------------------------------- docs


def test_device_docs_name_every_node_unit_and_status() -> None:
    text = opcua_device_docs(SITE)
    for device in DEVICES:
        for point in device.profile.points:
            assert isinstance(point, OpcuaPoint) and f"`{point.node}`" in text
    for needle in ("Objects/BMS/Chillers", "Objects/BMS/Water", "Double", "KWT", "CEL", "MQH",
                   "BadNoCommunication", "UncertainLastUsableValue", GATEWAY.endpoint, "uaread",
                   "read.js"):
        assert needle in text, needle
