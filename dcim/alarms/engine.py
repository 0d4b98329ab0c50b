"""The alarm engine: conditions in, ISA-18.2 alarm states and journaled events out.

Each evaluation is handed every condition that holds now (see dcim/alarms/sources.py).
A condition must hold for its source's on-delay before the alarm is raised and be gone for
its off-delay before it clears, so a value hovering at a limit does not chatter. Operators
acknowledge, shelve (for at most a shift), reset latched alarms and take alarms out of
service (for at most `max_out_of_service_s`); each of those is an event too, with who did it
and why. Shelving and out of service end by themselves at their expiry (user "system").
An alarm is announced (paged) once per activation: bringing it back into view (unshelve,
unsuppress, return to service) announces it only if nobody was told of it yet, so toggling a
shelf never pages on-call again. Operators' names and texts are checked here, whatever the
caller (operator_name, operator_text). Every event goes to the journal
(dcim/alarms/journal.py) before it is returned, so notifications and the dashboard never see
a transition the record does not hold.

The engine is synchronous and takes the time as an argument: tests move the clock.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from dcim.config.alarms import AlarmsConfig
from dcim.alarms.types import Action, Alarm, AlarmEvent, AlarmState, Condition, Priority

if TYPE_CHECKING:
    from dcim.alarms.journal import AlarmJournal

log = logging.getLogger(__name__)

NS = 1_000_000_000
SYSTEM = "system"  # the user of the system's own events: no operator may use the name
MAX_USER_CHARS = 64
# Unicode categories never accepted in operator text: control (Cc: NUL, ESC, DEL, ...),
# format (Cf: bidi overrides, zero-width characters) and line/paragraph separators (Zl, Zp),
# which could forge lines or hide text in the journal, logs, reports and messages.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# ... except in comments and reasons, where tab and line breaks are kept, escaped as the two
# characters \t, \r, \n, so a multi-line note stays one journal line.
COMMENT_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}


class AlarmError(ValueError):
    """An operator action that cannot be done (unknown alarm, wrong state, bad duration)."""


def _refused(text: str) -> str:
    """The refused characters of text, as U+XXXX (empty when there are none)."""
    bad = sorted({ch for ch in text if unicodedata.category(ch) in REFUSED_CATEGORIES})
    return ", ".join(f"U+{ord(ch):04X}" for ch in bad)


def operator_name(user: str) -> str:
    """The operator's name as journaled; AlarmError if it is empty, longer than 64, "system"
    or holds control or format characters."""
    if not user.strip():
        raise AlarmError("an operator action needs the operator's name")
    if len(user) > MAX_USER_CHARS:
        raise AlarmError(f"the operator's name is longer than {MAX_USER_CHARS} characters")
    if user.strip().casefold() == SYSTEM:
        raise AlarmError(f"{SYSTEM!r} is reserved for the system's own events; "
                         "give the operator's name")
    bad = _refused(user)
    if bad:
        raise AlarmError(f"the operator's name holds control or format characters ({bad})")
    return user


def operator_text(text: str, what: str = "comment") -> str:
    """A comment or reason as journaled: tab, CR and LF escaped (\\t, \\r, \\n); AlarmError
    for any other control or format character."""
    for raw, escaped in COMMENT_ESCAPES.items():
        text = text.replace(raw, escaped)
    bad = _refused(text)
    if bad:
        raise AlarmError(f"the {what} holds control or format characters ({bad})")
    return text


class AlarmEngine:
    """Holds every alarm's state; evaluate() and the operator actions return the events."""

    def __init__(self, config: AlarmsConfig | None = None,
                 journal: AlarmJournal | None = None) -> None:
        self.config = config or AlarmsConfig()
        self.journal = journal
        self.alarms: dict[str, Alarm] = journal.load_alarms() if journal is not None else {}
        self.maintenance: dict[str, str] = {u: SYSTEM for u in self.config.maintenance}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, conditions: Iterable[Condition], now_ns: int, *,
                 suppress: Mapping[str, str] | None = None,
                 suppress_by: Mapping[str, tuple[str, ...]] | None = None) -> list[AlarmEvent]:
        """Apply the conditions that hold now; ``suppress`` maps alarm ids to a reason, and
        ``suppress_by`` to the alarms that report their cause: such an alarm is suppressed
        while any of those is present or not yet back to normal (a latched trip until reset)."""
        suppress = dict(suppress or {})
        by = suppress_by or {}
        events: list[AlarmEvent] = []
        present: dict[str, Condition] = {}
        for cond in conditions:
            present.setdefault(cond.alarm_id, cond)
        for alarm_id, causes in by.items():
            if alarm_id not in suppress:
                cause = next((c for c in causes if self._reports(c, present)), None)
                if cause is not None:
                    suppress[alarm_id] = f"reported by {cause}"
        for alarm_id, cond in present.items():
            alarm = self.alarms.get(alarm_id)
            if alarm is None:
                alarm = Alarm(id=alarm_id, source=cond.source, priority=cond.priority,
                              message=cond.message, last_change_ns=now_ns)
                self.alarms[alarm_id] = alarm
            alarm.unit = cond.unit
            # suppression first, so an alarm raised while suppressed is never announced
            events += self._suppression(alarm, self._reason(alarm, suppress), now_ns)
            events += self._present(alarm, cond, now_ns)
        for alarm in list(self.alarms.values()):
            if alarm.id not in present:
                events += self._absent(alarm, now_ns)
                events += self._suppression(alarm, self._reason(alarm, suppress), now_ns)
        for alarm in list(self.alarms.values()):
            if alarm.shelved_until_ns is not None and alarm.shelved_until_ns <= now_ns:
                events.append(self._unshelve(alarm, SYSTEM, "shelving expired", now_ns))
            events += self._service_expiry(alarm, now_ns)
        self._forget_normal()
        return self._record(events)

    def _service_expiry(self, alarm: Alarm, now_ns: int) -> list[AlarmEvent]:
        """Back in service at the expiry; a record from before expiries gets the longest one."""
        if not alarm.out_of_service:
            return []
        if alarm.out_of_service_until_ns is None:
            alarm.out_of_service_until_ns = now_ns + int(self.config.max_out_of_service_s * NS)
            log.warning("alarm out of service without an expiry: returns to service at the "
                        "longest allowed", extra={"alarm": alarm.id,
                                                  "days": self.config.max_out_of_service_s / 86400})
        if alarm.out_of_service_until_ns > now_ns:
            return []
        return [self._return(alarm, SYSTEM, "out of service expired", now_ns)]

    def _present(self, alarm: Alarm, cond: Condition, now_ns: int) -> list[AlarmEvent]:
        priority = self.config.priority_for(alarm.id, cond.priority)
        alarm.source, alarm.unit, alarm.device = cond.source, cond.unit, cond.device
        alarm.series, alarm.value, alarm.message = cond.series, cond.value, cond.message
        alarm.latched = cond.latched or self.config.is_latched(alarm.id)
        alarm.clearing_since_ns = None
        if alarm.condition:
            if priority.rank > alarm.priority.rank:  # worse than when raised: say so
                alarm.priority = priority
                return [self._event(alarm, Action.PRIORITY, now_ns,
                                    comment=f"priority raised to {priority.value}",
                                    announce=alarm.announced)]
            return []
        if alarm.pending_since_ns is None:
            alarm.pending_since_ns = now_ns
        delay_ns = int(self.config.delays_for(alarm.source).on_delay_s * NS)
        if now_ns - alarm.pending_since_ns < delay_ns:
            return []
        was = alarm.state
        if was in (AlarmState.NORMAL, AlarmState.ACKED):  # a new activation
            alarm.annunciated = False
        alarm.priority = priority
        alarm.condition, alarm.pending_since_ns = True, None
        alarm.state = AlarmState.UNACK
        alarm.acked_by = alarm.acked_ns = None
        if alarm.active_since_ns is None or was in (AlarmState.NORMAL, AlarmState.RTN_UNACK):
            alarm.active_since_ns = now_ns
        window_ns = int(self.config.chatter_window_s * NS)
        alarm.activations_ns = [t for t in alarm.activations_ns if now_ns - t < window_ns]
        alarm.activations_ns.append(now_ns)
        alarm.last_change_ns = now_ns
        # Page only for news: an alarm nobody has acknowledged yet (it cleared and came back
        # unacknowledged) has already paged, and repeating it is what makes alarms chatter.
        return [self._event(alarm, Action.RAISE, now_ns, announce=self._news(alarm))]

    def _absent(self, alarm: Alarm, now_ns: int) -> list[AlarmEvent]:
        alarm.pending_since_ns = None
        if not alarm.condition:
            return []
        if alarm.clearing_since_ns is None:
            alarm.clearing_since_ns = now_ns
        delay_ns = int(self.config.delays_for(alarm.source).off_delay_s * NS)
        if now_ns - alarm.clearing_since_ns < delay_ns:
            return []
        alarm.condition, alarm.clearing_since_ns = False, None
        alarm.last_change_ns = now_ns
        if alarm.latched:
            comment = "condition gone; latched until reset"
        elif alarm.state is AlarmState.UNACK:
            alarm.state, comment = AlarmState.RTN_UNACK, "returned to normal, not acknowledged"
        else:
            alarm.state, comment = AlarmState.NORMAL, "returned to normal"
        if alarm.state is AlarmState.NORMAL:
            alarm.active_since_ns = None
        return [self._event(alarm, Action.CLEAR, now_ns, comment=comment,
                            announce=alarm.announced)]

    def _reports(self, cause: str, present: Mapping[str, Condition]) -> bool:
        """Whether the alarm `cause` is reporting its problem: present or not yet normal."""
        if cause in present:
            return True
        alarm = self.alarms.get(cause)
        return alarm is not None and (alarm.condition or alarm.state is not AlarmState.NORMAL)

    def _reason(self, alarm: Alarm, suppress: Mapping[str, str]) -> str | None:
        reason = suppress.get(alarm.id)
        if reason is None and alarm.unit is not None and alarm.unit in self.maintenance:
            reason = f"unit {alarm.unit} in maintenance"
        return reason

    def _suppression(self, alarm: Alarm, reason: str | None, now_ns: int) -> list[AlarmEvent]:
        """Suppression by design. Changes of an alarm that is normal (at most pending) are not
        events: its raise, if it comes, carries the flag."""
        quiet = alarm.state is AlarmState.NORMAL and not alarm.condition
        if reason is not None and alarm.suppressed_by != reason:
            was = alarm.suppressed_by
            alarm.suppressed_by = reason
            if quiet or was is not None:  # new, or only the reason changed
                return []
            return [self._event(alarm, Action.SUPPRESS, now_ns, comment=reason, announce=False)]
        if reason is None and alarm.suppressed_by is not None:
            alarm.suppressed_by = None
            if quiet:
                return []
            # back in view: if it still needs someone and was never announced, that is news
            return [self._event(alarm, Action.UNSUPPRESS, now_ns, announce=self._news(alarm))]
        return []

    def _news(self, alarm: Alarm) -> bool:
        """Whether to announce an alarm now: in view, active and unacknowledged, and not
        announced yet in this activation."""
        return alarm.announced and alarm.state is AlarmState.UNACK and not alarm.annunciated

    def _forget_normal(self) -> None:
        """Drop alarms that are normal with nothing pending (suppressed or not): the journal keeps
        their history; shelving and out of service are operator decisions and are kept."""
        for alarm_id in [a.id for a in self.alarms.values()
                         if a.state is AlarmState.NORMAL and not a.condition
                         and a.pending_since_ns is None and not a.shelved
                         and not a.out_of_service]:
            del self.alarms[alarm_id]

    # ------------------------------------------------------------------ operator actions

    def acknowledge(self, alarm_id: str, user: str, now_ns: int, comment: str = "") -> AlarmEvent:
        """An operator has seen it: active -> acknowledged, returned -> normal."""
        alarm = self._get(alarm_id, user)
        comment = operator_text(comment)
        if alarm.state is AlarmState.UNACK:
            alarm.state = AlarmState.ACKED
        elif alarm.state is AlarmState.RTN_UNACK:
            alarm.state = AlarmState.NORMAL
            alarm.active_since_ns = None
        else:
            raise AlarmError(f"alarm {alarm_id} is {alarm.state.value}: nothing to acknowledge")
        alarm.acked_by, alarm.acked_ns, alarm.last_change_ns = user, now_ns, now_ns
        return self._act(alarm, Action.ACK, user, comment, now_ns)

    def reset(self, alarm_id: str, user: str, now_ns: int, comment: str = "") -> AlarmEvent:
        """Return a latched alarm whose condition is gone to normal (acknowledging it)."""
        alarm = self._get(alarm_id, user)
        comment = operator_text(comment)
        if not alarm.latched or alarm.condition or alarm.state is AlarmState.NORMAL:
            raise AlarmError(f"alarm {alarm_id} cannot be reset: "
                             + ("its condition still holds" if alarm.condition
                                else "it is not a latched alarm waiting for reset"))
        alarm.state, alarm.active_since_ns, alarm.last_change_ns = AlarmState.NORMAL, None, now_ns
        if alarm.acked_by is None:
            alarm.acked_by, alarm.acked_ns = user, now_ns
        return self._act(alarm, Action.RESET, user, comment, now_ns)

    def shelve(self, alarm_id: str, user: str, now_ns: int, duration_s: float,
               reason: str) -> AlarmEvent:
        """Hide an alarm for a while (a known nuisance); it comes back by itself at expiry."""
        alarm = self._get(alarm_id, user)
        reason = operator_text(reason, "reason")
        if not reason.strip():
            raise AlarmError("shelving needs a reason (it is kept in the journal)")
        if not 0 < duration_s <= self.config.max_shelve_s:
            raise AlarmError(f"shelve duration must be in (0, {self.config.max_shelve_s:.0f}] s, "
                             f"got {duration_s:g}")
        alarm.shelved_until_ns = now_ns + int(duration_s * NS)
        alarm.shelved_by, alarm.shelve_reason = user, reason
        return self._act(alarm, Action.SHELVE, user, f"{reason} (for {duration_s / 60:.0f} min)",
                         now_ns, announce=False)

    def unshelve(self, alarm_id: str, user: str, now_ns: int, comment: str = "") -> AlarmEvent:
        """Bring a shelved alarm back before its expiry (announced only if never announced in
        this activation)."""
        alarm = self._get(alarm_id, user)
        comment = operator_text(comment)
        if not alarm.shelved:
            raise AlarmError(f"alarm {alarm_id} is not shelved")
        event = self._unshelve(alarm, user, comment, now_ns)
        self._forget_normal()
        return self._record([event])[0]

    def _unshelve(self, alarm: Alarm, user: str, comment: str, now_ns: int) -> AlarmEvent:
        alarm.shelved_until_ns, alarm.shelved_by, alarm.shelve_reason = None, None, ""
        return self._event(alarm, Action.UNSHELVE, now_ns, user=user, comment=comment,
                           announce=self._news(alarm))

    def remove_from_service(self, alarm_id: str, user: str, now_ns: int, reason: str,
                            duration_s: float) -> AlarmEvent:
        """Take an alarm out of service (a broken sensor awaiting repair), with a reason, for
        at most max_out_of_service_s; it returns to service by itself at expiry."""
        alarm = self._get(alarm_id, user)
        reason = operator_text(reason, "reason")
        if not reason.strip():
            raise AlarmError("taking an alarm out of service needs a reason")
        if alarm.out_of_service:
            raise AlarmError(f"alarm {alarm_id} is already out of service")
        limit_s = self.config.max_out_of_service_s
        if not 0 < duration_s <= limit_s:
            raise AlarmError(f"out-of-service duration must be in (0, {limit_s:.0f}] s, "
                             f"got {duration_s:g}")
        alarm.out_of_service_by = user
        alarm.out_of_service_until_ns = now_ns + int(duration_s * NS)
        return self._act(alarm, Action.OUT_OF_SERVICE, user,
                         f"{reason} (for {_span(duration_s)})", now_ns, announce=False)

    def return_to_service(self, alarm_id: str, user: str, now_ns: int,
                          comment: str = "") -> AlarmEvent:
        """Put an out-of-service alarm back in service before its expiry."""
        alarm = self._get(alarm_id, user)
        comment = operator_text(comment)
        if not alarm.out_of_service:
            raise AlarmError(f"alarm {alarm_id} is not out of service")
        event = self._return(alarm, user, comment, now_ns)
        self._forget_normal()
        return self._record([event])[0]

    def _return(self, alarm: Alarm, user: str, comment: str, now_ns: int) -> AlarmEvent:
        alarm.out_of_service_by, alarm.out_of_service_until_ns = None, None
        return self._event(alarm, Action.RETURN_TO_SERVICE, now_ns, user=user, comment=comment,
                           announce=self._news(alarm))

    def set_maintenance(self, unit: str, user: str, on: bool) -> None:
        """Mark a unit in (or out of) planned maintenance; applied at the next evaluation."""
        operator_name(user)
        if on:
            self.maintenance[unit] = user
        else:
            self.maintenance.pop(unit, None)
        log.info("maintenance %s", "set" if on else "ended", extra={"unit": unit, "user": user})

    def _get(self, alarm_id: str, user: str) -> Alarm:
        operator_name(user)
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmError(f"no alarm {alarm_id!r} is active, shelved or awaiting acknowledgement")
        return alarm

    def _act(self, alarm: Alarm, action: Action, user: str, comment: str, now_ns: int,
             announce: bool = True) -> AlarmEvent:
        event = self._event(alarm, action, now_ns, user=user, comment=comment, announce=announce)
        self._forget_normal()
        return self._record([event])[0]

    # ------------------------------------------------------------------ views and records

    def active(self) -> list[Alarm]:
        """Every alarm not normal, or normal but shelved or out of service; most urgent first.
        A condition still in its on-delay is not an alarm yet and is not listed."""
        listed = [a for a in self.alarms.values() if a.state is not AlarmState.NORMAL
                  or a.shelved or a.out_of_service]
        return sorted(listed,
                      key=lambda a: (-a.priority.rank, a.state is not AlarmState.UNACK,
                                     -(a.active_since_ns or a.last_change_ns), a.id))

    def is_chattering(self, alarm: Alarm, now_ns: int) -> bool:
        """Raised chatter_count times or more within the chatter window."""
        window_ns = int(self.config.chatter_window_s * NS)
        return sum(1 for t in alarm.activations_ns if now_ns - t < window_ns) \
            >= self.config.chatter_count

    def is_stale(self, alarm: Alarm, now_ns: int) -> bool:
        """Active for longer than stale_after_s."""
        return (alarm.condition and alarm.active_since_ns is not None
                and now_ns - alarm.active_since_ns > self.config.stale_after_s * NS)

    def _event(self, alarm: Alarm, action: Action, now_ns: int, *, user: str = SYSTEM,
               comment: str = "", announce: bool = True) -> AlarmEvent:
        if announce and alarm.state is AlarmState.UNACK:
            alarm.annunciated = True  # someone is told now: not again in this activation
        return AlarmEvent(time_ns=now_ns, alarm_id=alarm.id, action=action, state=alarm.state,
                          priority=alarm.priority, message=alarm.message, source=alarm.source,
                          unit=alarm.unit, device=alarm.device, user=user, comment=comment,
                          shelved=alarm.shelved, suppressed=alarm.suppressed,
                          out_of_service=alarm.out_of_service, announce=announce)

    def _record(self, events: list[AlarmEvent]) -> list[AlarmEvent]:
        if not events:
            return events
        if self.journal is not None:
            events = self.journal.append(events, self.alarms)
        for e in events:
            log.info("alarm %s", e.action.value,
                     extra={"alarm": e.alarm_id, "state": e.state.value,
                            "priority": e.priority.value, "user": e.user, "comment": e.comment})
        return events


def _span(seconds: float) -> str:
    """'45 min', '36 h', '7 d': an out-of-service period as operators say it."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


__all__ = ["AlarmEngine", "AlarmError", "Priority", "operator_name", "operator_text"]
