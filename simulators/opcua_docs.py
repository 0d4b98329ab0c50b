"""docs/devices.md section for the BMS OPC UA simulator, generated from the site model."""

from __future__ import annotations

from dcim.simulators.opcua_space import (
    ROOT_FOLDER,
    UNITS,
    DeviceSpec,
    SpacePlan,
    plan_address_space,
)

from dcim.site.model import Site, SiteDevice
from dcim.config.site import OpcuaGateway

STATUS_TABLE = """\
| device health (plant model) | StatusCode | value |
| --- | --- | --- |
| OK | Good (0x00000000) | the plant's value |
| FAULT | Good | the plant's values; `Status` shows 3 tripped (or 2 alarm if the plant says so) |
| UNCERTAIN, whole device | UncertainLastUsableValue (0x408F0000) | the (stale) value |
| UNCERTAIN, one point | UncertainSensorNotAccurate (0x40930000) | the (stuck) value |
| NO_DATA, whole device / device missing from the snapshot | BadNoCommunication (0x80310000) | null |
| NO_DATA, one point (sensor dropout), or no finite value | BadSensorFailure (0x808C0000) | null |
| before the first update | BadWaitingForInitialData (0x80320000) | null |

A Bad value is null on the wire (OPC UA Part 4, 7.7.1: the server sets it to null).
"""


def _security_text(gateway: OpcuaGateway) -> str:
    sec = gateway.security
    configured = "None" if sec.policy == "None" else f"{sec.policy} {sec.mode}"
    return (
        f"The collector connects with **{configured}**"
        + (f" as user `{sec.username}`" if sec.username else "")
        + ". The simulator offers NoSecurity, or Basic256Sha256 Sign / SignAndEncrypt with its "
        "own certificate (`ServerSecurity.in_folder(folder)`), and refuses client "
        "certificates that are not in its trust folder; a username/password list is optional.")


def _profile_section(plan: SpacePlan, devices: list[DeviceSpec], vendor_model: str) -> list[str]:
    first = devices[0]
    names = ", ".join(f"`{d.node_name}`" for d in devices)
    folder = f"Objects/{ROOT_FOLDER}/{first.folder}"
    lines = [
        f"### `{first.profile_id}`: {vendor_model or first.device_type}", "",
        (f"Folder `{folder}`, one object per device ({names}); `{{device}}` is the device's "
         "`node_name` (its id unless set)."), "",
        "| point | node id | browse name | data type | unit (UNECE code) | EURange | role |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for var in first.variables:
        template = var.node_id.replace(first.node_name, "{device}", 1)
        unit = f"{var.unit} ({UNITS[var.unit].code})" if var.unit else "-"
        rng = f"{var.eu_range[0]:g} .. {var.eu_range[1]:g}" if var.eu_range else "-"
        lines.append(f"| `{var.point}` | `nsu={plan.namespace_uri};s={template}` | `{var.leaf}` "
                     f"| Double | {unit} | {rng} | {var.role or '-'} |")
    return lines + [""]


def _gateway_section(gateway: OpcuaGateway, devices: list[SiteDevice]) -> list[str]:
    plan = plan_address_space(devices)
    example = plan.devices[0]
    var = example.variables[0]
    lines = [
        f"## OPC UA: the BMS (gateway `{gateway.id}`)", "",
        (f"Endpoint `{gateway.endpoint}` (the simulator listens on 127.0.0.1 only; tests use "
         "a free port). " + _security_text(gateway)), "",
        (f"Namespace URI `{plan.namespace_uri}`. Its **index is not fixed**: resolve it from "
         "the server's NamespaceArray on every connect (node ids are written `nsu=...`); the "
         "simulator's `restart()` shifts the index on purpose."), "",
        (f"Browse path of every variable: `Objects/{ROOT_FOLDER}/<System>/<device>/<Leaf>`, "
         "every BrowseName in the BMS namespace; the NodeId is the string id `<device>.<Leaf>` "
         "(folders and device objects: `BMS/<System>/<device>`). Every variable is a read-only "
         "scalar **Double**, `Status` (0 off, 1 running, 2 alarm, 3 tripped) and `Running` "
         "(0/1) included. Analog variables carry an `EngineeringUnits` property "
         "(EUInformation, UNECE Rec. 20 code, namespace "
         "`http://www.opcfoundation.org/UA/units/un/cefact`) and, where the physics bounds "
         "them, an `EURange` (AnalogItemType; BaseAnalogType otherwise)."), "",
        ("Values change once per plant tick (1 s); each write carries the plant's time as "
         "SourceTimestamp. A subscription sees every change (MinimumSamplingInterval 0)."), "",
        STATUS_TABLE,
    ]
    by_profile: dict[str, list[DeviceSpec]] = {}
    for spec in plan.devices:
        by_profile.setdefault(spec.profile_id, []).append(spec)
    models = {d.profile_id: d.profile.vendor_model for d in devices}
    for profile_id, specs in by_profile.items():
        lines += _profile_section(plan, specs, models[profile_id])
    obj = f"{ROOT_FOLDER}/{example.folder}/{example.node_name}"
    lines += [
        "### Reading by hand", "",
        ("asyncua's command-line tools (in the venv) take `ns=<index>`, not `nsu=`: read the "
         "NamespaceArray (i=2255) first; the BMS URI's position in it is the index (2 on a "
         f"fresh start). Folders and device objects have string ids too (`{obj}`)."), "",
        "```sh",
        f".venv/bin/uaread -u {gateway.endpoint} -n i=2255",
        f".venv/bin/uals -u {gateway.endpoint} -n 'ns=2;s={obj}' -l 1",
        f".venv/bin/uaread -u {gateway.endpoint} -n 'ns=2;s={var.node_id}'",
        "```", "",
        ("node-opcua, a second stack (`scripts/install-node-deps.sh` installs it into "
         "tests/opcua_node), resolves the URI itself and prints JSON:"), "",
        "```sh",
        (f"node tests/opcua_node/read.js --endpoint {gateway.endpoint} "
         f"--namespace {plan.namespace_uri} --pki /tmp/dcim-node-pki --nodes {var.node_id}"),
        "```", "",
    ]
    return lines


def opcua_device_docs(site: Site) -> str:
    """Markdown for docs/devices.md: the BMS address space, node ids, units and status codes."""
    by_gateway: dict[str, list[SiteDevice]] = {}
    gateways: dict[str, OpcuaGateway] = {}
    for device in site.devices.values():
        if isinstance(device.gateway, OpcuaGateway):
            by_gateway.setdefault(device.gateway.id, []).append(device)
            gateways[device.gateway.id] = device.gateway
    lines: list[str] = []
    for gateway_id, devices in by_gateway.items():
        lines += _gateway_section(gateways[gateway_id], devices)
    return "\n".join(lines).rstrip() + "\n"
