"""The running system: (simulators) -> collectors -> durable buffer -> storage -> analytics
-> dashboard.

`dcim demo` runs it with the site's simulators on loopback; `dcim collect` runs it against
the real devices of the site file. Both show a live summary in the terminal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dcim.alarm_types import AlarmState
from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.collectors.service import CollectorService
from dcim.site import Site
from dcim.storage.base import Storage
from dcim.storage.factory import open_storage

if TYPE_CHECKING:  # imported lazily at run time: only the demo needs the simulators
    from dcim.alarm_service import AlarmService
    from dcim.simulators.plant import PlantModel
    from dcim.simulators.runner import Simulator

log = logging.getLogger(__name__)

BACKFILL_STEP_S = 60.0  # the demo's simulated history: one sample of every point a minute


@dataclass
class SystemOptions:
    """How to run: simulate the devices or not, where the buffer lives, protocols."""

    simulate: bool = True
    buffer_dir: str | None = None  # default var/buffer-<site>
    seed: int = 0
    protocols: tuple[str, ...] = ("modbus", "opcua")
    backfill_s: float = 0.0  # simulated history written before the live run (demo only)
    analytics_interval_s: float = 60.0
    dashboard_port: int | None = None  # None: no dashboard; 0: any free port
    dashboard_host: str = "127.0.0.1"
    alarm_journal: str | None = None  # default: the site's alarms.journal_path or var/
    notify_outbox: str | None = None  # default var/notify-<site>.sqlite


class System:
    """Every moving part of dcim for one site, started and stopped in order."""

    def __init__(self, site: Site, options: SystemOptions | None = None):
        self.options = options or SystemOptions()
        self.site = site
        self.simulator: Simulator | None = None
        self.storage: Storage | None = None
        self.forward: StoreAndForward | None = None
        self.collectors: CollectorService | None = None
        self.analytics: Any = None
        self.dashboard: Any = None
        self.alarms: AlarmService | None = None
        self.notifier: Any = None
        self.started_s = 0.0

    async def start(self) -> None:
        """Start simulators (if any), storage, the buffer and forwarder, then the collectors."""
        self.started_s = time.time()
        site = self.site
        notifications = site.config.notifications
        if notifications is not None:  # built first: a missing secret stops us before anything runs
            from dcim.notify import Notifier

            outbox = self.options.notify_outbox or f"var/notify-{site.id}.sqlite"
            self.notifier = Notifier(notifications, outbox, tz=site.config.site.timezone)
        plant: PlantModel | None = None
        if self.options.simulate and self.options.backfill_s > 0:
            plant = await self._backfill()
        if self.options.simulate:
            from dcim.simulators.runner import Simulator

            self.simulator = Simulator(site, seed=self.options.seed, free_ports=True, plant=plant)
            await self.simulator.start()
            site = self.simulator.client_site()
        # The forwarder retries forever with backoff and keeps everything on disk meanwhile,
        # so the backend itself should fail fast rather than hold a batch for a minute.
        config = site.config.storage
        write = config.write.model_copy(update={"max_retries": min(config.write.max_retries, 1),
                                                "timeout_s": min(config.write.timeout_s, 5.0)})
        self.storage = open_storage(config.model_copy(update={"write": write}), site_id=site.id)
        await self.storage.start()
        buffer_dir = Path(self.options.buffer_dir or f"var/buffer-{site.id}")
        self.forward = StoreAndForward(self.storage, DurableBuffer(buffer_dir))
        await self.forward.start()
        self.collectors = CollectorService(site, self.forward, protocols=self.options.protocols)
        await self.collectors.start()
        from dcim.analysis import AnalyticsService

        self.analytics = AnalyticsService(self.site, self.storage,
                                          interval_s=self.options.analytics_interval_s)
        await self.analytics.start()
        await self._start_alarms()
        if self.options.dashboard_port is not None:
            from dcim.dashboards.app import Dashboard

            self.dashboard = Dashboard(self, host=self.options.dashboard_host,
                                       port=self.options.dashboard_port)
            await self.dashboard.start()

    async def _start_alarms(self) -> None:
        """The alarm engine on its journal, evaluating what collectors and analytics know."""
        from dcim.alarm_journal import AlarmJournal
        from dcim.alarm_service import AlarmService
        from dcim.alarms import AlarmEngine

        config = self.site.config.alarms
        path = self.options.alarm_journal or config.journal_file(self.site.id)
        engine = AlarmEngine(config, AlarmJournal(path))
        if self.notifier is not None:
            await self.notifier.start()
        assert self.collectors is not None and self.forward is not None
        analytics, forward = self.analytics, self.forward
        self.alarms = AlarmService(self.site, engine, health=self.collectors.health,
                                   storage=self.storage,
                                   analysis=lambda: getattr(analytics, "last", None),
                                   forward_stats=forward.stats, sink=self.notifier)
        await self.alarms.start()

    async def _backfill(self) -> PlantModel:
        """Write recent simulated history, so PUE and trends show at once; returns the plant."""
        from dcim.simulators.backfill import backfill
        from dcim.simulators.plant import PlantModel

        plant = PlantModel(self.site, seed=self.options.seed)
        storage = open_storage(self.site.config.storage, site_id=self.site.id)
        await storage.start()
        try:
            now = time.time()
            start = now - self.options.backfill_s
            # A store that already holds part of the window (an earlier run) keeps it: history
            # is only added after its newest sample, never interleaved with what was stored.
            keys = [d.series(p.name) for d in self.site.devices.values()
                    for p in d.profile.points]
            latest = await storage.read_latest(keys)
            newest = max((s.time_ns for s in latest.values()), default=0) / 1e9
            if newest > start:
                start = newest + BACKFILL_STEP_S
                log.info("store already holds recent history; backfilling only after it",
                         extra={"newest_stored_s": round(newest, 3),
                                "backfill_s": round(max(0.0, now - start), 1)})
            if now - start >= BACKFILL_STEP_S:
                await backfill(self.site, storage, start_s=start, end_s=now,
                               step_s=BACKFILL_STEP_S, plant=plant)
        finally:
            await storage.close()
        return plant

    async def stop(self) -> None:
        """Stop in reverse order; what storage did not take stays in the buffer."""
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.alarms is not None:
            await self.alarms.close()
            if self.alarms.engine.journal is not None:
                self.alarms.engine.journal.close()
        if self.notifier is not None:  # after the alarms: their last events are queued
            await self.notifier.close()
        if self.analytics is not None:
            await self.analytics.close()
        if self.collectors is not None:
            await self.collectors.close()
        if self.forward is not None:
            await self.forward.close()
        if self.storage is not None:
            await self.storage.close()
        if self.simulator is not None:
            await self.simulator.stop()

    def status_line(self) -> str:
        """One line: devices up/stale/down, polls, errors, samples stored, buffer depth."""
        assert self.collectors is not None and self.forward is not None
        s = self.collectors.summary()
        elapsed = max(1e-9, time.time() - self.started_s)
        f = self.forward.stats()
        pue = "PUE live: -"
        last = getattr(self.analytics, "last", None)
        if last is not None:
            fig = last.live.pue
            pue = (f"PUE live {fig.value:.3f} ({fig.category})" if fig.value is not None
                   else f"PUE live: withheld, coverage {fig.coverage:.0%}")
            pue += " | CM yes" if last.redundancy.concurrently_maintainable else " | CM NO"
            pue += f" | anomalies {len(last.anomalies)}"
        if self.alarms is not None:
            shown = [a for a in self.alarms.engine.active() if a.announced
                     and a.state is not AlarmState.NORMAL]
            unack = sum(a.state is not AlarmState.ACKED for a in shown)
            pue += f" | alarms {len(shown)} ({unack} unacknowledged)"
        return (f"{pue} | devices {s.up}/{s.devices} up, {s.stale} stale, {s.down} down | "
                f"polls {s.polls:,} ({s.polls / elapsed:,.0f}/s) errors {s.errors:,} "
                f"missed cycles {s.missed_cycles} | stored {f.written:,} "
                f"({f.written / elapsed:,.0f} points/s) buffered {f.buffered:,}")


async def run_until_interrupted(system: System, *, seconds: float | None = None,
                                out: TextIO | None = None, every_s: float = 2.0,
                                on_started: Callable[[System], None] | None = None) -> None:
    """Run the system and print its status line every few seconds (until Ctrl-C or seconds)."""
    out = out if out is not None else sys.stdout  # looked up now: tests and tools swap it
    await system.start()
    if on_started is not None:
        on_started(system)
    tty = out.isatty()
    deadline = time.monotonic() + seconds if seconds is not None else None
    try:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(every_s if deadline is None else
                                max(0.0, min(every_s, deadline - time.monotonic())))
            line = system.status_line()
            out.write(("\r" + line.ljust(150)) if tty else line + "\n")
            out.flush()
    finally:
        if tty:
            out.write("\n")
        await system.stop()
