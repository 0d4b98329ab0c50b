"""A real influxd (Debian's influxdb 1.x) on loopback for tests and benchmarks."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = "install it with: apt-get update && apt-get install -y influxdb (Debian ships 1.6.7)"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

CONFIG_TEMPLATE = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  write-tracing = false
  pprof-enabled = false
  max-row-limit = 0

[logging]
  level = "warn"

[subscriber]
  enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def influxd_binary() -> str | None:
    """Path of influxd, or None when it is not installed."""
    return shutil.which("influxd") or ("/usr/bin/influxd" if os.path.exists("/usr/bin/influxd") else None)


def servers_required() -> bool:
    """True where a missing server must fail the run (CI) rather than skip."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("DCIM_REQUIRE_SERVERS") == "1"


class InfluxdProcess:
    """One influxd with its data in root; stop() and start() again keep data dir and port."""

    def __init__(self, root: Path, binary: str = "influxd") -> None:
        self.root = root
        self.binary = binary
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config_path = root / "influxdb.conf"
        self.log_path = root / "influxd.log"
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(root=root, http_port=self.http_port, rpc_port=self.rpc_port)
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of influxd's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start influxd and wait until /ping answers 204."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "run", "-config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate influxd (SIGTERM, then SIGKILL after a grace period)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _require_influxd() -> str:
    binary = influxd_binary()
    if binary is None:
        message = f"influxd is not on PATH; {INSTALL_HINT}"
        if servers_required():
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def influxd_server() -> Iterator[str]:
    """Base URL of one influxd shared by the session (each test takes its own database)."""
    binary = _require_influxd()
    with tempfile.TemporaryDirectory(prefix="dcim-influxd-") as tmp:
        process = InfluxdProcess(Path(tmp), binary)
        process.start()
        try:
            yield process.url
        finally:
            process.stop()


@pytest.fixture
def influxd_process(tmp_path: Path) -> Iterator[InfluxdProcess]:
    """An influxd of this test's own, to stop and restart."""
    root = tmp_path / "influxd"
    root.mkdir()
    process = InfluxdProcess(root, _require_influxd())
    process.start()
    try:
        yield process
    finally:
        process.stop()


_db_numbers = itertools.count()


@pytest.fixture
def influx_database(request: pytest.FixtureRequest) -> str:
    """A database name of this test's own."""
    return f"test_{next(_db_numbers)}_{os.getpid()}"
