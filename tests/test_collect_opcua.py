"""The OPC UA collector against the BMS simulator: subscribe, poll, status, restart, security."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from dcim.collectors.base import DeviceStatus
from dcim.collectors.opcua import OpcuaCollector
from dcim.collectors.opcua_nodes import PointAddress, parse_address, quality_of
from dcim.simulators.opcua_security import TestPki, make_test_pki
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.snapshot import DeviceHealth, DeviceReading, Snapshot

from dcim.site import Site, load_site
from dcim.site.model import SiteDevice
from dcim.config.site import OpcuaGateway, OpcuaPoint, OpcuaProfile, OpcuaSecurity
from dcim.storage.base import Quality, Sample

ROOT = Path(__file__).resolve().parents[1]
SITE: Site = load_site(ROOT / "config" / "cyberport5.yaml")
GATEWAY = next(g for g in SITE.config.gateways if isinstance(g, OpcuaGateway) and g.id == "bms")
DEVICES: list[SiteDevice] = [d for d in SITE.devices.values() if d.gateway.id == "bms"]
URI = "urn:dcim:cyberport5:bms"
T0 = 1_767_225_600.0
SEC = 1_000_000_000
Values = dict[tuple[str, str], float]

module_loop = pytest.mark.asyncio(loop_scope="module")


# ---------------------------------------------------------------- helpers


class ListSink:
    """A list-backed sample sink (without cycle markers)."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        """Keep the samples."""
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)

    def by_time(self) -> dict[int, list[Sample]]:
        """Samples grouped by timestamp, oldest first."""
        out: dict[int, list[Sample]] = defaultdict(list)
        for s in self.samples:
            out[s.time_ns].append(s)
        return dict(sorted(out.items()))


class CycleSink(ListSink):
    """A list-backed sink that also keeps the cycle markers: (what, tag, count)."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, str, int]] = []

    def begin_cycle(self, tag: str, expected: int) -> None:
        """Note the announced cycle."""
        self.marks.append(("begin", tag, expected))

    def add(self, samples: Sample | Iterable[Sample], *, cycle: str | None = None) -> None:
        """Keep the samples and note the cycle they close."""
        before = len(self.samples)
        super().add(samples)
        if cycle is not None:
            self.marks.append(("add", cycle, len(self.samples) - before))


def values_at(tick: int) -> Values:
    """Distinct values per device and point, different every tick."""
    return {(d.id, p.name): round(100 * i + j + 0.25 + tick * 0.5, 3)
            for i, d in enumerate(DEVICES) for j, p in enumerate(d.profile.points)}


def snapshot(tick: int, readings: dict[str, DeviceReading] | None = None) -> Snapshot:
    """A handcrafted plant snapshot, all OK unless readings replace some devices."""
    devices: dict[str, DeviceReading] = {}
    for (dev, point), value in values_at(tick).items():
        devices.setdefault(dev, DeviceReading({})).values[point] = value
    devices.update(readings or {})
    return Snapshot(T0 + tick, devices)


def fast(devices: list[SiteDevice], **profile: Any) -> list[SiteDevice]:
    """The devices on a 1 s interval, with profile fields replaced."""
    return [dataclasses.replace(d, interval_s=1.0, profile=d.profile.model_copy(update=profile))
            for d in devices]


def aimed(server: OpcuaSimServer, devices: list[SiteDevice],
          security: OpcuaSecurity | None = None) -> list[SiteDevice]:
    """The devices with their gateway pointed at the test server (and its security), stamping
    samples with the aligned boundaries (the snapshots here are dated T0, long ago:
    test_collect_opcua_time.py covers the source and server policies)."""
    site = SITE.with_endpoints({"bms": (server.host, server.port)})
    gateway = site.config.gateways[[g.id for g in site.config.gateways].index("bms")]
    gateway = gateway.model_copy(update={"timestamps": "poll"})
    if security is not None:
        gateway = gateway.model_copy(update={"security": security})
    return [dataclasses.replace(d, gateway=gateway) for d in devices]


