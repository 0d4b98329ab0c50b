"""dcim/report_pdf.py and dcim/report_schedule.py: the PDF read back by poppler's pdftotext
has the figures of the JSON and CSV; the monthly schedule picks the site-local month."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import dcim
from dcim.config.storage import EmbeddedStorageConfig
from dcim.report_pdf import render_pdf
from dcim.report_schedule import (add_schedule_parser, previous_month, report_files,
                                  schedule_main)
from dcim.report_schedule import run as run_schedule
from dcim.reports import (AvailabilityReport, build_availability, load_planned, render_csv,
                          render_markdown, report_json)
from dcim.storage.embedded import EmbeddedStorage
from tests.conftest import require_program
from tests.test_reports import M, ROOT, SITE, STEPS, T0, history, journal

S = 1_000_000_000
HK = "Asia/Hong_Kong"
GENERATED_S = T0 // S + 3 * 3600  # 2026-12-01 11:00 in Hong Kong


def pdftotext(path: Path) -> list[str]:
    """The PDF's pages as text, by poppler's pdftotext (a reader we did not write)."""
    tool = require_program("pdftotext", "apt-get install poppler-utils")
    out = subprocess.run([tool, "-layout", "-enc", "UTF-8", str(path), "-"], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return out.split("\f")[:-1]  # every page ends with a form feed


def norm(line: str) -> str:
    """A line with its runs of spaces as one space (the layout's column padding)."""
    return " ".join(line.split())


def dur(seconds: float | None) -> str:
    """The report's way of writing a duration, written again here to check the PDF's."""
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.1f} d"


def pct(x: float | None, enough: bool) -> str:
    """An availability as the report writes it."""
    if not enough:
        return "not enough data"
    return "-" if x is None else f"{x * 100:.4f} %"


async def _build(tmp: Path) -> AvailabilityReport:
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp / "store.sqlite")),
                              site_id=SITE.id)
    await storage.start()
    try:
        await storage.write(history())
        log = tmp / "maintenance.yaml"
        log.write_text("- {unit: UPS-B2, start: '2026-12-01T08:05', end: '2026-12-01T08:25', "
                       "reason: annual battery test, ticket: CHG-1042}\n")
        return await build_availability(SITE, storage, T0, T0 + STEPS * M,
                                        planned=load_planned(log, SITE),
                                        journal=journal(tmp / "alarms.sqlite"),
                                        clock=lambda: float(GENERATED_S))
    finally:
        await storage.close()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[AvailabilityReport, Path]:
    """One report of the known episodes of tests/test_reports.py, rendered once."""
    tmp = tmp_path_factory.mktemp("pdf")
    report = asyncio.run(_build(tmp))
    return report, render_pdf(report, tmp / "availability.pdf")


def test_every_systems_figures_in_the_pdf_are_the_jsons(
        rendered: tuple[AvailabilityReport, Path]) -> None:
    report, path = rendered
    data = json.loads(json.dumps(report_json(report)))
    pages = pdftotext(path)
    summary = {norm(line) for page in pages if "excl. planned" in page
               for line in page.splitlines()}
    checked = 0
    for section in data["sections"]:
        rows = section["systems"] + ([section["rollup"]] if section["rollup"] else [])
        for a in rows:
            expected = [a["system"], a["kind"],
                        pct(a["availability"], a["enough_data"]),
                        pct(a["availability_excluding_planned"], a["enough_data"]),
                        f"{a['coverage'] * 100:.1f} %", dur(a["down_unplanned_s"]),
                        dur(a["down_planned_s"]), dur(a["degraded_s"]), str(a["failures"]),
                        dur(a["mtbf_s"]), dur(a["mttr_s"])]
            assert norm(" ".join(expected)) in summary, a["system"]
            checked += 1
    assert checked == sum(len(s.systems) + (s.rollup is not None) for s in report.sections)
    # the known episodes, spelled out: the JSON is not wrong in the same way as the PDF
    assert "UPS-A3 ups_module 87.5000 % 87.5000 % 100.0 % 15 min 0 min 0 min 1 1.8 h 15 min" \
        in summary
    assert "H2-J10 rack not enough data not enough data 0.0 % 0 min 0 min 0 min 0 - -" \
        in summary


