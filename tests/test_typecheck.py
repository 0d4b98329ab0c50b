"""mypy finds nothing, run over a symlink tree (it cannot follow pyproject's package-dir mapping)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPED = ("collectors", "analytics", "dashboards", "simulators")  # installed as dcim.<name>


def _package_tree(root: Path) -> None:
    """root/dcim as installed: dcim/'s entries plus the mapped top-level packages."""
    pkg = root / "dcim"
    pkg.mkdir()
    for entry in (REPO / "dcim").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name in MAPPED:
        (pkg / name).symlink_to(REPO / name)


@pytest.mark.timeout(300)
def test_mypy_finds_no_errors(tmp_path: Path) -> None:
    _package_tree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), "-p", "dcim"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