@asynccontextmanager
async def collecting(devices: list[SiteDevice], sink: ListSink | None = None, **options: Any
                     ) -> AsyncIterator[tuple[OpcuaCollector, ListSink]]:
    """A started collector over the devices into a list sink, closed afterwards."""
    sink = sink if sink is not None else ListSink()
    gateway = devices[0].gateway
    assert isinstance(gateway, OpcuaGateway)
    options = {"backoff_base_s": 0.2, "backoff_cap_s": 1.0} | options
    collector = OpcuaCollector(gateway, devices, sink, **options)
    await collector.start()
    try:
        yield collector, sink
    finally:
        await collector.close()


async def until(condition: Callable[[], bool], timeout_s: float = 8.0) -> None:
    """Wait (in real time: a real server is on the other side) until condition holds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def boundary_with(sink: ListSink, expected: Values, quality: Quality = Quality.GOOD
                  ) -> int | None:
    """The first boundary whose samples are exactly the expected values at that quality."""
    for t, samples in sink.by_time().items():
        got = {(s.series.device, s.series.point): (s.value, s.quality) for s in samples}
        if got == {k: (v, quality) for k, v in expected.items()}:
            return t
    return None


def assert_one_sample_per_point_and_boundary(sink: ListSink) -> None:
    """No duplicates: each series has at most one sample per boundary, on whole seconds."""
    counts = Counter((s.series, s.time_ns) for s in sink.samples)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:3]
    assert {s.time_ns % SEC for s in sink.samples} == {0}


def server_subscriptions(server: OpcuaSimServer) -> int:
    """Live subscriptions on the server (asyncua's internal subscription service)."""
    assert server._server is not None
    return len(server._server.iserver.subscription_service.subscriptions)


# ---------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain() -> AsyncIterator[OpcuaSimServer]:
    """A NoSecurity BMS server on a free port, shared by tests that set their own values."""
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0)
    await server.start()
    await server.update(snapshot(0))
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """Server, trusted client and untrusted client certificates."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(pki: TestPki) -> AsyncIterator[OpcuaSimServer]:
    """A server offering only Basic256Sha256 SignAndEncrypt, trusting pki.client."""
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0,
                            security=pki.server_security(modes=("SignAndEncrypt",)))
    await server.start()
    await server.update(snapshot(0))
    yield server
    await server.stop()


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(("code", "quality"), [
    (ua.StatusCodes.Good, Quality.GOOD),
    (ua.StatusCodes.GoodClamped, Quality.GOOD),
    (ua.StatusCodes.UncertainLastUsableValue, Quality.STALE),
    (ua.StatusCodes.UncertainSensorNotAccurate, Quality.STALE),
    (ua.StatusCodes.BadNoCommunication, Quality.BAD),
    (ua.StatusCodes.BadSensorFailure, Quality.BAD),
    (ua.StatusCodes.BadWaitingForInitialData, Quality.BAD),
], ids=["good", "good-clamped", "uncertain-last-usable", "uncertain-inaccurate",
        "bad-no-communication", "bad-sensor", "bad-waiting"])
def test_status_code_to_quality(code: int, quality: Quality) -> None:
    assert quality_of(code) is quality


def _device_with(points: list[dict[str, Any]], base: SiteDevice = DEVICES[0]) -> SiteDevice:
    profile = OpcuaProfile.model_validate({"protocol": "opcua", "device_type": base.device_type,
                                           "points": points})
    return dataclasses.replace(base, profile=profile)


@pytest.mark.parametrize(("point", "expected"), [
    ({"name": "p", "node": "nsu=urn:x;s={device}.Power"},
     PointAddress("CH-1", "p", "urn:x", "s", "CH-1.Power")),
    ({"name": "p", "node": "nsu=urn:x;i=1234"}, PointAddress("CH-1", "p", "urn:x", "i", "1234")),
    ({"name": "p", "browse_path": ["urn:x|BMS", "urn:x|{device}", "urn:y|Power"]},
     PointAddress("CH-1", "p", browse=(("urn:x", "BMS"), ("urn:x", "CH-1"), ("urn:y", "Power")))),
], ids=["string-id", "numeric-id", "browse-path"])
def test_parse_address(point: dict[str, Any], expected: PointAddress) -> None:
    device = _device_with([point])
    opc_point = device.profile.points[0]
    assert isinstance(opc_point, OpcuaPoint)
    assert parse_address(device, opc_point) == expected


def test_missing_password_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DCIM_TEST_BMS_PASSWORD", raising=False)
    gateway = GATEWAY.model_copy(update={"security": OpcuaSecurity(
        username="dcim", password_env="DCIM_TEST_BMS_PASSWORD", allow_insecure_password=True)})
    with pytest.raises(ValueError, match="DCIM_TEST_BMS_PASSWORD is not set"):
        OpcuaCollector(gateway, DEVICES, ListSink())


# ---------------------------------------------------------------- (a) subscribe, (b) poll


@module_loop
@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_values_equal_the_snapshot_on_aligned_boundaries(
        plain: OpcuaSimServer, mode: str) -> None:
    await plain.update(snapshot(1))
    async with collecting(aimed(plain, fast(DEVICES, mode=mode))) as (collector, sink):
        await until(lambda: boundary_with(sink, values_at(1)) is not None)
        first = boundary_with(sink, values_at(1))
        assert {h.status for h in collector.health.values()} == {DeviceStatus.UP}
        await plain.update(snapshot(2))
        await until(lambda: boundary_with(sink, values_at(2)) is not None)
        changed = boundary_with(sink, values_at(2))
        assert first is not None and changed is not None and changed > first
        await until(lambda: max(sink.by_time()) >= changed + SEC)
        later = {t: s for t, s in sink.by_time().items() if t > changed}
        assert all({x.value for x in s} <= set(values_at(2).values()) for s in later.values())
        assert_one_sample_per_point_and_boundary(sink)
        assert collector.subscriptions_created == (1 if mode == "subscribe" else 0)
        boundaries = len(sink.by_time())
        if mode == "poll":  # one batched Read per boundary for all 200 points
            assert collector.requests in (boundaries, boundaries + 1)
        else:  # notifications: the initial 200 and the changed 200
            assert collector.requests == 2 * len(values_at(1))


@module_loop
async def test_each_boundary_is_a_cycle_announced_then_closed(plain: OpcuaSimServer) -> None:
    """The sink hears begin_cycle before a boundary is sampled and the add that closes it;
    expected bounds what the add carries (nothing before the first connection attempt)."""
    await plain.update(snapshot(1))
    sink = CycleSink()
    devices = aimed(plain, fast(DEVICES))
    async with collecting(devices, sink) as (collector, _):
        await until(lambda: boundary_with(sink, values_at(1)) is not None)
    points = sum(len(d.profile.points) for d in devices)
    begins, adds = sink.marks[0::2], sink.marks[1::2]
    assert {(what, tag) for what, tag, _ in begins} == {("begin", "opcua:bms:1s")}
    assert {(what, tag) for what, tag, _ in adds} == {("add", "opcua:bms:1s")}
    assert len(begins) - len(adds) in (0, 1)  # the last may have been cut by close()
    assert all(b[2] == points and a[2] <= points for b, a in zip(begins, adds))
    assert sum(a[2] for a in adds) == len(sink.samples)
    assert adds[-1][2] == points


# ---------------------------------------------------------------- (c) status mapping


@module_loop
async def test_bad_keeps_last_good_value_and_uncertain_is_stale(plain: OpcuaSimServer) -> None:
    await plain.update(snapshot(3))
    async with collecting(aimed(plain, fast(DEVICES))) as (collector, sink):
        await until(lambda: boundary_with(sink, values_at(3)) is not None)
        now = values_at(4)
        await plain.update(snapshot(4, {
            "CH-1": DeviceReading({}, DeviceHealth.NO_DATA),
            "CH-2": DeviceReading({p: v for (d, p), v in now.items() if d == "CH-2"},
                                  DeviceHealth.UNCERTAIN),
            "CH-3": DeviceReading({p: v for (d, p), v in now.items() if d == "CH-3"},
                                  point_health={"chw_supply_temp_c": DeviceHealth.NO_DATA}),
        }))
        expected = {k: (v, Quality.GOOD) for k, v in now.items()}
        for (device, point), value in values_at(3).items():
            if device == "CH-1":
                expected[(device, point)] = (value, Quality.BAD)  # last good value kept
        for key, value in now.items():
            if key[0] == "CH-2":
                expected[key] = (value, Quality.STALE)  # uncertain: value kept, stale
        expected[("CH-3", "chw_supply_temp_c")] = (values_at(3)[("CH-3", "chw_supply_temp_c")],
                                                   Quality.BAD)

        def seen() -> bool:
            return any({(s.series.device, s.series.point): (s.value, s.quality) for s in b}
                       == expected for b in sink.by_time().values())

        await until(seen)
        await until(lambda: collector.health["CH-1"].status is DeviceStatus.DOWN, 3)
        assert collector.health["CH-3"].status is DeviceStatus.UP
        assert collector.health["CH-2"].status is DeviceStatus.STALE


# ---------------------------------------------------------------- (f) unresolvable points


@module_loop
async def test_unresolvable_points_are_bad_and_the_rest_good(plain: OpcuaSimServer) -> None:
    await plain.update(snapshot(5))
    chiller = DEVICES[0]
    points = [p.model_dump(exclude_none=True) for p in chiller.profile.points]
    points += [
        {"name": "missing_node", "node": f"nsu={URI};s={{device}}.NoSuchVariable"},
        {"name": "missing_namespace", "node": "nsu=urn:nobody:here;s={device}.ElectricalPower"},
        {"name": "power_by_path", "browse_path": [f"{URI}|BMS", f"{URI}|Chillers",
                                                  f"{URI}|{{device}}", f"{URI}|ElectricalPower"]},
        {"name": "missing_path", "browse_path": [f"{URI}|BMS", f"{URI}|Chillers",
                                                 f"{URI}|{{device}}", f"{URI}|Nope"]},
    ]
    devices = fast([_device_with(points, chiller)] + DEVICES[1:3])
    expected = {k: (v, Quality.GOOD) for k, v in values_at(5).items()
                if k[0] in {d.id for d in devices}}
    expected[(chiller.id, "power_by_path")] = expected[(chiller.id, "power_kw")]
    bad = {"missing_node", "missing_namespace", "missing_path"}
    for name in bad:
        expected[(chiller.id, name)] = (float("nan"), Quality.BAD)
    async with collecting(aimed(plain, devices)) as (collector, sink):
        def seen() -> bool:
            for samples in sink.by_time().values():
                got = {(s.series.device, s.series.point): (s.value, s.quality) for s in samples}
                if set(got) == set(expected) and all(
                        got[k] == v or (k[1] in bad and got[k][1] is Quality.BAD)
                        for k, v in expected.items()):
                    return True
            return False

        await until(seen)
        assert set(collector.unresolved) == {(chiller.id, n) for n in bad}
        assert "urn:nobody:here" in collector.unresolved[(chiller.id, "missing_namespace")]
        assert collector.health[chiller.id].status is DeviceStatus.UP


# ---------------------------------------------------------------- (d) restart


@module_loop
async def test_restart_reconnects_with_one_new_subscription_and_new_namespace_index(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dcim.collectors.opcua")
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0)
    await server.start()
    try:
        await server.update(snapshot(6))
        async with collecting(aimed(server, fast(DEVICES))) as (collector, sink):
            await until(lambda: boundary_with(sink, values_at(6)) is not None)
            index_before = collector.namespaces[URI]
            seen: set[DeviceStatus] = set()
            down: set[bool] = set()

            async def watch() -> None:
                while True:
                    seen.update(h.status for h in collector.health.values())
                    down.add(collector.gateway_down)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            try:
                await server.restart(down_s=2)
                await server.update(snapshot(7))
                await until(lambda: boundary_with(sink, values_at(7)) is not None, 12)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            assert DeviceStatus.DOWN in seen
            assert down == {False, True}
            assert not collector.gateway_down
            assert {h.status for h in collector.health.values()} == {DeviceStatus.UP}
            assert collector.namespaces[URI] == server.namespace_index != index_before
            assert (collector.subscriptions_created, collector.reconnects) == (2, 1)
            assert server_subscriptions(server) == 1
            qualities = [q for t, s in sink.by_time().items() for q in {x.quality for x in s}]
            assert Quality.BAD in qualities  # boundaries while the server was down
            assert_one_sample_per_point_and_boundary(sink)
            messages = [(r.levelname, r.getMessage()) for r in caplog.records
                        if r.name == "dcim.collectors.opcua"]
            assert [m for m in messages if "not reachable" in m[1]] == [
                ("WARNING", ("OPC UA server not reachable, its devices marked down; "
                             "reconnecting with backoff"))]
            assert len([m for m in messages if "reachable again" in m[1]]) == 1
        assert server_subscriptions(server) == 0  # close() deleted it
    finally:
        await server.stop()


class CuttableProxy:
    """A TCP proxy on a free loopback port whose connections the test can cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1, port 0."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    def cut(self) -> None:
        """Drop every proxied connection at once (both sides see the socket close)."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        """Stop listening and drop everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@module_loop
