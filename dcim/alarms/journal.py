"""The alarm journal: every alarm event, append-only, hash-chained, in one SQLite file.

Auditors ask who did what and when, and whether the log could have been edited
(ISO/IEC 27001:2022 A.8.15). Each event row is chained to the one before by a hash over every
column a reader filters on or shows (journal_chain.py), so changing, removing or reordering a
row breaks the chain from there on, and `verify()` says where. The file also holds the current
alarm records, so a restarted system comes back with the same alarms, acknowledgements and
shelving; every change to them is sealed into a second chain bound to the events' head.

Someone with the file can recompute every hash: heads exported out of the file at the
writer's first write, every `head_export_interval_s` and at close (journal_heads.py: a signed
JSON line per export) anchor the chain, and `verify(heads)` checks the journal against them.

Appends return at once with their sequence numbers; a writer thread (journal_writer.py)
commits them in batches, so the event loop never waits on fsync. Reads flush first.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dcim.alarms.journal_chain import (GENESIS, EventRow, SealRow, alarm_body, check_seals,
                                       parse_alarm, parse_event, table_digest, walk_events)
from dcim.alarms.journal_heads import (ExportedHead, Head, HeadExport, check_heads,
                                       default_head_log, read_heads)
from dcim.alarms.journal_writer import Append, JournalWriter, JournalWriteError, Replace
from dcim.alarms.types import Alarm, AlarmEvent

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    alarm_id TEXT NOT NULL,
    action TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    hash_version INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS events_time ON events (time_ns);
CREATE INDEX IF NOT EXISTS events_alarm ON events (alarm_id, seq);
CREATE TABLE IF NOT EXISTS alarms (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seals (
    n INTEGER PRIMARY KEY,
    event_seq INTEGER NOT NULL,
    event_hash TEXT NOT NULL,
    records TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""
FLUSH_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0

__all__ = ["GENESIS", "AlarmJournal", "ChainCheck", "HeadExport", "JournalWriteError"]


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The result of verifying the journal: its chains, its records and any exported heads."""

    ok: bool
    events: int  # events that verified, from #1
    first_bad_seq: int | None = None  # where the event chain breaks
    reason: str = ""  # why it breaks there
    head: tuple[int, str] = (0, GENESIS)
    seals: int = 0
    problems: tuple[str, ...] = ()  # every failure, in words (the chain's break first)
    notes: tuple[str, ...] = ()  # what was not or could not be checked
    heads_checked: int = 0


