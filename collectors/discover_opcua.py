"""OPC UA discovery: browse a server from Objects and draft a gateway, profiles and devices.

The walk is breadth-first over hierarchical references, a level at a time in batched
Browse requests (BATCH nodes each), and bounded by a node count; the
standard namespace (index 0: the Server object and its kin) is not entered. Every address
is written with its namespace URI (`nsu=`, `uri|Name`), never a bare index. Variables are
grouped by the object that holds them; objects whose variables have the same names under
the same parent path are one device class: one profile with `{device}` in its browse paths,
one device per object. Grouping and the draft are pure; `browse` is the I/O edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, Node, ua

MAX_NODES_DEFAULT = 2000
BATCH = 100  # nodes per Browse or Read request (servers cap MaxNodesPerBrowse/Read)
POINT_NAME = re.compile(r"[^a-z0-9_]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
Trail = tuple[tuple[str, str], ...]  # (namespace uri, browse name) from Objects
UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
# UNECE Rec. 20 codes (EUInformation.UnitId, OPC UA Part 8) of the units dcim writes itself,
# and the suffix a point name takes for each (power_kw, supply_temp_c)
DCIM_UNITS: dict[str, tuple[str, str]] = {
    "CEL": ("degC", "c"), "KWT": ("kW", "kw"), "KWH": ("kWh", "kwh"), "P1": ("%", "pct"),
    "MQH": ("m3/h", "m3h"), "MTQ": ("m3", "m3"), "KVA": ("kVA", "kva"), "AMP": ("A", "a"),
    "VLT": ("V", "v"), "HTZ": ("Hz", "hz"), "SEC": ("s", "s"), "LTR": ("L", "l"),
}
SUFFIXES = dict(DCIM_UNITS.values())


@dataclass(frozen=True, slots=True)
class FoundVariable:
    """One variable: where it is (by namespace URI), its data type and engineering unit."""

    path: tuple[tuple[str, str], ...]  # (namespace uri, browse name) from Objects
    node: str  # nsu=<uri>;<kind>=<id>
    data_type: str
    unit: str | None = None

    @property
    def browse_path(self) -> list[str]:
        """The path as the site file writes it: 'uri|Name' elements."""
        return [f"{uri}|{name}" for uri, name in self.path]


@dataclass
class Inventory:
    """What a browse found, and whether it stopped at the node bound."""

    endpoint: str
    namespaces: list[str]
    variables: list[FoundVariable] = field(default_factory=list)
    nodes_visited: int = 0
    truncated: bool = False


def node_text(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """A node id as `nsu=<uri>;s=<id>` (or i=, g=, b=)."""
    uri = namespaces[node_id.NamespaceIndex] if node_id.NamespaceIndex < len(namespaces) \
        else f"urn:unknown-namespace-{node_id.NamespaceIndex}"
    kind = {ua.NodeIdType.String: "s", ua.NodeIdType.Guid: "g",
            ua.NodeIdType.ByteString: "b"}.get(node_id.NodeIdType, "i")
    ident = node_id.Identifier.hex() if isinstance(node_id.Identifier, bytes) \
        else node_id.Identifier
    return f"nsu={uri};{kind}={ident}"


def data_type_name(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """The standard type's name (Double, Float, ...) or the type's node id text."""
    if node_id.NamespaceIndex == 0 and isinstance(node_id.Identifier, int):
        return str(ua.ObjectIdNames.get(node_id.Identifier, node_id.Identifier))
    return node_text(node_id, namespaces)


def unece_code(unit_id: int) -> str:
    """The UNECE code packed in an EUInformation UnitId (ASCII bytes, big-endian)."""
    if unit_id <= 0:
        return ""
    raw = unit_id.to_bytes((unit_id.bit_length() + 7) // 8, "big")
    return raw.decode("ascii", "replace") if raw.isascii() else ""


def eu_text(value: Any) -> str | None:
    """The unit of an EngineeringUnits (EUInformation) value: dcim's own name for a UNECE
    unit it knows (CEL: degC), else the display name, else the unit id."""
    if value is None:
        return None
    unit_id = getattr(value, "UnitId", None)
    if isinstance(unit_id, int) and getattr(value, "NamespaceUri", None) in (
            UNECE_NAMESPACE, "", None):
        known = DCIM_UNITS.get(unece_code(unit_id))
        if known:
            return known[0]
    display = getattr(getattr(value, "DisplayName", None), "Text", None)
    if display:
        return str(display)
    return str(unit_id) if unit_id is not None else None


async def _children(client: Client, node_ids: list[ua.NodeId]
                    ) -> list[list[ua.ReferenceDescription]]:
    """Forward hierarchical references of many nodes, BATCH nodes per Browse request."""
    out: list[list[ua.ReferenceDescription]] = []
    for first in range(0, len(node_ids), BATCH):
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        for node_id in node_ids[first:first + BATCH]:
            desc = ua.BrowseDescription()
            desc.NodeId = node_id
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
            desc.IncludeSubtypes = True
            desc.ResultMask = ua.BrowseResultMask.All
            params.NodesToBrowse.append(desc)
        for result in await client.uaclient.browse(params):
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point:  # the server gave a part: ask for the rest
                more = ua.BrowseNextParameters()
                more.ContinuationPoints = [point]
                more.ReleaseContinuationPoints = False
                nxt = await client.uaclient.browse_next(more)
                if not nxt:
                    break
                refs.extend(nxt[0].References or [])
                point = nxt[0].ContinuationPoint
            out.append(refs)
    return out


async def _read_batched(client: Client, nodes: list[Node],
                        attribute: ua.AttributeIds) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for first in range(0, len(nodes), BATCH):
        out += await client.read_attributes(nodes[first:first + BATCH], attribute)
    return out


async def browse(client: Client, *, max_nodes: int = MAX_NODES_DEFAULT,
                 endpoint: str = "") -> Inventory:
    """Walk hierarchical references from Objects, level by level (at most max_nodes nodes)."""
    namespaces = await client.get_namespace_array()
    inv = Inventory(endpoint, namespaces)
    level: list[tuple[ua.NodeId, Trail]] = [(client.nodes.objects.nodeid, ())]
    seen: set[ua.NodeId] = set()
    found: list[tuple[ua.NodeId, Trail]] = []
    eu_nodes: dict[int, Node] = {}  # index in found -> its EngineeringUnits property
    index_of: dict[ua.NodeId, int] = {}  # a variable's node id -> its index in found
    while level:
        next_level: list[tuple[ua.NodeId, Trail]] = []
        for (parent, path), refs in zip(level, await _children(client, [n for n, _ in level])):
            for ref in refs:
                child_id = ref.NodeId
                if ref.NodeClass not in (ua.NodeClass.Object, ua.NodeClass.Variable):
                    continue
                if child_id.NamespaceIndex == 0 and not path:
                    continue  # the Server object and other standard nodes
                if ref.ReferenceTypeId.NamespaceIndex == 0 \
                        and ref.ReferenceTypeId.Identifier == ua.ObjectIds.HasProperty:
                    if ref.BrowseName.Name == "EngineeringUnits" and parent in index_of:
                        eu_nodes[index_of[parent]] = client.get_node(child_id)
                    continue  # properties describe their parent; they are not points
                if child_id in seen:
                    continue
                if inv.nodes_visited >= max_nodes:
                    inv.truncated = True
                    break
                seen.add(child_id)
                inv.nodes_visited += 1
                uri = namespaces[ref.BrowseName.NamespaceIndex] \
                    if ref.BrowseName.NamespaceIndex < len(namespaces) else ""
                child_path = (*path, (uri, ref.BrowseName.Name))
                if ref.NodeClass == ua.NodeClass.Variable:
                    index_of[child_id] = len(found)
                    found.append((child_id, child_path))
                next_level.append((child_id, child_path))  # variables: for their properties
        level = [] if inv.truncated else next_level
    if found:
        types = await _read_batched(client, [client.get_node(n) for n, _ in found],
                                    ua.AttributeIds.DataType)
        eu_values = await _read_batched(client, list(eu_nodes.values()), ua.AttributeIds.Value)
        units = {i: dv.Value.Value if dv.Value is not None else None
                 for i, dv in zip(eu_nodes, eu_values)}
        for i, ((node_id, path), dv) in enumerate(zip(found, types)):
            type_id = dv.Value.Value if dv.Value is not None else None
            type_name = data_type_name(type_id, namespaces) if isinstance(type_id, ua.NodeId) \
                else "?"
            inv.variables.append(FoundVariable(path, node_text(node_id, namespaces),
                                               type_name, eu_text(units.get(i))))
    return inv


# ---------------------------------------------------------------- the draft (pure)


def point_name(browse_name: str, taken: set[str], unit: str | None = None) -> str:
    """A point name (lower snake case, with the unit's suffix, unique in its profile) from a
    browse name."""
    base = POINT_NAME.sub("_", _CAMEL.sub("_", browse_name).lower()).strip("_")[:60] or "point"
    if not base[0].isalpha():
        base = f"p_{base}"[:60]
    suffix = SUFFIXES.get(unit or "")
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base[:59 - len(suffix)]}_{suffix}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-._")[:64] or "class"


def build_draft(inv: Inventory, *, gateway_id: str = "bms", monitors: str | None = None,
                security: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """(site fragment, comment lines): a profile per device class, a device per object."""
    by_object: dict[tuple[tuple[str, str], ...], list[FoundVariable]] = {}
    for var in inv.variables:
        by_object.setdefault(var.path[:-1], []).append(var)
    classes: dict[tuple[Any, ...], str] = {}
    profiles: dict[str, dict[str, Any]] = {}
    devices: list[dict[str, Any]] = []
    notes: list[str] = []
    for obj_path, variables in by_object.items():
        if not obj_path:
            continue  # a variable right under Objects has no object to be a device
        parent, (obj_uri, obj_name) = obj_path[:-1], obj_path[-1]
        key = (parent, obj_uri, tuple(v.path[-1] for v in variables))
        pid = classes.get(key)
        if pid is None:
            pid = base = _slug("-".join(name for _, name in parent[-2:]) or obj_name).lower()
            n = 2
            while pid in profiles:
                pid, n = f"{base[:60]}-{n}", n + 1
            classes[key] = pid
            taken: set[str] = set()
            points = []
            for var in variables:
                path = [*(f"{u}|{name}" for u, name in parent), f"{obj_uri}|{{device}}",
                        var.browse_path[-1]]
                point: dict[str, Any] = {"name": point_name(var.path[-1][1], taken, var.unit),
                                         "browse_path": path}
                if var.unit:
                    point["unit"] = var.unit
                points.append(point)
            profiles[pid] = {"protocol": "opcua", "device_type": "meter",
                             "vendor_model": f"{'/'.join(n for _, n in parent)} objects",
                             "mode": "subscribe", "points": points}
            notes.append(f"profile {pid}: " + ", ".join(
                f"{v.path[-1][1]} ({v.data_type}{', ' + v.unit if v.unit else ''})"
                for v in variables))
        device: dict[str, Any] = {"id": _slug(f"{gateway_id}-{obj_name}"), "profile": pid,
                                  "gateway": gateway_id, "node_name": obj_name}
        if monitors is not None:  # omitted: the device measures the site as a whole
            device["monitors"] = monitors
        devices.append(device)
    gateway: dict[str, Any] = {"id": gateway_id, "protocol": "opcua", "endpoint": inv.endpoint}
    if security:
        gateway["security"] = security
    notes.append("device_type 'meter' is a placeholder in every profile: set the real one, "
                 "add roles, and monitors: on devices that measure a component or rack")
    if inv.truncated:
        notes.append(f"the browse stopped at {inv.nodes_visited} nodes (--max-nodes): "
                     "the server holds more")
    return {"gateways": [gateway], "profiles": profiles, "devices": devices}, notes


def render(data: dict[str, Any], notes: list[str], header: str) -> str:
    """The draft as YAML under its comment lines."""
    import yaml

    lines = [f"# {header}", *(f"# {n}" for n in notes)]
    return "\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False)
