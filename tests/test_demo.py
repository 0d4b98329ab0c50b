"""The README's first command runs on the reference site."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_exercises_the_embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", str(ROOT / "config" / "cyberport5.yaml")]) == 0
    out = capsys.readouterr().out
    assert "racks: 200" in out
    assert "wrote 136,680 samples of 2,278 series" in out  # 60 minutes x 2,278 points
    assert (tmp_path / "var" / "cyberport5.sqlite").stat().st_size > 1_000_000
