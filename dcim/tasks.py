"""Stopping background tasks so that they really stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], redeliver_s: float = 3.0) -> None:
    """Cancel every task, wait until all have ended, and empty the list.

    Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives as the inner
    call completes (pymodbus and asyncua use it on every request); a loop that then goes on
    would never end. A task still running after ``redeliver_s`` is cancelled again, until it
    ends; the wait is long enough for the clean-ups our tasks run when cancelled (an OPC UA
    session closes within 2 s), which a second cancel would cut short.
    """
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=redeliver_s)
        for task in pending:
            log.warning("task still running after cancel, cancelling again",
                        extra={"task": task.get_name()})
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """cancel_and_wait for one task (or none)."""
    if task is not None:
        await cancel_and_wait([task])
