"""The layout keeps the data flow: the foundation (site, config, storage) never imports the
layers above it, and loading a site file does not load the running parts."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = ("dcim/site", "dcim/config", "dcim/storage")
ABOVE = ("dcim.live", "dcim.alarms.engine", "dcim.alarms.service", "dcim.alarms.sources",
         "dcim.alarms.journal", "dcim.notify", "dcim.dashboards", "dcim.analysis",
         "dcim.system", "dcim.collectors", "aiohttp")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("folder", FOUNDATION)
def test_the_foundation_does_not_import_the_layers_above(folder: str) -> None:
    bad = {}
    for path in sorted((ROOT / folder).glob("*.py")):
        found = sorted(m for m in _imports(path) if m.startswith(ABOVE)
                       and not (folder == "dcim/storage" and m.startswith("aiohttp")))
        if found:
            bad[path.name] = found
    assert bad == {}


def test_loading_a_site_loads_no_running_part() -> None:
    code = ("import sys, dcim.site; s = dcim.site.load_site('config/cyberport5.yaml'); "
            "print(','.join(sorted(m for m in sys.modules if m.startswith(('aiohttp', "
            "'dcim.alarms.engine', 'dcim.notify.', 'dcim.live', 'pymodbus', 'asyncua')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("prefix", ["alarm_", "notify", "cli_"])
def test_modules_sharing_a_prefix_live_in_a_package(prefix: str) -> None:
    loose = sorted(p.name for p in (ROOT / "dcim").glob(f"{prefix}*.py"))
    assert loose == []
