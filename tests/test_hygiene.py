"""Outside text in dcim's own outputs, and the modes of the files dcim writes.

A value in a log record (an operator's comment, an alarm message, an exception) cannot forge
a line of the text log, and JSON lines give it back as it was. The notification outbox holds
addresses and every alarm message: created 0600 however dcim is used (the CLI sets umask 077,
a library caller may not).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcim.logs import setup_logging
from dcim.notify.channels import Message, Outbox

FORGED = "checked\n2026-12-07T03:00:00.000Z INFO    dcim.alarms.engine: alarm ack user=system"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A library caller's usual umask (files 0644 unless dcim says otherwise)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _emit(fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    setup_logging("INFO", fmt)
    log = logging.getLogger("dcim.test")
    log.info("note from %s", "ops\r\nFAKE", extra={"comment": FORGED, "user": "kwong",
                                                   "note": 'say "hi" \\ bye\u202e\u2028',
                                                   "empty": "", "count": 3})
    try:
        raise ValueError("bad\n2026-12-07T03:00:01.000Z ERROR   forged: line")
    except ValueError:
        log.exception("failed")
    return capsys.readouterr().err


def test_text_log_values_cannot_forge_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    out = _emit("text", capsys)
    lines = out.splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == 2, out  # one note, one failure: nothing forged in between
    note = records[0]
    assert note.endswith(" INFO    dcim.test: note from ops\\r\\nFAKE "
                         'comment="checked\\n2026-12-07T03:00:00.000Z INFO    '
                         'dcim.alarms.engine: alarm ack user=system" user=kwong '
                         'note="say \\"hi\\" \\\\ bye\\u202e\\u2028" empty="" count=3')
    # the traceback is readable but indented: no line of it starts like a record
    trace = lines[lines.index(records[1]) + 1:]
    assert trace and all(line.startswith("    ") for line in trace)
    assert any("forged: line" in line for line in trace)


def test_json_log_gives_the_values_back(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _emit("json", capsys).splitlines()
    assert len(lines) == 2
    note, failure = (json.loads(line) for line in lines)
    assert note["comment"] == FORGED and note["msg"] == "note from ops\r\nFAKE"
    assert note["note"] == 'say "hi" \\ bye\u202e\u2028'
    assert "forged: line" in failure["exc"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_outbox_is_private(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "var" / "notify-site.sqlite"
    outbox = Outbox(path)
    outbox.add([Message("mail", "raise", "[HIGH] UPS-1", "text", {}, "alice",
                        "alice@example.com")], 1)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["notify-site.sqlite", "notify-site.sqlite-shm", "notify-site.sqlite-wal"]
    assert {p: _mode(path.parent / p) for p in files} == {p: 0o600 for p in files}
    outbox.close()


def test_an_outbox_left_readable_is_tightened(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "notify-site.sqlite"
    Outbox(path).close()
    for p in tmp_path.iterdir():
        p.chmod(0o644)  # as an older version left it
    Outbox(path).close()
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {
        p.name: 0o600 for p in tmp_path.iterdir()}


async def test_the_journal_store_and_buffer_are_private_even_without_the_cli_umask(
        tmp_path: Path) -> None:
    """Files holding audit data or history are 0600 whatever the process umask is."""
    import os
    import stat

    from dcim.alarms.journal import AlarmJournal
    from dcim.collectors.buffer import DurableBuffer
    from dcim.config.storage import EmbeddedStorageConfig
    from dcim.storage.base import Sample, SeriesKey
    from dcim.storage.embedded import EmbeddedStorage

    old = os.umask(0o022)
    try:
        journal = AlarmJournal(tmp_path / "alarms.sqlite")
        journal.close()
        store = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                                site_id="s")
        await store.start()
        await store.close()
        buffer = DurableBuffer(tmp_path / "buffer")
        buffer.append([Sample(SeriesKey("m", "d", "p"), 1, 1.0)])
        buffer.close()
    finally:
        os.umask(old)
    files = [tmp_path / "alarms.sqlite", tmp_path / "s.sqlite",
             *sorted((tmp_path / "buffer").iterdir())]
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files if f.is_file()}
    assert modes and all(m == 0o600 for m in modes.values()), modes
