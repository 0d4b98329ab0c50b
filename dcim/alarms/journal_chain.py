"""The alarm journal's hash chains as pure functions: canonical rows, hashes and the checks.

Two chains live in the journal file (dcim/alarms/journal.py):

- **events**: row n carries hash_n = H(version, n, hash_{n-1}, time_ns, alarm_id, action,
  body). Version 2 (written since issue 10) hashes every column a reader filters on or shows;
  version 1 (earlier journals) hashed only (hash_{n-1}, n, body), so for both versions the
  check also requires the time_ns, alarm_id and action columns to equal the body's, and the
  body to be canonical JSON. A row's version can only rise along the chain.
- **seals** of the current alarm records: every transaction that changes the records appends
  seal_k = H(k, seal_{k-1}, event seq, event hash, records digest), binding the records as
  they are after it to the event chain's head at that moment.

The published algorithm cannot stop someone who rewrites the file from recomputing every
hash: only heads exported out of the file (journal_heads.py) catch that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from dcim.alarms.types import Action, Alarm, AlarmEvent, AlarmState, Priority

GENESIS = "0" * 64
HASH_VERSION = 2  # what new rows are written with
HASH_VERSIONS = (1, 2)
EVENT_FIELDS = tuple(f.name for f in fields(AlarmEvent) if f.name != "seq")
ALARM_FIELDS = tuple(f.name for f in fields(Alarm))
ROW_COLUMNS = ("time_ns", "alarm_id", "action")  # copied out of the body for indexed reads


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- events

def event_body(event: AlarmEvent) -> str:
    """The canonical JSON of an event without its sequence number."""
    # getattr per field rather than dataclasses.asdict: asdict deep-copies every value and
    # was most of the cost of journaling a flood (2,000 alarms raised at once)
    data = {name: getattr(event, name) for name in EVENT_FIELDS}
    data["action"], data["state"], data["priority"] = (event.action.value, event.state.value,
                                                       event.priority.value)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def parse_event(seq: int, body: str) -> AlarmEvent:
    """The event a stored body holds."""
    data = json.loads(body)
    data["action"] = Action(data["action"])
    data["state"] = AlarmState(data["state"])
    data["priority"] = Priority(data["priority"])
    return AlarmEvent(seq=seq, **data)


def event_hash(version: int, prev_hash: str, seq: int, time_ns: int, alarm_id: str,
               action: str, body: str) -> str:
    """The hash of one event row under its hash version (ValueError for an unknown one)."""
    if version == 2:
        return _sha256(_canonical(["dcim-alarm-event", 2, seq, prev_hash, time_ns, alarm_id,
                                   action, body]))
    if version == 1:
        return _sha256(f"{prev_hash}|{seq}|{body}".encode())
    raise ValueError(f"unknown hash version {version}")


@dataclass(frozen=True, slots=True)
class EventRow:
    """One row of the events table, as stored."""

    seq: int
    time_ns: int
    alarm_id: str
    action: str
    body: str
    prev_hash: str
    hash: str
    version: int = HASH_VERSION


def event_row(event: AlarmEvent, seq: int, prev_hash: str) -> EventRow:
    """The row that journals an event as number seq after prev_hash (current version)."""
    body = event_body(event)
    action = event.action.value
    digest = event_hash(HASH_VERSION, prev_hash, seq, event.time_ns, event.alarm_id, action,
                        body)
    return EventRow(seq, event.time_ns, event.alarm_id, action, body, prev_hash, digest)


def _row_fault(row: EventRow, expected_seq: int, prev: str, prev_version: int) -> str:
    """Why a row does not continue the chain (empty when it does)."""
    if row.seq != expected_seq:
        return f"sequence jumps from {expected_seq - 1} to {row.seq}"
    if row.prev_hash != prev:
        return "previous-hash does not match"
    if row.version not in HASH_VERSIONS:
        return f"unknown hash version {row.version}"
    if row.version < prev_version:
        return f"hash version falls from {prev_version} to {row.version}"
    try:
        data = json.loads(row.body)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":")) == row.body
    except ValueError:
        return "body is not JSON"
    if not isinstance(data, dict) or not canonical:
        return "body is not canonical JSON (not written by dcim)"
    moved = [c for c in ROW_COLUMNS if data.get(c) != getattr(row, c)]
    if moved:  # history, KPIs and the dashboard select on these columns
        return (f"column {', '.join(moved)} does not match the event (an event moved or "
                "hidden from filtered reads)")
    if event_hash(row.version, prev, row.seq, row.time_ns, row.alarm_id, row.action,
                  row.body) != row.hash:
        return "content does not match its hash"
    return ""


@dataclass(frozen=True, slots=True)
class ChainWalk:
    """The outcome of walking the event chain from the first row."""

    events: int  # rows that verified, from #1
    head: tuple[int, str]  # the last verified (seq, hash)
    first_bad_seq: int | None = None
    reason: str = ""
    hashes: Mapping[int, str] = field(default_factory=dict)  # hash at each probed seq
    version: int = 1  # the highest hash version met


def walk_events(rows: Iterable[EventRow], probes: Iterable[int] = ()) -> ChainWalk:
    """Verify the event chain row by row; note the hash at each probed sequence number."""
    wanted = set(probes)
    found: dict[int, str] = {0: GENESIS} if 0 in wanted else {}
    prev, expected, version = GENESIS, 1, 1
    for row in rows:
        fault = _row_fault(row, expected, prev, version)
        if fault:
            return ChainWalk(expected - 1, (expected - 1, prev), row.seq, fault, found, version)
        if row.seq in wanted:
            found[row.seq] = row.hash
        prev, expected, version = row.hash, row.seq + 1, row.version
    return ChainWalk(expected - 1, (expected - 1, prev), None, "", found, version)


# ---------------------------------------------------------------------- alarm records

def alarm_body(alarm: Alarm) -> str:
    """The stored JSON of an alarm's current record."""
    data = {name: getattr(alarm, name) for name in ALARM_FIELDS}
    data["priority"], data["state"] = alarm.priority.value, alarm.state.value
    data["series"] = list(alarm.series)
    return json.dumps(data, sort_keys=True)


