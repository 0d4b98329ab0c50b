"""The collectors' own health as metrics: a dict for the dashboard, Prometheus families for /metrics.

`collect_metrics` gathers the figures as plain data; `metric_families` (pure) names them for
Prometheus; `HealthCollector` is a prometheus_client custom collector over any source of that
data, registered in a private registry (never the global one) by `health_registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dcim.collectors.base import DeviceStatus
from dcim.collectors.forward import ForwardStats, StoreAndForward
from dcim.collectors.service import CollectorService

_STATUS_VALUE = {DeviceStatus.UP: 1, DeviceStatus.STALE: 0.5, DeviceStatus.DOWN: 0}


def buffer_metrics(stats: ForwardStats) -> dict[str, Any]:
    """The store-and-forward counters as plain data (the "buffer" part of collect_metrics)."""
    return {"depth": stats.buffered, "bytes": stats.bytes_on_disk, "written": stats.written,
            "write_errors": stats.write_errors, "dropped": stats.dropped_samples,
            "rejected": stats.rejected_samples, "outage_s": stats.outage_s,
            "lost": stats.lost_samples + stats.lost_at_restart,
            "lost_cycles_at_restart": stats.lost_cycles_at_restart,
            "error": 1 if stats.buffer_error else 0, "last_error": stats.buffer_error}


def collect_metrics(service: CollectorService,
                    forward: StoreAndForward | None = None) -> dict[str, Any]:
    """Per-device and per-cadence counters plus the buffer's depth, as plain data."""
    devices = {}
    for device_id, h in service.health().items():
        devices[device_id] = {
            "gateway": h.gateway, "status": h.status.value, "polls": h.polls, "errors": h.errors,
            "consecutive_errors": h.consecutive_errors, "latency_s": h.latency_s,
            "latency_ewma_s": h.latency_ewma_s, "last_error": h.last_error,
            "skipped_backoff": h.skipped_backoff,
        }
    cadences = {}
    for collector in service.collectors:
        for cadence in getattr(collector, "cadences", []):
            st = cadence.stats
            cadences[cadence.name] = {"interval_s": cadence.interval_s, "cycles": st.cycles,
                                      "overruns": st.overruns, "missed": st.missed,
                                      "errors": st.errors,
                                      "last_duration_s": st.last_duration_s,
                                      "max_duration_s": st.max_duration_s}
    out: dict[str, Any] = {"devices": devices, "cadences": cadences}
    if forward is not None:
        out["buffer"] = buffer_metrics(forward.stats())
    return out


Family = tuple[str, str, str, str]  # name, kind, help, key of the value

