"""`dcim demo` and `dcim run`: the whole system on a site (simulators in the demo) until
Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
from pathlib import Path

from dcim.cli import run_until_stopped
from dcim.site import load_site
from dcim.site.summary import summarize
from dcim.system import System, SystemOptions, run_until_interrupted

log = logging.getLogger(__name__)


def run_demo(path: str | Path, *, seconds: float | None = None, simulate: bool = True,
             host: str = "127.0.0.1", port: int | None = 8080,
             backfill_s: float = 3600.0) -> int:
    """Validate the site, start simulators, collectors, storage and the dashboard; 0 once
    stopped (seconds passed, Ctrl-C or SIGTERM)."""
    site = load_site(path)
    print(summarize(site))
    # simulated history first (an hour by default), so PUE and trends show from the first screen
    system = System(site, SystemOptions(simulate=simulate,
                                        backfill_s=backfill_s if simulate else 0.0,
                                        analytics_interval_s=15.0, dashboard_port=port,
                                        dashboard_host=host))
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
