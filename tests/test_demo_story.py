"""The demo tells a story: a week of history, an incident timeline on the live plant, and the
simulator's control API for `dcim fault inject` (dcim/demo.py, dcim/demo_story.py)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dcim.demo_story import STORY, StoryPlayer, offset_text, timeline
from dcim.simulators.backfill import DEMO_TIERS, Run, Tier, plan_runs, segments
from dcim.simulators.faults import FaultSpec, check_fault
from dcim.site import load_site

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "config" / "cyberport5.yaml"
DCIM = str(Path(sys.executable).parent / "dcim")  # the console script, as the README runs it
DAY = 86400.0


# ------------------------------------------------------------------ the timeline (pure)

def test_every_incident_of_the_story_fits_the_reference_site() -> None:
    site = load_site(REFERENCE)
    problems = {s.kind + " " + s.target: check_fault(site, s.spec()) for s in STORY}
    assert problems == {k: None for k in problems}
    events = timeline(STORY)
    assert [t for t, _ in events] == sorted(t for t, _ in events)
    assert 30.0 <= events[0][0] <= 120.0  # something happens within the first minutes
    assert events[-1][0] <= 30 * 60.0
    kinds = {s.kind for s in STORY}
    assert {"ups_module_trip", "crah_trip", "drift", "utility_loss"} <= kinds


@pytest.mark.parametrize("speed", [1.0, 4.0, 30.0], ids=["real", "4x", "30x"])
def test_a_faster_story_divides_every_offset_and_duration(speed: float) -> None:
    for step in STORY:
        spec = step.spec(speed)
        assert float(spec.at) == pytest.approx(step.at_s / speed)
        assert spec.duration is not None
        assert float(spec.duration) == pytest.approx(step.duration_s / speed)
    assert [t for t, _ in timeline(STORY, speed)] == \
        pytest.approx([t / speed for t, _ in timeline(STORY)])


@pytest.mark.parametrize("seconds,text", [(0, "+0:00"), (60, "+1:00"), (419.6, "+7:00"),
                                          (1740, "+29:00")])
def test_offsets_are_told_as_minutes_and_seconds(seconds: float, text: str) -> None:
    assert offset_text(seconds) == text


class _Out:
    """A pipe-like output that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        """Nothing buffered."""

    def isatty(self) -> bool:
        return False


