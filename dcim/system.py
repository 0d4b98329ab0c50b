"""The running system: (simulators) -> collectors -> live state -> alarms and dashboard, and
live state -> durable buffer -> storage -> history analytics and reports.

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
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TextIO

from dcim.alarms.types import AlarmState, Priority
from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.collectors.service import CollectorService
from dcim.live.service import LiveState
from dcim.live.state import Collection
from dcim.site import Site
from dcim.status_line import Status, StatusPrinter, status_of
from dcim.storage.base import Storage
from dcim.storage.factory import open_storage

if TYPE_CHECKING:  # imported lazily at run time: only the demo needs the simulators
    from prometheus_client import CollectorRegistry

    from dcim.alarms.service import AlarmService
    from dcim.analysis import AnalyticsService
    from dcim.dashboards.app import DashboardServer
    from dcim.notify.alertmanager import AlertmanagerClient
    from dcim.notify.notifier import Notifier
    from dcim.simulators.plant import PlantModel
    from dcim.simulators.backfill import Tier
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
    backfill_tiers: tuple[Tier, ...] = ()  # coarser steps for older history (simulators/backfill.py)
    backfill_progress: bool | None = False  # a progress bar (None: on a terminal only)
    analytics_interval_s: float = 60.0
    dashboard_port: int | None = None  # None: no dashboard; 0: any free port
    dashboard_host: str = "127.0.0.1"
    alarm_journal: str | None = None  # default: the site's alarms.journal_path or var/
    notify_outbox: str | None = None  # default var/notify-<site>.sqlite


class System:
    """Every moving part of dcim for one site, started in order and stopped in reverse.

    The parts never see each other or this object: each gets the narrow thing it needs (the
    collectors a sample sink, the alarms a state source, the dashboard a state source and an
    alarm view). A part that fails to start stops everything started before it.
    """

    def __init__(self, site: Site, options: SystemOptions | None = None):
        self.options = options or SystemOptions()
        self.site = site
        self.simulator: Simulator | None = None
        self.storage: Storage | None = None
        self.forward: StoreAndForward | None = None
        self.live: LiveState | None = None
        self.collectors: CollectorService | None = None
        self.analytics: AnalyticsService | None = None
        self.alarms: AlarmService | None = None
        self.notifier: Notifier | None = None
        self.alertmanager: AlertmanagerClient | None = None
        self._metrics: CollectorRegistry | None = None  # built at the first scrape
        self.dashboard: DashboardServer | None = None
        self.started_s = 0.0
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        """Start the parts in data-flow order; on failure, stop what was started and re-raise."""
        self.started_s = time.time()
        async with AsyncExitStack() as stack:
            await self._start_parts(stack)
            self._stack = stack.pop_all()

    async def _start_parts(self, stack: AsyncExitStack) -> None:
        self._check_dashboard()  # before anything runs: nothing to undo
        site = self.site
        notifications = site.config.notifications
        if notifications is not None:  # built first: a missing secret stops us before anything runs
            from dcim.notify.notifier import Notifier

            outbox = self.options.notify_outbox or f"var/notify-{site.id}.sqlite"
            self.notifier = Notifier(notifications, outbox, tz=site.config.site.timezone)
        plant: PlantModel | None = None
        if self.options.simulate and self.options.backfill_s > 0:
            plant = await self._backfill()
        if self.options.simulate:
            from dcim.simulators.runner import Simulator

            self.simulator = simulator = Simulator(site, seed=self.options.seed, free_ports=True,
                                                   plant=plant)
            await simulator.start()
            stack.push_async_callback(simulator.stop)
            site = simulator.client_site()
        # The forwarder retries forever with backoff and keeps everything on disk meanwhile,
        # so the backend itself should fail fast rather than hold a batch for a minute.
        config = site.config.storage
        write = config.write.model_copy(update={"max_retries": min(config.write.max_retries, 1),
                                                "timeout_s": min(config.write.timeout_s, 5.0)})
        self.storage = storage = open_storage(config.model_copy(update={"write": write}),
                                              site_id=site.id)
        await storage.start()
        stack.push_async_callback(storage.close)
        buffer_dir = Path(self.options.buffer_dir or f"var/buffer-{site.id}")
        self.forward = forward = StoreAndForward(
            storage, DurableBuffer.from_config(buffer_dir, config.buffer))
        await forward.start()
        stack.push_async_callback(forward.close)
        # collectors -> live state -> durable forwarder: the live path never waits on storage
        collectors: CollectorService | None = None
        analytics: AnalyticsService | None = None
        self.live = live = LiveState(
            self.site, forward,
            health=lambda: collectors.health() if collectors is not None else {},
            collection=lambda: self._collection(),
            analytics=lambda: analytics.latest() if analytics is not None else (None, ()),
            history=storage, store_every_s=self.options.analytics_interval_s)
        await live.start()
        stack.push_async_callback(live.close)
        self.collectors = collectors = CollectorService(site, live,
                                                        protocols=self.options.protocols)
        await collectors.start()
        stack.push_async_callback(collectors.close)
        from dcim.analysis import AnalyticsService

        self.analytics = analytics = AnalyticsService(
            self.site, storage, sink=forward, interval_s=self.options.analytics_interval_s,
            on_result=live.poke)  # anomalies reach the live state, and alarms, at once
        await analytics.start()
        stack.push_async_callback(analytics.close)
        await self._start_alarms(stack, live)
        if self.options.dashboard_port is not None:
            await self._start_dashboard(stack, live)

    async def _start_alarms(self, stack: AsyncExitStack, live: LiveState) -> None:
        """The alarm engine on its journal, evaluating each new live snapshot."""
        from dcim.alarms.engine import AlarmEngine
        from dcim.alarms.journal import AlarmJournal
        from dcim.alarms.journal_heads import head_export
        from dcim.alarms.service import AlarmService

        config = self.site.config.alarms
        path = self.options.alarm_journal or config.journal_file(self.site.id)
        # heads exported (signed when a key is configured) to a log the journal cannot rewrite;
        # a configured key that is missing stops the start here (JournalKeyError)
        journal = AlarmJournal(path, head_export(config, path))
        stack.callback(journal.close)
        engine = AlarmEngine(config, journal)
        if self.notifier is not None:
            await self.notifier.start()
            stack.push_async_callback(self.notifier.close)  # after the alarms: their last events
        self.alarms = alarms = AlarmService(self.site, engine, live,
                                            backend=self.site.config.storage.backend,
                                            sink=self.notifier)
        await alarms.start()
        stack.push_async_callback(alarms.close)
        notifications = self.site.config.notifications
        if notifications is not None and notifications.alertmanager is not None:
            from dcim.notify.alertmanager import AlertmanagerClient

            # reads the alarms and wakes on their changes: the alarm engine never waits on it
            self.alertmanager = am = AlertmanagerClient(
                notifications.alertmanager, alarms, self.site.id, delivery=notifications.delivery)
            await am.start()
            stack.push_async_callback(am.close)

    def _check_dashboard(self) -> None:
        """Refuse a dashboard the network could reach without sign-in, or unreadable TLS files
        (ConfigError naming the site file's field)."""
        if self.options.dashboard_port is None:
            return
        from dcim.dashboards.security import is_loopback, tls_context
        from dcim.site.errors import ConfigError, ConfigIssue

        host, auth = self.options.dashboard_host, self.site.config.auth
        where = str(self.site.source or "<site>")
        if auth is None and not is_loopback(host):
            raise ConfigError([ConfigIssue(where, None, ("auth",), (
                f"the dashboard would listen on {host!r}, beyond this machine, and the site "
                "file has no `auth:` section: anyone reaching the port could act on alarms "
                "under any name. Add `auth:` (users, roles, TLS: see docs/security.md) or "
                "serve on 127.0.0.1 (the default --host)"))])
        if auth is not None:
            from dcim.auth.roles import Role
            from dcim.auth.store import UserStore

            users = UserStore(auth.users_file(self.site.id))
            try:
                admins = [u for u in users.users() if u.role is Role.ADMIN and not u.disabled]
            finally:
                users.close()
            if not admins:  # the install step that was missed: say how to do it
                log.warning("nobody can administer sign-in: create the first admin with "
                            f"`dcim users add NAME {where} --role admin`",
                            extra={"users_db": auth.users_file(self.site.id)})
        if auth is not None and auth.tls_certificate and auth.tls_private_key:
            try:
                tls_context(auth.tls_certificate, auth.tls_private_key)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError([ConfigIssue(where, None, ("auth", "tls_certificate"),
                                               f"cannot load the certificate and key "
                                               f"({auth.tls_certificate}, "
                                               f"{auth.tls_private_key}): {exc}")]) from None

    async def _start_dashboard(self, stack: AsyncExitStack, live: LiveState) -> None:
        from dcim.config.auth import LOOPBACK_NAMES
        from dcim.dashboards.app import DashboardServer, DashboardSettings, create_app
        from dcim.dashboards.security import is_loopback, tls_context

        storage, alarms, config = self.storage, self.alarms, self.site.config.auth
        host = self.options.dashboard_host
        auth, tls = None, None
        hosts: tuple[str, ...] = LOOPBACK_NAMES
        if config is not None:
            from dcim.auth.service import Authenticator
            from dcim.auth.store import UserStore

            store = UserStore(config.users_file(self.site.id))
            stack.callback(store.close)
            if not store.users():
                log.warning("sign-in is on but there are no users yet: add one with "
                            "`dcim users add NAME SITE --role admin`",
                            extra={"users_db": str(store.path)})
            auth, hosts = Authenticator(config, store), tuple(config.allowed_hosts)
            if not is_loopback(host) and set(hosts) <= set(LOOPBACK_NAMES):
                log.warning("only loopback names are allowed in the Host header: a browser "
                            "elsewhere gets 421 until its name for this machine is listed in "
                            "auth.allowed_hosts", extra={"host": host})
            if config.tls_certificate and config.tls_private_key:
                tls = tls_context(config.tls_certificate, config.tls_private_key)
            elif not is_loopback(host):
                log.warning("the dashboard serves sign-in without TLS beyond loopback: passwords "
                            "and session cookies cross the network in clear; set "
                            "auth.tls_certificate and auth.tls_private_key, or serve behind a "
                            "TLS proxy", extra={"host": host})
        settings = DashboardSettings(host=host, port=self.options.dashboard_port or 0,
                                     allowed_hosts=hosts)
        app = create_app(settings, live, alarms, metrics=self.metrics_text, health=self.healthy,
                         trend=storage.read_aggregate if storage is not None else None,
                         device_types={d.id: d.device_type for d in self.site.devices.values()},
                         points=self.site.point_units(), series=storage,
                         auth=auth)
        self.dashboard = server = DashboardServer(app, host=host,
                                                  port=self.options.dashboard_port or 0,
                                                  ssl_context=tls)
        await server.start()
        stack.push_async_callback(server.stop)

    def _collection(self) -> Collection:
        """Collection and store-and-forward health, for the live snapshot."""
        if self.collectors is None or self.forward is None:
            return Collection()
        s = self.collectors.summary()
        f = self.forward.stats()
        elapsed = max(1e-9, time.time() - self.collectors.started_at)
        return Collection(
            devices=s.devices, up=s.up, stale=s.stale, down=s.down,
            connecting=getattr(s, "connecting", 0), polls=s.polls, polls_per_s=s.polls / elapsed,
            errors=s.errors, missed_cycles=s.missed_cycles, stored=f.written,
            buffered=f.buffered, storage_outage_s=f.outage_s, storage_error=f.last_error,
            lost_samples=getattr(f, "lost_samples", 0) + getattr(f, "lost_at_restart", 0),
            buffer_error=getattr(f, "buffer_error", ""),
            gateways_down=tuple(self.collectors.gateways_down())
            if hasattr(self.collectors, "gateways_down") else ())

    def metrics_text(self) -> str:
        """The Prometheus exposition (prometheus_client, a private registry) of the collectors,
        the buffer, the live state, the alarms and Alertmanager posting."""
        from dcim.collectors.metrics import exposition, health_registry

        if self._metrics is None:
            self._metrics = health_registry(self.health_metrics)
        return exposition(self._metrics)

    def health_metrics(self) -> dict[str, Any]:
        """The figures /metrics shows, as plain data (named in dcim/collectors/metrics.py)."""
        from dcim.collectors.metrics import collect_metrics

        assert self.collectors is not None
        out = collect_metrics(self.collectors, self.forward)
        if self.live is not None:
            state, live = self.live.current(), self.live
            out["live"] = {"seq": state.seq, "builds": live.builds, "build_s": live.build_s,
                           "age_s": max(0.0, time.time() - state.time_ns / 1e9),
                           "units_down": len(state.down)}
        if self.alarms is not None:
            shown = [a for a in self.alarms.active()
                     if a.announced and a.state in (AlarmState.UNACK, AlarmState.ACKED)]
            out["alarms"] = {p.value: sum(a.priority is p for a in shown) for p in Priority}
        if self.alertmanager is not None:
            am = self.alertmanager.stats()
            out["alertmanager"] = {"posts": am.posts, "failures": am.failures,
                                   "firing": am.firing}
        return out

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Whether collection and storage work, with the figures that say so (/healthz)."""
        info: dict[str, Any] = {}
        ok = self.collectors is not None and self.forward is not None
        if self.forward is not None:
            stats = self.forward.stats()
            info |= {"buffered": stats.buffered, "storage_outage_s": stats.outage_s,
                     "last_error": stats.last_error}
            ok = ok and stats.outage_s == 0
        if self.collectors is not None:
            s = self.collectors.summary()
            info |= {"devices": s.devices, "up": s.up}
        if self.live is not None:
            info["state_seq"] = self.live.current().seq
        return ok, info

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
                span = now - start
                span_text = f"{span / 86400:.1f} days" if span >= 86400 else (
                    f"{span / 3600:.1f} h" if span >= 3600 else f"{span / 60:.0f} min")
                print(f"writing {span_text} of simulated history "
                      f"({self.site.config.storage.backend}) ...", flush=True)
                figures = await backfill(self.site, storage, start_s=start, end_s=now,
                                         step_s=BACKFILL_STEP_S, plant=plant, live=True,
                                         tiers=self.options.backfill_tiers,
                                         progress=self.options.backfill_progress)
                print(f"history: {figures['samples']:,.0f} samples in "
                      f"{figures['seconds']:.0f} s", flush=True)
        finally:
            await storage.close()
        return plant

    async def stop(self) -> None:
        """Stop in reverse order; what storage did not take stays in the buffer."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    def status(self) -> Status:
        """The status line's fields (dcim/status_line.py): live state and active alarms."""
        assert self.live is not None
        return status_of(self.live.current(),
                         self.alarms.engine.active() if self.alarms is not None else None)

    def status_line(self, width: int | None = None) -> str:
        """The status line, fitted to width columns (None: every field in full)."""
        return self.status().line(width)


async def run_until_interrupted(system: System, *, seconds: float | None = None,
                                out: TextIO | None = None, every_s: float = 2.0,
                                on_started: Callable[[System], None] | None = None) -> None:
    """Run the system and print its status line every few seconds (until Ctrl-C or seconds)."""
    out = out if out is not None else sys.stdout  # looked up now: tests and tools swap it
    await system.start()
    if on_started is not None:
        on_started(system)
    printer = StatusPrinter(out)  # in place on a terminal, a line a minute to a file
    deadline = time.monotonic() + seconds if seconds is not None else None
    try:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(every_s if deadline is None else
                                max(0.0, min(every_s, deadline - time.monotonic())))
            printer.show(system.status())
    finally:
        printer.close()
        await system.stop()
