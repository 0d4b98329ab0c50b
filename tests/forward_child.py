"""Helper process for the SIGKILL test: StoreAndForward over SQLite, appending numbered samples.

    python -m tests.forward_child BUFFER_DIR DB_PATH produce   # append forever, print progress
    python -m tests.forward_child BUFFER_DIR DB_PATH stall     # as produce, then hang mid-cycle
    python -m tests.forward_child BUFFER_DIR DB_PATH drain     # recover, forward all, exit

Each batch is one poll cycle: begin_cycle(TAG, BATCH), then add(..., cycle=TAG).
`produce` prints one JSON line per batch after add() returned: {"appended", "synced", "written"}.
`stall` does the same until STALL_AFTER samples, then begins one more cycle, prints
{"began": TAG, "expected": BATCH} and waits forever without adding it (the parent kills it).
`drain` prints {"drained", "replayed", "lost_at_restart", "lost_cycles_at_restart"}.
Logs (JSON lines, with the recovery report) go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dcim.collectors.buffer import DurableBuffer
from dcim.collectors.forward import StoreAndForward
from dcim.logs import setup_logging
from dcim.storage.base import Sample, SeriesKey
from dcim.config.storage import EmbeddedStorageConfig
from dcim.storage.embedded import EmbeddedStorage

T0 = 1_700_000_000_000_000_000
KEY = SeriesKey("ups_module", "UPS-A1", "output_kw")
BATCH = 100
TAG = "modbus:GW-1:5s"
STALL_AFTER = 20_000
FSYNC_SAMPLES = 1000
FSYNC_INTERVAL_S = 0.2


def emit(**fields: object) -> None:
    """One JSON line on stdout, flushed so the parent sees it before a kill."""
    print(json.dumps(fields), flush=True)


async def main(buffer_dir: str, db_path: str, mode: str) -> None:
    """Run one phase of the SIGKILL test."""
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=db_path), site_id="t")
    await storage.start()
    buffer = DurableBuffer(buffer_dir, fsync_samples=FSYNC_SAMPLES, fsync_interval_s=FSYNC_INTERVAL_S)
    # A long flush interval leaves a backlog on disk at the moment of the kill.
    producing = mode != "drain"
    forward = StoreAndForward(storage, buffer, batch_size=100_000 if producing else 5000,
                              flush_interval_s=0.5 if producing else 0.05)
    await forward.start()
    if producing:
        seq = 0
        while True:
            forward.begin_cycle(TAG, BATCH)
            if mode == "stall" and seq >= STALL_AFTER:
                emit(began=TAG, expected=BATCH)
                await asyncio.Event().wait()  # polled, never added: SIGKILL comes here
            forward.add([Sample(KEY, T0 + n, float(n)) for n in range(seq, seq + BATCH)], cycle=TAG)
            seq += BATCH
            emit(appended=seq, synced=buffer.synced_number, written=forward.written)
            await asyncio.sleep(0.002)
    while forward.buffered:
        await asyncio.sleep(0.02)
    await forward.close()
    await storage.close()
    stats = forward.stats()
    emit(drained=stats.written, replayed=stats.replayed, lost_at_restart=stats.lost_at_restart,
         lost_cycles_at_restart=stats.lost_cycles_at_restart)


if __name__ == "__main__":
    setup_logging("INFO", "json")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