def test_every_incident_and_alarm_event_in_the_pdf_is_the_csvs(
        rendered: tuple[AvailabilityReport, Path]) -> None:
    report, path = rendered
    lines = [norm(line) for page in pdftotext(path) for line in page.splitlines()]
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert len(rows) == 5
    for r in rows:
        head = (f"{r['system']} {r['state']} {r['start_local']} {r['end_local']} "
                f"{r['duration_s']} {dur(float(r['duration_s']))} {r['planned']} {r['cause']}")
        assert head in lines, head
    events = [e for i in report_json(report)["incidents"] for e in i["alarm_events"]]
    assert len(events) == 4
    assert "#2 2026-12-01 08:33 ack unit:UPS-A3:down by kwong (on site)" in lines
    assert "#4 2026-12-01 08:50 reset unit:UPS-A3:down by lee (module restarted)" in lines
    assert any(line.startswith("UPS-B2 2026-12-01 08:05 2026-12-01 08:25 CHG-1042 annual")
               for line in lines)


def test_the_evidence_and_its_sha256_match_the_json_and_markdown(
        rendered: tuple[AvailabilityReport, Path]) -> None:
    report, path = rendered
    text = "\n".join(norm(line) for page in pdftotext(path) for line in page.splitlines())
    evidence = report_json(report)["evidence"]
    assert f"Site file SHA-256: {evidence['site_file_sha256']}" in text
    assert (f"Journal head: #{evidence['journal']['head_seq']} SHA-256 "
            f"{evidence['journal']['head_sha256']}") in text
    assert "4 events, hash chain intact" in text
    markdown = render_markdown(report)
    body, fingerprint = markdown.rsplit("Report fingerprint (sha256 of every line above this "
                                        "one): ", 1)
    assert hashlib.sha256(body.encode()).hexdigest() == fingerprint.strip()
    assert f"fingerprint line): {fingerprint.strip()}" in text
    as_written = json.dumps(report_json(report), indent=2) + "\n"  # as `--format json` writes
    assert f"(.json): {hashlib.sha256(as_written.encode()).hexdigest()}" in text
    assert f"(.csv): {hashlib.sha256(render_csv(report).encode()).hexdigest()}" in text
    assert f"Series read: {evidence['series_read']:,}; good samples behind these figures: " \
        f"{evidence['good_samples']:,}" in text


def test_the_title_page_says_site_period_zone_and_version(
        rendered: tuple[AvailabilityReport, Path]) -> None:
    _, path = rendered
    title = [norm(line) for line in pdftotext(path)[0].splitlines()]
    assert "Period 2026-12-01 08:00 to 2026-12-01 10:00 (Asia/Hong_Kong)" in title
    assert "Generated 2026-12-01 11:00 Asia/Hong_Kong (2026-12-01 03:00:00 UTC)" in title
    assert f"Software dcim {dcim.__version__}" in title
    assert "Site Cyberport 5 Data Centre (cyberport5)" in title


def test_the_sha256_file_page_count_and_metadata(
        rendered: tuple[AvailabilityReport, Path]) -> None:
    _, path = rendered
    digest, name = Path(f"{path}.sha256").read_text().split()
    assert (digest, name) == (hashlib.sha256(path.read_bytes()).hexdigest(), path.name)
    pages = pdftotext(path)
    # 200 racks at about 50 lines a page, two charts, incidents, evidence
    assert 8 <= len(pages) <= 16
    assert all(f"page {n}" in page for n, page in enumerate(pages, 1))
    info = subprocess.run([require_program("pdfinfo", "apt-get install poppler-utils"),
                           str(path)], check=True, capture_output=True, text=True).stdout
    assert re.search(r"CreationDate:\s+Tue Dec  1 03:00:00 2026 UTC", info), info
    assert re.search(rf"Pages:\s+{len(pages)}\n", info)


def test_two_renders_of_one_report_are_the_same_bytes(
        rendered: tuple[AvailabilityReport, Path], tmp_path: Path) -> None:
    report, path = rendered
    again = render_pdf(report, tmp_path / "again.pdf")
    assert again.read_bytes() == path.read_bytes()


