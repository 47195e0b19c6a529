"""What running tasks need, set once by the worker process (tasks import this, not app)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import Database


class Runtime:
    db: Database | None = None

    @classmethod
    def database(cls) -> Database:
        assert cls.db is not None, "worker runtime not started"
        return cls.db


async def drain(step: Callable[[AsyncSession], Awaitable[int]], batch_size: int, max_batches: int) -> int:
    """Run `step` (one bounded batch, its own retried transaction) until a batch comes back
    short or `max_batches` ran; return how many items all batches handled."""
    total = 0
    for _ in range(max_batches):
        done = await Runtime.database().retrying(step)
        total += done
        if done < batch_size:
            break
    return total
