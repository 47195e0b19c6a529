"""SQL for events, webhook endpoints, deliveries and attempts. Merchant-facing queries are
scoped by (merchant_id, mode); the delivery path addresses rows by id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import ARRAY, Row, Text, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_fetchrow
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest
from stablegate.webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# One statement records the event and fans it out: the CTE's insert and the deliveries'
# foreign key to it are checked at the end of the statement, when both rows exist. The
# caller brings one msg_ id per possible endpoint (an account has at most MAX_ENDPOINTS).
_EMIT = text(
    """
    WITH event AS (
        INSERT INTO events (id, merchant_id, mode, type, object_id, data)
        VALUES (:event_id, :merchant_id, :mode, :type, :object_id, CAST(:data AS jsonb))
    ), matching AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM webhook_endpoints
        WHERE merchant_id = :merchant_id AND mode = :mode AND status = 'enabled' AND deleted_at IS NULL
          AND (event_types = '{}' OR :type = ANY (event_types) OR '*' = ANY (event_types))
        ORDER BY id LIMIT cardinality(CAST(:msg_ids AS text[]))
    )
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id, next_attempt_at)
    SELECT (CAST(:msg_ids AS text[]))[n], id, :event_id, now() FROM matching
    RETURNING id, endpoint_id
    """
).bindparams(bindparam("msg_ids", type_=ARRAY(Text)))


async def insert_event_and_deliveries(
    session: AsyncSession, values: dict[str, Any], msg_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(delivery id, endpoint id) for each enabled endpoint that wants this event type."""
    rows = await session.execute(_EMIT, {**values, "msg_ids": list(msg_ids)})
    return [(row[0], row[1]) for row in rows]


# --- endpoints -------------------------------------------------------------------------

_LOCK_ACCOUNT = text("SELECT pg_advisory_xact_lock(hashtextextended('webhook_endpoints:' || :owner, 0))")
_COUNT_ENDPOINTS = text(
    "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = :merchant_id AND mode = :mode AND deleted_at IS NULL"
)


async def lock_and_count_endpoints(session: AsyncSession, merchant_id: str, mode: str) -> int:
    """Serialise endpoint creation per account (the count below stays true until commit)."""
    await session.execute(_LOCK_ACCOUNT, {"owner": f"{merchant_id}:{mode}"})
    count = await session.scalar(_COUNT_ENDPOINTS, {"merchant_id": merchant_id, "mode": mode})
    assert isinstance(count, int)
    return count


_INSERT_ENDPOINT = text(
    """
    INSERT INTO webhook_endpoints (id, merchant_id, mode, url, description, event_types)
    VALUES (:id, :merchant_id, :mode, :url, :description, :event_types)
    RETURNING *
    """
).bindparams(bindparam("event_types", type_=ARRAY(Text)))
_INSERT_SECRET = text("INSERT INTO webhook_endpoint_secrets (endpoint_id, secret) VALUES (:endpoint_id, :secret)")


async def insert_endpoint(session: AsyncSession, values: dict[str, Any], secret: str) -> Row[Any]:
    row = (await session.execute(_INSERT_ENDPOINT, values)).one()
    await session.execute(_INSERT_SECRET, {"endpoint_id": values["id"], "secret": secret})
    return row


_GET_ENDPOINT = text(
    "SELECT * FROM webhook_endpoints"
    " WHERE id = :id AND merchant_id = :merchant_id AND mode = :mode AND deleted_at IS NULL"
)
_GET_ENDPOINT_FOR_UPDATE = text(str(_GET_ENDPOINT) + " FOR UPDATE")


async def get_endpoint(
    session: AsyncSession, merchant_id: str, mode: str, endpoint_id: str, *, for_update: bool = False
) -> Row[Any] | None:
    query = _GET_ENDPOINT_FOR_UPDATE if for_update else _GET_ENDPOINT
    return (await session.execute(query, {"id": endpoint_id, "merchant_id": merchant_id, "mode": mode})).first()


async def list_endpoints(session: AsyncSession, merchant_id: str, mode: str, page: PageRequest) -> Page[Any]:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.merchant_id == merchant_id, WebhookEndpoint.mode == mode, WebhookEndpoint.deleted_at.is_(None)
    )
    rows = (await session.scalars(pagination.apply(query, WebhookEndpoint.id, page))).all()
    return pagination.finish(rows, page)


