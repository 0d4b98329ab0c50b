"""BatchWriter: batches samples for any Storage, retries failed writes, never drops on outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from dcim.storage.base import Sample, SeriesKey, Storage, StorageError
from dcim.config.storage import WriteOptions
from dcim.storage.lineprotocol import validate_series_key
from dcim.storage.retry import StorageRejected, backoff_s
from dcim.tasks import cancel_task

log = logging.getLogger(__name__)


class BatchWriter:
    """Collects samples and writes them in order, in batches of write.batch_size.

    A batch that fails (outage, 5xx) is retried with backoff up to write.max_retries, then
    stays pending and is tried again on the next flush: nothing is dropped. A batch the
    backend rejects for good (StorageRejected, e.g. a field type conflict) is counted in
    `rejected` and logged, since sending it again would block every later sample forever.
    The writer does not own the storage: start and close it separately.
    """

    def __init__(
        self,
        storage: Storage,
        options: WriteOptions,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.storage = storage
        self.options = options
        self._sleep = sleep
        self._pending: list[Sample] = []
        self._known: set[SeriesKey] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed_attempts = 0
        self.rejected = 0

    @property
    def pending(self) -> int:
        """Samples accepted by add() and not yet stored."""
        return len(self._pending)

    def add(self, samples: Sample | Iterable[Sample]) -> None:
        """Queue one sample or many (never blocks); wakes the flusher when a batch is full."""
        batch = [samples] if isinstance(samples, Sample) else list(samples)
        for s in batch:
            if s.series not in self._known:
                validate_series_key(s.series)  # raises at the caller, not later in the flusher
                self._known.add(s.series)
        self._pending.extend(batch)
        if len(self._pending) >= self.options.batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Start the background flusher."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dcim-batch-writer")

    async def close(self) -> None:
        """Stop the flusher and flush what is pending (with retries)."""
        if self._task is not None:
            await cancel_task(self._task)
            self._task = None
        await self.flush()
        if self._pending:
            log.warning("storage writer closed with samples pending",
                        extra={"pending": len(self._pending), "written": self.written})

    async def _run(self) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                async with asyncio.timeout(self.options.flush_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if not await self.flush():
                # Store still failing: wait a full interval even if add() keeps waking us.
                await self._sleep(self.options.flush_interval_s)

    async def flush(self) -> bool:
        """Write every pending sample in order; False when a batch is still pending after retries."""
        async with self._lock:
            while self._pending:
                batch = self._pending[: self.options.batch_size]
                if not await self._write_with_retries(batch):
                    return False
                del self._pending[: len(batch)]
            return True

    async def _write_with_retries(self, batch: list[Sample]) -> bool:
        """True when the batch is done with (stored or rejected for good)."""
        opts = self.options
        for attempt in range(opts.max_retries + 1):
            try:
                await self.storage.write(batch)
            except StorageRejected as exc:
                self.rejected += len(batch)
                log.error("storage rejected a batch; it is not retried",
                          extra={"samples": len(batch), "rejected": self.rejected, "error": str(exc)})
                return True
            except StorageError as exc:
                self.failed_attempts += 1
                if attempt == opts.max_retries:
                    log.warning(
                        "storage write failed; batch kept pending for the next flush",
                        extra={"samples": len(batch), "pending": len(self._pending),
                               "failed_attempts": self.failed_attempts, "error": str(exc)},
                    )
                    return False
                await self._sleep(backoff_s(opts.retry_backoff_s, attempt))
            else:
                self.written += len(batch)
                return True
        return False  # pragma: no cover
