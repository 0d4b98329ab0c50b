"""The `alarms:` section of a site file: delays, shelving and out-of-service limits,
maintenance, priorities."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dcim.alarms.types import Priority


ALARM_SOURCES = ("device", "unit", "redundancy", "storage", "anomaly")


class AlarmDelays(BaseModel):
    """On- and off-delays of one alarm source (ISA-18.2 / OPC UA Part 9 OnDelay, OffDelay)."""

    model_config = ConfigDict(extra="forbid")

    on_delay_s: float = Field(0.0, ge=0, le=3600,
                              description="the condition must hold this long before it alarms")
    off_delay_s: float = Field(60.0, ge=0, le=3600,
                               description="the condition must be gone this long before it clears")


def _default_delays() -> dict[str, AlarmDelays]:
    # Device communication: a collector already backs off and retries; half a minute of
    # silence is worth a page, a single missed poll is not. The detectors behind "anomaly"
    # apply their own on-delays, and a trip or a loss of redundancy is news at once.
    return {
        "device": AlarmDelays(on_delay_s=30.0, off_delay_s=60.0),
        "unit": AlarmDelays(on_delay_s=0.0, off_delay_s=60.0),
        "redundancy": AlarmDelays(on_delay_s=0.0, off_delay_s=120.0),
        "storage": AlarmDelays(on_delay_s=0.0, off_delay_s=60.0),
        "anomaly": AlarmDelays(on_delay_s=0.0, off_delay_s=300.0),
    }


DEFAULT_DELAYS = _default_delays()
FALLBACK_DELAYS = AlarmDelays()  # a source of its own (a plug-in): no on-delay, 60 s off


class AnomalyAlarmsConfig(BaseModel):
    """How anomaly episodes become alarms: the false-alarm budget and who is paged."""

    model_config = ConfigDict(extra="forbid")

    false_alarms_per_week: float = Field(
        1.0, gt=0, le=1000,
        description="expected false alarms per series per week on normal data; sets the "
                    "generic detector's threshold (docs/anomaly.md): lower is quieter and "
                    "slower to see small faults")
    page_min_confidence: float = Field(
        0.9, ge=0, le=1,
        description="anomaly alarms whose confidence (0-1, in the message) is below this are "
                    "raised at low priority, which routes that start at medium do not page")


class AlarmsConfig(BaseModel):
    """How conditions become alarms, and what operators may do with them."""

    model_config = ConfigDict(extra="forbid")

    evaluate_interval_s: float = Field(5.0, gt=0, le=300,
                                       description="how often conditions are evaluated")
    delays: dict[str, AlarmDelays] = Field(
        default_factory=_default_delays,
        description="per source (device, unit, redundancy, storage, anomaly): "
                    "on- and off-delays")
    max_shelve_s: float = Field(12 * 3600.0, gt=0, le=7 * 86400,
                                description="longest an operator may shelve an alarm (a shift)")
    max_out_of_service_s: float = Field(
        7 * 86400.0, gt=0, le=90 * 86400,
        description="longest an operator may take an alarm out of service (it returns to "
                    "service by itself at the end)")
    chatter_count: int = Field(3, ge=2, le=100,
                               description="raises within chatter_window_s that make it chatter")
    chatter_window_s: float = Field(60.0, gt=0, le=3600,
                                    description="the window of chatter_count, seconds")
    stale_after_s: float = Field(24 * 3600.0, gt=0,
                                 description="an alarm active longer than this is stale")
    anomaly: AnomalyAlarmsConfig = Field(
        default_factory=AnomalyAlarmsConfig,
        description="false-alarm budget of the anomaly detectors and the confidence that pages")
    maintenance: list[str] = Field(
        default_factory=list,
        description="unit ids in planned maintenance: their alarms are suppressed by design")
    priorities: dict[str, Priority] = Field(
        default_factory=dict,
        description="priority overrides by alarm id or id prefix ending in ':' "
                    "(for example 'device:WS-1:' or 'redundancy:')")
    latched: list[str] = Field(
        default_factory=lambda: ["unit:"],
        description="alarm ids or prefixes that stay active until reset (default: unit trips)")
    journal_path: str | None = Field(
        None, description="the alarm journal (SQLite); default var/alarms-<site>.sqlite")
    head_log_path: str | None = Field(
        None, description="where the journal's chain head is appended (one JSON line per "
                          "export, for log shipping; docs/security.md); default beside the "
                          "journal, var/alarms-<site>.heads.jsonl")
    head_export_interval_s: float = Field(
        300.0, ge=1, le=86400,
        description="how often the head is exported while the journal changes (and at close)")
    journal_key_env: str | None = Field(
        None, min_length=1,
        description="environment variable holding the key that signs exported heads "
                    "(HMAC-SHA256, at least 16 bytes); without a key heads are unsigned")
    journal_key_file: str | None = Field(
        None, min_length=1,
        description="file holding that key instead (outside var/, readable by dcim only)")

    @model_validator(mode="after")
    def _one_journal_key(self) -> AlarmsConfig:
        if self.journal_key_env is not None and self.journal_key_file is not None:
            raise ValueError("give journal_key_env or journal_key_file, not both")
        return self

    def journal_file(self, site_id: str) -> str:
        """The journal's path: journal_path, or var/alarms-<site>.sqlite."""
        return self.journal_path or f"var/alarms-{site_id}.sqlite"

    def delays_for(self, source: str) -> AlarmDelays:
        """The delays of one source (defaults when the source is not configured)."""
        return self.delays.get(source) or DEFAULT_DELAYS.get(source) or FALLBACK_DELAYS

    def priority_for(self, alarm_id: str, default: Priority) -> Priority:
        """The configured priority of an alarm: exact id first, then the longest prefix."""
        if alarm_id in self.priorities:
            return self.priorities[alarm_id]
        best = ""
        for key in self.priorities:
            if key.endswith(":") and alarm_id.startswith(key) and len(key) > len(best):
                best = key
        return self.priorities[best] if best else default

    def is_latched(self, alarm_id: str) -> bool:
        """Whether an alarm stays active after its condition clears, until an operator resets it."""
        return any(alarm_id == k or (k.endswith(":") and alarm_id.startswith(k))
                   for k in self.latched)
