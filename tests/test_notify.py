"""Notification core without I/O: rota, routing, escalation, floods, message text, config."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from dcim.alarms.types import Action, AlarmEvent, AlarmState, Priority
from dcim.notify.notifier import (
    NS,
    Escalation,
    Planner,
    format_alarm,
    format_duration,
    on_call,
    select_route,
)
from dcim.config.notifications import DeliveryConfig, NotificationsConfig, RotaConfig
from dcim.notify.channels import Message, retry_delay_s

HK = ZoneInfo("Asia/Hong_Kong")
# Monday 2025-01-06 09:00 HKT, the rota's first handover
T0 = int(datetime(2025, 1, 6, 9, 0, tzinfo=HK).timestamp()) * NS

PEOPLE = [
    {"id": "alice", "name": "Alice Chan", "email": "alice@example.com", "webhook": "pager"},
    {"id": "bob", "name": "Bob Lee", "email": "bob@example.com"},
    {"id": "carol", "name": "Carol Wong", "email": "carol@example.com"},
    {"id": "dave", "name": "Dave Ho", "webhook": "pager"},
    {"id": "erin", "name": "Erin Lam", "email": "erin@example.com"},
]


def config(**changes: Any) -> NotificationsConfig:
    """A site's notifications: pager webhook, team email, log; 2 tiers."""
    doc: dict[str, Any] = {
        "channels": {
            "pager": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"},
            "mail": {"kind": "email", "host": "127.0.0.1", "from": "dcim@example.com",
                     "to": ["noc@example.com"]},
            "ops-log": {"kind": "log"},
        },
        "people": PEOPLE,
        "person_email_channel": "mail",
        "rota": {"tiers": [["alice", "bob", "carol"], ["dave", "erin"]], "start": "2025-01-06",
                 "handover": "09:00",
                 "overrides": [{"start": "2025-01-08T18:00", "end": "2025-01-09T09:00",
                                "tier": 0, "person": "carol"}]},
        "routes": [{"min_priority": "high", "tier": 0, "channels": ["ops-log"]},
                   {"min_priority": "low", "channels": ["mail"]}],
        "escalate_after_s": 900,
    }
    doc.update(changes)
    return NotificationsConfig.model_validate(doc)


def event(alarm_id: str = "device:UPS-1:on_battery", action: Action = Action.RAISE,
          state: AlarmState = AlarmState.UNACK, priority: Priority = Priority.HIGH,
          at_s: float = 0, **kw: Any) -> AlarmEvent:
    """An event `at_s` seconds after T0."""
    return AlarmEvent(time_ns=T0 + int(at_s * NS), alarm_id=alarm_id, action=action, state=state,
                      priority=priority, message="UPS-1 on battery", source="device",
                      unit="UPS-1", device="UPS-1", **kw)


