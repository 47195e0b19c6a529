"""The real worker stops whenever it is asked to, above all while it is still opening its
connection pool: on Python 3.11 one cancel can be lost there (kit.tasks), and `stablegate
dev` once hung on SIGTERM that way. Stopped at any moment, it leaves no connection open."""

from __future__ import annotations

import asyncio
import random

import psycopg

from stablegate.config import Settings
from stablegate.jobs.app import run_worker
from stablegate.kit.tasks import cancel_and_wait

ROUNDS = 60
OPENING_WINDOW_S = 0.06  # the pool opens within ~10-50 ms here
COUNT_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def connections(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute(COUNT_CONNECTIONS)).fetchone()
        assert row is not None
        return int(row[0])


async def settled_connections(database_url: str, at_most: int) -> int:
    """Backends go a moment after their clients close them."""
    for _ in range(50):
        count = await connections(database_url)
        if count <= at_most:
            return count
        await asyncio.sleep(0.1)
    return count


async def test_the_worker_stops_when_cancelled_at_any_moment_of_its_start(
    database_url: str, settings: Settings
) -> None:
    before = await connections(database_url)
    rng = random.Random(20261125)
    await _start_and_stop(database_url, settings, rng)  # 0-4 of 60 cancels are lost here
    assert await settled_connections(database_url, at_most=before) <= before


async def _start_and_stop(database_url: str, settings: Settings, rng: random.Random) -> None:
    for round_number in range(ROUNDS):
        task = asyncio.create_task(
            run_worker(database_url, settings, concurrency=1, install_signal_handlers=False, queues=["system"])
        )
        await asyncio.sleep(rng.uniform(0, OPENING_WINDOW_S))
        try:
            await asyncio.wait_for(cancel_and_wait(task, grace_s=0.5), timeout=10)
        except TimeoutError:
            raise AssertionError(f"round {round_number}: the worker did not stop") from None
