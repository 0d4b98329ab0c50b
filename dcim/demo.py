"""`dcim demo` and `dcim run`: the whole system on a site (simulators in the demo) until
Ctrl-C or SIGTERM.

The demo adds to the system: a week of simulated history written first (coarse, then a
sample a minute for the last hours: simulators/backfill.py DEMO_TIERS), with a progress bar
on stderr when it is a terminal; the simulator's control API on 127.0.0.1:8790, so
`dcim fault inject ...` works against it; an incident timeline played on the live plant
(dcim/demo_story.py); and, when the site file has no `notifications:` section, a log channel
that shows every alarm notification in the terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dcim.alarms.types import Priority
from dcim.cli import run_until_stopped
from dcim.cli.sim import DEFAULT_CONTROL_PORT
from dcim.config.notifications import LogChannelConfig, NotificationsConfig, RouteConfig
from dcim.simulators.backfill import DEMO_TIERS, Tier
from dcim.site import Site, load_site
from dcim.site.summary import summarize
from dcim.system import System, SystemOptions, run_until_interrupted

if TYPE_CHECKING:
    from aiohttp import web

    from dcim.demo_story import StoryPlayer

log = logging.getLogger(__name__)

DEMO_BACKFILL_S = 7 * 86400.0  # a week: the anomaly models train on three days, at least 6 h


@dataclasses.dataclass
class DemoOptions:
    """What the demo adds to the system: the control API's port (None: none), the story."""

    control_host: str = "127.0.0.1"
    control_port: int | None = DEFAULT_CONTROL_PORT
    story: bool = True
    story_speed: float = 1.0
    progress: bool | None = None  # the backfill's bar: None on a terminal only
    tiers: tuple[Tier, ...] = DEMO_TIERS  # how fine the history is, by age


def demo_notifications(site: Site) -> Site:
    """The site, with every alarm notification sent to a log channel when it has no
    `notifications:` section (nothing leaves the machine); as it is otherwise."""
    if site.config.notifications is not None:
        return site
    notifications = NotificationsConfig(
        channels={"terminal": LogChannelConfig(kind="log", level="warning")},
        routes=(RouteConfig(min_priority=Priority.LOW, channels=("terminal",)),),
        escalate_after_s=None)
    return dataclasses.replace(site, config=site.config.model_copy(
        update={"notifications": notifications}))


class DemoSystem(System):
    """The system with the demo's parts: tiered history, the control API and the story."""

    def __init__(self, site: Site, options: SystemOptions, demo: DemoOptions,
                 out: TextIO | None = None) -> None:
        super().__init__(site, options)
        self.demo = demo
        self.out = out if out is not None else sys.stdout
        self.control: web.AppRunner | None = None
        self.control_url: str | None = None
        self.story: StoryPlayer | None = None
        self._story_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The system, then the control API and the story (the system stops on a failure)."""
        await super().start()
        try:
            if self.simulator is not None and self.demo.control_port is not None:
                await self._start_control()
            if self.simulator is not None and self.demo.story:
                from dcim.demo_story import StoryPlayer

                self.story = StoryPlayer(self.simulator.inject, speed=self.demo.story_speed,
                                         out=self.out)
                self._story_task = asyncio.create_task(self.story.play(), name="dcim-story")
        except BaseException:
            await self.stop()
            raise

    async def _start_control(self) -> None:
        from dcim.simulators.control import start_control

        assert self.simulator is not None
        host, port = self.demo.control_host, self.demo.control_port or 0
        try:
            self.control = await start_control(self.simulator, host, port)
        except OSError as exc:  # another simulator holds the port: the demo runs without
            log.warning("the simulator's control API is not served: `dcim fault` cannot "
                        "reach this demo (choose another --control-port)",
                        extra={"host": host, "port": port, "error": str(exc)})
            return
        bound = self.control.addresses[0][1] if self.control.addresses else port
        self.control_url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        """The story and the control API, then the system in reverse order."""
        from dcim.tasks import cancel_task

        if self._story_task is not None:
            await cancel_task(self._story_task)
            self._story_task = None
        if self.control is not None:
            await self.control.cleanup()
            self.control = None
        await super().stop()


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def run_demo(path: str | Path, *, seconds: float | None = None, simulate: bool = True,
             host: str = "127.0.0.1", port: int | None = 8080,
             backfill_s: float = DEMO_BACKFILL_S, demo: DemoOptions | None = None) -> int:
    """Validate the site, start simulators, collectors, storage and the dashboard; 0 once
    stopped (seconds passed, Ctrl-C or SIGTERM)."""
    site = load_site(path)
    print(summarize(site))
    demo = demo or DemoOptions()
    options = SystemOptions(simulate=simulate, backfill_s=backfill_s if simulate else 0.0,
                            backfill_tiers=demo.tiers, backfill_progress=demo.progress,
                            analytics_interval_s=15.0, dashboard_port=port,
                            dashboard_host=host)
    system: System
    if simulate:
        shown = demo_notifications(site)
        if shown is not site:
            print("notifications: the site file has none; alarm notifications are logged "
                  "here (a log channel)")
        system = DemoSystem(shown, options, demo)
    else:
        system = System(site, options)
    what = "simulators, collectors" if simulate else "collectors"
    print(f"\nstarting {what}, the durable buffer, the store and analytics (Ctrl-C to stop) ...")
    # SIGTERM and Ctrl-C cancel the run, whose finally stops the system in order
    stopped_by = run_until_stopped(run_until_interrupted(system, seconds=seconds,
                                                         on_started=_announce))
    if system.forward is not None:
        stats = system.forward.stats()
        print(f"stopped: {stats.written:,} samples stored in {site.config.storage.backend}, "
              f"{stats.buffered:,} left in the durable buffer for the next start", flush=True)
    if stopped_by is not None:
        log.info("stopped on %s", stopped_by, extra={"signal": stopped_by})
    return 0


def _announce(system: System) -> None:
    if system.dashboard is not None:
        print(f"dashboard: {system.dashboard.url}", flush=True)
    if isinstance(system, DemoSystem):
        if system.control_url is not None:
            print(f"simulator control API: {system.control_url} (dcim fault inject crah_trip "
                  f"CRAH-H1-1 --duration 10m"
                  + ("" if system.control_url.endswith(f":{DEFAULT_CONTROL_PORT}")
                     else f" --control {system.control_url}") + ")", flush=True)
