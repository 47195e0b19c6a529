"""The dispatcher (design 0005, "Dispatch"): leases that expire after a crash, two
dispatchers that never attempt one delivery at once, the per-endpoint bound across
dispatchers, and plain successes recorded in one statement."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs.runtime import Runtime
from stablegate.webhooks import dispatch, service
from tests.conftest import Tenant
from tests.webhooks.conftest import (
    Receiver,
    Reply,
    WorkerRunner,
    attempt_rows,
    delivery_rows,
    emit,
    make_endpoint,
    worker_settings,
)


async def all_settled(db: Database, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        rows = await delivery_rows(db, event_id)
        if not rows or any(r.status == "pending" for r in rows):
            return False
    return True


async def run_dispatchers(database_url: str, settings: Settings, count: int, concurrency: int) -> None:
    """`count` dispatchers, each with its own pool (as separate worker processes would
    have), run side by side until nothing is due."""
    dbs = [Database.connect(database_url, settings) for _ in range(count)]
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    dispatch.Dispatcher(d, settings, concurrency=concurrency, poll_interval_s=0.02).run(wait=False)
                    for d in dbs
                )
            ),
            timeout=30,
        )
    finally:
        for d in dbs:
            await d.dispose()


async def test_a_crashed_workers_lease_expires_and_the_delivery_is_attempted_again(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    await make_endpoint(db, tenant, receiver.url("/after-crash"))
    event_id = await emit(db, tenant)
    # A worker claims the delivery and dies before recording anything.
    async with db.session() as session:
        [claim] = await service.claim(session, 10, 4, lease_s=0.5)
    assert claim.step == 0 and not claim.lease_expired
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.leased_until is not None and delivery.status == "pending"
    async with db.session() as session:  # leased: nobody else may take it meanwhile
        assert await service.claim(session, 10, 4, lease_s=0.5) == []
    expired_before = dispatch.LEASE_EXPIRIES._value.get()

    await asyncio.sleep(0.6)
    await worker.until(lambda: all_settled(db, [event_id]))
    [request] = receiver.to("/after-crash")
    assert request.headers["webhook-id"] == claim.target.delivery_id
    [delivery] = await delivery_rows(db, event_id)
    assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.leased_until is None
    assert delivery.schedule_step == 1
    assert dispatch.LEASE_EXPIRIES._value.get() == expired_before + 1


async def test_two_dispatchers_never_attempt_the_same_delivery_at_once(
    db: Database, database_url: str, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    # A generous timeout: on a loaded machine a 2 s attempt timeout would make a retry,
    # which is a second (legitimate) request and not what this test is about.
    settings = worker_settings(webhook_endpoint_concurrency=16, webhook_timeout_s=15.0)
    await make_endpoint(db, tenant, receiver.url("/shared", Reply(200, delay_s=0.02)))
    events = [await emit(db, tenant, n=str(n)) for n in range(40)]
    await run_dispatchers(database_url, settings, count=2, concurrency=8)

    assert await all_settled(db, events)
    ids = [r.headers["webhook-id"] for r in receiver.to("/shared")]
    assert len(ids) == 40 and len(set(ids)) == 40, "each delivery attempted exactly once"
    for event_id in events:
        [delivery] = await delivery_rows(db, event_id)
        assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.leased_until is None
        assert len(await attempt_rows(db, delivery.id)) == 1


async def test_the_per_endpoint_bound_holds_across_dispatchers(
    db: Database, database_url: str, tenant: Tenant, other_tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    settings = worker_settings(webhook_endpoint_concurrency=2, webhook_timeout_s=15.0)
    await make_endpoint(db, tenant, receiver.url("/bounded", Reply(200, delay_s=0.2)))
    await make_endpoint(db, other_tenant, receiver.url("/other"))
    slow = [await emit(db, tenant) for _ in range(8)]
    fast = await emit(db, other_tenant)
    await run_dispatchers(database_url, settings, count=2, concurrency=4)

    assert await all_settled(db, [*slow, fast])
    assert receiver.max_in_flight["/bounded"] == 2, "two dispatchers with 8 slots between them: still 2"
    assert len(receiver.to("/bounded")) == 8 and len(receiver.to("/other")) == 1
    assert receiver.to("/other")[0].at_s < receiver.to("/bounded")[-1].at_s, "the other endpoint did not wait"


async def test_a_batch_of_successes_is_recorded_in_one_statement(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_endpoint(db, tenant, "http://127.0.0.1:9/batch")
    events = [await emit(db, tenant) for _ in range(5)]
    async with db.session() as session:
        claims = await service.claim(session, 5, 16, lease_s=60)
    mine = {c.target.delivery_id for c in claims}
    expected = {(await delivery_rows(db, e))[0].id for e in events}
    assert expected <= mine
    claims = [c for c in claims if c.target.delivery_id in expected]
    at = dt.datetime.now(dt.UTC)
    done = [(c, service.AttemptResult(at, 200 + n, 5 + n, None, "ok", None)) for n, c in enumerate(claims)]

    statements: list[str] = []
    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare"):
        original = getattr(asyncpg.Connection, name)

        def counting(self: Any, query: str, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            statements.append(query)
            return _original(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, name, counting)
    async with db.sessionmaker() as session:
        await service.record_successes(session, done)
    monkeypatch.undo()

    assert len(statements) == 1
    for n, (claim, _) in enumerate(done):
        [delivery] = [r for e in events for r in await delivery_rows(db, e) if r.id == claim.target.delivery_id]
        assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.schedule_step == 1
        assert delivery.leased_until is None and delivery.last_status_code == 200 + n
        [attempt] = await attempt_rows(db, delivery.id)
        assert attempt.status_code == 200 + n and attempt.duration_ms == 5 + n


async def test_a_manual_attempt_does_not_move_the_schedule(
    db: Database, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    """A redelivery requested while a retry waits is its own attempt: the retry stays
    scheduled at its step and time."""
    from tests.webhooks.conftest import principal

    endpoint_id, _ = await make_endpoint(db, tenant, receiver.url("/manual", Reply(500), Reply(200)))
    event_id = await emit(db, tenant)
    settings = worker_settings(webhook_schedule_scale=1.0)

    async def retry_waiting() -> bool:
        rows = await delivery_rows(db, event_id)
        return bool(rows) and rows[0].attempts == 1

    await worker.until(retry_waiting, settings)
    [before] = await delivery_rows(db, event_id)
    async with db.session() as session:
        await service.redeliver(session, principal(tenant), endpoint_id, before.id)

    async def manual_made() -> bool:
        rows = await delivery_rows(db, event_id)
        return rows[0].attempts == 2

    await worker.until(manual_made, settings)
    [after] = await delivery_rows(db, event_id)
    # The manual attempt succeeded, which settles the delivery, but did not advance the step.
    assert after.status == "succeeded" and after.schedule_step == before.schedule_step == 1
    assert after.manual_requested_at is None and after.leased_until is None
    assert [a.status_code for a in await attempt_rows(db, after.id)] == [500, 200]


async def test_run_worker_drains_with_wait_false(
    db: Database, database_url: str, tenant: Tenant, receiver: Receiver, worker: WorkerRunner
) -> None:
    from stablegate.jobs.app import run_worker

    await make_endpoint(db, tenant, receiver.url("/drain"))
    events = [await emit(db, tenant) for _ in range(5)]
    await asyncio.wait_for(
        run_worker(
            database_url,
            worker_settings(),
            concurrency=2,
            wait=False,
            install_signal_handlers=False,
            queues=["webhooks"],
        ),
        timeout=20,
    )
    assert await all_settled(db, events) and len(receiver.to("/drain")) == 5
    assert Runtime.db is None
    async with db.session() as session:
        leased = await session.scalar(text("SELECT count(*) FROM webhook_deliveries WHERE leased_until IS NOT NULL"))
    assert leased == 0


async def test_recording_hands_an_endpoints_freed_leases_to_its_next_due_deliveries(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    """The hand-off leases no more of an endpoint's deliveries than the same statement
    released (its bound holds without the claim lock), earliest due first, never another
    endpoint's, and no more than the caller allows."""
    await make_endpoint(db, tenant, "http://127.0.0.1:9/handoff")
    await make_endpoint(db, other_tenant, "http://127.0.0.1:9/elsewhere")
    mine = [(await delivery_rows(db, await emit(db, tenant)))[0].id for _ in range(6)]
    other = (await delivery_rows(db, await emit(db, other_tenant)))[0].id
    async with db.session() as session:
        claims = [c for c in await service.claim(session, 50, 2, lease_s=60) if c.target.delivery_id in mine]
    assert [c.target.delivery_id for c in claims] == mine[:2], "the bound: 2 leases"
    at = dt.datetime.now(dt.UTC)
    done = [(c, service.AttemptResult(at, 200, 5, None, None, None)) for c in claims]

    async with db.sessionmaker() as session:
        handed = await service.record_successes(session, done, handoff_max=10, lease_s=60)
    # The two earliest due (a set: the statement's RETURNING has no order; CI once saw them swapped)
    assert sorted(c.target.delivery_id for c in handed) == sorted(mine[2:4])
    assert all(c.step == 0 and c.target.endpoint_id == claims[0].target.endpoint_id for c in handed)
    async with db.session() as session:
        leased = await session.scalars(
            text("SELECT id FROM webhook_deliveries WHERE leased_until > now() AND id = ANY(:ids) ORDER BY id"),
            {"ids": mine},
        )
        assert sorted(leased) == sorted(mine[2:4]), "as many as released"

    done = [(c, service.AttemptResult(at, 200, 5, None, None, None)) for c in handed]
    async with db.sessionmaker() as session:
        capped = await service.record_successes(session, done, handoff_max=1, lease_s=60)
    assert [c.target.delivery_id for c in capped] == mine[4:5]
    async with db.session() as session:  # leave nothing leased or due for later tests
        await session.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, leased_until = NULL"
                " WHERE id = ANY(:ids) AND status = 'pending'"
            ),
            {"ids": [*mine, other]},
        )
