"""SQL for rails: payment intents and deposit addresses (tables of migration 0005)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_in_transaction
from stablegate.observability import tracing


def _intents_from_json(parameter: str) -> str:
    """Intents arrive as one JSON array (amounts as decimal text: exact at any size)."""
    return f"""
    INSERT INTO rails_intents (id, chain_id, router, token, amount, fee, recipient, fee_recipient, deadline_s,
                               owner_ref, signature)
    SELECT i.id, i.chain_id, i.router, i.token, i.amount, i.fee, i.recipient, i.fee_recipient, i.deadline_s,
           i.owner_ref, i.signature
    FROM jsonb_to_recordset(CAST({parameter} AS jsonb)) AS i(
        id text, chain_id bigint, router text, token text, amount numeric, fee numeric, recipient text,
        fee_recipient text, deadline_s bigint, owner_ref text, signature text)
    """


_INSERT_INTENTS = text(_intents_from_json(":intents"))


async def insert_intents(session: AsyncSession, values: Sequence[dict[str, Any]]) -> None:
    await session.execute(_INSERT_INTENTS, {"intents": orjson.dumps(list(values)).decode()})


# On the driver connection: it runs for every payment created (POST /v1/payments), where
# the ORM's per-statement cost counts (design 0004, Performance).
_INSERT_DEPOSIT_AND_INTENTS = f"""
    WITH deposit AS (
        INSERT INTO rails_deposit_addresses (chain_id, address, salt, factory, owner_ref)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (chain_id, owner_ref) DO UPDATE SET owner_ref = EXCLUDED.owner_ref
        RETURNING address
    ), intents AS ({_intents_from_json("$6")})
    SELECT address FROM deposit
    """


async def insert_deposit_address_and_intents(
    session: AsyncSession, deposit: dict[str, Any], intents: Sequence[dict[str, Any]]
) -> str:
    """Both in one round trip (a payment's instructions on one chain); the address as stored."""
    driver = await driver_in_transaction(session)
    with tracing.sql_span(_INSERT_DEPOSIT_AND_INTENTS):
        address = await driver.fetchval(
            _INSERT_DEPOSIT_AND_INTENTS,
            deposit["chain_id"],
            deposit["address"],
            deposit["salt"],
            deposit["factory"],
            deposit["owner_ref"],
            orjson.dumps(list(intents)).decode(),
        )
    assert isinstance(address, str), "the upsert returns its row"
    return address


async def mark_intent_paid(session: AsyncSession, intent_id: str, observation_id: int, event: dict[str, Any]) -> bool:
    """Paid once, and only by a payment that matches the intent exactly (the contract
    enforces it; this re-checks what the chain reported)."""
    result = await session.execute(
        text(
            "UPDATE rails_intents SET status = 'paid', paid_observation_id = :observation_id"
            " WHERE id = :id AND status = 'open' AND chain_id = :chain_id AND token = :token"
            " AND amount = :amount AND fee = :fee"
        ),
        {"id": intent_id, "observation_id": observation_id, **event},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
