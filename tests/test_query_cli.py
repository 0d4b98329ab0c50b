"""`dcim query`: its pure parts as tables of cases, then the command on stored samples, on the
embedded store and on a real influxd (the same answers from both, through the contract)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dcim.cli import main
from dcim.cli.query import (QueryError, Target, clean, csv_cell, format_time, parse_target,
                            parse_time)
from dcim.site import load_site
from dcim.storage.base import Quality, Sample, SeriesKey
from dcim.storage.factory import open_storage

ROOT = Path(__file__).resolve().parents[1]
SITE_FILE = ROOT / "config" / "cyberport5.yaml"
SITE = load_site(SITE_FILE)
HK = ZoneInfo("Asia/Hong_Kong")
NS = 1_000_000_000
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=HK)  # 00:00 UTC
T0_NS = int(T0.timestamp()) * NS
NOW_NS = T0_NS + 3600 * NS
DEVICE = "RM-H1-A02"
POINT = "inlet_temp_middle_c"
KEY = SeriesKey("rack_monitor", DEVICE, POINT)
PERIOD = ["--since", "2026-12-01T08:00", "--until", "2026-12-01T08:03"]

POINTS = {"RM-H1-A02": {"inlet_temp_middle_c": "degC", "inlet_rh_pct": "%"},
          "UPS-A1": {"load_pct": "%"}, "CT-1.2": {"power_kw": "kW"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("1h", NOW_NS - 3600 * NS),
    ("30m", NOW_NS - 1800 * NS),
    ("7d", NOW_NS - 7 * 86400 * NS),
    ("90", NOW_NS - 90 * NS),
    ("2026-12-01T08:00", T0_NS),  # naive: the site's timezone
    ("2026-12-01T00:00:00Z", T0_NS),
    ("2026-12-01T01:00:00+01:00", T0_NS),
    ("2026-12-01T08:00:00.250", T0_NS + 250_000_000),
], ids=["1h", "30m", "7d", "bare-seconds", "naive-site-local", "utc-z", "offset", "millis"])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW_NS, HK) == expected


@pytest.mark.parametrize("text", ["yesterday", "1 week", "-1h", "2026-13-01", "1e3h",
                                  "100000d"],
                         ids=["word", "week", "negative", "bad-month", "exponent", "before-1970"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(QueryError):
        parse_time(text, NOW_NS, HK)


@pytest.mark.parametrize(("time_ns", "tz", "expected"), [
    (T0_NS, HK, "2026-12-01T08:00:00+08:00"),
    (T0_NS + 1_500_000_000, HK, "2026-12-01T08:00:01.500+08:00"),
    (T0_NS, timezone.utc, "2026-12-01T00:00:00+00:00"),
    (T0_NS, ZoneInfo("America/New_York"), "2026-11-30T19:00:00-05:00"),
], ids=["site-offset", "millis", "utc", "negative-offset"])
def test_format_time(time_ns: int, tz: timezone, expected: str) -> None:
    assert format_time(time_ns, tz) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("kW", "kW"),
    ("°C 温度", "°C 温度"),
    ("\x1b[2Jgone", "\\u001b[2Jgone"),
    ("a\nb\rc", "a\\u000ab\\u000dc"),
    ("abc\u202edef", "abc\\u202edef"),  # a bidi override would reorder the line
    ("\x9b31m", "\\u009b31m"),  # C1 CSI
], ids=["plain", "unicode", "escape", "newlines", "bidi", "c1-csi"])
def test_clean(text: str, expected: str) -> None:
    assert clean(text) == expected


@pytest.mark.parametrize(("cell", "expected"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\\u0009x"),
    ("\rx", "'\\u000dx"),
    ("degC", "degC"),
    (-3.5, "-3.5"),  # a number is a number, not a formula
    (0.1 + 0.2, "0.30000000000000004"),  # exact
    (math.nan, ""),
    (None, ""),
    (7, "7"),
], ids=["equals", "plus", "minus", "at", "tab", "cr", "text", "negative-number",
        "exact-float", "nan", "none", "int"])
def test_csv_cell(cell: str | float | int | None, expected: str) -> None:
    assert csv_cell(cell) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("RM-H1-A02", Target("RM-H1-A02")),
    ("RM-H1-A02.inlet_rh_pct", Target("RM-H1-A02", "inlet_rh_pct")),
    ("CT-1.2", Target("CT-1.2")),  # a dot inside a device id
    ("CT-1.2.power_kw", Target("CT-1.2", "power_kw")),
], ids=["device", "device-point", "dotted-device", "dotted-device-point"])
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text, POINTS) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("RM-H1-A2", "unknown device 'RM-H1-A2'; did you mean RM-H1-A02?"),
    ("RM-H1-A02.inlet_temp", "unknown point 'inlet_temp' of RM-H1-A02; did you mean "
                             "inlet_temp_middle_c, inlet_rh_pct?"),
    ("nothing", "unknown device 'nothing'; known: RM-H1-A02, UPS-A1, CT-1.2"),
    ("UPS\x1b[2J", "unknown device 'UPS\\\\u001b[2J'"),
], ids=["device-typo", "point-typo", "no-match", "escape-in-name"])
def test_parse_target_names_close_matches(text: str, message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_target(text, POINTS)
    assert str(info.value).startswith(message)


# ---------------------------------------------------------------- the command on a store

def samples() -> list[Sample]:
    """Three minutes of POINT every 20 s (a stale and a bad one among them), and one value
    of inlet_rh_pct."""
    out = [Sample(KEY, T0_NS + i * 20 * NS, 20.0 + i, Quality.GOOD) for i in range(9)]
    out[4] = Sample(KEY, out[4].time_ns, 23.0, Quality.STALE)
    out[7] = Sample(KEY, out[7].time_ns, math.nan, Quality.BAD)
    out.append(Sample(SeriesKey("rack_monitor", DEVICE, "inlet_rh_pct"), T0_NS, 41.5))
    return out


@pytest.fixture(params=["embedded", "influxdb1"])
def site_file(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reference site with its store (embedded, or a database on a real influxd) holding
    samples(); the working directory is the test's own."""
    monkeypatch.chdir(tmp_path)  # the embedded store is var/cyberport5.sqlite
    path = SITE_FILE
    if request.param == "influxdb1":
        url = request.getfixturevalue("influxd_server")
        database = request.getfixturevalue("influx_database")
        text = SITE_FILE.read_text().replace(
            "storage:\n  backend: embedded\n  path: var/cyberport5.sqlite\n",
            f"storage:\n  backend: influxdb1\n  url: {url}\n  database: {database}\n", 1)
        assert "backend: influxdb1" in text
        path = tmp_path / "influx-site.yaml"
        path.write_text(text)
    site = load_site(path)

    async def fill() -> None:
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            await storage.write(samples())
        finally:
            await storage.close()

    asyncio.run(fill())
    return path


