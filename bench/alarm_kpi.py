"""What the ISA-18.2 / EEMUA 191 alarm KPIs cost on a 30-day journal of 10^4 .. 10^6 events.

Run: .venv/bin/python bench/alarm_kpi.py [--repeat 5] [--sizes 10000 100000 1000000]

Per size a synthetic journal (seeded) is built first, not timed: 2,000 alarms, episodes of
raise, acknowledge (most) and clear, a priority mix near 80/15/5, a few shelved and suppressed
raises and bursts that flood and chatter. Then timed (median of --repeat):
- baseline: a plain-Python loop counting the raises in the period (the least any KPI must do);
- `alarm_kpis` over the journal; `verdicts` on its result.
Prints figures only; docs/performance.md keeps the results.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import machine, median_ms, table  # noqa: I001  (puts the repo on sys.path)

from dcim.alarms.types import Action, AlarmEvent, AlarmState, Priority
from dcim.analytics.alarm_kpi import alarm_kpis, verdicts

S = 1_000_000_000
DAY = 86_400 * S
T0 = 1_767_225_600 * S  # 2026-01-01 UTC
PERIOD_DAYS = 30
ALARMS = 2_000
PRIORITIES = (Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL)


def journal(n: int, seed: int = 7) -> list[AlarmEvent]:
    """About n events over PERIOD_DAYS: raise/ack/clear episodes, time-ordered."""
    rng = np.random.default_rng(seed)
    episodes = n // 3
    start = np.sort(rng.integers(0, PERIOD_DAYS * DAY, episodes))
    burst = rng.random(episodes) < 0.02  # squeeze 2 % into bursts: floods and chattering
    start[burst] = start[burst] // (10 * 60 * S) * (10 * 60 * S)
    alarm = rng.integers(0, ALARMS, episodes)
    alarm[burst] = alarm[burst] % 50
    prio = rng.choice(4, episodes, p=[0.8, 0.1, 0.05, 0.05])
    ack = start + rng.exponential(120, episodes).astype(np.int64) * S
    acked = rng.random(episodes) < 0.9
    clear = start + rng.exponential(1800, episodes).astype(np.int64) * S
    hidden = rng.random(episodes)  # < 1 %: shelved, 1-2 %: suppressed
    rows: list[tuple[int, int, Action, AlarmState, int, bool, bool]] = []
    for i in range(episodes):
        shelved, suppressed = bool(hidden[i] < 0.01), bool(0.01 <= hidden[i] < 0.02)
        a, p = int(alarm[i]), int(prio[i])
        rows.append((int(start[i]), a, Action.RAISE, AlarmState.UNACK, p, shelved, suppressed))
        if acked[i]:
            rows.append((int(ack[i]), a, Action.ACK, AlarmState.ACKED, p, shelved, suppressed))
        rows.append((int(clear[i]), a, Action.CLEAR, AlarmState.NORMAL, p, shelved, suppressed))
    rows.sort(key=lambda r: r[0])
    names = [f"device:PDU-{a:04d}:comm" for a in range(ALARMS)]
    return [AlarmEvent(T0 + t, names[a], act, st, PRIORITIES[p], "", shelved=sh,
                       suppressed=su, announce=not (sh or su))
            for t, a, act, st, p, sh, su in rows]



def count_raises(events: list[AlarmEvent], start_ns: int, end_ns: int) -> int:
    """The baseline: one plain-Python pass over the journal."""
    count = 0
    for e in events:
        if e.action is Action.RAISE and start_ns <= e.time_ns < end_ns:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per figure")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    start, end = T0, T0 + PERIOD_DAYS * DAY
    rows: list[list[object]] = []
    for n in args.sizes:
        events = journal(n)
        k = alarm_kpis(events, start, end)
        assert k.raises == count_raises(events, start, end)
        base = median_ms(lambda: count_raises(events, start, end), args.repeat)  # noqa: B023
        kpi = median_ms(lambda: alarm_kpis(events, start, end), args.repeat)  # noqa: B023
        ver = median_ms(lambda: verdicts(k), args.repeat)  # noqa: B023
        label = f"{len(events):,} events ({k.raises:,} raises, {k.flood_count} floods)"
        rows += [[label, "count raises, Python loop (baseline)", base, 1.0,
                  base * 1000 / len(events)],
                 [label, "alarm_kpis", kpi, kpi / base, kpi * 1000 / len(events)],
                 [label, "verdicts", ver, ver / base, "-"]]
    print(machine())
    print(table(["journal", "step", "median ms", "vs baseline", "us per event"], rows))


if __name__ == "__main__":
    main()
