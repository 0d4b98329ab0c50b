"""How long the alarm journal holds the event loop when operators act in a burst.

Run: .venv/bin/python bench/journal.py [--actions 300] [--dir DIR]

300 alarms are raised, then 300 acknowledgements arrive at once, each as its own event-loop
callback (as 300 HTTP requests would), while a ticker sleeps 1 ms at a time and a health
probe is queued behind them. Figures:
- max per action: the longest one acknowledgement held the loop;
- max stall: the longest the ticker waited beyond its 1 ms (the 300 callbacks are ready at
  once, so the loop runs them back to back: the stall is their sum);
- probe wait: how long the probe queued behind the 300 actions (what /healthz saw);
- durable after: when every action was committed to disk (flush), from the first action.
The journal is in --dir (default: the system temp dir; put it on the disk the system uses:
a tmpfs has no fsync cost). Prints figures only; the report keeps the results.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _common import machine, table  # noqa: I001  (puts the repo on sys.path)

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.types import Condition, Priority
from dcim.config.alarms import AlarmsConfig

S = 1_000_000_000
TICK_S = 0.001


async def burst(engine: AlarmEngine, ids: list[str], now_ns: int) -> dict[str, float]:
    """Acknowledge every alarm, each in its own callback; measure the loop meanwhile."""
    stalls: list[float] = []
    per_action: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(TICK_S)
            stalls.append(time.perf_counter() - t0 - TICK_S)

    async def act(alarm_id: str) -> None:
        t0 = time.perf_counter()
        engine.acknowledge(alarm_id, "bench", now_ns, "burst")
        per_action.append(time.perf_counter() - t0)

    async def probe(queued: float) -> float:
        return time.perf_counter() - queued

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    actions = [asyncio.create_task(act(i)) for i in ids]
    waited = asyncio.create_task(probe(time.perf_counter()))
    await asyncio.gather(*actions)
    handled = time.perf_counter() - t0
    flush = getattr(engine.journal, "flush", None)
    if flush is not None:
        await asyncio.to_thread(flush)
    durable = time.perf_counter() - t0
    await asyncio.sleep(0.01)
    done.set()
    await tick
    return {"max per action ms": max(per_action) * 1000, "max stall ms": max(stalls) * 1000, "probe wait ms": await waited * 1000,
            "handled ms": handled * 1000, "durable after ms": durable * 1000}


def run(count: int, folder: Path | None) -> dict[str, float]:
    """One burst of `count` acknowledgements on a fresh journal in `folder` (None: the engine
    without a journal, the floor)."""
    conds = [Condition(f"unit:UPS-{i}:down", "unit", Priority.HIGH, f"ups {i} tripped",
                       unit=f"UPS-{i}") for i in range(count)]
    journal = AlarmJournal(folder / "alarms.sqlite") if folder is not None else None
    engine = AlarmEngine(AlarmsConfig(), journal)
    try:
        engine.evaluate(conds, S)
        if journal is not None:
            getattr(journal, "flush", lambda: None)()
        return asyncio.run(burst(engine, [c.alarm_id for c in conds], 2 * S))
    finally:
        if journal is not None:
            journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actions", type=int, default=300, help="acknowledgements at once")
    parser.add_argument("--dir", type=Path, default=None, help="where the journal goes")
    parser.add_argument("--repeat", type=int, default=3, help="bursts (fresh journal each)")
    args = parser.parse_args()
    rows = [["engine alone", *(round(v, 1) for v in run(args.actions, None).values())]]
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            figures = run(args.actions, Path(tmp))
        rows.append([f"journaled, burst {i + 1}", *(round(v, 1) for v in figures.values())])
    print(machine())
    print(table(["run", "max per action ms", "max stall ms", "probe wait ms", "handled ms",
                 "durable after ms"], rows))


if __name__ == "__main__":
    main()