def summary(messages: list[Message]) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, channel, person, address) of each message, sorted."""
    return sorted((m.kind, m.channel, m.recipient, m.address) for m in messages)


# ---------------------------------------------------------------- rota


@pytest.mark.parametrize(("when", "expected"), [
    (datetime(2025, 1, 6, 8, 59), ["carol", "erin"]),  # before the start: the turn before
    (datetime(2025, 1, 6, 9, 0), ["alice", "dave"]),
    (datetime(2025, 1, 13, 8, 59, 59), ["alice", "dave"]),  # a week on, before the handover
    (datetime(2025, 1, 13, 9, 0), ["bob", "erin"]),  # handover across the week boundary
    (datetime(2025, 1, 13, 0, 59, tzinfo=timezone.utc), ["alice", "dave"]),  # 08:59 HKT
    (datetime(2025, 1, 13, 1, 0, tzinfo=timezone.utc), ["bob", "erin"]),  # 09:00 HKT
    (datetime(2025, 1, 27, 9, 0), ["alice", "erin"]),  # third turn: tiers wrap separately
    (datetime(2025, 1, 8, 17, 59), ["alice", "dave"]),
    (datetime(2025, 1, 8, 18, 0), ["carol", "dave"]),  # override starts
    (datetime(2025, 1, 9, 8, 59), ["carol", "dave"]),
    (datetime(2025, 1, 9, 9, 0), ["alice", "dave"]),  # override ended
], ids=["before-start", "first-handover", "week-minus-1s", "week-handover", "utc-before",
        "utc-at", "third-turn", "before-override", "override-start", "override-last",
        "override-end"])
def test_rota_on_call(when: datetime, expected: list[str]) -> None:
    rota = config().rota
    assert rota is not None
    assert on_call(rota, when, HK) == expected


def test_rota_handover_keeps_local_time_across_dst() -> None:
    london = ZoneInfo("Europe/London")  # BST starts 2025-03-30 01:00 UTC
    rota = RotaConfig(tiers=(("a", "b"),), start=date(2025, 3, 29), rotate_days=1)
    # 09:00 BST is 08:00 UTC on the 30th; 09:00 GMT was 09:00 UTC on the 29th
    assert on_call(rota, datetime(2025, 3, 30, 7, 59, tzinfo=timezone.utc), london) == ["a"]
    assert on_call(rota, datetime(2025, 3, 30, 8, 0, tzinfo=timezone.utc), london) == ["b"]


def test_who_is_on_call_returns_people() -> None:
    planner = Planner(config())
    assert [p.name for p in planner.on_call(datetime(2025, 1, 14, 3, 0))] == ["Bob Lee", "Erin Lam"]


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize(("priority", "expected"), [
    (Priority.CRITICAL, Priority.HIGH), (Priority.HIGH, Priority.HIGH),
    (Priority.MEDIUM, Priority.LOW), (Priority.LOW, Priority.LOW)])
def test_select_route(priority: Priority, expected: Priority) -> None:
    route = select_route(config().routes, priority)
    assert route is not None and route.min_priority is expected


def test_no_route_below_lowest() -> None:
    assert select_route(config(routes=[{"min_priority": "high", "tier": 0}]).routes, Priority.MEDIUM) is None


def test_high_pages_primary_and_channels() -> None:
    out = Planner(config()).plan([event(priority=Priority.CRITICAL)])
    assert summary(out) == [("raise", "mail", "alice", "alice@example.com"),
                            ("raise", "ops-log", None, None), ("raise", "pager", "alice", None)]


def test_medium_goes_to_team_email_only() -> None:
    out = Planner(config()).plan([event(priority=Priority.MEDIUM)])
    assert summary(out) == [("raise", "mail", None, "noc@example.com")]


@pytest.mark.parametrize("flags", [{"shelved": True}, {"suppressed": True}, {"out_of_service": True}],
                         ids=["shelved", "suppressed", "out-of-service"])
def test_unannounced_events_page_nobody(flags: dict[str, Any]) -> None:
    planner = Planner(config(renotify_s=60))
    raised = event(priority=Priority.CRITICAL, announce=False, **flags)
    cleared = event(action=Action.CLEAR, state=AlarmState.NORMAL, priority=Priority.CRITICAL,
                    announce=False, at_s=10, **flags)
    assert planner.plan([raised]) == []
    assert planner.tick(T0 + 3600 * NS) == []  # nothing escalates either
    assert planner.plan([cleared]) == []


def test_unshelve_of_active_alarm_pages() -> None:
    planner = Planner(config())
    assert planner.plan([event(announce=False, shelved=True)]) == []
    out = planner.plan([event(action=Action.UNSHELVE, at_s=60)])
    assert ("raise", "pager", "alice", None) in summary(out)


def test_shelve_unshelve_churn_never_pages_again() -> None:
    """Fifty shelve/unshelve toggles of a paged HIGH alarm, then shelvings that expire: one
    page, no flood, and escalation still reaches tier 2 (it once sent 9 pages, then a flood)."""
    from dcim.alarms.engine import AlarmEngine
    from dcim.alarms.types import Condition
    from dcim.config.alarms import AlarmsConfig

    engine, planner = AlarmEngine(AlarmsConfig()), Planner(config())
    trip = Condition("unit:UPS-1:down", "unit", Priority.HIGH, "UPS-1 tripped", unit="UPS-1")
    sent = planner.plan(engine.evaluate([trip], T0))
    assert summary(sent) == [("raise", "mail", "alice", "alice@example.com"),
                             ("raise", "ops-log", None, None), ("raise", "pager", "alice", None)]
    t = T0
    for _ in range(50):
        t += 2 * NS
        sent += planner.plan([engine.shelve(trip.alarm_id, "kwong", t, 600, "nuisance")])
        sent += planner.plan([engine.unshelve(trip.alarm_id, "kwong", t + NS)])
        sent += planner.tick(t + NS)
    assert [m.kind for m in sent] == ["raise"] * 3 and planner.gate.floods == 0
    for _ in range(5):  # shelving that runs out: unshelved by the system
        sent += planner.plan([engine.shelve(trip.alarm_id, "kwong", t, 60, "nuisance")])
        t += 61 * NS
        events = engine.evaluate([trip], t)
        assert [(e.action, e.user, e.announce) for e in events] == [
            (Action.UNSHELVE, "system", False)]
        sent += planner.plan(events) + planner.tick(t)
    assert len(sent) == 3 and planner.gate.floods == 0 and not planner.gate.active
    # still unacknowledged: the escalation clock runs from the last return into view
    assert planner.tick(t + 899 * NS) == []
    assert summary(planner.tick(t + 900 * NS)) == [("escalation", "pager", "dave", None)]


@pytest.mark.parametrize("action", [Action.UNSUPPRESS, Action.RETURN_TO_SERVICE])
def test_back_in_view_unannounced_escalates_without_a_page(action: Action) -> None:
    planner = Planner(config())
    planner.plan([event()])
    planner.plan([event(action=Action.SHELVE, at_s=10, shelved=True, announce=False)])
    assert planner.tracked == 0
    assert planner.plan([event(action=action, at_s=20, announce=False)]) == []
    assert summary(planner.tick(T0 + 920 * NS)) == [("escalation", "pager", "dave", None)]


def test_priority_raised_pages_lowered_does_not() -> None:
    planner = Planner(config())
    planner.plan([event(priority=Priority.MEDIUM)])
    up = planner.plan([event(action=Action.PRIORITY, priority=Priority.CRITICAL, at_s=5)])
    assert ("priority", "pager", "alice", None) in summary(up)
    assert planner.plan([event(action=Action.PRIORITY, priority=Priority.HIGH, at_s=9)]) == []


def test_clear_goes_to_those_paged() -> None:
    planner = Planner(config())
    planner.plan([event()])
    planner.tick(T0 + 900 * NS)  # escalated to dave
    out = planner.plan([event(action=Action.CLEAR, state=AlarmState.RTN_UNACK, at_s=1000)])
    assert summary(out) == [("clear", "mail", "alice", "alice@example.com"),
                            ("clear", "ops-log", None, None), ("clear", "pager", "alice", None),
                            ("clear", "pager", "dave", None)]


# ---------------------------------------------------------------- escalation


def test_escalation_after_delay_to_next_tier() -> None:
    planner = Planner(config())
    planner.plan([event()])
    assert planner.tick(T0 + 899 * NS) == []
    out = planner.tick(T0 + 900 * NS)
    assert summary(out) == [("escalation", "pager", "dave", None)]
    (msg,) = out
    assert "Alice Chan" in msg.text and "15 min" in msg.text and "tier 2" in msg.text
    assert msg.payload["escalation"]["paged"][0]["name"] == "Alice Chan"
    assert planner.tick(T0 + 1800 * NS) == []  # no third tier


@pytest.mark.parametrize(("action", "state", "flags"), [
    (Action.ACK, AlarmState.ACKED, {}),
    (Action.CLEAR, AlarmState.RTN_UNACK, {}),
    (Action.SHELVE, AlarmState.UNACK, {"shelved": True, "announce": False}),
], ids=["ack", "clear", "shelve"])
def test_escalation_stopped(action: Action, state: AlarmState, flags: dict[str, Any]) -> None:
    planner = Planner(config(renotify_s=300))
    planner.plan([event()])
    planner.plan([event(action=action, state=state, at_s=100, **flags)])
    assert planner.tick(T0 + 900 * NS) == []
    assert planner.tracked == 0


def test_an_alarm_back_before_anyone_acknowledged_it_escalates_without_a_second_page() -> None:
    planner = Planner(config())
    planner.plan([event()])
    planner.plan([event(action=Action.CLEAR, state=AlarmState.RTN_UNACK, at_s=100)])
    assert planner.tracked == 0  # returned: nothing urgent
    # the engine raises it again unannounced (it has paged already): no message now ...
    assert planner.plan([event(at_s=200, announce=False)]) == []
    assert planner.tracked == 1
    assert planner.tick(T0 + 1099 * NS) == []
    # ... but 15 min on it is still unacknowledged: the next tier is told
    assert summary(planner.tick(T0 + 1100 * NS)) == [("escalation", "pager", "dave", None)]


def test_medium_does_not_escalate() -> None:
    planner = Planner(config(routes=[{"min_priority": "low", "tier": 0}]))
    assert len(planner.plan([event(priority=Priority.MEDIUM)])) == 2  # alice: pager and email
    assert planner.tick(T0 + 3600 * NS) == []


def test_renotify_then_escalate() -> None:
    planner = Planner(config(renotify_s=300))
    planner.plan([event()])
    kinds = [summary(planner.tick(T0 + s * NS)) for s in (299, 300, 600, 900, 1200)]
    assert kinds == [
        [],
        [("renotify", "mail", "alice", "alice@example.com"), ("renotify", "pager", "alice", None)],
        [("renotify", "mail", "alice", "alice@example.com"), ("renotify", "pager", "alice", None)],
        [("escalation", "pager", "dave", None)],
        [("renotify", "pager", "dave", None)],
    ]


# ---------------------------------------------------------------- floods


def test_flood_sends_summaries_then_resumes() -> None:
    cfg = config(routes=[{"min_priority": "low", "channels": ["ops-log"]}],
                 flood={"max_raises": 10, "window_s": 600, "summary_interval_s": 120})
    planner = Planner(cfg)
    sent = [planner.plan([event(f"a{i}", priority=Priority.LOW, at_s=i)]) for i in range(15)]
    assert [len(s) for s in sent] == [1] * 10 + [1, 0, 0, 0, 0]  # 11th: the first summary
    first = sent[10][0]
    assert first.kind == "flood" and first.subject.startswith("[FLOOD] alarm flood since 09:00 HKT: 1 ")
    assert planner.gate.active
    assert planner.tick(T0 + 60 * NS) == []
    (second,) = planner.tick(T0 + 131 * NS)
    assert second.payload["count"] == 4
    assert [a["alarm_id"] for a in second.payload["alarms"]] == ["a11", "a12", "a13", "a14"]
    # the window slides past enough raises: flood over, told to everyone who had summaries
    (over,) = planner.tick(T0 + 605 * NS)
    assert over.subject.startswith("[FLOOD] flood over") and not planner.gate.active
    assert len(planner.plan([event("late", priority=Priority.LOW, at_s=700)])) == 1


def test_flood_summary_lists_critical_first() -> None:
    cfg = config(routes=[{"min_priority": "low", "channels": ["ops-log"]}],
                 flood={"max_raises": 2, "summary_interval_s": 60})
    planner = Planner(cfg)
    prios = [Priority.LOW, Priority.LOW, Priority.LOW, Priority.CRITICAL, Priority.MEDIUM]
    for i, p in enumerate(prios):
        planner.plan([event(f"a{i}", priority=p, at_s=i)])
    (msg,) = planner.tick(T0 + 70 * NS)
    assert [a["priority"] for a in msg.payload["alarms"]] == ["critical", "medium"]
    assert "(1 critical, 1 medium)" in msg.subject


# ---------------------------------------------------------------- message text


def test_alarm_message_text() -> None:
    e = event(priority=Priority.CRITICAL, at_s=-6 * 3600 + 12 * 60 + 5)  # 03:12:05 HKT
    subject, text, payload = format_alarm(e, "raise", HK)
    assert subject == "[CRITICAL] ALARM: UPS-1 on battery (UPS-1) at 03:12 HKT"
    assert text.splitlines() == [
        "CRITICAL alarm raised at 2025-01-06 03:12:05 HKT",
        "Alarm:    device:UPS-1:on_battery",
        "Message:  UPS-1 on battery",
        "Unit:     UPS-1",
        "Device:   UPS-1",
        "State:    active, unacknowledged",
        "Source:   device",
        "",
        "Acknowledge it on the dashboard to stop escalation.",
    ]
    assert payload["time_local"] == "2025-01-06T03:12:05+08:00"
    assert payload["event"]["action"] == "raise" and payload["event"]["priority"] == "critical"


def test_escalation_message_says_who_and_how_long() -> None:
    e = event()
    esc = Escalation(unacked_for_s=1500, tier=1, paged=(("Alice Chan", 0, T0),))
    subject, text, _ = format_alarm(e, "escalation", HK, now_ns=T0 + 1500 * NS, escalation=esc)
    assert subject == "[HIGH] ESCALATED: UPS-1 on battery (UPS-1), unacknowledged 25 min at 09:25 HKT"
    assert "Paged Alice Chan (tier 1) at 09:00 HKT, 25 min ago, no acknowledgement." in text
    assert "You are tier 2: please take it over." in text


@pytest.mark.parametrize(("seconds", "text"), [(40, "40 s"), (900, "15 min"), (7500, "2 h 05 min")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------- config and retry


@pytest.mark.parametrize(("change", "error"), [
    ({"routes": [{"min_priority": "low", "channels": ["nope"]}]}, "routes[0].channels: unknown channel 'nope'"),
    ({"routes": [{"min_priority": "low", "tier": 2}]}, "routes[0].tier: 2 but the rota has 2 tiers"),
    ({"person_email_channel": "pager"}, "person_email_channel: 'pager' is not an email channel"),
    ({"person_email_channel": None}, "person 'bob' cannot be reached"),
    ({"rota": {"tiers": [["zed"]], "start": "2025-01-06"}}, "rota.tiers[0]: unknown person 'zed'"),
    ({"routes": [{"min_priority": "low"}, {"min_priority": "low"}]}, "same min_priority"),
    ({"escalate_after": 5}, "Extra inputs are not permitted"),
    ({"channels": {"x": {"kind": "sms"}}}, "does not match any of the expected tags"),
], ids=["unknown-channel", "tier-range", "wrong-kind", "unreachable", "unknown-person",
        "duplicate-route", "typo", "unknown-kind"])
def test_config_errors(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        config(**change)


@pytest.mark.parametrize(("attempts", "rand", "delay"), [
    (1, 0.5, 5.0), (2, 0.5, 10.0), (4, 0.5, 40.0), (7, 0.5, 300.0), (500, 0.5, 300.0),
    (1, 0.0, 4.0), (1, 1.0, 6.0)])
def test_retry_delay(attempts: int, rand: float, delay: float) -> None:
    assert retry_delay_s(attempts, DeliveryConfig(), lambda: rand) == pytest.approx(delay)


def test_docs_example_config_is_valid() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "notifications.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = NotificationsConfig.model_validate(yaml.safe_load(block)["notifications"])
    assert set(cfg.channels) == {"noc-pager", "mail", "ops-log"}
    assert [p.id for p in Planner(cfg).on_call(datetime(2025, 1, 8, 20, 0))] == ["carol", "dave"]
    route = select_route(cfg.routes, Priority.MEDIUM)
    assert route is not None and route.tier is None and route.channels == ("mail",)
