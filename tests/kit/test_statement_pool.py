"""The statement pool (db.StatementPool) on the real database: a connection goes back
after a database error, never after a cancellation or with a transaction left open, and
no more than `size` are ever open at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from stablegate.db import StatementPool, with_driver


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[StatementPool]:
    statements = StatementPool(with_driver(database_url, ""), size=2)
    yield statements
    await statements.close()


async def _backend_pid(pool: StatementPool) -> int:
    async with pool.connection() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_connection_is_reused_after_a_database_error(pool: StatementPool) -> None:
    first = await _backend_pid(pool)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with pool.connection() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert await _backend_pid(pool) == first


async def test_a_cancelled_statement_closes_its_connection(pool: StatementPool) -> None:
    first = await _backend_pid(pool)

    async def slow() -> None:
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_sleep(5)")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _backend_pid(pool) != first


async def test_a_connection_left_in_a_transaction_is_not_handed_on(pool: StatementPool) -> None:
    async with pool.connection() as conn:
        leaked = int(await conn.fetchval("SELECT pg_backend_pid()"))
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE leaked_state (n int)")
    async with pool.connection() as conn:
        assert int(await conn.fetchval("SELECT pg_backend_pid()")) != leaked
        assert await conn.fetchval("SELECT to_regclass('pg_temp.leaked_state')") is None


async def test_no_more_than_size_connections_are_open_at_once(pool: StatementPool) -> None:
    pids: set[int] = set()
    busy, most_busy = 0, 0

    async def use() -> None:
        nonlocal busy, most_busy
        async with pool.connection() as conn:
            busy += 1
            most_busy = max(most_busy, busy)
            pids.add(int(await conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.02)")))
            busy -= 1

    await asyncio.gather(*(use() for _ in range(10)))
    assert most_busy == 2
    assert len(pids) == 2


async def test_an_idle_connection_the_server_closed_is_replaced(pool: StatementPool, database_url: str) -> None:
    first = await _backend_pid(pool)
    admin = await asyncpg.connect(database_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()
    await asyncio.sleep(0.2)  # the driver notices the closed socket
    assert await _backend_pid(pool) != first