def query(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["query", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_device_lists_every_point_with_its_newest_value(
        site_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, DEVICE, str(site_file))
    assert status == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    assert lines["point"] == ["point", "value", "unit", "quality", "time"]
    assert lines[POINT] == [POINT, "28", "degC", "good", "2026-12-01T08:02:40+08:00"]
    assert lines["inlet_rh_pct"] == ["inlet_rh_pct", "41.5", "%", "good",
                                     "2026-12-01T08:00:00+08:00"]
    assert lines["feed_a_power_kw"] == ["feed_a_power_kw", "-", "kW", "-", "-"]
    assert len(lines) == 1 + len(SITE.devices[DEVICE].profile.points)


def test_a_point_prints_its_raw_rows(site_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(site_file), *PERIOD)
    assert status == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["time", "value", "quality"]
    assert rows[1] == ["2026-12-01T08:00:00+08:00", "20", "good"]
    assert rows[5] == ["2026-12-01T08:01:20+08:00", "23", "stale"]
    assert rows[8] == ["2026-12-01T08:02:20+08:00", "-", "bad"]
    assert len(rows) == 10


def test_csv_and_json_carry_the_same_rows(site_file: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(site_file), *PERIOD,
                           "--format", "csv")
    assert status == 0
    lines = out.splitlines()
    assert lines[:3] == ["time,value,quality", "2026-12-01T08:00:00+08:00,20.0,good",
                         "2026-12-01T08:00:20+08:00,21.0,good"]
    assert lines[8] == "2026-12-01T08:02:20+08:00,,bad"
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(site_file), *PERIOD,
                           "--format", "json")
    doc = json.loads(out)
    assert (doc["device"], doc["point"], doc["unit"]) == (DEVICE, POINT, "degC")
    assert (doc["since"], doc["until"]) == ("2026-12-01T08:00:00+08:00",
                                            "2026-12-01T08:03:00+08:00")
    assert doc["rows"][7] == {"time": "2026-12-01T08:02:20+08:00", "value": None,
                              "quality": "bad"}
    assert [r["value"] for r in doc["rows"]][:4] == [20.0, 21.0, 22.0, 23.0]


@pytest.mark.parametrize(("agg", "expected"), [
    ("mean", [21.0, 24.0, 27.0]),  # good samples only: the stale and the bad one left out
    ("max", [22.0, 25.0, 28.0]),
    ("min", [20.0, 23.0, 26.0]),
    ("count", [3, 2, 2]),
    ("last", [22.0, 25.0, 28.0]),
], ids=["mean", "max", "min", "count", "last"])
def test_aggregated_per_every(site_file: Path, capsys: pytest.CaptureFixture[str],
                              agg: str, expected: list[float]) -> None:
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(site_file), *PERIOD,
                           "--every", "1m", "--agg", agg, "--format", "json")
    assert status == 0, out
    doc = json.loads(out)
    assert (doc["agg"], doc["every_s"]) == (agg, 60.0)
    assert [r["time"] for r in doc["rows"]] == [
        "2026-12-01T08:00:00+08:00", "2026-12-01T08:01:00+08:00", "2026-12-01T08:02:00+08:00"]
    assert [r["value"] for r in doc["rows"]] == pytest.approx(expected)
    assert [r["count"] for r in doc["rows"]] == [3, 2, 2]


