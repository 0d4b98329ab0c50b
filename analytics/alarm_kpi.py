"""Alarm-system performance KPIs (ANSI/ISA-18.2, IEC 62682, EEMUA 191) from the alarm journal.

Pure: a time-ordered sequence of AlarmEvent and a period [start_ns, end_ns) in, AlarmKpis out.
Definitions (each threshold is a constant below and a keyword argument of `alarm_kpis`):
- annunciated alarm: a RAISE with announce=True in the period. Rates, floods, fixed 10-minute
  windows, the priority mix and acknowledgement are computed over these (what operators saw).
- raises: every RAISE in the period, announced or not; chattering and bad actors use these,
  since shelving a nuisance alarm hides it from the operator but does not fix it.
- flood: the system is in flood at time t while more than 10 annunciated alarms were raised in
  (t - 10 min, t]; a flood starts at the 11th alarm and ends when the trailing count falls back
  to 10. Only raises inside the period count; a flood is cut at end_ns.
- chattering: an alarm with 3 or more raises in less than 60 s (last - first < 60 s).
- active: an event's state is UNACK or ACKED (so a latched alarm stays active until RESET).
  Events before start_ns only set the state the period begins with; events at or after end_ns
  are ignored. Before an alarm's first event it is normal and not shelved.
- stale at end: active at end_ns, raised more than 24 h before it. Stale in period: an active
  episode longer than 24 h (up to its clear, or end_ns) that ends after start_ns.
- acknowledgement: from an annunciated raise to the first ACK of that alarm before its next
  raise and before end_ns; raises without one are counted as never acknowledged.
- shelving: from the event that sets an alarm's `shelved` flag to the one that clears it,
  clipped to the period. Priority escalations do not change the raise's priority in the mix.
- assessed period: the part of the asked period the journal covers (`assessed_start`: from
  its earliest evidence of recording, an event or an exported head). Over less than
  MIN_ASSESSED_S (a day) a target is "not enough data" (None in `verdicts`), except a
  violation that is a fact however short the period (a peak over the flood level, a
  chattering alarm); "met" always needs a day of journal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from dcim.alarms.types import Action, AlarmEvent, AlarmState, Priority

NS_PER_S = 1_000_000_000
DAY_S = 86_400
TEN_MIN_S = 600  # ISA-18.2 rates and fixed windows are per 10 minutes
FLOOD_ALARMS = 10  # a flood is MORE than this many annunciated alarms ...
FLOOD_WINDOW_S = 600  # ... within this many seconds
CHATTER_RAISES = 3  # chattering: this many raises ...
CHATTER_WINDOW_S = 60  # ... within this many seconds
STALE_AFTER_S = 86_400  # active longer than this is stale
TOP_N = 10  # bad actors reported
PRIORITY_TOLERANCE = 0.05  # absolute, on each share of the target mix
# ISA-18.2 / EEMUA 191 targets the verdicts use
ACCEPTABLE_PER_10MIN = 1.0  # "very likely to be acceptable"; 2 is the manageable maximum
MANAGEABLE_PER_10MIN = 2.0
ACCEPTABLE_PER_DAY = 150.0
FLOOD_TIME_MAX_SHARE = 0.01
FLOOD_WINDOWS_MAX_SHARE = 0.01  # 10-minute periods with more than FLOOD_ALARMS alarms
BAD_ACTOR_MAX_SHARE = 0.05  # top-10 contribution to the alarm load: ~1 % to 5 % maximum
STALE_MAX_PER_DAY = 5  # fewer than 5 stale alarms present on any day
MIN_PERIOD_DAYS = 30  # ISA-18.2 assesses performance over at least 30 days
MIN_ASSESSED_S = DAY_S  # less journal than this: "not enough data" (one daily cycle at least)
# targets a violation of which is a fact over any period (a count of what happened)
EVIDENCE_TARGETS = frozenset({"peak 10-min count", "chattering alarms"})
NOT_ENOUGH = "not enough data"
PRIORITY_TARGETS: tuple[tuple[str, tuple[Priority, ...], float], ...] = (
    ("low", (Priority.LOW,), 0.80),
    ("medium/high", (Priority.MEDIUM, Priority.HIGH), 0.15),
    ("critical", (Priority.CRITICAL,), 0.05),
)
_IntArray = npt.NDArray[np.int64]
_BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The thresholds one computation used (so verdicts judge by the same ones)."""

    flood_window_s: float = FLOOD_WINDOW_S
    flood_alarms: int = FLOOD_ALARMS
    chatter_raises: int = CHATTER_RAISES
    chatter_window_s: float = CHATTER_WINDOW_S
    stale_after_s: float = STALE_AFTER_S
    priority_tolerance: float = PRIORITY_TOLERANCE
    top_n: int = TOP_N


