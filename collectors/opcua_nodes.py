"""OPC UA point addresses: parsed once from the config, resolved on every connection.

A point names its node by namespace URI (`nsu=<uri>;s=<id>`) or by a browse path of
`<uri>|Name` elements, never by a namespace index: the index is looked up in the server's
NamespaceArray each time a connection is made, because a server may renumber its
namespaces when it restarts. The StatusCode-to-quality mapping lives here too (pure).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Client, ua

from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaPoint
from dcim.storage.base import Quality

log = logging.getLogger(__name__)

# nsu=<uri>;<s|i|g|b>=<identifier>, as in OPC UA Part 6 5.3.1.10 (expanded node id text)
NODE_PATTERN = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[sigb])=(?P<id>.+)$")
SEVERITY_SHIFT = 30  # StatusCode bits 31-30: 00 Good, 01 Uncertain, 10/11 Bad
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PointAddress:
    """Where one point lives on the server, independent of namespace indexes."""

    device_id: str
    point: str
    uri: str = ""
    kind: str = "s"  # identifier type of a node id: s, i, g or b
    identifier: str = ""
    browse: tuple[tuple[str, str], ...] = ()  # (namespace uri, browse name) from Objects

    @property
    def text(self) -> str:
        """The address as written in the config (after {device} substitution)."""
        if self.browse:
            return "/".join(f"{uri}|{name}" for uri, name in self.browse)
        return f"nsu={self.uri};{self.kind}={self.identifier}"


def parse_address(device: SiteDevice, point: OpcuaPoint) -> PointAddress:
    """The address of a point with `{device}` replaced; ValueError names a malformed one."""
    where = f"device {device.id} point {point.name}"
    if point.node is not None:
        match = NODE_PATTERN.match(point.node.replace("{device}", device.node_name))
        if match is None:
            raise ValueError(f"{where}: node {point.node!r} is not 'nsu=<namespace uri>;s=<id>' "
                             "(or i=/g=/b=)")
        if match["kind"] == "i" and not match["id"].isdigit():
            raise ValueError(f"{where}: numeric identifier expected after i= in {point.node!r}")
        return PointAddress(device.id, point.name, match["uri"], match["kind"], match["id"])
    elements = []
    for element in point.browse_path or []:
        uri, sep, name = element.replace("{device}", device.node_name).partition("|")
        if not sep or not uri or not name:
            raise ValueError(f"{where}: browse_path element {element!r} is not 'uri|Name'")
        elements.append((uri, name))
    return PointAddress(device.id, point.name, browse=tuple(elements))


def quality_of(status: int) -> Quality:
    """OPC UA status to sample quality: Good -> GOOD, Uncertain* -> STALE, Bad* -> BAD."""
    severity = (status >> SEVERITY_SHIFT) & 0b11
    if severity == 0:
        return Quality.GOOD
    if severity == 1:
        return Quality.STALE
    return Quality.BAD


def status_name(code: int) -> str:
    """The symbolic name of a StatusCode, e.g. BadNoCommunication."""
    return ua.StatusCode(code).name  # type: ignore[arg-type]


def as_number(value: Any) -> float | None:
    """A variant value as float (bool and ints included), None if not a finite number."""
    if isinstance(value, bool | int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def timestamp_ns(when: datetime | None) -> int | None:
    """An OPC UA DateTime as ns since the Unix epoch (naive means UTC); None when absent
    (or the zero DateTime, 1601, that some servers send for "no time")."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ns: int = (when - _UNIX_EPOCH) // _MICROSECOND * 1000
    return ns if ns > 0 else None


def value_time_ns(data: ua.DataValue, policy: str) -> int | None:
    """The device's time of a value under a gateway's `timestamps` policy: 'source' the
    SourceTimestamp, else the ServerTimestamp; 'server' the ServerTimestamp; None if absent."""
    if policy == "source":
        source = timestamp_ns(data.SourceTimestamp)
        if source is not None:
            return source
    return timestamp_ns(data.ServerTimestamp)