PER_DEVICE: tuple[tuple[str, str, str, Callable[[dict[str, Any]], float]], ...] = (
    ("dcim_device_up", "gauge", "1 up, 0.5 stale, 0 down",
     lambda d: _STATUS_VALUE[DeviceStatus(d["status"])]),
    ("dcim_device_polls_total", "counter", "polls attempted", lambda d: d["polls"]),
    ("dcim_device_errors_total", "counter", "polls that failed", lambda d: d["errors"]),
    ("dcim_device_latency_seconds", "gauge", "round trip of the last good poll",
     lambda d: d["latency_s"]),
)
PER_CADENCE: tuple[Family, ...] = (
    ("dcim_poll_cycles_total", "counter", "poll cycles run", "cycles"),
    ("dcim_poll_overruns_total", "counter", "cycles longer than their interval", "overruns"),
    ("dcim_poll_missed_total", "counter", "boundaries skipped by overruns", "missed"),
    ("dcim_poll_cycle_errors_total", "counter", "cycles that failed with an error", "errors"),
    ("dcim_poll_cycle_seconds", "gauge", "duration of the last cycle", "last_duration_s"),
)
BUFFER: tuple[Family, ...] = (
    ("dcim_buffer_depth_samples", "gauge", "samples in the durable buffer", "depth"),
    ("dcim_buffer_bytes", "gauge", "bytes of the durable buffer on disk", "bytes"),
    ("dcim_samples_written_total", "counter", "samples stored", "written"),
    ("dcim_storage_write_errors_total", "counter", "failed storage writes", "write_errors"),
    ("dcim_buffer_dropped_samples_total", "counter", "samples dropped by the bound", "dropped"),
    ("dcim_buffer_lost_samples_total", "counter",
     "samples polled and never buffered: failed appends, and cycles cut by the last stop", "lost"),
    ("dcim_buffer_lost_cycles_at_restart", "gauge",
     "poll cycles the previous process polled and did not buffer", "lost_cycles_at_restart"),
    ("dcim_buffer_error", "gauge", "1 while appends to the buffer fail, else 0", "error"),
)
LIVE: tuple[Family, ...] = (
    ("dcim_live_state_seq", "gauge", "sequence number of the newest live snapshot", "seq"),
    ("dcim_live_state_builds_total", "counter", "live snapshots built", "builds"),
    ("dcim_live_state_build_seconds_total", "counter", "time spent building snapshots",
     "build_s"),
    ("dcim_live_state_age_seconds", "gauge", "age of the newest snapshot", "age_s"),
    ("dcim_units_down", "gauge", "units the live state shows down", "units_down"),
)
ALERTMANAGER: tuple[Family, ...] = (
    ("dcim_alertmanager_posts_total", "counter", "posts of alerts to Alertmanager", "posts"),
    ("dcim_alertmanager_post_failures_total", "counter", "posts that failed (retried)",
     "failures"),
    ("dcim_alertmanager_alerts_firing", "gauge", "alerts Alertmanager holds as firing from dcim",
     "firing"),
)


def _family(name: str, kind: str, help_text: str,
            labels: Iterable[str] = ()) -> GaugeMetricFamily | CounterMetricFamily:
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, help_text, labels=list(labels))


def _plain(families: Iterable[Family], values: dict[str, Any]) -> list[Metric]:
    out: list[Metric] = []
    for name, kind, help_text, key in families:
        family = _family(name, kind, help_text)
        family.add_metric([], float(values[key]))
        out.append(family)
    return out


def metric_families(metrics: dict[str, Any]) -> list[Metric]:
    """The Prometheus families of collect_metrics' data (plus its optional "live", "alarms"
    and "alertmanager" parts, which the running system adds)."""
    out: list[Metric] = []
    for name, kind, help_text, value in PER_DEVICE:
        family = _family(name, kind, help_text, ("device", "gateway"))
        for device_id, d in sorted(metrics["devices"].items()):
            family.add_metric([device_id, d["gateway"]], float(value(d)))
        out.append(family)
    for name, kind, help_text, key in PER_CADENCE:
        family = _family(name, kind, help_text, ("cadence",))
        for cadence, c in sorted(metrics["cadences"].items()):
            family.add_metric([cadence], float(c[key]))
        out.append(family)
    if "buffer" in metrics:
        out += _plain(BUFFER, metrics["buffer"])
    if "live" in metrics:
        out += _plain(LIVE, metrics["live"])
    if "alarms" in metrics:
        family = _family("dcim_alarms_active", "gauge",
                         "alarms active and announced (not shelved, suppressed or out of "
                         "service), by priority", ("priority",))
        for priority, count in metrics["alarms"].items():
            family.add_metric([priority], float(count))
        out.append(family)
    if "alertmanager" in metrics:
        out += _plain(ALERTMANAGER, metrics["alertmanager"])
    return out


class HealthCollector(Collector):
    """A prometheus_client collector over a source of collect_metrics-shaped data."""

    def __init__(self, source: Callable[[], dict[str, Any]]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        """The families of the source's figures now (called at every scrape)."""
        return metric_families(self.source())


def health_registry(source: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A private registry holding one HealthCollector over source."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(source))
    return registry


def exposition(registry: CollectorRegistry) -> str:
    """The registry in Prometheus' text exposition format (version 0.0.4)."""
    return generate_latest(registry).decode()


def prometheus_text(metrics: dict[str, Any]) -> str:
    """Metrics data in Prometheus' text exposition format (version 0.0.4)."""
    return exposition(health_registry(lambda: metrics))
