"""A rack that loses one of its own feeds while its PDU keeps serving the other racks: the live
state records it (`transition/<rack>/feeds`, once per change) and the availability from those
transitions gives that rack the same figures as the one from every sample."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from dcim.analytics.availability import summarize
from dcim.collectors.base import DeviceHealth, DeviceStatus
from dcim.live.service import RESTATE_EVERY_S, LiveState
from dcim.report_transitions import (FEEDS, Recorded, rack_feed_states, read_recorded,
                                     transition_key)
from dcim.reports import AvailabilityReport, build_availability
from dcim.simulators.backfill import backfill
from dcim.simulators.plant import PlantModel
from dcim.simulators.snapshot import Snapshot
from dcim.storage.base import SeriesKey
from dcim.storage.embedded import EmbeddedStorage
from tests.test_live_state import ListSink, all_up, feed
from tests.test_live_state import T0 as LIVE_T0
from tests.test_reports_transitions import GRID, M, S, SITE, T0, figures, ns, store, systems

__all__ = ["store"]  # the store fixture of tests/test_reports_transitions.py

PDU = "PDU-A-H1-1"
RACK, NEIGHBOUR = sorted(r.id for r in SITE.racks.values() if r.feed_a == PDU)[:2]
NS = 1_000_000_000


class RackBreakerOpen(PlantModel):
    """The plant with one rack's own feed-A breaker open over [start_s, end_s): its monitor
    reads 0 kW on feed A and feed B carries the whole rack; the PDU serves its other racks."""

    def __init__(self, rack: str, start_s: float, end_s: float) -> None:
        super().__init__(SITE, seed=0)
        self.monitor, self.start_s, self.end_s = f"RM-{rack}", start_s, end_s

    def _open(self, snapshot: Snapshot) -> Snapshot:
        if self.start_s <= snapshot.time_s < self.end_s:
            values = snapshot.devices[self.monitor].values
            values["feed_b_power_kw"] += values["feed_a_power_kw"]
            values["feed_a_power_kw"] = 0.0
        return snapshot

    def step(self, time_s: float) -> Snapshot:
        return self._open(super().step(time_s))

    def simulate_range(self, start_s: float, end_s: float, step_s: float) -> Iterator[Snapshot]:
        return (self._open(s) for s in super().simulate_range(start_s, end_s, step_s))


def feeds_of(sink: ListSink, rack: str) -> list[tuple[int, float]]:
    key = SeriesKey("transition", rack, FEEDS)
    return [(s.time_ns, s.value) for s in sink.samples if s.series == key]


def test_the_live_state_writes_a_racks_feeds_once_per_change(
        caplog: pytest.LogCaptureFixture) -> None:
    sink = ListSink()
    health = all_up()
    live = LiveState(SITE, sink, health=lambda: health)
    plant = RackBreakerOpen(RACK, LIVE_T0 + 180, LIVE_T0 + 360)
    with caplog.at_level(logging.INFO, logger="dcim.live.service"):
        feed(live, plant, 10)  # a build a minute: 11 builds, the breaker open for 3 of them
    both, b_only = 1 + 2, 2 + 4  # bits: a live 1, b live 2, a dead 4
    assert feeds_of(sink, RACK) == [(int(LIVE_T0 * NS), both),
                                    (int((LIVE_T0 + 180) * NS), b_only),
                                    (int((LIVE_T0 + 360) * NS), both)]
    assert feeds_of(sink, NEIGHBOUR) == [(int(LIVE_T0 * NS), both)]
    # the PDU kept serving its other racks: it never changed state
    pdu = [s.value for s in sink.samples if s.series == transition_key(PDU)]
    assert pdu == [1.0]
    lost = [r for r in caplog.records if r.getMessage() == f"{RACK} feeds: a live, b live -> "
            "a dead, b live"]
    assert [r.levelno for r in lost] == [logging.WARNING]
    # restated with every unit's state each hour, changed or not
    feed(live, plant, 0, start_s=LIVE_T0 + RESTATE_EVERY_S)
    assert feeds_of(sink, NEIGHBOUR)[-1] == (int((LIVE_T0 + RESTATE_EVERY_S) * NS), both)
    assert len(feeds_of(sink, NEIGHBOUR)) == 2


def test_a_feed_without_a_good_reading_is_neither_live_nor_dead() -> None:
    sink = ListSink()
    health = all_up()
    live = LiveState(SITE, sink, health=lambda: health)
    plant = PlantModel(SITE, seed=4)
    feed(live, plant, 0)
    monitor = SITE.devices[f"RM-{RACK}"]
    health[monitor.id] = DeviceHealth(monitor.id, monitor.gateway.id, status=DeviceStatus.DOWN,
                                      errors=1, last_ok_ns=1, last_error="TimeoutError")
    feed(live, plant, 0, start_s=LIVE_T0 + 60)
    # unknown, not dead: the report counts that rack unknown, as it does without samples
    assert feeds_of(sink, RACK) == [(int(LIVE_T0 * NS), 3.0), (int((LIVE_T0 + 60) * NS), 0.0)]


A, B, A_DEAD, B_DEAD = 1, 2, 4, 8  # the bits of transition/<rack>/feeds


def recorded_feeds(**racks: tuple[Sequence[float], Sequence[int]]) -> Recorded:
    """Racks' recorded feeds over GRID (10 one-minute steps, all covered): rack id ->
    (minutes of each change, its bit mask)."""
    return Recorded(GRID, M, np.ones(GRID.size, dtype=bool), changes={
        transition_key(r, FEEDS): (ns(*at), np.array(masks, dtype=float))
        for r, (at, masks) in racks.items()})


@pytest.mark.parametrize(("at", "masks", "single", "expected"), [
    ((0, 3, 5), (A | B, B | A_DEAD, A | B), False, "UUUGGUUUUU"),
    # off the grid: a feed is live for every step it was live in part (the MAX of its power)
    ((0, 3.5, 5.2), (A | B, B | A_DEAD, A | B), False, "UUUUGUUUUU"),
    # each feed live in part of step 3, never both: up, as the samples' MAX per feed gives (a
    # count of live feeds would say degraded)
    ((0, 3, 3.5, 4), (A | B, B | A_DEAD, A | B_DEAD, A | B), False, "UUUUUUUUUU"),
    # both dead is down; a feed without a reading is neither: one live is up, one dead unknown
    ((0, 2, 4, 6), (A_DEAD | B_DEAD, B, A_DEAD, A | B), False, "DDUU??UUUU"),
    ((1, 4), (A, A_DEAD), True, "?UUUDDDDDD"),  # single-corded: its feed a
], ids=["on-grid", "off-grid", "each-live-in-part", "dead-and-unknown", "single-corded"])
def test_a_racks_recorded_feeds_are_put_on_the_grid_as_its_samples_would_be(
        at: Sequence[float], masks: Sequence[int], single: bool, expected: str) -> None:
    out = rack_feed_states(recorded_feeds(R=(at, masks)), "R", single_corded=single)
    assert "".join("UGD?"[c] for c in out) == expected


def test_racks_whose_feeds_paint_alike_share_one_array() -> None:
    # R2 changed in other seconds of the same minutes and was restated; R3 lost feed a at
    # the start of minute 3, not during it
    rec = recorded_feeds(R1=((0, 3.5, 5.2), (A | B, B | A_DEAD, A | B)),
                         R2=((0.1, 3.6, 5.9, 8.3), (A | B, B | A_DEAD, A | B, A | B)),
                         R3=((0, 3, 5.2), (A | B, B | A_DEAD, A | B)))
    r1, r2, r3 = (rack_feed_states(rec, r) for r in ("R1", "R2", "R3"))
    assert r2 is r1 and len(rec.rack_feeds) == 2
    assert "".join("UGD?"[c] for c in r1) == "UUUUGUUUUU"
    assert "".join("UGD?"[c] for c in r3) == "UUUGGUUUUU"
    assert not r1.flags.writeable


FEED_LOST = (20, 35)  # minutes after T0: RACK on feed B alone


async def history(storage: EmbeddedStorage) -> None:
    plant = RackBreakerOpen(RACK, T0 / S + FEED_LOST[0] * 60, T0 / S + FEED_LOST[1] * 60)
    await backfill(SITE, storage, start_s=T0 / S, end_s=T0 / S + 3600, step_s=60.0,
                   progress=False, plant=plant, live=True)


def from_transitions(report: AvailabilityReport, times: np.ndarray, codes: np.ndarray,
                     rack: str) -> tuple[object, ...]:
    """A rack's figures from its painted codes, summed up as the report sums up a rack."""
    r = SITE.racks[rack]
    return figures(summarize(rack, "rack", times, report.step_s, codes,
                             cause_down="no power on any feed",
                             cause_degraded=f"on one feed ({r.feed_a} / {r.feed_b})",
                             start_ns=report.start_ns, end_ns=report.end_ns))


