"""Active alarms posted to a Prometheus Alertmanager (its v2 API), beside the built-in rota.

The pure core, `plan_post`, turns the alarms the engine holds now, and what Alertmanager was
last told, into the list of alerts to post: one firing alert per alarm that is active and
announced, and a resolved one (endsAt now) for each alarm that was firing and no longer is.
`AlertmanagerClient` is the edge: it wakes when an alarm changes (the alarm service's version)
and at least every `resend_interval_s`, and posts the whole list. Because each post is
computed from the current alarms, a failed post loses nothing: the next attempt (after the
notifier's backoff, never longer than the resend interval) carries every change since.

Choices (docs/notifications.md):
- An alarm fires while it is active (unacknowledged or acknowledged); it is resolved when it
  returns to normal. A latched alarm (a trip) stays firing after its condition is gone, until
  an operator resets it, as on the dashboard; its `state` annotation says so.
- Acknowledging does not change the labels (that would make it another alert in Alertmanager):
  the annotations `acknowledged` and `acknowledged_by` say it.
- A shelved, suppressed or out-of-service alarm is not announced, so it is sent resolved (and
  fires again, with its first start time, when it is back in view and still active).
- A priority change is a new label set: the old alert is resolved and the new one fires.
- Firing alerts carry no endsAt: Alertmanager holds them for its resolve_timeout, and the
  resend keeps them alive. If dcim stops, they resolve after that timeout; Prometheus' `up`
  (docs/prometheus.md) is what says dcim itself is down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import aiohttp

from dcim.alarms.types import Alarm, AlarmState
from dcim.config.notifications import AlertmanagerConfig, DeliveryConfig
from dcim.live.source import Version
from dcim.notify.channels import ERROR_EXCERPT_CHARS, retry_delay_s
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)

NS = 1_000_000_000
API_PATH = "/api/v2/alerts"
FIRING_STATES = frozenset({AlarmState.UNACK, AlarmState.ACKED})
STATE_TEXT = {
    AlarmState.NORMAL: "normal",
    AlarmState.UNACK: "active, unacknowledged",
    AlarmState.ACKED: "active, acknowledged",
    AlarmState.RTN_UNACK: "returned to normal, unacknowledged",
}


class AlarmSource(Protocol):
    """What the client reads: the alarms now, and a version bumped when one changes."""

    version: Version

    def active(self) -> list[Alarm]:
        """Alarms not in the normal state, plus hidden ones."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as Alertmanager's v2 API takes it (times in nanoseconds since the epoch)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ns: int
    ends_ns: int | None = None  # None: firing, held by Alertmanager for its resolve_timeout
    generator_url: str | None = None

    def json(self) -> dict[str, Any]:
        """The postable alert (a JSON object)."""
        out: dict[str, Any] = {"labels": self.labels, "annotations": self.annotations,
                               "startsAt": rfc3339(self.starts_ns)}
        if self.ends_ns is not None:
            out["endsAt"] = rfc3339(max(self.ends_ns, self.starts_ns))
        if self.generator_url:
            out["generatorURL"] = self.generator_url
        return out


