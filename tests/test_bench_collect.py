"""bench/collect.py still runs end to end (a short run on the smallest site) and its figures add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_program

REPO = Path(__file__).resolve().parent.parent


def test_collector_benchmark_runs_and_stores_everything() -> None:
    require_program("influxd", "apt-get install influxdb")
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "collect.py"), "--sizes", "100", "--runs", "1",
         "--seconds", "1", "--intervals", "1", "--interval-seconds", "2"],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    results = {}
    for line in out.stdout.splitlines():
        head, _, body = line.strip().partition(": ")
        if head.startswith(("run 1 ", "interval ")):
            results[head.split()[-1]] = json.loads(body)
    assert set(results) == {"collector", "bare", "naive", "limit", "1"}
    collector = results["collector"]
    assert collector["errors"] == 0 and collector["left_in_buffer"] == 0
    assert collector["polls"] > 0 and collector["requests"] >= collector["polls"]
    # everything polled was stored: warm-up round included, so at least the window's points
    assert collector["written"] >= collector["polls"] * collector["points_per_poll"] * 0.99
    assert results["bare"]["written"] > 0 and results["limit"]["written"] == 0
    interval = results["1"]
    assert interval["errors"] == 0 and interval["cycles"] >= 1 and interval["polls"] > 0
    assert "| 100 run 1 | collector |" in out.stdout  # the table the docs quote