def test_limit_keeps_the_newest_rows(site_file: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(site_file), *PERIOD,
                           "--limit", "2", "--format", "csv")
    assert status == 0
    assert out.splitlines() == ["time,value,quality", "2026-12-01T08:02:20+08:00,,bad",
                                "2026-12-01T08:02:40+08:00,28.0,good"]


@pytest.mark.parametrize(("argv", "message"), [
    (["RM-H1-A2"], "unknown device 'RM-H1-A2'; did you mean RM-H1-A02"),
    ([f"{DEVICE}.inlet_temp_c"], "unknown point 'inlet_temp_c' of RM-H1-A02; did you mean"),
    ([f"{DEVICE}.{POINT}", "--agg", "max"], "--agg needs --every"),
    ([f"{DEVICE}.{POINT}", "--every", "1s", "--since", "30d"], "buckets"),
    ([f"{DEVICE}.{POINT}", "--since", "soon"], "expected a duration"),
    ([f"{DEVICE}.{POINT}", "--since", "1h", "--until", "2h"], "--since must be before"),
    ([DEVICE, "--every", "1m"], "need DEVICE.POINT"),
], ids=["unknown-device", "unknown-point", "agg-without-every", "too-many-buckets",
        "bad-time", "empty-period", "every-without-point"])
def test_mistakes_exit_2_saying_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], argv: list[str],
                                    message: str) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = query(capsys, argv[0], str(SITE_FILE), *argv[1:])
    assert (status, out) == (2, "")
    assert message in err


def test_durations_count_back_from_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    old, recent = now - timedelta(hours=2), now - timedelta(minutes=10)

    async def fill() -> None:
        storage = open_storage(SITE.config.storage, site_id=SITE.id)
        await storage.start()
        try:
            await storage.write([Sample(KEY, int(t.timestamp()) * NS, v)
                                 for t, v in ((old, 1.0), (recent, 2.0))])
        finally:
            await storage.close()

    asyncio.run(fill())
    status, out, _ = query(capsys, f"{DEVICE}.{POINT}", str(SITE_FILE), "--since", "1h",
                           "--format", "csv")
    assert status == 0
    assert out.splitlines()[1:] == [f"{format_time(int(recent.timestamp()) * NS, HK)},2.0,good"]
