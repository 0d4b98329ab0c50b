"""Alarms in Prometheus Alertmanager: the pure post planner, and the real alarm service posting to
Debian's prometheus-alertmanager started here on loopback, with a webhook receiver in the test
that sees what Alertmanager itself notifies."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import ValidationError

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.service import AlarmService
from dcim.alarms.types import Alarm, AlarmState, Priority
from dcim.config.alarms import AlarmsConfig
from dcim.config.notifications import AlertmanagerConfig, DeliveryConfig, NotificationsConfig
from dcim.live.build import build_state, plan
from dcim.live.source import Version
from dcim.live.state import SiteState
from dcim.notify.alertmanager import Alert, AlertmanagerClient, plan_post, rfc3339
from dcim.site import load_site
from tests.conftest import require_program
from tests.influxd import free_port

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
PLAN = plan(SITE)
NS = 1_000_000_000
RESOLVE_TIMEOUT_S = 3  # the tests' resend interval stays below it, as the docs ask
TRIP = "unit:UPS-A1:down"

AM_CONFIG = """\
global:
  resolve_timeout: {resolve}s
route:
  receiver: hook
  group_by: [alarm_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{hook_port}/hook
        send_resolved: true
"""


# ---------------------------------------------------------------- the pure planner


def alarm(state: AlarmState = AlarmState.UNACK, **kw: Any) -> Alarm:
    base: dict[str, Any] = {"id": TRIP, "source": "unit", "priority": Priority.HIGH,
                            "message": "ups_module UPS-A1 tripped", "unit": "UPS-A1",
                            "state": state, "active_since_ns": 1_000 * NS, "last_change_ns": 1_000 * NS}
    return Alarm(**{**base, **kw})


CONFIG = AlertmanagerConfig(labels={"env": "test"})
NOW = 2_000 * NS


def test_a_firing_alarm_is_one_alert_with_its_labels() -> None:
    alerts, firing = plan_post([alarm()], {}, "hk1", CONFIG, NOW)
    (alert,) = alerts
    assert alert.labels == {"alertname": "dcim_unit", "site": "hk1", "unit": "UPS-A1",
                            "priority": "high", "alarm_id": TRIP, "source": "unit", "env": "test"}
    assert alert.json() == {"labels": alert.labels, "startsAt": "1970-01-01T00:16:40.000Z",
                            "annotations": {"summary": "ups_module UPS-A1 tripped",
                                            "state": "active, unacknowledged",
                                            "acknowledged": "false"}}
    assert set(firing) == {TRIP}


SHELVED: dict[str, Any] = {"shelved_until_ns": 5_000 * NS, "shelved_by": "kwong", "shelve_reason": "works"}


@pytest.mark.parametrize(("now", "posted", "still_firing", "state_note"), [
    (alarm(AlarmState.ACKED, acked_by="kwong", acked_ns=1_500 * NS), "firing", True,
     "active, acknowledged"),
    (alarm(AlarmState.RTN_UNACK), "resolved", False, "returned to normal, unacknowledged"),
    (None, "resolved", False, "normal"),
    (alarm(**SHELVED), "resolved", False, "active, unacknowledged, shelved by kwong: works"),
    (alarm(out_of_service_by="kwong"), "resolved", False,
     "active, unacknowledged, out of service (kwong)"),
    (alarm(priority=Priority.LOW), "resolved", False,
     "active, unacknowledged; priority now low"),
], ids=["acknowledged-stays-firing", "returned-to-normal", "gone", "shelved", "out-of-service",
        "priority-below-min"])
def test_what_an_alert_that_was_firing_becomes(now: Alarm | None, posted: str,
                                               still_firing: bool, state_note: str) -> None:
    config = AlertmanagerConfig(min_priority=Priority.MEDIUM)
    _, before = plan_post([alarm()], {}, "hk1", config, NOW)
    alerts, firing = plan_post([now] if now else [], before, "hk1", config, NOW + NS)
    old = [a for a in alerts if a.labels["priority"] == "high"]
    assert len(old) == 1 and (old[0].ends_ns is None) is (posted == "firing")
    assert old[0].labels == before[TRIP].labels  # same identity: Alertmanager updates that alert
    assert old[0].annotations["state"] == state_note
    assert (TRIP in firing) is still_firing
    if posted == "resolved":
        assert old[0].json()["endsAt"] == rfc3339(NOW + NS)


def test_acknowledgement_is_an_annotation_not_a_label() -> None:
    acked = alarm(AlarmState.ACKED, acked_by="kwong", acked_ns=1_500 * NS)
    (alert,), _ = plan_post([acked], {}, "hk1", CONFIG, NOW)
    assert "acknowledged" not in alert.labels
    assert alert.annotations["acknowledged"] == "true"
    assert alert.annotations["acknowledged_by"] == "kwong"
    assert alert.annotations["acknowledged_at"] == rfc3339(1_500 * NS)


def test_a_priority_change_resolves_the_old_labels_and_fires_the_new() -> None:
    _, before = plan_post([alarm()], {}, "hk1", CONFIG, NOW)
    alerts, firing = plan_post([alarm(priority=Priority.CRITICAL)], before, "hk1", CONFIG, NOW)
    assert [(a.labels["priority"], a.ends_ns) for a in alerts] == [("high", NOW),
                                                                  ("critical", None)]
    assert firing[TRIP].labels["priority"] == "critical"


def test_a_shelved_alarm_never_announced_is_not_posted() -> None:
    alerts, firing = plan_post([alarm(**SHELVED)], {}, "hk1", CONFIG, NOW)
    assert alerts == [] and firing == {}


@pytest.mark.parametrize(("section", "error"), [
    ({"labels": {"site": "x"}}, "label 'site' is set by dcim itself"),
    ({"labels": {"9lives": "x"}}, "label '9lives': a name is letters"),
    ({"url": "alertmanager:9093"}, "String should match pattern"),
    ({"resend_interval_s": 0}, "greater than 0"),
], ids=["reserved-label", "bad-label-name", "url-without-scheme", "resend-zero"])
def test_config_errors_name_the_field(section: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        NotificationsConfig.model_validate({"alertmanager": section})
    assert error in str(info.value) and "alertmanager." in str(info.value)


# ---------------------------------------------------------------- the real Alertmanager


@dataclass
class Receiver:
    """What Alertmanager sent to its webhook receiver (one payload per notification)."""

    payloads: list[dict[str, Any]] = field(default_factory=list)

    def statuses(self, alarm_id: str) -> list[str]:
        """Status of each notification about one alarm, in order."""
        return [a["status"] for p in self.payloads for a in p["alerts"]
                if a["labels"].get("alarm_id") == alarm_id]


@dataclass
class AlertmanagerServer:
    """One prometheus-alertmanager on loopback with its webhook receiver."""

    url: str
    port: int
    hook: Receiver
    start: Callable[[], None]

    async def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts it holds as active."""
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/api/v2/alerts") as r:
            assert r.status == 200
            body: list[dict[str, Any]] = await r.json()
            return body


async def until(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    """Poll an async or plain check until it returns something true."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        got = await got if asyncio.iscoroutine(got) else got
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[AlertmanagerServer]:
    """The server, configured but started by calling .start() (so a test can start it late)."""
    binary = require_program("prometheus-alertmanager",
                             "apt-get install -y prometheus-alertmanager")
    hook = Receiver()

    async def receive(request: web.Request) -> web.Response:
        hook.payloads.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    (tmp_path / "am.yml").write_text(AM_CONFIG.format(resolve=RESOLVE_TIMEOUT_S,
                                                      hook_port=runner.addresses[0][1]))
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "am.log").open("wb")

    def start() -> None:
        procs.append(subprocess.Popen(
            [binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT))

    server = AlertmanagerServer(f"http://127.0.0.1:{port}", port, hook, start)
    try:
        yield server
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
        await runner.cleanup()


async def ready(server: AlertmanagerServer) -> None:
    """Start the server and wait for /-/ready."""
    server.start()

    async def answers() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{server.url}/-/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    await until(answers, what="alertmanager to start")


class Live:
    """A state source holding one snapshot (the alarm service's only input)."""

    def __init__(self) -> None:
        self.version = Version()
        self.snapshot = snapshot(())

    def current(self) -> SiteState:
        return self.snapshot


def snapshot(down: tuple[str, ...]) -> SiteState:
    """The reference site with the given units down."""
    state = build_state(PLAN, {}, {}, seq=1, now_ns=time.time_ns())
    return replace(state, units={uid: replace(u, state="down", why="test") if uid in down else u
                                 for uid, u in state.units.items()})


def alarm_service() -> AlarmService:
    """The real alarm service and engine, with no delays (so one evaluation raises)."""
    delays = {s: {"on_delay_s": 0, "off_delay_s": 0}
              for s in ("device", "unit", "redundancy", "storage", "anomaly")}
    engine = AlarmEngine(AlarmsConfig.model_validate({"delays": delays}))
    return AlarmService(SITE, engine, Live())


def client(server: AlertmanagerServer, service: AlarmService, **config: Any) -> AlertmanagerClient:
    am = AlertmanagerConfig.model_validate({"url": server.url, "labels": {"env": "test"},
                                            **config})
    return AlertmanagerClient(am, service, SITE.id,
                              delivery=DeliveryConfig(first_backoff_s=0.2, max_backoff_s=1))


def ours(alerts: list[dict[str, Any]], alarm_id: str = TRIP) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("alarm_id") == alarm_id]


async def test_an_alarm_fires_is_acknowledged_and_resolves_in_alertmanager(
        alertmanager: AlertmanagerServer) -> None:
    await ready(alertmanager)
    service = alarm_service()
    am = client(alertmanager, service, resend_interval_s=1)
    await am.start()
    try:
        service.evaluate(snapshot(("UPS-A1",)))
        (alert,) = await until(lambda: ours_async(alertmanager), what="the trip in Alertmanager")
        assert alert["labels"] == {"alertname": "dcim_unit", "site": SITE.id, "unit": "UPS-A1",
                                   "priority": "high", "alarm_id": TRIP, "source": "unit",
                                   "env": "test"}
        assert alert["status"]["state"] == "active"
        assert alert["annotations"]["summary"] == "ups_module UPS-A1 tripped (test)"
        await until(lambda: alertmanager.hook.statuses(TRIP) == ["firing"],
                    what="Alertmanager's webhook notification")
        service.acknowledge(TRIP, "kwong")
        acked = await until(lambda: acked_alert(alertmanager), what="the acknowledgement")
        assert acked["fingerprint"] == alert["fingerprint"]  # the same alert, not a new one
        assert acked["annotations"]["acknowledged_by"] == "kwong"
        service.evaluate(snapshot(()))  # the UPS module is back; a trip is latched
        latched = await until(lambda: latched_alert(alertmanager), what="the latched trip")
        assert latched["fingerprint"] == alert["fingerprint"]
        service.reset(TRIP, "kwong")  # reset: the alarm returns to normal
        await until(lambda: alertmanager.hook.statuses(TRIP)[-1:] == ["resolved"],
                    what="the resolved notification")
        assert ours(await alertmanager.alerts()) == []
        # the webhook can hear of it before our post has its answer
        await until(lambda: am.stats().firing == 0, what="the post's answer")
        assert am.stats().failures == 0 and am.stats().posts >= 4  # raise, ack, clear, reset
    finally:
        await am.close()


async def ours_async(server: AlertmanagerServer) -> list[dict[str, Any]]:
    return ours(await server.alerts())


async def latched_alert(server: AlertmanagerServer) -> dict[str, Any] | None:
    found = ours(await server.alerts())
    return found[0] if found and "latched until reset" in found[0]["annotations"]["state"] \
        else None


async def acked_alert(server: AlertmanagerServer) -> dict[str, Any] | None:
    found = ours(await server.alerts())
    return found[0] if found and found[0]["annotations"]["acknowledged"] == "true" else None


async def test_the_resend_keeps_a_live_alarm_past_resolve_timeout(
        alertmanager: AlertmanagerServer) -> None:
    """An alert posted once by hand resolves after resolve_timeout; the alarm, resent, stays."""
    await ready(alertmanager)
    service = alarm_service()
    am = client(alertmanager, service, resend_interval_s=0.5)
    await am.start()
    try:
        service.evaluate(snapshot(("UPS-A1",)))
        control = Alert({"alertname": "posted_once", "alarm_id": "control"}, {},
                        time.time_ns()).json()
        async with aiohttp.ClientSession() as s, \
                s.post(f"{alertmanager.url}/api/v2/alerts", json=[control]) as r:
            assert r.status == 200
        await until(lambda: ours_async(alertmanager), what="the trip in Alertmanager")
        assert ours(await alertmanager.alerts(), "control")
        await asyncio.sleep(RESOLVE_TIMEOUT_S + 1.5)  # Alertmanager's own clock: not movable
        alerts = await alertmanager.alerts()
        assert ours(alerts, "control") == []
        assert len(ours(alerts)) == 1 and "resolved" not in alertmanager.hook.statuses(TRIP)
        assert am.posts >= 1 + RESOLVE_TIMEOUT_S  # resent every 0.5 s (loosely)
    finally:
        await am.close()


async def test_a_shelved_alarm_is_resolved_and_fires_again_when_unshelved(
        alertmanager: AlertmanagerServer) -> None:
    await ready(alertmanager)
    service = alarm_service()
    am = client(alertmanager, service, resend_interval_s=1)
    await am.start()
    try:
        service.evaluate(snapshot(("UPS-A1",)))
        (first,) = await until(lambda: ours_async(alertmanager), what="the trip")
        service.shelve(TRIP, "kwong", 600, "replacing the module")
        await until(lambda: alertmanager.hook.statuses(TRIP)[-1:] == ["resolved"],
                    what="the shelved alarm resolved")
        assert ours(await alertmanager.alerts()) == []
        service.unshelve(TRIP, "kwong")
        (again,) = await until(lambda: ours_async(alertmanager), what="the unshelved alarm")
        assert again["startsAt"] == first["startsAt"]  # the same activation
    finally:
        await am.close()


async def test_posts_are_retried_until_alertmanager_answers(
        alertmanager: AlertmanagerServer) -> None:
    """Raised while Alertmanager is not running: the alarm service goes on, the post is retried
    with backoff and arrives once the server is up."""
    service = alarm_service()
    am = client(alertmanager, service, resend_interval_s=1)
    await am.start()
    try:
        events = service.evaluate(snapshot(("UPS-A1",)))
        assert [e.alarm_id for e in events] == [TRIP]  # alarming never waits on Alertmanager
        await until(lambda: am.failures >= 2, what="failed attempts")
        assert "Cannot connect" in am.last_error or "Connect" in am.last_error
        await ready(alertmanager)
        (alert,) = await until(lambda: ours_async(alertmanager), timeout_s=10,
                               what="the retried post")
        assert alert["labels"]["priority"] == "high" and am.last_error == ""
    finally:
        await am.close()


async def test_retries_back_off_but_never_wait_longer_than_the_resend_interval() -> None:
    """Backoff from the notifier's delivery policy (0.5 s doubling to 60 s), capped at the
    2 s resend interval that keeps live alarms alive in Alertmanager."""
    service = alarm_service()
    service.evaluate(snapshot(("UPS-A1",)))
    waits: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay_s: float) -> None:  # time moved, not slept
        waits.append(delay_s)
        if len(waits) == 6:
            enough.set()
        await asyncio.sleep(0)

    am = AlertmanagerClient(
        AlertmanagerConfig(url=f"http://127.0.0.1:{free_port()}", resend_interval_s=2),
        service, SITE.id, delivery=DeliveryConfig(first_backoff_s=0.5, max_backoff_s=60,
                                                  jitter=0), sleep=sleep)
    await am.start()
    try:
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        await am.close()
    assert waits[:6] == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert am.failures >= 6 and am.stats().firing == 0


# ---------------------------------------------------------------- wired in the running system

SYSTEM_CONFIG = """
alarms:
  evaluate_interval_s: 0.5
  delays:
    unit: {{on_delay_s: 0, off_delay_s: 1}}
notifications:
  alertmanager: {{url: "{url}", resend_interval_s: 1, labels: {{env: test}}}}
"""


@pytest.mark.slow
async def test_the_running_system_posts_a_simulated_ups_trip(
        alertmanager: AlertmanagerServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dcim.simulators.faults import FaultSpec
    from dcim.site.loader import parse_site
    from dcim.system import System, SystemOptions

    await ready(alertmanager)
    path = ROOT / "config" / "cyberport5.yaml"
    site = parse_site(path.read_text() + SYSTEM_CONFIG.format(url=alertmanager.url), str(path))
    monkeypatch.chdir(tmp_path)
    system = System(site, SystemOptions(
        buffer_dir=str(tmp_path / "buffer"), analytics_interval_s=60.0,
        alarm_journal=str(tmp_path / "alarms.sqlite"),
        notify_outbox=str(tmp_path / "outbox.sqlite")))
    trip = "unit:UPS-A3:down"
    await system.start()
    try:
        assert system.simulator is not None and system.alarms is not None
        fault = system.simulator.inject(FaultSpec(kind="ups_module_trip", target="UPS-A3"))
        (alert,) = await until(lambda: ours_async_id(alertmanager, trip), timeout_s=30,
                               what="the simulated trip in Alertmanager")
        assert alert["labels"]["site"] == site.id and alert["labels"]["unit"] == "UPS-A3"
        assert alert["labels"]["priority"] == "high" and alert["labels"]["env"] == "test"
        assert 'dcim_alertmanager_alerts_firing ' in system.metrics_text()
        system.simulator.clear(fault.id)
        await until(lambda: not system.alarms.engine.alarms[trip].condition,  # type: ignore
                    timeout_s=30, what="the trip's condition to go")
        system.alarms.reset(trip, "lee", "module restarted")
        await until(lambda: alertmanager.hook.statuses(trip)[-1:] == ["resolved"],
                    what="the reset trip resolved")
        assert ours(await alertmanager.alerts(), trip) == []
    finally:
        await system.stop()


async def ours_async_id(server: AlertmanagerServer, alarm_id: str) -> list[dict[str, Any]]:
    return ours(await server.alerts(), alarm_id)
