"""Notifier delivery against real servers on 127.0.0.1: SMTP (aiosmtpd), a webhook receiver
(aiohttp), outages, restarts and the outbox's give-up rule."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from dcim.alarms.types import Action, AlarmEvent, AlarmState, Priority
from dcim.config.notifications import NotificationsConfig
from dcim.notify.notifier import Notifier
from dcim.notify.channels import SIGNATURE_HEADER, Outbox

SECRET = "s3cret-for-tests"
FAST = {"first_backoff_s": 0.05, "max_backoff_s": 0.2, "poll_s": 0.05}


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers `status` (or waits for `gate`)."""

    status: int = 200
    url: str = ""
    requests: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.gate is not None:
            await self.gate.wait()
        self.requests.append((self.status, body, dict(request.headers)))
        return web.Response(status=self.status, text="ok" if self.status < 300 else "down")

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered with 2xx, decoded."""
        return [json.loads(body) for status, body, _ in self.requests if status < 300]


async def start_receiver(receiver: Receiver, port: int = 0) -> web.AppRunner:
    """Serve the receiver on 127.0.0.1 (port 0: any free port; receiver.url is set)."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    return runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running webhook receiver."""
    rec = Receiver()
    runner = await start_receiver(rec)
    try:
        yield rec
    finally:
        if rec.gate is not None:
            rec.gate.set()
        await runner.cleanup()


class MailSink:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[MailSink, int]]:
    """A real SMTP server (aiosmtpd's Controller, in its thread) on 127.0.0.1."""
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, controller.port
    finally:
        controller.stop()


def make_config(hook_url: str, smtp_port: int = 9, **delivery: Any) -> NotificationsConfig:
    """Alice is primary (pager webhook and email); critical and high also go to the log."""
    return NotificationsConfig.model_validate({
        "channels": {
            "pager": {"kind": "webhook", "url": hook_url, "secret_env": "TEST_DCIM_HOOK_SECRET",
                      "timeout_s": 5},
            "mail": {"kind": "email", "host": "127.0.0.1", "port": smtp_port,
                     "from": "dcim@example.com", "to": ["noc@example.com"], "timeout_s": 5},
            "ops-log": {"kind": "log"},
        },
        "people": [{"id": "alice", "name": "Alice Chan", "email": "alice@example.com",
                    "webhook": "pager"}],
        "person_email_channel": "mail",
        "rota": {"tiers": [["alice"]], "start": "2025-01-06"},
        "routes": [{"min_priority": "high", "tier": 0, "channels": ["ops-log"]},
                   {"min_priority": "low", "channels": ["mail"]}],
        "delivery": {**FAST, **delivery},
    })


def raised(alarm_id: str, priority: Priority = Priority.CRITICAL, **kw: Any) -> AlarmEvent:
    """A raise event now."""
    return AlarmEvent(time_ns=time.time_ns(), alarm_id=alarm_id, action=Action.RAISE,
                      state=AlarmState.UNACK, priority=priority, message=f"{alarm_id} tripped",
                      unit="UPS-1", **kw)


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until cond() holds (polling), or fail."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DCIM_HOOK_SECRET", SECRET)


@pytest.fixture
async def notifier_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Notifier]]:
    """Makes Notifiers on tmp_path/outbox.sqlite and closes them after the test."""
    made: list[Notifier] = []

    def make(config: NotificationsConfig) -> Notifier:
        n = Notifier(config, tmp_path / "outbox.sqlite")
        made.append(n)
        return n

    yield make
    for n in made:
        await n.close()


async def test_email_reaches_real_smtp_server(smtp: tuple[MailSink, int], receiver: Receiver,
                                              notifier_factory: Callable[..., Notifier]) -> None:
    sink, port = smtp
    notifier = notifier_factory(make_config(receiver.url, port))
    await notifier.start()
    assert notifier.submit([raised("temp:RM-A01", Priority.MEDIUM)]) == 1  # team list only
    await until(lambda: notifier.stats().delivered == 1)
    ((rcpt, msg),) = sink.messages
    assert rcpt == ["noc@example.com"] and msg["From"] == "dcim@example.com"
    assert msg["Subject"].startswith("[MEDIUM] ALARM: temp:RM-A01 tripped (UPS-1) at ")
    assert msg["X-DCIM-Alarm"] == "temp:RM-A01"
    assert "Alarm:    temp:RM-A01" in msg.get_content()
    assert receiver.requests == []


