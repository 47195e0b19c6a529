"""SQL for payments, on the session's driver connection (design 0004).

Merchant-facing reads are scoped by (merchant_id, mode); the chain-event path looks
payments up by intent id or deposit owner and locks the row. Amounts are numeric(78,0)
in the database and int here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_fetchrow, driver_in_transaction
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest
from stablegate.observability import tracing

Row: TypeAlias = Any  # an asyncpg Record: columns by name

_PAYMENT_COLUMNS = (
    "id, merchant_id, mode, status, paid, late, needs_review, amount, currency, currency_scale, amount_received,"
    " description, metadata, reference, success_url, cancel_url, expires_at, canceled_at, late_accepted_at,"
    " created_at, updated_at"
)
_OPTION_COLUMNS = (
    "payment_id, position, chain_id, chain, symbol, asset, token, decimals, token_amount, rate, rate_source,"
    " rate_as_of, spread_bps, quote_expires_at, fee_bps, fee_fixed, fee_minimum, fee_maximum, deposit_address,"
    " intent_id, intent"
)
_RECEIPT_COLUMNS = (
    "observation_id, payment_id, position, rail, chain_id, tx_hash, log_index, block_number, from_address, amount,"
    " fee, status, generation, late"
)


async def _fetch(session: AsyncSession, sql: str, *args: Any) -> list[Row]:
    conn = await driver_in_transaction(session)
    with tracing.sql_span(sql):
        return list(await conn.fetch(sql, *args))


async def _fetchrow(session: AsyncSession, sql: str, *args: Any) -> Row | None:
    conn = await driver_in_transaction(session)
    with tracing.sql_span(sql):
        row: Row | None = await conn.fetchrow(sql, *args)
        return row


# --- writes from the API ---------------------------------------------------------------

# The payment and its options in one statement (options as one JSON array; amounts and
# rates as decimal text, exact at any size). The options' foreign key is checked at the
# end of the statement, when the payment exists.
_INSERT_PAYMENT = f"""
WITH payment AS (
    INSERT INTO payments (id, merchant_id, mode, amount, currency, currency_scale, description, metadata, reference,
                          success_url, cancel_url, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12)
    RETURNING {_PAYMENT_COLUMNS}
), options AS (
    INSERT INTO payment_options ({_OPTION_COLUMNS})
    SELECT {_OPTION_COLUMNS} FROM jsonb_to_recordset($13::jsonb) AS o(
        payment_id text, position smallint, chain_id bigint, chain text, symbol text, asset text, token text,
        decimals smallint, token_amount numeric, rate numeric, rate_source text, rate_as_of timestamptz,
        spread_bps integer, quote_expires_at timestamptz, fee_bps integer, fee_fixed numeric, fee_minimum numeric,
        fee_maximum numeric, deposit_address text, intent_id text, intent jsonb)
)
SELECT * FROM payment
"""


async def insert_payment(session: AsyncSession, v: dict[str, Any], options: Sequence[dict[str, Any]]) -> Row:
    row = await _fetchrow(
        session,
        _INSERT_PAYMENT,
        v["id"],
        v["merchant_id"],
        v["mode"],
        v["amount"],
        v["currency"],
        v["currency_scale"],
        v["description"],
        orjson.dumps(v["metadata"]).decode(),
        v["reference"],
        v["success_url"],
        v["cancel_url"],
        v["expires_at"],
        orjson.dumps([{k: _json_value(x) for k, x in o.items()} for o in options]).decode(),
    )
    assert row is not None
    return row


def _json_value(value: Any) -> Any:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)  # numeric columns: exact as text
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


# --- reads -----------------------------------------------------------------------------

_GET = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = $1 AND merchant_id = $2 AND mode = $3"


async def get(session: AsyncSession, merchant_id: str, mode: str, payment_id: str, *, for_update: bool) -> Row | None:
    return await _fetchrow(session, _GET + (" FOR UPDATE" if for_update else ""), payment_id, merchant_id, mode)


async def lock(session: AsyncSession, payment_id: str) -> Row:
    """The payment, locked for the rest of the transaction (chain events, expiry, cancel)."""
    row = await _fetchrow(session, f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = $1 FOR UPDATE", payment_id)
    assert row is not None, f"payment {payment_id} exists (options and receipts reference it)"
    return row


async def options(session: AsyncSession, payment_ids: Sequence[str]) -> list[Row]:
    sql = f"SELECT {_OPTION_COLUMNS} FROM payment_options WHERE payment_id = ANY($1) ORDER BY payment_id, position"
    return await _fetch(session, sql, list(payment_ids))


async def receipts(session: AsyncSession, payment_ids: Sequence[str]) -> list[Row]:
    sql = (
        f"SELECT {_RECEIPT_COLUMNS} FROM payment_receipts"
        " WHERE payment_id = ANY($1) ORDER BY payment_id, observation_id"
    )
    return await _fetch(session, sql, list(payment_ids))


async def list_page(
    session: AsyncSession, merchant_id: str, mode: str, page: PageRequest, filters: dict[str, Any]
) -> Page[Row]:
    where = ["merchant_id = $1", "mode = $2"]
    args: list[Any] = [merchant_id, mode]
    conditions = {
        "status": "status = ${}",
        "reference": "reference = ${}",
        "created_gte": "created_at >= ${}",
        "created_lt": "created_at < ${}",
    }
    for name, condition in conditions.items():
        if filters.get(name) is not None:
            args.append(filters[name])
            where.append(condition.format(len(args)))
    cursor, order = pagination.sql_window(page, args)
    conditions_sql = " AND ".join(where + cursor)
    sql = f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE {conditions_sql} ORDER BY id {order} LIMIT {page.limit + 1}"
    return pagination.finish(await _fetch(session, sql, *args), page)


# --- the chain-event path --------------------------------------------------------------

_OPTION_BY_INTENT = f"SELECT {_OPTION_COLUMNS} FROM payment_options WHERE intent_id = $1"
_OPTION_BY_DEPOSIT = f"""
SELECT {_OPTION_COLUMNS} FROM payment_options
WHERE payment_id = $1 AND chain_id = $2 AND token = $3 AND deposit_address = $4
"""


async def option_by_intent(session: AsyncSession, intent_id: str) -> Row | None:
    return await _fetchrow(session, _OPTION_BY_INTENT, intent_id)


async def option_by_deposit(
    session: AsyncSession, payment_id: str, chain_id: int, token: str, address: str
) -> Row | None:
    return await _fetchrow(session, _OPTION_BY_DEPOSIT, payment_id, chain_id, token, address)


async def receipt(session: AsyncSession, observation_id: int) -> Row | None:
    sql = f"SELECT {_RECEIPT_COLUMNS} FROM payment_receipts WHERE observation_id = $1 FOR UPDATE"
    return await _fetchrow(session, sql, observation_id)


_INSERT_RECEIPT = """
INSERT INTO payment_receipts (observation_id, payment_id, position, rail, chain_id, tx_hash, log_index, block_number,
                              from_address, amount, fee, status, generation, late)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""


