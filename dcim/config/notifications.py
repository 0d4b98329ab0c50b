"""The `notifications:` section of a site file: channels, people, the rota, routes, floods.

Plain pydantic models (no aiohttp): the site schema imports them, the notifier reads them.
"""

from __future__ import annotations

from datetime import date, datetime
from datetime import time as dt_time
from typing import Annotated, Literal

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dcim.alarms.types import Priority


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookChannelConfig(_Base):
    """POST each message as JSON, optionally signed with HMAC-SHA256 over the body."""

    kind: Literal["webhook"] = Field(description="HTTP POST of JSON")
    url: str = Field(pattern=r"^https?://", description="receiver URL (http or https)")
    secret_env: str | None = Field(
        None, description="environment variable holding the HMAC secret; the signature is "
        "sent as header X-DCIM-Signature: sha256=<hex of HMAC-SHA256(secret, body)>")
    timeout_s: float = Field(10.0, gt=0, le=120, description="timeout of one request")


class EmailChannelConfig(_Base):
    """Send each message as a plain-text email through an SMTP relay."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["email"] = Field(description="plain-text email through SMTP")
    host: str = Field(min_length=1, description="SMTP relay host")
    port: int = Field(25, ge=1, le=65535, description="SMTP port (587 with starttls)")
    sender: str = Field(alias="from", min_length=3, description="From: address")
    to: tuple[str, ...] = Field((), description="fixed recipients when a route names this "
                                "channel (a team list); people are emailed at their own address")
    username: str | None = Field(None, description="SMTP login; none sends without AUTH")
    password_env: str | None = Field(None, description="environment variable holding the password")
    starttls: bool = Field(False, description="upgrade the connection with STARTTLS before AUTH")
    timeout_s: float = Field(20.0, gt=0, le=300, description="timeout of one SMTP session")
    allow_insecure_password: bool = Field(
        False, description="accept a username without starttls, where the password crosses "
        "the network in clear (logged as a WARNING at every start)")

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> EmailChannelConfig:
        if self.insecure_password and not self.allow_insecure_password:
            raise ValueError(
                "username without starttls: the SMTP password would cross the network in "
                "clear. Set starttls: true (port 587; implicit TLS on port 465 is not "
                "supported), or, knowingly, set allow_insecure_password: true")
        return self

    @property
    def insecure_password(self) -> bool:
        """The channel logs in (AUTH) on a connection without TLS."""
        return self.username is not None and not self.starttls


class LogChannelConfig(_Base):
    """Write each message as one structured log line (the demo's channel)."""

    kind: Literal["log"] = Field(description="a structured log line")
    level: Literal["info", "warning", "error"] = Field("warning", description="log level")


ChannelConfig = Annotated[
    WebhookChannelConfig | EmailChannelConfig | LogChannelConfig, Field(discriminator="kind")
]


class DeliveryConfig(_Base):
    """Retry policy of the outbox."""

    first_backoff_s: float = Field(5.0, gt=0, le=3600, description="first retry delay")
    max_backoff_s: float = Field(300.0, gt=0, le=86400, description="retry delays double up to this")
    jitter: float = Field(0.2, ge=0, le=1, description="each delay is scaled by 1 +- this fraction")
    max_age_s: float = Field(86400.0, gt=0, description="a message still undelivered this long "
                             "after it was queued is marked failed and logged at ERROR")
    poll_s: float = Field(5.0, gt=0, le=300, description="how often an idle worker rereads the outbox")
    keep_delivered_s: float = Field(7 * 86400.0, gt=0, description="delivered and failed rows are "
                                    "deleted from the outbox after this")



class PersonConfig(_Base):
    """Someone who can be paged."""

    id: str = Field(min_length=1, description="short stable id used by the rota")
    name: str = Field(min_length=1, description="full name, shown in escalations")
    email: str | None = Field(None, description="personal address (sent through person_email_channel)")
    webhook: str | None = Field(None, description="webhook channel that reaches this person "
                                "(a pager or chat bridge); the payload names the recipient")


class RotaOverride(_Base):
    """A dated swap: `person` covers `tier` from `start` to `end` (site-local if naive)."""

    start: datetime = Field(description="when the cover begins")
    end: datetime = Field(description="when it ends (exclusive)")
    tier: int = Field(0, ge=0, description="0 is the primary")
    person: str = Field(description="person id")


class RotaConfig(_Base):
    """Tiers of people taking turns: tier 0 is paged first, the others on escalation."""

    tiers: tuple[tuple[str, ...], ...] = Field(
        min_length=1, description="per tier, the person ids in rotation order")
    start: date = Field(description="the day the first person of every tier takes over")
    rotate_days: int = Field(7, ge=1, le=366, description="length of one turn")
    handover: dt_time = Field(dt_time(9, 0), description="site-local time of day of the handover")
    overrides: tuple[RotaOverride, ...] = Field((), description="dated swaps, applied on top")


class RouteConfig(_Base):
    """Where events of at least `min_priority` go (the highest matching route applies)."""

    min_priority: Priority = Field(description="lowest priority this route handles")
    tier: int | None = Field(None, ge=0, description="rota tier paged at once (0 = primary); "
                             "none pages nobody and nothing escalates")
    channels: tuple[str, ...] = Field((), description="channels also sent every message "
                                      "(a team email list, the log)")
    notify_clear: bool = Field(True, description="also send 'cleared' when the alarm returns to normal")


class FloodConfig(_Base):
    """ISA-18.2 flood: more than `max_raises` alarms in `window_s`; pages become summaries."""

    enabled: bool = Field(True, description="off sends every message however many")
    max_raises: int = Field(10, ge=1, description="raises within the window that make a flood")
    window_s: float = Field(600.0, gt=0, description="the sliding window")
    summary_interval_s: float = Field(300.0, gt=0, description="how often a summary is sent "
                                      "during a flood (the first at once)")
    max_lines: int = Field(30, ge=1, description="alarms listed in one summary's text")


# Labels dcim sets on every alert itself (dcim/notify/alertmanager.py); `labels:` may not replace them
ALERTMANAGER_LABELS = ("alertname", "site", "unit", "device", "priority", "alarm_id", "source")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class AlertmanagerConfig(_Base):
    """Post active alarms to a Prometheus Alertmanager (its v2 API), beside the built-in rota."""

    url: str = Field("http://127.0.0.1:9093", pattern=r"^https?://",
                     description="Alertmanager's base URL; alerts are posted to "
                     "<url>/api/v2/alerts")
    resend_interval_s: float = Field(
        60.0, gt=0, le=3600, description="every firing alarm is posted again this often, so "
        "Alertmanager never resolves a live alarm by itself: keep it well below Alertmanager's "
        "resolve_timeout (5 min by default)")
    timeout_s: float = Field(10.0, gt=0, le=120, description="timeout of one request")
    min_priority: Priority = Field(Priority.LOW, description="lowest alarm priority posted")
    labels: dict[str, str] = Field(
        default_factory=dict, description="fixed labels added to every alert (for example env "
        "or team, for Alertmanager's routes); they cannot replace dcim's own: "
        + ", ".join(ALERTMANAGER_LABELS))
    dashboard_url: str | None = Field(
        None, pattern=r"^https?://", description="the dashboard's address as people reach it, "
        "sent as each alert's generatorURL (none sends no link)")

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not LABEL_NAME.match(name):
                raise ValueError(f"label {name!r}: a name is letters, digits and _, "
                                 "not starting with a digit")
            if name in ALERTMANAGER_LABELS:
                raise ValueError(f"label {name!r} is set by dcim itself; pick another name")
        return labels


class NotificationsConfig(_Base):
    """The `notifications:` section of a site file."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict, description="named channels")
    people: tuple[PersonConfig, ...] = Field((), description="everyone who can be paged")
    person_email_channel: str | None = Field(
        None, description="email channel used to email people at their own address")
    rota: RotaConfig | None = Field(None, description="the on-call rotation")
    routes: tuple[RouteConfig, ...] = Field((), description="by priority, who and what is sent")
    escalate_after_s: float | None = Field(
        900.0, gt=0, description="an unacknowledged alarm is sent to the next tier after this, "
        "then the next; none never escalates")
    escalate_min_priority: Priority = Field(Priority.HIGH, description="lowest priority that escalates")
    renotify_s: float | None = Field(None, gt=0, description="resend to the current tier while "
                                     "unacknowledged this often; none sends once")
    tick_s: float = Field(1.0, gt=0, le=60, description="how often escalation and floods are checked")
    flood: FloodConfig = Field(default_factory=FloodConfig,
                               description="alarm flood detection and summaries")
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig,
                                     description="retries of the outbox (and of Alertmanager)")
    alertmanager: AlertmanagerConfig | None = Field(
        None, description="also post alarms to a Prometheus Alertmanager (docs/notifications.md)")

    @model_validator(mode="after")
    def _references(self) -> NotificationsConfig:
        """Every name refers to something that exists and can be reached."""
        people = {p.id: p for p in self.people}
        if len(people) != len(self.people):
            raise ValueError("people: duplicate person id")
        known = ", ".join(sorted(self.channels)) or "none"

        def channel(name: str, kind: type, where: str) -> None:
            if not isinstance(self.channels.get(name), kind):
                noun = "an email" if kind is EmailChannelConfig else "a webhook"
                raise ValueError(f"{where}: {name!r} is not {noun} channel (channels: {known})")

        if self.person_email_channel is not None:
            channel(self.person_email_channel, EmailChannelConfig, "person_email_channel")
        for p in self.people:
            if p.webhook is not None:
                channel(p.webhook, WebhookChannelConfig, f"people[{p.id}].webhook")
        n_tiers = len(self.rota.tiers) if self.rota else 0
        if self.rota is not None:
            ids = [(f"rota.tiers[{i}]", pid) for i, t in enumerate(self.rota.tiers) for pid in t]
            ids += [(f"rota.overrides[{i}]", o.person) for i, o in enumerate(self.rota.overrides)]
            for where, pid in ids:
                if pid not in people:
                    raise ValueError(f"{where}: unknown person {pid!r}")
                p = people[pid]
                if p.webhook is None and (p.email is None or self.person_email_channel is None):
                    raise ValueError(f"{where}: person {pid!r} cannot be reached: give a webhook, "
                                     "or an email and person_email_channel")
            for i, o in enumerate(self.rota.overrides):
                if o.tier >= n_tiers or o.end <= o.start:
                    raise ValueError(f"rota.overrides[{i}]: tier must be < {n_tiers}, end after start")
        for i, r in enumerate(self.routes):
            for name in r.channels:
                if name not in self.channels:
                    raise ValueError(f"routes[{i}].channels: unknown channel {name!r} (channels: {known})")
                ch = self.channels[name]
                if isinstance(ch, EmailChannelConfig) and not ch.to:
                    raise ValueError(f"routes[{i}].channels: email channel {name!r} has no 'to' list")
            if r.tier is not None and r.tier >= n_tiers:
                raise ValueError(f"routes[{i}].tier: {r.tier} but the rota has {n_tiers} tiers")
        if len({r.min_priority for r in self.routes}) != len(self.routes):
            raise ValueError("routes: two routes with the same min_priority")
        return self
