"""Collector building blocks without servers: the point table and columnar samples."""

from __future__ import annotations

import asyncio
import math
from typing import cast

import pytest

from dcim.collectors.base import PointTable
from dcim.tasks import cancel_and_wait
from dcim.storage.base import Quality, Sample, SampleColumns, SeriesKey

KEYS = {name: SeriesKey("ups", "UPS-A1", name) for name in ("load_kw", "batt_v", "temp_c")}
G, S, B = Quality.GOOD, Quality.STALE, Quality.BAD


def test_good_poll_gives_good_samples_and_keeps_last_values() -> None:
    table = PointTable(KEYS, stale_after_ns=3_000)
    samples = table.good_values([10.0, 400.5, 25.0], 1_000)
    assert list(samples) == [Sample(KEYS["load_kw"], 1_000, 10.0, G),
                             Sample(KEYS["batt_v"], 1_000, 400.5, G),
                             Sample(KEYS["temp_c"], 1_000, 25.0, G)]
    # a point the device reports not implemented: bad sample with NaN, last good value kept
    samples = table.good_values([11.0, None, 26.0], 2_000)
    assert [s.quality for s in samples] == [G, B, G]
    assert math.isnan(samples[1].value)
    assert table.last_good == [11.0, 400.5, 26.0]
    assert table.good_ns == [2_000, 1_000, 2_000]
    assert table.states["batt_v"].quality is B and table.states["batt_v"].value == 400.5


def test_failed_polls_carry_the_last_good_value_stale_only_once_old_enough() -> None:
    table = PointTable(KEYS, stale_after_ns=3_000)
    table.good_values([10.0, 400.5, 25.0], 1_000)
    assert len(table.failed(2_000, S)) == 0  # 1 us old: not stale yet
    stale = table.failed(4_000, S)
    assert [(s.value, s.quality, s.time_ns) for s in stale] == [
        (10.0, S, 4_000), (400.5, S, 4_000), (25.0, S, 4_000)]
    bad = table.failed(5_000, B)  # a device error is bad at once
    assert [s.quality for s in bad] == [B, B, B] and bad[0].value == 10.0


def test_a_table_hands_out_columns_it_does_not_change_later() -> None:
    table = PointTable(KEYS, stale_after_ns=3_000)
    first = table.good_values([1.0, 2.0, 3.0], 1_000)
    table.good_values([4.0, None, 6.0], 2_000)
    table.failed(9_000, B)
    assert list(first) == [Sample(k, 1_000, v, G) for k, v in zip(KEYS.values(), [1.0, 2.0, 3.0])]


def test_sample_columns_behave_as_a_sequence_of_samples() -> None:
    k1, k2 = SeriesKey("a", "d1", "p"), SeriesKey("a", "d2", "p")
    rows = [Sample(k1, 1, 1.5, G), Sample(k2, 1, float("inf"), B), Sample(k1, 2, 2.5, S)]
    cols = SampleColumns.of(rows)
    assert len(cols) == 3 and cols[1] == rows[1] and cols[-1] == rows[-1]
    assert cols == rows and rows == cols and list(cols) == rows
    assert isinstance(cols[1:], SampleColumns) and cols[1:] == rows[1:]
    assert SampleColumns.of(cols) is cols
    joined = SampleColumns.join([cols[:1], cols[1:]])
    assert joined == rows and joined.keys == [k1, k2, k1]
    assert SampleColumns.join([]) == [] and not SampleColumns.join([])
    assert cols != rows[:2] and cols != "abc"
    with pytest.raises(TypeError):
        hash(cols)


async def test_cancel_and_wait_redelivers_a_swallowed_cancel() -> None:
    # The pattern of Python 3.11's wait_for losing a cancel: the loop catches it, goes on.
    swallowed = 0

    async def swallow_first() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    tasks = [asyncio.create_task(swallow_first()), asyncio.create_task(asyncio.sleep(60))]
    await asyncio.wait_for(cancel_and_wait(tasks, redeliver_s=0.05), 5)
    assert swallowed == 2
    assert tasks == []


async def test_connection_pool_hands_out_in_turn_and_passes_on_a_cancelled_handover() -> None:
    from dcim.collectors.modbus import _Connection, _Pool

    a, b = cast(_Connection, object()), cast(_Connection, object())  # the pool never looks inside
    pool = _Pool([a, b])
    assert pool.take_nowait() is a and await pool.take() is b and pool.take_nowait() is None
    first = asyncio.create_task(pool.take())
    second = asyncio.create_task(pool.take())
    third = asyncio.create_task(pool.take())
    await asyncio.sleep(0)
    pool.give(a)  # to the oldest waiter
    first.cancel()  # ... which is cancelled before it runs: a goes to the next in line
    assert await second is a
    assert first.cancelled() and not third.done()
    pool.give(b)
    assert await third is b
    pool.give(a)
    pool.give(b)
    assert pool.take_nowait() is a and pool.take_nowait() is b
