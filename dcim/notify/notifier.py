"""Alarm notifications: who is on call, what they are sent, escalation and flood handling.

The core is pure (time is passed in): `on_call` resolves the rota, `select_route` picks the
route for a priority, `format_alarm` writes the message, `FloodGate` turns a flood into
summaries and `Planner` turns alarm events and the passage of time into Messages. `Notifier`
is the thin edge around it: the durable outbox and one delivery worker per channel
(dcim/notify/channels.py). See docs/notifications.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from dcim.alarms.types import Action, AlarmEvent, AlarmState, Priority
from dcim.config.notifications import (
    EmailChannelConfig,
    FloodConfig,
    NotificationsConfig,
    PersonConfig,
    RotaConfig,
    RouteConfig,
)
from dcim.notify.channels import Delivery, Message, Outbox, make_sender
from dcim.tasks import cancel_and_wait, cancel_task

log = logging.getLogger(__name__)

DEFAULT_TZ = "Asia/Hong_Kong"
NS = 1_000_000_000
PRUNE_INTERVAL_S = 3600.0
CLOSE_GRACE_S = 5.0  # close() lets a send in progress finish this long (no duplicate later)


# ---------------------------------------------------------------------------- pure core


def _local_naive(when: datetime, tz: ZoneInfo) -> datetime:
    """Site-local wall-clock time (naive datetimes are taken as site-local already)."""
    return when if when.tzinfo is None else when.astimezone(tz).replace(tzinfo=None)


def on_call(rota: RotaConfig, when: datetime, tz: ZoneInfo) -> list[str]:
    """Person id on call in each tier at `when`; turns change at the local handover time."""
    local = _local_naive(when, tz)
    # wall-clock arithmetic: the handover stays at the local hour across a DST change
    turn = (local - datetime.combine(rota.start, rota.handover)) // timedelta(days=rota.rotate_days)
    ids = [tier[turn % len(tier)] for tier in rota.tiers]
    for o in rota.overrides:
        if _local_naive(o.start, tz) <= local < _local_naive(o.end, tz):
            ids[o.tier] = o.person
    return ids


def select_route(routes: Iterable[RouteConfig], priority: Priority) -> RouteConfig | None:
    """The route with the highest min_priority not above `priority` (none if none matches)."""
    matching = [r for r in routes if r.min_priority.rank <= priority.rank]
    return max(matching, key=lambda r: r.min_priority.rank, default=None)


STATE_TEXT = {
    AlarmState.NORMAL: "normal",
    AlarmState.UNACK: "active, unacknowledged",
    AlarmState.ACKED: "active, acknowledged",
    AlarmState.RTN_UNACK: "returned to normal, unacknowledged",
}
KIND_TEXT = {"raise": "ALARM", "clear": "CLEARED", "priority": "PRIORITY RAISED",
             "escalation": "ESCALATED", "renotify": "STILL UNACKNOWLEDGED"}


@dataclass(frozen=True, slots=True)
class Escalation:
    """For an escalation or reminder: how long unacknowledged, and who was paged when."""

    unacked_for_s: float
    tier: int  # the tier now paged
    paged: tuple[tuple[str, int, int], ...]  # (person name, tier, time_ns) paged before


def local_time(time_ns: int, tz: ZoneInfo) -> datetime:
    """An event time as an aware site-local datetime."""
    return datetime.fromtimestamp(time_ns / NS, tz=timezone.utc).astimezone(tz)


def format_duration(seconds: float) -> str:
    """'40 s', '15 min', '2 h 05 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def event_dict(event: AlarmEvent) -> dict[str, Any]:
    """The event's fields with enums as their values (for JSON)."""
    values = ((f.name, getattr(event, f.name)) for f in fields(event))
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in values}


