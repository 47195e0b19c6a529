"""Stopping background tasks reliably (the worker, the block follower, the sender) when a
process shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CANCEL_GRACE_S = 5.0


async def cancel_and_wait(task: asyncio.Task[Any], grace_s: float = CANCEL_GRACE_S) -> None:
    """Cancel `task` and wait until it has finished, cancelling it again every `grace_s`
    for as long as it is still running.

    One `cancel()` is not always enough on Python 3.11. Its `asyncio.wait_for` returns the
    result, and swallows the cancellation, when the cancel arrives in the same loop
    iteration as the awaited event (CPython gh-86296, fixed in 3.12). psycopg_pool waits
    for its connections that way, so a worker cancelled while it opens its pool goes on
    to run, and whoever waits for it waits forever. This was seen here: `stablegate dev`
    hung on SIGTERM in CI, and 1 of ~50 cancels in a loop hung. The task's own clean-up
    gets `grace_s` before the next cancel interrupts it.

    The task's outcome (its result, its exception, or the cancellation) is not raised."""
    resent = 0
    while not task.done():
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            resent += 1
            log.warning("task.cancel_resent", task=task.get_name(), times=resent, grace_s=grace_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()  # retrieved, so asyncio does not log "exception never retrieved"
