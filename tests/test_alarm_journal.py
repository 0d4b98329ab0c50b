"""dcim/alarms/journal.py: every event kept, chained, and alarms restored after a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dcim.config.alarms import AlarmsConfig
from dcim.alarms.journal import GENESIS, AlarmJournal
from dcim.alarms.types import Action, AlarmState, Condition, Priority
from dcim.alarms.engine import AlarmEngine

S = 1_000_000_000
T0 = 1_800_000_000 * S
TRIP = Condition("unit:UPS-A3:down", "unit", Priority.HIGH, "ups_module UPS-A3 tripped",
                 unit="UPS-A3")
COMM = Condition("device:PDU-A-H1-2:comm", "device", Priority.MEDIUM, "pdu not answering",
                 unit="PDU-A-H1-2", device="PDU-A-H1-2")


def history(path: Path) -> AlarmEngine:
    e = AlarmEngine(AlarmsConfig(), AlarmJournal(path))
    e.evaluate([TRIP, COMM], T0)
    e.evaluate([TRIP, COMM], T0 + 30 * S)  # the comm alarm's on-delay is 30 s
    e.acknowledge(TRIP.alarm_id, "kwong", T0 + 40 * S, "on site, breaker tripped")
    e.shelve(COMM.alarm_id, "chan", T0 + 50 * S, 3600, "gateway replacement")
    return e


def test_events_are_numbered_in_order_and_the_chain_verifies(tmp_path: Path) -> None:
    e = history(tmp_path / "alarms.sqlite")
    assert e.journal is not None
    events = e.journal.events()
    assert [(ev.seq, ev.action, ev.alarm_id) for ev in events] == [
        (1, Action.RAISE, TRIP.alarm_id), (2, Action.RAISE, COMM.alarm_id),
        (3, Action.ACK, TRIP.alarm_id), (4, Action.SHELVE, COMM.alarm_id)]
    assert events[2].user == "kwong" and events[2].comment == "on site, breaker tripped"
    assert e.journal.verify().ok and e.journal.verify().events == 4
    assert e.journal.head()[0] == 4 and e.journal.head()[1] != GENESIS
    assert [ev.seq for ev in e.journal.events(T0 + 35 * S, T0 + 45 * S)] == [3]
    assert [ev.seq for ev in e.journal.events(alarm_id=COMM.alarm_id)] == [2, 4]
    assert [ev.seq for ev in e.journal.events(limit=2)] == [3, 4]
    e.journal.close()  # its writer thread must not outlive the test


@pytest.mark.parametrize(("sql", "bad_seq", "reason"), [
    pytest.param("UPDATE events SET body = replace(body, 'kwong', 'lee') WHERE seq = 3", 3,
                 "content", id="edited-user"),
    pytest.param("DELETE FROM events WHERE seq = 2", 3, "sequence", id="deleted-row"),
    pytest.param("UPDATE events SET time_ns = time_ns, body = replace(body, '\"high\"', "
                 "'\"low\"') WHERE seq = 1", 1, "content", id="lowered-priority"),
])
def test_tampering_is_found_where_it_happened(tmp_path: Path, sql: str, bad_seq: int,
                                              reason: str) -> None:
    path = tmp_path / "alarms.sqlite"
    e = history(path)
    assert e.journal is not None
    e.journal.close()
    with sqlite3.connect(path) as db:
        db.execute(sql)
    check = AlarmJournal(path).verify()
    assert not check.ok and check.first_bad_seq == bad_seq and reason in check.reason


def test_a_restart_comes_back_with_the_same_alarms_and_goes_on_numbering(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    first = history(path)
    assert first.journal is not None
    first.journal.close()
    again = AlarmEngine(AlarmsConfig(), AlarmJournal(path))
    trip, comm = again.alarms[TRIP.alarm_id], again.alarms[COMM.alarm_id]
    assert (trip.state, trip.acked_by, trip.latched) == (AlarmState.ACKED, "kwong", True)
    assert comm.shelved and comm.shelved_by == "chan" and comm.state is AlarmState.UNACK
    # nothing new while the conditions still hold; the next event continues the sequence
    assert again.evaluate([TRIP, COMM], T0 + 60 * S) == []
    ev = again.unshelve(COMM.alarm_id, "chan", T0 + 70 * S, "gateway back")
    assert ev.seq == 5 and again.journal is not None and again.journal.verify().ok
    again.journal.close()


def test_a_forgotten_alarm_leaves_the_records_but_not_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    e = AlarmEngine(AlarmsConfig(), AlarmJournal(path))
    e.evaluate([COMM], T0)
    e.evaluate([COMM], T0 + 30 * S)
    e.acknowledge(COMM.alarm_id, "ho", T0 + 31 * S)
    e.evaluate([], T0 + 40 * S)
    e.evaluate([], T0 + 100 * S)  # off-delay 60 s: cleared, acknowledged -> normal
    assert e.alarms == {}
    assert e.journal is not None and e.journal.load_alarms() == {}
    assert [ev.action for ev in e.journal.events()] == [Action.RAISE, Action.ACK, Action.CLEAR]
    e.journal.close()


def test_the_cli_says_where_the_chain_breaks(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from dcim.cli import main

    path = tmp_path / "alarms.sqlite"
    e = history(path)
    assert e.journal is not None
    e.journal.close()
    site = str(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
    assert main(["alarms", "verify", site, "--journal", str(path)]) == 0
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET body = replace(body, 'chan', 'nobody') WHERE seq = 4")
    assert main(["alarms", "verify", site, "--journal", str(path)]) == 1
    assert "CHAIN BROKEN at event #4: content does not match" in capsys.readouterr().err
    assert main(["alarms", "list", site, "--journal", str(tmp_path / "none.sqlite")]) == 1
    assert "no alarm journal at" in capsys.readouterr().err