def judge_time(value_ns: int, received_ns: int, *, first: bool, max_skew_ns: int,
               late_ns: int) -> tuple[int, int | None]:
    """(time to store a new value at, measured skew or None) for a value stamped value_ns
    by the device and received at received_ns (the collector's clock).

    0 means "no time of its own: store it at the next boundary": a connection's first value
    much older than late_ns + max_skew_ns is an old unchanged value (a subscription's
    initial value, a first read), not a fresh change. A changed value further than
    max_skew_ns in the future, or older than late_ns (how late a change may legitimately
    arrive: the poll or publishing interval) + max_skew_ns, shows the device's clock is off:
    stored at the receive time, and the skew returned for the log.
    """
    lag = received_ns - value_ns
    if lag > late_ns + max_skew_ns:
        return (0, None) if first else (received_ns, -lag)
    if -lag > max_skew_ns:
        return received_ns, -lag
    return value_ns, None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Node ids of one connection: by (device, point), or the reason a point has none."""

    node_ids: dict[tuple[str, str], ua.NodeId]
    errors: dict[tuple[str, str], str]
    namespace_indexes: dict[str, int]


def _node_id(address: PointAddress, index: int) -> ua.NodeId:
    identifier: Any = address.identifier
    if address.kind == "i":
        identifier = int(identifier)
    elif address.kind == "g":
        identifier = uuid.UUID(identifier)
    elif address.kind == "b":
        return ua.NodeId(identifier.encode(), index, ua.NodeIdType.ByteString)  # type: ignore[arg-type]
    return ua.NodeId(identifier, index)  # type: ignore[arg-type]


async def resolve(client: Client, addresses: Sequence[PointAddress]) -> Resolution:
    """Map every address to a NodeId on this connection (NamespaceArray, TranslateBrowsePaths).

    A node id is only kept if the server knows the node (its NodeClass reads Good), so a
    typo shows as a resolution error here rather than as a Bad value later.
    """
    namespaces: list[str] = await client.get_namespace_array()
    index = {uri: i for i, uri in enumerate(namespaces)}
    node_ids: dict[tuple[str, str], ua.NodeId] = {}
    errors: dict[tuple[str, str], str] = {}
    paths: list[tuple[tuple[str, str], ua.RelativePath]] = []
    for address in addresses:
        key = (address.device_id, address.point)
        missing = [u for u in ([address.uri] if not address.browse else
                               [uri for uri, _ in address.browse]) if u not in index]
        if missing:
            errors[key] = f"namespace {missing[0]!r} is not in the server's NamespaceArray"
        elif address.browse:
            paths.append((key, _relative_path(address.browse, index)))
        else:
            try:
                node_ids[key] = _node_id(address, index[address.uri])
            except (ValueError, ua.UaError) as exc:
                errors[key] = f"bad identifier: {exc}"
    if paths:
        results = await client.translate_browsepaths(
            ua.NodeId(ua.ObjectIds.ObjectsFolder), [p for _, p in paths])  # type: ignore[arg-type]
        for (key, _), result in zip(paths, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId
                node_ids[key] = ua.NodeId(target.Identifier, target.NamespaceIndex,
                                          target.NodeIdType)
            else:
                errors[key] = f"browse path not found ({result.StatusCode.name})"
    if node_ids:
        keys = list(node_ids)
        checks = await client.uaclient.read_attributes([node_ids[k] for k in keys],
                                                      ua.AttributeIds.NodeClass)
        for key, check in zip(keys, checks, strict=True):
            if check.StatusCode is not None and not check.StatusCode.is_good():
                errors[key] = f"node {node_ids.pop(key).to_string()} unknown ({check.StatusCode.name})"
    used = {a.uri for a in addresses} | {uri for a in addresses for uri, _ in a.browse}
    return Resolution(node_ids, errors, {u: index[u] for u in sorted(used) if u in index})


def _relative_path(browse: tuple[tuple[str, str], ...], index: dict[str, int]) -> ua.RelativePath:
    path = ua.RelativePath()
    for uri, name in browse:
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)  # type: ignore[arg-type]
        element.IsInverse = False  # type: ignore[assignment]
        element.IncludeSubtypes = True  # type: ignore[assignment]
        element.TargetName = ua.QualifiedName(name, index[uri])
        path.Elements.append(element)
    return path
