"""docs/adding-devices.md followed as written: its files are written, its commands run.

Blocks after `<!-- test: write NAME -->` are written to NAME in a temporary folder; the lines
of blocks after `<!-- test: run -->` are run in order (`dcim ...` in-process through
dcim.cli.main, `mkdir -p`). The guide's placeholder addresses (127.0.0.1:5020 for the meter,
opc.tcp://127.0.0.1:4840/bms for the BMS) are replaced by device servers started here on free
loopback ports, built from the guide's own profiles.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcim.cli import main
from dcim.config.site import ModbusGateway, OpcuaGateway
from dcim.simulators.modbus_server import ModbusSimServer
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.simulators.snapshot import DeviceReading
from dcim.site import parse_site

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "adding-devices.md"
MODBUS_PORT = "5020"
OPCUA_PORT = "4840"
BLOCK = re.compile(r"<!-- test: (write (?P<name>[\w.-]+)|run) -->\n```\w*\n(?P<body>.*?)```",
                   re.S)
# What the meter sends. The simulator lays out a profile with sunssf points as a whole SunSpec
# model, so the meter is served with the factor as a plain int16 and the current raw: the same
# registers (1825 and -2) that the guide's profile reads as 18.25 A.
METER = {"power_kw": 12.5, "voltage_v": 230.5, "frequency_hz": 50.01, "energy_kwh": 123456,
         "current_sf": -2, "current_a": 1825, "temperature_c": 31.4}


def wire_profile(site_yaml: str) -> str:
    """The guide's meter as the simulator serves it: scale factors as plain registers."""
    plain = site_yaml.replace("scale_factor_point: current_sf, ", "")
    assert plain != site_yaml, "the guide's meter lost its scale_factor_point example"
    return plain.replace("type: sunssf", "type: int16")


def guide_steps() -> list[tuple[str, str]]:
    """The marked blocks in order: ("write", name + body) or ("run", body)."""
    text = GUIDE.read_text(encoding="utf-8")
    return [("write", f"{m['name']}\n{m['body']}") if m["name"] else ("run", m["body"])
            for m in BLOCK.finditer(text)]


def guide_file(name: str) -> str:
    """The body of the guide's `write NAME` block."""
    for kind, block in guide_steps():
        if kind == "write" and block.split("\n", 1)[0] == name:
            return block.split("\n", 1)[1]
    raise AssertionError(f"docs/adding-devices.md has no block marked 'test: write {name}'")


class Servers:
    """The guide's devices on loopback: a Modbus gateway and an OPC UA server, one loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        meter = parse_site(wire_profile(guide_file("meter.yaml")), "meter.yaml")
        bms = parse_site(guide_file("bms.yaml"), "bms.yaml")
        modbus_gw = meter.config.gateways[0]
        opcua_gw = bms.config.gateways[0]
        assert isinstance(modbus_gw, ModbusGateway) and isinstance(opcua_gw, OpcuaGateway)
        assert modbus_gw.port == int(MODBUS_PORT) and f":{OPCUA_PORT}/" in opcua_gw.endpoint
        self.modbus = ModbusSimServer(modbus_gw, list(meter.devices.values()),
                                      host="127.0.0.1", port=0)
        self.modbus.encoder(1).encode(DeviceReading(METER))
        self.opcua = OpcuaSimServer(opcua_gw, list(bms.devices.values()), port=0)

    def start(self) -> None:
        """Bind both servers on free ports."""
        self.loop.run_until_complete(self.modbus.start())
        self.loop.run_until_complete(self.opcua.start())
        self.thread.start()

    def stop(self) -> None:
        """Stop both servers and the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.run_until_complete(self.opcua.stop())
        self.loop.run_until_complete(self.modbus.stop())
        self.loop.close()

    def substitute(self, text: str) -> str:
        """The guide's placeholder addresses replaced by the servers' ports."""
        text = text.replace(f"127.0.0.1:{MODBUS_PORT}", f"127.0.0.1:{self.modbus.port}")
        text = re.sub(rf"\bport: {MODBUS_PORT}\b", f"port: {self.modbus.port}", text)
        return text.replace(f"127.0.0.1:{OPCUA_PORT}/", f"127.0.0.1:{self.opcua.port}/")


@pytest.fixture
def servers() -> Iterator[Servers]:
    """The guide's meter and BMS, served on loopback for the duration of a test."""
    started = Servers()
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_the_guide_marks_files_and_commands() -> None:
    """The guide keeps its tested blocks: both site files, discovery, run and query."""
    steps = guide_steps()
    written = [b.split("\n", 1)[0] for k, b in steps if k == "write"]
    assert written == ["meter.yaml", "bms.yaml", "bms-secure.yaml"]
    commands = " ".join(b for k, b in steps if k == "run")
    for verb in ("validate", "discover modbus", "discover opcua", "run", "query", "pki client"):
        assert f"dcim {verb}" in commands


def test_the_guide_names_every_modbus_byte_order() -> None:
    """`order` and its four values are explained, each with the reference linked."""
    text = GUIDE.read_text(encoding="utf-8")
    for value in ("ABCD", "CDAB", "BADC", "DCBA"):
        assert f"`{value}`" in text
    assert "config-reference.md" in text


def test_following_the_guide_works(servers: Servers, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every file of the guide validates and every command it shows exits 0, in order."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCIM_BMS_PASSWORD", "not-a-secret")  # the guide's `export`
    for kind, block in guide_steps():
        if kind == "write":
            name, body = block.split("\n", 1)
            (tmp_path / name).write_text(servers.substitute(body), encoding="utf-8")
            continue
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            argv = shlex.split(servers.substitute(line))
            if argv[:2] == ["mkdir", "-p"]:
                for folder in argv[2:]:
                    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
                continue
            assert argv[0] == "dcim", f"the guide runs {line!r}: only dcim and mkdir -p are run"
            code = main(argv[1:])
            out, err = capsys.readouterr()
            assert code == 0, f"{line}\nexit {code}\n{out}\n{err}"
            assert "Traceback" not in out + err, line
            if argv[1:3] == ["query", "MAIN-1"]:
                assert "power_kw" in out and "12.5" in out, out
                assert "230.5" in out and "18.25" in out and "31.4" in out, out
            if argv[1:3] == ["query", "CRAH-1"]:
                assert "supply_temp_c" in out and "fan_speed_pct" in out, out
    assert (tmp_path / "meter-draft.yaml").is_file() and (tmp_path / "bms-draft.yaml").is_file()