def format_alarm(event: AlarmEvent, kind: str, tz: ZoneInfo, *, now_ns: int | None = None,
                 escalation: Escalation | None = None) -> tuple[str, str, dict[str, Any]]:
    """(subject, text, webhook payload) of one alarm message, readable at 3 a.m."""
    prio = event.priority.value.upper()
    sent = local_time(now_ns if now_ns is not None else event.time_ns, tz)
    when = local_time(event.time_ns, tz)
    where = event.unit or event.device
    subject = f"[{prio}] {KIND_TEXT[kind]}: {event.message}" + (f" ({where})" if where else "")
    if escalation is not None:
        subject += f", unacknowledged {format_duration(escalation.unacked_for_s)}"
    subject = " ".join(f"{subject} at {sent:%H:%M %Z}".split())  # one line: it is a mail header
    verb = {"clear": "returned to normal", "priority": "raised to this priority"}.get(kind, "raised")
    lines = [f"{prio} alarm {verb} at {when:%Y-%m-%d %H:%M:%S %Z}",
             f"Alarm:    {event.alarm_id}", f"Message:  {event.message}"]
    lines += [f"Unit:     {event.unit}"] if event.unit else []
    lines += [f"Device:   {event.device}"] if event.device else []
    lines += [f"State:    {STATE_TEXT[event.state]}"]
    lines += [f"Source:   {event.source}"] if event.source else []
    if escalation is not None:
        lines += ["", f"Unacknowledged for {format_duration(escalation.unacked_for_s)}."]
        lines += [f"Paged {name} (tier {t + 1}) at {local_time(ns, tz):%H:%M %Z}, "
                  f"{format_duration(((now_ns or ns) - ns) / NS)} ago, no acknowledgement."
                  for name, t, ns in escalation.paged]
        if kind == "escalation":
            lines += [f"You are tier {escalation.tier + 1}: please take it over."]
    if event.state is AlarmState.UNACK:
        lines += ["", "Acknowledge it on the dashboard to stop escalation."]
    payload: dict[str, Any] = {
        "kind": kind, "priority": event.priority.value, "alarm_id": event.alarm_id,
        "message": event.message, "unit": event.unit, "device": event.device,
        "state": event.state.value, "time_local": when.isoformat(),
        "time_utc": when.astimezone(timezone.utc).isoformat(), "subject": subject,
        "text": "\n".join(lines), "event": event_dict(event), "escalation": None}
    if escalation is not None:
        payload["escalation"] = {
            "unacked_for_s": round(escalation.unacked_for_s, 3), "tier": escalation.tier,
            "paged": [{"name": n, "tier": t, "time_local": local_time(ns, tz).isoformat()}
                      for n, t, ns in escalation.paged]}
    return subject, payload["text"], payload


Destination = tuple[str, str | None, str | None]  # channel, person id, address


class FloodGate:
    """Holds per-alarm messages during a flood and sends one summary per destination instead."""

    def __init__(self, config: FloodConfig, tz: ZoneInfo):
        self.config = config
        self.tz = tz
        self.active = False
        self.since_ns = 0
        self.floods = 0  # floods entered, for metrics
        self._raises: deque[int] = deque()
        self._held: dict[Destination, list[Message]] = {}
        self._told: set[Destination] = set()  # sent a summary in this flood
        self._last_summary_ns: int | None = None

    def note_raise(self, now_ns: int) -> None:
        """Count one announced raise; enter a flood above the threshold."""
        if not self.config.enabled:
            return
        self._raises.append(now_ns)
        self._trim(now_ns)
        if not self.active and len(self._raises) > self.config.max_raises:
            self.active, self.since_ns, self._last_summary_ns = True, now_ns, None
            self.floods += 1
            log.warning("alarm flood: sending summaries instead of single alarms",
                        extra={"raises": len(self._raises), "window_s": self.config.window_s})

    def admit(self, messages: Iterable[Message]) -> list[Message]:
        """The messages to send now; during a flood none (they are held for the summary)."""
        if not self.active:
            return list(messages)
        for m in messages:
            self._held.setdefault(m.destination, []).append(m)
        return []

    def due(self, now_ns: int) -> list[Message]:
        """Summaries due now: at the flood's start, every interval, and when it has ended."""
        if not self.active:
            return []
        self._trim(now_ns)
        if len(self._raises) <= self.config.max_raises:
            self.active = False
            log.info("alarm flood over", extra={"flood_s": round((now_ns - self.since_ns) / NS)})
            return self._summaries(now_ns, ended=True)
        last = self._last_summary_ns
        if last is None or now_ns - last >= self.config.summary_interval_s * NS:
            return self._summaries(now_ns, ended=False)
        return []

    def _trim(self, now_ns: int) -> None:
        while self._raises and self._raises[0] <= now_ns - self.config.window_s * NS:
            self._raises.popleft()

    def _summaries(self, now_ns: int, *, ended: bool) -> list[Message]:
        self._last_summary_ns = now_ns
        out = [self._summary(dest, self._held.get(dest, []), now_ns, ended)
               for dest in (self._told | set(self._held) if ended else set(self._held))]
        self._told = set() if ended else self._told | set(self._held)
        self._held = {}
        return sorted(out, key=lambda m: m.destination)

    def _summary(self, dest: Destination, held: list[Message], now_ns: int, ended: bool) -> Message:
        rank = {p.value: p.rank for p in Priority}
        held = sorted(held, key=lambda m: (-rank.get(m.priority or "low", 0), m.payload.get("time_local", "")))
        counts = [f"{sum(m.priority == p.value for m in held)} {p.value}"
                  for p in reversed(Priority) if any(m.priority == p.value for m in held)]
        since = local_time(self.since_ns, self.tz)
        state = "flood over" if ended else f"alarm flood since {since:%H:%M %Z}"
        subject = f"[FLOOD] {state}: {len(held)} alarm messages" + (f" ({', '.join(counts)})" if counts else "")
        lines = [f"{state.capitalize()}: more than {self.config.max_raises} alarms in "
                 f"{format_duration(self.config.window_s)}; these were held and are listed once:", ""]
        lines += [m.subject for m in held[: self.config.max_lines]]
        if len(held) > self.config.max_lines:
            lines += [f"... and {len(held) - self.config.max_lines} more (see the dashboard)"]
        if not ended:
            lines += ["", "Single alarm messages resume when the flood subsides."]
        text = "\n".join(lines)
        payload = {"kind": "flood", "flood_active": not ended, "since": since.isoformat(),
                   "raises_in_window": len(self._raises), "count": len(held), "subject": subject,
                   "text": text,
                   "alarms": [{k: m.payload.get(k) for k in ("kind", "priority", "alarm_id", "message",
                                                             "unit", "device", "time_local")}
                              for m in held]}
        channel, recipient, address = dest
        return Message(channel=channel, kind="flood", subject=subject, text=text,
                       payload=payload, recipient=recipient, address=address)


