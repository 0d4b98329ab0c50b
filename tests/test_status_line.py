"""The status line of `dcim run` / `dcim demo` (dcim/status_line.py): fitted to the terminal,
"connecting" before the first cycle, one plain line per interval when not on a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dcim.alarms.types import Alarm, AlarmState, Priority
from dcim.analytics.pue import Figure, PueFigure, SiteFigures
from dcim.live.state import Collection, SiteState
from dcim.status_line import MIN_WIDTH, Status, StatusPrinter, status_of

T_NS = 1_796_083_200 * 1_000_000_000
STARTING = Collection(devices=270, connecting=270)
HALF_WAY = Collection(devices=270, up=120, down=3, connecting=147, polls=123)
RUNNING = Collection(devices=270, up=268, stale=1, down=1, polls=123_456, polls_per_s=135.2,
                     errors=12, missed_cycles=0, stored=9_876_543, buffered=0)
LOSING = Collection(devices=270, up=268, stale=1, down=1, polls=123_456, polls_per_s=135.2,
                    errors=12, stored=9_876_543, buffered=1_234_567, lost_samples=4_321)


def figures(value: float) -> SiteFigures:
    def fig(metric: str) -> Figure:
        return Figure(metric, None, "", "PUE2", T_NS, T_NS, 1.0, 0.0, 0.0)
    pue = PueFigure(value, "PUE2", "intermediate", T_NS, T_NS, 100.0, 70.0, 1.0)
    return SiteFigures(pue, fig("ppue_cooling"), fig("ppue_distribution"), fig("dcie"),
                       fig("cue"), fig("wue"))


def state(collection: Collection, **fields: Any) -> SiteState:
    base: dict[str, Any] = dict(
        seq=1, time_ns=T_NS, site_id="cyberport5", site_name="Cyberport 5",
        timezone="Asia/Hong_Kong", values={}, health={}, units={}, racks=(),
        collection=collection, pue_live=figures(1.4123), pue_today=None, it_kw=None,
        facility_kw=None, outdoor_c=None, redundancy=None)
    return SiteState(**(base | fields))


def alarm(n: int, acked: bool = False) -> Alarm:
    return Alarm(id=f"a{n}", source="unit", priority=Priority.HIGH, message="m",
                 state=AlarmState.ACKED if acked else AlarmState.UNACK, condition=True,
                 active_since_ns=T_NS)


ALARMS = [alarm(1), alarm(2, acked=True), alarm(3)]


@pytest.mark.parametrize("collection", [STARTING, HALF_WAY, Collection()],
                         ids=["nothing-yet", "half-way", "collectors-not-started"])
def test_before_the_first_cycle_completes_it_says_connecting(collection: Collection) -> None:
    line = status_of(state(collection), ALARMS).line()
    assert line.startswith("connecting: "), line
    assert "stale" not in line and "PUE" not in line


def test_half_way_it_counts_who_answered() -> None:
    assert status_of(state(HALF_WAY), []).line().startswith(
        "connecting: 123/270 devices answered, 3 down | alarms 0")


def test_the_full_line_has_every_field() -> None:
    line = status_of(state(RUNNING), ALARMS).line()
    assert line == ("PUE live 1.412 (PUE2) | anomalies 0 | alarms 3 (2 unacknowledged) | "
                    "devices 268/270 up, 1 stale, 1 down | polls 123,456 (135/s) errors 12 "
                    "missed cycles 0 | stored 9,876,543 buffered 0")


@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40, 20, 5])
@pytest.mark.parametrize("collection", [STARTING, HALF_WAY, RUNNING, LOSING],
                         ids=["starting", "half-way", "running", "losing"])
def test_the_line_fits_every_width(collection: Collection, width: int) -> None:
    line = status_of(state(collection), ALARMS).line(width)
    assert len(line) <= max(width, MIN_WIDTH) and "\n" not in line


@pytest.mark.parametrize("width,expected", [
    (120, "PUE 1.41 | anom 0 | alarms 3 (2 unacknowledged) | devices 268/270 up, 1 stale, "
          "1 down | 135 polls/s err 12 | buf 0"),
    (100, "PUE 1.41 | anom 0 | alm 3 (2 unack) | up 268/270, 1 stale, 1 down | "
          "135 polls/s err 12 | buf 0"),
    (79, "PUE 1.41 | anom 0 | alm 3 (2 unack) | up 268/270, 1 stale, 1 down"),
    (60, "PUE 1.41 | alm 3 (2 unack) | up 268/270, 1 stale, 1 down"),
    (40, "up 268/270, 1 stale, 1 down"),  # the alarms would not fit beside it
])
def test_the_least_important_fields_shorten_then_go(width: int, expected: str) -> None:
    assert status_of(state(RUNNING), ALARMS).line(width) == expected


def test_lost_samples_stay_on_a_narrow_line() -> None:
    line = status_of(state(LOSING), ALARMS).line(60)
    assert "LOST 4,321" in line and "up 268/270" in line


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_line_is_rewritten_at_its_width(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # what shutil.get_terminal_size reads first
    out = Terminal()
    printer = StatusPrinter(out)
    for collection in (STARTING, RUNNING, RUNNING):
        printer.show(status_of(state(collection), ALARMS))
    printer.close()
    writes = out.getvalue().split("\r")[1:]
    assert len(writes) == 3
    assert writes[0].startswith("connecting: 0/270")
    # 79 columns each (the last one left free), the last write ends the line
    assert [len(w.rstrip("\n")) for w in writes] == [79, 79, 79] and writes[-1].endswith("\n")
    assert writes[1].rstrip() == "PUE 1.41 | anom 0 | alm 3 (2 unack) | up 268/270, 1 stale, 1 down"


def test_to_a_file_one_plain_line_per_interval() -> None:
    out, clock = io.StringIO(), Clock()
    printer = StatusPrinter(out, clock=clock, log_every_s=60.0)
    sequence = [STARTING, HALF_WAY, RUNNING] + [RUNNING] * 60  # a show every 2 s
    for collection in sequence:
        printer.show(status_of(state(collection), ALARMS))
        clock.now += 2.0
    printer.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # the start, devices answering (2 s), the first cycle done (4 s), then every 60 s
    assert [line.split(":")[0].split(" ")[0] for line in lines] == [
        "connecting", "connecting", "PUE", "PUE", "PUE"]
    assert all(len(line) > 120 for line in lines[2:])  # the whole line: nothing to fit


def test_to_a_file_a_change_that_matters_is_written_at_once() -> None:
    out, clock = io.StringIO(), Clock()
    printer = StatusPrinter(out, clock=clock, log_every_s=60.0)
    for alarms in ([], [], ALARMS, ALARMS, ALARMS[:1]):  # raised at 4 s, two cleared at 8 s
        printer.show(status_of(state(RUNNING), alarms))
        clock.now += 2.0
    assert [line.split(" | ")[2] for line in out.getvalue().splitlines()] == [
        "alarms 0 (0 unacknowledged)", "alarms 3 (2 unacknowledged)",
        "alarms 1 (1 unacknowledged)"]


def test_a_status_without_fields_is_empty() -> None:
    assert Status((), connecting=True).line(80) == ""
