"""Heads of the alarm journal exported out of its reach, and the check of a journal against them.

The journal's writer appends one JSON line per export (at its first write, every
`head_export_interval_s` when something changed, and at close) to the head log, opened with
O_APPEND for each line so a log shipper may rotate it, and logs the same head (logger
`dcim.alarms.journal_heads`, field `journal_head`) for syslog or journald. With a key, each
line carries an HMAC-SHA256 over its canonical JSON, so lines that reach the shipper cannot be
forged later without the key. A head names the event chain's (seq, hash), the records' seal
(n, hash) and the records' digest; `check_heads` says which exported head the journal no
longer holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dcim.alarms.journal_chain import ChainWalk
from dcim.config.alarms import AlarmsConfig

log = logging.getLogger(__name__)

HEAD_FORMAT = 1
DEFAULT_INTERVAL_S = 300.0
MIN_KEY_BYTES = 16
REASONS = ("open", "interval", "close")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class JournalKeyError(ValueError):
    """The key that signs exported heads is configured but missing or too short."""


@dataclass(frozen=True, slots=True)
class Head:
    """Where the journal stands: event chain head, records seal head, records digest."""

    seq: int
    hash: str
    seal: int
    seal_hash: str
    records: str


@dataclass(frozen=True, slots=True)
class HeadExport:
    """Where the journal exports its head, with which key (None: unsigned), how often."""

    path: Path | None
    key: bytes | None = None
    interval_s: float = DEFAULT_INTERVAL_S


def default_head_log(journal_path: str | Path) -> Path:
    """The head log beside a journal: alarms-<site>.sqlite -> alarms-<site>.heads.jsonl."""
    return Path(journal_path).with_suffix(".heads.jsonl")


def load_key(env_name: str | None, key_file: str | None,
             environ: Mapping[str, str] = os.environ) -> bytes | None:
    """The signing key named by the config (None when none is configured)."""
    if env_name is not None:
        value = environ.get(env_name)
        if value is None:
            raise JournalKeyError(f"alarms.journal_key_env: the environment variable {env_name} "
                                  "is not set")
        key = value.strip().encode()
    elif key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise JournalKeyError(f"alarms.journal_key_file: cannot read {key_file} "
                                  f"({exc.strerror})") from exc
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise JournalKeyError(f"the journal key is {len(key)} bytes; give at least "
                              f"{MIN_KEY_BYTES} (for example `openssl rand -hex 32`)")
    return key


def head_export(config: AlarmsConfig, journal_path: str | Path,
                environ: Mapping[str, str] = os.environ) -> HeadExport:
    """The head export a site's `alarms:` section asks for (JournalKeyError: key missing)."""
    path = Path(config.head_log_path) if config.head_log_path else default_head_log(journal_path)
    return HeadExport(path, load_key(config.journal_key_env, config.journal_key_file, environ),
                      config.head_export_interval_s)


def key_id(key: bytes) -> str:
    """A short public name of a key, so a verifier knows which key signed a line."""
    return hashlib.sha256(b"dcim-journal-key|" + key).hexdigest()[:16]