@dataclass(slots=True)
class _Tracked:
    """An unacknowledged alarm that someone was paged for."""

    event: AlarmEvent
    raised_ns: int
    tier: int
    tier_since_ns: int
    last_sent_ns: int
    paged: list[tuple[str, int, int]] = field(default_factory=list)


# events after which an unacknowledged alarm that is not announced again is still escalated
RETURNS = frozenset({Action.RAISE, Action.UNSHELVE, Action.UNSUPPRESS, Action.RETURN_TO_SERVICE})


class Planner:
    """Alarm events and the passage of time in, Messages out; no I/O."""

    def __init__(self, config: NotificationsConfig, tz: str | ZoneInfo = DEFAULT_TZ):
        self.config = config
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        self.people = {p.id: p for p in config.people}
        self.gate = FloodGate(config.flood, self.tz)
        self._latest: dict[str, AlarmEvent] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._paged: dict[str, set[str]] = {}  # alarm id -> person ids paged (told when it clears)

    @property
    def tracked(self) -> int:
        """Alarms whose escalation clock is running."""
        return len(self._tracked)

    def on_call(self, when: datetime) -> list[PersonConfig]:
        """The person on call in each tier at `when` (empty without a rota)."""
        if self.config.rota is None:
            return []
        return [self.people[pid] for pid in on_call(self.config.rota, when, self.tz)]

    def plan(self, events: Sequence[AlarmEvent]) -> list[Message]:
        """The messages for a batch of events (in the order they happened)."""
        out: list[Message] = []
        for event in events:
            out += self._event(event)
        return out

    def tick(self, now_ns: int) -> list[Message]:
        """Escalations, reminders and flood summaries due at `now_ns`."""
        c, out = self.config, []
        n_tiers = len(c.rota.tiers) if c.rota else 0
        after_ns = c.escalate_after_s * NS if c.escalate_after_s is not None else None
        for t in list(self._tracked.values()):
            escalates = after_ns is not None and t.event.priority.rank >= c.escalate_min_priority.rank \
                and t.tier + 1 < n_tiers and now_ns - t.tier_since_ns >= after_ns
            if escalates:
                t.tier, t.tier_since_ns = t.tier + 1, now_ns
                out += self._page(t, "escalation", now_ns)
            elif c.renotify_s is not None and now_ns - t.last_sent_ns >= c.renotify_s * NS:
                out += self._page(t, "renotify", now_ns)
        return self.gate.admit(out) + self.gate.due(now_ns)

    def _page(self, t: _Tracked, kind: str, now_ns: int) -> list[Message]:
        person = self.on_call(local_time(now_ns, self.tz))[t.tier]
        esc = Escalation((now_ns - t.raised_ns) / NS, t.tier, tuple(t.paged))
        t.last_sent_ns = now_ns
        if kind == "escalation":
            t.paged.append((person.name, t.tier, now_ns))
            self._paged.setdefault(t.event.alarm_id, set()).add(person.id)
        log.info("alarm unacknowledged, paging", extra={
            "alarm_id": t.event.alarm_id, "kind": kind, "tier": t.tier, "person": person.id})
        return self._to_person(person, t.event, kind, now_ns, esc)

    def _kind(self, e: AlarmEvent, prev: AlarmEvent | None) -> str | None:
        if e.action is Action.RAISE:
            return "raise"
        if e.action is Action.CLEAR:
            return "clear"
        if e.action is Action.PRIORITY and e.state is AlarmState.UNACK:
            return "priority" if prev is None or e.priority.rank > prev.priority.rank else None
        if e.action in (Action.UNSHELVE, Action.UNSUPPRESS, Action.RETURN_TO_SERVICE) \
                and e.state is AlarmState.UNACK:
            # active and unacknowledged, and announced: the engine announces a return into view
            # only when nobody was told of this activation yet
            return "raise"
        return None

    def _event(self, e: AlarmEvent) -> list[Message]:
        prev = self._latest.get(e.alarm_id)
        self._latest[e.alarm_id] = e
        hidden = e.shelved or e.suppressed or e.out_of_service
        if e.state is not AlarmState.UNACK or hidden:
            self._tracked.pop(e.alarm_id, None)  # acknowledged, cleared, shelved: stop escalating
        paged = self._paged.pop(e.alarm_id, set()) if e.state is AlarmState.NORMAL else \
            self._paged.get(e.alarm_id, set())
        if e.state is AlarmState.NORMAL:
            self._latest.pop(e.alarm_id, None)
        kind = self._kind(e, prev)
        route = select_route(self.config.routes, e.priority)
        if (e.action in RETURNS and not e.announce and not hidden
                and e.state is AlarmState.UNACK and route is not None and route.tier is not None
                and e.alarm_id not in self._tracked):
            # back before anyone acknowledged it, or back in view (unshelved, unsuppressed,
            # returned to service) after someone was paged: nobody is paged again (the engine
            # announces an alarm once per activation), but the escalation clock runs again
            self._tracked[e.alarm_id] = _Tracked(e, e.time_ns, route.tier, e.time_ns, e.time_ns)
        if not e.announce or kind is None or route is None:
            return []
        if kind == "raise":
            self.gate.note_raise(e.time_ns)
        out = [m for ch in route.channels for m in self._to_channel(ch, e, kind)]
        if kind == "clear":
            if not route.notify_clear:
                return []
            for pid in sorted(paged):
                out += self._to_person(self.people[pid], e, kind, e.time_ns, None)
        elif route.tier is not None:
            person = self.on_call(local_time(e.time_ns, self.tz))[route.tier]
            out += self._to_person(person, e, kind, e.time_ns, None)
            self._paged.setdefault(e.alarm_id, set()).add(person.id)
            t = self._tracked.get(e.alarm_id)
            if t is None:
                t = self._tracked[e.alarm_id] = _Tracked(e, e.time_ns, route.tier, e.time_ns, e.time_ns)
            t.event, t.last_sent_ns = e, e.time_ns
            t.paged.append((person.name, route.tier, e.time_ns))
        return self.gate.admit(out) + self.gate.due(e.time_ns)

    def _to_channel(self, name: str, e: AlarmEvent, kind: str) -> list[Message]:
        subject, text, payload = format_alarm(e, kind, self.tz)
        ch = self.config.channels[name]
        addresses: Sequence[str | None] = ch.to if isinstance(ch, EmailChannelConfig) else [None]
        return [Message(name, kind, subject, text, {**payload, "recipient": None}, None, a,
                        e.alarm_id, e.priority.value) for a in addresses]

    def _to_person(self, p: PersonConfig, e: AlarmEvent, kind: str, now_ns: int,
                   esc: Escalation | None) -> list[Message]:
        subject, text, payload = format_alarm(e, kind, self.tz, now_ns=now_ns, escalation=esc)
        payload["recipient"] = {"id": p.id, "name": p.name}
        out = []
        if p.webhook is not None:
            out.append(Message(p.webhook, kind, subject, text, payload, p.id, None,
                               e.alarm_id, e.priority.value))
        if p.email is not None and self.config.person_email_channel is not None:
            out.append(Message(self.config.person_email_channel, kind, subject, text, payload,
                               p.id, p.email, e.alarm_id, e.priority.value))
        return out


