"""read_recorded reads each transition series from RESTATE_EVERY_S (and a margin) before the
report, not from time 0: the live state restates every state hourly, so one there gives the
state at the start. A series with no state in that window (a store written before the
restatements) is carried from its last transition before it, as before. Either way the report's
figures are those of reading every transition from time 0."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from dcim.live.service import RESTATE_EVERY_S
from dcim.report_transitions import read_recorded, transition_key
from dcim.reports import build_availability
from dcim.storage.base import Aggregate, Bucket, Quality, Sample, SeriesKey, Storage
from dcim.storage.embedded import EmbeddedStorage
from tests.test_reports_transitions import M, S, SITE, T0, figures, store, systems

__all__ = ["store"]  # the store fixture of tests/test_reports_transitions.py

H = 3600 * S
YEARS = 2 * 365 * 24 * H  # the units' last change: two years before the report
END = T0 + 6 * H
UPS, CRAH = "UPS-A3", "CRAH-H1-2"
# each unit's changes (time, up 1 / down 0): UPS-A3 went down two years ago and comes back in
# the report; CRAH-H1-2 has been up since then and trips inside the report
CHANGES = {UPS: ((T0 - YEARS, 0.0), (T0 + 90 * M, 1.0)),
           CRAH: ((T0 - YEARS, 1.0), (T0 + 30 * M, 0.0), (T0 + 50 * M, 1.0))}
BOUND = T0 - 2 * int(RESTATE_EVERY_S * S)  # the window is an hour and a bit, not years


class Counting:
    """A store that records every read_range (key, start, rows returned) and hands it on;
    `from_zero` reads transition series from time 0, as read_recorded did before its window."""

    def __init__(self, inner: Storage, *, from_zero: bool = False) -> None:
        self.inner, self.from_zero = inner, from_zero
        self.reads: list[tuple[SeriesKey, int, int]] = []

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def write(self, samples: Sequence[Sample]) -> None:
        await self.inner.write(samples)

    async def read_range(self, series: SeriesKey, start_ns: int, end_ns: int, *,
                         good_only: bool = False) -> list[Sample]:
        if self.from_zero and series.measurement == "transition":
            start_ns = 0
        rows = await self.inner.read_range(series, start_ns, end_ns, good_only=good_only)
        self.reads.append((series, start_ns, len(rows)))
        return rows

    async def read_aggregate(self, series: SeriesKey, start_ns: int, end_ns: int,
                             every_ns: int, fn: Aggregate) -> list[Bucket]:
        return await self.inner.read_aggregate(series, start_ns, end_ns, every_ns, fn)

    async def read_latest(self, series: Iterable[SeriesKey]) -> dict[SeriesKey, Sample]:
        return await self.inner.read_latest(series)

    def transitions_read(self, before_ns: int) -> dict[SeriesKey, int]:
        """Rows read per transition series by reads starting before `before_ns`."""
        out: dict[SeriesKey, int] = {}
        for key, start, rows in self.reads:
            if key.measurement == "transition" and start < before_ns:
                out[key] = out.get(key, 0) + rows
        return out


async def history(storage: Storage, restated: set[str]) -> None:
    """The units' changes as the live state records them (the units in `restated` restated each
    hour since their last change two years ago, the others as a version without restatements
    wrote them), its heartbeat every minute from two hours before the report to its end."""
    rows = []
    for unit, changes in CHANGES.items():
        for i, (t, value) in enumerate(changes):
            rows.append(Sample(transition_key(unit), t, value, Quality.GOOD))
            stop = changes[i + 1][0] if i + 1 < len(changes) else END
            if unit in restated:
                rows += [Sample(transition_key(unit), at, value, Quality.GOOD)
                         for at in range(t + H, stop, H)]
    beat = SeriesKey("analytics", SITE.id, "units_down")
    rows += [Sample(beat, t, 0.0, Quality.GOOD) for t in range(T0 - 2 * H, END, M)]
    await storage.write(rows)


@pytest.mark.parametrize(("restated", "read_before"), [
    ({UPS, CRAH}, set()),
    (set(), {UPS, CRAH}),  # a store written by a version without restatements
    ({CRAH}, {UPS}),
], ids=["restated", "not-restated", "one-restated"])
async def test_a_report_reads_transitions_from_an_hour_before_it_with_the_same_figures(
        store: EmbeddedStorage, restated: set[str], read_before: set[str]) -> None:
    await history(store, restated)
    bounded, from_zero = Counting(store), Counting(store, from_zero=True)
    got = systems(await build_availability(SITE, bounded, T0, END))
    want = systems(await build_availability(SITE, from_zero, T0, END))
    # the same figures as reading every transition from time 0, and not those of empty reports
    assert {k: figures(a) for k, a in got.items()} == {k: figures(a) for k, a in want.items()}
    assert (got[UPS].down_unplanned_s, got[CRAH].down_unplanned_s) == (5400.0, 1200.0)
    assert got[UPS].unknown_s == got[CRAH].unknown_s == 0.0
    # only a series without a state in force in the window was read from before it (for its
    # last transition); a restated one's years of restatements were not
    early = {k.device for k, rows in bounded.transitions_read(BOUND).items() if rows}
    assert early == read_before
    restated_rows = sum(rows for key, _, rows in bounded.reads
                        if key.measurement == "transition" and key.device in restated)
    assert restated_rows <= len(restated) * 10  # an hour before, six in: not two years' 17,520


async def test_a_state_older_than_the_window_is_carried_into_the_report(
        store: EmbeddedStorage) -> None:
    # no restatement: UPS-A3's last transition before the report is two years old
    await history(store, restated=set())
    times = T0 + M * np.arange(360, dtype=np.int64)
    recorded = await read_recorded(store, SITE.id, [transition_key(UPS)], times, M, END)
    changes, values = recorded.changes[transition_key(UPS)]
    # its last transition before the window (down), then the one in the report (up)
    assert changes.tolist() == [T0 - YEARS, T0 + 90 * M] and values.tolist() == [0.0, 1.0]
    assert recorded.mask(transition_key(UPS)).all()
