"""Notification delivery: the channel kinds (config and sender) and the durable SQLite outbox.

Every message is written to the outbox before any attempt. One worker per channel delivers
that channel's messages oldest first (so a receiver that was down gets them in order), with
capped exponential backoff and jitter; a slow or failing channel holds up only itself. A
message older than `max_age_s` is marked failed and logged at ERROR, never dropped silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import smtplib
import sqlite3
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from dcim.config.notifications import (
    DeliveryConfig,
    EmailChannelConfig,
    LogChannelConfig,
    WebhookChannelConfig,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DCIM-Signature"
# HTTP answers worth repeating; any other 4xx means the request itself is wrong.
RETRYABLE_4XX = frozenset({408, 425, 429})
ERROR_EXCERPT_CHARS = 300


@dataclass(frozen=True, slots=True)
class Message:
    """One message for one destination: a channel, and a person or address on it."""

    channel: str
    kind: str  # raise, clear, priority, escalation, renotify, flood
    subject: str
    text: str
    payload: dict[str, Any]
    recipient: str | None = None  # person id
    address: str | None = None  # email address (email channels)
    alarm_id: str | None = None
    priority: str | None = None

    @property
    def destination(self) -> tuple[str, str | None, str | None]:
        """Where it goes: (channel, person id, address)."""
        return (self.channel, self.recipient, self.address)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A message as stored in the outbox."""

    id: int
    created_ns: int
    attempts: int
    next_try_ns: int
    message: Message


class DeliveryError(Exception):
    """One failed attempt; `permanent` when sending it again cannot succeed."""

    def __init__(self, reason: str, *, permanent: bool = False):
        super().__init__(reason)
        self.permanent = permanent


def retry_delay_s(attempts: int, config: DeliveryConfig, rand: Callable[[], float] = random.random) -> float:
    """Delay after failed attempt number `attempts` (1-based): doubled each time, capped, jittered."""
    base = min(config.first_backoff_s * 2 ** min(attempts - 1, 60), config.max_backoff_s)
    return base * (1 + config.jitter * (2 * rand() - 1))


SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT,
    address TEXT,
    kind TEXT NOT NULL,
    alarm_id TEXT,
    priority TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ns INTEGER NOT NULL,
    last_error TEXT,
    done_ns INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, channel, id);
"""
_COLUMNS = "id, created_ns, attempts, next_try_ns, channel, kind, subject, body, payload, " \
           "recipient, address, alarm_id, priority"


def private_file(path: Path) -> None:
    """Make sure a database file is readable by its owner only (0600) before SQLite opens it:
    created so if missing (SQLite gives its -wal and -shm files the database's mode), and
    tightened if an older version left it, or them, readable by others. The outbox holds
    addresses and the text of every alarm message."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if extra.exists() and extra.stat().st_mode & 0o077:
            extra.chmod(0o600)


class Outbox:
    """The SQLite file of messages to deliver; rows go pending -> delivered | failed.

    Used from the event loop's thread only; each call is one short transaction on a local
    file (a few rows), cheaper than a hop to a worker thread.
    """

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        private_file(Path(path))
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a queued page must survive a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def add(self, messages: Sequence[Message], now_ns: int) -> list[int]:
        """Store messages as pending, due now, in one transaction; their row ids."""
        ids: list[int] = []
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for m in messages:
                cur = self._db.execute(
                    "INSERT INTO outbox (created_ns, channel, recipient, address, kind, alarm_id, "
                    "priority, subject, body, payload, next_try_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (now_ns, m.channel, m.recipient, m.address, m.kind, m.alarm_id, m.priority,
                     m.subject, m.text, json.dumps(m.payload, default=str), now_ns))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def head(self, channel: str) -> OutboxRow | None:
        """The oldest pending message of a channel (delivered first, to keep the order)."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' AND channel = ? "
            "ORDER BY id LIMIT 1", (channel,)).fetchone()
        if row is None:
            return None
        (id_, created, attempts, next_try, channel_, kind, subject, body, payload,
         recipient, address, alarm_id, priority) = row
        message = Message(channel=channel_, kind=kind, subject=subject, text=body,
                          payload=json.loads(payload), recipient=recipient, address=address,
                          alarm_id=alarm_id, priority=priority)
        return OutboxRow(id_, created, attempts, next_try, message)

    def delivered(self, row_id: int, now_ns: int) -> None:
        """Mark a message delivered."""
        self._db.execute("UPDATE outbox SET status = 'delivered', done_ns = ?, "
                         "attempts = attempts + 1 WHERE id = ?", (now_ns, row_id))

    def retry(self, row_id: int, next_try_ns: int, error: str) -> None:
        """Count a failed attempt and set when to try again."""
        self._db.execute("UPDATE outbox SET attempts = attempts + 1, next_try_ns = ?, "
                         "last_error = ? WHERE id = ?", (next_try_ns, error, row_id))

    def failed(self, row_id: int, now_ns: int, error: str) -> None:
        """Give up on a message (it stays in the outbox, status failed, for the record)."""
        self._db.execute("UPDATE outbox SET status = 'failed', done_ns = ?, last_error = ? "
                         "WHERE id = ?", (now_ns, error, row_id))

    def pending_channels(self) -> list[str]:
        """Channels that have pending messages."""
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT channel FROM outbox WHERE status = 'pending'")]

    def prune(self, before_ns: int) -> int:
        """Delete delivered and failed rows finished before `before_ns`; how many."""
        cur = self._db.execute("DELETE FROM outbox WHERE status != 'pending' AND done_ns < ?",
                               (before_ns,))
        return cur.rowcount

    def counts(self) -> tuple[dict[str, int], int | None]:
        """Rows per status, and created_ns of the oldest pending message (none if none)."""
        by_status = dict(self._db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status"))
        oldest = self._db.execute(
            "SELECT MIN(created_ns) FROM outbox WHERE status = 'pending'").fetchone()[0]
        return {str(k): int(v) for k, v in by_status.items()}, oldest

    def rows(self, status: str | None = None) -> list[tuple[int, str, str, int]]:
        """(id, channel, status, attempts) of every row, oldest first (for tests and the CLI)."""
        sql = "SELECT id, channel, status, attempts FROM outbox"
        args: tuple[str, ...] = ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return [tuple(r) for r in self._db.execute(sql + " ORDER BY id", args)]  # type: ignore[misc]


class Sender(Protocol):
    """Delivers one message over one channel; raises DeliveryError when it could not."""

    async def send(self, message: Message) -> None: ...


def _secret(env: str | None, what: str) -> str | None:
    """The value of a secret's environment variable; a missing variable is a config error."""
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise ValueError(f"{what}: environment variable {env} is not set")
    return value


