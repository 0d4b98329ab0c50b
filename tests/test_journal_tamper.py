"""Tampering with the alarm journal, as an attacker with the file would: each edit is caught.

A journal is written through the public API (the engine, then the records saved and the
journal closed as the service does), its head log is "shipped" (moved out of reach), and the
SQLite file is edited with the sqlite3 module. `dcim alarms verify` runs in-process, without
the shipped heads and with them. The attacker of the rewriting rows has read the code and
recomputes every hash with the published functions: only the heads catch them (the
documented limit of a hash chain on its own).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.journal_chain import (GENESIS, HASH_VERSION, event_hash, seal_hash,
                                       table_digest)
from dcim.alarms.journal_heads import default_head_log
from dcim.alarms.types import Condition, Priority
from dcim.cli import main
from dcim.config.alarms import AlarmsConfig

S = 1_000_000_000
T0 = 1_800_000_000 * S
SITE = str(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
TRIP = Condition("unit:UPS-A3:down", "unit", Priority.HIGH, "ups_module UPS-A3 tripped",
                 unit="UPS-A3")
COMM = Condition("device:PDU-A-H1-2:comm", "device", Priority.MEDIUM, "pdu not answering",
                 unit="PDU-A-H1-2", device="PDU-A-H1-2")


def written(path: Path) -> Path:
    """Four events through the engine, records saved, closed; returns the shipped head log."""
    engine = AlarmEngine(AlarmsConfig(), AlarmJournal(path))
    engine.evaluate([TRIP, COMM], T0)
    engine.evaluate([TRIP, COMM], T0 + 30 * S)  # the comm alarm's on-delay is 30 s
    engine.acknowledge(TRIP.alarm_id, "kwong", T0 + 40 * S, "on site, breaker tripped")
    engine.shelve(COMM.alarm_id, "chan", T0 + 50 * S, 3600, "gateway replacement")
    assert engine.journal is not None
    engine.journal.save_alarms(engine.alarms)
    engine.journal.close()
    shipped = path.parent / "shipped" / "heads.jsonl"
    shipped.parent.mkdir()
    shutil.move(default_head_log(path), shipped)
    return shipped


# ---------------------------------------------------------------- the attacker's tools

def rehash_events(db: sqlite3.Connection) -> None:
    """Recompute every event hash from #1 with the published algorithm."""
    prev = GENESIS
    for seq, time_ns, alarm_id, action, body in db.execute(
            "SELECT seq, time_ns, alarm_id, action, body FROM events ORDER BY seq").fetchall():
        digest = event_hash(HASH_VERSION, prev, seq, time_ns, alarm_id, action, body)
        db.execute("UPDATE events SET prev_hash = ?, hash = ?, hash_version = ? WHERE seq = ?",
                   (prev, digest, HASH_VERSION, seq))
        prev = digest


def reseal(db: sqlite3.Connection) -> None:
    """Replace every seal by one sealing the records as they are now at the events' head."""
    head = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone() \
        or (0, GENESIS)
    records = table_digest(db.execute("SELECT id, body FROM alarms").fetchall())
    db.execute("DELETE FROM seals")
    db.execute("INSERT INTO seals VALUES (1, ?, ?, ?, ?, ?)",
               (head[0], head[1], records, GENESIS,
                seal_hash(1, GENESIS, head[0], head[1], records)))


def sql(*statements: str) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        for statement in statements:
            db.execute(statement)
    return run