async def test_webhook_json_and_signature(smtp: tuple[MailSink, int], receiver: Receiver,
                                          notifier_factory: Callable[..., Notifier]) -> None:
    notifier = notifier_factory(make_config(receiver.url, smtp[1]))
    await notifier.start()
    assert notifier.submit([raised("device:UPS-1:on_battery")]) == 3  # pager, email, log
    await until(lambda: notifier.stats().delivered == 3)
    ((status, body, headers),) = receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    doc = json.loads(body)
    assert doc["alarm_id"] == "device:UPS-1:on_battery" and doc["priority"] == "critical"
    assert doc["recipient"] == {"id": "alice", "name": "Alice Chan"}
    assert doc["event"]["action"] == "raise" and doc["event"]["unit"] == "UPS-1"
    assert doc["time_local"].endswith("+08:00") and doc["state"] == "active_unacknowledged"
    assert [rcpt for rcpt, _ in smtp[0].messages] == [["alice@example.com"]]


async def test_unannounced_event_never_delivered(receiver: Receiver,
                                                 notifier_factory: Callable[..., Notifier]) -> None:
    notifier = notifier_factory(make_config(receiver.url))
    await notifier.start()
    assert notifier.submit([raised("x", shelved=True, announce=False)]) == 0
    notifier.tick(time.time_ns() + 10**13)  # far in the future: no escalation either
    await asyncio.sleep(0.1)
    assert notifier.outbox.rows() == [] and receiver.requests == []


async def test_outage_keeps_messages_then_delivers_in_order(
        receiver: Receiver, notifier_factory: Callable[..., Notifier]) -> None:
    receiver.status = 503
    cfg = NotificationsConfig.model_validate({
        "channels": {"pager": {"kind": "webhook", "url": receiver.url}},
        "people": [{"id": "alice", "name": "Alice Chan", "webhook": "pager"}],
        "rota": {"tiers": [["alice"]], "start": "2025-01-06"},
        "routes": [{"min_priority": "low", "tier": 0}], "delivery": FAST})
    notifier = notifier_factory(cfg)
    await notifier.start()
    ids = [f"alarm-{i}" for i in range(5)]
    for alarm_id in ids:
        notifier.submit([raised(alarm_id)])
    await until(lambda: len(receiver.requests) >= 3)
    stats = notifier.stats()
    assert stats.queued == 5 and stats.oldest_undelivered_age_s is not None
    assert all(json.loads(body)["alarm_id"] == "alarm-0" for _, body, _ in receiver.requests)
    receiver.status = 200
    await until(lambda: notifier.stats().queued == 0)
    assert [d["alarm_id"] for d in receiver.delivered()] == ids


async def test_restart_resumes_undelivered_exactly_once(
        tmp_path: Path, notifier_factory: Callable[..., Notifier]) -> None:
    port = free_port()  # nobody listening yet: connection refused
    cfg = make_config(f"http://127.0.0.1:{port}/hook")
    first = notifier_factory(cfg)
    await first.start()
    assert first.submit([raised("a1"), raised("a2")]) == 6
    # the log channel delivers, the email (port 9) and the webhook do not
    await until(lambda: first.stats().delivered == 2)
    await until(lambda: any(a > 0 for _, ch, _, a in first.outbox.rows("pending") if ch == "pager"))
    await first.close()
    rows = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert [(ch, st) for _, ch, st, _ in rows.rows() if ch == "pager"] == [("pager", "pending")] * 2
    finally:
        rows.close()
    receiver = Receiver()
    runner = await start_receiver(receiver, port)
    try:
        second = notifier_factory(cfg)
        await second.start()
        await until(lambda: len(receiver.requests) == 2)
        await asyncio.sleep(0.3)  # several poll periods: nothing is sent twice
        assert [d["alarm_id"] for d in receiver.delivered()] == ["a1", "a2"]
        assert second.stats().delivered == 4
    finally:
        await second.close()
        await runner.cleanup()