# ---------------------------------------------------------------------------- the edge


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Outbox and planner counters, for metrics."""

    queued: int
    delivered: int
    failed: int
    oldest_undelivered_age_s: float | None
    in_flood: bool
    escalating: int


class Notifier:
    """Plans messages for alarm events, stores them in the outbox and delivers them."""

    def __init__(self, config: NotificationsConfig, outbox_path: str | Path, *,
                 tz: str = DEFAULT_TZ, clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None,
                 rand: Callable[[], float] = random.random):
        self.config = config
        self.clock = clock
        self.planner = Planner(config, tz)
        self._session = session
        self._own_session = False
        senders = {name: make_sender(name, ch, self._http) for name, ch in config.channels.items()}
        self.outbox = Outbox(outbox_path)
        self.delivery = Delivery(self.outbox, senders, config.delivery, clock, rand)
        self._tasks: list[asyncio.Task[None]] = []  # one delivery worker per channel
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session, self._own_session = aiohttp.ClientSession(), True
        return self._session

    def now_ns(self) -> int:
        """The notifier's clock in nanoseconds."""
        return int(self.clock() * NS)

    async def start(self) -> None:
        """Start the delivery workers (resuming undelivered messages) and the escalation loop."""
        self.delivery.fail_unknown()
        self.outbox.prune(self.now_ns() - int(self.config.delivery.keep_delivered_s * NS))
        for name in self.delivery.senders:
            self._tasks.append(asyncio.create_task(self.delivery.run_channel(name),
                                                   name=f"notify-{name}"))
        self._ticker = asyncio.create_task(self._tick_loop(), name="notify-tick")
        pending, _ = self.outbox.counts()
        log.info("notifier started", extra={"channels": len(self.delivery.senders),
                                            "pending": pending.get("pending", 0)})

    async def close(self) -> None:
        """Stop the workers (letting a send in progress finish), close the session and outbox."""
        if self._closed:
            return
        self._closed = True
        await cancel_task(self._ticker)
        self.delivery.stopping = True
        self.delivery.wake(set(self.delivery.channels))
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_GRACE_S)
        await cancel_and_wait(self._tasks)
        if self._own_session and self._session is not None:
            await self._session.close()
        self.outbox.close()

    def submit(self, events: Sequence[AlarmEvent]) -> int:
        """Route alarm events and queue their messages in the outbox; how many were queued."""
        return self._enqueue(self.planner.plan(events))

    def tick(self, now_ns: int | None = None) -> int:
        """Queue the escalations, reminders and flood summaries due now; how many."""
        return self._enqueue(self.planner.tick(self.now_ns() if now_ns is None else now_ns))

    def who_is_on_call(self, when: datetime | None = None) -> list[PersonConfig]:
        """The person on call in each tier (index 0 is the primary) at `when` (default now;
        a naive datetime is site-local)."""
        return self.planner.on_call(when or local_time(self.now_ns(), self.planner.tz))

    def stats(self) -> NotifierStats:
        """Queued, delivered and failed messages and the age of the oldest undelivered one."""
        by_status, oldest = self.outbox.counts()
        age = None if oldest is None else max(0.0, (self.now_ns() - oldest) / NS)
        return NotifierStats(by_status.get("pending", 0), by_status.get("delivered", 0),
                             by_status.get("failed", 0), age, self.planner.gate.active,
                             self.planner.tracked)

    def _enqueue(self, messages: list[Message]) -> int:
        if messages:
            self.outbox.add(messages, self.now_ns())
            self.delivery.wake({m.channel for m in messages})
        return len(messages)

    async def _tick_loop(self) -> None:
        last_prune = self.clock()
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                self.tick()
                if self.clock() - last_prune >= PRUNE_INTERVAL_S:
                    last_prune = self.clock()
                    self.outbox.prune(self.now_ns() - int(self.config.delivery.keep_delivered_s * NS))
            except Exception:  # one bad tick must not end escalation for good
                log.exception("notification tick failed")