def test_names_from_outside_and_a_broken_chain_are_shown_as_they_are(rendered: tuple[AvailabilityReport, Path],
                                              tmp_path: Path) -> None:
    report, _ = rendered
    long_name = "CRAH-H1-1 (north wall, $5 fan kit) 38c"  # whole, not cut to a column
    power = report.sections[1]
    sections = [*report.sections[:1],
                dataclasses.replace(power, systems=[dataclasses.replace(
                    power.systems[0], system=long_name), *power.systems[1:]]),
                *report.sections[2:]]
    broken = {**report.evidence["journal"], "chain_ok": False, "first_bad_seq": 3,
              "problem": "event #3: hash does not match"}
    odd = dataclasses.replace(report, site_name="DC $\\frac{1}{2}$ <b>\nfloor",
                              sections=sections,
                              evidence={**report.evidence, "journal": broken})
    pages = pdftotext(render_pdf(odd, tmp_path / "odd.pdf"))
    assert any("hash chain BROKEN: event #3: hash does not match" in page for page in pages)
    assert "DC $\\frac{1}{2}$ <b>\\nfloor" in pages[0]  # no mathtext, the newline shown
    assert any(norm(line).startswith(f"{long_name} {power.systems[0].kind} ")
               for page in pages for line in page.splitlines())


@pytest.mark.parametrize(("now", "tz", "label", "hours"), [
    pytest.param("2027-01-15T12:00:00+00:00", HK, "2026-12", 31 * 24, id="january-gives-december"),
    pytest.param("2026-12-01T00:00:00+08:00", HK, "2026-11", 30 * 24, id="first-instant"),
    pytest.param("2026-11-30T23:59:59+08:00", HK, "2026-10", 31 * 24, id="last-instant"),
    pytest.param("2026-11-30T23:30:00+00:00", HK, "2026-11", 30 * 24,
                 id="utc-machine-already-december-in-hk"),
    pytest.param("2026-11-30T23:30:00+00:00", "UTC", "2026-10", 31 * 24, id="same-instant-utc"),
    pytest.param("2028-03-10T00:00:00+00:00", HK, "2028-02", 29 * 24, id="leap-february"),
    pytest.param("2026-04-02T00:00:00+00:00", "Europe/London", "2026-03", 31 * 24 - 1,
                 id="dst-month-is-an-hour-short"),
])
def test_previous_month_in_the_site_time_zone(now: str, tz: str, label: str,
                                              hours: int) -> None:
    period = previous_month(datetime.fromisoformat(now), tz)
    assert period.label == label
    assert (period.end_ns - period.start_ns) // S == hours * 3600
    start = datetime.fromtimestamp(period.start_ns / S, timezone.utc).astimezone(ZoneInfo(tz))
    assert (start.day, start.hour, start.minute) == (1, 0, 0)


def test_previous_month_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="time zone"):
        previous_month(datetime(2026, 12, 1), HK)


def _fill(tmp: Path) -> None:
    async def fill() -> None:
        from dcim.storage.factory import open_storage

        storage = open_storage(SITE.config.storage, site_id=SITE.id)  # var/cyberport5.sqlite
        await storage.start()
        await storage.write(history())
        await storage.close()

    asyncio.run(fill())
    journal(tmp / "var" / f"alarms-{SITE.id}.sqlite").close()


