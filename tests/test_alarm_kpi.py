"""Alarm KPIs: hand-made journals whose answers were worked out by hand."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import Action, Alarm, AlarmEvent, AlarmState, Priority
from dcim.analytics.alarm_kpi import (
    MIN_ASSESSED_S, AlarmKpis, BadActor, Chattering, Flood, ShelvedAlarm, StaleAlarm, alarm_kpis,
    assessed_start, verdicts,
)
from dcim.cli import main

S = 1_000_000_000  # ns per second
MIN = 60 * S
H = 3600 * S
DAY = 24 * H
T0 = 1_700_000_000 * S  # period start (any epoch works)
STATE_AFTER = {Action.RAISE: AlarmState.UNACK, Action.ACK: AlarmState.ACKED,
               Action.CLEAR: AlarmState.NORMAL}


def ev(t_s: float, alarm: str, action: Action = Action.RAISE, *, state: AlarmState | None = None,
       priority: Priority = Priority.LOW, **flags: Any) -> AlarmEvent:
    """An event t_s seconds after T0 (state after it guessed from the action)."""
    if state is None:
        state = STATE_AFTER.get(action, AlarmState.UNACK)
    return AlarmEvent(T0 + int(t_s * S), alarm, action, state, priority, f"{alarm} {action.value}",
                      **flags)


def raises(n: int, every_s: float, first_s: float = 0.0, prefix: str = "a") -> list[AlarmEvent]:
    """n annunciated raises of distinct alarms, every_s apart."""
    return [ev(first_s + i * every_s, f"{prefix}{i}") for i in range(n)]


def kpis(events: list[AlarmEvent], days: float = 1.0, **kw: Any) -> AlarmKpis:
    return alarm_kpis(events, T0, T0 + int(days * DAY), **kw)


# ------------------------------------------------------------- table of hand-worked journals
# 12 raises 25 s apart (0..275 s): the trailing 10-minute count passes 10 at the 11th (250 s)
# and falls back to 10 when the second raise leaves the window (25 s + 600 s).
FLOOD_12 = raises(12, 25)

CASES: list[tuple[str, list[AlarmEvent], dict[str, Any], str, Any]] = [
    ("empty-raises", [], {}, "raises", 0),
    ("empty-peak", [], {}, "peak_10min", 0),
    ("empty-acks", [], {}, "ack_median_s", None),
    ("empty-mix", [], {}, "priority_mix_ok", None),
    ("empty-windows", [], {}, "windows", 144),
    ("flood-count", FLOOD_12, {}, "flood_count", 1),
    ("flood-bounds", FLOOD_12, {}, "floods", (Flood(T0 + 250 * S, T0 + 625 * S, 12),)),
    ("flood-time", FLOOD_12, {}, "flood_time_s", 375.0),
    ("flood-share", FLOOD_12, {}, "flood_share", 375 / 86400),
    ("flood-peak", FLOOD_12, {}, "flood_peak", 12),
    ("flood-peak-10min", FLOOD_12, {}, "peak_10min", 12),
    ("flood-windows", FLOOD_12, {}, "windows_over_flood", 1 / 144),
    ("flood-per-day", FLOOD_12, {}, "per_day", 12.0),
    ("flood-per-10min", FLOOD_12, {}, "per_10min", 12 / 144),
    ("exactly-10-no-flood", raises(10, 25), {}, "floods", ()),
    ("11-in-599s-flood", raises(11, 59.9), {}, "flood_time_s", pytest.approx(1.0)),
    ("11-in-600s-no-flood", raises(11, 60), {}, "floods", ()),
    ("flood-threshold-kw", raises(6, 10), {"flood_alarms": 5}, "flood_time_s", 550.0),
    ("flood-window-kw", raises(12, 25), {"flood_window_s": 200}, "floods", ()),
    ("two-floods", raises(11, 1) + raises(11, 1, first_s=3600, prefix="b"), {},
     "flood_time_s", 2 * 590.0),
    ("flood-cut-at-end", raises(11, 1, first_s=86400 - 100), {}, "flood_time_s", 90.0),
    # fixed windows [0,600) [600,1200): 2 alarms then 3 alarms
    ("windows-acceptable", raises(2, 1) + raises(3, 1, first_s=600, prefix="b"), {},
     "windows_over_acceptable", 2 / 144),
    ("windows-manageable", raises(2, 1) + raises(3, 1, first_s=600, prefix="b"), {},
     "windows_over_manageable", 1 / 144),
    ("peak-sliding-across-fixed-windows", raises(4, 100, first_s=450), {}, "peak_10min", 4),
    ("chattering", [ev(0, "x"), ev(20, "x"), ev(59, "x"), ev(500, "x")], {}, "chattering",
     (Chattering("x", 4, 3),)),
    ("not-chattering-60s-apart", [ev(0, "x"), ev(30, "x"), ev(60, "x")], {}, "chattering", ()),
    ("not-chattering-other-alarms", [ev(0, "x"), ev(1, "y"), ev(2, "x")], {}, "chattering", ()),
    ("chatter-kw", [ev(0, "x"), ev(100, "x")], {"chatter_raises": 2, "chatter_window_s": 101},
     "chattering", (Chattering("x", 2, 2),)),
    ("chatter-counts-unannounced", [ev(0, "x", shelved=True, announce=False),
                                    ev(10, "x", shelved=True, announce=False), ev(20, "x")],
     {}, "chattering", (Chattering("x", 3, 3),)),
    # raised 2 h before the period, never cleared: 26 h old at the end of a 1-day period
    ("stale-at-end", [ev(-7200, "old"), ev(3600, "new")], {}, "stale_at_end",
     (StaleAlarm("old", T0 - 2 * H, 26 * 3600.0),)),
    ("stale-not-24h-yet", [ev(0, "young")], {}, "stale_at_end", ()),
    ("stale-in-period-cleared", [ev(-7200, "old"), ev(86000, "old", Action.CLEAR)], {},
     "stale_in_period", (StaleAlarm("old", T0 - 2 * H, 86000 + 7200.0),)),
    ("stale-cleared-not-at-end", [ev(-7200, "old"), ev(86000, "old", Action.CLEAR)], {},
     "stale_at_end", ()),
    ("stale-acked-still-active", [ev(-7200, "old"), ev(10, "old", Action.ACK)], {},
     "stale_peak_per_day", 1),
    ("stale-after-kw", [ev(0, "x")], {"stale_after_s": 3600}, "stale_at_end",
     (StaleAlarm("x", T0, 86400.0),)),
    ("stale-short-episodes", [ev(0, "x"), ev(100, "x", Action.CLEAR), ev(200, "x")], {},
     "stale_in_period", ()),
    ("active-at-end", [ev(0, "x"), ev(10, "y"), ev(20, "y", Action.CLEAR)], {},
     "active_at_end", 1),
    # acknowledgement delays 10, 20, 30, 40, 50 s; one never acknowledged
    ("ack-median", [e for i in range(5) for e in (ev(i * 1000, f"k{i}"),
                                                  ev(i * 1000 + (i + 1) * 10, f"k{i}", Action.ACK))]
     + [ev(9000, "never")], {}, "ack_median_s", 30.0),
    ("ack-p90", [e for i in range(5) for e in (ev(i * 1000, f"k{i}"),
                                               ev(i * 1000 + (i + 1) * 10, f"k{i}", Action.ACK))],
     {}, "ack_p90_s", pytest.approx(46.0)),
    ("ack-unacked", [ev(0, "a"), ev(5, "a", Action.ACK), ev(10, "b"), ev(20, "c")], {},
     "unacked", 2),
    ("ack-first-only", [ev(0, "a"), ev(5, "a", Action.ACK), ev(50, "a", Action.ACK)], {},
     "ack_median_s", 5.0),
    ("ack-after-clear", [ev(0, "a"), ev(30, "a", Action.CLEAR, state=AlarmState.RTN_UNACK),
                         ev(90, "a", Action.ACK, state=AlarmState.NORMAL)], {},
     "ack_median_s", 90.0),
    ("ack-of-earlier-raise-only", [ev(0, "a"), ev(10, "a", Action.CLEAR), ev(20, "a"),
                                   ev(25, "a", Action.ACK)], {}, "unacked", 1),
    ("ack-after-end-ignored", [ev(0, "a"), ev(86400 + 5, "a", Action.ACK)], {}, "acked", 0),
    ("ack-unannounced-not-counted", [ev(0, "a", suppressed=True, announce=False)], {},
     "unacked", 0),
    ("outside-before", [ev(-10, "a"), ev(10, "b")], {}, "raises", 1),
    ("outside-after", [ev(10, "b"), ev(86400, "c"), ev(90000, "d")], {}, "raises", 1),
    ("outside-end-exclusive-flood", raises(20, 1, first_s=86400), {}, "floods", ()),
    ("unannounced-not-annunciated", [ev(0, "a"), ev(5, "b", suppressed=True, announce=False),
                                     ev(6, "c", shelved=True, announce=False)], {},
     "annunciated", 1),
    ("unannounced-in-raises", [ev(0, "a"), ev(5, "b", suppressed=True, announce=False)], {},
     "raises", 2),
    ("suppressed-raises", [ev(5, "b", suppressed=True, announce=False),
                           ev(6, "c", shelved=True, announce=False)], {}, "suppressed_raises", 1),
    ("shelved-raises", [ev(5, "b", suppressed=True, announce=False),
                        ev(6, "c", shelved=True, announce=False)], {}, "shelved_raises", 1),
    ("oos-raises", [ev(5, "b", out_of_service=True, announce=False)], {},
     "out_of_service_raises", 1),
    ("suppress-actions", [ev(0, "a"), ev(5, "a", Action.SUPPRESS, suppressed=True,
                                         announce=False)], {}, "suppress_actions", 1),
    ("unannounced-flood-ignored", [ev(i, f"s{i}", suppressed=True, announce=False)
                                   for i in range(20)], {}, "floods", ()),
    # shelved 100 s .. 400 s, and again from 86000 s to the end (400 s): 700 s
    ("shelving", [ev(0, "a"), ev(100, "a", Action.SHELVE, shelved=True, announce=False),
                  ev(400, "a", Action.UNSHELVE),
                  ev(86000, "a", Action.SHELVE, shelved=True, announce=False)], {},
     "shelved", (ShelvedAlarm("a", 700.0),)),
    ("shelving-before-start-clipped", [ev(-500, "a", Action.SHELVE, shelved=True),
                                       ev(300, "a", Action.UNSHELVE)], {},
     "shelved_time_s", 300.0),
    ("shelving-before-start-not-an-action", [ev(-500, "a", Action.SHELVE, shelved=True),
                                             ev(300, "a", Action.UNSHELVE)], {},
     "shelve_actions", 0),
    ("shelving-ended-before-start", [ev(-500, "a", Action.SHELVE, shelved=True),
                                     ev(-300, "a", Action.UNSHELVE)], {}, "shelved", ()),
    ("mix-on-target", [ev(i, f"p{i}", priority=p) for i, p in enumerate(
        [Priority.LOW] * 16 + [Priority.MEDIUM, Priority.MEDIUM, Priority.HIGH,
                               Priority.CRITICAL])], {}, "priority_mix_ok", True),
    ("mix-too-critical", [ev(i, f"p{i}", priority=p) for i, p in enumerate(
        [Priority.LOW] * 8 + [Priority.CRITICAL] * 2)], {}, "priority_mix_ok", False),
    ("mix-share", [ev(0, "a", priority=Priority.HIGH), ev(1, "b"), ev(2, "c"), ev(3, "d")], {},
     "priority_share", {Priority.LOW: 0.75, Priority.MEDIUM: 0.0, Priority.HIGH: 0.25,
                        Priority.CRITICAL: 0.0}),
    ("mix-tolerance-kw", [ev(i, f"p{i}", priority=p) for i, p in enumerate(
        [Priority.LOW] * 7 + [Priority.MEDIUM] * 2 + [Priority.CRITICAL])],
     {"priority_tolerance": 0.11}, "priority_mix_ok", True),
    ("bad-actors", [ev(i * 100, "x") for i in range(5)] + [ev(7, "y"), ev(8, "y"), ev(9, "z")],
     {"top_n": 2}, "bad_actors", (BadActor("x", 5, 5 / 8), BadActor("y", 2, 2 / 8))),
    ("bad-actors-share", [ev(i * 100, "x") for i in range(5)] + [ev(7, "y"), ev(8, "y"),
                                                                ev(9, "z")],
     {"top_n": 2}, "bad_actor_share", 7 / 8),
    ("bad-actors-ties-by-id", [ev(0, "b"), ev(1, "a"), ev(2, "c")], {"top_n": 2},
     "bad_actors", (BadActor("a", 1, 1 / 3), BadActor("b", 1, 1 / 3))),
]


@pytest.mark.parametrize("events,kw,name,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_kpi(events: list[AlarmEvent], kw: dict[str, Any], name: str, expected: Any) -> None:
    assert getattr(kpis(events, **kw), name) == expected


def test_unordered_input_is_sorted() -> None:
    ordered = kpis(FLOOD_12 + [ev(300, "a0", Action.ACK)])
    shuffled = kpis(list(reversed(FLOOD_12)) + [ev(300, "a0", Action.ACK)])
    assert shuffled == ordered
    assert shuffled.ack_median_s == 300.0


def test_stale_peak_per_day_over_several_days() -> None:
    # three alarms raised at 0 h; two cleared at 30 h: stale 24-30 h (day 1), one still at day 2
    events = [ev(0, n) for n in "abc"] + [ev(30 * 3600, n, Action.CLEAR) for n in "ab"]
    k = kpis(events, days=3)
    assert k.stale_peak_per_day == 3
    assert [s.alarm_id for s in k.stale_in_period] == ["c", "a", "b"]
    assert [s.alarm_id for s in k.stale_at_end] == ["c"]


def test_latched_alarm_stays_active_until_reset() -> None:
    events = [ev(-DAY // S, "l"), ev(0, "l", Action.CLEAR, state=AlarmState.UNACK),
              ev(3600, "l", Action.RESET, state=AlarmState.NORMAL)]
    k = kpis(events)
    assert k.stale_in_period == (StaleAlarm("l", T0 - DAY, 86400 + 3600.0),)
    assert k.active_at_end == 0


@pytest.mark.parametrize("kw,message", [
    ({"flood_alarms": 0}, "flood_alarms=0"), ({"chatter_raises": 1}, "chatter_raises=1"),
    ({"stale_after_s": 0}, "stale_after_s=0"), ({"flood_window_s": -1}, "flood_window_s=-1"),
], ids=["flood", "chatter", "stale", "window"])
def test_bad_thresholds_are_named(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kpis([], **kw)


def test_empty_period_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be after"):
        alarm_kpis([], T0, T0)


# ------------------------------------------------------------- verdicts


def _verdict(k: AlarmKpis, name: str) -> tuple[bool, str]:
    found = {v[0]: v[1:] for v in verdicts(k)}
    return found[name]


@pytest.mark.parametrize("events,days,name,met,text", [
    ([], 30, "period", True, "30.0 days"),
    ([], 29, "period", False, "29.0 days"),
    (FLOOD_12, 1, "peak 10-min count", False, "at most 12"),
    (raises(10, 25), 1, "peak 10-min count", True, "at most 10"),
    (FLOOD_12, 1, "time in flood", True, "0.43%"),
    (raises(40, 25), 1, "time in flood", False, "1.24%"),
    # under a day of journal: "not enough data", never met ...
    (FLOOD_12, 0.02, "time in flood", None, "not enough data: 29 min of journal"),
    ([], 0.01, "alarm rate per day", None, "at least 24.0 h needed"),
    ([], 0.01, "period", False, "14 min assessed"),
    # ... but a violation that happened is one, however short the journal
    (FLOOD_12, 0.02, "peak 10-min count", False, "at most 12"),
    ([ev(0, "x"), ev(1, "x"), ev(2, "x")], 0.01, "chattering alarms", False, "1 alarms"),
    (raises(140, 600), 1, "alarm rate per 10 min", True, "0.97"),
    (raises(300, 60), 1, "alarm rate per 10 min", False, "2.08"),
    (raises(300, 60), 1, "alarm rate per day", False, "300 annunciated per day"),
    ([ev(0, "x"), ev(1, "x"), ev(2, "x")], 1, "chattering alarms", False, "1 alarms"),
    ([], 1, "chattering alarms", True, "0 alarms"),
    ([], 1, "priority mix", True, "no annunciated alarms"),
    ([ev(0, "x", priority=Priority.CRITICAL)], 1, "priority mix", False, "critical 100%"),
    ([ev(-DAY // S - 1, f"s{i}") for i in range(5)], 1, "stale alarms", False, "at most 5"),
    ([ev(-DAY // S - 1, f"s{i}") for i in range(4)], 1, "stale alarms", True, "at most 4"),
    (raises(10, 1), 1, "top 10 bad actors", False, "100.0%"),
    ([], 1, "top 10 bad actors", True, "0.0%"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_verdicts(events: list[AlarmEvent], days: float, name: str, met: bool | None,
                  text: str) -> None:
    got_met, got_text = _verdict(kpis(events, days=days), name)
    assert got_met is met
    assert text in got_text


def test_a_journal_minutes_old_meets_no_target() -> None:
    found = verdicts(kpis([], days=10 / 1440), asked_s=30 * DAY / S)
    assert [m for _, m, _ in found] == [False] + [None] * 9
    assert "10 min assessed of 30.0 days asked" in found[0][2]
    # a day of journal is the least over which a target can be met
    assert [m for _, m, _ in verdicts(kpis([], days=MIN_ASSESSED_S / 86400))][1:] == [True] * 9


@pytest.mark.parametrize("covered_from,expected", [
    (None, None),  # nothing says when the journal began
    (T0 - DAY, T0),  # covers more than the period: the whole period
    (T0 + H, T0 + H),  # began within it: from then
    (T0 + 2 * DAY, None),  # began after it
], ids=["unknown", "before", "within", "after"])
def test_assessed_start(covered_from: int | None, expected: int | None) -> None:
    assert assessed_start(T0, T0 + DAY, covered_from) == expected


def test_verdicts_cover_every_target_once() -> None:
    names = [v[0] for v in verdicts(kpis(FLOOD_12))]
    assert len(names) == len(set(names)) == 10


def test_kpis_are_frozen() -> None:
    k = kpis([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.raises = 1  # type: ignore[misc]


def test_200k_events_fast() -> None:
    import time

    import numpy as np

    rng = np.random.default_rng(1)
    n = 200_000
    times = np.sort(rng.integers(0, 30 * DAY, n))
    ids = [f"alarm-{i}" for i in rng.integers(0, 2000, n)]
    events = [AlarmEvent(T0 + int(t), a, Action.RAISE, AlarmState.UNACK, Priority.LOW, "")
              for t, a in zip(times, ids)]
    t0 = time.perf_counter()
    k = kpis(events, days=30)
    elapsed = time.perf_counter() - t0
    assert k.raises == n
    assert elapsed < 2.0, f"{n:,} events took {elapsed:.2f} s"


# ------------------------------------------------------------- `dcim alarms kpi`

SITE = str(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")


def kpi_lines(journal: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["alarms", "kpi", SITE, "--journal", str(journal), *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_cli_on_a_journal_minutes_old_says_not_enough_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alarms.sqlite"
    journal = AlarmJournal(path)  # exports its head when it opens for writing, then at close
    journal.save_alarms({})
    journal.close()
    out = kpi_lines(path, capsys)
    verdict_lines = [line for line in out if line.startswith("  [")]
    assert len(verdict_lines) == 10
    assert not any("[met]" in line for line in verdict_lines), out
    assert sum("[not enough data]" in line for line in verdict_lines) == 9
    assert "30.0 days assessed" not in "\n".join(out)
    assert any("of 30.0 days asked" in line for line in verdict_lines), out


def test_the_cli_on_a_journal_with_no_evidence_of_when_it_began(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alarms.sqlite"
    AlarmJournal(path, heads=False).close()  # created, never written
    out = kpi_lines(path, capsys)
    assert "not enough data" in out[1] and "unknown" in out[1]
    assert not any(line.startswith("  [") for line in out)


def test_the_cli_assesses_what_the_journal_covers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alarms.sqlite"
    now = time.time_ns()
    journal = AlarmJournal(path, heads=False)
    # one raise 40 days ago and one 3 days ago: the 30 days asked are covered; 60 are not
    for days_ago in (40, 3):
        t = now - days_ago * DAY
        alarm = Alarm(id=f"a{days_ago}", source="device", priority=Priority.LOW,
                      message="x", state=AlarmState.UNACK, condition=True, active_since_ns=t)
        journal.append([AlarmEvent(t, alarm.id, Action.RAISE, AlarmState.UNACK, Priority.LOW,
                                   "x")], {alarm.id: alarm})
    journal.close()
    out = kpi_lines(path, capsys)
    assert "[met] period: 30.0 days assessed (at least 30" in "\n".join(out)
    # one raise in the period: a single bad actor and an all-low mix, the rest met
    assert {line.split(":")[0] for line in out if "[NOT MET]" in line} == {
        "  [NOT MET] priority mix", "  [NOT MET] top 10 bad actors"}
    assert sum("[met]" in line for line in out) == 8
    out = kpi_lines(path, capsys, "--days", "60")
    text = "\n".join(out)
    assert "the journal covers" in text and "40.00 days assessed" in text
    assert "40.0 days assessed of 60.0 days asked" in text