def sign(secret: bytes, body: bytes) -> str:
    """The X-DCIM-Signature header value for a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """POSTs the message payload as JSON; 2xx is delivered, 4xx (but 408/425/429) permanent."""

    def __init__(self, name: str, config: WebhookChannelConfig,
                 session: Callable[[], aiohttp.ClientSession]):
        self.name = name
        self.config = config
        self._session = session
        secret = _secret(config.secret_env, f"notifications.channels.{name}.secret_env")
        self._secret = secret.encode() if secret is not None else None

    async def send(self, message: Message) -> None:
        """POST the payload; DeliveryError on a failure."""
        body = json.dumps(message.payload, default=str, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        try:
            async with self._session().post(
                    self.config.url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)) as resp:
                if 200 <= resp.status < 300:
                    return
                text = (await resp.text(errors="replace"))[:ERROR_EXCERPT_CHARS]
                permanent = 400 <= resp.status < 500 and resp.status not in RETRYABLE_4XX
                raise DeliveryError(f"HTTP {resp.status}: {text}", permanent=permanent)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc


class EmailSender:
    """Sends a plain-text email with stdlib smtplib in a worker thread."""

    def __init__(self, name: str, config: EmailChannelConfig):
        self.name = name
        self.config = config
        self._password = _secret(config.password_env, f"notifications.channels.{name}.password_env")
        if config.insecure_password:  # allowed knowingly; said at every start all the same
            log.warning("email channel logs in without TLS: its password crosses the network "
                        "in clear (allow_insecure_password is set)",
                        extra={"channel": name, "host": config.host, "port": config.port})

    async def send(self, message: Message) -> None:
        """Send to message.address; DeliveryError on a failure (5xx answers are permanent)."""
        if not message.address:
            raise DeliveryError("no address", permanent=True)
        try:
            await asyncio.to_thread(self._send_sync, message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(f"recipient refused: {exc.recipients}",
                                permanent=all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}",
                                permanent=exc.smtp_code >= 500
                                and not isinstance(exc, smtplib.SMTPAuthenticationError)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc

    def _send_sync(self, message: Message) -> None:
        c = self.config
        mail = EmailMessage()
        mail["From"] = c.sender
        mail["To"] = message.address
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain="dcim")
        if message.alarm_id:
            mail["X-DCIM-Alarm"] = message.alarm_id
        mail.set_content(message.text)
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout_s) as smtp:
            if c.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if c.username is not None:
                smtp.login(c.username, self._password or "")
            smtp.send_message(mail)


class LogSender:
    """Writes one structured log line per message."""

    def __init__(self, name: str, config: LogChannelConfig):
        self.name = name
        self.level = logging.getLevelName(config.level.upper())

    async def send(self, message: Message) -> None:
        """Log the message."""
        log.log(self.level, message.subject, extra={
            "channel": self.name, "kind": message.kind, "recipient": message.recipient,
            "alarm_id": message.alarm_id, "priority": message.priority})


def make_sender(name: str, config: WebhookChannelConfig | EmailChannelConfig | LogChannelConfig,
                session: Callable[[], aiohttp.ClientSession]) -> Sender:
    """The sender for one configured channel (secrets are read here: a missing one raises)."""
    if isinstance(config, WebhookChannelConfig):
        return WebhookSender(name, config, session)
    if isinstance(config, EmailChannelConfig):
        return EmailSender(name, config)
    return LogSender(name, config)


@dataclass
class _ChannelState:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False


class Delivery:
    """One worker per channel draining the outbox in order, with backoff between attempts."""

    def __init__(self, outbox: Outbox, senders: dict[str, Sender], config: DeliveryConfig,
                 clock: Callable[[], float], rand: Callable[[], float] = random.random):
        self.outbox = outbox
        self.senders = senders
        self.config = config
        self.clock = clock
        self.rand = rand
        self.channels = {name: _ChannelState() for name in senders}
        self.stopping = False  # workers end after the attempt in hand (no duplicate on restart)

    def now_ns(self) -> int:
        """The clock in integer nanoseconds."""
        return int(self.clock() * 1e9)

    def fail_unknown(self) -> int:
        """Mark failed (at ERROR) the pending messages of channels no longer configured."""
        failed = 0
        for channel in self.outbox.pending_channels():
            if channel in self.senders:
                continue
            while (row := self.outbox.head(channel)) is not None:
                self._give_up(row, "channel no longer configured")
                failed += 1
        return failed

    def wake(self, channels: set[str]) -> None:
        """Tell the workers of these channels that there are new messages."""
        for name in channels:
            if name in self.channels:
                self.channels[name].wake.set()

    async def run_channel(self, name: str) -> None:
        """Deliver the channel's messages, oldest first, until cancelled."""
        state = self.channels[name]
        sender = self.senders[name]
        while not self.stopping:
            state.wake.clear()
            try:
                row = self.outbox.head(name)
                now_ns = self.now_ns()
                if row is None:
                    await self._wait(state, self.config.poll_s)
                elif now_ns - row.created_ns >= self.config.max_age_s * 1e9:
                    self._give_up(row, f"undelivered after {self.config.max_age_s:g} s")
                elif row.next_try_ns > now_ns:
                    await self._wait(state, min((row.next_try_ns - now_ns) / 1e9, self.config.poll_s))
                else:
                    await self._attempt(name, state, sender, row)
            except sqlite3.Error as exc:  # disk full, locked: keep the worker, try again later
                log.error("notification outbox error", extra={"channel": name, "error": str(exc)})
                await self._wait(state, self.config.poll_s)

    async def _attempt(self, name: str, state: _ChannelState, sender: Sender, row: OutboxRow) -> None:
        try:
            await sender.send(row.message)
        except DeliveryError as exc:
            self._failed_attempt(name, state, row, exc)
            return
        except Exception as exc:  # a bug with this message: record it, keep the channel going
            log.exception("notification sender error", extra={"channel": name})
            self._give_up(row, f"{type(exc).__name__}: {exc}")
            return
        self.outbox.delivered(row.id, self.now_ns())
        if state.failing:
            state.failing = False
            log.info("notification channel recovered", extra={"channel": name})
        log.debug("notification delivered", extra={
            "channel": name, "kind": row.message.kind, "alarm_id": row.message.alarm_id,
            "recipient": row.message.recipient, "attempts": row.attempts + 1})

    def _failed_attempt(self, name: str, state: _ChannelState, row: OutboxRow,
                        exc: DeliveryError) -> None:
        """Give up on a permanent error; otherwise schedule the retry (WARNING once per outage)."""
        if exc.permanent:
            self._give_up(row, str(exc))
            return
        delay = retry_delay_s(row.attempts + 1, self.config, self.rand)
        self.outbox.retry(row.id, self.now_ns() + int(delay * 1e9), str(exc))
        if not state.failing:
            state.failing = True
            log.warning("notification channel failing, retrying", extra={
                "channel": name, "error": str(exc), "retry_in_s": round(delay, 3)})
        else:
            log.debug("notification retry failed", extra={
                "channel": name, "error": str(exc), "attempts": row.attempts + 1})

    def _give_up(self, row: OutboxRow, reason: str) -> None:
        self.outbox.failed(row.id, self.now_ns(), reason)
        m = row.message
        log.error("notification failed, not delivered", extra={
            "channel": m.channel, "kind": m.kind, "alarm_id": m.alarm_id, "recipient": m.recipient,
            "address": m.address, "subject": m.subject, "attempts": row.attempts,
            "error": reason, "outbox_id": row.id})

    @staticmethod
    async def _wait(state: _ChannelState, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(max(timeout_s, 0.001)):
                await state.wake.wait()
        except TimeoutError:
            pass
