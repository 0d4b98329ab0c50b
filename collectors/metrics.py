"""The collectors' own health as metrics: a dict for the dashboard, text for Prometheus."""

from __future__ import annotations

from typing import Any

from dcim.collectors.base import DeviceStatus
from dcim.collectors.forward import ForwardStats, StoreAndForward
from dcim.collectors.service import CollectorService

_STATUS_VALUE = {DeviceStatus.UP: 1, DeviceStatus.STALE: 0.5, DeviceStatus.DOWN: 0}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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


def prometheus_text(metrics: dict[str, Any]) -> str:
    """The metrics in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    per_device = [
        ("dcim_device_up", "gauge", "1 up, 0.5 stale, 0 down",
         lambda d: _STATUS_VALUE[DeviceStatus(d["status"])]),
        ("dcim_device_polls_total", "counter", "polls attempted", lambda d: d["polls"]),
        ("dcim_device_errors_total", "counter", "polls that failed", lambda d: d["errors"]),
        ("dcim_device_latency_seconds", "gauge", "round trip of the last good poll",
         lambda d: d["latency_s"]),
    ]
    for name, kind, help_text, value in per_device:
        family(name, kind, help_text)
        for device_id, d in sorted(metrics["devices"].items()):
            lines.append(f'{name}{{device="{_escape(device_id)}",gateway="{_escape(d["gateway"])}"}}'
                         f" {value(d)}")
    per_cadence = [
        ("dcim_poll_cycles_total", "counter", "poll cycles run", "cycles"),
        ("dcim_poll_overruns_total", "counter", "cycles longer than their interval", "overruns"),
        ("dcim_poll_missed_total", "counter", "boundaries skipped by overruns", "missed"),
        ("dcim_poll_cycle_errors_total", "counter", "cycles that failed with an error", "errors"),
        ("dcim_poll_cycle_seconds", "gauge", "duration of the last cycle", "last_duration_s"),
    ]
    for name, kind, help_text, key in per_cadence:
        family(name, kind, help_text)
        for cadence, c in sorted(metrics["cadences"].items()):
            lines.append(f'{name}{{cadence="{_escape(cadence)}"}} {c[key]}')
    if "buffer" in metrics:
        b = metrics["buffer"]
        for name, kind, help_text, key in [
            ("dcim_buffer_depth_samples", "gauge", "samples in the durable buffer", "depth"),
            ("dcim_buffer_bytes", "gauge", "bytes of the durable buffer on disk", "bytes"),
            ("dcim_samples_written_total", "counter", "samples stored", "written"),
            ("dcim_storage_write_errors_total", "counter", "failed storage writes", "write_errors"),
            ("dcim_buffer_dropped_samples_total", "counter", "samples dropped by the bound",
             "dropped"),
            ("dcim_buffer_lost_samples_total", "counter",
             "samples polled and never buffered: failed appends, and cycles cut by the last stop",
             "lost"),
            ("dcim_buffer_lost_cycles_at_restart", "gauge",
             "poll cycles the previous process polled and did not buffer", "lost_cycles_at_restart"),
            ("dcim_buffer_error", "gauge", "1 while appends to the buffer fail, else 0", "error"),
        ]:
            family(name, kind, help_text)
            lines.append(f"{name} {b[key]}")
    return "\n".join(lines) + "\n"
