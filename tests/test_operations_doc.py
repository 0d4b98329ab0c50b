"""docs/operations.md stays true to the code: its unit's commands parse, its paths are the defaults."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from dcim.cli import build_parser
from dcim.config.alarms import AlarmsConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
UNIT = DOC.split("```ini\n", 1)[1].split("```", 1)[0]


def directive(name: str) -> str:
    """The value of a directive of the documented unit."""
    (value,) = [line.split("=", 1)[1] for line in UNIT.splitlines() if line.startswith(f"{name}=")]
    return value


@pytest.mark.parametrize("name,verb", [("ExecStart", "run"), ("ExecStartPre", "validate")])
def test_unit_commands_parse(name: str, verb: str) -> None:
    argv = shlex.split(directive(name))
    assert argv[0].endswith("/bin/dcim")
    args = build_parser().parse_args(argv[1:])
    assert args.command == verb


def test_unit_stops_with_sigterm_in_its_working_directory() -> None:
    assert (directive("Type"), directive("KillSignal"), directive("Restart")) == (
        "simple", "SIGTERM", "on-failure")
    assert directive("ReadWritePaths") == directive("WorkingDirectory")
    assert int(directive("TimeoutStopSec")) >= 15  # notifications 5 s + buffer flush 5 s
    assert "--log-format json" in directive("ExecStart")


def test_state_paths_are_the_code_defaults() -> None:
    assert AlarmsConfig().journal_file("<site>") == "var/alarms-<site>.sqlite"
    for path in ("var/alarms-<site>.sqlite", "var/buffer-<site>/", "var/notify-<site>.sqlite",
                 "var/models/<site>/"):
        assert f"`{path}`" in DOC
