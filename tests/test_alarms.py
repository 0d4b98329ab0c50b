"""dcim/alarms/engine.py: ISA-18.2 states, delays, operator actions, suppression (the clock is moved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcim.alarms.journal import AlarmJournal
from dcim.config.alarms import AlarmDelays, AlarmsConfig
from dcim.alarms.types import Action, AlarmState, Condition, Priority
from dcim.alarms.engine import AlarmEngine, AlarmError

S = 1_000_000_000
T0 = 1_800_000_000 * S


def cond(alarm_id: str = "device:PDU-1:comm", source: str = "device",
         priority: Priority = Priority.MEDIUM, unit: str | None = "PDU-1",
         device: str | None = "PDU-1") -> Condition:
    return Condition(alarm_id=alarm_id, source=source, priority=priority,
                     message=f"{alarm_id} holds", unit=unit, device=device)


def engine(**kw: object) -> AlarmEngine:
    delays = {"device": AlarmDelays(on_delay_s=30, off_delay_s=60),
              "unit": AlarmDelays(on_delay_s=0, off_delay_s=0),
              "anomaly": AlarmDelays(on_delay_s=0, off_delay_s=10)}
    return AlarmEngine(AlarmsConfig(delays=delays, **kw))  # type: ignore[arg-type]


def run(e: AlarmEngine, steps: list[tuple[float, list[Condition]]],
        suppress: dict[str, str] | None = None) -> list[tuple[float, str, str, bool]]:
    """Evaluate at each (seconds, conditions); (t, action, state, announce) of every event."""
    out = []
    for t, conds in steps:
        for ev in e.evaluate(conds, T0 + int(t * S), suppress=suppress):
            out.append((t, ev.action.value, ev.state.value, ev.announce))
    return out


@pytest.mark.parametrize(("steps", "expected"), [
    pytest.param([(0, [cond()]), (29, [cond()]), (30, [cond()])],
                 [(30, "raise", "active_unacknowledged", True)], id="raised-after-on-delay"),
    pytest.param([(0, [cond()]), (20, []), (40, [cond()]), (69, [cond()])], [],
                 id="a-gap-restarts-the-on-delay"),
    pytest.param([(0, [cond()]), (30, [cond()]), (40, []), (99, []), (100, [])],
                 [(30, "raise", "active_unacknowledged", True),
                  (100, "clear", "returned_unacknowledged", True)], id="cleared-after-off-delay"),
    pytest.param([(0, [cond()]), (30, [cond()]), (40, []), (90, [cond()]), (200, [cond()])],
                 [(30, "raise", "active_unacknowledged", True)],
                 id="back-within-the-off-delay-no-clear"),
    pytest.param([(0, [cond()]), (30, [cond()]), (40, []), (100, []), (110, [cond()]),
                  (140, [cond()])],
                 [(30, "raise", "active_unacknowledged", True),
                  (100, "clear", "returned_unacknowledged", True),
                  (140, "raise", "active_unacknowledged", False)],
                 id="back-before-anyone-acknowledged-pages-no-one-again"),
])
def test_on_and_off_delays(steps: list[tuple[float, list[Condition]]],
                           expected: list[tuple[float, str, str, bool]]) -> None:
    assert run(engine(), steps) == expected


def test_acknowledge_then_clear_is_normal_and_forgotten() -> None:
    e = engine()
    run(e, [(0, [cond()]), (30, [cond()])])
    ev = e.acknowledge("device:PDU-1:comm", "kwong", T0 + 45 * S, "checking the gateway")
    assert (ev.action, ev.state, ev.user, ev.comment) == (
        Action.ACK, AlarmState.ACKED, "kwong", "checking the gateway")
    assert e.alarms["device:PDU-1:comm"].acked_by == "kwong"
    with pytest.raises(AlarmError, match="nothing to acknowledge"):
        e.acknowledge("device:PDU-1:comm", "kwong", T0 + 46 * S)
    assert run(e, [(50, []), (110, [])]) == [(110, "clear", "normal", True)]
    assert e.alarms == {} and e.active() == []
    # raised again after an acknowledged episode: that is news
    assert run(e, [(200, [cond()]), (230, [cond()])]) == [
        (230, "raise", "active_unacknowledged", True)]


def test_acknowledging_a_returned_alarm_ends_it() -> None:
    e = engine()
    run(e, [(0, [cond()]), (30, [cond()]), (31, []), (91, [])])
    assert e.alarms["device:PDU-1:comm"].state is AlarmState.RTN_UNACK
    ev = e.acknowledge("device:PDU-1:comm", "chan", T0 + 100 * S)
    assert ev.state is AlarmState.NORMAL and "device:PDU-1:comm" not in e.alarms


def test_latched_unit_alarm_waits_for_a_reset() -> None:
    e = engine()
    trip = cond("unit:UPS-A3:down", "unit", Priority.HIGH, unit="UPS-A3", device=None)
    assert run(e, [(0, [trip])]) == [(0, "raise", "active_unacknowledged", True)]
    with pytest.raises(AlarmError, match="still holds"):
        e.reset("unit:UPS-A3:down", "lee", T0 + S)
    assert run(e, [(5, [])]) == [(5, "clear", "active_unacknowledged", True)]
    alarm = e.alarms["unit:UPS-A3:down"]
    assert alarm.latched and not alarm.condition and alarm.state is AlarmState.UNACK
    ev = e.reset("unit:UPS-A3:down", "lee", T0 + 10 * S, "breaker reclosed")
    assert ev.action is Action.RESET and ev.state is AlarmState.NORMAL
    assert "unit:UPS-A3:down" not in e.alarms


def test_shelving_hides_raises_and_expires_by_itself() -> None:
    e = engine(max_shelve_s=3600)
    a = cond("anomaly:envelope:RM-H1-A01", "anomaly", Priority.LOW, unit="H1-A01",
             device="RM-H1-A01")
    run(e, [(0, [a])])
    with pytest.raises(AlarmError, match="needs a reason"):
        e.shelve(a.alarm_id, "wong", T0, 600, " ")
    with pytest.raises(AlarmError, match=r"must be in \(0, 3600\]"):
        e.shelve(a.alarm_id, "wong", T0, 7200, "sensor recalibration")
    ev = e.shelve(a.alarm_id, "wong", T0 + S, 600, "sensor recalibration")
    assert ev.action is Action.SHELVE and ev.shelved and not ev.announce
    assert not e.alarms[a.alarm_id].announced
    # it follows its condition while shelved, silently
    assert run(e, [(20, []), (31, []), (40, [a]), (300, [a])]) == [
        (31, "clear", "returned_unacknowledged", False),
        (40, "raise", "active_unacknowledged", False)]
    # back by itself at expiry; it paged at 0 and came back unacknowledged: no news, no page
    assert run(e, [(601, [a])]) == [(601, "unshelve", "active_unacknowledged", False)]
    assert not e.alarms[a.alarm_id].shelved


def test_an_alarm_raised_while_shelved_is_announced_when_it_comes_back() -> None:
    e = engine(max_shelve_s=3600)
    a = cond("anomaly:envelope:RM-H1-A01", "anomaly", Priority.LOW, unit="H1-A01",
             device="RM-H1-A01")
    run(e, [(0, [a])])
    e.acknowledge(a.alarm_id, "wong", T0 + S)
    e.shelve(a.alarm_id, "wong", T0 + 2 * S, 600, "sensor recalibration")
    # normal, then a new activation while shelved: nobody has been told of this one
    assert run(e, [(3, []), (20, []), (30, [a])]) == [
        (20, "clear", "normal", False), (30, "raise", "active_unacknowledged", False)]
    assert run(e, [(602, [a])]) == [(602, "unshelve", "active_unacknowledged", True)]


def test_a_shelved_alarm_is_kept_when_it_returns_to_normal() -> None:
    e = engine()
    a = cond("anomaly:rate:RM-H1-A02", "anomaly", Priority.LOW, unit="H1-A02", device="RM-H1-A02")
    run(e, [(0, [a])])
    e.acknowledge(a.alarm_id, "ho", T0 + S)
    e.shelve(a.alarm_id, "ho", T0 + 2 * S, 600, "known nuisance")
    run(e, [(3, []), (20, [])])  # cleared: normal, but still shelved
    assert e.alarms[a.alarm_id].state is AlarmState.NORMAL and e.alarms[a.alarm_id].shelved
    ev = e.unshelve(a.alarm_id, "ho", T0 + 30 * S)
    assert ev.action is Action.UNSHELVE and not ev.announce and a.alarm_id not in e.alarms


def test_suppressed_by_design_never_announces_and_comes_back_when_the_cause_goes() -> None:
    e = engine()
    a = cond("anomaly:sensor:RM-H1-A03", "anomaly", Priority.MEDIUM, unit="H1-A03",
             device="RM-H1-A03")
    why = {a.alarm_id: "device RM-H1-A03 not answering"}
    assert run(e, [(0, [a])], suppress=why) == [(0, "raise", "active_unacknowledged", False)]
    assert e.alarms[a.alarm_id].suppressed_by == "device RM-H1-A03 not answering"
    # the device answers again and the anomaly is still there: now someone must see it
    assert run(e, [(5, [a])]) == [(5, "unsuppress", "active_unacknowledged", True)]
    # a suppression that starts while active is an event of its own
    assert run(e, [(6, [a])], suppress=why) == [(6, "suppress", "active_unacknowledged", False)]


def test_units_in_maintenance_are_suppressed() -> None:
    e = engine(maintenance=["CRAH-H1-2"])
    a = cond("unit:CRAH-H1-2:down", "unit", Priority.HIGH, unit="CRAH-H1-2", device=None)
    b = cond("unit:CRAH-H1-3:down", "unit", Priority.HIGH, unit="CRAH-H1-3", device=None)
    events = e.evaluate([a, b], T0)
    announced = {ev.alarm_id: ev.announce for ev in events}
    assert announced == {a.alarm_id: False, b.alarm_id: True}
    assert "maintenance" in (e.alarms[a.alarm_id].suppressed_by or "")
    e.set_maintenance("CRAH-H1-2", "ops", on=False)
    assert [(ev.action, ev.announce) for ev in e.evaluate([a, b], T0 + S)] == [
        (Action.UNSUPPRESS, True)]


def test_out_of_service_needs_a_reason_and_silences() -> None:
    e = engine()
    a = cond("anomaly:sensor:WS-1", "anomaly", Priority.LOW, unit="site", device="WS-1")
    with pytest.raises(AlarmError, match="no alarm"):
        e.remove_from_service(a.alarm_id, "ng", T0, "broken", 3600)
    run(e, [(0, [a])])
    with pytest.raises(AlarmError, match="needs a reason"):
        e.remove_from_service(a.alarm_id, "ng", T0, "", 3600)
    with pytest.raises(AlarmError, match="operator's name"):
        e.remove_from_service(a.alarm_id, " ", T0, "broken", 3600)
    ev = e.remove_from_service(a.alarm_id, "ng", T0 + S, "weather station mast damaged", 3600)
    assert ev.out_of_service and not ev.announce
    assert ev.comment == "weather station mast damaged (for 60 min)"
    assert run(e, [(20, []), (30, []), (31, [a])]) == [
        (30, "clear", "returned_unacknowledged", False),
        (31, "raise", "active_unacknowledged", False)]
    ev = e.return_to_service(a.alarm_id, "ng", T0 + 40 * S)
    # still unacknowledged, but it paged at 0: not news (the notifier escalates it again)
    assert ev.action is Action.RETURN_TO_SERVICE and not ev.announce
    assert not e.alarms[a.alarm_id].out_of_service


def test_worse_priority_while_active_is_an_event() -> None:
    e = engine()
    low = cond("redundancy:UPS-A:below_design", "redundancy", Priority.HIGH, unit="UPS-A",
               device=None)
    crit = Condition(**{**{f: getattr(low, f) for f in low.__slots__},  # type: ignore[attr-defined]
                        "priority": Priority.CRITICAL})
    run(e, [(0, [low])])
    events = e.evaluate([crit], T0 + S)
    assert [(ev.action, ev.priority, ev.announce) for ev in events] == [
        (Action.PRIORITY, Priority.CRITICAL, True)]
    assert e.evaluate([low], T0 + 2 * S) == []  # better again: no news, kept at its worst


def test_chattering_and_stale() -> None:
    e = engine(chatter_count=3, chatter_window_s=60, stale_after_s=3600)
    a = cond("anomaly:rate:RM-H2-B01", "anomaly", Priority.LOW, unit="H2-B01", device="RM-H2-B01")
    steps = [(0, [a]), (5, []), (16, []), (17, [a]), (18, []), (29, []), (30, [a])]
    raised = [x for x in run(e, steps) if x[1] == "raise"]
    assert len(raised) == 3 and [x[3] for x in raised] == [True, False, False]
    alarm = e.alarms[a.alarm_id]
    assert e.is_chattering(alarm, T0 + 30 * S) and not e.is_chattering(alarm, T0 + 100 * S)
    assert not e.is_stale(alarm, T0 + 3000 * S) and e.is_stale(alarm, T0 + 3700 * S)


def test_priority_overrides_and_latching_from_config() -> None:
    config = AlarmsConfig(priorities={"device:": Priority.LOW, "device:UPS-A1:": Priority.HIGH,
                                      "device:UPS-A2:comm": Priority.CRITICAL},
                          latched=["redundancy:racks_without_power"])
    assert config.priority_for("device:PDU-1:comm", Priority.MEDIUM) is Priority.LOW
    assert config.priority_for("device:UPS-A1:comm", Priority.MEDIUM) is Priority.HIGH
    assert config.priority_for("device:UPS-A2:comm", Priority.MEDIUM) is Priority.CRITICAL
    assert config.priority_for("unit:X:down", Priority.HIGH) is Priority.HIGH
    assert config.is_latched("redundancy:racks_without_power")
    assert not config.is_latched("unit:UPS-A3:down")  # the default list was replaced


def test_active_lists_the_most_urgent_first_and_not_what_is_pending() -> None:
    e = engine()
    e.evaluate([cond("device:X:comm")], T0 - 10 * S)  # on-delay 30 s: pending, not an alarm
    conds = [cond("unit:A:down", "unit", Priority.HIGH, "A", None),
             cond("anomaly:rate:B", "anomaly", Priority.LOW, "B", "B"),
             cond("unit:C:down", "unit", Priority.CRITICAL, "C", None)]
    e.evaluate(conds, T0)
    e.acknowledge("unit:C:down", "x", T0 + S)
    e.evaluate(conds + [cond("unit:D:down", "unit", Priority.CRITICAL, "D", None),
                        cond("device:X:comm")], T0 + 2 * S)
    assert "device:X:comm" in e.alarms  # still pending (12 s of 30)
    assert [a.id for a in e.active()] == ["unit:D:down", "unit:C:down", "unit:A:down",
                                          "anomaly:rate:B"]


def test_out_of_service_is_bounded_and_ends_by_itself(tmp_path: Path) -> None:
    journal = AlarmJournal(tmp_path / "alarms.sqlite")
    e = AlarmEngine(AlarmsConfig(max_out_of_service_s=86400), journal)
    a = cond("anomaly:sensor:WS-1", "anomaly", Priority.LOW, unit="site", device="WS-1")
    e.evaluate([a], T0)
    for bad in (0, -60, 86401, float("inf"), float("nan")):
        with pytest.raises(AlarmError, match=r"must be in \(0, 86400\]"):
            e.remove_from_service(a.alarm_id, "ng", T0, "mast damaged", bad)
    e.remove_from_service(a.alarm_id, "ng", T0 + S, "mast damaged", 7200)
    assert AlarmsConfig().max_out_of_service_s == 7 * 86400  # the default: a week
    # a restart keeps the expiry
    journal.save_alarms(e.alarms)
    e = AlarmEngine(AlarmsConfig(max_out_of_service_s=86400), journal)
    assert e.alarms[a.alarm_id].out_of_service_until_ns == T0 + S + 7200 * S
    assert e.evaluate([a], T0 + 7200 * S) == []
    [ev] = e.evaluate([a], T0 + 7201 * S)
    assert (ev.action, ev.user, ev.comment, ev.out_of_service) == (
        Action.RETURN_TO_SERVICE, "system", "out of service expired", False)
    assert [(j.action, j.user) for j in journal.events(T0, T0 + 7202 * S)][-1] == (
        Action.RETURN_TO_SERVICE, "system")
    journal.close()


def test_an_out_of_service_record_without_expiry_gets_the_longest() -> None:
    e = engine(max_out_of_service_s=3600)
    a = cond("anomaly:sensor:WS-1", "anomaly", Priority.LOW, unit="site", device="WS-1")
    e.evaluate([a], T0)
    e.alarms[a.alarm_id].out_of_service_by = "ng"  # as journaled before expiries existed
    assert e.evaluate([a], T0 + S) == []
    assert e.alarms[a.alarm_id].out_of_service_until_ns == T0 + S + 3600 * S
    assert [ev.action for ev in e.evaluate([a], T0 + 3601 * S)] == [Action.RETURN_TO_SERVICE]


@pytest.mark.parametrize(("user", "message"), [
    pytest.param("", "operator's name", id="empty"),
    pytest.param("   ", "operator's name", id="blank"),
    pytest.param("k" * 65, "longer than 64", id="too-long"),
    pytest.param("system", "reserved", id="system"),
    pytest.param(" System ", "reserved", id="system-disguised"),
    pytest.param("kwong\nsystem", r"control or format characters \(U\+000A\)", id="newline"),
    pytest.param("kwong\x1b[31m", r"U\+001B", id="escape-sequence"),
    pytest.param("gnow\u202ek", r"U\+202E", id="bidi-override"),
    pytest.param("kw\u200bong", r"U\+200B", id="zero-width-space"),
    pytest.param("kwong\u2028", r"U\+2028", id="line-separator"),
])
def test_operator_names_that_are_refused(user: str, message: str) -> None:
    e = engine()
    a = cond("unit:UPS-A3:down", "unit", Priority.HIGH, unit="UPS-A3", device=None)
    e.evaluate([a], T0)
    for action in (lambda: e.acknowledge(a.alarm_id, user, T0 + S),
                   lambda: e.shelve(a.alarm_id, user, T0 + S, 60, "test"),
                   lambda: e.remove_from_service(a.alarm_id, user, T0 + S, "test", 60),
                   lambda: e.set_maintenance("UPS-A3", user, on=True)):
        with pytest.raises(AlarmError, match=message):
            action()
    assert e.alarms[a.alarm_id].state is AlarmState.UNACK and not e.maintenance
    assert e.acknowledge(a.alarm_id, "k" * 64, T0 + S).user == "k" * 64


@pytest.mark.parametrize(("text", "stored"), [
    pytest.param("breaker reclosed", "breaker reclosed", id="plain"),
    pytest.param("line 1\nline 2\r\n\tend", "line 1\\nline 2\\r\\n\\tend", id="escaped"),
    pytest.param("ok\x00", None, id="nul"),
    pytest.param("ok\x1b]8;;http://evil/\x07", None, id="terminal-link"),
    pytest.param("\u202eevil", None, id="bidi-override"),
    pytest.param("a\u2029b", None, id="paragraph-separator"),
    pytest.param("温度传感器 已更换 ✓", "温度传感器 已更换 ✓", id="unicode-kept"),
])
def test_comments_and_reasons_keep_to_one_clean_line(text: str, stored: str | None) -> None:
    e = engine()
    a = cond("unit:UPS-A3:down", "unit", Priority.HIGH, unit="UPS-A3", device=None)
    e.evaluate([a], T0)
    actions = [lambda: e.shelve(a.alarm_id, "lee", T0 + S, 60, text),
               lambda: e.unshelve(a.alarm_id, "lee", T0 + 2 * S, text),
               lambda: e.remove_from_service(a.alarm_id, "lee", T0 + 3 * S, text, 60),
               lambda: e.return_to_service(a.alarm_id, "lee", T0 + 4 * S, text),
               lambda: e.acknowledge(a.alarm_id, "lee", T0 + 5 * S, text)]
    for action in actions:
        if stored is None:
            with pytest.raises(AlarmError, match="control or format characters"):
                action()
        else:
            assert action().comment.startswith(stored)
