"""SQL for events, webhook endpoints, deliveries and attempts. Merchant-facing queries are
scoped by (merchant_id, mode); the delivery path addresses rows by id."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import ARRAY, Row, Text, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_connection, driver_in_transaction
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest
from stablegate.observability import tracing
from stablegate.webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# Sleeping dispatchers LISTEN here; a NOTIFY is delivered at commit (none on rollback), and
# PostgreSQL folds a transaction's identical notifications into one.
NOTIFY_CHANNEL = "stablegate_webhooks"

# One statement records the event and fans it out: the CTE's insert and the deliveries'
# foreign key to it are checked at the end of the statement, when both rows exist. The
# caller brings one msg_ id per possible endpoint (an account has at most MAX_ENDPOINTS).
# The deliveries are due now, and the dispatchers are woken (once per transaction).
# On the driver connection: every state change of every payment emits (POST /v1/payments
# among them), where the ORM's per-statement cost counts (design 0004, Performance).
_EMIT = """
    WITH event AS (
        INSERT INTO events (id, merchant_id, mode, type, object_id, data)
        VALUES ($1, $2, $3, $4, $5, CAST($6 AS jsonb))
    ), matching AS (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM webhook_endpoints
        WHERE merchant_id = $2 AND mode = $3 AND status = 'enabled' AND deleted_at IS NULL
          AND (event_types = '{}' OR $4 = ANY (event_types) OR '*' = ANY (event_types))
        ORDER BY id LIMIT cardinality(CAST($7 AS text[]))
    )
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id, next_attempt_at)
    SELECT (CAST($7 AS text[]))[n], id, $1, now() FROM matching
    RETURNING id, endpoint_id, pg_notify('stablegate_webhooks', '') IS NULL
    """


async def insert_event_and_deliveries(
    session: AsyncSession, values: dict[str, Any], msg_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(delivery id, endpoint id) for each enabled endpoint that wants this event type."""
    driver = await driver_in_transaction(session)
    v = values
    with tracing.sql_span(_EMIT):
        rows = await driver.fetch(
            _EMIT, v["event_id"], v["merchant_id"], v["mode"], v["type"], v["object_id"], v["data"], list(msg_ids)
        )
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
#
# webhook_deliveries is the queue (design 0005, "Dispatch"): a delivery is due when it is
# pending and its next_attempt_at has come, or a manual attempt was requested; a
# dispatcher claims due rows by leasing them (leased_until) and clears the lease when it
# records the attempt. A lease that passed (its worker died) makes the row claimable again.

# Claims are serialised across all dispatchers by this transaction-scoped lock: the claim
# statement's snapshot is taken after it, so it sees every lease committed before, and the
# per-endpoint count of live leases is exact. One claim is a batch, so this costs per
# batch, not per delivery. (A plpgsql function doing both in one round trip was measured
# slower: its cached generic plan loses more than the two round trips it saves.)
_CLAIM_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('webhook_deliveries:claim', 0))"

# What a claimed delivery's attempt needs (`c` is the claimed row's source: its previous
# lease says whether this claim follows an expired one).
_CLAIMED_FIELDS = """
    d.id, d.status, d.schedule_step, d.manual_requested_at, d.endpoint_id,
    c.lease_before IS NOT NULL AS lease_expired,
    e.mode, e.url, e.status AS endpoint_status, e.deleted_at IS NOT NULL AS endpoint_deleted,
    e.failing_since, ev.data::text AS event_json,
    ARRAY(SELECT s.secret FROM webhook_endpoint_secrets s
          WHERE s.endpoint_id = e.id AND (s.not_after IS NULL OR s.not_after > now())
          ORDER BY s.id DESC) AS secrets
"""

