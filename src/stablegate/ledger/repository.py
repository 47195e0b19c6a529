"""SQL for the ledger. Writes go through the `ledger_create_transfers` function (one round
trip per batch, migration 0003); reads are plain queries."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from stablegate.db import RETRYABLE_SQLSTATES, Database, sqlstate
from stablegate.errors import StablegateError
from stablegate.kit import pagination
from stablegate.kit.pagination import Page, PageRequest
from stablegate.ledger.errors import BY_CONSTRAINT, BY_SQLSTATE, LedgerError
from stablegate.ledger.models import LedgerAccount, LedgerAsset, LedgerTransfer
from stablegate.observability import tracing

# Every creating statement selects TransferResult's columns, in its order (service._results).
_CREATE = text("SELECT transfer_id, public_id, seq, created FROM ledger_create_transfers(CAST(:batch AS jsonb))")


NUMERIC_OUT_OF_RANGE = "22003"


def translate(exc: DBAPIError | asyncpg.PostgresError) -> StablegateError | None:
    """The ledger error a database refusal stands for, or None if it is not one of ours
    (deadlocks and serialization failures included: the callers' retry handles those)."""
    cause = exc if isinstance(exc, asyncpg.PostgresError) else (exc.orig.__cause__ if exc.orig is not None else None)
    state = exc.sqlstate if isinstance(exc, asyncpg.PostgresError) else sqlstate(exc)
    constraint = getattr(cause, "constraint_name", None)
    message = getattr(cause, "message", None) or str(exc)
    if state in BY_SQLSTATE:
        return BY_SQLSTATE[state](message)
    if constraint in BY_CONSTRAINT:
        return BY_CONSTRAINT[constraint](f"refused by the ledger: {constraint}")
    if state == NUMERIC_OUT_OF_RANGE:  # a balance column beyond numeric(78, 0)
        message = "A balance would exceed the ledger's range (under 10^78 base units)."
        return LedgerError(message, param="amount", code="balance_overflow")
    if state in RETRYABLE_SQLSTATES:
        return None
    if state is not None and state.startswith("23"):
        return LedgerError(f"refused by the ledger: {message}", code="constraint_violation")
    return None


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _json(value: Any) -> str:
    """The batch (or metadata) as JSON text. orjson: a 1000-transfer batch took 1.5 ms
    with json.dumps, 0.14 ms here. What it refuses (a key that is not a string, an
    integer beyond 64 bits) is refused as bad metadata, before anything is written."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise LedgerError(f"Transfer metadata must be JSON: {exc}", param="metadata") from None
    # jsonb cannot store NUL (ids were checked for it already); the pattern skips a string
    # that holds a backslash followed by "u0000" literally (escaped: "\\u0000").
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise LedgerError("Transfer metadata must not contain NUL characters.", param="metadata")
    return text


async def create_transfers(session: AsyncSession, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = await session.execute(_CREATE, {"batch": _json(batch)})
    return list(rows.all())


_CREATE_SQL = "SELECT transfer_id, public_id, seq, created FROM ledger_create_transfers($1::jsonb)"


_CREATE_ONE_SQL = (
    "SELECT transfer_id, public_id, seq, created"
    " FROM ledger_create_one_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)"
)


async def create_transfers_standalone(db: Database, batch: Sequence[dict[str, Any]]) -> list[asyncpg.Record]:
    """The batch as its own transaction: one statement on a pooled connection in
    autocommit, so one round trip in all (a single statement is atomic by itself).
    A single plain transfer goes with typed parameters: no JSON either way. The
    connection comes from the database's statement pool (cheaper than an ORM checkout)."""
    if len(batch) == 1 and batch[0]["pending_id"] is None:
        sql, args = _CREATE_ONE_SQL, _one_args(batch[0])
    else:
        sql, args = _CREATE_SQL, (_json(batch),)
    async with db.statements.connection() as driver:
        assert not driver.is_in_transaction()
        with tracing.sql_span(sql):
            return list(await driver.fetch(sql, *args))


def _one_args(t: dict[str, Any]) -> tuple[Any, ...]:
    return (
        t["id"],
        t["public_id"],
        t["kind"],
        t["debit_account"],
        t["credit_account"],
        t["asset"],
        Decimal(t["amount"]),  # exact: the amount is an integer string
        t["timeout_s"],
        t["code"],
        _json(t["metadata"]),
    )


async def upsert_asset(session: AsyncSession, values: dict[str, Any]) -> LedgerAsset | None:
    """The asset with this code, created if need be; None if another code already holds
    its (chain, contract) (one code per contract: the insert did nothing)."""
    await session.execute(insert(LedgerAsset).values(**values).on_conflict_do_nothing())
    return await session.get(LedgerAsset, values["code"], populate_existing=True)


async def asset_by_contract(session: AsyncSession, chain_id: int, contract: str) -> LedgerAsset | None:
    found = await session.scalars(
        select(LedgerAsset).where(LedgerAsset.chain_id == chain_id, LedgerAsset.contract == contract)
    )
    return found.first()


async def get_asset(session: AsyncSession, code: str) -> LedgerAsset | None:
    return await session.get(LedgerAsset, code)


async def open_account(session: AsyncSession, values: dict[str, Any]) -> LedgerAccount:
    """Create by code if missing; either way return the stored account."""
    await session.execute(insert(LedgerAccount).values(**values).on_conflict_do_nothing(index_elements=["code"]))
    account = await session.scalar(select(LedgerAccount).where(LedgerAccount.code == values["code"]))
    assert account is not None
    return account


async def open_accounts(session: AsyncSession, values: Sequence[dict[str, Any]]) -> list[LedgerAccount]:
    """`open_account` for many codes in two statements; accounts in the order given."""
    await session.execute(insert(LedgerAccount).values(list(values)).on_conflict_do_nothing(index_elements=["code"]))
    codes = [v["code"] for v in values]
    rows = await session.scalars(
        select(LedgerAccount).where(LedgerAccount.code.in_(codes)).execution_options(populate_existing=True)
    )
    by_code = {a.code: a for a in rows}
    return [by_code[c] for c in codes]


async def get_account(session: AsyncSession, account_id: int) -> LedgerAccount | None:
    return await session.get(LedgerAccount, account_id, populate_existing=True)


async def close_account(session: AsyncSession, account_id: int) -> None:
    await session.execute(
        text("UPDATE ledger_accounts SET closed_at = now() WHERE id = :id AND closed_at IS NULL"), {"id": account_id}
    )


async def merchant_accounts(session: AsyncSession, merchant_id: str, mode: str) -> list[LedgerAccount]:
    rows = await session.scalars(
        select(LedgerAccount)
        .where(LedgerAccount.merchant_id == merchant_id, LedgerAccount.mode == mode)
        .order_by(LedgerAccount.id)
        .execution_options(populate_existing=True)
    )
    return list(rows)


async def journal_sums(session: AsyncSession, account_id: int, until: dt.datetime | None) -> dict[str, int]:
    """Posted and pending sums of the journal for one account, optionally up to `until`.

    Resolutions move amounts out of pending: a post adds its amount to posted and releases
    the pending amount; a void or expiry only releases it. A row's time is its
    transaction's start (`now()`), so a resolution whose transaction began before its
    pending committed is stamped earlier than the pending: it counts from the pending's
    time (greatest), else a balance between the two showed a negative pending amount."""
    sql = text(
        """
        SELECT
          coalesce(sum(CASE WHEN t.kind IN ('posted', 'post') AND t.debit_account = :a THEN t.amount END), 0),
          coalesce(sum(CASE WHEN t.kind IN ('posted', 'post') AND t.credit_account = :a THEN t.amount END), 0),
          coalesce(sum(CASE WHEN t.kind = 'pending' AND t.debit_account = :a THEN t.amount END), 0)
            - coalesce(sum(CASE WHEN t.pending_id IS NOT NULL AND t.debit_account = :a THEN p.amount END), 0),
          coalesce(sum(CASE WHEN t.kind = 'pending' AND t.credit_account = :a THEN t.amount END), 0)
            - coalesce(sum(CASE WHEN t.pending_id IS NOT NULL AND t.credit_account = :a THEN p.amount END), 0)
        FROM ledger_transfers t
        LEFT JOIN ledger_transfers p ON p.id = t.pending_id
        WHERE (t.debit_account = :a OR t.credit_account = :a)
          AND (CAST(:until AS timestamptz) IS NULL
               OR greatest(t.created_at, p.created_at) <= CAST(:until AS timestamptz))
        """
    )
    row = (await session.execute(sql, {"a": account_id, "until": until})).one()
    debits_posted, credits_posted, debits_pending, credits_pending = (int(v) for v in row)
    return {
        "debits_posted": debits_posted,
        "credits_posted": credits_posted,
        "debits_pending": debits_pending,
        "credits_pending": credits_pending,
    }


async def history(session: AsyncSession, account_ids: Sequence[int], page: PageRequest) -> Page[LedgerTransfer]:
    query = select(LedgerTransfer).where(
        or_(LedgerTransfer.debit_account.in_(account_ids), LedgerTransfer.credit_account.in_(account_ids))
    )
    rows = (await session.scalars(pagination.apply(query, LedgerTransfer.public_id, page))).all()
    return pagination.finish(rows, page)


async def timed_out_pending(session: AsyncSession, limit: int) -> list[str]:
    """Pending transfers past their timeout with no resolution yet."""
    rows = await session.scalars(
        text(
            "SELECT p.id FROM ledger_transfers p WHERE p.kind = 'pending' AND p.timeout_at <= clock_timestamp()"
            " AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = p.id)"
            " ORDER BY p.timeout_at LIMIT :limit"
        ),
        {"limit": limit},
    )
    return list(rows)


async def merchant_entries(
    session: AsyncSession, account_ids: Sequence[int], page: PageRequest
) -> Page[tuple[LedgerTransfer, str | None, int | None]]:
    """Posted and pending transfers on these accounts, each with its resolution (a pending
    transfer and the post/void/expire that settles it are one balance transaction)."""
    resolution = aliased(LedgerTransfer)
    query = (
        select(LedgerTransfer, resolution.kind, resolution.amount)
        .outerjoin(resolution, resolution.pending_id == LedgerTransfer.id)
        .where(
            LedgerTransfer.kind.in_(("posted", "pending")),
            or_(LedgerTransfer.debit_account.in_(account_ids), LedgerTransfer.credit_account.in_(account_ids)),
        )
    )
    rows = (await session.execute(pagination.apply(query, LedgerTransfer.public_id, page))).all()
    page_rows = pagination.finish(rows, page)
    data: list[tuple[LedgerTransfer, str | None, int | None]] = [
        (transfer, kind, None if amount is None else int(amount)) for transfer, kind, amount in page_rows.data
    ]
    return Page(data=data, has_more=page_rows.has_more)
