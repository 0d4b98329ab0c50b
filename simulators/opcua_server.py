"""The BMS as an OPC UA server: the mechanical plant's devices under Objects/BMS.

The address space is declared in opcua_space (pure data); this module serves it with
asyncua, writes each tick's changed values with the snapshot time as SourceTimestamp and a
StatusCode from the device's health, and can restart with a different namespace index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlparse

from asyncua import Server, ua
from dcim.simulators.opcua_docs import opcua_device_docs
from dcim.simulators.opcua_security import (
    SERVER_APP_URI,
    PasswordUserManager,
    ServerSecurity,
    certificate_validator,
)
from dcim.simulators.opcua_space import (
    ROOT_FOLDER,
    UNIT_STATUS_TRIPPED,
    UNITS,
    DeviceSpec,
    SpacePlan,
    VariableSpec,
    plan_address_space,
    status_code,
)
from dcim.simulators.snapshot import DeviceHealth, DeviceReading, Snapshot

from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaGateway

__all__ = ["OpcuaSimServer", "ServerSecurity", "free_port", "opcua_device_docs", "point_value"]

log = logging.getLogger(__name__)
BIND_ATTEMPTS = 5
RESTART_NAMESPACE = "urn:dcim:simulator:restart-padding:{n}"
Key = tuple[str, str]  # (device id, point name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def point_value(device: DeviceSpec, var: VariableSpec, reading: DeviceReading | None,
                previous: float | None) -> tuple[float, int]:
    """The value and StatusCode a point shows for a reading (pure; previous = last shown)."""
    last = 0.0 if previous is None else previous
    if reading is None:
        return last, ua.StatusCodes.BadNoCommunication
    point_level = var.point in reading.point_health
    health = reading.point_health.get(var.point, reading.health)
    code = status_code(health, point_level=point_level)
    if health is DeviceHealth.NO_DATA:
        return last, code  # kept for comparison; the server shows a Bad value as null
    value = reading.values.get(var.point)
    if value is None or not math.isfinite(value):
        return last, ua.StatusCodes.BadSensorFailure if code == ua.StatusCodes.Good else code
    if reading.health is DeviceHealth.FAULT and var.role == "unit_status" and value < 2:
        value = UNIT_STATUS_TRIPPED  # the device trips: alarm shown, values stay Good
    return float(value), code


def nid(identifier: str | int, idx: int = 0) -> ua.NodeId:
    """A NodeId from plain values (asyncua annotates its fields as ua.String, ua.Int16...)."""
    return ua.NodeId(identifier, idx)  # type: ignore[arg-type]


def status(code: int) -> ua.StatusCode:
    """A StatusCode from one of ua.StatusCodes."""
    return ua.StatusCode(code)  # type: ignore[arg-type]


# Before the first update (the server nulls the value of any Bad status, OPC UA Part 4 7.7.1).
WAITING = ua.DataValue(ua.Variant(None, ua.VariantType.Null),
                       status(ua.StatusCodes.BadWaitingForInitialData))


async def _write(server: Server, node_id: ua.NodeId, data: ua.DataValue) -> None:
    """Write a value; asyncua returns (not raises) a bad status, e.g. on a type mismatch."""
    result = await server.iserver.aspace.write_attribute_value(node_id, ua.AttributeIds.Value, data)
    if not result.is_good():
        raise RuntimeError(f"writing {node_id.to_string()} failed: {result.name}")


def _qname(name: str, idx: int) -> ua.QualifiedName:
    return ua.QualifiedName(name, idx)


def _object_item(node_id: ua.NodeId, name: str, parent: ua.NodeId, *, folder: bool
                 ) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = _qname(name, node_id.NamespaceIndex)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = nid(ua.ObjectIds.Organizes if folder else ua.ObjectIds.HasComponent)
    item.TypeDefinition = nid(ua.ObjectIds.FolderType if folder
                                    else ua.ObjectIds.BaseObjectType)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    item.NodeAttributes = attrs
    return item


def _variable_item(node_id: ua.NodeId, name: str, parent: ua.NodeId, value: ua.Variant,
                   data_type: int, type_definition: int, *, is_property: bool) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = node_id
    item.BrowseName = _qname(name, 0 if is_property else node_id.NamespaceIndex)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = nid(ua.ObjectIds.HasProperty if is_property
                                     else ua.ObjectIds.HasComponent)
    item.TypeDefinition = nid(type_definition)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(name)
    attrs.DataType = nid(data_type)
    attrs.Value = value
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.WriteMask = attrs.UserWriteMask = 0
    attrs.Historizing = False
    attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.MinimumSamplingInterval = 0.0  # values change on write: report every change
    item.NodeAttributes = attrs
    return item


def address_space_items(plan: SpacePlan, idx: int) -> tuple[list[ua.AddNodesItem],
                                                             dict[Key, ua.NodeId]]:
    """AddNodes items for the whole plan (parents first) and each point's NodeId."""
    objects = nid(ua.ObjectIds.ObjectsFolder)
    root = nid(ROOT_FOLDER, idx)
    items = [_object_item(root, ROOT_FOLDER, objects, folder=True)]
    for folder in plan.folders:
        items.append(_object_item(nid(f"{ROOT_FOLDER}/{folder}", idx), folder, root,
                                  folder=True))
    node_ids: dict[Key, ua.NodeId] = {}
    for device in plan.devices:
        obj = nid(f"{ROOT_FOLDER}/{device.folder}/{device.node_name}", idx)
        items.append(_object_item(obj, device.node_name,
                                  nid(f"{ROOT_FOLDER}/{device.folder}", idx), folder=False))
        for var in device.variables:
            node_id = nid(var.node_id, idx)
            node_ids[(device.device_id, var.point)] = node_id
            items.append(_variable_item(node_id, var.leaf, obj, ua.Variant(0.0, ua.VariantType.Double), ua.ObjectIds.Double,
                                        var.type_definition, is_property=False))
            if var.unit is not None:
                eu = ua.Variant(UNITS[var.unit].eu_information(), ua.VariantType.ExtensionObject)
                items.append(_variable_item(
                    nid(f"{var.node_id}#EngineeringUnits", idx), "EngineeringUnits",
                    node_id, eu, ua.ObjectIds.EUInformation, ua.ObjectIds.PropertyType,
                    is_property=True))
            if var.eu_range is not None:
                rng = ua.Variant(ua.Range(*var.eu_range), ua.VariantType.ExtensionObject)
                items.append(_variable_item(
                    nid(f"{var.node_id}#EURange", idx), "EURange", node_id, rng,
                    ua.ObjectIds.Range, ua.ObjectIds.PropertyType, is_property=True))
    return items, node_ids