_UPDATE_ENDPOINT = text(
    """
    UPDATE webhook_endpoints SET url = :url, description = :description, event_types = :event_types,
        status = :status, disabled_reason = :disabled_reason,
        failing_since = CASE WHEN :status = 'enabled' AND status = 'disabled' THEN NULL ELSE failing_since END,
        updated_at = now()
    WHERE id = :id RETURNING *
    """
).bindparams(bindparam("event_types", type_=ARRAY(Text)))


async def update_endpoint(session: AsyncSession, values: dict[str, Any]) -> Row[Any]:
    return (await session.execute(_UPDATE_ENDPOINT, values)).one()


_DELETE_ENDPOINT = text("UPDATE webhook_endpoints SET deleted_at = now(), updated_at = now() WHERE id = :id")


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> None:
    """Soft: the delivery log stays readable to support; the jobs of its pending
    deliveries find it deleted and stop."""
    await session.execute(_DELETE_ENDPOINT, {"id": endpoint_id})


_EXPIRE_SECRETS = text(
    """
    UPDATE webhook_endpoint_secrets SET not_after = least(coalesce(not_after, 'infinity'), :not_after)
    WHERE endpoint_id = :endpoint_id AND (not_after IS NULL OR not_after > now())
    """
)


async def rotate_secret(session: AsyncSession, endpoint_id: str, secret: str, old_not_after: dt.datetime) -> None:
    """Every secret still in force stops at `old_not_after` (or earlier, if it already
    would); `secret` becomes the current one."""
    await session.execute(_EXPIRE_SECRETS, {"endpoint_id": endpoint_id, "not_after": old_not_after})
    await session.execute(_INSERT_SECRET, {"endpoint_id": endpoint_id, "secret": secret})


_DISABLE_ENDPOINT = text(
    """
    UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = :reason, updated_at = now()
    WHERE id = :id AND status = 'enabled' AND deleted_at IS NULL RETURNING *
    """
)


async def disable_endpoint(session: AsyncSession, endpoint_id: str, reason: str) -> Row[Any] | None:
    """The endpoint, if this call disabled it (None: already disabled or deleted)."""
    return (await session.execute(_DISABLE_ENDPOINT, {"id": endpoint_id, "reason": reason})).first()


_MARK_FAILING = text(
    "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, :now) WHERE id = :id RETURNING failing_since"
)
_MARK_HEALTHY = text("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = :id AND failing_since IS NOT NULL")


async def mark_failing(session: AsyncSession, endpoint_id: str, now: dt.datetime) -> dt.datetime:
    """Start (or continue) the endpoint's run of failures; returns when it began."""
    since = await session.scalar(_MARK_FAILING, {"id": endpoint_id, "now": now})
    assert isinstance(since, dt.datetime)
    return since


async def mark_healthy(session: AsyncSession, endpoint_id: str) -> None:
    await session.execute(_MARK_HEALTHY, {"id": endpoint_id})


# --- the delivery path -------------------------------------------------------------------

# Everything one attempt needs in one round trip, sent on the driver connection before
# any transaction (a read needs none: one statement, not three). The body comes back as
# jsonb's text form; the caller re-serialises it canonically (the same bytes every time).
_TARGET_SQL = """
    SELECT d.id, d.status, d.schedule_step, d.endpoint_id, e.mode, e.url,
           e.status AS endpoint_status, e.deleted_at IS NOT NULL AS endpoint_deleted,
           e.failing_since, ev.data::text AS event_json,
           ARRAY(SELECT s.secret FROM webhook_endpoint_secrets s
                 WHERE s.endpoint_id = e.id AND (s.not_after IS NULL OR s.not_after > now())
                 ORDER BY s.id DESC) AS secrets
    FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.id = d.endpoint_id
    JOIN events ev ON ev.id = d.event_id
    WHERE d.id = $1
"""


