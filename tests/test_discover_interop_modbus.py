"""Issue 11, done when (Modbus): devices written from published maps, configured only from
what `dcim discover modbus` drafted, poll back exactly what they serve.

Each device (tests/published_devices.py: a PM5xxx-style meter in both word orders with int64
energy and exception 2 for any read touching an unmapped register; SunSpec meters 203 and
213, inverter 103) is served on loopback. The real CLI scans it and writes a draft; the
draft becomes a site file the way a newcomer makes one, by putting `site:` above it (no
point is edited);
`dcim validate` accepts it; the real ModbusCollector polls it twice. Every stored value must
equal the one served (float32 bit-exact, int64 exact), and no poll may draw an exception.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from dcim.cli import main
from dcim.collectors.modbus import ModbusCollector
from dcim.config.site import ModbusGateway
from dcim.site import load_site
from dcim.storage.base import Quality, Sample
from tests.published_devices import (
    Device, Request, pm5560, serve, sunspec_103, sunspec_203, sunspec_213)

T_BOUNDARY_S = 1_782_900_000.0
SITE_WRAPPER = "site: {id: interop, name: Devices configured from discovery}\n"
SUNSPEC_PROBES = {40000, 0, 50000}  # where discovery looks for 'SunS'


class ListSink:
    """Collects samples in memory."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def add(self, samples: Sample | list[Sample]) -> None:
        """Keep one sample or a batch."""
        self.samples.extend([samples] if isinstance(samples, Sample) else samples)


@contextmanager
def served(device: Device) -> Iterator[int]:
    """The device's server on its own thread and loop (the CLI runs its own loop); its port."""
    loop = asyncio.new_event_loop()
    context = serve(device)
    port = loop.run_until_complete(context.__aenter__())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


def discover_to_site(port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                     ) -> tuple[str, Path]:
    """Run `dcim discover modbus`, wrap its draft in a site file, `dcim validate` it."""
    draft = tmp_path / "draft.yaml"
    code = main(["discover", "modbus", f"127.0.0.1:{port}", "--units", "1-2",
                 "--timeout", "2", "--output", str(draft)])
    assert code == 0, capsys.readouterr().err
    text = draft.read_text(encoding="utf-8")
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_WRAPPER + text, encoding="utf-8")
    capsys.readouterr()
    assert main(["validate", str(site_file)]) == 0, capsys.readouterr()
    return text, site_file


async def poll_site(site_file: Path, cycles: int = 2) -> dict[str, Sample]:
    """The real collector polls every device of the site `cycles` times; the last samples."""
    site = load_site(site_file)
    (gateway,) = site.config.gateways
    assert isinstance(gateway, ModbusGateway)
    sink = ListSink()
    collector = ModbusCollector(gateway, list(site.devices.values()), sink)
    try:
        for n in range(cycles):
            for device_id in site.devices:
                await collector.poll(collector._devices[device_id], T_BOUNDARY_S + 5 * n)
    finally:
        await collector.close()
    return {s.series.point: s for s in sink.samples}


def assert_stored_as_served(got: dict[str, Sample], device: Device) -> None:
    """Every point the document's device serves is stored good with exactly its value."""
    for point, expected in device.expected.items():
        sample = got.get(point)
        assert sample is not None, f"{point}: not stored"
        assert sample.quality is Quality.GOOD, point
        assert sample.value == expected, (point, sample.value, expected)  # exact, no tolerance


def exceptions(requests: list[Request], code: int | None = None) -> list[Request]:
    """The requests that drew an exception (with this code, if given)."""
    return [r for r in requests if r.exception is not None
            and (code is None or r.exception == code)]


@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
def test_a_pm5xxx_meter_from_its_draft_stores_what_it_serves(
        order: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device = pm5560(order)  # type: ignore[arg-type]
    with served(device) as port:
        text, site_file = discover_to_site(port, tmp_path, capsys)
        mark = len(device.log)
        got = asyncio.run(poll_site(site_file))
    draft = yaml.safe_load(text)
    pid = "schneider-pm5560" if order == "ABCD" else "schneider-pm5560-cdab"
    entry = {"library": "schneider-pm5560"} | ({} if order == "ABCD" else {"order": "CDAB"})
    assert draft["profiles"] == {pid: entry}
    assert [d["profile"] for d in draft["devices"]] == [pid]
    assert "43/14 vendor 'Schneider Electric' and product_code 'METSEPM5560'" in text
    if order == "CDAB":
        assert "order: CDAB overrides the profile's ABCD" in text
    # discovery met exception 2 only where it looks for 'SunS'; the polls never
    assert {r.address for r in exceptions(device.log[:mark], 2)} <= SUNSPEC_PROBES
    assert len(device.log) > mark and exceptions(device.log[mark:]) == []
    assert_stored_as_served(got, device)
    assert got["energy_kwh"].value * 1000 == device.served["energy_kwh"] == 123_456_789_012


def test_the_word_order_matters_for_the_swapped_meter(tmp_path: Path) -> None:
    """The check can fail: the swapped meter polled without the draft's `order:` misreads."""
    device = pm5560("CDAB")
    site_file = tmp_path / "site.yaml"
    with served(device) as port:
        site_file.write_text(SITE_WRAPPER + yaml.safe_dump({
            "gateways": [{"id": "gw1", "protocol": "modbus_tcp", "host": "127.0.0.1",
                          "port": port}],
            "profiles": {"m": {"library": "schneider-pm5560"}},
            "devices": [{"id": "gw1-u1", "profile": "m", "gateway": "gw1", "unit_id": 1}]}))
        got = asyncio.run(poll_site(site_file, cycles=1))
    wrong = [p for p, v in device.expected.items() if p not in got or got[p].value != v]
    assert sorted(wrong) == sorted(device.expected)


@pytest.mark.parametrize(("build", "library"), [(sunspec_203, "sunspec-meter-203"),
                                                (sunspec_213, "sunspec-meter-213"),
                                                (sunspec_103, "sunspec-inverter-103")],
                         ids=["meter-203", "meter-213", "inverter-103"])
def test_a_sunspec_device_from_its_draft_stores_what_it_serves(
        build: Any, library: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    device: Device = build()
    with served(device) as port:
        text, site_file = discover_to_site(port, tmp_path, capsys)
        mark = len(device.log)
        got = asyncio.run(poll_site(site_file))
    assert yaml.safe_load(text)["profiles"] == {library: {"library": library}}
    assert "at 40070, where the library profile's addresses put it" in text
    assert exceptions(device.log[:mark], 2) == []  # a chain at 40000 answers every read probe
    assert len(device.log) > mark and exceptions(device.log[mark:]) == []
    assert_stored_as_served(got, device)


@pytest.mark.slow
def test_dcim_run_and_query_give_back_what_the_swapped_meter_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path a newcomer takes: discover, validate, `dcim run` (the default embedded
    store, the default 5 s interval), `dcim query` of the device: every point as served."""
    monkeypatch.chdir(tmp_path)
    device = pm5560("CDAB")
    with served(device) as port:
        _, site_file = discover_to_site(port, tmp_path, capsys)
        mark = len(device.log)
        assert main(["run", str(site_file), "--seconds", "6", "--no-dashboard"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert main(["query", "gw1-u1", str(site_file), "--format", "json"]) == 0
    rows = {row["point"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    for point, expected in device.expected.items():
        assert (rows[point]["value"], rows[point]["quality"]) == (expected, "good"), point
    assert len(device.log) > mark and exceptions(device.log[mark:]) == []
