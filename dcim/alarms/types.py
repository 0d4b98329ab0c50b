"""The alarm vocabulary shared by the engine, its journal, notifications and the dashboard.

States follow ANSI/ISA-18.2 (IEC 62682): an alarm is normal, active and unacknowledged,
active and acknowledged, or returned to normal but not yet acknowledged. Shelving (by an
operator, with an expiry), suppression by design (the device is not answering, or the unit
is in maintenance) and out of service are flags on top of that state: a shelved or
suppressed alarm still follows its condition, it is just not announced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Priority(str, Enum):
    """How urgently someone must act (ISA-18.2 suggests about 80 % low, 5 % critical)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for critical, for ordering and routing thresholds."""
        return PRIORITY_ORDER.index(self)


PRIORITY_ORDER = (Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL)


class AlarmState(str, Enum):
    """The ISA-18.2 alarm states (shelved, suppressed and out of service are flags)."""

    NORMAL = "normal"
    UNACK = "active_unacknowledged"
    ACKED = "active_acknowledged"
    RTN_UNACK = "returned_unacknowledged"


class Action(str, Enum):
    """What happened to an alarm: one journal entry and one event per action."""

    RAISE = "raise"  # the condition held for the on-delay: active, unacknowledged
    CLEAR = "clear"  # the condition was gone for the off-delay
    ACK = "ack"  # an operator acknowledged it
    RESET = "reset"  # an operator reset a latched alarm whose condition is gone
    SHELVE = "shelve"
    UNSHELVE = "unshelve"  # by an operator, or the shelving expired (user "system")
    SUPPRESS = "suppress"  # by design: device not answering, unit in maintenance
    UNSUPPRESS = "unsuppress"
    OUT_OF_SERVICE = "out_of_service"
    RETURN_TO_SERVICE = "return_to_service"
    PRIORITY = "priority"  # the condition's priority changed while active (escalated)


@dataclass(frozen=True, slots=True)
class Condition:
    """What a detector says is wrong right now; the engine turns it into an alarm.

    ``alarm_id`` is the alarm's stable identity: the same problem gives the same id on every
    evaluation (for example ``device:PDU-A-H1-2:comm`` or ``envelope:RM-H1-A01``), so one
    problem is one alarm however many series show it.
    """

    alarm_id: str
    source: str  # "device", "unit", "redundancy", "anomaly", ...
    priority: Priority
    message: str
    unit: str | None = None  # the component (rack, UPS module, CRAH) it concerns
    device: str | None = None
    series: tuple[str, ...] = ()  # "device/point" of the series that show it
    value: float | None = None
    latched: bool = False  # stays active after the condition clears until reset


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm, as journaled and as handed to notifications.

    ``seq`` is the journal's sequence number (0 until journaled). ``state`` is the alarm's
    state after the action; ``shelved``/``suppressed``/``out_of_service`` its flags after it.
    ``announce`` is False when the alarm is shelved, suppressed or out of service: the event
    is journaled for the record but nobody is paged for it.
    """

    time_ns: int
    alarm_id: str
    action: Action
    state: AlarmState
    priority: Priority
    message: str
    source: str = ""
    unit: str | None = None
    device: str | None = None
    user: str = "system"
    comment: str = ""
    shelved: bool = False
    suppressed: bool = False
    out_of_service: bool = False
    announce: bool = True
    seq: int = 0


@dataclass(slots=True)
class Alarm:
    """The current record of one alarm (what the dashboard lists)."""

    id: str
    source: str
    priority: Priority
    message: str
    unit: str | None = None
    device: str | None = None
    series: tuple[str, ...] = ()
    value: float | None = None
    latched: bool = False
    state: AlarmState = AlarmState.NORMAL
    condition: bool = False  # the condition holds now (after delays)
    pending_since_ns: int | None = None  # condition seen, on-delay running
    clearing_since_ns: int | None = None  # condition gone, off-delay running
    active_since_ns: int | None = None
    last_change_ns: int = 0
    acked_by: str | None = None
    acked_ns: int | None = None
    shelved_until_ns: int | None = None
    shelved_by: str | None = None
    shelve_reason: str = ""
    suppressed_by: str | None = None
    out_of_service_by: str | None = None
    out_of_service_until_ns: int | None = None  # back in service by itself then
    # an event announced it (someone was paged) since it last became active: bringing it back
    # into view (unshelve, unsuppress, return to service) does not announce it again
    annunciated: bool = False
    activations_ns: list[int] = field(default_factory=list)  # recent raises (chattering)

    @property
    def shelved(self) -> bool:
        return self.shelved_until_ns is not None

    @property
    def suppressed(self) -> bool:
        return self.suppressed_by is not None

    @property
    def out_of_service(self) -> bool:
        return self.out_of_service_by is not None

    @property
    def announced(self) -> bool:
        """Whether it is shown to and paged for: not shelved, suppressed or out of service."""
        return not (self.shelved or self.suppressed or self.out_of_service)