def rfc3339(time_ns: int) -> str:
    """A time as Alertmanager reads it: UTC, milliseconds, 'Z'."""
    when = datetime.fromtimestamp(time_ns / NS, tz=timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_firing(alarm: Alarm, config: AlertmanagerConfig) -> bool:
    """Active, announced (not shelved, suppressed or out of service) and of a posted priority."""
    return alarm.state in FIRING_STATES and alarm.announced \
        and alarm.priority.rank >= config.min_priority.rank


def alert_labels(alarm: Alarm, site_id: str, config: AlertmanagerConfig) -> dict[str, str]:
    """The alert's identity: dcim's labels (empty ones left out) and the configured ones."""
    own = {"alertname": f"dcim_{alarm.source or 'alarm'}", "site": site_id,
           "unit": alarm.unit or alarm.device or "", "device": alarm.device or "",
           "priority": alarm.priority.value, "alarm_id": alarm.id, "source": alarm.source}
    return {**config.labels, **{k: v for k, v in own.items() if v}}


def hidden_text(alarm: Alarm) -> str:
    """Why an alarm is not announced ('' when it is)."""
    if alarm.shelved:
        return f"shelved by {alarm.shelved_by}" + (f": {alarm.shelve_reason}"
                                                    if alarm.shelve_reason else "")
    if alarm.out_of_service:
        return f"out of service ({alarm.out_of_service_by})"
    if alarm.suppressed:
        return f"suppressed ({alarm.suppressed_by})"
    return ""


def alert_annotations(alarm: Alarm) -> dict[str, str]:
    """What people read: the message, the ISA-18.2 state and who acknowledged it."""
    state = STATE_TEXT[alarm.state]
    if alarm.state in FIRING_STATES and alarm.latched and not alarm.condition:
        state += ", condition gone, latched until reset"
    hidden = hidden_text(alarm)
    out = {"summary": alarm.message, "state": f"{state}, {hidden}" if hidden else state,
           "acknowledged": "true" if alarm.state is AlarmState.ACKED else "false"}
    if alarm.state is AlarmState.ACKED and alarm.acked_by:
        out["acknowledged_by"] = alarm.acked_by
        if alarm.acked_ns is not None:
            out["acknowledged_at"] = rfc3339(alarm.acked_ns)
    if alarm.value is not None:
        out["value"] = f"{alarm.value:g}"
    return out


def to_alert(alarm: Alarm, site_id: str, config: AlertmanagerConfig) -> Alert:
    """The firing alert of an alarm."""
    return Alert(alert_labels(alarm, site_id, config), alert_annotations(alarm),
                 alarm.active_since_ns or alarm.last_change_ns, None, config.dashboard_url)


def plan_post(alarms: Iterable[Alarm], firing_before: dict[str, Alert], site_id: str,
              config: AlertmanagerConfig, now_ns: int) -> tuple[list[Alert], dict[str, Alert]]:
    """(alerts to post now, alerts firing once posted): every firing alarm, and resolved ones
    for alarms that were firing and are not (or fire under other labels)."""
    by_id = {a.id: a for a in alarms}
    firing = {a.id: to_alert(a, site_id, config) for a in by_id.values() if is_firing(a, config)}
    resolved = []
    for alarm_id, old in sorted(firing_before.items()):
        new = firing.get(alarm_id)
        if new is not None and new.labels == old.labels:
            continue
        alarm = by_id.get(alarm_id)
        notes = alert_annotations(alarm) if alarm is not None else \
            {**old.annotations, "state": STATE_TEXT[AlarmState.NORMAL]}
        if alarm is not None and alarm.priority.value != old.labels.get("priority"):
            notes["state"] += f"; priority now {alarm.priority.value}"
        resolved.append(replace(old, annotations=notes, ends_ns=now_ns))
    return resolved + [firing[k] for k in sorted(firing)], firing


@dataclass(frozen=True, slots=True)
class AlertmanagerStats:
    """Counters of the client, for /metrics."""

    posts: int
    failures: int
    firing: int
    last_ok_s: float | None  # clock time of the last accepted post
    last_error: str


class AlertmanagerClient:
    """Posts the alarms to Alertmanager on every change and every resend interval."""

    def __init__(self, config: AlertmanagerConfig, alarms: AlarmSource, site_id: str, *,
                 delivery: DeliveryConfig | None = None, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.config, self.alarms, self.site_id = config, alarms, site_id
        self.delivery = delivery or DeliveryConfig()
        self.clock, self.rand, self.sleep = clock, rand, sleep
        self.url = config.url.rstrip("/") + API_PATH
        self._session, self._own_session = session, session is None
        self._firing: dict[str, Alert] = {}  # what Alertmanager holds as firing from us
        self._task: asyncio.Task[None] | None = None
        self.posts = self.failures = 0
        self.last_ok_s: float | None = None
        self.last_error = ""

    def stats(self) -> AlertmanagerStats:
        """Posts, failures, alerts firing and the last error."""
        return AlertmanagerStats(self.posts, self.failures, len(self._firing), self.last_ok_s,
                                 self.last_error)

    async def start(self) -> None:
        """Post the current alarms now, then on every change and resend interval."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="notify-alertmanager")
        log.info("posting alarms to Alertmanager", extra={
            "url": self.url, "resend_interval_s": self.config.resend_interval_s})

    async def close(self) -> None:
        """Stop posting (what was posted stays firing until Alertmanager's resolve_timeout)."""
        await cancel_task(self._task)
        self._task = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def post_once(self) -> bool:
        """Post the alerts due now; True when Alertmanager accepted them."""
        now_ns = int(self.clock() * NS)
        alerts, firing = plan_post(self.alarms.active(), self._firing, self.site_id,
                                   self.config, now_ns)
        if not alerts:
            self.last_ok_s = self.clock()
            return True
        self.posts += 1
        assert self._session is not None, "start() first"
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
            async with self._session.post(self.url, json=[a.json() for a in alerts],
                                          timeout=timeout) as answer:
                if answer.status >= 300:
                    body = (await answer.text())[:ERROR_EXCERPT_CHARS]
                    raise RuntimeError(f"HTTP {answer.status}: {body.strip()}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            self._failed(f"{type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError)
                         else str(exc))
            return False
        if self.last_error:
            log.info("Alertmanager accepts alerts again", extra={"url": self.url})
        self._firing, self.last_ok_s, self.last_error = firing, self.clock(), ""
        return True

    def _failed(self, error: str) -> None:
        self.failures += 1
        if error != self.last_error:  # once per distinct failure, not every retry
            log.warning("cannot post alarms to Alertmanager; retrying",
                        extra={"url": self.url, "error": error})
        self.last_error = error

    async def _run(self) -> None:
        version, resend = self.alarms.version, self.config.resend_interval_s
        seen, due, attempts = -1, self.clock(), 0
        while True:
            try:
                seen = await version.wait_past(seen, max(0.0, due - self.clock()))
            except TimeoutError:
                pass  # nothing changed: resend what is firing
            seen = version.value  # this post carries every change so far
            try:
                ok = await self.post_once()
            except Exception:  # a bug in one post must not end posting for good
                log.exception("posting to Alertmanager failed")
                ok = False
            if ok:
                attempts, due = 0, self.clock() + resend
                continue
            attempts += 1
            # the notifier's backoff, never longer than the resend interval that keeps
            # Alertmanager from resolving live alarms by itself
            await self.sleep(min(retry_delay_s(attempts, self.delivery, self.rand), resend))
            due = self.clock()