async def test_a_rack_losing_one_feed_reads_the_same_from_transitions_and_samples(
        store: EmbeddedStorage) -> None:
    await history(store)
    end = T0 + 3600 * S
    report = await build_availability(SITE, store, T0, end, source="samples")
    sampled = systems(report)
    # the samples see the rack on one feed for the span, its neighbours on the PDU on both
    lost = (FEED_LOST[1] - FEED_LOST[0]) * 60.0
    assert sampled[RACK].degraded_s == lost and sampled[NEIGHBOUR].degraded_s == 0.0
    assert [(i.start_ns, i.end_ns) for i in sampled[RACK].incidents] == [
        (T0 + FEED_LOST[0] * M, T0 + FEED_LOST[1] * M)]
    # ... and the PDU, serving its other racks, stayed up in the live state
    assert {r.value for r in await store.read_range(transition_key(PDU), 0, end)} == {1.0}
    # the rack's own transitions, painted on the report's grid, give the same figures
    times = T0 + np.arange(60, dtype=np.int64) * M
    keys = [transition_key(r, FEEDS) for r in (RACK, NEIGHBOUR)]
    recorded = await read_recorded(store, SITE.id, keys, times, M, end)
    assert recorded.mask(keys[0]).all() and recorded.mask(keys[1]).all()
    assert recorded.changes[keys[0]][0].size == 3  # start, lost, back: not one per sample
    got = {r: from_transitions(report, times, rack_feed_states(recorded, r), r)
           for r in (RACK, NEIGHBOUR)}
    assert got == {r: figures(sampled[r]) for r in (RACK, NEIGHBOUR)}
    assert got[RACK] != got[NEIGHBOUR]


async def test_the_report_from_transitions_sees_a_rack_on_one_feed(
        store: EmbeddedStorage) -> None:
    await history(store)
    end = T0 + 3600 * S
    recorded = systems(await build_availability(SITE, store, T0, end))
    sampled = systems(await build_availability(SITE, store, T0, end, source="samples"))
    assert recorded[RACK].degraded_s == sampled[RACK].degraded_s == 900.0
    assert figures(recorded[RACK]) == figures(sampled[RACK])
