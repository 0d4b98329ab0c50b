"""The collectors' health metrics after a real poll cycle, and their Prometheus text."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dcim.collectors.metrics import collect_metrics, prometheus_text
from dcim.collectors.service import CollectorService
from dcim.site import load_site
from dcim.simulators.faults import FaultSpec
from dcim.simulators.runner import Simulator
from dcim.storage.base import Sample

ROOT = Path(__file__).resolve().parents[1]


class Sink:
    def __init__(self) -> None:
        self.count = 0

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        self.count += 1 if isinstance(samples, Sample) else len(list(samples))


async def test_metrics_reflect_polls_errors_and_render_for_prometheus() -> None:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    modbus_gateways = {g.id for g in site.config.gateways if g.protocol == "modbus_tcp"}
    sim = Simulator(site, free_ports=True, autotick=False, gateways=modbus_gateways)
    await sim.start()
    try:
        sim.inject(FaultSpec(kind="exception", target="PDU-A-H1-2", params={"code": 4}))
        service = CollectorService(sim.client_site(), Sink(), protocols=("modbus",))
        for collector in service.collectors:
            for dev in collector._devices.values():
                await collector.poll(dev, 1_000.0)
        metrics = collect_metrics(service)
        await service.close()
    finally:
        await sim.stop()
    devices = metrics["devices"]
    assert len(devices) == 242
    assert devices["PDU-A-H1-2"]["status"] == "down" and devices["PDU-A-H1-2"]["errors"] == 1
    assert "exception code 4" in devices["PDU-A-H1-2"]["last_error"]
    assert devices["UPS-A1"]["status"] == "up" and devices["UPS-A1"]["latency_s"] > 0
    text = prometheus_text(metrics)
    assert '# TYPE dcim_device_errors_total counter' in text
    assert 'dcim_device_up{device="PDU-A-H1-2",gateway="gw-pdu"} 0' in text
    assert 'dcim_device_up{device="UPS-A1",gateway="gw-power"} 1' in text
    # every sample line is "name{labels} value" with a number
    for line in text.splitlines():
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_cadence_counters_render_with_their_cadence_label() -> None:
    metrics = {"devices": {}, "cadences": {"gw-pdu/1s": {
        "interval_s": 1.0, "cycles": 10, "overruns": 1, "missed": 2, "errors": 3,
        "last_duration_s": 0.25, "max_duration_s": 1.5}}}
    text = prometheus_text(metrics)
    assert 'dcim_poll_cycle_errors_total{cadence="gw-pdu/1s"} 3' in text
    assert 'dcim_poll_missed_total{cadence="gw-pdu/1s"} 2' in text
    assert "# TYPE dcim_poll_cycle_errors_total counter" in text
