"""dcim/reports.py: availability from a real embedded store and alarm journal, known episodes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from dcim.analytics.availability import (DEGRADED, DOWN, UNKNOWN, UP, SystemAvailability,
                                         combined, summarize)
from dcim.config.alarms import AlarmsConfig
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import Condition, Priority
from dcim.alarms.engine import AlarmEngine
from dcim.reports import (AvailabilityReport, MaintenanceLogError, Section, build_availability,
                          load_planned, plot_timeline, render_csv, render_markdown,
                          report_json)
from dcim.site import load_site
from dcim.storage.base import Quality, Sample, SeriesKey
from dcim.config.storage import EmbeddedStorageConfig
from dcim.storage.embedded import EmbeddedStorage

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
S = 1_000_000_000
M = 60 * S
T0 = 1_796_083_200 * S  # 2026-12-01 00:00 UTC, 08:00 in Hong Kong
STEPS = 120  # two hours of one-minute samples


def minutes(a: int, b: int) -> range:
    return range(a, b)


def history() -> list[Sample]:
    """Two hours of every series the report reads, with known episodes:
    UPS-A3 trips 00:30-00:45 (unplanned); UPS-B2 trips 00:10-00:20 (inside a planned window);
    rack H1-A01 loses feed A 01:00-01:20 (degraded); rack H1-A02 loses both 01:10-01:15 (down);
    ups-a-modules at N (degraded) 00:30-00:45; no data at all for rack H2-J10."""
    out: list[Sample] = []

    def put(key: SeriesKey, fn: object) -> None:
        for m in range(STEPS):
            out.append(Sample(key, T0 + m * M, float(fn(m)), Quality.GOOD))  # type: ignore[operator]

    for device in SITE.devices.values():
        if any(p.name == "unit_status" for p in device.profile.points):
            trip = {"UPS-A3": minutes(30, 45), "UPS-B2": minutes(10, 20)}.get(device.id, range(0))
            put(device.series("unit_status"), lambda m, t=trip: 3.0 if m in t else 0.0)
        if device.device_type == "meter" and any(p.name == "power_kw"
                                                  for p in device.profile.points):
            put(device.series("power_kw"), lambda m: 1500.0)
    for rack in SITE.racks.values():
        if rack.id == "H2-J10":
            continue
        a_dead = minutes(60, 80) if rack.id == "H1-A01" else minutes(70, 75) \
            if rack.id == "H1-A02" else range(0)
        b_dead = minutes(70, 75) if rack.id == "H1-A02" else range(0)
        put(SeriesKey("rack_monitor", f"RM-{rack.id}", "feed_a_power_kw"),
            lambda m, d=a_dead: 0.0 if m in d else 2.5)
        put(SeriesKey("rack_monitor", f"RM-{rack.id}", "feed_b_power_kw"),
            lambda m, d=b_dead: 0.0 if m in d else 2.5)
    for group in SITE.config.redundancy_groups:
        put(SeriesKey("analytics", SITE.id, f"redundancy_{group.id}_needed"),
            lambda m, k=group.kind: 3.0 if k == "ups_module" else 1.0)
        put(SeriesKey("analytics", SITE.id, f"redundancy_{group.id}_available"),
            lambda m, g=group.id: 3.0 if g == "ups-a-modules" and m in minutes(30, 45) else 4.0)
    put(SeriesKey("analytics", SITE.id, "concurrently_maintainable"), lambda m: 1.0)
    return out


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "store.sqlite")),
                              site_id=SITE.id)
    await storage.start()
    await storage.write(history())
    yield storage
    await storage.close()


def journal(path: Path) -> AlarmJournal:
    """The alarm journal of the UPS-A3 trip: raised, acknowledged by kwong, reset by lee."""
    engine = AlarmEngine(AlarmsConfig(), AlarmJournal(path))
    trip = Condition("unit:UPS-A3:down", "unit", Priority.HIGH, "ups_module UPS-A3 tripped",
                     unit="UPS-A3")
    engine.evaluate([trip], T0 + 30 * M + 20 * S)
    engine.acknowledge(trip.alarm_id, "kwong", T0 + 33 * M, "on site")
    engine.evaluate([], T0 + 45 * M + 20 * S)
    engine.evaluate([], T0 + 47 * M)
    engine.reset(trip.alarm_id, "lee", T0 + 50 * M, "module restarted")
    return engine.journal  # type: ignore[return-value]


async def test_availability_of_known_episodes(store: EmbeddedStorage, tmp_path: Path) -> None:
    log = tmp_path / "maintenance.yaml"
    log.write_text("- {unit: UPS-B2, start: '2026-12-01T08:05', end: '2026-12-01T08:25', "
                   "reason: annual battery test, ticket: CHG-1042}\n")
    planned = load_planned(log, SITE)
    assert planned[0].start_ns == T0 + 5 * M  # site-local 08:05 is 00:05 UTC
    report = await build_availability(SITE, store, T0, T0 + STEPS * M, planned=planned,
                                      journal=journal(tmp_path / "alarms.sqlite"))
    systems = {a.system: a for s in report.sections for a in s.systems}
    a3, b2 = systems["UPS-A3"], systems["UPS-B2"]
    assert (a3.down_unplanned_s, a3.down_planned_s, a3.failures, a3.mttr_s) == (900.0, 0.0, 1,
                                                                             900.0)
    assert a3.availability == pytest.approx(105 / 120)
    assert (b2.down_unplanned_s, b2.down_planned_s, b2.failures) == (0.0, 600.0, 0)
    assert b2.availability == pytest.approx(110 / 120) and b2.availability_unplanned == 1.0
    assert systems["H1-A01"].degraded_s == 1200.0 and systems["H1-A01"].availability == 1.0
    assert systems["H1-A02"].down_unplanned_s == 300.0
    assert systems["H2-J10"].coverage == 0.0 and systems["H2-J10"].availability is None
    group = systems["ups-a-modules"]
    assert group.degraded_s == 900.0 and group.down_unplanned_s == 0.0
    assert systems["Tier III"].availability == 1.0
    rollup = report.sections[0].rollup
    assert rollup is not None and rollup.down_unplanned_s == pytest.approx(300.0 / 200)
    # the incident's evidence: the journal's events for the trip, with who did what
    incident = next(i for i in report.incidents() if i.system == "UPS-A3")
    events = [(e.action.value, e.user) for e in report.events_of(incident)]
    assert events == [("raise", "system"), ("ack", "kwong"), ("clear", "system"),
                      ("reset", "lee")]
    assert report.evidence["journal"]["chain_ok"] is True
    # every sample behind the figures is counted: all written except other meters' power
    other_meters = {d.id for d in SITE.devices_of_type("meter")
                    if SITE.electrical[d.monitors].type != "utility_feed"}
    assert report.evidence["good_samples"] == len(
        [s for s in history() if s.series.device not in other_meters])

    text = render_markdown(report)
    assert "| UPS-A3 | ups_module | 87.5000 % | 87.5000 % | 100.0 % | 15 min |" in text
    assert "#3 " in text and "ack unit:UPS-A3:down by kwong (on site)" in text
    assert "annual battery test | CHG-1042" in text and "hash chain intact" in text
    body, fingerprint = text.rsplit("Report fingerprint (sha256 of every line above this one): ",
                                    1)
    import hashlib
    assert hashlib.sha256(body.encode()).hexdigest() == fingerprint.strip()
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert {(r["system"], r["state"], r["duration_s"], r["planned"]) for r in rows} >= {
        ("UPS-A3", "down", "900", "no"), ("UPS-B2", "down", "600", "yes"),
        ("H1-A01", "degraded", "1200", "no"), ("H1-A02", "down", "300", "no")}
    data = json.loads(json.dumps(report_json(report)))
    assert data["period"]["start_local"] == "2026-12-01 08:00"
    assert plot_timeline(report, tmp_path / "timeline.png").stat().st_size > 5_000


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("unit: UPS-A3", "expected a list", id="not-a-list"),
    pytest.param("- {unit: UPS-Z9, start: '2026-12-01T08:00', end: '2026-12-01T09:00', "
                 "reason: x}", "entry 1, unit: 'UPS-Z9' is not a component", id="unknown-unit"),
    pytest.param("- {unit: UPS-A3, start: '2026-12-01T09:00', end: '2026-12-01T08:00', "
                 "reason: x}", "entry 1, end: Value error, end must be after start",
                 id="end-before-start"),
    pytest.param("- {unit: UPS-A3, start: '2026-12-01T08:00', end: '2026-12-01T09:00'}",
                 "entry 1, reason: Field required", id="no-reason"),
])
def test_a_bad_maintenance_log_names_the_entry_and_field(tmp_path: Path, text: str,
                                                         message: str) -> None:
    path = tmp_path / "log.yaml"
    path.write_text(text)
    with pytest.raises(MaintenanceLogError, match=message) as info:
        load_planned(path, SITE)
    assert str(path) in str(info.value)


def test_the_cli_writes_every_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from dcim.cli import main

    monkeypatch.chdir(tmp_path)  # the reference site's embedded store is var/cyberport5.sqlite

    async def fill() -> None:
        from dcim.storage.factory import open_storage

        storage = open_storage(SITE.config.storage, site_id=SITE.id)
        await storage.start()
        await storage.write(history())
        await storage.close()

    asyncio.run(fill())
    journal(tmp_path / "var" / f"alarms-{SITE.id}.sqlite").close()
    site = str(ROOT / "config" / "cyberport5.yaml")
    period = ["--from", "2026-12-01T08:00", "--to", "2026-12-01T10:00"]
    assert main(["report", "availability", site, *period, "-o", "r.md",
                 "--plot", "r.png"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "## Incidents" in text and "UPS-A3" in text and (tmp_path / "r.png").exists()
    assert main(["report", "availability", site, *period, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert "not enough data" not in err  # two hours asked, two hours stored
    assert main(["report", "availability", site, "--from", "2026-12-01T00:00", "--to",
                 "2026-12-01T10:00", "--format", "csv"]) == 0
    assert "note: not enough data: the store covers 19.9% of the period" in \
        capsys.readouterr().err
    assert any(i["system"] == "UPS-A3" and i["alarm_events"] for i in data["incidents"])
    assert main(["report", "availability", site, "--from", "2026-12-01T10:00", "--to",
                 "2026-12-01T08:00"]) == 2
    assert "must be before" in capsys.readouterr().err


async def test_trips_played_into_a_backfill_are_reported(tmp_path: Path) -> None:
    # simulators -> store -> report: the plant history with a scenario's equipment faults
    from dcim.simulators.backfill import backfill
    from dcim.simulators.faults import FaultSpec

    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "store.sqlite")),
                              site_id=SITE.id)
    await storage.start()
    try:
        start_s = T0 / S
        faults = [FaultSpec(kind="ups_module_trip", target="UPS-A3", at="30m", duration="15m"),
                  FaultSpec(kind="pdu_breaker_open", target="PDU-A-H1-1", at="60m",
                            duration="10m"),
                  FaultSpec(kind="timeout", target="PDU-A-H1-2", at="5m")]  # no wire: ignored
        figures = await backfill(SITE, storage, start_s=start_s, end_s=start_s + 7200,
                                 step_s=60.0, progress=False, faults=faults)
        assert figures["faults"] == 4  # two equipment faults, on and off
        report = await build_availability(SITE, storage, T0, T0 + 7200 * S)
    finally:
        await storage.close()
    systems = {a.system: a for s in report.sections for a in s.systems}
    ups = systems["UPS-A3"]
    assert (ups.down_unplanned_s, ups.failures, ups.coverage) == (900.0, 1, 1.0)
    assert [(_local(i.start_ns), i.state) for i in ups.incidents] == [("08:30", "down")]
    # the racks fed by PDU-A-H1-1 ran on their B feed for those ten minutes: degraded, not down
    fed = [r.id for r in SITE.racks.values() if r.feed_a == "PDU-A-H1-1"]
    assert fed and all(systems[r].degraded_s == 600.0 and systems[r].down_unplanned_s == 0.0
                       for r in fed)
    assert systems["UPS-A4"].availability == 1.0 and systems["UPS-A4"].incidents == ()
    # no analytics ran on this history: the group levels come from the units' states at the
    # design load (1,600 kW on UPS A needs 4 of its 5 modules: one trip leaves N)
    group = systems["ups-a-modules"]
    assert (group.coverage, group.degraded_s, group.down_unplanned_s) == (1.0, 900.0, 0.0)
    assert systems["ups-b-modules"].incidents == () and systems["Tier III"].availability == 1.0
    # the racks of one PDU are one row of the incident table, not twenty
    text = render_markdown(report)
    assert text.count(f"racks: {fed[0]}, {fed[1]}") == 1 and f"| {len(fed)} racks: " in text
    assert sum(1 for line in text.splitlines() if fed[0] in line) == 2  # summary row + incident


def _local(ns: int) -> str:
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ns / S, timezone.utc).astimezone(
        ZoneInfo("Asia/Hong_Kong")).strftime("%H:%M")


HOSTILE_NAME = "<img src=x onerror=alert(1)> *DC* | [click](javascript:alert(2))"


async def test_outside_text_is_inert_in_the_markdown(store: EmbeddedStorage,
                                                      tmp_path: Path) -> None:
    """Site name, operators' names and comments, maintenance reasons: shown, never run."""
    import re

    from dcim.alarms.types import Action, AlarmEvent, AlarmState
    from dcim.site import parse_site

    text = (ROOT / "config" / "cyberport5.yaml").read_text()
    site = parse_site(text.replace("  name: Cyberport 5 Data Centre\n",
                                   f"  name: '{HOSTILE_NAME}'\n", 1), "hostile.yaml")
    log = tmp_path / "maintenance.yaml"
    log.write_text("- {unit: UPS-B2, start: '2026-12-01T08:05', end: '2026-12-01T08:25', "
                   "reason: '<script>alert(3)</script>', ticket: '=HYPERLINK(\"http://x\")|'}\n")
    jnl = journal(tmp_path / "alarms.sqlite")
    trip = "unit:UPS-A3:down"
    # a journal written before the engine refused control characters may hold anything
    jnl.append([AlarmEvent(time_ns=T0 + 31 * M, alarm_id=trip, action=Action.ACK,
                           state=AlarmState.ACKED, priority=Priority.HIGH, message="tripped",
                           user="<script>alert(4)</script>",
                           comment="ok\n| forged | row |\n## Forged heading\x1b[2J")], {})
    report = await build_availability(site, store, T0, T0 + STEPS * M,
                                      planned=load_planned(log, site), journal=jnl)
    md = render_markdown(report)
    assert re.findall(r"<[A-Za-z/]", md.replace("<br>", "")) == []  # no HTML but our <br>
    assert "&lt;img src=x onerror=alert(1)&gt; \\*DC\\* \\| \\[click\\](javascript" in md
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in md and "&lt;script&gt;alert(4)" in md
    lines = md.splitlines()
    assert not any(line.startswith(("## Forged", "| forged")) for line in lines)
    row = next(line for line in lines if "Forged heading" in line)
    assert row.startswith("| UPS-A3 | down |") and "\\\\n\\| forged \\| row \\|\\\\n" in row
    assert "\x1b" not in md and "\\\\u001b\\[2J" in md
    # every incident row keeps its 8 cells: no bar from a value splits one
    incident_rows = [line for line in lines if line.startswith("| UPS-A3 | down |")]
    assert [len(re.findall(r"(?<!\\)\|", line)) for line in incident_rows] == [9]
    planned_row = next(line for line in lines if "alert(3)" in line)
    assert planned_row.startswith("| UPS-B2 | 2026-12-01 08:05 |")
    assert len(re.findall(r"(?<!\\)\|", planned_row)) == 6


