"""Side-by-side request rates: dcim ModbusSimServer vs pymodbus ModbusTcpServer (server in a child process)."""
import asyncio, os, subprocess, sys, time

MAP = [(3000, 125)]  # holding registers 3000..3124 on unit 4

async def run_server(kind: str) -> None:
    if kind == "ours":
        from dcim.site.loader import load_site
        from dcim.simulators.modbus_server import ModbusSimServer
        site = load_site("/work/main/config/cyberport5.yaml")
        gw = next(g for g in site.config.gateways if g.id == "gw-pdu")
        devs = [d for d in site.devices.values() if d.protocol == "modbus" and d.gateway.id == gw.id]
        srv = ModbusSimServer(gw, devs, host="127.0.0.1", port=0)
        await srv.start(); port = srv.port
    else:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import SimData, SimDevice, DataType
        dev = SimDevice(id=4, simdata=([SimData(0, 1, False, DataType.BITS)], [SimData(0, 1, False, DataType.BITS)],
                                       [SimData(40000, 179, 0, DataType.REGISTERS)], [SimData(0, 1, 0, DataType.REGISTERS)]))
        srv = ModbusTcpServer(dev, address=("127.0.0.1", 0))
        asyncio.create_task(srv.serve_forever())
        for _ in range(100):
            await asyncio.sleep(0.02)
            try:
                port = srv.transport.sockets[0].getsockname()[1]; break
            except Exception:
                pass
    print(port, flush=True)
    await asyncio.Event().wait()

async def client_load(port: int, clients: int, count: int, seconds: float) -> float:
    from pymodbus.client import AsyncModbusTcpClient
    addr = 40072 if count == 2 else 40000
    cs = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0) for _ in range(clients)]
    for c in cs: await c.connect()
    n = 0; stop = time.perf_counter() + seconds
    async def loop(c):
        nonlocal n
        while time.perf_counter() < stop:
            r = await c.read_holding_registers(addr, count=count, device_id=4)
            assert not r.isError(), r
            n += 1
    t = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in cs))
    el = time.perf_counter() - t
    for c in cs: c.close()
    return n / el

def cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(run_server(sys.argv[2])); return
    for kind in ("pymodbus", "ours", "pymodbus", "ours"):
        p = subprocess.Popen([sys.executable, __file__, "serve", kind], stdout=subprocess.PIPE, text=True)
        port = int(p.stdout.readline())
        try:
            for clients, count in ((1, 2), (1, 125), (10, 2)):
                cpu0 = cpu(p.pid); t0 = time.perf_counter()
                rate = asyncio.run(client_load(port, clients, count, 3.0))
                el = time.perf_counter() - t0; used = cpu(p.pid) - cpu0
                print(f"{kind:9s} clients={clients:2d} count={count:3d}: {rate:7.0f} req/s, "
                      f"server CPU {used / (rate * 3.0) * 1e6:5.0f} us/request ({100 * used / el:3.0f} % of a core)", flush=True)
        finally:
            p.terminate(); p.wait()

if __name__ == "__main__":
    main()