# $1 batch size, $2 per-endpoint bound, $3 lease seconds, $4 candidates scanned per source.
# A delivery has next_attempt_at exactly while it is pending (CHECK pending_has_next), so
# `next_attempt_at <= now()` is "pending and due": the due index's predicate is the column
# itself, and the planner reads it in order even before the table has statistics.
# Endpoints already at their bound are skipped before the scan (so a backlog of one busy
# endpoint cannot hide the others' due rows); among the candidates, each endpoint gets at
# most bound − live leases, earliest due first. RETURNING carries everything an attempt
# needs, so no per-delivery read follows.
_CLAIM_SQL = (
    """
    WITH saturated AS (
        SELECT endpoint_id FROM webhook_deliveries
        WHERE leased_until IS NOT NULL AND leased_until > now() GROUP BY endpoint_id HAVING count(*) >= $2
    ), candidates AS (
        (SELECT id FROM webhook_deliveries
         WHERE next_attempt_at <= now()
           AND (leased_until IS NULL OR leased_until <= now())
           AND endpoint_id NOT IN (SELECT endpoint_id FROM saturated)
         ORDER BY next_attempt_at LIMIT $4)
        UNION
        (SELECT id FROM webhook_deliveries
         WHERE manual_requested_at IS NOT NULL
           AND (leased_until IS NULL OR leased_until <= now())
           AND endpoint_id NOT IN (SELECT endpoint_id FROM saturated)
         ORDER BY manual_requested_at LIMIT $4)
    ), locked AS (
        SELECT d.id, d.endpoint_id, d.leased_until AS lease_before,
               coalesce(d.manual_requested_at, d.next_attempt_at) AS due_at
        FROM webhook_deliveries d
        WHERE d.id = ANY (ARRAY(SELECT id FROM candidates))
          AND (d.leased_until IS NULL OR d.leased_until <= now())
          AND (d.next_attempt_at <= now() OR d.manual_requested_at IS NOT NULL)
        FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT l.id, l.lease_before, l.due_at,
               row_number() OVER (PARTITION BY l.endpoint_id ORDER BY l.due_at, l.id)
               + (SELECT count(*) FROM webhook_deliveries x
                  WHERE x.endpoint_id = l.endpoint_id AND x.leased_until IS NOT NULL
                    AND x.leased_until > now()) AS slot
        FROM locked l
    ), chosen AS (
        SELECT id, lease_before FROM ranked WHERE slot <= $2 ORDER BY due_at, id LIMIT $1
    )
    UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $3)
    FROM chosen c, webhook_endpoints e, events ev
    WHERE d.id = c.id AND e.id = d.endpoint_id AND ev.id = d.event_id
    RETURNING """
    + _CLAIMED_FIELDS
)
CLAIM_SCAN_FACTOR = 4


async def claim(session: AsyncSession, limit: int, endpoint_bound: int, lease_s: float) -> list[asyncpg.Record]:
    """Lease up to `limit` due deliveries (at most `endpoint_bound` leases live per endpoint,
    across all dispatchers) and return what their attempts need. Its own short transaction
    on the session's driver connection: call it on a fresh session."""
    assert 1 <= limit <= 1000 and endpoint_bound >= 1 and lease_s > 0
    driver = await driver_connection(session)
    assert not driver.is_in_transaction()
    with tracing.sql_span(_CLAIM_SQL):
        async with driver.transaction():
            await driver.execute(_CLAIM_LOCK_SQL)
            rows: list[asyncpg.Record] = await driver.fetch(
                _CLAIM_SQL, limit, endpoint_bound, lease_s, limit * CLAIM_SCAN_FACTOR
            )
    assert len(rows) <= limit
    return rows


# Plain successes (an endpoint that was not failing) change nothing but their deliveries:
# one statement (atomic on its own, so sent outside a transaction) records a whole batch of
# attempts, settles the deliveries, clears their leases and says each one's status before.
# Only an attempt of the current schedule step moves the schedule (-1: a manual attempt);
# a manual request is cleared only if it is the one this attempt served.
#
# Lease hand-off: the same statement leases, for each endpoint, up to as many of its next
# due deliveries as it released here (at most $8 in all, for $9 s). An endpoint's count
# of live leases cannot grow this way, so its bound holds without the claim lock, and a
# busy endpoint's freed slot goes straight to its next delivery instead of waiting for a
# claim. The caller keeps $8 below its free slots so claims in due order always have one.
_RECORD_SUCCESSES_SQL = (
    """
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::timestamptz[], $5::int[], $6::text[],
                             $7::timestamptz[])
            AS i(id, step, status_code, at, duration_ms, excerpt, manual_requested_at)
    ), before AS (
        SELECT d.id, d.status, d.schedule_step FROM webhook_deliveries d
        WHERE d.id IN (SELECT id FROM input) ORDER BY d.id FOR UPDATE
    ), settled AS (
        UPDATE webhook_deliveries d SET attempts = d.attempts + 1, status = 'succeeded', next_attempt_at = NULL,
            last_status_code = i.status_code, updated_at = now(), leased_until = NULL,
            schedule_step = CASE WHEN b.status = 'pending' AND b.schedule_step = i.step THEN i.step + 1
                                 ELSE b.schedule_step END,
            manual_requested_at = CASE WHEN d.manual_requested_at IS NOT DISTINCT FROM i.manual_requested_at
                                       THEN NULL ELSE d.manual_requested_at END
        FROM before b JOIN input i ON i.id = b.id WHERE d.id = b.id
        RETURNING d.id, d.attempts, d.endpoint_id, b.status AS status_before
    ), logged AS (
        INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, duration_ms, error, response_excerpt)
        SELECT s.id, s.attempts, i.at, i.status_code, i.duration_ms, NULL, i.excerpt
        FROM settled s JOIN input i ON i.id = s.id
    ), freed AS (
        SELECT endpoint_id, count(*) AS n FROM settled GROUP BY endpoint_id
    ), handoff AS (
        SELECT nx.id, nx.lease_before FROM freed f CROSS JOIN LATERAL (
            SELECT d.id, d.leased_until AS lease_before FROM webhook_deliveries d
            WHERE d.endpoint_id = f.endpoint_id AND d.next_attempt_at <= now()
              AND (d.leased_until IS NULL OR d.leased_until <= now())
            ORDER BY d.next_attempt_at LIMIT f.n
            FOR UPDATE SKIP LOCKED
        ) nx
        LIMIT $8
    ), leased AS (
        UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $9)
        FROM handoff c, webhook_endpoints e, events ev
        WHERE d.id = c.id AND e.id = d.endpoint_id AND ev.id = d.event_id
        RETURNING """
    + _CLAIMED_FIELDS
    + """
    )
    SELECT (SELECT json_object_agg(id, status_before) FROM settled)::text AS settled_before, l.*
    FROM (SELECT 1) AS one LEFT JOIN leased l ON true
"""
)
MAX_RECORD_BATCH = 1000


