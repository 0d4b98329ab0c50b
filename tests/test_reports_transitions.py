"""dcim/report_transitions.py: availability from the live state's transitions gives the same
figures as re-aggregating every sample, on simulated history played through the live state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dcim.analytics.availability import DEGRADED, DOWN, UNKNOWN, UP, SystemAvailability
from dcim.config.storage import EmbeddedStorageConfig
from dcim.report_transitions import LIVE_FIRST, WORST_FIRST, coverage, paint
from dcim.reports import (AvailabilityReport, PlannedWindow, build_availability,
                          render_markdown)
from dcim.simulators.backfill import backfill
from dcim.simulators.faults import FaultSpec
from dcim.simulators.plant import PlantModel
from dcim.site import load_site
from dcim.storage.embedded import EmbeddedStorage

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
S = 1_000_000_000
M = 60 * S
T0 = 1_796_083_200 * S  # 2026-12-01 00:00 UTC
GRID = T0 + np.arange(10, dtype=np.int64) * M


def ns(*minutes: float) -> np.ndarray:
    return np.array([T0 + int(m * M) for m in minutes], dtype=np.int64)


@pytest.mark.parametrize(("change_min", "codes", "order", "expected"), [
    # on the grid: one step per state, as one sample per step would give
    ((0, 3, 5), (UP, DOWN, UP), WORST_FIRST, "UUUDDUUUUU"),
    # off the grid: a status word is down for every step it was down in part (MAX) ...
    ((0, 3.5, 5.2), (UP, DOWN, UP), WORST_FIRST, "UUUDDDUUUU"),
    # ... a feed is live for every step it was live in part (MAX of the power)
    ((0, 3.5, 5.2), (UP, DOWN, UP), LIVE_FIRST, "UUUUDUUUUU"),
    # unknown before the first transition, and while the state says unknown
    ((2, 4, 6), (UP, UNKNOWN, DOWN), WORST_FIRST, "??UU??DDDD"),
    # a transition before the grid gives the state at its start
    ((-30,), (DOWN,), WORST_FIRST, "DDDDDDDDDD"),
    ((1, 1.5), (DEGRADED, UP), WORST_FIRST, "?GUUUUUUUU"),
], ids=["on-grid", "status-off-grid", "feed-off-grid", "unknown", "before-period", "short"])
def test_states_are_put_on_the_step_grid(change_min: Sequence[float], codes: Sequence[int],
                                         order: Sequence[int], expected: str) -> None:
    out = paint(GRID, M, ns(*change_min), np.array(codes, dtype=np.int8), order)
    assert "".join("UGD?"[c] for c in out) == expected


@pytest.mark.parametrize(("beats_min", "expected"), [
    ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), "##########"),
    ((0.5, 1.5, 2.5, 3.5), "####......"),  # the last heartbeat covers its own step only
    ((0, 1, 2, 6, 7, 8, 9), "###...####"),  # stopped for 4 min: not covered
    ((0, 1.1, 2.2, 3.1, 4.2, 5.1), "######...."),  # a minute and a bit apart: still running
    ((0, 0.25, 0.5, 0.75, 1, 3, 3.25, 3.5), "##.#......"),  # every 15 s (the demo), 2 min off
    ((0, 5, 10), "#....#...."),  # rebuilt every 5 min (a coarse backfill): not trusted
    ((), ".........."),
], ids=["every-minute", "ends", "stopped", "jitter", "demo", "coarse", "never"])
def test_the_heartbeat_says_when_the_live_state_ran(beats_min: Sequence[float],
                                                     expected: str) -> None:
    out = coverage(GRID, M, ns(*beats_min))
    assert "".join("#" if c else "." for c in out) == expected


def figures(a: SystemAvailability) -> tuple[object, ...]:
    return (a.availability, a.availability_unplanned, a.up_s, a.degraded_s, a.down_planned_s,
            a.down_unplanned_s, a.unknown_s, a.failures,
            tuple((i.state, i.start_ns, i.end_ns, i.planned, i.cause) for i in a.incidents))


def systems(report: AvailabilityReport) -> dict[str, SystemAvailability]:
    return {a.system: a for s in report.sections for a in [*s.systems, *([s.rollup]
                                                                        if s.rollup else [])]}


def assert_same(recorded: AvailabilityReport, sampled: AvailabilityReport) -> None:
    a, b = systems(recorded), systems(sampled)
    assert a.keys() == b.keys()
    different = {name: (figures(a[name]), figures(b[name])) for name in a
                 if figures(a[name]) != figures(b[name])}
    assert different == {}


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "store.sqlite")),
                              site_id=SITE.id)
    await storage.start()
    yield storage
    await storage.close()


FAULTS = [FaultSpec(kind="ups_module_trip", target="UPS-A3", at="10m", duration="15m"),
          FaultSpec(kind="crah_trip", target="CRAH-H1-2", at="20m", duration="20m"),
          FaultSpec(kind="pdu_breaker_open", target="PDU-A-H1-1", at="45m", duration="10m"),
          FaultSpec(kind="chiller_trip", target="CH-2", at="60m", duration="30m"),
          FaultSpec(kind="utility_loss", target="UTIL-A", at="100m", duration="8m")]


async def test_transitions_give_the_same_figures_as_the_samples(store: EmbeddedStorage) -> None:
    await backfill(SITE, store, start_s=T0 / S, end_s=T0 / S + 2 * 3600, step_s=60.0,
                   progress=False, faults=FAULTS, live=True)
    planned = [PlannedWindow("CH-2", T0 + 55 * M, T0 + 95 * M, "chiller service")]
    end = T0 + 2 * 3600 * S
    recorded = await build_availability(SITE, store, T0, end, planned=planned)
    sampled = await build_availability(SITE, store, T0, end, planned=planned, source="samples")
    assert_same(recorded, sampled)
    by = systems(recorded)
    # the history holds what the report must find, so the equality is not of empty reports
    assert (by["UPS-A3"].down_unplanned_s, by["CRAH-H1-2"].down_unplanned_s) == (900.0, 1200.0)
    assert by["CH-2"].down_planned_s == 1800.0 and by["UTIL-A"].failures == 1
    fed = [r.id for r in SITE.racks.values() if r.feed_a == "PDU-A-H1-1"]
    assert fed and all(by[r].degraded_s == 600.0 for r in fed)
    # at the measured load UPS A keeps its spare with one module out; the chillers do not
    assert by["ups-a-modules"].incidents == () and by["chillers"].degraded_s == 1800.0
    assert by["utility"].degraded_s == 480.0 and by["Tier III"].degraded_s > 0
    # the recorded path read transitions, and samples only where a group's verdict was lost
    live = recorded.evidence["live_state"]
    assert live["covered"] == 1.0 and live["transitions"] > 0
    assert recorded.evidence["series_read"] < 30 < sampled.evidence["series_read"]
    assert recorded.evidence["good_samples"] * 50 < sampled.evidence["good_samples"]
    # the evidence says where the figures came from
    assert "- live state: ran over 100.0 % of the period (120 heartbeats)" in \
        render_markdown(recorded)
    assert "- live state:" not in render_markdown(sampled)


async def test_history_without_transitions_is_read_from_the_samples(
        store: EmbeddedStorage) -> None:
    await backfill(SITE, store, start_s=T0 / S, end_s=T0 / S + 3600, step_s=60.0,
                   progress=False, faults=FAULTS[:1])
    recorded = await build_availability(SITE, store, T0, T0 + 3600 * S)
    sampled = await build_availability(SITE, store, T0, T0 + 3600 * S, source="samples")
    assert_same(recorded, sampled)
    assert systems(recorded)["UPS-A3"].down_unplanned_s == 900.0
    assert recorded.evidence["live_state"]["covered"] == 0.0
    assert recorded.evidence["series_read"] == sampled.evidence["series_read"]


async def test_a_period_partly_without_transitions(store: EmbeddedStorage) -> None:
    # the first hour backfilled without the live state (UPS-A3 trips at 00:50); then the live
    # state runs (the trip goes on until 01:10, when the module restarts, and a restart of
    # the live state records every unit's state again), CRAH-H1-2 trips 01:30-01:40
    plant = PlantModel(SITE, seed=0)
    t0 = T0 / S
    await backfill(SITE, store, start_s=t0, end_s=t0 + 3540, step_s=60.0, progress=False,
                   plant=plant, faults=[FaultSpec(kind="ups_module_trip", target="UPS-A3",
                                                  at="50m")])
    await backfill(SITE, store, start_s=t0 + 3600, end_s=t0 + 4140, step_s=60.0,
                   progress=False, plant=plant, live=True)
    plant.set_fault("ups_module_trip", "UPS-A3", False)
    await backfill(SITE, store, start_s=t0 + 4200, end_s=t0 + 7200, step_s=60.0,
                   progress=False, plant=plant, live=True,
                   faults=[FaultSpec(kind="crah_trip", target="CRAH-H1-2", at="20m",
                                     duration="10m")])
    end = T0 + 7200 * S
    recorded = await build_availability(SITE, store, T0, end)
    sampled = await build_availability(SITE, store, T0, end, source="samples")
    assert_same(recorded, sampled)
    ups = systems(recorded)["UPS-A3"]
    assert [(i.start_ns, i.end_ns) for i in ups.incidents] == [(T0 + 50 * M, T0 + 70 * M)]
    assert systems(recorded)["CRAH-H1-2"].down_unplanned_s == 600.0
    assert recorded.evidence["live_state"]["covered"] == 0.5  # from 01:00 on
    # every series is read for the first hour, and (the groups' levels aside) only for it
    assert recorded.evidence["series_read"] == sampled.evidence["series_read"]
    assert 0.45 < recorded.evidence["good_samples"] / sampled.evidence["good_samples"] < 0.55


async def test_an_unknown_source_is_refused(store: EmbeddedStorage) -> None:
    with pytest.raises(ValueError, match="source: expected 'auto' or 'samples'"):
        await build_availability(SITE, store, T0, T0 + M, source="transitions")
