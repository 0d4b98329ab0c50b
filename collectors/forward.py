"""StoreAndForward: every sample goes to the durable buffer first, then to storage in order.

Collectors call add(); it appends to the DurableBuffer and returns (no network). A background
task reads unacked samples oldest first, writes them with storage.write() and acks them only
after the write succeeded, so an outage, a restart or a SIGKILL never loses a stored-to-disk
sample: the backlog is replayed in order when storage answers again.

What cannot reach the disk is counted instead of raised: an append that fails (disk full, I/O
error) adds to lost_samples and sets buffer_error; a cycle begun (begin_cycle) and not added
before the process died is reported at the next start (lost_at_restart).
"""

from __future__ import annotations

import asyncio
import errno
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
    lost_samples: int  # samples add() could not append (disk full, I/O error) since start
    buffer_error: str  # why appends fail right now; "" while the buffer is fine
    lost_at_restart: int  # samples of the cycles lost in flight by the previous process
    lost_cycles_at_restart: int


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
        probe_interval_s: float = 2.0,
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
        self.probe_interval_s = probe_interval_s
        self.rejected_dir = Path(rejected_dir) if rejected_dir else buffer.directory / "rejected"
        self._backoff = Backoff(retry_backoff_s[0], retry_backoff_s[1], rng=rng or random.Random())
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._replay_until = buffer.appended_number  # samples recovered from a previous run
        self._outage_since: float | None = None
        self._storage_silent = False  # a probe may end the backoff early (see _await_storage)
        self._buffer_failing_since: float | None = None
        self._lost_while_failing = 0
        self._rejected_files = 0
        self.written = 0
        self.replayed = 0
        self.rejected_samples = 0
        self.write_errors = 0
        self.last_error = ""
        self.last_write_ok_s: float | None = None
        self.lost_samples = 0
        self.buffer_error = ""

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

    @property
    def lost_at_restart(self) -> int:
        """Samples of the cycles the previous process polled and died before buffering."""
        return self.buffer.recovery.lost_cycle_samples

    def stats(self) -> ForwardStats:
        """A snapshot of the counters."""
        return ForwardStats(self.written, self.buffered, self.replayed, self.rejected_samples,
                            self.dropped_samples, self.write_errors, self.last_error,
                            self.last_write_ok_s, self.outage_s, self.buffer.bytes_on_disk,
                            self.lost_samples, self.buffer_error, self.lost_at_restart,
                            self.buffer.recovery.lost_cycles)

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
        try:
            self.buffer.close()
        except OSError as exc:  # the files are closed; what the kernel holds is on disk
            self._buffer_failed(exc, 0)
        log.info("store-and-forward closed", extra={"written": self.written,
                                                     "kept_on_disk": self.buffer.depth})

    # -- input ---------------------------------------------------------------------------

    def begin_cycle(self, tag: str, expected: int) -> None:
        """Mark that a cycle of `expected` samples (group tag) is being polled (never raises OSError)."""
        try:
            self.buffer.begin_cycle(tag, expected)
        except OSError as exc:
            self._buffer_failed(exc, 0)

    def add(self, samples: Sample | Iterable[Sample], *, cycle: str | None = None) -> None:
        """Append samples to the durable buffer (never waits for the network).

        cycle: the tag of a begin_cycle() these samples complete. A failing disk does not
        raise: the samples are counted in lost_samples and the next add tries again.
        """
        # Keys are checked by the buffer the first time a segment sees them (key_check).
        columns = SampleColumns.of([samples] if isinstance(samples, Sample) else samples)
        before = self.buffer.appended_number
        try:
            self.buffer.append(columns, done_cycle=cycle)
        except OSError as exc:
            self._buffer_failed(exc, len(columns) - (self.buffer.appended_number - before))
            return
        if self._buffer_failing_since is not None:
            self._buffer_recovered()
        if self.buffer.depth >= self.batch_size:
            self._wake.set()

    def _buffer_failed(self, exc: OSError, lost: int) -> None:
        """Count what an append could not keep; log at the start of a failing spell only."""
        self.lost_samples += lost
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        self.buffer_error = f"buffer {'disk full' if full else 'write failed'}: {exc}"
        if self._buffer_failing_since is None:
            self._buffer_failing_since = self._clock()
            self._lost_while_failing = 0
            log.error("durable buffer cannot append; collected samples are being lost",
                      extra={"error": self.buffer_error, "directory": str(self.buffer.directory),
                             "lost_samples": lost})
        self._lost_while_failing += lost

    def _buffer_recovered(self) -> None:
        assert self._buffer_failing_since is not None
        log.info("durable buffer appends again", extra={
            "failed_s": round(self._clock() - self._buffer_failing_since, 3),
            "lost_samples": self._lost_while_failing, "lost_total": self.lost_samples,
            "error": self.buffer_error})
        self._buffer_failing_since = None
        self.buffer_error = ""

    # -- background ----------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """Keep the fsync promise when appends stop: nothing waits longer than the interval."""
        while True:
            await asyncio.sleep(self.buffer.fsync_interval_s / 4)
            try:
                self.buffer.sync_if_due()
            except OSError as exc:
                self._buffer_failed(exc, 0)

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
                done = await self._forward_guarded()
                if done is None:
                    break
                if not done:
                    await self._await_storage()

    async def _await_storage(self) -> None:
        """Wait out the backoff before the next batch, probing every probe_interval_s.

        A probe writes the oldest sample alone (Storage has no ping; one sample is the smallest
        write and it is the next one due anyway). The first probe storage takes after it stopped
        answering ends the wait, so replay starts within probe_interval_s of its return;
        batches that fail while probes pass (storage answers but chokes on size) stay on backoff.
        """
        retry_at = self._clock() + self._backoff.next_delay()
        probe_at = self._clock() + self.probe_interval_s
        while True:
            now = self._clock()
            if min(probe_at, retry_at) > now:
                await self._sleep(min(probe_at, retry_at) - now)
            if self._clock() >= retry_at:
                return
            probe_at = self._clock() + self.probe_interval_s  # from this probe's start
            answered = await self._forward_guarded(probe=True)
            if answered is None:
                return
            if answered and self._storage_silent:
                self._storage_silent = False
                return
            self._storage_silent = not answered

    async def _forward_guarded(self, *, probe: bool = False) -> bool | None:
        try:
            return await self._forward(probe=probe)
        except Exception as exc:  # a bug in a backend must not stop forwarding for good
            log.exception("unexpected error while forwarding; retrying")
            self._failed(exc, 0)
            return False

    async def forward_once(self) -> bool | None:
        """Write the oldest unacked batch: True when done, False when it stays, None if empty."""
        return await self._forward()

    async def _forward(self, *, probe: bool = False) -> bool | None:
        """Write the oldest batch (one sample for a probe, which may take probe_interval_s)."""
        start = self.buffer.ack_cursor.number
        batch, cursor = self.buffer.read_unacked(1 if probe else self.batch_size)
        if not batch:
            return None
        try:
            async with asyncio.timeout(self.probe_interval_s if probe else None):
                rejected = await self._write_isolating(batch)
        except TRANSIENT_ERRORS as exc:
            self._failed(exc, len(batch))
            return False
        self._stored(start, cursor, len(batch), rejected, probe=probe)
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
            self._storage_silent = True
            log.warning("storage write failed; buffering on disk and retrying",
                        extra={"samples": samples, "buffered": self.buffer.depth,
                               "error": self.last_error})

    def _stored(self, start: int, cursor: Cursor, n: int, rejected: list[tuple[list[Sample], str]],
                *, probe: bool = False) -> None:
        if rejected:
            self._set_aside(rejected)
        self.buffer.ack(cursor)
        refused = sum(len(b) for b, _ in rejected)
        ends_outage = not probe or not self.buffer.depth  # else a batch must pass first
        if not ends_outage:
            self._replay_until = max(self._replay_until, cursor.number)
        elif self._outage_since is not None:
            outage_s = self._clock() - self._outage_since
            self._outage_since = None
            self._replay_until = self.buffer.appended_number  # all on disk now is backlog
            log.warning("storage is back; replaying the backlog in order",
                        extra={"outage_s": round(outage_s, 3), "backlog": self.buffer.depth + n,
                               "write_errors": self.write_errors})
        self.written += n - refused
        self.replayed += max(0, min(cursor.number, self._replay_until) - start)
        self.last_write_ok_s = self._wall_clock()
        if ends_outage:
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
    """Log what the buffer found on open: INFO when clean, WARNING when bytes or cycles were lost."""
    down_s = None if report.newest_time_ns is None else round(now_s - report.newest_time_ns / 1e9, 3)
    level = logging.WARNING if report.discarded_bytes or report.lost_cycles else logging.INFO
    msg, args = "recovered %d samples from the buffer; discarded %d torn bytes", [
        report.recovered_samples, report.discarded_bytes]
    if report.lost_cycles:
        msg += "; lost %d cycles (%d samples) polled and not buffered before the stop"
        args += [report.lost_cycles, report.lost_cycle_samples]
    log.log(level, msg, *args,
            extra={"recovered_samples": report.recovered_samples,
                   "discarded_bytes": report.discarded_bytes, "torn_frames": report.torn_frames,
                   "discarded_samples": report.discarded_samples,
                   "lost_cycles": report.lost_cycles, "lost_cycle_samples": report.lost_cycle_samples,
                   "lost_cycle_tags": list(report.lost_cycle_tags),
                   "oldest_time_ns": report.oldest_time_ns, "newest_time_ns": report.newest_time_ns,
                   "newest_age_s": down_s})