def test_the_schedule_writes_the_month_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fill(tmp_path)
    site = str(ROOT / "config" / "cyberport5.yaml")
    # 10:00 on 1 December in Hong Kong is 02:00 UTC: the report covers November (no data)
    clock: Any = lambda: float(T0 // S + 2 * 3600)  # noqa: E731
    assert schedule_main([site, "--out-dir", "reports", "--step", "3600"], clock=clock) == 0
    november = tmp_path / "reports" / "2026-11"
    names = report_files(SITE.id, "2026-11")
    assert sorted(p.name for p in november.iterdir()) == sorted(
        [*names.values(), names["pdf"] + ".sha256", "SHA256SUMS"])
    data = json.loads((november / names["json"]).read_text())
    assert data["period"]["start_local"] == "2026-11-01 00:00"
    assert data["period"]["end_local"] == "2026-12-01 00:00"
    assert data["incidents"] == []
    # every file is in SHA256SUMS with its real hash
    for line in (november / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((november / name).read_bytes()).hexdigest() == digest
    # a second run (a timer catching up) leaves the month alone
    before = (november / names["pdf"]).read_bytes()
    assert schedule_main([site, "--out-dir", "reports"], clock=lambda: clock() + 60) == 0
    assert "already reported" in capsys.readouterr().err
    assert (november / names["pdf"]).read_bytes() == before
    assert not list((tmp_path / "reports").glob(".*"))  # no partial folder left


def test_the_schedule_reports_a_chosen_month_with_its_incidents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _fill(tmp_path)
    site = str(ROOT / "config" / "cyberport5.yaml")
    clock: Any = lambda: float(GENERATED_S)  # noqa: E731
    assert schedule_main([site, "--month", "2026-12", "--step", "60"], clock=clock) == 0
    assert "has not ended yet" in capsys.readouterr().err
    folder = tmp_path / "reports" / "2026-12"
    names = report_files(SITE.id, "2026-12")
    written = (folder / names["csv"]).read_text()
    assert {r["system"] for r in csv.DictReader(io.StringIO(written))} == {
        "UPS-A3", "UPS-B2", "H1-A01", "H1-A02", "ups-a-modules"}
    pages = pdftotext(folder / names["pdf"])
    as_written = hashlib.sha256((folder / names["json"]).read_bytes()).hexdigest()
    assert any(f"(.json): {as_written}" in norm(line) for p in pages for line in p.splitlines())
    assert schedule_main([site, "--month", "2026-13"], clock=clock) == 1
    assert "--month: expected YYYY-MM" in capsys.readouterr().err


def test_the_documented_timer_fires_after_the_month_it_reports() -> None:
    doc = (ROOT / "docs" / "reports-pdf.md").read_text()
    calendar = re.search(r"^OnCalendar=(.+)$", doc, re.M)
    assert calendar is not None and "Asia/Hong_Kong" in calendar.group(1)
    assert f"systemd-analyze calendar '{calendar.group(1)}'" in doc  # one timer, told once
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze (systemd) is not installed")
    out = subprocess.run([tool, "calendar", "--iterations=3", calendar.group(1)],
                         check=True, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "SYSTEMD_COLORS": "0", "TZ": "UTC"}).stdout
    fires = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", out)
    assert len(fires) == 3, out
    for fire in fires:
        when = datetime.fromisoformat(fire + "+00:00")
        local = when.astimezone(ZoneInfo(HK))
        assert (local.day, local.hour, local.minute) == (1, 2, 0)
        period = previous_month(when, HK)
        assert period.end_ns <= when.timestamp() * S  # the month reported has ended
        assert period.end == local.replace(hour=0)


def test_the_schedule_registers_under_dcim_report(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="dcim report")
    add_schedule_parser(parser.add_subparsers(dest="report_kind", required=True))
    args = parser.parse_args(["schedule", "site.yaml", "--month", "2026-11", "--out-dir",
                              str(tmp_path)])
    assert (args.func, args.site, args.month, args.out_dir, args.force) == (
        run_schedule, "site.yaml", "2026-11", str(tmp_path), False)


def test_dcim_report_writes_the_pdf_and_runs_the_schedule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Both reach the command line: `--format pdf -o` and `dcim report schedule`."""
    from dcim.cli import main

    monkeypatch.chdir(tmp_path)
    _fill(tmp_path)
    site = str(ROOT / "config" / "cyberport5.yaml")
    assert main(["report", "availability", site, "--format", "pdf"]) == 2
    assert "--format pdf needs -o" in capsys.readouterr().err
    start = datetime.fromtimestamp(T0 / S, ZoneInfo(HK)).strftime("%Y-%m-%dT%H:%M")
    end = datetime.fromtimestamp(T0 / S + 2 * 3600, ZoneInfo(HK)).strftime("%Y-%m-%dT%H:%M")
    assert main(["report", "availability", site, "--from", start, "--to", end,
                 "--format", "pdf", "-o", "out.pdf"]) == 0
    digest = (tmp_path / "out.pdf.sha256").read_text().split()[0]
    assert hashlib.sha256((tmp_path / "out.pdf").read_bytes()).hexdigest() == digest
    text = " ".join(norm(line) for page in pdftotext(tmp_path / "out.pdf") for line in
                    page.splitlines())
    assert "UPS-A3" in text  # an incident of the known history reaches the PDF
    assert main(["report", "schedule", site, "--month", "2026-12", "--step", "3600",
                 "--out-dir", "monthly"]) == 0
    assert (tmp_path / "monthly" / "2026-12" / report_files(SITE.id, "2026-12")["pdf"]).is_file()