async def test_the_player_schedules_every_fault_at_once_and_tells_each_step_in_time() -> None:
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the clock moves, nothing sleeps
        slept.append(seconds)
        now[0] += seconds

    injected: list[tuple[float, FaultSpec]] = []
    out = _Out()
    player = StoryPlayer(lambda spec: injected.append((now[0], spec)), STORY, speed=2.0,
                         out=out, clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    await player.play()
    assert [t for t, _ in injected] == [1000.0] * len(STORY)  # the simulator times them
    assert [s.kind for _, s in injected] == [s.kind for s in STORY]
    assert now[0] == pytest.approx(1000.0 + timeline(STORY)[-1][0] / 2.0)
    assert sum(slept) == pytest.approx(timeline(STORY)[-1][0] / 2.0)
    assert out.lines[0].startswith("story: 4 incidents until +29:00 (played 2x faster)")
    told = [line.rstrip("\n") for line in out.lines[1:]]
    assert told == player.told
    # told on the story's own clock: +1:00 is said 30 s in at twice the speed
    assert told[0] == f"story +1:00 {STORY[0].begins}"
    assert told[-1] == f"story +29:00 {STORY[2].ends}"
    assert len(told) == 2 * len(STORY)


def test_a_story_speed_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        StoryPlayer(lambda spec: None, STORY, speed=0.0)


# ------------------------------------------------------------------ the history plan (pure)

END = 2_000_000_000.0


@pytest.mark.parametrize("start,tiers,expected", [
    # no tiers: one stretch of the step, the end included, the live state every step
    (END - 600, (), [(END - 600, END + 60, 60.0, 0.0, 0.0, 0.0)]),
    # a week: coarse until 6.5 h before the end, then a sample a minute up to the end
    (END - 7 * DAY, DEMO_TIERS,
     [(END - 7 * DAY, END - 6.5 * 3600, 1200.0, 3 * 3600.0, 1200.0, 600.0),
      (END - 6.5 * 3600, END + 30, 60.0, 300.0, 0.0, 0.0)]),
    # a second run 10 minutes later: only the fine tier, after what is stored
    (END - 600, DEMO_TIERS, [(END - 600, END + 30, 60.0, 300.0, 0.0, 0.0)]),
    # tiers in any order
    (END - 2 * DAY, (Tier(3600, 10, 60), Tier(DAY, 300, 900)),
     [(END - DAY, END - 3600, 300.0, 900.0, 0.0, 0.0),
      (END - 3600, END + 5, 10.0, 60.0, 0.0, 0.0)]),
], ids=["untiered", "week", "second-run", "unordered"])
def test_history_is_planned_coarse_first_then_fine(
        start: float, tiers: tuple[Tier, ...],
        expected: list[tuple[float, ...]]) -> None:
    assert plan_runs(start, END, 60.0, tiers) == expected


@pytest.mark.parametrize("run,expected", [
    (Run(0, 600, 60, 0), [(0, 600, 60)]),  # rebuilt every step: one grid
    (Run(0, 600, 60, 300), [(0, 600, 60)]),  # no lead step: one grid
    # every 3 h, 20-minute steps, 10-minute steps in the 20 minutes before each rebuild
    (Run(0, 4 * 3600, 1200, 3 * 3600, 1200, 600),
     [(0, 3 * 3600 - 1200, 1200), (3 * 3600 - 1200, 3 * 3600, 600),
      (3 * 3600, 4 * 3600, 1200)]),
], ids=["every-step", "no-lead-step", "lead"])
def test_a_coarse_run_steps_finer_before_each_rebuild(
        run: Run, expected: list[tuple[float, float, float]]) -> None:
    assert segments(run) == expected


def test_the_demo_history_is_a_week_and_far_smaller_than_every_minute() -> None:
    runs = plan_runs(END - 7 * DAY, END, 60.0, DEMO_TIERS)
    steps = sum((hi - lo) / step for run in runs for lo, hi, step in segments(run))
    assert runs[0].start_s == END - 7 * DAY
    assert steps < 7 * DAY / 60 / 10  # a tenth of a week of minutes, or less
    fine = runs[-1]
    assert fine.step_s == 60.0 and END - fine.start_s >= 6 * 3600  # the 6-hour trend


# ------------------------------------------------------------------ the running demo

class Demo:
    """`dcim demo` in a child process, its output read line by line as it comes."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen([DCIM, "demo", *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [threading.Thread(target=self._read, args=(stream, keep), daemon=True)
                         for stream, keep in ((self.proc.stdout, self.out),
                                              (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, keep: list[str]) -> None:
        for line in stream:
            keep.append(line)
            if keep is self.out:
                self._lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """The first stdout line matching pattern (read so far or to come)."""
        deadline = time.monotonic() + timeout_s
        for line in list(self.out):
            if m := re.search(pattern, line):
                return m
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s:g} s:\n"
                             + "".join(self.out[-30:]) + "".join(self.err[-30:]))

    def stop(self) -> int:
        """SIGTERM, as systemd and Ctrl-C stop it; its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            for reader in self._readers:  # to the end of both pipes, then close them
                reader.join(timeout=10)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    if not Path(DCIM).exists():
        pytest.fail(f"the dcim console script is not installed at {DCIM} (pip install -e .)")
    return tmp_path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _until(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)  # a real process on its own clock: polled, loosely


def _alarms(dashboard: str) -> list[dict[str, Any]]:
    alarms: list[dict[str, Any]] = _get(dashboard + "api/state")["alarms"]
    return alarms


def _site_with_quick_alarm_delays(tmp: Path) -> Path:
    """The reference site, its alarms returning to normal as soon as the condition goes (the
    defaults wait one to five minutes: longer than a bounded test)."""
    text = REFERENCE.read_text(encoding="utf-8")
    assert "\nalarms:" not in text
    delays = "\n".join(f"    {source}: {{on_delay_s: {30.0 if source == 'device' else 0.0}, "
                       f"off_delay_s: 0.0}}"
                       for source in ("device", "unit", "redundancy", "storage", "anomaly"))
    path = tmp / "cyberport5.yaml"
    path.write_text(text + f"\nalarms:\n  evaluate_interval_s: 1.0\n  delays:\n{delays}\n",
                    encoding="utf-8")
    return path


def test_the_story_raises_alarms_that_clear_and_dcim_fault_inject_reaches_the_demo(
        demo_dir: Path) -> None:
    site = _site_with_quick_alarm_delays(demo_dir)
    # 40x: the UPS module trips 1.5 s in and is back 6 s later; the CRAH fails at 4.5 s,
    # utility feed A is lost from 10.5 s to 16.5 s
    demo = Demo([str(site), "--port", "0", "--control-port", "0", "--story-speed", "40",
                 "--backfill", "0s", "--seconds", "30"], demo_dir)
    try:
        dashboard = demo.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/)", 25).group(1)
        control = demo.wait_for(r"simulator control API: (http://127\.0\.0\.1:\d+)", 5).group(1)
        # the README's command, as written, with --control for the free port of the test
        fault = subprocess.run([DCIM, "fault", "inject", "crah_trip", "CRAH-H1-1",
                                "--duration", "10m", "--control", control],
                               capture_output=True, text=True, timeout=30)
        assert fault.returncode == 0, fault.stderr
        assert re.match(r"fault \d+: crah_trip on CRAH-H1-1", fault.stdout)
        assert any(f["target"] == "CRAH-H1-1" and f["active"] for f in _get(control + "/faults"))
        # the story's UPS trip: a latched unit alarm and the redundancy it costs
        trip = _until("the UPS-A2 trip alarm", lambda: next(
            (a for a in _alarms(dashboard) if a["source"] == "unit" and a["unit"] == "UPS-A2"
             and a["state"] != "normal"), None), 20)
        assert trip["latched"] and trip["priority"] in ("high", "critical")
        # the fault injected by hand shows in the live state as its own unit alarm
        _until("the CRAH-H1-1 trip in the live state", lambda: any(
            a["unit"] == "CRAH-H1-1" and a["source"] == "unit" for a in _alarms(dashboard)), 15)
        assert "ack" in trip["actions"]
        acked = _post(dashboard + "api/alarms/ack", {"alarm_id": trip["id"], "user": "test",
                                                     "comment": "seen in the demo story"})
        assert acked["state"] == "active_acknowledged"
        # UPS-A2 back on line: the condition goes, the latched alarm waits for a reset
        back = _until("UPS-A2 back on line", lambda: next(
            (a for a in _alarms(dashboard) if a["id"] == trip["id"] and "reset" in a["actions"]),
            None), 20)
        assert back["condition"] is False
        reset = _post(dashboard + "api/alarms/reset", {"alarm_id": trip["id"], "user": "test",
                                                       "comment": "module back"})
        assert reset["state"] == "normal"
        # utility feed A lost, then restored: redundancy falls below design and recovers
        feed = _until("the utility's redundancy alarm", lambda: next(
            (a for a in _alarms(dashboard) if a["id"] == "redundancy:utility:below_design"
             and a["condition"]), None), 20)
        assert feed["state"] == "active_unacknowledged"
        returned = _until("the utility's redundancy back to design", lambda: next(
            (a for a in _alarms(dashboard) if a["id"] == feed["id"] and not a["condition"]),
            None), 20)
        assert returned["state"] in ("returned_unacknowledged", "normal")
    finally:
        code = demo.stop()
    out, err = "".join(demo.out), "".join(demo.err)
    assert code == 0, err[-3000:]
    assert "story +1:00 UPS module UPS-A2 trips" in out
    assert "story +5:00 UPS-A2 back on line" in out
    # the notifications went to the terminal's log channel
    assert re.search(r"channel=terminal .*kind=raise|kind=raise.*channel=terminal", err) or \
        "channel=terminal" in err, err[-3000:]