@pytest.mark.parametrize(("cell", "written"), [
    pytest.param("=HYPERLINK(\"http://evil\",\"x\")", "'=HYPERLINK(\"http://evil\",\"x\")",
                 id="equals"),
    pytest.param("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0", id="plus"),
    pytest.param("-2+3", "'-2+3", id="minus"),
    pytest.param("@SUM(A1:A9)", "'@SUM(A1:A9)", id="at"),
    pytest.param("\t=1", "'\t=1", id="tab"),
    pytest.param("\r=1", "'\r=1", id="carriage-return"),
    pytest.param("UPS-A3", "UPS-A3", id="plain"),
])
def test_csv_cells_never_run_as_formulas(cell: str, written: str) -> None:
    from dcim.analytics.availability import Incident, SystemAvailability
    from dcim.reports import AvailabilityReport, Section

    incident = Incident(cell, "down", T0, T0 + M, False, cell)
    system = SystemAvailability(cell, "rack", T0, T0 + STEPS * M, 60.0, 7140.0, 0.0, 0.0,
                                60.0, 0.0, (incident,))
    report = AvailabilityReport(SITE.id, SITE.config.site.name, "Asia/Hong_Kong", T0,
                                T0 + STEPS * M, 60.0, T0, [Section("IT load", [system])], [], {})
    [row] = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert (row["system"], row["cause"]) == (written, written)


