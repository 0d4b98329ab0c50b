"""Measure: read_values of 100 nodes/s and subscription notifications/s against OpcuaSimServer."""
import asyncio, time, sys, tempfile
from pathlib import Path
sys.path.insert(0, "/work/main")
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from tests.test_sim_opcua import GATEWAY, DEVICES, snapshot, values_at
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.opcua_security import make_test_pki

async def reads(client, server, seconds=3.0):
    nodes = [client.get_node(n) for n in list(server._node_ids.values())[:100]]
    n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await client.read_values(nodes); n += 1
    return n / (time.perf_counter() - t0)

class H:
    def __init__(self): self.n = 0
    def datachange_notification(self, node, val, data): self.n += 1

async def subs(client, server, period_ms, seconds=4.0):
    h = H()
    sub = await client.create_subscription(period_ms, h)
    nodes = [client.get_node(n) for n in server._node_ids.values()]
    await sub.subscribe_data_change(nodes, sampling_interval=period_ms)
    await asyncio.sleep(1.0)
    h.n = 0; tick = 100; t0 = time.perf_counter(); writes = 0
    while time.perf_counter() - t0 < seconds:
        tick += 1
        writes += await server.update(snapshot(tick))
        await asyncio.sleep(period_ms / 1000)
    await asyncio.sleep(period_ms / 1000 + 0.3)
    el = time.perf_counter() - t0
    await sub.delete()
    return h.n / el, writes / el, len(nodes)

async def main():
    tmp = Path(tempfile.mkdtemp()); pki = make_test_pki(tmp)
    srv = OpcuaSimServer(GATEWAY, DEVICES, port=0, security=pki.server_security(allow_none=True))
    await srv.start(); await srv.update(snapshot(0))
    c = Client(srv.endpoint); await c.connect()
    print(f"None: read_values(100) {await reads(c, srv):.0f} calls/s")
    for p in (100, 1000):
        r, w, n = await subs(c, srv, p)
        print(f"None: subscription {n} items @{p} ms, all change each update: {r:.0f} notifications/s (server wrote {w:.0f} values/s)")
    await c.disconnect()
    c = Client(srv.endpoint); c.application_uri = pki.client.application_uri
    await c.set_security(SecurityPolicyBasic256Sha256, pki.client.certificate, pki.client.private_key, server_certificate=str(pki.server.certificate))
    await c.connect()
    print(f"SignAndEncrypt: read_values(100) {await reads(c, srv):.0f} calls/s")
    r, w, n = await subs(c, srv, 100)
    print(f"SignAndEncrypt: subscription {n} items @100 ms: {r:.0f} notifications/s")
    await c.disconnect()
    t = time.perf_counter(); await srv.update(snapshot(10_000)); print(f"update() of 200 changed values: {1000*(time.perf_counter()-t):.1f} ms")
    await srv.stop()
asyncio.run(main())