async def test_dropped_connection_leaves_one_subscription(plain: OpcuaSimServer) -> None:
    await plain.update(snapshot(8))
    proxy = CuttableProxy(plain.port)
    await proxy.start()
    try:
        devices = fast(DEVICES)
        gateway = devices[0].gateway.model_copy(
            update={"endpoint": f"opc.tcp://127.0.0.1:{proxy.port}/dcim/bms",
                    "timestamps": "poll"})
        devices = [dataclasses.replace(d, gateway=gateway) for d in devices]
        async with collecting(devices) as (collector, sink):
            await until(lambda: boundary_with(sink, values_at(8)) is not None)
            assert server_subscriptions(plain) == 1
            proxy.cut()
            await until(lambda: collector.reconnects == 1 and collector.connected)
            await plain.update(snapshot(9))
            await until(lambda: boundary_with(sink, values_at(9)) is not None)
            assert collector.subscriptions_created == 2
            # The server keeps the orphan of the cut session until its lifetime runs out
            # (5 keep-alives); nothing is delivered from it, and then one is left.
            await until(lambda: server_subscriptions(plain) == 1, 12)
            assert_one_sample_per_point_and_boundary(sink)
            # initial values of each subscription, then the change: none delivered twice
            assert collector.requests == 3 * len(values_at(8))
    finally:
        await proxy.stop()