async def insert_receipt(session: AsyncSession, v: dict[str, Any]) -> None:
    conn = await driver_in_transaction(session)
    args = [v[c.strip()] for c in _RECEIPT_COLUMNS.split(",")]
    with tracing.sql_span(_INSERT_RECEIPT):
        await conn.execute(_INSERT_RECEIPT, *args)


async def update_receipt(
    session: AsyncSession,
    observation_id: int,
    status: str,
    generation: int,
    block_number: int,
    fee: int | None = None,
    late: bool = False,
) -> None:
    """The receipt's new status; `fee`, if given, replaces the one estimated when it was
    seen; `late` marks it late money (a receipt never turns back to on time)."""
    conn = await driver_in_transaction(session)
    sql = (
        "UPDATE payment_receipts SET status = $2, generation = $3, block_number = $4, fee = coalesce($5, fee),"
        " late = late OR $6, updated_at = now() WHERE observation_id = $1"
    )
    with tracing.sql_span(sql):
        await conn.execute(sql, observation_id, status, generation, block_number, fee, late)


async def totals(session: AsyncSession, payment_id: str) -> list[Row]:
    """Per option: token units seen (not yet confirmed) and confirmed, and the late parts
    of both."""
    sql = """
    SELECT position,
           coalesce(sum(amount) FILTER (WHERE status = 'seen'), 0) AS seen,
           coalesce(sum(amount) FILTER (WHERE status = 'confirmed'), 0) AS confirmed,
           coalesce(sum(amount) FILTER (WHERE status = 'seen' AND late), 0) AS late_seen,
           coalesce(sum(amount) FILTER (WHERE status = 'confirmed' AND late), 0) AS late_confirmed
    FROM payment_receipts WHERE payment_id = $1 GROUP BY position
    """
    return await _fetch(session, sql, payment_id)