def test_no_story_leaves_the_plant_alone_and_a_busy_control_port_is_said_not_fatal(
        demo_dir: Path) -> None:
    import socket

    with socket.socket() as busy:  # another simulator's control API, say
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = Demo([str(REFERENCE), "--port", "0", "--control-port", str(port), "--no-story",
                     "--backfill", "0s", "--seconds", "8"], demo_dir)
        code = demo.proc.wait(timeout=60)
        demo.stop()
    out, err = "".join(demo.out), "".join(demo.err)
    assert code == 0, err[-3000:]
    assert "dashboard: http://127.0.0.1:" in out
    assert "story" not in out and "control API:" not in out
    assert "the simulator's control API is not served" in err and f"port={port}" in err


@pytest.fixture
def small_site(tmp_path: Path) -> Path:
    """A generated site of 20 racks: a week of its history is written in seconds."""
    path = tmp_path / "small.yaml"
    done = subprocess.run([DCIM, "site", "generate", "--racks", "20", "--halls", "1",
                           "--site-id", "small", "-o", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return path


def test_a_week_of_history_fills_the_trend_and_trains_the_anomaly_models(
        demo_dir: Path, small_site: Path) -> None:
    demo = Demo([str(small_site), "--port", "0", "--control-port", "-1", "--no-story",
                 "--seconds", "60"], demo_dir)
    try:
        dashboard = demo.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/)", 60).group(1)
        trend = _get(dashboard + "api/trend?point=pue_live&hours=6")
        values = [v for _, v in trend["points"] if v is not None]
        assert len(values) >= 60 and all(1.0 < v < 2.5 for v in values)  # 72 buckets of 5 min
        week = _get(dashboard + "api/trend?point=pue_live&hours=168")
        assert sum(v is not None for _, v in week["points"]) >= 40  # every 3 h for a week
        # the first analytics run trains on the history (in a worker thread), then detects
        # over the last two hours and hands anomaly_models_trained to the durable buffer,
        # which the stop flushes: the log says when training ends, the rest takes a moment
        _until("the anomaly models trained", lambda: any(
            "anomaly models trained" in line for line in demo.err), 60)
        time.sleep(5.0)  # a real process on its own clock: loosely
    finally:
        code = demo.stop()
    assert code == 0, "".join(demo.err)[-3000:]
    out = "".join(demo.out)
    assert "writing 7.0 days of simulated history" in out
    assert re.search(r"history: [\d,]+ samples in \d+ s", out)
    # the analytics stored that the models were trained (one-minute means, 6 h at least)
    from dcim.storage.base import SeriesKey
    from dcim.storage.factory import open_storage

    site = load_site(small_site)

    async def trained() -> float | None:
        os.chdir(demo_dir)
        storage = open_storage(site.config.storage, site_id=site.id)
        await storage.start()
        try:
            latest = await storage.read_latest(
                [SeriesKey("analytics", site.id, "anomaly_models_trained")])
        finally:
            await storage.close()
        return next((s.value for s in latest.values()), None)

    cwd = os.getcwd()
    try:
        assert asyncio.run(trained()) == 1.0
    finally:
        os.chdir(cwd)
