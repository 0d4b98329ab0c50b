"""StoreAndForward: every sample goes to the durable buffer first, then to storage in order.

Collectors call add(); it appends to the DurableBuffer and returns (no network). A background
task reads unacked samples oldest first, writes them with storage.write() and acks them only
after the write succeeded, so an outage, a restart or a SIGKILL never loses a stored-to-disk
sample: the backlog is replayed in order when storage answers again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from dcim.collectors.base import Backoff
from dcim.collectors.buffer import Cursor, DurableBuffer, RecoveryReport
from dcim.storage.base import Sample, SampleColumns, Storage, StorageError
from dcim.storage.lineprotocol import validate_series_key
from dcim.storage.retry import StorageRejected
from dcim.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Errors that mean "storage is not there right now": keep the batch and try again later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError, OSError, TimeoutError, aiohttp.ClientError,
)


@dataclass(frozen=True, slots=True)
class ForwardStats:
    """Counters for health metrics, as one snapshot."""

    written: int
    buffered: int
    replayed: int
    rejected_samples: int
    dropped_samples: int
    write_errors: int
    last_error: str
    last_write_ok_s: float | None
    outage_s: float
    bytes_on_disk: int


class StoreAndForward:
    """The sink collectors write to: a durable buffer in front of a Storage, drained in order."""

    def __init__(
        self,
        storage: Storage,
        buffer: DurableBuffer,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        retry_backoff_s: tuple[float, float] = (0.5, 30.0),
        rejected_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.storage = storage
        self.buffer = buffer
        buffer.key_check = validate_series_key  # a key line protocol cannot carry fails add()
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.rejected_dir = Path(rejected_dir) if rejected_dir else buffer.directory / "rejected"
        self._backoff = Backoff(retry_backoff_s[0], retry_backoff_s[1], rng=rng or random.Random())
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._replay_until = buffer.appended_number  # samples recovered from a previous run
        self._outage_since: float | None = None
        self._rejected_files = 0
        self.written = 0
        self.replayed = 0
        self.rejected_samples = 0
        self.write_errors = 0
        self.last_error = ""
        self.last_write_ok_s: float | None = None

    # -- counters ------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Samples on disk not yet stored (the buffer's depth)."""
        return self.buffer.depth

    @property
    def dropped_samples(self) -> int:
        """Samples the buffer's bound dropped (oldest segments) since it was opened."""
        return self.buffer.dropped_samples

    @property
    def outage_s(self) -> float:
        """Seconds since the first failed write of the current outage; 0 when storage is fine."""
        return 0.0 if self._outage_since is None else self._clock() - self._outage_since

    def stats(self) -> ForwardStats:
        """A snapshot of the counters."""
        return ForwardStats(self.written, self.buffered, self.replayed, self.rejected_samples,
                            self.dropped_samples, self.write_errors, self.last_error,
                            self.last_write_ok_s, self.outage_s, self.buffer.bytes_on_disk)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Log what the buffer recovered and start the forwarding and fsync tasks."""
        log_recovery(self.buffer.recovery, self._wall_clock())
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._forward_loop(), name="dcim-forward"),
                           asyncio.create_task(self._sync_loop(), name="dcim-forward-fsync")]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Forward what storage takes within timeout_s, then fsync and keep the rest on disk."""
        if self._tasks:
            deadline = self._clock() + timeout_s
            self._wake.set()
            while self.buffer.depth and self._clock() < deadline and self._outage_since is None:
                await asyncio.sleep(0.01)
            await cancel_and_wait(self._tasks)
        self.buffer.close()
        log.info("store-and-forward closed", extra={"written": self.written,
                                                     "kept_on_disk": self.buffer.depth})

    # -- input ---------------------------------------------------------------------------

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        """Append samples to the durable buffer (never waits for the network)."""
        # Keys are checked by the buffer the first time a segment sees them (key_check).
        self.buffer.append(SampleColumns.of([samples] if isinstance(samples, Sample) else samples))
        if self.buffer.depth >= self.batch_size:
            self._wake.set()

    # -- background ----------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """Keep the fsync promise when appends stop: nothing waits longer than the interval."""
        while True:
            await asyncio.sleep(self.buffer.fsync_interval_s / 4)
            self.buffer.sync_if_due()

    async def _forward_loop(self) -> None:
        while True:
            if self.buffer.depth < self.batch_size:
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            while self.buffer.depth:
                try:
                    done = await self.forward_once()
                except Exception as exc:  # a bug in a backend must not stop forwarding for good
                    log.exception("unexpected error while forwarding; retrying")
                    self._failed(exc, 0)
                    done = False
                if done is None:
                    break
                if not done:
                    await self._sleep(self._backoff.next_delay())

    async def forward_once(self) -> bool | None:
        """Write the oldest unacked batch: True when done, False when it stays, None if empty."""
        start = self.buffer.ack_cursor.number
        batch, cursor = self.buffer.read_unacked(self.batch_size)
        if not batch:
            return None
        try:
            rejected = await self._write_isolating(batch)
        except TRANSIENT_ERRORS as exc:
            self._failed(exc, len(batch))
            return False
        self._stored(start, cursor, len(batch), rejected)
        return True

    async def _write_isolating(self, batch: Sequence[Sample]) -> list[tuple[list[Sample], str]]:
        """Write batch; when rejected, halve it until only the refused samples are left over."""
        try:
            await self.storage.write(batch)
        except StorageRejected as exc:
            if len(batch) == 1:
                return [(list(batch), str(exc))]
            mid = len(batch) // 2
            return await self._write_isolating(batch[:mid]) + await self._write_isolating(batch[mid:])
        return []

    def _failed(self, exc: BaseException, samples: int) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._outage_since is None:
            self._outage_since = self._clock()
            log.warning("storage write failed; buffering on disk and retrying",
                        extra={"samples": samples, "buffered": self.buffer.depth,
                               "error": self.last_error})

    def _stored(self, start: int, cursor: Cursor, n: int, rejected: list[tuple[list[Sample], str]]) -> None:
        if rejected:
            self._set_aside(rejected)
        self.buffer.ack(cursor)
        refused = sum(len(b) for b, _ in rejected)
        if self._outage_since is not None:
            outage_s = self._clock() - self._outage_since
            self._outage_since = None
            self._replay_until = self.buffer.appended_number  # all on disk now is backlog
            log.warning("storage is back; replaying the backlog in order",
                        extra={"outage_s": round(outage_s, 3), "backlog": self.buffer.depth + n,
                               "write_errors": self.write_errors})
        self.written += n - refused
        self.replayed += max(0, min(cursor.number, self._replay_until) - start)
        self.last_write_ok_s = self._wall_clock()
        self._backoff.reset()

    def _set_aside(self, rejected: list[tuple[list[Sample], str]]) -> None:
        """Move refused samples to rejected/ with the reason, as JSON lines, and count them."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        for samples, reason in rejected:
            self._rejected_files += 1
            path = self.rejected_dir / f"rejected-{time.time_ns()}-{self._rejected_files}.jsonl"
            lines = [json.dumps({"reason": reason, "samples": len(samples)})]
            lines += [json.dumps({"measurement": s.series.measurement, "device": s.series.device,
                                  "point": s.series.point, "time_ns": s.time_ns,
                                  "value": s.value if math.isfinite(s.value) else str(s.value),
                                  "quality": int(s.quality)}) for s in samples]
            path.write_text("\n".join(lines) + "\n")
            self.rejected_samples += len(samples)
            log.error("storage rejected samples; set aside, not retried",
                      extra={"samples": len(samples), "file": str(path),
                             "rejected_total": self.rejected_samples, "reason": reason})


def log_recovery(report: RecoveryReport, now_s: float) -> None:
    """Log what the buffer found on open: INFO when clean, WARNING when bytes were cut."""
    down_s = None if report.newest_time_ns is None else round(now_s - report.newest_time_ns / 1e9, 3)
    level = logging.WARNING if report.discarded_bytes else logging.INFO
    log.log(level, "recovered %d samples from the buffer; discarded %d torn bytes",
            report.recovered_samples, report.discarded_bytes,
            extra={"recovered_samples": report.recovered_samples,
                   "discarded_bytes": report.discarded_bytes, "torn_frames": report.torn_frames,
                   "discarded_samples": report.discarded_samples,
                   "oldest_time_ns": report.oldest_time_ns, "newest_time_ns": report.newest_time_ns,
                   "newest_age_s": down_s})
