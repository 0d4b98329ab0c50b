"""`dcim run` and `dcim demo` stop on SIGTERM (what systemd sends) as cleanly as on Ctrl-C.

A real process on the reference site in a temporary working directory: started, left to
print its first status line, signalled, then checked for exit code 0, the stop log line,
the forwarder's close and a durable buffer and SQLite files left as a clean close leaves them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dcim.cli import run_until_stopped
from dcim.collectors.buffer import DurableBuffer

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "config" / "cyberport5.yaml"
STATUS_TIMEOUT_S = 20.0  # start-up: the demo's simulators take a few seconds
STOP_TIMEOUT_S = 10.0
# the console script's entry point, as `dcim` runs it
ENTRY = "import sys; from dcim.cli import main; sys.exit(main())"


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of stderr (tracebacks and progress bars are skipped)."""
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "msg" in record:
            records.append(record)
    return records


def wait_for_status_line(proc: subprocess.Popen[bytes], out: Path) -> None:
    """Until the process prints its first status line (it is a real process: we wait)."""
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(line.startswith("PUE live") for line in out.read_text().splitlines()):
            return
        if proc.poll() is not None:
            pytest.fail(f"dcim exited with {proc.returncode} before its first status line")
        time.sleep(0.05)
    pytest.fail(f"no status line within {STATUS_TIMEOUT_S} s:\n{out.read_text()[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("verb,sig", [
    ("run", signal.SIGTERM),
    ("demo", signal.SIGTERM),
    ("run", signal.SIGINT),
], ids=["run-sigterm", "demo-sigterm", "run-sigint"])
def test_stop_signal_takes_the_clean_shutdown_path(tmp_path: Path, verb: str,
                                                   sig: signal.Signals) -> None:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    # `run` polls the site's real addresses (nobody answers: devices down, reconnecting);
    # `demo` serves them from simulators. No dashboard and no history: less to start.
    argv = [sys.executable, "-c", ENTRY, "--log-format", "json", verb, str(SITE),
            "--no-dashboard", *(["--backfill", "0s"] if verb == "demo" else [])]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # the child imports dcim from this checkout, as the test does
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL, env=env)
        try:
            wait_for_status_line(proc, out)
            proc.send_signal(sig)
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    assert code == 0, stderr_text[-3000:]
    messages = [r["msg"] for r in log_records(stderr_text)]
    assert f"stopped on {sig.name}" in messages, messages[-10:]
    # the signal was taken, then the forwarder closed the buffer, then the stop was reported
    received = messages.index(f"{sig.name} received; stopping")
    closed = next(i for i, m in enumerate(messages) if m == "store-and-forward closed")
    assert received < closed < messages.index(f"stopped on {sig.name}")
    kept = next(r for r in log_records(stderr_text)
                if r["msg"] == "store-and-forward closed")["kept_on_disk"]
    assert f"{kept:,} left in the durable buffer for the next start" in stdout_text
    # the next start finds exactly what was kept, nothing torn or cut
    buffer = DurableBuffer(tmp_path / "var" / "buffer-cyberport5")
    try:
        report = buffer.recovery
        assert (report.discarded_bytes, report.torn_frames) == (0, 0)
        assert report.recovered_samples == kept
    finally:
        buffer.close()
    # SQLite removes a WAL file when its last connection closes: the store and the alarm
    # journal were closed, not abandoned (a killed process leaves them behind)
    var = tmp_path / "var"
    assert (var / "cyberport5.sqlite").exists() and (var / "alarms-cyberport5.sqlite").exists()
    assert sorted(p.name for p in var.glob("*-wal")) == []


# ---------------------------------------------------------------- run_until_stopped in process


async def ticks(n: int = 10) -> None:
    """A few loop iterations: enough for a signal sent to ourselves to reach its handler."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_sigterm_cancels_main_once_and_waits_for_its_cleanup() -> None:
    steps: list[str] = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()  # runs until cancelled
        finally:
            steps.append("cleanup started")
            os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM must not cut it short
            await ticks()
            steps.append("cleanup done")

    before = signal.getsignal(signal.SIGTERM)
    assert run_until_stopped(main()) == "SIGTERM"
    assert steps == ["cleanup started", "cleanup done"]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers put back


def test_a_second_ctrl_c_gives_up_waiting_for_the_cleanup() -> None:
    steps: list[str] = []

    async def main() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.Event().wait()
        finally:
            steps.append("cleanup started")
            os.kill(os.getpid(), signal.SIGINT)
            await ticks()
            steps.append("cleanup done")

    # Python's own handler first: an earlier test in the run may have left another one
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_until_stopped(main())
        assert steps == ["cleanup started"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, outer)


def test_main_that_returns_is_not_stopped() -> None:
    async def main() -> None:
        await ticks()

    assert run_until_stopped(main()) is None