# ---------------------------------------------------------------- (e) security


def _security(pki: TestPki, *, client: str = "client", trust_dir: Path | None = None
              ) -> OpcuaSecurity:
    pair = getattr(pki, client)
    return OpcuaSecurity(policy="Basic256Sha256", mode="SignAndEncrypt",
                         certificate=str(pair.certificate), private_key=str(pair.private_key),
                         trust_dir=str(trust_dir or pki.client_trust_dir))


@module_loop
async def test_sign_and_encrypt_with_trusted_certificates_collects(
        secure: OpcuaSimServer, pki: TestPki) -> None:
    devices = aimed(secure, fast(DEVICES[:4]), _security(pki))
    expected = {k: v for k, v in values_at(0).items() if k[0] in {d.id for d in devices}}
    async with collecting(devices) as (collector, sink):
        await until(lambda: boundary_with(sink, expected) is not None)
        assert {h.status for h in collector.health.values()} == {DeviceStatus.UP}


@module_loop
@pytest.mark.parametrize(("case", "message"), [
    ("unknown-server", "UntrustedServer"), ("untrusted-client", "BadCertificateUntrusted"),
])
async def test_untrusted_peers_are_refused(secure: OpcuaSimServer, pki: TestPki,
                                           tmp_path: Path, case: str, message: str) -> None:
    if case == "unknown-server":  # the client's trust folder holds some other certificate
        trust = tmp_path / "trusted"
        trust.mkdir()
        (trust / "other.der").write_bytes(pki.untrusted.certificate.read_bytes())
        security = _security(pki, trust_dir=trust)
    else:
        security = _security(pki, client="untrusted")
    devices = aimed(secure, fast(DEVICES[:2]), security)
    async with collecting(devices) as (collector, sink):
        await until(lambda: len(sink.by_time()) >= 2)
        assert {h.status for h in collector.health.values()} == {DeviceStatus.DOWN}
        assert all(message in h.last_error for h in collector.health.values()), \
            collector.health[devices[0].id].last_error
        assert {s.quality for s in sink.samples} == {Quality.BAD}
        assert collector.subscriptions_created == 0 and collector.connections == 0
