"""OPC UA discovery against the BMS simulator: browse, units, namespace URIs, the draft."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from asyncua import Client, ua

from dcim.cli import main
from dcim.collectors.discover_opcua import (
    UNECE_NAMESPACE, FoundVariable, Inventory, browse, build_draft, eu_text, node_text,
    point_name, render,
)
from dcim.collectors.opcua_nodes import parse_address, resolve
from dcim.config.site import OpcuaGateway
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.site import load_site, site_from_dict
from dcim.site.model import SiteDevice
from tests.test_discover_modbus import minimal_site

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
GATEWAY = next(g for g in SITE.config.gateways if isinstance(g, OpcuaGateway) and g.id == "bms")
BMS: list[SiteDevice] = [d for d in SITE.devices.values() if d.gateway.id == "bms"]
URI = "urn:dcim:cyberport5:bms"

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bms() -> AsyncIterator[OpcuaSimServer]:
    """The BMS simulator (a few devices of each kind) on a free port, no security."""
    kinds: dict[str, list[SiteDevice]] = {}
    for d in BMS:
        kinds.setdefault(d.profile_id, []).append(d)
    devices = [d for group in kinds.values() for d in group[:2]]
    server = OpcuaSimServer(GATEWAY, devices, port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize(("node_id", "text"), [
    (ua.NodeId.from_string("ns=2;s=BMS/Chillers/CH-1.Power"), f"nsu={URI};s=BMS/Chillers/CH-1.Power"),
    (ua.NodeId.from_string("i=85"), "nsu=http://opcfoundation.org/UA/;i=85"),
], ids=["string", "numeric-ns0"])
def test_node_text_names_the_namespace_uri(node_id: ua.NodeId, text: str) -> None:
    assert node_text(node_id, ["http://opcfoundation.org/UA/", "urn:x", URI]) == text


@pytest.mark.parametrize(("browse_name", "taken", "unit", "name"), [
    ("SupplyTemp", set(), None, "supply_temp"), ("ChwSupplyTemp", set(), None, "chw_supply_temp"),
    ("2ndStage", set(), None, "p_2nd_stage"), ("Power", {"power"}, None, "power_2"),
    ("SupplyTemp", set(), "degC", "supply_temp_c"), ("Power_kw", set(), "kW", "power_kw"),
    ("Power", {"power_kw"}, "kW", "power_kw_2"), ("Speed", set(), "rpm", "speed"),
], ids=["camel", "camel-3", "digit-first", "duplicate", "unit-suffix", "suffix-already",
        "duplicate-with-unit", "unit-without-suffix"])
def test_point_names(browse_name: str, taken: set[str], unit: str | None, name: str) -> None:
    assert point_name(browse_name, set(taken), unit) == name


def _eu(code: str, display: str, uri: str = UNECE_NAMESPACE) -> ua.EUInformation:
    return ua.EUInformation(NamespaceUri=uri, UnitId=int.from_bytes(code.encode(), "big"),
                            DisplayName=ua.LocalizedText(display, "en"))


@pytest.mark.parametrize(("value", "unit"), [
    (_eu("CEL", "°C"), "degC"), (_eu("KWT", "kW"), "kW"), (_eu("P1", "%"), "%"),
    (_eu("CEL", "°C", uri=""), "degC"), (_eu("RPM", "r/min"), "r/min"),
    (_eu("CEL", "deg", uri="urn:vendor:units"), "deg"), (None, None),
], ids=["celsius", "kilowatt", "percent-2-chars", "no-namespace", "unknown-code",
        "vendor-namespace", "none"])
def test_engineering_units_in_dcim_words(value: ua.EUInformation | None, unit: str | None
                                         ) -> None:
    assert eu_text(value) == unit


def test_draft_groups_objects_of_one_class() -> None:
    def var(obj: str, leaf: str, unit: str | None = None) -> FoundVariable:
        return FoundVariable(((URI, "BMS"), (URI, "Chillers"), (URI, obj), (URI, leaf)),
                             f"nsu={URI};s={obj}.{leaf}", "Double", unit)

    inv = Inventory("opc.tcp://10.0.0.5:4840", ["http://opcfoundation.org/UA/", URI], [
        var("CH-1", "Power", "kW"), var("CH-1", "Status"),
        var("CH-2", "Power", "kW"), var("CH-2", "Status"), var("CH-3", "Power", "kW")])
    data, _ = build_draft(inv)
    assert [d["profile"] for d in data["devices"]] == ["bms-chillers", "bms-chillers",
                                                       "bms-chillers-2"]
    points = data["profiles"]["bms-chillers"]["points"]
    assert points[0] == {"name": "power_kw", "unit": "kW", "browse_path": [
        f"{URI}|BMS", f"{URI}|Chillers", f"{URI}|{{device}}", f"{URI}|Power"]}
    assert [d["node_name"] for d in data["devices"]] == ["CH-1", "CH-2", "CH-3"]


@module_loop
async def test_browse_lists_variables_with_types_units_and_uris(bms: OpcuaSimServer) -> None:
    client = Client(bms.endpoint, timeout=4)
    async with client:
        inv = await browse(client, endpoint=bms.endpoint)
    assert not inv.truncated
    served = sum(len(d.variables) for d in bms.plan.devices)
    assert len(inv.variables) == served
    assert all(v.node.startswith(f"nsu={URI};s=") for v in inv.variables)
    assert all(not v.node.startswith("ns=") for v in inv.variables)
    assert {v.data_type for v in inv.variables} == {"Double"}
    with_unit = {v.path[-1][1]: v.unit for v in inv.variables if v.unit}
    planned = {var.leaf: var.unit for d in bms.plan.devices for var in d.variables if var.unit}
    assert set(with_unit) == set(planned) and all(with_unit.values())


@module_loop
async def test_browse_stops_at_max_nodes(bms: OpcuaSimServer) -> None:
    client = Client(bms.endpoint, timeout=4)
    async with client:
        inv = await browse(client, max_nodes=5, endpoint=bms.endpoint)
    assert inv.truncated and inv.nodes_visited == 5


@module_loop
async def test_draft_validates_and_its_browse_paths_resolve(bms: OpcuaSimServer,
                                                           tmp_path: Path) -> None:
    draft = tmp_path / "bms.yaml"
    code = await asyncio.to_thread(main, ["discover", "opcua", bms.endpoint, "-o", str(draft)])
    assert code == 0
    data = yaml.safe_load(draft.read_text())
    assert len(data["devices"]) == len(bms.plan.devices)
    site = site_from_dict(minimal_site(data))
    addresses = [parse_address(d, p) for d in site.devices.values() for p in d.profile.points]
    client = Client(bms.endpoint, timeout=4)
    async with client:
        resolution = await resolve(client, addresses)
    assert resolution.errors == {} and len(resolution.node_ids) == len(addresses)
    # the draft renders the same with its comments
    again, notes = build_draft(Inventory(bms.endpoint, []))
    assert "device_type 'meter'" in render(again, notes, "x")