def _canonical(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _signature(doc: Mapping[str, object], key: bytes) -> str:
    return hmac.new(key, _canonical({k: v for k, v in doc.items() if k != "sig"}),
                    hashlib.sha256).hexdigest()


def head_line(head: Head, reason: str, time_ns: int, journal: str, key: bytes | None) -> str:
    """One exported head as a JSON line (without the newline), signed when key is given."""
    doc: dict[str, object] = {"format": HEAD_FORMAT, "journal": journal, "reason": reason,
                              "time_ns": time_ns, "seq": head.seq, "hash": head.hash,
                              "seal": head.seal, "seal_hash": head.seal_hash,
                              "records": head.records}
    if key is not None:
        doc["kid"] = key_id(key)
        doc["sig"] = _signature(doc, key)
    return _canonical(doc).decode()


def export_head(export: HeadExport, head: Head, reason: str, time_ns: int, journal: str) -> None:
    """Append the head to the head log (O_APPEND, fsync) and log it."""
    line = head_line(head, reason, time_ns, journal, export.key)
    if export.path is not None:
        if reason == "open":  # later exports go nowhere else if the folder was removed
            export.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(export.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    log.info("alarm journal head #%d (%s)", head.seq, reason,
             extra={"journal_head": json.loads(line)})


# ---------------------------------------------------------------------- reading and checking

@dataclass(frozen=True, slots=True)
class ExportedHead:
    """A head read back from a head log (or given on the command line)."""

    where: str  # "heads.jsonl line 3", "--expect-head"
    reason: str
    time_ns: int | None
    seq: int
    hash: str
    seal: int | None = None  # None: only the event chain's head is known
    seal_hash: str | None = None
    records: str | None = None

    @property
    def when(self) -> str:
        """The export time, UTC, for messages."""
        if self.time_ns is None:
            return "time unknown"
        return datetime.fromtimestamp(self.time_ns / 1e9, timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC")

    def same_state(self, other: ExportedHead | Head) -> bool:
        """Whether both name the same events, seals and records."""
        return (self.seq, self.hash, self.seal, self.seal_hash, self.records) == (
            other.seq, other.hash, other.seal, other.seal_hash, other.records)


@dataclass(frozen=True, slots=True)
class HeadsRead:
    """Heads read from head logs: the usable ones, and what was wrong or worth saying."""

    heads: tuple[ExportedHead, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...]


def _head_doc(text: str | bytes) -> dict[str, object] | None:
    """The head object of a line: a head line, or a JSON log record carrying one."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("journal_head"), dict):
        doc = doc["journal_head"]
    return doc if isinstance(doc, dict) else None


def _parse(doc: Mapping[str, object], where: str) -> ExportedHead | None:
    ints = [doc.get(k) for k in ("seq", "seal", "time_ns")]
    hexes = [doc.get(k) for k in ("hash", "seal_hash", "records")]
    if (doc.get("format") != HEAD_FORMAT or doc.get("reason") not in REASONS
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ints)
            or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hexes)):
        return None
    seq, seal, time_ns = [i for i in ints if isinstance(i, int)]  # all of them, checked above
    digest, seal_hash, records = [h for h in hexes if isinstance(h, str)]
    return ExportedHead(where, str(doc["reason"]), time_ns, seq, digest, seal, seal_hash,
                        records)


def read_heads(sources: Iterable[tuple[str, Iterable[str]]], key: bytes | None) -> HeadsRead:
    """Parse head lines (per source: a name and its lines) and check their signatures."""
    heads: list[ExportedHead] = []
    problems: list[str] = []
    unsigned = unchecked = 0
    for name, lines in sources:
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            where = f"{name} line {number}"
            doc = _head_doc(text)
            head = _parse(doc, where) if doc is not None else None
            if doc is None or head is None:
                problems.append(f"{where} is not a journal head")
                continue
            sig = doc.get("sig")
            if sig is None:
                unsigned += 1
                if key is not None:
                    problems.append(f"{where} is unsigned, but heads are signed with the key "
                                    "given: a forged line, or written without the key")
                    continue
            elif key is None:
                unchecked += 1
            elif doc.get("kid") != key_id(key):
                problems.append(f"{where} was signed with another key (id {doc.get('kid')!s:.16}"
                                f", the key given is {key_id(key)})")
                continue
            elif not hmac.compare_digest(str(sig), _signature(doc, key)):
                problems.append(f"{where}: the signature does not match: the line was edited "
                                "or forged")
                continue
            heads.append(head)
    notes = []
    if unsigned and key is None:
        notes.append(f"{unsigned} exported heads are unsigned: anyone who can write the head "
                     "log can forge them (set alarms.journal_key_env or journal_key_file)")
    if unchecked:
        notes.append(f"the signatures of {unchecked} heads were not checked: no key given "
                     "(--key-file, or the site's alarms.journal_key_env / journal_key_file)")
    return HeadsRead(tuple(heads), tuple(problems), tuple(notes))


def last_exported(path: Path | None, tail_bytes: int = 65536) -> ExportedHead | None:
    """The newest head in a head log (None when there is none or it does not parse)."""
    if path is None or not path.exists():
        return None
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - tail_bytes))
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        return None
    doc = _head_doc(lines[-1])
    return _parse(doc, f"{path.name} (last line)") if doc is not None else None


def _missing(head: ExportedHead, walk: ChainWalk, seals: Mapping[int, str],
             now: Head) -> str:
    """Why the journal no longer holds an exported head (empty when it does)."""
    label = f"{head.where} ({head.reason}, {head.when})"
    if head.seq > now.seq:
        gone = (f"event #{head.seq} was" if head.seq == now.seq + 1
                else f"events #{now.seq + 1} to #{head.seq} were")
        return (f"{label} exported event #{head.seq}, but the journal ends at #{now.seq}: "
                f"{gone} deleted")
    if walk.hashes.get(head.seq) != head.hash:
        return (f"{label}: event #{head.seq} is not the one exported: the chain was rewritten "
                f"at or before #{head.seq}")
    if head.seal is None:
        return ""
    if head.seal > now.seal:
        return (f"{label} exported the records' seal #{head.seal}, but the journal's seals end "
                f"at #{now.seal}: seals were deleted")
    if head.seal > 0 and seals.get(head.seal) != head.seal_hash:
        return (f"{label}: the records' seal #{head.seal} is not the one exported: the alarm "
                "records' seals were rewritten")
    return ""


def check_heads(heads: Sequence[ExportedHead], walk: ChainWalk, seals: Mapping[int, str],
                now: Head) -> tuple[list[str], list[str]]:
    """Check a journal against heads exported from it, oldest first: (problems, notes).

    `walk` must hold the event hash at every exported seq and `seals` the seal hash at every
    exported seal number."""
    if walk.first_bad_seq is not None:  # only the intact prefix can be compared
        beyond = [h for h in heads if h.seq >= walk.first_bad_seq]
        heads = [h for h in heads if h.seq < walk.first_bad_seq]
        notes = [f"{len(beyond)} exported heads lie beyond the break at "
                 f"#{walk.first_bad_seq}: not checked"] if beyond else []
        return [p for p in (_missing(h, walk, seals, now) for h in heads) if p], notes
    problems = [p for p in (_missing(h, walk, seals, now) for h in heads) if p]
    notes = []
    logged = [h for h in heads if h.seal is not None]
    for before, after in zip(logged, logged[1:]):
        if before.reason == "close" and after.reason == "open" and not before.same_state(after):
            problems.append(f"the journal changed while the system was stopped: closed at "
                            f"{before.when} at event #{before.seq} ({before.where}), reopened "
                            f"at {after.when} at event #{after.seq} ({after.where})"
                            + _what_changed(before, after))
    if logged:
        newest = logged[-1]
        if newest.reason == "close" and not newest.same_state(now):
            problems.append(f"the journal changed after the system closed it at {newest.when} "
                            f"({newest.where}): exported event #{newest.seq}, now #{now.seq}"
                            + _what_changed(newest, now))
        elif newest.reason != "close" and (newest.seq, newest.seal) != (now.seq, now.seal):
            notes.append(f"{now.seq - newest.seq} events and {now.seal - (newest.seal or 0)} "
                         f"seals of the alarm records came after the newest exported head "
                         f"(#{newest.seq}, {newest.when}): not anchored yet")
    return problems, notes


def _what_changed(before: ExportedHead, after: ExportedHead | Head) -> str:
    parts = []
    if (before.seq, before.hash) != (after.seq, after.hash):
        parts.append("events")
    if (before.seal, before.seal_hash) != (after.seal, after.seal_hash):
        parts.append("seals")
    if before.records != after.records:
        parts.append("alarm records")
    return f" ({', '.join(parts)} differ)" if parts else ""
