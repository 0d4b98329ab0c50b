"""The demo's first incident in a real browser (Debian's chromium): a UPS module trip appears on
the dashboard, an operator acknowledges it, the module comes back, the operator resets the
latched alarm and it leaves the list. A screenshot of the acknowledged alarm goes to the test's
folder (and to docs/img/ with DCIM_SCREENSHOTS=1).

The trip is the story's first step, injected through the simulator control API rather than left
to the story's clock: the test, not a compressed timeline, decides when the module comes back.
(With the story at 20x the trip lasted 12 s; on a loaded CI machine the alarm once cleared before
the acknowledgement reached it.) The story's own timing is tested in test_demo_story.py."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import time
import urllib.request
from pathlib import Path

from tests.test_dashboard_alarms import Page, button, chromium_page, row
from dcim.demo_story import STORY
from tests.test_demo_story import (  # noqa: F401
    Demo, _post, _site_with_quick_alarm_delays, demo_dir)

ROOT = Path(__file__).resolve().parents[1]
TRIP = "unit:UPS-A2:down"  # the story's first incident


async def press(page: Page, action: str, done: str, timeout_s: float = 30.0) -> None:
    """Click the trip's action button until the page shows `done` (clicked again after 2 s
    without it: on a loaded machine one answer once took longer than a single wait)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await page.js(f"{button(TRIP, action)} !== null"):
            await page.js(f"{button(TRIP, action)}?.click()")
        for _ in range(20):
            if await page.js(done):
                return
            await asyncio.sleep(0.1)
    state = await page.js(f"{row(TRIP)}?.dataset.state")
    said = await page.js("document.getElementById('alarm-action-msg')?.textContent")
    raise AssertionError(f"{action}: the page never showed {done} (the row's state: {state}; "
                         f"the page said: {said!r})")


async def test_the_story_alarm_appears_is_acknowledged_and_clears_in_the_browser(
        demo_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    site = _site_with_quick_alarm_delays(demo_dir)
    first = STORY[0]
    assert (first.kind, first.target) == ("ups_module_trip", "UPS-A2")
    demo = Demo([str(site), "--port", "0", "--control-port", "0", "--no-story",
                 "--backfill", "0s", "--seconds", "150"], demo_dir)
    try:
        url = demo.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/)", 30).group(1)
        control = demo.wait_for(r"simulator control API: (http://127\.0\.0\.1:\d+)", 5).group(1)
        fault = await asyncio.to_thread(_post, control + "/faults", {
            "kind": first.kind, "target": first.target, "at": 0.0, "duration": 600.0})
        async with chromium_page(tmp_path) as page:
            await page.call("Page.navigate", url=url)
            await page.until("document.getElementById('operator') !== null")
            await page.type("operator", "kwong")
            await page.until(f"{row(TRIP)} !== null", 40)
            assert await page.js(f"{row(TRIP)}.dataset.state") == "active_unacknowledged"
            assert "UPS-A2" in await page.js(f"{row(TRIP)}.textContent")
            await press(page, "ack", f"{row(TRIP)}?.dataset.state === 'active_acknowledged'")
            assert "acked by kwong" in await page.js(f"{row(TRIP)}.textContent")
            await page.js(f"{row(TRIP)}.scrollIntoView({{block: 'center'}})")
            shot = await page.call("Page.captureScreenshot", format="png")
            png = tmp_path / "dashboard-story-acknowledged.png"
            png.write_bytes(base64.b64decode(shot["data"]))
            if os.environ.get("DCIM_SCREENSHOTS") == "1":
                shutil.copy(png, ROOT / "docs" / "img" / png.name)
            # back on line: the condition is gone, the latched alarm waits for a reset
            await asyncio.to_thread(_delete, f"{control}/faults/{fault['id']}")
            await page.until(f"{button(TRIP, 'reset')} !== null", 40)
            await press(page, "reset", f"{row(TRIP)} === null")
    finally:
        code = demo.stop()
    assert code == 0, "".join(demo.err)[-3000:]


def _delete(url: str) -> None:
    request = urllib.request.Request(url, method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