def _migrate(db: sqlite3.Connection) -> None:
    """Journals from before hash version 2 get the column; their rows stay version 1."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if "hash_version" not in columns:
        db.execute("ALTER TABLE events ADD COLUMN hash_version INTEGER NOT NULL DEFAULT 1")


class AlarmJournal:
    """Append-only event log and current alarm records (one writer; readers may share it).

    ``heads``: True exports unsigned heads to ``<journal>.heads.jsonl`` every 300 s, False
    exports none, a HeadExport says where, how often and with which key. Only a journal that
    writes exports: readers (the CLI, reports) never touch the head log."""

    def __init__(self, path: str | Path, heads: HeadExport | bool = True, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.export = (HeadExport(default_head_log(self.path)) if heads is True
                       else None if heads is False else heads)
        self._clock = clock
        self._lock = threading.Lock()  # the read connection
        self._append_lock = threading.Lock()  # numbering and queueing, in one order
        if not self.path.exists():  # audit data: readable by dcim's account only
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        _migrate(self._db)
        self._next_seq = self._committed_head()[0] + 1
        self._writer: JournalWriter | None = None
        self._closed = False
        _OPEN.add(self)

    # ------------------------------------------------------------------ writing

    def append(self, events: Sequence[AlarmEvent],
               alarms: Mapping[str, Alarm]) -> list[AlarmEvent]:
        """Number events and queue them with the current records of their alarms; returns the
        numbered events at once (the writer thread commits them, see journal_writer.py)."""
        if not events:
            return []
        with self._append_lock:
            out = []
            for event in events:
                out.append(replace(event, seq=self._next_seq))
                self._next_seq += 1
            records = tuple((i, alarm_body(a) if (a := alarms.get(i)) is not None else None)
                            for i in dict.fromkeys(e.alarm_id for e in events))
            self._writing().submit(Append(tuple(out), records))
        return out

    def save_alarms(self, alarms: Mapping[str, Alarm]) -> None:
        """Write every current record (pending and clearing timers change without events)."""
        with self._append_lock:
            self._writing().submit(Replace(tuple((i, alarm_body(a)) for i, a in alarms.items())))

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait until everything appended so far is committed (JournalWriteError if it cannot
        be)."""
        if self._writer is not None:
            self._writer.flush(timeout_s)

    def close(self) -> None:
        """Commit what is queued, export the head (at close) and close the file."""
        with self._append_lock:  # no append slips in behind the close
            if self._closed:
                return
            self._closed = True
        if self._writer is not None:
            self._writer.close(CLOSE_TIMEOUT_S)
        with self._lock:
            self._db.close()
        _OPEN.discard(self)

    @property
    def write_error(self) -> str:
        """The writer's last commit error ("" while it commits)."""
        return self._writer.error if self._writer is not None else ""

    def _writing(self) -> JournalWriter:
        if self._closed:
            raise JournalWriteError(f"the alarm journal {self.path} is closed")
        if self._writer is None:
            self._writer = JournalWriter(self.path, self.export, self._clock)
        return self._writer

    # ------------------------------------------------------------------ reading

    def _committed_head(self) -> tuple[int, str]:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def head(self) -> tuple[int, str]:
        """(last sequence number, its hash), or (0, genesis) for an empty journal."""
        self.flush()
        return self._committed_head()

    def load_alarms(self) -> dict[str, Alarm]:
        """The alarm records as last written (an ERROR is logged if they are not as sealed)."""
        self.flush()
        with self._lock:
            rows = [(str(i), str(b)) for i, b in
                    self._db.execute("SELECT id, body FROM alarms").fetchall()]
            seal = self._db.execute("SELECT records FROM seals ORDER BY n DESC LIMIT 1"
                                    ).fetchone()
        if seal is not None and seal[0] != table_digest(rows):
            log.error("alarm records do not match their seal: edited outside dcim? run "
                      "`dcim alarms verify`", extra={"journal": str(self.path)})
        return {i: parse_alarm(b) for i, b in rows}

    def events(self, start_ns: int = 0, end_ns: int = 2**63 - 1, *,
               alarm_id: str | None = None, limit: int | None = None) -> list[AlarmEvent]:
        """Events with start_ns <= time < end_ns, oldest first (optionally one alarm's)."""
        self.flush()
        sql = "SELECT seq, body FROM events WHERE time_ns >= ? AND time_ns < ?"
        args: list[Any] = [start_ns, end_ns]
        if alarm_id is not None:
            sql += " AND alarm_id = ?"
            args.append(alarm_id)
        if limit is None:
            sql += " ORDER BY seq"
        else:
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?) ORDER BY seq"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [parse_event(int(s), str(b)) for s, b in rows]

    def verify(self, heads: Iterable[tuple[str, Iterable[str]]] | None = None, *,
               key: bytes | None = None,
               expect: Sequence[tuple[int, str]] = ()) -> ChainCheck:
        """Recompute both chains and the records' digest; check exported heads (per head log:
        a name and its lines; signatures with `key`) and expected (seq, hash) heads."""
        self.flush()
        read = read_heads(heads or (), key)
        wanted = [*read.heads, *(ExportedHead("--expect-head", "expected", None, s, h)
                                 for s, h in expect)]
        with self._lock:
            seals = [SealRow(*r) for r in self._db.execute(
                "SELECT n, event_seq, event_hash, records, prev_hash, hash FROM seals "
                "ORDER BY n")]
            records = table_digest((str(i), str(b)) for i, b in
                                   self._db.execute("SELECT id, body FROM alarms"))
            cursor = self._db.execute("SELECT seq, time_ns, alarm_id, action, body, prev_hash, "
                                      "hash, hash_version FROM events ORDER BY seq")
            walk = walk_events((EventRow(*r) for r in cursor),
                               {0, *(s.event_seq for s in seals), *(h.seq for h in wanted)})
        problems, notes = [*read.problems], [*read.notes]
        if walk.first_bad_seq is not None:
            problems.insert(0, f"CHAIN BROKEN at event #{walk.first_bad_seq}: {walk.reason} "
                               f"({walk.events} events verified before it)")
        else:
            problem, note = check_seals(seals, walk, records)
            problems += [problem] if problem else []
            notes += [note] if note else []
        last = seals[-1] if seals else None
        now = Head(walk.head[0], walk.head[1], last.n if last else 0,
                   last.hash if last else GENESIS, records)
        found, unanchored = check_heads(wanted, walk, {s.n: s.hash for s in seals}, now)
        problems += found
        notes += unanchored
        if not wanted:
            notes.append("no exported heads checked: a journal cut short, emptied or rewritten "
                         "with recomputed hashes cannot be told from an intact one")
        return ChainCheck(not problems, walk.events, walk.first_bad_seq, walk.reason, walk.head,
                          len(seals), tuple(problems), tuple(notes), len(wanted))


_OPEN: weakref.WeakSet[AlarmJournal] = weakref.WeakSet()


@atexit.register
def _close_open_journals() -> None:
    """A journal nobody closed still commits what it was handed before the process ends."""
    for journal in list(_OPEN):
        journal.close()
