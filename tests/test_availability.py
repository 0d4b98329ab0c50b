"""analytics/availability.py: states per step, availability, incidents (hand-computed tables)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcim.analytics.availability import (DEGRADED, DOWN, UNKNOWN, UP, combined, flag_states,
                                         group_states, planned_mask, rack_states,
                                         single_feed_states, summarize, unit_states, worst)

NAN = math.nan
S = 1_000_000_000
T0 = 1_800_000_000 * S


def arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def times(n: int, step_s: float = 60.0) -> np.ndarray:
    return T0 + np.arange(n, dtype=np.int64) * int(step_s * S)


@pytest.mark.parametrize(("status", "expected"), [
    ((0, 1, 2, 3, 4, NAN), [UP, UP, UP, DOWN, DOWN, UNKNOWN]),
])
def test_unit_states_trip_at_three(status: tuple[float, ...], expected: list[int]) -> None:
    assert unit_states(arr(*status)).tolist() == expected


@pytest.mark.parametrize(("a", "b", "expected"), [
    pytest.param(5.0, 4.0, UP, id="both-live"),
    pytest.param(5.0, 0.0, DEGRADED, id="b-dead"),
    pytest.param(0.0, 4.0, DEGRADED, id="a-dead"),
    pytest.param(0.0, 0.01, DOWN, id="both-dead"),
    pytest.param(5.0, NAN, UP, id="a-live-b-unknown"),
    pytest.param(0.0, NAN, UNKNOWN, id="a-dead-b-unknown"),
    pytest.param(NAN, NAN, UNKNOWN, id="no-data"),
])
def test_rack_states(a: float, b: float, expected: int) -> None:
    assert rack_states(arr(a), arr(b)).tolist() == [expected]


def test_single_feed_groups_flags_and_worst() -> None:
    assert single_feed_states(arr(3.0, 0.0, NAN)).tolist() == [UP, DOWN, UNKNOWN]
    # N+1 with N = 3: 5 available up, 4 up (still N+1), 3 degraded (at N), 2 down (below N)
    assert group_states(arr(5, 4, 3, 2, NAN), arr(3, 3, 3, 3, 3), "N+1").tolist() == [
        UP, UP, DEGRADED, DOWN, UNKNOWN]
    assert group_states(arr(2, 1), arr(1, 1), "2N").tolist() == [UP, DEGRADED]
    assert flag_states(arr(1, 0, NAN)).tolist() == [UP, DEGRADED, UNKNOWN]
    w = worst(np.array([UP, UP, UNKNOWN, UNKNOWN], dtype=np.int8),
              np.array([DEGRADED, UNKNOWN, DOWN, UNKNOWN], dtype=np.int8))
    assert w.tolist() == [DEGRADED, UP, DOWN, UNKNOWN]


def test_a_day_with_a_planned_and_an_unplanned_outage() -> None:
    # 1,440 one-minute steps: down 30 min at 02:00 (planned window 01:50-02:40), down 12 min
    # at 10:00 (unplanned), degraded 60 min at 14:00, no data for 2 h at 20:00
    n = 1440
    codes = np.full(n, UP, dtype=np.int8)
    codes[120:150] = DOWN
    codes[600:612] = DOWN
    codes[840:900] = DEGRADED
    codes[1200:1320] = UNKNOWN
    t = times(n)
    planned = planned_mask(t, 60 * S, [(int(T0 + 110 * 60 * S), int(T0 + 160 * 60 * S))])
    a = summarize("UPS-A3", "ups_module", t, 60.0, codes, planned=planned, cause_down="tripped")
    assert (a.up_s, a.degraded_s, a.down_planned_s, a.down_unplanned_s, a.unknown_s) == (
        (1440 - 30 - 12 - 60 - 120) * 60.0, 3600.0, 1800.0, 720.0, 7200.0)
    assert a.coverage == pytest.approx(1320 / 1440)
    assert a.availability == pytest.approx((1440 - 120 - 42) / 1320)
    assert a.availability_unplanned == pytest.approx((1440 - 120 - 42) / (1320 - 30))
    assert [(i.state, i.planned, i.duration_s, i.cause) for i in a.incidents] == [
        ("down", True, 1800.0, "tripped"), ("down", False, 720.0, "tripped"),
        ("degraded", False, 3600.0, "degraded")]
    assert a.failures == 1 and a.mttr_s == 720.0
    assert a.mtbf_s == pytest.approx(a.up_s + a.degraded_s)


def test_a_partial_last_step_and_no_data_at_all() -> None:
    t = times(3)
    a = summarize("x", "unit", t, 60.0, np.array([UP, UP, DOWN], dtype=np.int8),
                  end_ns=int(T0 + 150 * S))
    assert (a.up_s, a.down_unplanned_s) == (120.0, 30.0)
    assert a.incidents[0].end_ns == T0 + 150 * S and a.incidents[0].duration_s == 30.0
    # a period starting half-way into the first step counts only its second half
    late = summarize("x", "unit", t, 60.0, np.array([DOWN, UP, UP], dtype=np.int8),
                     start_ns=int(T0 + 30 * S), end_ns=int(T0 + 180 * S))
    assert (late.down_unplanned_s, late.up_s) == (30.0, 120.0)
    assert late.incidents[0].start_ns == T0 + 30 * S and late.incidents[0].duration_s == 30.0
    empty = summarize("y", "unit", t, 60.0, np.full(3, UNKNOWN, dtype=np.int8))
    assert empty.availability is None and empty.coverage == 0.0 and empty.mtbf_s is None


def test_combined_is_the_mean_system() -> None:
    t = times(10)
    one = summarize("r1", "rack", t, 60.0, np.array([UP] * 10, dtype=np.int8))
    two = summarize("r2", "rack", t, 60.0, np.array([UP] * 8 + [DOWN] * 2, dtype=np.int8))
    both = combined("IT load", "racks", [one, two])
    assert both.availability == pytest.approx(0.9) and both.down_unplanned_s == 60.0
    assert [i.system for i in both.incidents] == ["r2"]
    with pytest.raises(ValueError, match="at least one"):
        combined("none", "racks", [])


@pytest.mark.parametrize(("codes", "enough", "deficit"), [
    pytest.param([UP] * 10, True, False, id="all-up"),
    pytest.param([UP] * 9 + [UNKNOWN], True, False, id="90-percent-known"),
    pytest.param([UP] * 8 + [UNKNOWN] * 2, False, False, id="80-percent-known"),
    pytest.param([UNKNOWN] * 10, False, False, id="no-data"),
    pytest.param([UP] * 9 + [DEGRADED], True, True, id="degraded"),
    pytest.param([UP, DOWN] + [UNKNOWN] * 8, False, True, id="down-little-data"),
])
def test_enough_data_and_deficit(codes: list[int], enough: bool, deficit: bool) -> None:
    a = summarize("R1", "IT load", times(len(codes)), 60.0, np.array(codes, dtype=np.int8))
    assert (a.enough_data, a.deficit) == (enough, deficit)


def test_a_period_off_the_step_grid_with_planned_downtime_at_its_edge() -> None:
    # steps at 0, 60, 120 s; the period runs from 30 s to 150 s: the first and last steps
    # count half, and the planned half-step is told apart from the unplanned minute
    t = times(3)
    a = summarize("x", "unit", t, 60.0, np.array([DOWN, DOWN, UP], dtype=np.int8),
                  planned=np.array([True, False, False]), start_ns=int(t[0]) + 30 * S,
                  end_ns=int(t[0]) + 150 * S)
    assert (a.down_planned_s, a.down_unplanned_s, a.up_s, a.unknown_s) == (30.0, 60.0, 30.0, 0.0)
    assert [(i.start_ns - int(t[0]), i.end_ns - int(t[0]), i.planned) for i in a.incidents] == [
        (30 * S, 120 * S, False)]
