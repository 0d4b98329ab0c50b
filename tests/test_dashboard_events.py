"""The dashboard app (dashboards/app.py) over a real LiveState: /api/state, the Server-Sent
Events stream, operator actions, trends, metrics and health.

Each test builds the app with `create_app` and serves it on a loopback port with aiohttp's
TestServer; the live state is fed with `live.add(...)` as the collectors feed it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import dcim.dashboards.app as dashboard_app
from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.service import AlarmService
from dcim.alarms.types import Condition, Priority
from dcim.config.alarms import AlarmsConfig
from dcim.config.storage import EmbeddedStorageConfig
from dcim.dashboards.app import FEED, DashboardSettings, create_app
from dcim.live.service import LiveState
from dcim.live.state import Collection
from dcim.site import Site, load_site
from dcim.storage.base import Quality, Sample, SeriesKey
from dcim.storage.embedded import EmbeddedStorage

ROOT = Path(__file__).resolve().parents[1]
PUSH_WITHIN_S = 1.0  # pushed, not polled (a page polled every 2 s); p99 is measured in bench/dashboard.py
TRIP = Condition(alarm_id="unit:UPS-A3:down", source="unit", priority=Priority.CRITICAL,
                 message="UPS-A3 is down: module trip", unit="UPS-A3", device="UPS-A3")
RISING = Condition(alarm_id="anomaly:rate:RM-H1-A01", source="anomaly", priority=Priority.LOW,
                   message="RM-H1-A01 inlet rising", unit="H1-A01", device="RM-H1-A01")


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(ROOT / "config" / "cyberport5.yaml")


def readings(live: LiveState, t_ns: int, inlet_c: float = 22.0) -> list[Sample]:
    """A good sample of every series the live state reads (inlets at inlet_c)."""
    out = []
    for key in live.plan.keys:
        value = inlet_c if "temp" in key.point else 0.0 if key.point == "unit_status" else 1.0
        out.append(Sample(key, t_ns, value, Quality.GOOD))
    return out


@pytest_asyncio.fixture
async def live(site: Site) -> AsyncIterator[LiveState]:
    state = LiveState(site, None, collection=lambda: Collection(devices=270, up=270))
    await state.start()
    state.add(readings(state, time.time_ns()))
    await state.version.wait_past(1, 5.0)  # the first snapshot built from values
    try:
        yield state
    finally:
        await state.close()


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


@dataclass
class Message:
    """One Server-Sent Events block: its fields and comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.fields["data"])  # type: ignore[no-any-return]


