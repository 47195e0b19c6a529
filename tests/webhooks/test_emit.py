"""emit(): the event and its fan-out are written in the caller's transaction, to matching,
enabled endpoints of the same merchant and mode only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from stablegate.db import Database
from stablegate.webhooks import repository, service
from stablegate.webhooks.schemas import WebhookEndpointUpdate
from tests.conftest import Tenant
from tests.webhooks.conftest import ALLOW, delivery_rows, emit, make_endpoint, principal

URL = "http://127.0.0.1:9/hook"


async def due_now(db: Database, delivery_ids: list[str]) -> int:
    """How many of these deliveries a dispatcher could claim now."""
    async with db.session() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM webhook_deliveries WHERE id = ANY(:ids) AND status = 'pending'"
                " AND next_attempt_at <= now() AND leased_until IS NULL AND schedule_step = 0"
            ),
            {"ids": delivery_ids},
        )
    assert isinstance(count, int)
    return count


@contextlib.asynccontextmanager
async def listening(db: Database) -> AsyncIterator[list[str]]:
    """The payloads of the dispatchers' wake-up channel, as a dispatcher would hear them."""
    heard: list[str] = []
    async with db.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None

        def on_notify(*args: Any) -> None:
            heard.append(args[-1])

        await driver.add_listener(repository.NOTIFY_CHANNEL, on_notify)
        try:
            yield heard
            await asyncio.sleep(0.2)  # a notification follows its commit at once
        finally:
            await driver.remove_listener(repository.NOTIFY_CHANNEL, on_notify)


async def test_fan_out_reaches_matching_enabled_endpoints_only(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    every, _ = await make_endpoint(db, tenant, URL)
    star, _ = await make_endpoint(db, tenant, URL, ["*"])
    succeeded, _ = await make_endpoint(db, tenant, URL, ["payment.succeeded", "payment.expired"])
    await make_endpoint(db, tenant, URL, ["payment.expired"])
    disabled, _ = await make_endpoint(db, tenant, URL)
    deleted, _ = await make_endpoint(db, tenant, URL)
    await make_endpoint(db, tenant, "https://127.0.0.1:9/hook", mode="live")
    await make_endpoint(db, other_tenant, URL)
    async with db.session() as session:
        update = WebhookEndpointUpdate(disabled=True)
        await service.update_endpoint(session, principal(tenant), disabled, update, ALLOW)
        await service.delete_endpoint(session, principal(tenant), deleted)

    async with listening(db) as heard:
        event_id = await emit(db, tenant, "payment.succeeded")
    rows = await delivery_rows(db, event_id)
    assert sorted(r.endpoint_id for r in rows) == sorted([every, star, succeeded])
    assert all(r.status == "pending" and r.attempts == 0 and r.id.startswith("msg_") for r in rows)
    assert len({r.id for r in rows}) == 3
    # Each is due now (the first step of its schedule) and the dispatchers were woken once.
    assert await due_now(db, [r.id for r in rows]) == 3
    assert heard == [""]


async def test_rolled_back_transaction_leaves_no_event_delivery_or_job(db: Database, tenant: Tenant) -> None:
    await make_endpoint(db, tenant, URL)

    class Boom(Exception):
        pass

    emitted: list[str] = []

    async def emit_then_fail() -> None:
        async with db.session() as session:
            emitted.append(
                await service.emit(
                    session,
                    merchant_id=tenant.merchant_id,
                    mode="test",
                    type="payment.created",
                    object_id=None,
                    data={"id": "pay_x"},
                )
            )
            raise Boom

    async with listening(db) as heard:
        with pytest.raises(Boom):
            await emit_then_fail()
    async with db.session() as session:
        events = await session.scalar(text("SELECT count(*) FROM events WHERE id = :id"), {"id": emitted[0]})
        deliveries = await session.scalar(
            text("SELECT count(*) FROM webhook_deliveries WHERE event_id = :id"), {"id": emitted[0]}
        )
    # The deliveries are the queue: none written means nothing to deliver; no wake-up either.
    assert (events, deliveries, heard) == (0, 0, [])


async def test_event_body_shape(db: Database, tenant: Tenant) -> None:
    event_id = await emit(db, tenant, "payment.expired", mode="live", amount="1.00")
    async with db.session() as session:
        row = (await session.execute(text("SELECT * FROM events WHERE id = :id"), {"id": event_id})).one()
    assert row.type == "payment.expired" and row.mode == "live" and row.object_id == "pay_test"
    assert set(row.data) == {"id", "object", "type", "created", "livemode", "data"}
    assert row.data["id"] == event_id and row.data["livemode"] is True
    assert row.data["data"] == {"object": {"id": "pay_test", "object": "payment", "amount": "1.00"}}
    assert abs(row.data["created"] - row.created_at.timestamp()) < 5
    body = service.canonical_json(row.data)
    assert json.loads(body) == row.data


async def test_emit_on_a_bare_connection_session(db: Database, tenant: Tenant) -> None:
    """The chain follower calls emit with a session bound to its own connection."""
    from sqlalchemy.ext.asyncio import AsyncSession

    await make_endpoint(db, tenant, URL)
    async with db.engine.connect() as conn, conn.begin():
        session = AsyncSession(bind=conn)
        event_id = await service.emit(
            session, merchant_id=tenant.merchant_id, mode="test", type="payment.created", object_id=None, data={}
        )
        await session.close()
    assert len(await delivery_rows(db, event_id)) == 1


async def test_unknown_event_type_is_a_programming_error(db: Database, tenant: Tenant) -> None:
    with pytest.raises(AssertionError):
        await emit(db, tenant, "payment.teleported")
