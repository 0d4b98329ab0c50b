"""What one alarm evaluation costs (every evaluate_interval_s, 5 s by default).

Run: .venv/bin/python bench/alarms.py [--repeat 20]

Per site (reference, 2,000-rack synthetic) and per load (no alarm, 1 % and 10 % of devices
silent, every rack monitor with an anomaly), timed as the median of --repeat:
- baseline: one pass over the device health (a dict comprehension of the devices not up),
  the least any evaluation must do;
- `conditions`: building the conditions and suppressions (dcim/alarms/sources.py);
- `evaluate`: the engine on those conditions in steady state (alarms already raised), with
  no journal, and with the SQLite journal (only changes are written: steady state writes none);
- the first evaluation that raises them all, journaled (a flood's worst case).
Prints figures only; docs/performance.md ("Alarms") keeps the results.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine, median_ms, table  # noqa: I001  (puts the repo on sys.path)

from dcim.config.alarms import ALARM_SOURCES, AlarmDelays, AlarmsConfig
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.sources import conditions
from dcim.alarms.engine import AlarmEngine
from dcim.analytics.anomaly_base import Anomaly
from dcim.analytics.redundancy import analyse
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.site import Site, load_site, site_from_dict
from dcim.site.generate import SiteSpec, generate_site
from dcim.storage.base import SeriesKey

REPO = Path(__file__).resolve().parent.parent
S = 1_000_000_000



def health_of(site: Site, silent_share: float) -> dict[str, DeviceHealth]:
    """Every device up except every n-th, down with a timeout."""
    out = {}
    step = int(1 / silent_share) if silent_share else 0
    for i, device_id in enumerate(sorted(site.devices)):
        h = DeviceHealth(device_id=device_id, gateway="gw", status=DeviceStatus.UP)
        if step and i % step == 0:
            h.status, h.errors, h.last_error = DeviceStatus.DOWN, 3, "TimeoutError"
        out[device_id] = h
    return out


def anomalies_of(site: Site) -> list[Anomaly]:
    """One envelope anomaly on the top inlet of every rack monitor."""
    return [Anomaly(series=SeriesKey("rack_monitor", d.id, "inlet_temp_top_c"), layer="envelope",
                    kind="above_recommended", since_ns=0, last_ns=0, raised_ns=0, value=28.0,
                    expected=(18.0, 27.0), score=1.0, severity="low", message="inlet high")
            for d in site.devices_of_type("rack_monitor")]


class Analysis:
    def __init__(self, redundancy: Any, anomalies: list[Anomaly]) -> None:
        self.redundancy, self.anomalies = redundancy, anomalies


def bench_load(name: str, site: Site, report: Any, label: str, share: float,
               with_anomalies: bool, repeat: int, tmp: Path) -> list[list[object]]:
    """The rows of one site under one load."""
    health = health_of(site, share)
    analysis = Analysis(report, anomalies_of(site) if with_anomalies else [])

    def build() -> Any:
        return conditions(site, health=health, down=[], analysis=analysis)

    found, suppress = build()
    # no delays: the first evaluation raises everything
    config = AlarmsConfig(delays={src: AlarmDelays(on_delay_s=0, off_delay_s=0)
                                  for src in ALARM_SOURCES})
    first_t0 = time.perf_counter()
    journaled = AlarmEngine(config, AlarmJournal(tmp / f"{name}-{label}.sqlite"))
    journaled.evaluate(found, 0, suppress=suppress)
    first_ms = (time.perf_counter() - first_t0) * 1000
    plain = AlarmEngine(config)
    plain.evaluate(found, 0, suppress=suppress)
    clock = [S]

    def steady(engine: AlarmEngine) -> Callable[[], Any]:
        def run() -> Any:
            clock[0] += S
            return engine.evaluate(found, clock[0], suppress=suppress)
        return run

    def baseline() -> Any:
        return {k: h for k, h in health.items() if h.status is not DeviceStatus.UP}

    base = median_ms(baseline, repeat)
    cond_ms = median_ms(build, repeat)
    plain_ms = median_ms(steady(plain), repeat)
    journal_ms = median_ms(steady(journaled), repeat)
    assert journaled.journal is not None
    journaled.journal.close()
    head = f"{name} ({len(site.devices):,} devices), {label}: {len(found):,} alarms"
    return [[head, "health pass (baseline)", f"{base:.2f}", "1.0"],
            [head, "conditions", f"{cond_ms:.2f}", f"{cond_ms / base:.1f}"],
            [head, "evaluate, steady", f"{plain_ms:.2f}", f"{plain_ms / base:.1f}"],
            [head, "evaluate, steady, journaled", f"{journal_ms:.2f}",
             f"{journal_ms / base:.1f}"],
            [head, "first evaluation, journaled", f"{first_ms:.1f}", f"{first_ms / base:.1f}"]]


def bench_site(name: str, site: Site, repeat: int, tmp: Path) -> list[list[object]]:
    """Every load on one site."""
    report = analyse(site)
    rows: list[list[object]] = []
    for label, share, with_anomalies in [("no alarm", 0.0, False), ("1 % silent", 0.01, False),
                                         ("10 % silent", 0.10, False),
                                         ("anomaly per rack", 0.0, True)]:
        rows += bench_load(name, site, report, label, share, with_anomalies, repeat, tmp)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per figure")
    args = parser.parse_args()
    sites = [("reference", load_site(REPO / "config" / "cyberport5.yaml")),
             ("synthetic", site_from_dict(generate_site(SiteSpec(racks=2000, halls=4))))]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, site in sites:
            rows += bench_site(name, site, args.repeat, Path(tmp))
    print(machine())
    print(table(["site and load", "step", "median ms", "vs baseline"], rows))


if __name__ == "__main__":
    main()