class Stream:
    """An open /api/events response, read one block at a time."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout_s: float = 2.0) -> Message:
        raw = await asyncio.wait_for(self.response.content.readuntil(b"\n\n", max_size=2**24),
                                     timeout_s)
        assert raw.endswith(b"\n\n"), f"the stream ended: {raw[-200:]!r}"
        message = Message()
        for line in raw.decode().splitlines():
            if line.startswith(":"):
                message.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(":")
                message.fields[name] = value.removeprefix(" ")
        return message

    async def next_doc(self, timeout_s: float = 2.0) -> Message:
        """The next block that carries a document (heartbeats and retry skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            message = await self.next(max(0.001, deadline - time.monotonic()))
            if "data" in message.fields:
                return message


async def open_stream(client: TestClient[web.Request, web.Application],
                      **headers: str) -> Stream:
    response = await client.get("/api/events", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    return Stream(response)


# ---------------------------------------------------------------- /api/state and the stream


async def test_state_and_the_first_event_are_the_same_document(live: LiveState) -> None:
    async with served(create_app(DashboardSettings(), live, None)) as client:
        stream = await open_stream(client)
        first = await stream.next()
        assert first.fields == {"retry": "2000"}  # how soon a browser reconnects
        message = await stream.next_doc()
        answer = await client.get("/api/state")
        assert answer.status == 200 and answer.content_type == "application/json"
        assert await answer.read() == message.fields["data"].encode()
        doc = message.doc
        assert message.fields["event"] == "state"
        assert doc["seq"] == live.current().seq and doc["collection"]["up"] == 270
        assert {r["band"] for r in doc["racks"]} == {"recommended"}
        # an unchanged document is not sent twice to a poller that has it
        again = await client.get("/api/state", headers={"If-None-Match": answer.headers["ETag"]})
        assert again.status == 304


async def test_a_new_snapshot_is_pushed_at_once(live: LiveState) -> None:
    async with served(create_app(DashboardSettings(), live, None)) as client:
        stream = await open_stream(client)
        before = (await stream.next_doc()).doc
        seen = live.version.value
        live.add(readings(live, time.time_ns(), inlet_c=28.0))
        await live.version.wait_past(seen, 2.0)  # built (at most every 0.2 s: LiveState's pace)
        started = time.monotonic()
        after = (await stream.next_doc(PUSH_WITHIN_S)).doc
        assert time.monotonic() - started < PUSH_WITHIN_S
        assert after["seq"] > before["seq"] == live.current().seq - 1
        assert {r["band"] for r in after["racks"]} == {"allowable_high"}


async def test_a_burst_of_snapshots_is_sent_as_at_most_five_a_second(live: LiveState) -> None:
    async with served(create_app(DashboardSettings(heartbeat_s=60.0), live, None)) as client:
        stream = await open_stream(client)
        await stream.next_doc()
        for _ in range(10):  # ten snapshots at once: one document, the newest
            live.rebuild()
        assert (await stream.next_doc()).doc["seq"] == live.current().seq
        with pytest.raises(TimeoutError):
            await stream.next_doc(0.3)
        received: list[int] = []

        async def read() -> None:
            while True:
                received.append((await stream.next_doc(5.0)).doc["seq"])

        reader = asyncio.create_task(read())
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # a snapshot every 20 ms for a second
            live.rebuild()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        assert 4 <= len(received) <= 7, received
        assert received == sorted(received) and received[-1] == live.current().seq


async def test_one_serialisation_serves_every_client(
        live: LiveState, monkeypatch: pytest.MonkeyPatch) -> None:
    renders: list[int] = []
    render = dashboard_app.state_document

    def counting(*args: Any, **kw: Any) -> dict[str, Any]:
        renders.append(1)
        return render(*args, **kw)

    monkeypatch.setattr(dashboard_app, "state_document", counting)
    app = create_app(DashboardSettings(), live, None)
    async with served(app) as client:
        streams = [await open_stream(client) for _ in range(20)]
        firsts = {(await s.next_doc()).fields["data"] for s in streams}
        polls = {await (await client.get("/api/state")).text() for _ in range(20)}
        assert len(firsts) == 1 and polls == firsts and len(renders) == 1
        live.rebuild()
        seconds = {(await s.next_doc()).fields["data"] for s in streams}
        polls = {await (await client.get("/api/state")).text() for _ in range(20)}
        assert len(seconds) == 1 and polls == seconds != firsts
        assert len(renders) == 2 == app[FEED].renders


async def test_an_idle_stream_gets_heartbeats_and_a_reconnect_is_not_resent(
        live: LiveState) -> None:
    async with served(create_app(DashboardSettings(heartbeat_s=0.05), live, None)) as client:
        stream = await open_stream(client)
        last = await stream.next_doc()
        heartbeat = await stream.next(1.0)
        assert heartbeat.comments == ["heartbeat"] and heartbeat.fields == {}
        # a browser reconnecting with the id it has gets no copy, only what is newer
        again = await open_stream(client, **{"Last-Event-ID": last.fields["id"]})
        assert (await again.next()).fields == {"retry": "2000"}
        assert (await again.next(1.0)).comments == ["heartbeat"]
        live.rebuild()
        assert (await again.next_doc()).doc["seq"] == live.current().seq


async def test_closing_the_app_ends_every_open_stream(live: LiveState) -> None:
    app = create_app(DashboardSettings(), live, None)
    server = TestServer(app)
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        responses = [await http.get(server.make_url("/api/events")) for _ in range(3)]
        for response in responses:
            await Stream(response).next_doc()
        assert app[FEED].streams == 3
        started = time.monotonic()
        await server.close()
        for response in responses:
            await asyncio.wait_for(response.content.read(), 2.0)  # to the end of the body
            assert response.content.at_eof()
        assert time.monotonic() - started < 2.0  # not the server's shutdown timeout
        assert app[FEED].streams == 0


async def test_a_client_that_goes_away_is_forgotten(live: LiveState) -> None:
    app = create_app(DashboardSettings(), live, None)
    async with served(app) as client:
        stream = await open_stream(client)
        await stream.next_doc()
        assert app[FEED].streams == 1
        stream.response.close()
        deadline = time.monotonic() + 2.0
        while app[FEED].streams:  # noticed at the next write
            live.rebuild()
            assert time.monotonic() < deadline, "the stream of a gone client stayed open"
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------- alarms


@pytest_asyncio.fixture
async def alarms(tmp_path: Path, site: Site, live: LiveState) -> AsyncIterator[AlarmService]:
    journal = AlarmJournal(tmp_path / "alarms.sqlite")
    engine = AlarmEngine(AlarmsConfig(), journal)
    engine.evaluate([TRIP, RISING], time.time_ns())
    try:
        yield AlarmService(site, engine, live)  # not started: conditions come from the test
    finally:
        journal.close()


async def post(client: TestClient[web.Request, web.Application], action: str,
               body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    response = await client.post(f"/api/alarms/{action}", data=json.dumps(body),
                                 headers={"Content-Type": content_type})
    return response.status, await response.json()


async def test_an_operator_action_is_pushed_to_every_stream(
        live: LiveState, alarms: AlarmService) -> None:
    async with served(create_app(DashboardSettings(), live, alarms)) as client:
        streams = [await open_stream(client) for _ in range(3)]
        for stream in streams:
            shown = {a["id"]: a for a in (await stream.next_doc()).doc["alarms"]}
            assert shown[TRIP.alarm_id]["state"] == "active_unacknowledged"
        started = time.monotonic()
        status, body = await post(client, "ack", {"alarm_id": TRIP.alarm_id, "user": "kwong"})
        assert status == 200 and body["state"] == "active_acknowledged"
        for stream in streams:
            shown = {a["id"]: a for a in (await stream.next_doc(PUSH_WITHIN_S)).doc["alarms"]}
            assert shown[TRIP.alarm_id]["acked_by"] == "kwong"
        assert time.monotonic() - started < 2 * PUSH_WITHIN_S
        history = await (await client.get(
            f"/api/alarms/history?hours=1&alarm_id={TRIP.alarm_id}")).json()
        assert [(e["action"], e["user"]) for e in history["events"]] == [("raise", "system"),
                                                                         ("ack", "kwong")]


@pytest.mark.parametrize(("action", "body", "content_type", "status", "error"), [
    ("ack", {"alarm_id": RISING.alarm_id, "user": "kwong"}, "text/plain", 415, "Content-Type"),
    ("ack", {"alarm_id": "unit:NOPE:down", "user": "kwong"}, "application/json", 409, "NOPE"),
    ("shelve", {"alarm_id": RISING.alarm_id, "user": "kwong", "reason": "x"},
     "application/json", 400, "minutes must be a number"),
    ("ack", ["not", "an", "object"], "application/json", 400, "JSON object"),
    ("ack", {"alarm_id": RISING.alarm_id, "user": "x" * 501}, "application/json", 400, "user"),
    ("delete", {"alarm_id": RISING.alarm_id, "user": "kwong"}, "application/json", 404,
     "action must be one of"),
], ids=["form-post-refused", "unknown-alarm", "shelve-without-minutes", "not-an-object",
        "name-too-long", "unknown-action"])
async def test_an_action_that_cannot_be_taken_says_why(
        live: LiveState, alarms: AlarmService, action: str, body: Any, content_type: str,
        status: int, error: str) -> None:
    async with served(create_app(DashboardSettings(), live, alarms)) as client:
        got_status, got = await post(client, action, body, content_type)
        assert got_status == status and error in got["error"]


async def test_without_alarms_the_actions_and_journal_answer_503(live: LiveState) -> None:
    async with served(create_app(DashboardSettings(), live, None)) as client:
        status, body = await post(client, "ack", {"alarm_id": TRIP.alarm_id, "user": "kwong"})
        assert status == 503 and "not running" in body["error"]
        assert (await client.get("/api/alarms/history")).status == 503
        doc = await (await client.get("/api/state")).json()
        assert doc["alarms"] == [] and doc["alarm_counts"]["shown"] == 0


# ---------------------------------------------------------------- trend, metrics, health


async def test_trend_reads_the_stored_analytics_series(tmp_path: Path, site: Site,
                                                       live: LiveState) -> None:
    now_s = 1_764_000_000.0
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "store.sqlite")),
                              site_id=site.id)
    await storage.start()
    try:
        key = SeriesKey("analytics", site.id, "pue_live")
        # one value a minute for the last hour: 1.30 in even minutes, 1.40 in odd ones
        await storage.write([Sample(key, int((now_s - 60 * i) * 1e9), 1.3 + 0.1 * (i % 2),
                                    Quality.GOOD) for i in range(60)])
        app = create_app(DashboardSettings(), live, None, trend=storage.read_aggregate,
                         clock=lambda: now_s)
        async with served(app) as client:
            trend = await (await client.get("/api/trend?point=pue_live&hours=1")).json()
            assert trend["point"] == "pue_live" and trend["every_s"] == 60.0
            values = [v for _, v in trend["points"] if v is not None]
            assert len(values) == 60 and {round(v, 9) for v in values} == {1.3, 1.4}
            assert trend["points"][-1][0] <= now_s * 1000 < trend["points"][-1][0] + 60_000
            for query, error in (("point=pue_live&hours=0", "hours must be in"),
                                 ("point=secret&hours=1", "point must be one of"),
                                 ("hours=soon", "hours must be a number")):
                answer = await client.get(f"/api/trend?{query}")
                assert answer.status == 400 and error in (await answer.json())["error"]
    finally:
        await storage.close()
    async with served(create_app(DashboardSettings(), live, None)) as client:
        assert (await client.get("/api/trend?point=pue_live&hours=1")).status == 503


