"""SQL for settlement (design 0006), on the session's driver connection: the transaction
manager's intents, attempts and nonces; payout destinations and their audit trail;
payouts, refunds, settlement schedules and records; sweeps.

Amounts are numeric(78,0) in the database and int in Python.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_in_transaction
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest
from stablegate.observability import tracing

Row: TypeAlias = Any  # an asyncpg Record: columns by name

OPEN_INTENT_STATES = ("planned", "signed", "broadcast", "mined")


async def _fetch(session: AsyncSession, sql: str, *args: Any) -> list[Row]:
    conn = await driver_in_transaction(session)
    with tracing.sql_span(sql):
        return list(await conn.fetch(sql, *args))


async def _fetchrow(session: AsyncSession, sql: str, *args: Any) -> Row | None:
    conn = await driver_in_transaction(session)
    with tracing.sql_span(sql):
        row: Row | None = await conn.fetchrow(sql, *args)
        return row


async def _execute(session: AsyncSession, sql: str, *args: Any) -> str:
    conn = await driver_in_transaction(session)
    with tracing.sql_span(sql):
        return str(await conn.execute(sql, *args))


# --- transaction manager: intents ------------------------------------------------------

_INTENT_COLUMNS = (
    "id, chain_id, signer, purpose, owner_ref, to_address, value, data, gas_limit, token, token_amount, nonce,"
    " status, tx_hash, block_number, block_hash, gas_used, error, fail_unsigned_at, created_at, updated_at"
)


async def insert_intent(session: AsyncSession, v: dict[str, Any]) -> Row:
    """The intent for `owner_ref`: created now, or the one that exists (one per owner)."""
    row = await _fetchrow(
        session,
        f"""INSERT INTO tx_intents (id, chain_id, signer, purpose, owner_ref, to_address, value, data, gas_limit,
                                     token, token_amount, fail_unsigned_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (owner_ref) DO NOTHING RETURNING {_INTENT_COLUMNS}""",
        v["id"], v["chain_id"], v["signer"], v["purpose"], v["owner_ref"], v["to_address"], v["value"],
        v["data"], v["gas_limit"], v["token"], v["token_amount"], v["fail_unsigned_at"],
    )  # fmt: skip
    if row is None:
        row = await _fetchrow(session, f"SELECT {_INTENT_COLUMNS} FROM tx_intents WHERE owner_ref = $1", v["owner_ref"])
    assert row is not None
    return row


async def intent(session: AsyncSession, intent_id: str, *, for_update: bool = False) -> Row | None:
    lock = " FOR UPDATE" if for_update else ""
    return await _fetchrow(session, f"SELECT {_INTENT_COLUMNS} FROM tx_intents WHERE id = $1{lock}", intent_id)


async def planned(session: AsyncSession, chain_id: int, signer: str, limit: int) -> list[Row]:
    return await _fetch(
        session,
        f"""SELECT {_INTENT_COLUMNS},
                   (SELECT count(*) FROM tx_attempts a WHERE a.intent_id = tx_intents.id) AS attempts
            FROM tx_intents
            WHERE chain_id = $1 AND signer = $2 AND status = 'planned'
            ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED""",
        chain_id, signer, limit,
    )  # fmt: skip


async def committed_token_amounts(session: AsyncSession, chain_id: int, signer: str) -> dict[str, int]:
    """Per token, what signed but not yet mined transactions will take from the signer."""
    rows = await _fetch(
        session,
        """SELECT token, sum(token_amount) AS amount FROM tx_intents
           WHERE chain_id = $1 AND signer = $2 AND status IN ('signed', 'broadcast') AND token IS NOT NULL
           GROUP BY token""",
        chain_id, signer,
    )  # fmt: skip
    return {r["token"]: int(r["amount"]) for r in rows}


async def lock_signer(session: AsyncSession, chain_id: int, signer: str, chain_nonce: int) -> int:
    """The signer's next nonce, its row locked until commit (the nonce authority). A new
    signer starts at the chain's count; a signer used outside the manager moves forward."""
    row = await _fetchrow(
        session,
        """INSERT INTO tx_signers (chain_id, signer, next_nonce) VALUES ($1, $2, $3)
           ON CONFLICT (chain_id, signer) DO UPDATE SET next_nonce = greatest(tx_signers.next_nonce, $3)
           RETURNING next_nonce""",
        chain_id, signer, chain_nonce,
    )  # fmt: skip
    assert row is not None
    return int(row["next_nonce"])


async def set_next_nonce(session: AsyncSession, chain_id: int, signer: str, next_nonce: int) -> None:
    await _execute(
        session,
        "UPDATE tx_signers SET next_nonce = $3 WHERE chain_id = $1 AND signer = $2 AND next_nonce <= $3",
        chain_id, signer, next_nonce,
    )  # fmt: skip


async def set_intent(session: AsyncSession, intent_id: str, **v: Any) -> None:
    assert v and all(k.isidentifier() for k in v)
    assignments = ", ".join(f"{k} = ${i + 2}" for i, k in enumerate(v))
    await _execute(
        session, f"UPDATE tx_intents SET {assignments}, updated_at = now() WHERE id = $1", intent_id, *v.values()
    )


async def due_unsigned(session: AsyncSession, chain_id: int, signer: str, now: dt.datetime) -> list[Row]:
    return await _fetch(
        session,
        f"""SELECT {_INTENT_COLUMNS} FROM tx_intents
            WHERE chain_id = $1 AND signer = $2 AND status = 'planned' AND fail_unsigned_at <= $3
            ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED""",
        chain_id, signer, now,
    )  # fmt: skip


# --- transaction manager: attempts -----------------------------------------------------

_ATTEMPT_COLUMNS = (
    "a.intent_id, a.attempt, a.nonce, a.max_fee_per_gas, a.max_priority_fee_per_gas, a.raw_tx, a.tx_hash,"
    " a.status, a.created_at, a.broadcast_at"
)


async def insert_attempt(session: AsyncSession, v: dict[str, Any]) -> None:
    await _execute(
        session,
        """INSERT INTO tx_attempts (intent_id, attempt, nonce, max_fee_per_gas, max_priority_fee_per_gas, raw_tx,
                                    tx_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        v["intent_id"], v["attempt"], v["nonce"], v["max_fee_per_gas"], v["max_priority_fee_per_gas"], v["raw_tx"],
        v["tx_hash"],
    )  # fmt: skip


async def attempts(session: AsyncSession, chain_id: int, signer: str, intent_states: Sequence[str]) -> list[Row]:
    """Every attempt of the signer's intents in `intent_states`, with the intent's status,
    ordered by intent then attempt."""
    return await _fetch(
        session,
        f"""SELECT {_ATTEMPT_COLUMNS}, i.status AS intent_status, i.block_number AS intent_block,
                   i.tx_hash AS intent_tx_hash, i.purpose, i.owner_ref
            FROM tx_attempts a JOIN tx_intents i ON i.id = a.intent_id
            WHERE i.chain_id = $1 AND i.signer = $2 AND i.status = ANY($3::text[])
            ORDER BY i.nonce, a.attempt""",
        chain_id, signer, list(intent_states),
    )  # fmt: skip


async def mark_attempts(session: AsyncSession, tx_hashes: Sequence[str], status: str, *, sent: bool = False) -> None:
    sent_sql = ", broadcast_at = coalesce(broadcast_at, now())" if sent else ""
    await _execute(
        session,
        f"UPDATE tx_attempts SET status = $2{sent_sql} WHERE tx_hash = ANY($1::text[])",
        list(tx_hashes), status,
    )  # fmt: skip


async def resend_attempt(session: AsyncSession, tx_hash: str) -> None:
    """A re-broadcast restarts the attempt's stuck clock."""
    await _execute(session, "UPDATE tx_attempts SET broadcast_at = now() WHERE tx_hash = $1", tx_hash)


async def mark_broadcast(session: AsyncSession, intent_ids: Sequence[str]) -> list[Row]:
    """Intents that move signed → broadcast now (the first send), returned for their owners."""
    return await _fetch(
        session,
        f"""UPDATE tx_intents SET status = 'broadcast', updated_at = now()
            WHERE id = ANY($1::text[]) AND status = 'signed' RETURNING {_INTENT_COLUMNS}""",
        list(intent_ids),
    )  # fmt: skip


async def clear_attempts(session: AsyncSession, intent_id: str) -> None:
    """An intent whose nonce went to a transaction not ours: its attempts can never be
    mined (the nonce is spent); they stay as history, marked replaced."""
    await _execute(session, "UPDATE tx_attempts SET status = 'replaced' WHERE intent_id = $1", intent_id)


async def signer_summary(session: AsyncSession, chain_id: int, signer: str) -> dict[str, int]:
    rows = await _fetch(
        session,
        "SELECT status, count(*) AS n FROM tx_intents WHERE chain_id = $1 AND signer = $2 GROUP BY status",
        chain_id, signer,
    )  # fmt: skip
    return {r["status"]: int(r["n"]) for r in rows}


# --- destinations ----------------------------------------------------------------------

_DESTINATION_COLUMNS = (
    "id, merchant_id, mode, chain_id, chain, asset, address, label, usable_after, created_at, removed_at"
)


async def insert_destination(session: AsyncSession, v: dict[str, Any], actor: str) -> Row:
    row = await _fetchrow(
        session,
        f"""WITH d AS (
                INSERT INTO payout_destinations (id, merchant_id, mode, chain_id, chain, asset, address, label,
                                                 usable_after)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_DESTINATION_COLUMNS}
            ), audit AS (
                INSERT INTO payout_destination_events (destination_id, merchant_id, mode, action, address, actor)
                SELECT id, merchant_id, mode, 'created', address, $10 FROM d
            )
            SELECT * FROM d""",
        v["id"], v["merchant_id"], v["mode"], v["chain_id"], v["chain"], v["asset"], v["address"], v["label"],
        v["usable_after"], actor,
    )  # fmt: skip
    assert row is not None
    return row


async def destination(session: AsyncSession, merchant_id: str, mode: str, destination_id: str) -> Row | None:
    return await _fetchrow(
        session,
        f"SELECT {_DESTINATION_COLUMNS} FROM payout_destinations WHERE id = $1 AND merchant_id = $2 AND mode = $3",
        destination_id, merchant_id, mode,
    )  # fmt: skip


async def remove_destination(session: AsyncSession, row: Row, actor: str) -> Row:
    removed = await _fetchrow(
        session,
        f"""WITH d AS (
                UPDATE payout_destinations SET removed_at = now() WHERE id = $1 AND removed_at IS NULL
                RETURNING {_DESTINATION_COLUMNS}
            ), audit AS (
                INSERT INTO payout_destination_events (destination_id, merchant_id, mode, action, address, actor)
                SELECT id, merchant_id, mode, 'removed', address, $2 FROM d
            )
            SELECT * FROM d""",
        row["id"], actor,
    )  # fmt: skip
    return removed if removed is not None else row


async def list_destinations(session: AsyncSession, merchant_id: str, mode: str, page: PageRequest) -> Page[Row]:
    return await _page(session, "payout_destinations", _DESTINATION_COLUMNS, merchant_id, mode, page, {})


# --- payouts and refunds ---------------------------------------------------------------

PAYOUT_COLUMNS = (
    "id, merchant_id, mode, destination_id, chain_id, asset, address, amount, fee, status, tx_intent_id,"
    " settlement_id, tx_hash, failure_code, description, metadata, created_at, updated_at"
)
REFUND_COLUMNS = (
    "id, merchant_id, mode, payment_id, chain_id, asset, address, amount, reason, status, tx_intent_id, tx_hash,"
    " failure_code, metadata, created_at, updated_at"
)


async def insert_payouts(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[Row]:
    return await _fetch(
        session,
        f"""INSERT INTO payouts (id, merchant_id, mode, destination_id, chain_id, asset, address, amount, fee,
                                 tx_intent_id, settlement_id, description, metadata)
            SELECT p.id, p.merchant_id, p.mode, p.destination_id, p.chain_id, p.asset, p.address, p.amount, p.fee,
                   p.tx_intent_id, p.settlement_id, p.description, coalesce(p.metadata, '{{}}')
            FROM jsonb_to_recordset($1::jsonb) AS p(
                id text, merchant_id text, mode text, destination_id text, chain_id bigint, asset text,
                address text, amount numeric, fee numeric, tx_intent_id text, settlement_id text, description text,
                metadata jsonb)
            RETURNING {PAYOUT_COLUMNS}""",
        json.dumps(list(rows), default=str),
    )


async def insert_refund(session: AsyncSession, v: dict[str, Any]) -> Row:
    row = await _fetchrow(
        session,
        f"""INSERT INTO refunds (id, merchant_id, mode, payment_id, chain_id, asset, address, amount, reason,
                                 tx_intent_id, metadata)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb) RETURNING {REFUND_COLUMNS}""",
        v["id"], v["merchant_id"], v["mode"], v["payment_id"], v["chain_id"], v["asset"], v["address"], v["amount"],
        v["reason"], v["tx_intent_id"], json.dumps(v["metadata"]),
    )  # fmt: skip
    assert row is not None
    return row


async def get_owned(
    session: AsyncSession, table: str, merchant_id: str, mode: str, object_id: str, *, for_update: bool = False
) -> Row | None:
    columns = _COLUMNS[table]
    lock = " FOR UPDATE" if for_update else ""
    return await _fetchrow(
        session,
        f"SELECT {columns} FROM {table} WHERE id = $1 AND merchant_id = $2 AND mode = $3{lock}",
        object_id, merchant_id, mode,
    )  # fmt: skip


async def by_intent(session: AsyncSession, table: str, intent_id: str) -> list[Row]:
    """The payouts (a batch has many) or refunds that an intent carries, locked."""
    return await _fetch(
        session, f"SELECT {_COLUMNS[table]} FROM {table} WHERE tx_intent_id = $1 ORDER BY id FOR UPDATE", intent_id
    )


async def set_status(
    session: AsyncSession, table: str, ids: Sequence[str], status: str, from_states: Sequence[str], **v: Any
) -> list[Row]:
    extra = "".join(f", {k} = ${i + 4}" for i, k in enumerate(v))
    return await _fetch(
        session,
        f"""UPDATE {table} SET status = $2, updated_at = now(){extra}
            WHERE id = ANY($1::text[]) AND status = ANY($3::text[]) RETURNING {_COLUMNS[table]}""",
        list(ids), status, list(from_states), *v.values(),
    )  # fmt: skip


async def refunded(session: AsyncSession, payment_id: str, chain_id: int, asset: str) -> int:
    """What a payment's live refunds (not failed or canceled) take, in one asset."""
    row = await _fetchrow(
        session,
        """SELECT coalesce(sum(amount), 0) AS total FROM refunds
           WHERE payment_id = $1 AND chain_id = $2 AND asset = $3 AND status NOT IN ('failed', 'canceled')""",
        payment_id, chain_id, asset,
    )  # fmt: skip
    assert row is not None
    return int(row["total"])


async def list_owned(
    session: AsyncSession, table: str, merchant_id: str, mode: str, page: PageRequest, filters: dict[str, Any]
) -> Page[Row]:
    return await _page(session, table, _COLUMNS[table], merchant_id, mode, page, filters)


async def _page(
    session: AsyncSession,
    table: str,
    columns: str,
    merchant_id: str,
    mode: str,
    page: PageRequest,
    filters: dict[str, Any],
) -> Page[Row]:
    """Newest first, cursor on id; `filters` are equality filters on known columns."""
    clauses: list[str] = ["merchant_id = $1", "mode = $2"]
    args: list[Any] = [merchant_id, mode]
    for column, value in filters.items():
        if value is not None:
            assert column.isidentifier()
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    cursor, order = pagination.sql_window(page, args)
    args.append(page.limit + 1)
    where = " AND ".join(clauses + cursor)
    rows = await _fetch(
        session, f"SELECT {columns} FROM {table} WHERE {where} ORDER BY id {order} LIMIT ${len(args)}", *args
    )
    return pagination.finish(rows, page)


# --- settlement ------------------------------------------------------------------------

SETTLEMENT_COLUMNS = (
    "id, run_id, merchant_id, mode, asset, gross, payment_fees, refunds, payout_amount, payout_fee, created_at"
)
SCHEDULE_COLUMNS = (
    "merchant_id, mode, asset, destination_id, kind, daily_at_utc, threshold, minimum, last_run_on, updated_at"
)
_COLUMNS = {
    "payouts": PAYOUT_COLUMNS,
    "refunds": REFUND_COLUMNS,
    "settlement_records": SETTLEMENT_COLUMNS,
    "payout_destinations": _DESTINATION_COLUMNS,
}


async def upsert_schedule(session: AsyncSession, v: dict[str, Any]) -> Row:
    row = await _fetchrow(
        session,
        f"""INSERT INTO settlement_schedules (merchant_id, mode, asset, destination_id, kind, daily_at_utc, threshold,
                                              minimum)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (merchant_id, mode, asset) DO UPDATE SET destination_id = $4, kind = $5, daily_at_utc = $6,
                threshold = $7, minimum = $8, updated_at = now()
            RETURNING {SCHEDULE_COLUMNS}""",
        v["merchant_id"], v["mode"], v["asset"], v["destination_id"], v["kind"], v["daily_at_utc"], v["threshold"],
        v["minimum"],
    )  # fmt: skip
    assert row is not None
    return row


async def mark_schedule_run(session: AsyncSession, keys: Sequence[tuple[str, str, str]], run_on: dt.date) -> None:
    await _execute(
        session,
        """UPDATE settlement_schedules s SET last_run_on = $2
           FROM jsonb_to_recordset($1::jsonb) AS k(merchant_id text, mode text, asset text)
           WHERE (s.merchant_id, s.mode, s.asset) = (k.merchant_id, k.mode, k.asset)""",
        json.dumps([{"merchant_id": m, "mode": mo, "asset": a} for m, mo, a in keys]), run_on,
    )  # fmt: skip


async def destinations_by_id(session: AsyncSession, destination_ids: Sequence[str]) -> dict[str, Row]:
    rows = await _fetch(
        session,
        f"SELECT {_DESTINATION_COLUMNS} FROM payout_destinations WHERE id = ANY($1::text[])",
        list(destination_ids),
    )
    return {r["id"]: r for r in rows}


async def unsettled_payments_of(
    session: AsyncSession, merchant_ids: Sequence[str], mode: str, asset: str, per_merchant: int
) -> list[Row]:
    """`unsettled_payments` for many merchants in one round trip (at most `per_merchant` each)."""
    return await _fetch(
        session,
        """SELECT merchant_id, payment_id, amount, fee FROM (
               SELECT p.merchant_id, r.payment_id, sum(r.amount) AS amount, sum(r.fee) AS fee,
                      row_number() OVER (PARTITION BY p.merchant_id ORDER BY r.payment_id) AS n
               FROM payment_receipts r
               JOIN payments p ON p.id = r.payment_id
               JOIN payment_options o ON o.payment_id = r.payment_id AND o.position = r.position
               WHERE p.merchant_id = ANY($1::text[]) AND p.mode = $2 AND o.asset = $3 AND r.status = 'confirmed'
                 AND NOT EXISTS (SELECT 1 FROM settlement_items s
                                 WHERE s.kind = 'payment' AND s.object_id = r.payment_id AND NOT s.released)
               GROUP BY p.merchant_id, r.payment_id
           ) AS unsettled WHERE n <= $4 ORDER BY merchant_id, payment_id""",
        list(merchant_ids), mode, asset, per_merchant,
    )  # fmt: skip


async def unsettled_refunds_of(
    session: AsyncSession, merchant_ids: Sequence[str], mode: str, asset: str, per_merchant: int
) -> list[Row]:
    return await _fetch(
        session,
        """SELECT merchant_id, id, amount FROM (
               SELECT merchant_id, id, amount, row_number() OVER (PARTITION BY merchant_id ORDER BY id) AS n
               FROM refunds r
               WHERE merchant_id = ANY($1::text[]) AND mode = $2 AND asset = $3 AND status = 'paid'
                 AND NOT EXISTS (SELECT 1 FROM settlement_items s
                                 WHERE s.kind = 'refund' AND s.object_id = r.id AND NOT s.released)
           ) AS unsettled WHERE n <= $4 ORDER BY merchant_id, id""",
        list(merchant_ids), mode, asset, per_merchant,
    )  # fmt: skip


async def insert_settlements(
    session: AsyncSession, records: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]
) -> None:
    await _execute(
        session,
        """WITH r AS (
               INSERT INTO settlement_records (id, run_id, merchant_id, mode, asset, gross, payment_fees, refunds,
                                               payout_amount, payout_fee)
               SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(id text, run_id text, merchant_id text, mode text,
                   asset text, gross numeric, payment_fees numeric, refunds numeric, payout_amount numeric,
                   payout_fee numeric)
               RETURNING id
           )
           INSERT INTO settlement_items (settlement_id, kind, object_id, amount, fee)
           SELECT i.settlement_id, i.kind, i.object_id, i.amount, i.fee
           FROM jsonb_to_recordset($2::jsonb) AS i(settlement_id text, kind text, object_id text, amount numeric,
               fee numeric)
           WHERE i.settlement_id IN (SELECT id FROM r)""",
        json.dumps(list(records), default=str), json.dumps(list(items), default=str),
    )  # fmt: skip


async def settlement_items(session: AsyncSession, settlement_ids: Sequence[str]) -> list[Row]:
    return await _fetch(
        session,
        """SELECT settlement_id, kind, object_id, amount, fee FROM settlement_items
           WHERE settlement_id = ANY($1::text[]) ORDER BY settlement_id, kind, object_id""",
        list(settlement_ids),
    )


async def payouts_of_settlements(session: AsyncSession, settlement_ids: Sequence[str]) -> list[Row]:
    return await _fetch(
        session, f"SELECT {PAYOUT_COLUMNS} FROM payouts WHERE settlement_id = ANY($1::text[])", list(settlement_ids)
    )


async def release_settlement_items(session: AsyncSession, settlement_ids: Sequence[str]) -> None:
    if settlement_ids:
        await _execute(
            session,
            "UPDATE settlement_items SET released = true WHERE settlement_id = ANY($1::text[])",
            list(settlement_ids),
        )


# --- sweeps ----------------------------------------------------------------------------


async def sweep_candidates(session: AsyncSession, chain_id: int, limit: int) -> list[Row]:
    """Deposit addresses on `chain_id` holding confirmed payments received after their last
    sweep, with the tokens received (what the sweep should move)."""
    return await _fetch(
        session,
        """SELECT d.address, d.salt, o.token, o.asset, sum(r.amount) AS received
           FROM payment_receipts r
           JOIN payment_options o ON o.payment_id = r.payment_id AND o.position = r.position
           JOIN rails_deposit_addresses d ON d.chain_id = r.chain_id AND d.address = o.deposit_address
           WHERE r.chain_id = $1 AND r.rail = 'deposit_address' AND r.status = 'confirmed'
             AND NOT EXISTS (
                 SELECT 1 FROM sweeps s, jsonb_array_elements(s.items) AS item
                 WHERE s.chain_id = $1 AND s.status <> 'failed' AND item->>'address' = d.address
                   AND item->>'token' = o.token AND s.created_at > r.created_at)
           GROUP BY d.address, d.salt, o.token, o.asset
           ORDER BY d.address, o.token LIMIT $2""",
        chain_id, limit,
    )  # fmt: skip


async def insert_sweep(session: AsyncSession, v: dict[str, Any]) -> None:
    await _execute(
        session,
        "INSERT INTO sweeps (id, chain_id, tx_intent_id, items) VALUES ($1, $2, $3, $4::jsonb)",
        v["id"], v["chain_id"], v["tx_intent_id"], json.dumps(v["items"]),
    )  # fmt: skip


async def sweeps_by_intent(session: AsyncSession, intent_id: str) -> list[Row]:
    return await _fetch(
        session, "SELECT id, chain_id, status, items FROM sweeps WHERE tx_intent_id = $1 FOR UPDATE", intent_id
    )


# --- sweeps: planning lock and guarded finish (settlement/sweeps.py) -------------------

SWEEP_LOCK_NAMESPACE = 0x5347_5357 << 32  # "SGSW": one planning lock per chain


async def lock_sweep_planning(session: AsyncSession, chain_id: int) -> None:
    """One sweep planner per chain until commit: two concurrent runs would plan the same
    deposits twice (harmless on chain, where the second finds nothing, but gas for nothing)."""
    await _execute(session, "SELECT pg_advisory_xact_lock($1)", SWEEP_LOCK_NAMESPACE | (chain_id & 0xFFFF_FFFF))


async def finish_sweep(session: AsyncSession, sweep_id: str, status: str, items: Sequence[dict[str, Any]]) -> bool:
    """pending → swept|failed with the items as finally recorded (what moved per item);
    False when the sweep had already finished (a replayed outcome)."""
    row = await _fetchrow(
        session,
        """UPDATE sweeps SET status = $2, items = $3::jsonb, updated_at = now()
           WHERE id = $1 AND status = 'pending' RETURNING id""",
        sweep_id, status, json.dumps(list(items)),
    )  # fmt: skip
    return row is not None


async def settlement_records(session: AsyncSession, settlement_ids: Sequence[str]) -> list[Row]:
    """Settlement records by id, in id order (settlement runs read back what they wrote)."""
    return await _fetch(
        session,
        f"SELECT {SETTLEMENT_COLUMNS} FROM settlement_records WHERE id = ANY($1::text[]) ORDER BY id",
        list(settlement_ids),
    )


async def due_schedules(session: AsyncSession, today: dt.date, time_of_day: dt.time, limit: int) -> list[Row]:
    """The schedules a run at (`today`, `time_of_day` UTC) may settle, locked for it (a
    concurrent run skips them): daily ones past their time and not run today, and every
    threshold one (due-ness needs the balance). Filtering daily ones here keeps the run's
    bound for schedules that can pay; the least recently run come first."""
    return await _fetch(
        session,
        f"""SELECT {SCHEDULE_COLUMNS} FROM settlement_schedules
            WHERE kind = 'threshold'
               OR (kind = 'daily' AND daily_at_utc <= $2 AND (last_run_on IS NULL OR last_run_on < $1))
            ORDER BY last_run_on NULLS FIRST, merchant_id, mode, asset
            LIMIT $3 FOR UPDATE SKIP LOCKED""",
        today, time_of_day, limit,
    )  # fmt: skip