# ------------------------------------------------------------- honest roll-ups


def racks(*rows: tuple[str, list[int]]) -> list[SystemAvailability]:
    """Racks from their state per minute (UP, DEGRADED, DOWN, UNKNOWN codes)."""
    return [summarize(name, "IT load", T0 + np.arange(len(codes), dtype=np.int64) * M, 60.0,
                      np.array(codes, dtype=np.int8)) for name, codes in rows]


def report_of(systems: list[SystemAvailability]) -> str:
    section = Section("IT load", systems, combined("all racks", "IT load", systems))
    report = AvailabilityReport(SITE.id, "Cyberport 5", "Asia/Hong_Kong", T0, T0 + 60 * M, 60.0,
                                T0 + 60 * M, [section], [],
                                {"store": "test", "series_read": 0, "good_samples": 0})
    return render_markdown(report)


def table_rows(text: str) -> list[str]:
    """The rows of the first table (the roll-up's), without header and rule."""
    section = text.split("## IT load", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")][2:]


def test_forty_equal_racks_are_one_line_not_forty_worst_rows() -> None:
    text = report_of(racks(*((f"R{i:02d}", [UP] * 60) for i in range(40))))
    assert "All 40 without downtime or degraded time: 40 at 100 % where known, coverage " \
           "100.0 %." in text
    assert [row.split(" |")[0] for row in table_rows(text)] == ["| all racks"]
    section = text.split("## IT load", 1)[1].split("## Incidents", 1)[0]
    assert "least" not in section and "not enough data" not in section.lower()


def test_only_real_deficits_are_ranked_and_equal_ones_share_a_row() -> None:
    one_feed = [UP] * 40 + [DEGRADED] * 20  # a PDU opened: ten racks on one feed at once
    text = report_of(racks(*((f"R{i:02d}", [UP] * 60) for i in range(29)),
                           *((f"P{i}", one_feed) for i in range(10)),
                           ("DOWN1", [UP] * 55 + [DOWN] * 5)))
    rows = table_rows(text)
    assert len(rows) == 3  # the roll-up, the rack that went down, the ten on one feed
    assert rows[1].startswith("| DOWN1 | IT load | 91.6667 % |")
    assert rows[2].startswith("| 10 systems: P0, P1, P2, P3, P4, P5, P6, P7, P8, P9 | IT load "
                              "| 100.0000 % |") and "20 min" in rows[2]
    assert "The other 29 without downtime or degraded time: 29 at 100 % where known" in text
    assert "Listed: the 11 with downtime or degraded time, least available first" in text


def test_a_period_the_data_does_not_cover_says_not_enough_data() -> None:
    # a minute of data in the hour: 1.7 % coverage
    text = report_of(racks(*((f"R{i:02d}", [UP] + [UNKNOWN] * 59) for i in range(40))))
    assert text.count("Not enough data: the store covers 1.7 %") == 2  # report and section
    rows = table_rows(text)
    assert len(rows) == 1 and "| not enough data | not enough data | 1.7 % |" in rows[0]
    assert "100.0000 %" not in text  # no figure from a minute of data


async def test_a_day_asked_of_two_hours_of_history(store: EmbeddedStorage) -> None:
    # the case: the report of a fresh demo (a long period asked, hours stored)
    report = await build_availability(SITE, store, T0 + STEPS * M - 86400 * S, T0 + STEPS * M)
    text = render_markdown(report)
    assert "Not enough data: the store covers 8.3 % of the period" in text
    rows = table_rows(text)
    # the two racks with a deficit, each on its own row; no rack listed for being at 100 %
    assert [r.split(" |")[0] for r in rows] == ["| all racks", "| H1-A02", "| H1-A01"]
    assert all("not enough data" in r for r in rows)
    data = report_json(report)
    assert data["sections"][0]["systems"][0]["enough_data"] is False
    assert (data["period"]["enough_data"], round(data["period"]["coverage"], 3)) == (False, 0.083)