@dataclass(frozen=True, slots=True)
class Flood:
    """One flood: [start_ns, end_ns) and the most annunciated alarms in one window during it."""

    start_ns: int
    end_ns: int
    peak: int


@dataclass(frozen=True, slots=True)
class Chattering:
    """A chattering alarm: its raises in the period and the most within one chatter window."""

    alarm_id: str
    raises: int
    peak_in_window: int


@dataclass(frozen=True, slots=True)
class StaleAlarm:
    """An alarm active too long: since when, and how long (to its clear, or to end_ns)."""

    alarm_id: str
    active_since_ns: int
    active_s: float


@dataclass(frozen=True, slots=True)
class BadActor:
    """One of the most frequent alarms: its raises and their share of all raises."""

    alarm_id: str
    raises: int
    share: float


@dataclass(frozen=True, slots=True)
class ShelvedAlarm:
    """An alarm shelved during the period and for how long (within the period)."""

    alarm_id: str
    shelved_s: float


@dataclass(frozen=True, slots=True)
class AlarmKpis:
    """Alarm-system performance over one period; shares are fractions (0..1), times seconds."""

    start_ns: int
    end_ns: int
    thresholds: Thresholds
    raises: int  # every RAISE in the period
    annunciated: int  # RAISE with announce=True
    per_10min: float  # annunciated, average
    per_day: float
    peak_10min: int  # most annunciated alarms in any (sliding) 10 minutes
    windows: int  # fixed 10-minute windows from start_ns (the last may be partial)
    windows_over_acceptable: float  # share of fixed windows with more than 1 alarm
    windows_over_manageable: float  # ... more than 2
    windows_over_flood: float  # ... more than flood_alarms
    floods: tuple[Flood, ...]
    flood_time_s: float
    flood_share: float  # of the period
    flood_peak: int  # 0 without floods
    chattering: tuple[Chattering, ...]
    stale_at_end: tuple[StaleAlarm, ...]
    stale_in_period: tuple[StaleAlarm, ...]  # the longest episode of each alarm
    stale_peak_per_day: int  # most alarms stale at some time within one day of the period
    active_at_end: int
    priority_share: dict[Priority, float]  # of annunciated alarms
    priority_mix_ok: bool | None  # None without annunciated alarms
    bad_actors: tuple[BadActor, ...]
    bad_actor_share: float  # the top N together, of all raises
    shelved: tuple[ShelvedAlarm, ...]
    shelved_time_s: float
    shelve_actions: int
    shelved_raises: int  # raises while shelved (not announced)
    suppressed_raises: int
    out_of_service_raises: int
    suppress_actions: int
    acked: int
    ack_median_s: float | None
    ack_p90_s: float | None
    unacked: int  # annunciated raises never acknowledged in the period

    @property
    def period_s(self) -> float:
        """Length of the period in seconds."""
        return (self.end_ns - self.start_ns) / NS_PER_S

    @property
    def flood_count(self) -> int:
        """Number of floods."""
        return len(self.floods)


