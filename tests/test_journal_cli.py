"""`dcim alarms history|list` print journal text escaped: journal content cannot drive a terminal."""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

import pytest

from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import Action, Alarm, AlarmEvent, AlarmState, Priority
from dcim.cli import main
from dcim.cli.alarms import printable

SITE = str(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
S = 1_000_000_000


@pytest.mark.parametrize(("text", "shown"), [
    pytest.param("kwong", "kwong", id="plain"),
    pytest.param("Zoë 陳 ✓", "Zoë 陳 ✓", id="letters-and-symbols-kept"),
    pytest.param("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07", id="esc-and-bel"),
    pytest.param("a\x00b\x7f\x9b", "a\\x00b\\x7f\\x9b", id="nul-del-and-c1-csi"),
    pytest.param("one\ntwo\r\tthree", "one\\ntwo\\r\\tthree", id="line-breaks-and-tab"),
    pytest.param("zero\u200bwidth", "zero\\u200bwidth", id="zero-width-space"),
    pytest.param("\u202eevil\u2066", "\\u202eevil\\u2066", id="bidi-overrides"),
    pytest.param("line\u2028para\u2029", "line\\u2028para\\u2029", id="unicode-separators"),
    pytest.param("tag\U000e0041", "tag\\U000e0041", id="tag-character"),
    pytest.param("lone\ud800", "lone\\ud800", id="lone-surrogate"),
    pytest.param(None, "", id="none"),
])
def test_control_and_format_characters_are_escaped_visibly(text: str | None,
                                                           shown: str) -> None:
    assert printable(text) == shown


HOSTILE_USER = "mallory\x1b[2J"
HOSTILE_COMMENT = "ok\nforged line #99 ack by boss\u202e"
HOSTILE_MESSAGE = "pdu\x07 not answering\u200b"


def raw_controls(text: str) -> set[str]:
    """The control and format characters in text, other than the line breaks of the output."""
    return {f"U+{ord(c):04X}" for c in text
            if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"}


@pytest.fixture
def hostile_journal(tmp_path: Path) -> Path:
    """Text that reached the journal unchecked (an old version, or a plug-in source)."""
    path = tmp_path / "alarms.sqlite"
    now = time.time_ns() - 3600 * S
    alarm = Alarm(id="device:PDU\x1b[31m:comm", source="device", priority=Priority.MEDIUM,
                  message=HOSTILE_MESSAGE, state=AlarmState.ACKED, condition=True,
                  active_since_ns=now, acked_by=HOSTILE_USER, acked_ns=now,
                  shelved_until_ns=now + 7200 * S, shelved_by="eve\u200b")
    journal = AlarmJournal(path, heads=False)
    journal.append([AlarmEvent(now, alarm.id, Action.ACK, AlarmState.ACKED, Priority.MEDIUM,
                               HOSTILE_MESSAGE, user=HOSTILE_USER, comment=HOSTILE_COMMENT)],
                   {alarm.id: alarm})
    journal.close()
    return path


def test_history_escapes_names_comments_and_ids(hostile_journal: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alarms", "history", SITE, "--journal", str(hostile_journal)]) == 0
    out = capsys.readouterr().out
    assert raw_controls(out) == set()
    assert "device:PDU\\x1b[31m:comm by mallory\\x1b[2J (ok\\nforged line #99 ack by " \
           "boss\\u202e)" in out
    assert len(out.splitlines()) == 2  # the event and the count: no forged line


def test_list_escapes_messages_and_who_acted(hostile_journal: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alarms", "list", SITE, "--journal", str(hostile_journal)]) == 0
    out = capsys.readouterr().out
    assert raw_controls(out) == set()
    for shown in ("device:PDU\\x1b[31m:comm", "pdu\\x07 not answering\\u200b",
                  "acknowledged by mallory\\x1b[2J", "shelved by eve\\u200b"):
        assert shown in out


def _journal_section() -> str:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    return doc.split("## The alarm journal\n", 1)[1].split("\n## ", 1)[0]


def test_the_security_doc_commands_and_settings_are_real() -> None:
    """docs/security.md (the journal section) stays true: its commands parse, its sample
    `alarms:` settings load, every setting it names exists."""
    import re
    import shlex

    import yaml

    from dcim.cli import build_parser
    from dcim.config.alarms import AlarmsConfig

    section = _journal_section()
    shell = "\n".join(block.split("```", 1)[0] for block in section.split("```sh\n")[1:])
    commands = [shlex.split(c.replace("<64 hex digits>", "0" * 64)) for c in
                shell.replace("\\\n", " ").splitlines() if c.startswith("dcim ")]
    assert len(commands) == 3
    for argv in commands:
        assert build_parser().parse_args(argv[1:]).alarms_command == "verify"
    sample = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    AlarmsConfig(**yaml.safe_load(sample)["alarms"])
    named = set(re.findall(r"`alarms\.(\w+)`", section))
    assert named and named <= set(AlarmsConfig.model_fields)