@dataclass(frozen=True, slots=True)
class _Built:
    server: Server
    namespace_index: int
    node_ids: dict[Key, ua.NodeId]


class OpcuaSimServer:
    """A BMS OPC UA server for the given gateway's devices, fed by plant snapshots."""

    def __init__(self, gateway: OpcuaGateway, devices: list[SiteDevice], *,
                 host: str = "127.0.0.1", port: int | None = None,
                 security: ServerSecurity | None = None) -> None:
        url = urlparse(gateway.endpoint)
        self.gateway = gateway
        self.plan = plan_address_space(devices)
        self.host = host
        self.path = url.path or "/"
        # None: the gateway's configured port; 0: a free port chosen at start.
        self._port = (url.port or 4840) if port is None else port
        self._fixed_port = self._port != 0
        self.security = security
        self._server: Server | None = None
        self._restarts = 0
        self._namespace_index: int | None = None
        self._node_ids: dict[Key, ua.NodeId] = {}
        self._shown: dict[Key, ua.DataValue] = {}
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        """The endpoint URL clients connect to (on the bound host and port)."""
        if self._port == 0:
            raise RuntimeError("the port is chosen at start(): start the server first")
        return f"opc.tcp://{self.host}:{self._port}{self.path}"

    @property
    def port(self) -> int:
        """The TCP port (0 until started when a free port was asked for)."""
        return self._port

    @property
    def namespace_uri(self) -> str:
        """The BMS namespace URI (from the profiles' node ids)."""
        return self.plan.namespace_uri

    @property
    def namespace_index(self) -> int:
        """The BMS namespace's current index (changes on restart)."""
        if self._namespace_index is None:
            raise RuntimeError("server not started")
        return self._namespace_index

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    def node_id(self, device_id: str, point: str) -> ua.NodeId:
        """The current NodeId of a device's point."""
        return self._node_ids[(device_id, point)]

    async def start(self) -> None:
        """Build the address space and listen (a free port when asked for port 0)."""
        async with self._lock:
            if self._server is not None:
                return
            for attempt in range(1, BIND_ATTEMPTS + 1):
                port = self._port if self._fixed_port else free_port(self.host)
                built = await self._build(port, self._restarts)
                try:
                    await built.server.start()
                except OSError as exc:
                    if attempt == BIND_ATTEMPTS or self._fixed_port:
                        raise OSError(exc.errno, f"cannot listen on {self.host}:{port}: "
                                                 f"{exc.strerror}") from exc
                    log.info("port %s taken meanwhile (%s), trying another", port, exc.strerror)
                    continue
                self._port, self._fixed_port = port, True  # a restart comes back on this port
                await self._commit(built)
                return

    async def stop(self) -> None:
        """Close every session and stop listening."""
        async with self._lock:
            await self._stop_server()

    async def restart(self, down_s: float = 1.0) -> None:
        """Go down for about down_s, come back on the same port with a new namespace index."""
        async with self._lock:
            if self._server is None:
                raise RuntimeError("restart() needs a started server")
            # Build the next server while this one still serves, so down time is down_s.
            built = await self._build(self._port, self._restarts + 1)
            await self._stop_server()
            await asyncio.sleep(down_s)
            try:
                await built.server.start()
            except BaseException:  # cancelled or port taken: leave nothing listening
                with contextlib.suppress(Exception):
                    await built.server.stop()
                raise
            self._restarts += 1
            await self._commit(built)

    async def update(self, snapshot: Snapshot) -> int:
        """Write every variable whose value or status changed; returns how many were written."""
        server = self._server
        if server is None:
            return 0
        source = ua.DateTime.fromtimestamp(snapshot.time_s, UTC)
        now = ua.DateTime.now(UTC)
        written = 0
        for device in self.plan.devices:
            reading = snapshot.devices.get(device.device_id)
            for var in device.variables:
                key = (device.device_id, var.point)
                shown = self._shown.get(key)
                previous = None if shown is None or shown.Value is None else shown.Value.Value
                value, code = point_value(device, var, reading, previous)
                if shown is not None and previous == value and shown.StatusCode is not None \
                        and shown.StatusCode.value == code:
                    continue
                data = ua.DataValue(ua.Variant(value, ua.VariantType.Double), status(code),
                                    SourceTimestamp=source, ServerTimestamp=now)
                await _write(server, self._node_ids[key], data)
                self._shown[key] = data
                written += 1
        return written

    async def _build(self, port: int, restarts: int) -> _Built:
        """A configured asyncua server with the address space, not yet listening."""
        security = self.security
        users = security.users if security else None
        server = Server(user_manager=PasswordUserManager(users) if users else None)
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{port}{self.path}")
        server.set_server_name(f"dcim BMS simulator ({self.gateway.id})")
        await server.set_application_uri(security.application_uri if security else SERVER_APP_URI)
        server.set_identity_tokens([ua.UserNameIdentityToken] if users
                                   else [ua.AnonymousIdentityToken])
        if security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            server.set_security_policy(security.policies())
            await server.load_certificate(str(security.certificate))
            await server.load_private_key(str(security.private_key))
            server.set_certificate_validator(await certificate_validator(security.trust_dir))
        # After a restart, pad the namespace array so the BMS index differs from last time:
        # clients that cached the index break, clients resolving the URI do not.
        padding = 0 if restarts == 0 else 1 + (restarts + 1) % 2
        for n in range(padding):
            await server.register_namespace(RESTART_NAMESPACE.format(n=n))
        idx = await server.register_namespace(self.plan.namespace_uri)
        items, node_ids = address_space_items(self.plan, idx)
        for result in await server.iserver.isession.add_nodes(items):
            result.StatusCode.check()
        return _Built(server, idx, node_ids)

    async def _commit(self, built: _Built) -> None:
        """Make a listening server current (so stop() finds it), then show the last values."""
        self._server, self._namespace_index, self._node_ids = (
            built.server, built.namespace_index, built.node_ids)
        for key, node_id in built.node_ids.items():
            await _write(built.server, node_id, self._shown.get(key, WAITING))

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # asyncua's stop() waits up to 1 s for its clock task to wake; cancel it instead.
        clock = getattr(server.iserver, "time_task", None)
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            server.iserver.time_task = None
        await server.stop()