def then(*steps: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    def run(db: sqlite3.Connection) -> None:
        for step in steps:
            step(db)
    return run


EDIT_USER = "UPDATE events SET body = replace(body, 'kwong', 'lee') WHERE seq = 3"
EDIT_ACKED_BY = "UPDATE alarms SET body = replace(body, '\"acked_by\": \"kwong\"', " \
                "'\"acked_by\": \"lee\"')"

# (attack, caught by the chains alone, what verify says with the shipped heads)
TAMPERING = [
    pytest.param(sql(EDIT_USER), True, "CHAIN BROKEN at event #3: content does not match",
                 id="edit-body"),
    pytest.param(sql("UPDATE events SET time_ns = 0 WHERE seq = 3"), True,
                 "CHAIN BROKEN at event #3: column time_ns does not match the event",
                 id="edit-time_ns"),
    pytest.param(sql("UPDATE events SET time_ns = 0, alarm_id = 'hidden' WHERE seq = 3"), True,
                 "column time_ns, alarm_id does not match the event", id="hide-an-event"),
    pytest.param(sql("DELETE FROM events WHERE seq = 2"), True,
                 "CHAIN BROKEN at event #3: sequence jumps from 1 to 3", id="delete-middle-row"),
    pytest.param(sql("DELETE FROM events WHERE seq = 4"), True,
                 "exported event #4, but the journal ends at #3: event #4 was deleted",
                 id="delete-tail"),
    pytest.param(then(sql("DELETE FROM events WHERE seq = 4"), reseal), False,
                 "exported event #4, but the journal ends at #3: event #4 was deleted",
                 id="delete-tail-and-reseal"),
    pytest.param(sql("DELETE FROM events", "DELETE FROM seals", "DELETE FROM alarms"), False,
                 "but the journal ends at #0: events #1 to #4 were deleted",
                 id="delete-every-row"),
    pytest.param(then(sql(EDIT_USER), rehash_events, reseal), False,
                 "event #4 is not the one exported: the chain was rewritten",
                 id="edit-and-rehash-the-whole-chain"),
    pytest.param(then(sql("UPDATE events SET time_ns = 0, alarm_id = 'hidden', body = "
                          "replace(replace(body, '1800000040000000000', '0'), "
                          "'\"unit:UPS-A3:down\"', '\"hidden\"') WHERE seq = 3"),
                      rehash_events, reseal), False,
                 "event #4 is not the one exported: the chain was rewritten",
                 id="hide-an-event-and-rehash"),
    pytest.param(sql(EDIT_ACKED_BY), True, "the alarm records do not match their seal",
                 id="edit-records-acked_by"),
    pytest.param(then(sql(EDIT_ACKED_BY), reseal), False,
                 "the alarm records' seals were rewritten", id="edit-records-and-reseal"),
]


@pytest.mark.parametrize(("attack", "caught_alone", "message"), TAMPERING)
def test_verify_catches_tampering_with_the_exported_heads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        attack: Callable[[sqlite3.Connection], None], caught_alone: bool, message: str) -> None:
    path = tmp_path / "alarms.sqlite"
    heads = written(path)
    verify = ["alarms", "verify", SITE, "--journal", str(path)]
    assert main([*verify, "--heads", str(heads)]) == 0
    assert "4 events" in capsys.readouterr().out
    with sqlite3.connect(path) as db:
        attack(db)
    db.close()
    # without the heads: a chain alone cannot see truncation or a recomputed chain
    assert main(verify) == (1 if caught_alone else 0)
    out, err = capsys.readouterr()
    assert ("NOT anchored" in out) != caught_alone
    assert "no head log at" in out
    # with them, every edit is caught, and said where
    assert main([*verify, "--heads", str(heads)]) == 1
    err = capsys.readouterr().err
    assert message in err


def test_an_untouched_journal_verifies_against_its_heads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alarms.sqlite"
    heads = written(path)
    lines = heads.read_text().splitlines()
    assert [line.split('"reason":"')[1].split('"')[0] for line in lines] == ["open", "close"]
    assert main(["alarms", "verify", SITE, "--journal", str(path), "--heads", str(heads)]) == 0
    out = capsys.readouterr().out
    assert "chain intact, 4 events" in out and "2 exported heads hold" in out
    assert "unsigned" in out  # no key configured: said so


def test_the_records_snapshot_is_what_the_engine_restarts_from(tmp_path: Path) -> None:
    """Why the records are sealed: an edited acked_by would come back at the next start."""
    path = tmp_path / "alarms.sqlite"
    written(path)
    with sqlite3.connect(path) as db:
        db.execute(EDIT_ACKED_BY)
    db.close()
    journal = AlarmJournal(path, heads=False)
    assert AlarmEngine(AlarmsConfig(), journal).alarms[TRIP.alarm_id].acked_by == "lee"
    check = journal.verify()
    journal.close()
    assert not check.ok and "do not match their seal" in check.problems[0]