def alarm_kpis(events: Sequence[AlarmEvent], start_ns: int, end_ns: int, *,
               flood_alarms: int = FLOOD_ALARMS, flood_window_s: float = FLOOD_WINDOW_S,
               chatter_raises: int = CHATTER_RAISES, chatter_window_s: float = CHATTER_WINDOW_S,
               stale_after_s: float = STALE_AFTER_S,
               priority_tolerance: float = PRIORITY_TOLERANCE, top_n: int = TOP_N) -> AlarmKpis:
    """The ISA-18.2 / EEMUA 191 KPIs of a time-ordered alarm journal over [start_ns, end_ns)."""
    th = Thresholds(flood_window_s, flood_alarms, chatter_raises, chatter_window_s, stale_after_s,
                    priority_tolerance, top_n)
    _check(th, start_ns, end_ns)
    ev = _Columns(events, end_ns)
    inside = ev.time >= start_ns
    raise_in = inside & ev.is_raise
    ann = raise_in & ev.announce
    ann_times = ev.time[ann]
    ten_min_ns, flood_ns = TEN_MIN_S * NS_PER_S, int(th.flood_window_s * NS_PER_S)
    period_ns = end_ns - start_ns
    trailing = _trailing_counts(ann_times, ten_min_ns)
    trailing_flood = trailing if flood_ns == ten_min_ns else _trailing_counts(ann_times, flood_ns)
    floods = _floods(ann_times, trailing_flood, flood_ns, flood_alarms, end_ns)
    flood_time_ns = sum(f.end_ns - f.start_ns for f in floods)
    n_windows = -(-period_ns // ten_min_ns)
    per_window = np.bincount((ann_times - start_ns) // ten_min_ns, minlength=n_windows)
    order = np.argsort(ev.code, kind="stable")  # by alarm, then time (input is by time)
    active = _intervals(ev, order, ev.active, end_ns)
    stale_end, stale_any, stale_peak = _stale(ev, active, start_ns, end_ns,
                                              int(th.stale_after_s * NS_PER_S))
    shelved = _shelved(ev, _intervals(ev, order, ev.shelved, end_ns), start_ns, end_ns)
    delays = _ack_delays(ev, order, ann)
    share, mix_ok = _priority_mix(ev.priority[ann], priority_tolerance)
    actors, actors_share = _bad_actors(ev, ev.code[raise_in], top_n)
    n_ann = int(ann.sum())
    unannounced = raise_in & ~ev.announce
    return AlarmKpis(
        start_ns=start_ns, end_ns=end_ns, thresholds=th, raises=int(raise_in.sum()),
        annunciated=n_ann, per_10min=n_ann / (period_ns / ten_min_ns),
        per_day=n_ann / (period_ns / (DAY_S * NS_PER_S)),
        peak_10min=int(trailing.max()) if trailing.size else 0, windows=int(n_windows),
        windows_over_acceptable=float(np.mean(per_window > ACCEPTABLE_PER_10MIN)),
        windows_over_manageable=float(np.mean(per_window > MANAGEABLE_PER_10MIN)),
        windows_over_flood=float(np.mean(per_window > flood_alarms)),
        floods=floods, flood_time_s=flood_time_ns / NS_PER_S,
        flood_share=flood_time_ns / period_ns, flood_peak=max((f.peak for f in floods), default=0),
        chattering=_chattering(ev, order[raise_in[order]], th), stale_at_end=stale_end,
        stale_in_period=stale_any, stale_peak_per_day=stale_peak,
        active_at_end=int(active[3].sum()), priority_share=share, priority_mix_ok=mix_ok,
        bad_actors=actors, bad_actor_share=actors_share, shelved=shelved,
        shelved_time_s=float(sum(s.shelved_s for s in shelved)),
        shelve_actions=int((inside & ev.is_shelve).sum()),
        shelved_raises=int((unannounced & ev.shelved).sum()),
        suppressed_raises=int((unannounced & ev.suppressed).sum()),
        out_of_service_raises=int((unannounced & ev.out_of_service).sum()),
        suppress_actions=int((inside & ev.is_suppress).sum()), acked=int(delays.size),
        ack_median_s=float(np.median(delays)) / NS_PER_S if delays.size else None,
        ack_p90_s=float(np.percentile(delays, 90)) / NS_PER_S if delays.size else None,
        unacked=n_ann - int(delays.size))


def assessed_start(start_ns: int, end_ns: int, covered_from_ns: int | None) -> int | None:
    """Where the assessed period starts: the asked start, or later where the journal's
    coverage begins later; None when the journal covers none of [start_ns, end_ns)."""
    if covered_from_ns is None or covered_from_ns >= end_ns:
        return None
    return max(start_ns, covered_from_ns)


def verdicts(kpis: AlarmKpis, asked_s: float | None = None
             ) -> list[tuple[str, bool | None, str]]:
    """(name, met, text) for each ISA-18.2 / EEMUA 191 target; met is None ("not enough
    data") over an assessed period shorter than MIN_ASSESSED_S, unless the target's
    violation is a fact (EVIDENCE_TARGETS). `asked_s`: the period asked for, when the
    journal covers less of it."""
    found = _targets(kpis, asked_s)
    if kpis.period_s >= MIN_ASSESSED_S:
        return found
    short = (f"{NOT_ENOUGH}: {_span(kpis.period_s)} of journal, at least "
             f"{_span(MIN_ASSESSED_S)} needed")
    return [(name, met, text) if name == "period" or (name in EVIDENCE_TARGETS and not met)
            else (name, None, short) for name, met, text in found]


def _span(seconds: float) -> str:
    """A period in the unit that reads best (minutes, hours or days)."""
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} days"


def _targets(kpis: AlarmKpis, asked_s: float | None) -> list[tuple[str, bool | None, str]]:
    th = kpis.thresholds
    days = kpis.period_s / DAY_S
    top = f"top {th.top_n}"
    mix = ", ".join(f"{p.value} {s:.0%}" for p, s in kpis.priority_share.items()
                    ) if kpis.annunciated else "no annunciated alarms"
    asked = (f" of {_span(asked_s)} asked (the journal covers no more)"
             if asked_s is not None and asked_s > kpis.period_s + 1 else "")
    return [
        ("period", days >= MIN_PERIOD_DAYS,
         f"{_span(kpis.period_s)} assessed{asked} (at least {MIN_PERIOD_DAYS} days for a "
         "representative figure)"),
        ("alarm rate per 10 min", kpis.per_10min <= ACCEPTABLE_PER_10MIN,
         f"{kpis.per_10min:.2f} annunciated per 10 min on average (acceptable "
         f"~{ACCEPTABLE_PER_10MIN:g}, manageable {MANAGEABLE_PER_10MIN:g})"),
        ("alarm rate per day", kpis.per_day <= ACCEPTABLE_PER_DAY,
         f"{kpis.per_day:.0f} annunciated per day (acceptable ~{ACCEPTABLE_PER_DAY:g})"),
        ("peak 10-min count", kpis.peak_10min <= th.flood_alarms,
         f"at most {kpis.peak_10min} in any 10 minutes (target <= {th.flood_alarms})"),
        ("10-min periods in flood", kpis.windows_over_flood < FLOOD_WINDOWS_MAX_SHARE,
         f"{kpis.windows_over_flood:.2%} of 10-minute periods had more than "
         f"{th.flood_alarms} alarms (target < {FLOOD_WINDOWS_MAX_SHARE:.0%})"),
        ("time in flood", kpis.flood_share < FLOOD_TIME_MAX_SHARE,
         f"{kpis.flood_share:.2%} of the time in flood, {kpis.flood_count} floods, peak "
         f"{kpis.flood_peak} (target < {FLOOD_TIME_MAX_SHARE:.0%})"),
        ("chattering alarms", not kpis.chattering,
         f"{len(kpis.chattering)} alarms raised {th.chatter_raises}+ times within "
         f"{th.chatter_window_s:g} s (target 0)"),
        ("stale alarms", kpis.stale_peak_per_day < STALE_MAX_PER_DAY,
         f"at most {kpis.stale_peak_per_day} stale on one day, {len(kpis.stale_at_end)} at "
         f"the end (target < {STALE_MAX_PER_DAY} on any day)"),
        ("priority mix", kpis.priority_mix_ok is not False,
         f"{mix} (target ~80 % low, 15 % medium/high, 5 % critical, "
         f"+-{th.priority_tolerance:.0%})"),
        (f"{top} bad actors", kpis.bad_actor_share <= BAD_ACTOR_MAX_SHARE,
         f"the {top} alarms gave {kpis.bad_actor_share:.1%} of all raises "
         f"(target <= {BAD_ACTOR_MAX_SHARE:.0%})"),
    ]


# ---------------------------------------------------------------- internals


def _check(th: Thresholds, start_ns: int, end_ns: int) -> None:
    if end_ns <= start_ns:
        raise ValueError(f"period end_ns={end_ns} must be after start_ns={start_ns}")
    for name, least in (("flood_window_s", 1e-9), ("chatter_window_s", 1e-9),
                        ("stale_after_s", 1e-9), ("flood_alarms", 1), ("chatter_raises", 2),
                        ("top_n", 1)):
        if getattr(th, name) < least:
            raise ValueError(f"{name}={getattr(th, name)} must be at least {least:g}")


class _Columns:
    """The journal before end_ns as arrays (C-speed passes; flags and priority of raises)."""

    def __init__(self, events: Sequence[AlarmEvent], end_ns: int) -> None:
        n = len(events)
        time = np.fromiter(map(attrgetter("time_ns"), events), np.int64, n)
        if n > 1 and bool(np.any(time[1:] < time[:-1])):
            order = np.argsort(time, kind="stable")
            events, time = [events[i] for i in order.tolist()], time[order]
        cut = int(np.searchsorted(time, end_ns, "left"))
        events, self.time = events[:cut], time[:cut]

        ids = list(map(attrgetter("alarm_id"), events))
        self.names: list[str] = list(dict.fromkeys(ids))
        index = {name: i for i, name in enumerate(self.names)}
        self.code: _IntArray = np.fromiter(map(index.__getitem__, ids), np.int64, cut)
        # compare with member.value: numpy would turn a str-Enum member into str(member)
        action, state = _column(events, "action", object), _column(events, "state", object)
        self.is_raise: _BoolArray = action == Action.RAISE.value
        self.is_ack: _BoolArray = action == Action.ACK.value
        self.is_shelve: _BoolArray = action == Action.SHELVE.value
        self.is_suppress: _BoolArray = action == Action.SUPPRESS.value
        self.active: _BoolArray = (state == AlarmState.UNACK.value) | (
            state == AlarmState.ACKED.value)
        self.shelved: _BoolArray = _column(events, "shelved", np.bool_)
        # the rest matters for raises only: read those (a third of a journal, or less)
        at = np.flatnonzero(self.is_raise)
        raised = [events[i] for i in at.tolist()]
        self.priority = np.empty(cut, dtype=object)
        self.priority[at] = _column(raised, "priority", object)
        self.suppressed, self.out_of_service, self.announce = (np.zeros(cut, dtype=bool)
                                                               for _ in range(3))
        self.suppressed[at] = _column(raised, "suppressed", np.bool_)
        self.out_of_service[at] = _column(raised, "out_of_service", np.bool_)
        self.announce[at] = _column(raised, "announce", np.bool_)


def _column(events: Sequence[AlarmEvent], name: str, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    return np.fromiter(map(attrgetter(name), events), dtype, len(events))


def _trailing_counts(times: _IntArray, window_ns: int) -> _IntArray:
    """For each raise, how many raises fell in (t - window, t]."""
    first = np.searchsorted(times, times - window_ns, "right")
    return np.arange(times.size, dtype=np.int64) - first + 1


def _floods(times: _IntArray, trailing: _IntArray, window_ns: int, more_than: int,
            end_ns: int) -> tuple[Flood, ...]:
    if times.size <= more_than:
        return ()
    # raises i..i+k all lie in (t - W, t] exactly for t in [times[i+k], times[i] + W)
    starts, ends = times[more_than:], times[:-more_than] + window_ns
    keep = starts < ends
    starts, ends = starts[keep], ends[keep]
    if not starts.size:
        return ()
    new = np.ones(starts.size, dtype=bool)
    new[1:] = starts[1:] > ends[:-1]  # both are non-decreasing: merge overlapping runs
    first = np.flatnonzero(new)
    f_start = starts[first]
    f_end = np.minimum(ends[np.r_[first[1:] - 1, starts.size - 1]], end_ns)
    peak = np.zeros(first.size, dtype=np.int64)
    hot = trailing > more_than  # every raise inside a flood has a count above the threshold
    np.maximum.at(peak, np.searchsorted(f_start, times[hot], "right") - 1, trailing[hot])
    return tuple(Flood(int(s), int(e), int(p)) for s, e, p in zip(f_start, f_end, peak))


def _intervals(ev: _Columns, order: _IntArray, flag: _BoolArray,
               end_ns: int) -> tuple[_IntArray, _IntArray, _IntArray, _BoolArray]:
    """(alarm code, from, to, open) of each run where flag holds; open runs end at end_ns."""
    code, on = ev.code[order], flag[order]
    before = np.zeros(on.size, dtype=bool)
    before[1:] = on[:-1] & (code[1:] == code[:-1])
    edges = np.flatnonzero(on != before)  # rises and falls alternate within each alarm
    rises = np.flatnonzero(on[edges])
    nxt = rises + 1
    closed = nxt < edges.size
    closed[closed] = code[edges[nxt[closed]]] == code[edges[rises[closed]]]
    to = np.full(rises.size, end_ns, dtype=np.int64)
    to[closed] = ev.time[order[edges[nxt[closed]]]]
    at = order[edges[rises]]
    return ev.code[at], ev.time[at], to, ~closed


def _stale(ev: _Columns, active: tuple[_IntArray, _IntArray, _IntArray, _BoolArray],
           start_ns: int, end_ns: int,
           stale_ns: int) -> tuple[tuple[StaleAlarm, ...], tuple[StaleAlarm, ...], int]:
    code, since, to, is_open = active
    at_end = np.flatnonzero(is_open & (end_ns - since > stale_ns))
    stale = np.flatnonzero((to - since > stale_ns) & (to > start_ns))
    ever = stale[np.argsort(since[stale] - to[stale], kind="stable")]  # longest first
    ever = ever[np.unique(code[ever], return_index=True)[1]]

    def listed(idx: _IntArray) -> tuple[StaleAlarm, ...]:
        rows = [StaleAlarm(ev.names[code[i]], int(since[i]), float(to[i] - since[i]) / NS_PER_S)
                for i in idx]
        return tuple(sorted(rows, key=lambda s: (-s.active_s, s.alarm_id)))

    # count each stale episode on every day of the period it touches (a difference array)
    day_ns = DAY_S * NS_PER_S
    days = np.zeros(int(-(-(end_ns - start_ns) // day_ns)) + 1, dtype=np.int64)
    np.add.at(days, (np.maximum(since[stale] + stale_ns, start_ns) - start_ns) // day_ns, 1)
    np.add.at(days, (to[stale] - 1 - start_ns) // day_ns + 1, -1)
    peak = int(np.cumsum(days).max())
    return listed(at_end), listed(ever), peak


def _shelved(ev: _Columns, runs: tuple[_IntArray, _IntArray, _IntArray, _BoolArray],
             start_ns: int, end_ns: int) -> tuple[ShelvedAlarm, ...]:
    code, since, to, _ = runs
    spans = np.minimum(to, end_ns) - np.maximum(since, start_ns)
    keep = spans > 0
    total = np.bincount(code[keep], weights=spans[keep], minlength=len(ev.names))
    rows = [ShelvedAlarm(ev.names[i], float(total[i]) / NS_PER_S) for i in np.flatnonzero(total)]
    return tuple(sorted(rows, key=lambda s: (-s.shelved_s, s.alarm_id)))


def _ack_delays(ev: _Columns, order: _IntArray, ann: _BoolArray) -> _IntArray:
    """Time from each annunciated raise to its first ACK (before the next raise), in ns."""
    code = ev.code[order]
    is_raise = ev.is_raise[order]
    pos = np.arange(order.size)
    group_start = np.maximum.accumulate(np.where(np.r_[True, code[1:] != code[:-1]], pos, 0))
    last_raise = np.maximum.accumulate(np.where(is_raise, pos, -1))
    acks = np.flatnonzero(ev.is_ack[order] & (last_raise >= group_start))
    raised = last_raise[acks]
    wanted = ann[order[raised]]
    raised, acks = raised[wanted], acks[wanted]
    raised, first = np.unique(raised, return_index=True)  # the first ACK of each raise
    return ev.time[order[acks[first]]] - ev.time[order[raised]]


def _chattering(ev: _Columns, raises: _IntArray, th: Thresholds) -> tuple[Chattering, ...]:
    """Alarms with chatter_raises raises in less than chatter_window_s; `raises` by alarm, time."""
    code, time = ev.code[raises], ev.time[raises]
    lag = th.chatter_raises - 1
    window_ns = int(th.chatter_window_s * NS_PER_S)
    hit = (code[lag:] == code[:-lag]) & (time[lag:] - time[:-lag] < window_ns)
    rows = []
    for c in np.unique(code[:-lag][hit]):
        lo, hi = np.searchsorted(code, c, "left"), np.searchsorted(code, c, "right")
        t = time[lo:hi]
        peak = int((np.searchsorted(t, t + window_ns, "left") - np.arange(t.size)).max())
        rows.append(Chattering(ev.names[c], int(hi - lo), peak))
    return tuple(sorted(rows, key=lambda r: (-r.raises, r.alarm_id)))


def _priority_mix(priorities: npt.NDArray[np.object_],
                  tolerance: float) -> tuple[dict[Priority, float], bool | None]:
    n = priorities.size
    share = {p: float(np.count_nonzero(priorities == p.value)) / n if n else 0.0 for p in Priority}
    if not n:
        return share, None
    ok = all(abs(sum(share[p] for p in group) - target) <= tolerance + 1e-12
             for _, group, target in PRIORITY_TARGETS)
    return share, ok


def _bad_actors(ev: _Columns, codes: _IntArray, top_n: int) -> tuple[tuple[BadActor, ...], float]:
    if not codes.size:
        return (), 0.0
    counts = np.bincount(codes, minlength=len(ev.names))
    floor = max(int(np.sort(counts)[-min(top_n, counts.size)]), 1)  # ties: by alarm id
    cand = sorted((-int(counts[c]), ev.names[c]) for c in np.flatnonzero(counts >= floor))
    rows = tuple(BadActor(name, -neg, -neg / codes.size) for neg, name in cand[:top_n])
    return rows, sum(r.raises for r in rows) / codes.size
