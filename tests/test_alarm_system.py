"""Alarms over the whole running system: simulated faults -> collectors -> store -> analytics ->
alarm engine -> journal, with operator actions through the dashboard's HTTP API."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from dcim.alarms.types import Action, AlarmState
from dcim.simulators.faults import FaultSpec
from dcim.site.loader import parse_site
from dcim.system import System, SystemOptions

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.asyncio(loop_scope="module")

# short delays so the test sees a whole lifecycle in seconds (the defaults are 30-300 s)
ALARMS = """
alarms:
  evaluate_interval_s: 0.5
  delays:
    device: {on_delay_s: 2, off_delay_s: 2}
    unit: {on_delay_s: 0, off_delay_s: 1}
    redundancy: {on_delay_s: 0, off_delay_s: 1}
    storage: {on_delay_s: 0, off_delay_s: 1}
    anomaly: {on_delay_s: 0, off_delay_s: 5}
"""


# the on-call pager: a webhook receiver on loopback, started before the system
NOTIFICATIONS = """
notifications:
  channels:
    pager: {{kind: webhook, url: "http://127.0.0.1:{port}/page", timeout_s: 5}}
  people:
    - {{id: kwong, name: Kwong On-call, webhook: pager}}
  rota: {{tiers: [[kwong]], start: 2026-01-05}}
  routes:
    - {{min_priority: low, tier: 0}}
  delivery: {{first_backoff_s: 0.2, max_backoff_s: 1, poll_s: 0.2}}