@pytest.mark.parametrize(("collection", "status"), [
    (Collection(devices=270, up=270), 200),
    (Collection(devices=270, up=270, buffered=5, storage_outage_s=42.0,
                storage_error="database is locked"), 503),
], ids=["storing", "storage-outage"])
async def test_health_follows_the_live_state_unless_told(site: Site, collection: Collection,
                                                         status: int) -> None:
    live = LiveState(site, None, collection=lambda: collection)
    await live.start()
    try:
        async with served(create_app(DashboardSettings(), live, None)) as client:
            answer = await client.get("/healthz")
            body = await answer.json()
            assert answer.status == status and body["ok"] is (status == 200)
            assert (body["devices"], body["buffered"]) == (270, collection.buffered)
            doc = await (await client.get("/api/state")).json()
            assert doc["collection"]["storage_error"] == (collection.storage_error or None)
            assert {r["quality"] for r in doc["racks"]} == {"missing"}  # nothing collected
        told: Callable[[], tuple[bool, dict[str, Any]]] = lambda: (True, {"why": "told"})
        async with served(create_app(DashboardSettings(), live, None, health=told)) as client:
            answer = await client.get("/healthz")
            assert answer.status == 200 and await answer.json() == {"ok": True, "why": "told"}
    finally:
        await live.close()


async def test_metrics_index_and_static_files(live: LiveState) -> None:
    text = "# TYPE dcim_device_up gauge\ndcim_device_up{device=\"UPS-A1\"} 1\n"
    async with served(create_app(DashboardSettings(), live, None,
                                 metrics=lambda: text)) as client:
        answer = await client.get("/metrics")
        assert answer.status == 200 and await answer.text() == text
        assert answer.headers["Content-Type"].startswith("text/plain")
        index = await client.get("/")
        assert index.status == 200 and "/static/app.js" in await index.text()
        script = await client.get("/static/app.js")
        assert script.status == 200 and "EventSource" in await script.text()
    async with served(create_app(DashboardSettings(), live, None)) as client:
        assert (await client.get("/metrics")).status == 503
