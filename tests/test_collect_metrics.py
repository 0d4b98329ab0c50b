"""The collectors' health metrics after a real poll cycle, and their Prometheus text."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcim.collectors.metrics import collect_metrics, exposition, health_registry, prometheus_text
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
    # prometheus_client writes every value as a float ("0.0"): Prometheus reads both
    assert 'dcim_device_up{device="PDU-A-H1-2",gateway="gw-pdu"} 0.0\n' in text
    assert 'dcim_device_up{device="UPS-A1",gateway="gw-power"} 1.0\n' in text
    # every sample line is "name{labels} value" with a number
    for line in text.splitlines():
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_cadence_counters_render_with_their_cadence_label() -> None:
    metrics = {"devices": {}, "cadences": {"gw-pdu/1s": {
        "interval_s": 1.0, "cycles": 10, "overruns": 1, "missed": 2, "errors": 3,
        "last_duration_s": 0.25, "max_duration_s": 1.5}}}
    text = prometheus_text(metrics)
    assert 'dcim_poll_cycle_errors_total{cadence="gw-pdu/1s"} 3.0\n' in text
    assert 'dcim_poll_missed_total{cadence="gw-pdu/1s"} 2.0\n' in text
    assert "# TYPE dcim_poll_cycle_errors_total counter" in text


SYSTEM_PARTS: dict[str, Any] = {
    "devices": {"RM-H1-A01": {"gateway": "gw-rm", "status": "stale", "polls": 7, "errors": 2,
                              "latency_s": 0.004}},
    "cadences": {},
    "buffer": {"depth": 12, "bytes": 4096, "written": 100, "write_errors": 1, "dropped": 0,
               "lost": 0, "lost_cycles_at_restart": 0, "error": 0},
    "live": {"seq": 41, "builds": 40, "build_s": 0.5, "age_s": 1.25, "units_down": 2},
    "alarms": {"low": 0, "medium": 1, "high": 3, "critical": 0},
    "alertmanager": {"posts": 9, "failures": 2, "firing": 4},
}


@pytest.mark.parametrize(("sample", "labels", "value"), [
    ("dcim_device_up", {"device": "RM-H1-A01", "gateway": "gw-rm"}, 0.5),
    ("dcim_device_errors_total", {"device": "RM-H1-A01", "gateway": "gw-rm"}, 2),
    ("dcim_buffer_depth_samples", {}, 12),
    ("dcim_storage_write_errors_total", {}, 1),
    ("dcim_live_state_seq", {}, 41),
    ("dcim_live_state_build_seconds_total", {}, 0.5),
    ("dcim_units_down", {}, 2),
    ("dcim_alarms_active", {"priority": "high"}, 3),
    ("dcim_alertmanager_post_failures_total", {}, 2),
    ("dcim_alertmanager_alerts_firing", {}, 4),
], ids=lambda v: v if isinstance(v, str) else None)
def test_every_part_parses_back_with_its_value(sample: str, labels: dict[str, str],
                                               value: float) -> None:
    """The exposition, read by prometheus_client's own parser, gives back each figure."""
    text = exposition(health_registry(lambda: SYSTEM_PARTS))
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
    assert found[(sample, tuple(sorted(labels.items())))] == value


def test_the_registry_is_private_and_read_at_every_scrape() -> None:
    """Each scrape calls the source again; nothing lands in prometheus_client's global registry."""
    figures = {"devices": {}, "cadences": {}, "live": dict(SYSTEM_PARTS["live"])}
    registry = health_registry(lambda: figures)
    assert "dcim_live_state_seq 41.0\n" in exposition(registry)
    figures["live"]["seq"] = 42
    assert "dcim_live_state_seq 42.0\n" in exposition(registry)
    assert prometheus_client.REGISTRY.get_sample_value("dcim_live_state_seq") is None