async def update_state(session: AsyncSession, payment_id: str, v: dict[str, Any]) -> Row:
    sql = f"""
    UPDATE payments SET status = $2, paid = $3, late = $4, needs_review = $5, amount_received = $6,
           canceled_at = CASE WHEN $2 = 'canceled' THEN coalesce(canceled_at, now()) END,
           late_accepted_at = CASE WHEN $7 THEN coalesce(late_accepted_at, now()) END, updated_at = now()
    WHERE id = $1 RETURNING {_PAYMENT_COLUMNS}
    """
    row = await _fetchrow(
        session,
        sql,
        payment_id,
        v["status"],
        v["paid"],
        v["late"],
        v["needs_review"],
        v["amount_received"],
        v["late_accepted"],
    )
    assert row is not None
    return row


def _followed_past_expiry(grace: str, waited_out_at: str, except_chain: str) -> str:
    """SQL over payment `p`: every chain it accepts (but `except_chain`) had its follower
    at the head `grace` or more past p's expiry (chain_cursors.synced_at, design 0004), so
    money mined there before the expiry has been seen; or p expired at or before
    `waited_out_at`, a follower down that long holding it no longer. A read of the chains'
    table: the follower commits the watermark with the receipts it found, so one snapshot
    sees both or neither."""
    return f"""(p.expires_at <= {waited_out_at} OR NOT EXISTS (
        SELECT 1 FROM payment_options o LEFT JOIN chain_cursors c ON c.chain_id = o.chain_id
        WHERE o.payment_id = p.id AND o.chain_id IS DISTINCT FROM {except_chain}
          AND (c.synced_at IS NULL OR c.synced_at < p.expires_at + {grace})))"""


async def due_to_expire(
    session: AsyncSession, now: dt.datetime, grace: dt.timedelta, waited_out_at: dt.datetime, limit: int
) -> list[Row]:
    """Open payments that expired `grace` or more before `now`, locked (others' locks
    are skipped, not waited on): unpaid ones, and underpaid ones with no on-time money
    waiting for confirmations (which may complete them; they come back once it is
    confirmed; late money cannot), whose chains were followed past their expiry. Each
    arm has its partial index (0007, 0019), and the query returns only payments the
    state machine will expire, so a batch is never filled with ones it leaves alone."""
    sql = f"""
    SELECT {_PAYMENT_COLUMNS} FROM payments p
    WHERE p.expires_at <= $1
      AND (p.status = 'requires_payment'
           OR (p.status = 'processing' AND NOT EXISTS (
                 SELECT 1 FROM payment_receipts r WHERE r.payment_id = p.id AND r.status = 'seen' AND NOT r.late)))
      AND {_followed_past_expiry("$4::interval", "$3", "NULL")}
    ORDER BY p.expires_at LIMIT $2 FOR UPDATE OF p SKIP LOCKED
    """
    return await _fetch(session, sql, now - grace, limit, waited_out_at, grace)