async def record_successes(
    session: AsyncSession, values: Sequence[dict[str, Any]], handoff_max: int = 0, lease_s: float = 60.0
) -> tuple[dict[str, str], list[asyncpg.Record]]:
    """Each delivery's status before its attempt, and the deliveries handed off to the
    caller (leased, with claim's fields; see _RECORD_SUCCESSES_SQL)."""
    assert 1 <= len(values) <= MAX_RECORD_BATCH and 0 <= handoff_max <= 1000 and lease_s > 0
    assert len({v["delivery_id"] for v in values}) == len(values), "one attempt per delivery and batch"
    driver = await driver_connection(session)
    assert not driver.is_in_transaction(), "must run before the session's transaction begins"
    columns = ("delivery_id", "step", "status_code", "at", "duration_ms", "response_excerpt", "manual_requested_at")
    with tracing.sql_span(_RECORD_SUCCESSES_SQL):
        rows = await driver.fetch(
            _RECORD_SUCCESSES_SQL, *([v[c] for v in values] for c in columns), handoff_max, lease_s
        )
    before: dict[str, str] = json.loads(rows[0]["settled_before"] or "{}")
    return before, [row for row in rows if row["id"] is not None]


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
# Also releases the lease, and clears the manual request if it is the one this attempt
# served (None: a scheduled attempt, which leaves a request made meanwhile in place).
_UPDATE_DELIVERY = text(
    """
    UPDATE webhook_deliveries SET attempts = :attempts, status = :status, schedule_step = :schedule_step,
        next_attempt_at = :next_attempt_at, last_status_code = :last_status_code, updated_at = now(),
        leased_until = NULL,
        manual_requested_at = CASE WHEN manual_requested_at IS NOT DISTINCT FROM :manual_requested_at
                                   THEN NULL ELSE manual_requested_at END
    WHERE id = :id
    """
)


async def insert_attempt(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(_INSERT_ATTEMPT, values)


async def update_delivery(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(_UPDATE_DELIVERY, values)


_REQUEST_MANUAL = text(
    "UPDATE webhook_deliveries SET manual_requested_at = now(), updated_at = now() WHERE id = :id"
    " RETURNING pg_notify('stablegate_webhooks', '') IS NULL"
)


async def request_manual(session: AsyncSession, delivery_id: str) -> None:
    """Make one manual attempt due now (a request already waiting is the same request)
    and wake the dispatchers at commit."""
    (await session.execute(_REQUEST_MANUAL, {"id": delivery_id})).one()


_RELEASE_LEASES = text(
    "UPDATE webhook_deliveries SET leased_until = NULL WHERE id = ANY(:ids) AND leased_until IS NOT NULL"
).bindparams(bindparam("ids", type_=ARRAY(Text)))


async def release_leases(session: AsyncSession, delivery_ids: Sequence[str]) -> None:
    """A stopping dispatcher gives back what it leased and did not record: due again now.
    (An attempt may have reached the receiver: it deduplicates by webhook-id.)"""
    await session.execute(_RELEASE_LEASES, {"ids": list(delivery_ids)})


_ABANDON_PENDING = text(
    "UPDATE webhook_deliveries SET status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,"
    " next_attempt_at = NULL, manual_requested_at = NULL, updated_at = now()"
    " WHERE endpoint_id = :endpoint_id AND (status = 'pending' OR manual_requested_at IS NOT NULL)"
)


async def abandon_pending(session: AsyncSession, endpoint_id: str) -> int:
    """Fail every pending delivery of an endpoint that stops receiving and drop its manual
    requests: nothing of it is due any more. Bounded by what one endpoint accrues in a
    schedule. An attempt already in flight still records its outcome."""
    result = await session.execute(_ABANDON_PENDING, {"endpoint_id": endpoint_id})
    return int(result.rowcount)  # type: ignore[attr-defined]


_GIVE_UP = text(
    "UPDATE webhook_deliveries SET status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,"
    " next_attempt_at = NULL, manual_requested_at = NULL, leased_until = NULL, updated_at = now()"
    " WHERE id = :id RETURNING status"
)


async def give_up(session: AsyncSession, delivery_id: str) -> None:
    """A claimed delivery whose endpoint was disabled or deleted since: nothing is due."""
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