async def test_too_old_marked_failed_and_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                                notifier_factory: Callable[..., Notifier]) -> None:
    receiver.status = 503
    notifier = notifier_factory(make_config(receiver.url, max_age_s=0.3))
    await notifier.start()
    with caplog.at_level(logging.ERROR, logger="dcim.notify.channels"):
        notifier.submit([raised("old")])  # email to port 9 also fails
        await until(lambda: notifier.stats().failed == 2)
    assert notifier.stats().queued == 0 and len(receiver.requests) >= 2
    failed = [r for r in caplog.records if r.getMessage() == "notification failed, not delivered"]
    assert sorted(r.channel for r in failed) == ["mail", "pager"]  # type: ignore[attr-defined]
    assert all(r.alarm_id == "old" for r in failed)  # type: ignore[attr-defined]


async def test_client_error_is_permanent(receiver: Receiver,
                                         notifier_factory: Callable[..., Notifier]) -> None:
    receiver.status = 400
    notifier = notifier_factory(make_config(receiver.url))
    await notifier.start()
    notifier.submit([raised("bad")])
    await until(lambda: notifier.stats().failed >= 1)
    await asyncio.sleep(0.2)
    assert len(receiver.requests) == 1  # not retried


async def test_slow_channel_does_not_hold_up_others(
        smtp: tuple[MailSink, int], receiver: Receiver,
        notifier_factory: Callable[..., Notifier]) -> None:
    receiver.gate = asyncio.Event()  # the webhook receiver hangs until released
    notifier = notifier_factory(make_config(receiver.url, smtp[1]))
    await notifier.start()
    notifier.submit([raised("a1")])
    await until(lambda: len(smtp[0].messages) == 1 and notifier.stats().delivered == 2)
    assert receiver.requests == [] and notifier.stats().queued == 1
    receiver.gate.set()
    await until(lambda: notifier.stats().queued == 0)
    assert [d["alarm_id"] for d in receiver.delivered()] == ["a1"]


async def test_log_channel_and_stats(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                     notifier_factory: Callable[..., Notifier]) -> None:
    notifier = notifier_factory(make_config(receiver.url))
    with caplog.at_level(logging.INFO, logger="dcim.notify.channels"):
        await notifier.start()
        notifier.submit([raised("device:CRAH-2:fan")])
        await until(lambda: any(getattr(r, "channel", None) == "ops-log" for r in caplog.records))
    (rec,) = [r for r in caplog.records if getattr(r, "channel", None) == "ops-log"]
    assert rec.levelno == logging.WARNING and rec.getMessage().startswith("[CRITICAL] ALARM:")
    assert rec.alarm_id == "device:CRAH-2:fan"  # type: ignore[attr-defined]
    assert [p.id for p in notifier.who_is_on_call(datetime(2025, 2, 1, tzinfo=ZoneInfo("UTC")))] == ["alice"]


async def test_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TEST_DCIM_HOOK_SECRET")
    with pytest.raises(ValueError, match="TEST_DCIM_HOOK_SECRET is not set"):
        Notifier(make_config("http://127.0.0.1:9/hook"), tmp_path / "o.sqlite")


async def test_escalation_runs_on_its_own_and_ack_stops_it(
        receiver: Receiver, notifier_factory: Callable[..., Notifier]) -> None:
    cfg = NotificationsConfig.model_validate({
        "channels": {"pager": {"kind": "webhook", "url": receiver.url}},
        "people": [{"id": "alice", "name": "Alice Chan", "webhook": "pager"},
                   {"id": "bob", "name": "Bob Lee", "webhook": "pager"}],
        "rota": {"tiers": [["alice"], ["bob"]], "start": "2025-01-06"},
        "routes": [{"min_priority": "high", "tier": 0}],
        "escalate_after_s": 0.3, "tick_s": 0.02, "delivery": FAST})
    notifier = notifier_factory(cfg)
    await notifier.start()
    acked = raised("acked")
    notifier.submit([raised("ignored"), acked])
    notifier.submit([AlarmEvent(time_ns=time.time_ns(), alarm_id="acked", action=Action.ACK,
                                state=AlarmState.ACKED, priority=acked.priority,
                                message=acked.message, user="carol")])
    await until(lambda: len(receiver.delivered()) == 3)
    (escalation,) = [d for d in receiver.delivered() if d["kind"] == "escalation"]
    assert escalation["alarm_id"] == "ignored" and escalation["recipient"]["id"] == "bob"
    assert escalation["escalation"]["paged"][0]["name"] == "Alice Chan"
    assert escalation["escalation"]["unacked_for_s"] >= 0.3
    await asyncio.sleep(0.4)
    assert len(receiver.requests) == 3 and notifier.stats().escalating == 1