async def followed_past_expiry(
    session: AsyncSession,
    payment_ids: Sequence[str],
    grace: dt.timedelta,
    waited_out_at: dt.datetime,
    except_chain: int | None = None,
) -> set[str]:
    """Those of `payment_ids` whose chains (but `except_chain`) were followed past their
    expiry (as in due_to_expire), read afresh: after the payments were locked, a rewind
    that committed since an earlier statement's snapshot is seen here."""
    sql = f"""
    SELECT p.id FROM payments p
    WHERE p.id = ANY($1) AND {_followed_past_expiry("$2::interval", "$3", "$4::bigint")}
    """
    rows = await _fetch(session, sql, list(payment_ids), grace, waited_out_at, except_chain)
    return {r["id"] for r in rows}


# --- merchant settings -------------------------------------------------------------------


@dataclass(frozen=True)
class MerchantSettings:
    spread_bps: int | None  # None: the platform's default
    accepted: list[str]  # 'chain:SYMBOL'; empty: every configured one
    fee_schedules: list[Row]


# A read before the payment's transaction begins (it runs on its own, like the key lookup
# before it): settings are read once per payment, and the transaction's BEGIN then goes
# with its first write.
_MERCHANT_SETTINGS = """
    SELECT p.spread_bps, p.accepted,
           coalesce((SELECT jsonb_agg(jsonb_build_array(f.rail, f.asset, f.bps, f.fixed::text, f.minimum::text,
                                                        f.maximum::text))
                     FROM payment_fee_schedules f WHERE f.merchant_id = $1 AND f.mode = $2),
                    '[]') AS schedules
    FROM (SELECT 1) AS one LEFT JOIN payment_profiles p ON p.merchant_id = $1 AND p.mode = $2
    """
_SCHEDULE_FIELDS = ("rail", "asset", "bps", "fixed", "minimum", "maximum")


async def merchant_settings(session: AsyncSession, merchant_id: str, mode: str) -> MerchantSettings:
    """The merchant's payment profile and fee schedules, in one round trip."""
    row = await driver_fetchrow(session, _MERCHANT_SETTINGS, merchant_id, mode)
    assert row is not None, "the outer join always yields a row"
    schedules_json = row["schedules"]
    raw = json.loads(schedules_json) if isinstance(schedules_json, str) else schedules_json
    schedules = [dict(zip(_SCHEDULE_FIELDS, s, strict=True)) for s in raw]
    return MerchantSettings(row["spread_bps"], list(row["accepted"] or []), schedules)


async def fee_schedules_of(session: AsyncSession, merchant_ids: Sequence[str], mode: str, rail: str) -> list[Row]:
    """Many merchants' schedules for one rail, in one round trip (settlement runs)."""
    sql = """
    SELECT merchant_id, rail, asset, bps, fixed, minimum, maximum FROM payment_fee_schedules
    WHERE merchant_id = ANY($1::text[]) AND mode = $2 AND rail = $3
    """
    return await _fetch(session, sql, list(merchant_ids), mode, rail)


async def upsert_profile(
    session: AsyncSession, merchant_id: str, mode: str, spread_bps: int, accepted: list[str]
) -> None:
    sql = """
    INSERT INTO payment_profiles (merchant_id, mode, spread_bps, accepted) VALUES ($1, $2, $3, $4)
    ON CONFLICT (merchant_id, mode) DO UPDATE SET spread_bps = $3, accepted = $4, updated_at = now()
    """
    await _fetch(session, sql, merchant_id, mode, spread_bps, accepted)


async def upsert_fee_schedule(session: AsyncSession, merchant_id: str, mode: str, v: dict[str, Any]) -> None:
    sql = """
    INSERT INTO payment_fee_schedules (merchant_id, mode, rail, asset, bps, fixed, minimum, maximum)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (merchant_id, mode, rail, asset)
    DO UPDATE SET bps = $5, fixed = $6, minimum = $7, maximum = $8, updated_at = now()
    """
    await _fetch(
        session, sql, merchant_id, mode, v["rail"], v["asset"], v["bps"], v["fixed"], v["minimum"], v["maximum"]
    )