async def delivery_target(session: AsyncSession, delivery_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await driver_fetchrow(session, _TARGET_SQL, delivery_id, outside_transaction=True)
    return row


# A successful attempt of an endpoint that was not failing changes nothing but its
# delivery: one statement (atomic on its own, so sent outside a transaction) records the
# attempt and settles the delivery, and says what the status was before.
_RECORD_SUCCESS_SQL = """
    WITH before AS (
        SELECT id, status, schedule_step FROM webhook_deliveries WHERE id = $1 FOR UPDATE
    ), settled AS (
        UPDATE webhook_deliveries d SET attempts = d.attempts + 1, status = 'succeeded', next_attempt_at = NULL,
            last_status_code = $3, updated_at = now(),
            schedule_step = CASE WHEN b.status = 'pending' AND b.schedule_step = $2 THEN $2 + 1
                                 ELSE b.schedule_step END
        FROM before b WHERE d.id = b.id
        RETURNING d.attempts, b.status AS status_before
    ), logged AS (
        INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, duration_ms, error, response_excerpt)
        SELECT $1, attempts, $4, $3, $5, NULL, $6 FROM settled
    )
    SELECT status_before FROM settled
"""


async def record_success(session: AsyncSession, values: dict[str, Any]) -> str:
    """The delivery's status before this attempt."""
    status: str = (
        await driver_fetchrow(
            session,
            _RECORD_SUCCESS_SQL,
            values["delivery_id"],
            values["step"],
            values["status_code"],
            values["at"],
            values["duration_ms"],
            values["response_excerpt"],
            outside_transaction=True,
        )
    )["status_before"]
    return status


_LOCK_DELIVERY = text(
    "SELECT status, schedule_step, attempts, next_attempt_at FROM webhook_deliveries WHERE id = :id FOR UPDATE"
)


async def lock_delivery(session: AsyncSession, delivery_id: str) -> Row[Any]:
    return (await session.execute(_LOCK_DELIVERY, {"id": delivery_id})).one()


_INSERT_ATTEMPT = text(
    """
    INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, duration_ms, error, response_excerpt)
    VALUES (:delivery_id, :attempt, :at, :status_code, :duration_ms, :error, :response_excerpt)
    """
)
_UPDATE_DELIVERY = text(
    """
    UPDATE webhook_deliveries SET attempts = :attempts, status = :status, schedule_step = :schedule_step,
        next_attempt_at = :next_attempt_at, last_status_code = :last_status_code, updated_at = now()
    WHERE id = :id
    """
)


async def insert_attempt(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(_INSERT_ATTEMPT, values)


async def update_delivery(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(_UPDATE_DELIVERY, values)


_ABANDON_PENDING = text(
    "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = now()"
    " WHERE endpoint_id = :endpoint_id AND status = 'pending'"
)


async def abandon_pending(session: AsyncSession, endpoint_id: str) -> int:
    """Fail every pending delivery of an endpoint that stops receiving (their scheduled
    jobs then find nothing to do). Bounded by what one endpoint accrues in a schedule."""
    result = await session.execute(_ABANDON_PENDING, {"endpoint_id": endpoint_id})
    return int(result.rowcount)  # type: ignore[attr-defined]


_GIVE_UP = text(
    "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = now()"
    " WHERE id = :id AND status = 'pending'"
)


async def give_up(session: AsyncSession, delivery_id: str) -> None:
    await session.execute(_GIVE_UP, {"id": delivery_id})


# --- merchant-facing reads -----------------------------------------------------------------


async def get_event(session: AsyncSession, merchant_id: str, mode: str, event_id: str) -> Event | None:
    query = select(Event).where(Event.id == event_id, Event.merchant_id == merchant_id, Event.mode == mode)
    return await session.scalar(query)


async def list_events(
    session: AsyncSession, merchant_id: str, mode: str, event_type: str | None, page: PageRequest
) -> Page[Event]:
    query = select(Event).where(Event.merchant_id == merchant_id, Event.mode == mode)
    if event_type is not None:
        query = query.where(Event.type == event_type)
    rows = (await session.scalars(pagination.apply(query, Event.id, page))).all()
    return pagination.finish(rows, page)


async def list_deliveries(
    session: AsyncSession, endpoint_id: str, page: PageRequest
) -> Page[tuple[WebhookDelivery, str]]:
    query = (
        select(WebhookDelivery, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )
    rows = (await session.execute(pagination.apply(query, WebhookDelivery.id, page))).all()
    return pagination.finish([(row[0], row[1]) for row in rows], page)


async def get_delivery(session: AsyncSession, endpoint_id: str, delivery_id: str) -> tuple[WebhookDelivery, str] | None:
    query = (
        select(WebhookDelivery, Event.type)
        .join(Event, Event.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
    )
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1])


async def attempts_of(
    session: AsyncSession, delivery_ids: Sequence[str], per_delivery: int
) -> dict[str, list[WebhookAttempt]]:
    """The latest `per_delivery` attempts of each delivery, oldest first."""
    if not delivery_ids:
        return {}
    query = (
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt.desc())
    )
    found: dict[str, list[WebhookAttempt]] = {d: [] for d in delivery_ids}
    for attempt in await session.scalars(query):
        if len(found[attempt.delivery_id]) < per_delivery:
            found[attempt.delivery_id].append(attempt)
    return {d: list(reversed(a)) for d, a in found.items()}