def parse_alarm(body: str) -> Alarm:
    """The record a stored body holds."""
    data = json.loads(body)
    data["priority"], data["state"] = Priority(data["priority"]), AlarmState(data["state"])
    data["series"] = tuple(data["series"])
    return Alarm(**data)


def record_hash(alarm_id: str, body: str) -> str:
    """The hash of one stored alarm record (its id and body)."""
    return _sha256(_canonical(["dcim-alarm-record", alarm_id, body]))


def records_digest(hashes: Iterable[str]) -> str:
    """The digest of a whole records table from its rows' hashes (in any order)."""
    return _sha256("".join(sorted(hashes)).encode())


def table_digest(rows: Iterable[tuple[str, str]]) -> str:
    """The digest of a records table from its (id, body) rows."""
    return records_digest(record_hash(i, b) for i, b in rows)


EMPTY_RECORDS = records_digest(())


@dataclass(frozen=True, slots=True)
class SealRow:
    """One row of the seals table: the records digest after a transaction."""

    n: int
    event_seq: int
    event_hash: str
    records: str
    prev_hash: str
    hash: str


def seal_hash(n: int, prev_hash: str, event_seq: int, event_hash_: str, records: str) -> str:
    """The hash of seal number n."""
    return _sha256(_canonical(["dcim-alarm-records", 1, n, prev_hash, event_seq, event_hash_,
                               records]))


def seal_row(n: int, prev_hash: str, head: tuple[int, str], records: str) -> SealRow:
    """Seal number n of the records digest `records` at event head `head`."""
    return SealRow(n, head[0], head[1], records, prev_hash,
                   seal_hash(n, prev_hash, head[0], head[1], records))


def check_seals(seals: Iterable[SealRow], walk: ChainWalk, records: str) -> tuple[str, str]:
    """Check the seal chain against the event chain and the records' digest now.

    Returns (problem, note); at most one is non-empty. `walk` must hold the hash of every
    event a seal names (probe them), and have walked the whole event chain intact."""
    prev, expected, last_seq, last = GENESIS, 1, 0, None
    for seal in seals:
        if seal.n != expected or seal.prev_hash != prev or seal.hash != seal_hash(
                seal.n, prev, seal.event_seq, seal.event_hash, seal.records):
            return (f"the records' seal #{seal.n} does not follow seal #{expected - 1} "
                    "(a seal was edited, deleted or inserted)", "")
        if seal.event_seq < last_seq:
            return f"the records' seal #{seal.n} goes back to event #{seal.event_seq}", ""
        if seal.event_seq > walk.head[0]:
            return (f"the records were sealed at event #{seal.event_seq} (seal #{seal.n}) but "
                    f"the journal ends at #{walk.head[0]}: events were deleted", "")
        if walk.hashes.get(seal.event_seq, GENESIS if seal.event_seq == 0 else "") \
                != seal.event_hash:
            return (f"event #{seal.event_seq} is not the one the records' seal #{seal.n} "
                    "names: the chain was rewritten", "")
        prev, expected, last_seq, last = seal.hash, seal.n + 1, seal.event_seq, seal
    if last is None:
        if records == EMPTY_RECORDS and walk.events == 0:
            return "", ""
        if walk.version >= 2:  # this version seals every write
            return ("the alarm records' seals are gone (deleted) while the events were "
                    f"written with hash version {walk.version}", "")
        return "", ("the alarm records are not sealed (a journal written before seals; "
                    "they are sealed at its next write)")
    if last.event_seq != walk.head[0]:
        return (f"events #{last.event_seq + 1} to #{walk.head[0]} were appended without "
                "sealing the alarm records (written by other software, or seals deleted)", "")
    if last.records != records:
        return (f"the alarm records do not match their seal #{last.n}: edited outside dcim "
                "(the engine would restart with them)", "")
    return "", ""