"""
PAGES: list[dict[str, Any]] = []


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    async def page(request: web.Request) -> web.Response:
        PAGES.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    path = ROOT / "config" / "cyberport5.yaml"
    site = parse_site(path.read_text() + ALARMS + NOTIFICATIONS.format(port=port), str(path))
    work = tmp_path_factory.mktemp("alarms")
    cwd = os.getcwd()
    os.chdir(work)
    sys_ = System(site, SystemOptions(buffer_dir=str(work / "buffer"), analytics_interval_s=3.0,
                                      dashboard_port=0,
                                      alarm_journal=str(work / "alarms.sqlite"),
                                      notify_outbox=str(work / "outbox.sqlite")))
    try:
        await sys_.start()
        yield sys_
    finally:
        await sys_.stop()
        await runner.cleanup()
        os.chdir(cwd)


_ALARMS_SEEN: dict[str, Any] = {}


async def until(check: Callable[[], Any], timeout_s: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"condition not met in time: {_ALARMS_SEEN}"
        await asyncio.sleep(0.25)


async def post(system: System, action: str, body: Any,
               content_type: str = "application/json") -> tuple[int, Any]:
    import json

    url = f"{system.dashboard.url}api/alarms/{action}"
    async with aiohttp.ClientSession() as http, http.post(
            url, data=json.dumps(body), headers={"Content-Type": content_type}) as r:
        return r.status, await r.json()


def alarm(system: System, alarm_id: str) -> Any:
    assert system.alarms is not None
    _ALARMS_SEEN.clear()
    _ALARMS_SEEN.update({k: (a.state.value, a.condition)
                         for k, a in system.alarms.engine.alarms.items()})
    return system.alarms.engine.alarms.get(alarm_id)


def journal(system: System, alarm_id: str) -> list[tuple[Action, str]]:
    assert system.alarms is not None and system.alarms.engine.journal is not None
    return [(e.action, e.user) for e in system.alarms.engine.journal.events(alarm_id=alarm_id)]


async def test_a_silent_device_alarms_is_acknowledged_and_clears(system: System) -> None:
    assert system.simulator is not None
    comm = "device:PDU-A-H1-2:comm"
    fault = system.simulator.inject(FaultSpec(kind="timeout", target="PDU-A-H1-2"))
    try:
        raised = await until(lambda: (a := alarm(system, comm)) is not None
                             and a.state is AlarmState.UNACK and a)
        assert "not answering" in raised.message and raised.device == "PDU-A-H1-2"
        # the on-call engineer is paged through the webhook, once
        pages = await until(lambda: [p for p in PAGES if p["alarm_id"] == comm])
        assert pages[0]["recipient"]["name"] == "Kwong On-call"
        assert pages[0]["event"]["action"] == "raise" and "PDU-A-H1-2" in pages[0]["text"]
        status, body = await post(system, "ack", {"alarm_id": comm, "user": "kwong",
                                                  "comment": "gateway power cycled"})
        assert status == 200 and body["state"] == "active_acknowledged" and body["seq"] > 0
        assert alarm(system, comm).acked_by == "kwong"
        status, body = await post(system, "ack", {"alarm_id": comm, "user": "kwong"})
        assert status == 409 and "nothing to acknowledge" in body["error"]
        status, body = await post(system, "ack", {"alarm_id": comm, "user": "x"}, "text/plain")
        assert status == 415
        status, body = await post(system, "shelve", {"alarm_id": comm, "user": "kwong",
                                                     "reason": "r", "minutes": "many"})
        assert status == 400 and "minutes" in body["error"]
    finally:
        system.simulator.clear(fault.id)
    await until(lambda: alarm(system, comm) is None)  # cleared after the off-delay: normal
    assert len([p for p in PAGES if p["alarm_id"] == comm and p["event"]["action"] == "raise"]) == 1
    assert system.notifier is not None and system.notifier.stats().failed == 0
    assert journal(system, comm) == [(Action.RAISE, "system"), (Action.ACK, "kwong"),
                                     (Action.CLEAR, "system")]
    async with aiohttp.ClientSession() as http, http.get(
            f"{system.dashboard.url}api/alarms/history?hours=1&alarm_id={comm}") as r:
        events = (await r.json())["events"]
    assert [e["action"] for e in events] == ["raise", "ack", "clear"]
    assert events[1]["comment"] == "gateway power cycled"


async def test_a_tripped_ups_module_latches_and_lowers_redundancy(system: System) -> None:
    assert system.simulator is not None and system.alarms is not None
    # at the measured load (about 1,000 kW on UPS A: N = 3 of 5 modules) one trip leaves
    # N+1; a second leaves N, below the N+1 design
    trip, group = "unit:UPS-A3:down", "redundancy:ups-a-modules:below_design"
    faults = [system.simulator.inject(FaultSpec(kind="ups_module_trip", target=target))
              for target in ("UPS-A3", "UPS-A4")]
    try:
        await until(lambda: alarm(system, trip) is not None and alarm(system, group) is not None)
        assert alarm(system, trip).latched and "tripped" in alarm(system, trip).message
        assert "N (design N+1)" in alarm(system, group).message
        status, body = await post(system, "reset", {"alarm_id": trip, "user": "lee"})
        assert status == 409 and "still holds" in body["error"]
        # the dashboard lists both, the redundancy one with its priority
        async with aiohttp.ClientSession() as http, http.get(
                f"{system.dashboard.url}api/state") as r:
            state = await r.json()
        listed = {a["id"]: a for a in state["alarms"]}
        assert listed[group]["priority"] == "high" and listed[trip]["actions"][0] == "ack"
        # the status-word anomaly says the same as the trip alarm: kept, but not announced
        status = await until(lambda: alarm(system, "anomaly:status:UPS-A3"))
        assert status.suppressed_by == "reported by unit:UPS-A3:down"
    finally:
        for fault in faults:
            system.simulator.clear(fault.id)
    # the group recovers by itself; the trip stays until someone resets it
    await until(lambda: alarm(system, group) is None or alarm(system, group).state
                is AlarmState.RTN_UNACK)
    await until(lambda: not alarm(system, trip).condition)
    assert alarm(system, trip).state is AlarmState.UNACK
    status, body = await post(system, "reset", {"alarm_id": trip, "user": "lee",
                                                "comment": "module restarted, load shared"})
    assert status == 200 and body["state"] == "normal"
    assert alarm(system, trip) is None
    system.alarms.reset("unit:UPS-A4:down", "lee", "module restarted")
    assert system.alarms.engine.journal is not None
    assert system.alarms.engine.journal.verify().ok


async def test_a_fresh_start_raises_no_alarm_storm(system: System) -> None:
    # The store was empty at start: missing minutes before the history began once read as
    # sensor dropouts on every series, 200 alarms at once.
    assert system.alarms is not None and system.analytics.last is not None
    raised = [e for e in system.alarms.engine.journal.events()  # type: ignore[union-attr]
              if e.action is Action.RAISE and e.alarm_id.startswith("anomaly:sensor:")]
    assert raised == []


async def test_the_cli_lists_acknowledges_shelves_and_verifies(
        system: System, capsys: pytest.CaptureFixture[str]) -> None:
    from dcim.cli import main

    assert system.simulator is not None and system.alarms is not None
    comm = "device:PDU-B-H1-1:comm"
    journal_file = str(system.alarms.engine.journal.path)  # type: ignore[union-attr]
    site_file = str(ROOT / "config" / "cyberport5.yaml")
    url = system.dashboard.url

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    fault = system.simulator.inject(FaultSpec(kind="timeout", target="PDU-B-H1-1"))
    try:
        await until(lambda: alarm(system, comm) is not None
                    and alarm(system, comm).state is AlarmState.UNACK)
        code, out, _ = await asyncio.to_thread(cli, "alarms", "list", site_file,
                                               "--journal", journal_file)
        assert code == 0 and comm in out and "active_unacknowledged" in out
        code, out, _ = await asyncio.to_thread(cli, "alarms", "ack", comm, "--user", "chan",
                                               "--comment", "on my way", "--url", url)
        assert code == 0 and "ack -> active_acknowledged" in out
        code, _, err = await asyncio.to_thread(cli, "alarms", "shelve", comm, "--user", "chan",
                                               "--url", url)
        assert code == 2 and "needs --reason" in err
        code, out, _ = await asyncio.to_thread(cli, "alarms", "shelve", comm, "--user", "chan",
                                               "--reason", "gateway swap", "--minutes", "30",
                                               "--url", url)
        assert code == 0 and alarm(system, comm).shelved_by == "chan"
        code, _, err = await asyncio.to_thread(cli, "alarms", "shelve", comm, "--user", "chan",
                                               "--reason", "again", "--minutes", "9999",
                                               "--url", url)
        assert code == 1 and "refused (409)" in err and "shelve duration" in err
    finally:
        system.simulator.clear(fault.id)
    code, out, _ = await asyncio.to_thread(cli, "alarms", "history", site_file, "--journal",
                                           journal_file, "--alarm", comm)
    assert code == 0 and "by chan (on my way)" in out and "shelve" in out
    code, out, _ = await asyncio.to_thread(cli, "alarms", "verify", site_file, "--journal",
                                           journal_file)
    assert code == 0 and "chain intact" in out
    code, out, _ = await asyncio.to_thread(cli, "alarms", "kpi", site_file, "--journal",
                                           journal_file, "--days", "1")
    assert code == 0 and "annunciated alarms" in out and "Against ISA-18.2" in out
    code, _, err = await asyncio.to_thread(cli, "alarms", "ack", comm, "--user", "x", "--url",
                                           "http://127.0.0.1:9/")
    assert code == 1 and "is the system running?" in err


async def test_a_missing_notification_secret_stops_the_start_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCIM_TEST_NO_SUCH_SECRET", raising=False)
    path = ROOT / "config" / "cyberport5.yaml"
    broken = NOTIFICATIONS.format(port=9).replace(
        'timeout_s: 5}', 'timeout_s: 5, secret_env: DCIM_TEST_NO_SUCH_SECRET}')
    site = parse_site(path.read_text() + broken, str(path))
    system_ = System(site, SystemOptions(buffer_dir=str(tmp_path / "buffer")))
    with pytest.raises(ValueError, match="DCIM_TEST_NO_SUCH_SECRET"):
        await system_.start()
    assert system_.simulator is None and system_.collectors is None and system_.storage is None
