"""Exported journal heads: signed lines, the schedule, what verify says about each forgery."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.journal_chain import (GENESIS, HASH_VERSION, event_hash, seal_hash,
                                       table_digest)
from dcim.alarms.journal_heads import (HeadExport, JournalKeyError, default_head_log,
                                       head_export, key_id, load_key)
from dcim.alarms.types import Action, AlarmEvent, AlarmState, Condition, Priority
from dcim.cli import main
from dcim.config.alarms import AlarmsConfig
from dcim.logs import _Formatter

S = 1_000_000_000
T0 = 1_800_000_000 * S
SITE = str(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
KEY = b"0123456789abcdef0123456789abcdef"
TRIP = Condition("unit:UPS-A3:down", "unit", Priority.HIGH, "ups_module UPS-A3 tripped",
                 unit="UPS-A3")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_engine(path: Path, export: HeadExport, clock: Callable[[], float] | None = None
               ) -> AlarmEngine:
    journal = AlarmJournal(path, export, **({"clock": clock} if clock else {}))
    engine = AlarmEngine(AlarmsConfig(), journal)
    engine.evaluate([TRIP], T0)
    engine.acknowledge(TRIP.alarm_id, "kwong", T0 + 10 * S, "on site")
    return engine


def verify(path: Path, *extra: str) -> int:
    return main(["alarms", "verify", SITE, "--journal", str(path), *extra])


def reasons(log_path: Path) -> list[str]:
    return [json.loads(line)["reason"] for line in log_path.read_text().splitlines()]


def forge_event(path: Path, user: str) -> None:
    """Append an acknowledgement nobody made, chained and sealed as dcim would."""
    with sqlite3.connect(path) as db:
        seq, prev = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC").fetchone()
        body = json.dumps({"action": "ack", "alarm_id": TRIP.alarm_id, "announce": True,
                           "comment": "", "device": None, "message": TRIP.message,
                           "out_of_service": False, "priority": "high", "shelved": False,
                           "source": "unit", "state": "active_acknowledged",
                           "suppressed": False, "time_ns": T0 + 20 * S, "unit": "UPS-A3",
                           "user": user}, sort_keys=True, separators=(",", ":"))
        digest = event_hash(HASH_VERSION, prev, seq + 1, T0 + 20 * S, TRIP.alarm_id, "ack", body)
        db.execute("INSERT INTO events VALUES (?, ?, ?, 'ack', ?, ?, ?, ?)",
                   (seq + 1, T0 + 20 * S, TRIP.alarm_id, body, prev, digest, HASH_VERSION))
        n, last = db.execute("SELECT n, hash FROM seals ORDER BY n DESC").fetchone()
        records = table_digest(db.execute("SELECT id, body FROM alarms").fetchall())
        db.execute("INSERT INTO seals VALUES (?, ?, ?, ?, ?, ?)",
                   (n + 1, seq + 1, digest, records, last,
                    seal_hash(n + 1, last, seq + 1, digest, records)))
    db.close()


# ---------------------------------------------------------------- signatures

def _rewrite(lines: list[dict[str, object]]) -> None:
    lines[-1]["seq"] = 1  # claim the journal ended earlier


def _unsign(lines: list[dict[str, object]]) -> None:
    for line in lines:
        line.pop("sig"), line.pop("kid")


def _other_key(lines: list[dict[str, object]]) -> None:
    lines[0]["kid"] = key_id(b"another key, 32 bytes long......")


@pytest.mark.parametrize(("forge", "message"), [
    pytest.param(_rewrite, "line 2: the signature does not match: the line was edited or forged",
                 id="edited-line"),
    pytest.param(_unsign, "line 1 is unsigned, but heads are signed with the key given",
                 id="signature-removed"),
    pytest.param(_other_key, "line 1 was signed with another key", id="other-key"),
])
def test_a_forged_head_line_is_caught_with_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        forge: Callable[[list[dict[str, object]]], None], message: str) -> None:
    path, heads, key_file = tmp_path / "alarms.sqlite", tmp_path / "heads.jsonl", tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    run_engine(path, HeadExport(heads, KEY)).journal.close()  # type: ignore[union-attr]
    assert verify(path, "--heads", str(heads), "--key-file", str(key_file)) == 0
    out = capsys.readouterr().out
    assert "2 exported heads hold" in out and "unsigned" not in out and "note:" not in out
    lines = [json.loads(line) for line in heads.read_text().splitlines()]
    forge(lines)
    heads.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert verify(path, "--heads", str(heads), "--key-file", str(key_file)) == 1
    assert message in capsys.readouterr().err


def test_without_the_key_signatures_are_not_checked_and_verify_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, heads = tmp_path / "alarms.sqlite", tmp_path / "heads.jsonl"
    run_engine(path, HeadExport(heads, KEY)).journal.close()  # type: ignore[union-attr]
    assert verify(path, "--heads", str(heads)) == 0
    assert "the signatures of 2 heads were not checked: no key given" in capsys.readouterr().out


@pytest.mark.parametrize(("env", "key_file", "environ", "expected"), [
    pytest.param(None, None, {}, None, id="none-configured"),
    pytest.param("DCIM_JOURNAL_KEY", None, {"DCIM_JOURNAL_KEY": " " + KEY.decode() + "\n"},
                 KEY, id="from-env-stripped"),
    pytest.param("DCIM_JOURNAL_KEY", None, {}, "DCIM_JOURNAL_KEY is not set", id="env-unset"),
    pytest.param("DCIM_JOURNAL_KEY", None, {"DCIM_JOURNAL_KEY": "short"},
                 "the journal key is 5 bytes; give at least 16", id="too-short"),
    pytest.param(None, "missing-key-file", {}, "cannot read missing-key-file", id="file-missing"),
])
def test_the_key_comes_from_the_environment_or_a_file(
        env: str | None, key_file: str | None, environ: dict[str, str],
        expected: bytes | str | None) -> None:
    if isinstance(expected, str):
        with pytest.raises(JournalKeyError, match=expected):
            load_key(env, key_file, environ)
    else:
        assert load_key(env, key_file, environ) == expected


def test_the_site_config_names_the_head_log_the_key_and_the_interval(tmp_path: Path) -> None:
    journal = tmp_path / "var" / "alarms-cp5.sqlite"
    assert head_export(AlarmsConfig(), journal) == HeadExport(
        tmp_path / "var" / "alarms-cp5.heads.jsonl", None, 300.0)
    key_file = tmp_path / "journal.key"
    key_file.write_bytes(KEY)
    config = AlarmsConfig(head_log_path="/var/log/dcim/heads.jsonl", head_export_interval_s=60,
                          journal_key_file=str(key_file))
    assert head_export(config, journal) == HeadExport(Path("/var/log/dcim/heads.jsonl"), KEY,
                                                      60.0)
    with pytest.raises(ValidationError, match="journal_key_env or journal_key_file, not both"):
        AlarmsConfig(journal_key_env="K", journal_key_file="f")
    with pytest.raises(ValidationError, match="head_export_interval_s"):
        AlarmsConfig(head_export_interval_s=0)


# ---------------------------------------------------------------- when heads are exported

def test_heads_are_exported_at_the_first_write_on_schedule_while_it_changes_and_at_close(
        tmp_path: Path) -> None:
    path, clock = tmp_path / "alarms.sqlite", Clock()
    heads = default_head_log(path)
    reader = AlarmJournal(path, clock=clock)
    assert reader.events() == [] and not heads.exists()  # readers never export
    reader.close()
    engine = run_engine(path, HeadExport(heads, None, 300.0), clock)
    journal = engine.journal
    assert journal is not None
    journal.flush()
    assert reasons(heads) == ["open"]
    clock.now += 299
    journal.flush()
    assert reasons(heads) == ["open"]
    clock.now += 2
    journal.flush()
    assert reasons(heads) == ["open", "interval"]
    clock.now += 600  # nothing changed since: nothing to export
    journal.flush()
    assert reasons(heads) == ["open", "interval"]
    engine.evaluate([], T0 + 100 * S)  # the trip's condition is gone: cleared after 60 s
    engine.evaluate([], T0 + 200 * S)
    clock.now += 300
    journal.flush()
    journal.close()
    assert reasons(heads) == ["open", "interval", "interval", "close"]
    last = json.loads(heads.read_text().splitlines()[-1])
    assert (last["seq"], last["hash"]) == AlarmJournal(path, heads=False).head()


def test_a_running_journal_has_an_unanchored_tail_which_verify_notes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, clock = tmp_path / "alarms.sqlite", Clock()
    engine = run_engine(path, HeadExport(default_head_log(path)), clock)
    assert engine.journal is not None
    engine.journal.flush()  # exported: the open head (#0)
    assert verify(path) == 0  # while it runs
    assert "2 events and 1 seals of the alarm records came after the newest exported head" \
        in capsys.readouterr().out
    engine.journal.close()


def test_heads_shipped_through_the_json_log_verify_as_well(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alarms.sqlite"
    with caplog.at_level(logging.INFO, logger="dcim.alarms.journal_heads"):
        run_engine(path, HeadExport(None, KEY)).journal.close()  # type: ignore[union-attr]
    formatter = _Formatter(as_json=True)
    shipped = tmp_path / "journald.jsonl"
    shipped.write_text("".join(formatter.format(r) + "\n" for r in caplog.records
                               if hasattr(r, "journal_head")))
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    assert verify(path, "--heads", str(shipped), "--key-file", str(key_file)) == 0


# ---------------------------------------------------------------- changes between runs

def test_a_journal_changed_while_the_system_was_stopped_is_caught(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alarms.sqlite"
    heads = default_head_log(path)
    run_engine(path, HeadExport(heads)).journal.close()  # type: ignore[union-attr]
    forge_event(path, "nobody")  # chained and sealed: the chains alone cannot tell
    assert AlarmJournal(path, heads=False).verify().ok
    # after close, before any restart: the journal must still be what close exported
    assert verify(path) == 1
    assert "the journal changed after the system closed it" in capsys.readouterr().err
    # the system starts again on it: it says so at once, and the heads keep the proof
    journal = AlarmJournal(path, HeadExport(heads))
    writer_log = logging.getLogger("dcim.alarms.journal_writer")
    writer_log.addHandler(caplog.handler)  # `dcim` above gave the root logger its own handler
    try:
        engine = AlarmEngine(AlarmsConfig(), journal)
        engine.evaluate([], T0 + 100 * S)
        journal.save_alarms(engine.alarms)
        journal.flush()
    finally:
        writer_log.removeHandler(caplog.handler)
    assert "alarm journal changed while the system was stopped" in caplog.text
    journal.close()
    assert reasons(heads) == ["open", "close", "open", "close"]
    assert verify(path) == 1
    err = capsys.readouterr().err
    assert "the journal changed while the system was stopped: closed at" in err
    assert "at event #2" in err and "at event #3" in err


# ---------------------------------------------------------------- heads given by hand

def test_expect_head_checks_a_head_noted_anywhere(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alarms.sqlite"
    run_engine(path, HeadExport(None)).journal.close()  # type: ignore[union-attr]
    seq, digest = AlarmJournal(path, heads=False).head()
    assert seq == 2
    assert verify(path, "--expect-head", f"2:{digest}", "--expect-head", f"0:{GENESIS}") == 0
    assert verify(path, "--expect-head", f"1:{digest}") == 1
    assert "--expect-head (expected, time unknown): event #1 is not the one exported" \
        in capsys.readouterr().err
    assert verify(path, "--expect-head", f"7:{digest}") == 1
    assert "the journal ends at #2: events #3 to #7 were deleted" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        verify(path, "--expect-head", "7:abc")
    assert "expected SEQ:HASH" in capsys.readouterr().err


def test_a_line_that_is_not_a_head_is_a_failure(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path, heads = tmp_path / "alarms.sqlite", tmp_path / "heads.jsonl"
    run_engine(path, HeadExport(heads)).journal.close()  # type: ignore[union-attr]
    with heads.open("a") as f:
        f.write('{"format": 1, "seq": "many"}\nnot json\n\n')
    assert verify(path, "--heads", str(heads)) == 1
    err = capsys.readouterr().err
    assert "line 3 is not a journal head" in err and "line 4 is not a journal head" in err
    assert verify(path, "--heads", str(tmp_path / "elsewhere.jsonl")) == 1
    assert "no head log at" in capsys.readouterr().err


def test_an_event_appended_directly_is_numbered_and_sealed(tmp_path: Path) -> None:
    """The journal's own API, as the tests above forge it: one event, one seal."""
    path = tmp_path / "alarms.sqlite"
    journal = AlarmJournal(path, heads=False)
    event = AlarmEvent(T0, "x", Action.RAISE, AlarmState.UNACK, Priority.LOW, "m")
    assert [e.seq for e in journal.append([event, event], {})] == [1, 2]
    check = journal.verify()
    journal.close()
    assert (check.ok, check.events, check.seals) == (True, 2, 1)
