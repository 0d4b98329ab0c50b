"""docs/discovery.md stays true to the code: every command it shows parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dcim.cli import build_parser

DOC = (Path(__file__).resolve().parents[1] / "docs" / "discovery.md").read_text(encoding="utf-8")
COMMANDS = [" ".join(block.replace("\\\n", " ").split())
            for block in re.findall(r"^dcim .*?(?<!\\)$", DOC, re.M | re.S)]


def test_the_doc_shows_every_verb() -> None:
    verbs = {tuple(shlex.split(c)[1:3]) for c in COMMANDS}
    assert verbs == {("discover", "modbus"), ("discover", "opcua"), ("pki", "client"),
                     ("pki", "trust")}


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_commands_parse(command: str) -> None:
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert args.command in ("discover", "pki")
