"""The transactional outbox: a job enqueued in a rolled-back transaction never exists;
one enqueued in a committed transaction is run by the real worker."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs import outbox
from stablegate.jobs.app import build_app, purge_idempotency_keys, retry_stalled, run_worker
from tests.conftest import Tenant


async def job_rows(db: Database, marker: int) -> list[tuple[int, str]]:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT id, status FROM procrastinate_jobs WHERE task_name = :t AND (args->>'timestamp')::bigint = :m"
            ),
            {"t": purge_idempotency_keys.name, "m": marker},
        )
        return [(r[0], r[1]) for r in rows]


async def test_rolled_back_transaction_enqueues_nothing(db: Database) -> None:
    marker = time.time_ns()

    class Boom(Exception):
        pass

    async def enqueue_then_fail() -> None:
        async with db.session() as session:
            await outbox.enqueue(session, purge_idempotency_keys, timestamp=marker)
            raise Boom

    with pytest.raises(Boom):
        await enqueue_then_fail()
    assert await job_rows(db, marker) == []


async def test_committed_job_runs_on_the_worker(
    db: Database, database_url: str, settings: Settings, tenant: Tenant
) -> None:
    marker = time.time_ns()
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO idempotency_keys (merchant_id, mode, key, fingerprint, state, locked_until, expires_at)"
                " VALUES (:m, 'test', 'expired-key', :fp, 'completed', now(), now() - interval '1 second')"
            ),
            {"m": tenant.merchant_id, "fp": b"\0" * 32},
        )
        await outbox.enqueue(session, purge_idempotency_keys, timestamp=marker)
    await run_worker(
        database_url, settings, concurrency=1, wait=False, install_signal_handlers=False, queues=["system"]
    )
    assert [status for _, status in await job_rows(db, marker)] == ["succeeded"]
    async with db.session() as session:
        left = await session.scalar(text("SELECT count(*) FROM idempotency_keys WHERE key = 'expired-key'"))
    assert left == 0


async def test_a_job_left_doing_by_a_dead_worker_is_retried_and_run(
    db: Database, database_url: str, settings: Settings
) -> None:
    """A worker killed mid-job leaves it `doing` with a heartbeat that stops: the periodic
    system task puts it back, and a live worker runs it."""
    marker = time.time_ns()
    async with db.session() as session:
        job_id = await outbox.enqueue(session, purge_idempotency_keys, timestamp=marker)
        dead_worker = await session.scalar(
            text("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') RETURNING id")
        )
        await session.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w WHERE id = :id"),
            {"w": dead_worker, "id": job_id},
        )
    app = build_app(database_url)
    async with app.open_async():
        assert await retry_stalled(app) >= 1
    assert [status for _, status in await job_rows(db, marker)] == ["todo"]
    await run_worker(
        database_url, settings, concurrency=1, wait=False, install_signal_handlers=False, queues=["system"]
    )
    assert [status for _, status in await job_rows(db, marker)] == ["succeeded"]
