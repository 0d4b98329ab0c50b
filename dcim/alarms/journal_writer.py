"""The alarm journal's writer thread: hashes, writes and commits what was appended, off the loop.

The engine appends on the event loop and gets its sequence numbers at once
(dcim/alarms/journal.py numbers them); this thread chains the rows, writes them with the
records and a new seal, and commits (fsync) whatever has queued meanwhile in one transaction,
so a burst of operator actions costs one fsync, on this thread. Each transaction holds whole
appends in order, so the file is always a prefix of what was appended: a crash loses the
appends not yet committed, never the chain's consistency. A failed commit is retried with
backoff, in order, and logged once; flush() then raises JournalWriteError.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dcim.alarms.journal_chain import (GENESIS, EventRow, SealRow, event_row, record_hash,
                                       records_digest, seal_row)
from dcim.alarms.journal_heads import Head, HeadExport, export_head, last_exported
from dcim.alarms.types import AlarmEvent
from dcim.storage.retry import backoff_s

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.1  # a failed commit is retried after this, doubled each time (capped 30 s)
# Hashing a flood is pure Python on this thread: hand the GIL back every so many rows, or
# the event loop's thread waits for it up to the switch interval (5 ms) at a time.
YIELD_EVERY = 32
CLOSE_ATTEMPTS = 5  # closing gives up after this many failed commits (about 3 s of retries)


class JournalWriteError(RuntimeError):
    """The writer cannot commit to the journal file (disk full, I/O error, ...)."""


@dataclass(frozen=True, slots=True)
class Append:
    """Numbered events and the records of their alarms after them (None: forgotten)."""

    events: tuple[AlarmEvent, ...]
    records: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class Replace:
    """Every current record (what the records table is to hold from now on)."""

    records: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Marker:
    """Flush or close: set once everything submitted before it is committed (or failed)."""

    closing: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""


@dataclass(slots=True)
class _State:
    """What the file holds as of the last commit."""

    seq: int = 0
    hash: str = GENESIS
    seal: int = 0
    seal_hash: str = GENESIS
    records: dict[str, str] = field(default_factory=dict)  # alarm id -> record hash

    def head(self) -> Head:
        return Head(self.seq, self.hash, self.seal, self.seal_hash,
                    records_digest(self.records.values()))


@dataclass(slots=True)
class _Batch:
    """One transaction: event rows, record changes (None: delete), the seal after them."""

    records: dict[str, str]  # alarm id -> record hash, after the transaction
    rows: list[EventRow] = field(default_factory=list)
    changes: dict[str, str | None] = field(default_factory=dict)
    replace: bool = False  # the records table is emptied first
    seal: SealRow | None = None


def _write(db: sqlite3.Connection, batch: _Batch) -> None:
    """Write a batch in one transaction (rolled back if any statement fails)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT INTO events (seq, time_ns, alarm_id, action, body, prev_hash, "
                       "hash, hash_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [(r.seq, r.time_ns, r.alarm_id, r.action, r.body, r.prev_hash, r.hash,
                         r.version) for r in batch.rows])
        if batch.replace:
            db.execute("DELETE FROM alarms")
        db.executemany("DELETE FROM alarms WHERE id = ?",
                       [(i,) for i, b in batch.changes.items() if b is None])
        db.executemany("INSERT OR REPLACE INTO alarms VALUES (?, ?)",
                       [(i, b) for i, b in batch.changes.items() if b is not None])
        if batch.seal is not None:
            seal = batch.seal
            db.execute("INSERT INTO seals VALUES (?, ?, ?, ?, ?, ?)",
                       (seal.n, seal.event_seq, seal.event_hash, seal.records, seal.prev_hash,
                        seal.hash))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class JournalWriter:
    """One thread that owns the journal's write connection (`clock` times the head exports;
    tests move it, retries run on real time)."""

    def __init__(self, path: Path, export: HeadExport | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.export, self._clock = path, export, clock
        self._queue: queue.SimpleQueue[Append | Replace | _Marker] = queue.SimpleQueue()
        self._state = _State()
        self._pending: list[Append | Replace] = []
        self._waiting: list[_Marker] = []
        self._attempt, self._retry_at, self.error = 0, 0.0, ""
        self._dirty, self._exported_at, self._closing = False, 0.0, False
        self._thread = threading.Thread(target=self._run, name="dcim-journal-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Append | Replace) -> None:
        """Queue a job; it is committed with whatever else is queued."""
        self._queue.put(job)

    def flush(self, timeout_s: float) -> None:
        """Wait until everything submitted so far is committed."""
        marker = _Marker()
        self._queue.put(marker)
        if not self._thread.is_alive() and not marker.done.is_set():
            raise JournalWriteError(f"the alarm journal's writer has stopped ({self.error})")
        if not marker.done.wait(timeout_s):
            raise JournalWriteError(f"the alarm journal did not commit within {timeout_s:g} s"
                                    + (f" ({self.error})" if self.error else ""))
        if marker.error:
            raise JournalWriteError(f"the alarm journal cannot write: {marker.error}")

    def close(self, timeout_s: float) -> None:
        """Commit what is queued, export the head and stop; give up after timeout_s."""
        marker = _Marker(closing=True)
        self._queue.put(marker)
        self._thread.join(timeout_s)
        if self._thread.is_alive() or marker.error:
            log.error("alarm journal closed with events not written",
                      extra={"journal": str(self.path), "error": marker.error or self.error})

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous=FULL")  # a committed event survives power loss
                self._load(db)
                self._export("open")
                while not self._step(db):
                    pass
            finally:
                db.close()
        except Exception as exc:  # cannot even open: every append from now on is lost
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("alarm journal writer stopped", extra={"journal": str(self.path)})
            self._release(self.error)

    def _step(self, db: sqlite3.Connection) -> bool:
        """Wait for work, commit it, export if due; True once closed."""
        try:
            self._take(self._queue.get(timeout=self._timeout()))
            while True:
                self._take(self._queue.get_nowait())
        except queue.Empty:
            pass
        if self._pending and time.monotonic() >= self._retry_at:
            self._commit(db)
        if self._closing and (not self._pending or self._attempt > CLOSE_ATTEMPTS):
            self._export("close")
            self._release(self.error if self._pending else "")
            return True
        if self._dirty and self._clock() - self._exported_at >= self._interval():
            self._export("interval")
        if not self._pending:
            self._release("")
        elif self.error:  # readers are told at once; the retries go on
            self._release(self.error)
        return False

    def _release(self, error: str) -> None:
        """Tell the flushes waiting that their appends are committed (or why not)."""
        for marker in self._waiting:
            marker.error = error
            marker.done.set()
        self._waiting.clear()

    def _take(self, item: Append | Replace | _Marker) -> None:
        if isinstance(item, _Marker):
            self._waiting.append(item)
            self._closing = self._closing or item.closing
        else:
            self._pending.append(item)

    def _interval(self) -> float:
        return self.export.interval_s if self.export is not None else float("inf")

    def _timeout(self) -> float | None:
        if self._pending:  # failing: wait for the retry
            return max(0.0, self._retry_at - time.monotonic())
        if not self._dirty or self.export is None:
            return None
        return max(0.0, self._interval() - (self._clock() - self._exported_at))

    def _load(self, db: sqlite3.Connection) -> None:
        state = self._state
        row = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            state.seq, state.hash = int(row[0]), str(row[1])
        row = db.execute("SELECT n, hash FROM seals ORDER BY n DESC LIMIT 1").fetchone()
        if row is not None:
            state.seal, state.seal_hash = int(row[0]), str(row[1])
        state.records = {str(i): record_hash(str(i), str(b))
                         for i, b in db.execute("SELECT id, body FROM alarms")}

    def _commit(self, db: sqlite3.Connection) -> None:
        """Write every pending job in one transaction; on failure keep them for a retry."""
        try:
            batch = self._prepare()
            _write(db, batch)
        except Exception as exc:  # disk full, I/O error, locked, or a bug: retry, in order
            error = f"{type(exc).__name__}: {exc}"
            if error != self.error:  # once per distinct failure, not every retry
                log.error("alarm journal cannot commit; retrying",
                          extra={"journal": str(self.path), "error": error,
                                 "events": sum(len(j.events) for j in self._pending
                                               if isinstance(j, Append))})
            self.error = error
            self._retry_at = time.monotonic() + backoff_s(FIRST_RETRY_S, self._attempt)
            self._attempt += 1
            return
        if self.error:
            log.info("alarm journal commits again", extra={"journal": str(self.path)})
        state = self._state
        state.records = batch.records
        if batch.rows:
            state.seq, state.hash = batch.rows[-1].seq, batch.rows[-1].hash
        if batch.seal is not None:
            state.seal, state.seal_hash = batch.seal.n, batch.seal.hash
            self._dirty = True
        self._pending.clear()
        self._attempt, self.error = 0, ""

    def _prepare(self) -> _Batch:
        """The rows, record changes and seal of every pending job, chained on the state."""
        state = self._state
        seq, prev = state.seq, state.hash
        batch = _Batch(records=dict(state.records))
        for job in self._pending:
            if isinstance(job, Replace):
                batch.replace, batch.records, batch.changes = True, {}, dict(job.records)
                continue
            for event in job.events:
                seq += 1
                if seq != event.seq and not self.error:
                    log.warning("alarm journal renumbers an event: another process wrote to it",
                                extra={"seq": event.seq, "as": seq})
                batch.rows.append(event_row(event, seq, prev))
                prev = batch.rows[-1].hash
                if seq % YIELD_EVERY == 0:
                    time.sleep(0)  # let the event loop's thread have the GIL
            batch.changes.update(job.records)
        for alarm_id, body in batch.changes.items():
            if body is None:
                batch.records.pop(alarm_id, None)
            else:
                batch.records[alarm_id] = record_hash(alarm_id, body)
        digest = records_digest(batch.records.values())
        if batch.rows or digest != records_digest(state.records.values()):
            batch.seal = seal_row(state.seal + 1, state.seal_hash, (seq, prev), digest)
        return batch

    def _export(self, reason: str) -> None:
        """Export the committed head (a failing export is logged, never stops the writer)."""
        self._dirty, self._exported_at = False, self._clock()
        if self.export is None:
            return
        head = self._state.head()
        if reason == "open":
            self._check_last(head)
        try:
            export_head(self.export, head, reason, time.time_ns(), str(self.path))
        except OSError as exc:
            log.error("alarm journal head not exported",
                      extra={"head_log": str(self.export.path), "error": str(exc)})

    def _check_last(self, head: Head) -> None:
        """At open: the journal must be as the last close left it."""
        assert self.export is not None
        try:
            last = last_exported(self.export.path)
        except OSError:
            return
        if last is not None and last.reason == "close" and not last.same_state(head):
            log.error("alarm journal changed while the system was stopped: run "
                      "`dcim alarms verify`", extra={"journal": str(self.path),
                                                     "closed_at_seq": last.seq,
                                                     "now_seq": head.seq})
