"""Journals written before hash version 2 keep verifying and take new rows as version 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.journal_chain import GENESIS, event_hash
from dcim.alarms.types import AlarmState
from dcim.config.alarms import AlarmsConfig

CASE = Path(__file__).resolve().parent / "journal_cases" / "written-with-hash-version-1"
S = 1_000_000_000
T0 = 1_800_000_000 * S
TRIP, COMM = "unit:UPS-A3:down", "device:PDU-A-H1-2:comm"


@pytest.fixture
def old_journal(tmp_path: Path) -> Path:
    path = tmp_path / "alarms.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript((CASE / "journal.sql").read_text())
    db.close()
    return path


def versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [v for (v,) in db.execute("SELECT hash_version FROM events ORDER BY seq")]


def test_an_old_journal_verifies_restores_and_goes_on_as_version_2(old_journal: Path) -> None:
    journal = AlarmJournal(old_journal)
    check = journal.verify()
    assert check.ok and check.events == 4 and check.head[0] == 4
    assert any("not sealed" in note for note in check.notes)
    engine = AlarmEngine(AlarmsConfig(), journal)
    assert engine.alarms[TRIP].acked_by == "kwong"
    assert engine.alarms[COMM].state is AlarmState.UNACK and engine.alarms[COMM].shelved
    assert engine.unshelve(COMM, "chan", T0 + 70 * S, "gateway back").seq == 5
    check = journal.verify()
    journal.close()
    assert (check.ok, check.events, check.seals, check.notes[-1:]) == (
        True, 5, 1, ("no exported heads checked: a journal cut short, emptied or rewritten "
                     "with recomputed hashes cannot be told from an intact one",))
    assert versions(old_journal) == [1, 1, 1, 1, 2]


@pytest.mark.parametrize(("sql", "bad_seq", "reason"), [
    # version 1 hashed only the body: the columns readers select on must match it
    pytest.param("UPDATE events SET time_ns = 0 WHERE seq = 2", 2, "column time_ns",
                 id="v1-row-moved-in-time"),
    pytest.param("UPDATE events SET alarm_id = 'hidden' WHERE seq = 3", 3, "column alarm_id",
                 id="v1-row-hidden"),
    pytest.param("UPDATE events SET action = 'clear' WHERE seq = 4", 4, "column action",
                 id="v1-row-relabelled"),
    # a version 2 row cannot be passed off as version 1 (its hash is not a version 1 hash)
    pytest.param("UPDATE events SET hash_version = 1 WHERE seq = 5", 5, "content does not match",
                 id="downgraded-row"),
    pytest.param("UPDATE events SET hash_version = 3 WHERE seq = 5", 5, "unknown hash version 3",
                 id="unknown-version"),
])
def test_old_rows_are_checked_for_the_columns_too(old_journal: Path, sql: str, bad_seq: int,
                                                  reason: str) -> None:
    journal = AlarmJournal(old_journal, heads=False)
    engine = AlarmEngine(AlarmsConfig(), journal)
    engine.unshelve(COMM, "chan", T0 + 70 * S, "gateway back")
    journal.close()
    with sqlite3.connect(old_journal) as db:
        db.executescript(sql)
    db.close()
    check = AlarmJournal(old_journal, heads=False).verify()
    assert not check.ok and check.first_bad_seq == bad_seq and reason in check.reason


def test_a_chain_rehashed_with_versions_out_of_order_is_refused(old_journal: Path) -> None:
    """Version 1 hashed less: a rewrite may not fall back to it after a version 2 row."""
    AlarmJournal(old_journal, heads=False).close()  # opening adds the hash_version column
    with sqlite3.connect(old_journal) as db:
        prev = GENESIS
        rows = db.execute("SELECT seq, time_ns, alarm_id, action, body FROM events "
                          "ORDER BY seq").fetchall()
        for (seq, time_ns, alarm_id, action, body), version in zip(rows, [1, 2, 1, 1]):
            digest = event_hash(version, prev, seq, time_ns, alarm_id, action, body)
            db.execute("UPDATE events SET prev_hash = ?, hash = ?, hash_version = ? "
                       "WHERE seq = ?", (prev, digest, version, seq))
            prev = digest
    db.close()
    check = AlarmJournal(old_journal, heads=False).verify()
    assert (check.first_bad_seq, check.reason) == (3, "hash version falls from 2 to 1")
