"""SQL for rails: payment intents and deposit addresses (tables of migration 0005)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Intents arrive as one JSON array (amounts as decimal text: exact at any size).
_INTENTS_FROM_JSON = """
    INSERT INTO rails_intents (id, chain_id, router, token, amount, fee, recipient, fee_recipient, deadline_s,
                               owner_ref, signature)
    SELECT i.id, i.chain_id, i.router, i.token, i.amount, i.fee, i.recipient, i.fee_recipient, i.deadline_s,
           i.owner_ref, i.signature
    FROM jsonb_to_recordset(CAST(:intents AS jsonb)) AS i(
        id text, chain_id bigint, router text, token text, amount numeric, fee numeric, recipient text,
        fee_recipient text, deadline_s bigint, owner_ref text, signature text)
"""
_INSERT_INTENTS = text(_INTENTS_FROM_JSON)


async def insert_intents(session: AsyncSession, values: Sequence[dict[str, Any]]) -> None:
    await session.execute(_INSERT_INTENTS, {"intents": json.dumps(list(values))})


_INSERT_DEPOSIT_AND_INTENTS = text(
    f"""
    WITH deposit AS (
        INSERT INTO rails_deposit_addresses (chain_id, address, salt, factory, owner_ref)
        VALUES (:chain_id, :address, :salt, :factory, :owner_ref)
        ON CONFLICT (chain_id, owner_ref) DO UPDATE SET owner_ref = EXCLUDED.owner_ref
        RETURNING address
    ), intents AS ({_INTENTS_FROM_JSON})
    SELECT address FROM deposit
    """
)


async def insert_deposit_address_and_intents(
    session: AsyncSession, deposit: dict[str, Any], intents: Sequence[dict[str, Any]]
) -> str:
    """Both in one round trip (a payment's instructions on one chain); the address as stored."""
    params = deposit | {"intents": json.dumps(list(intents))}
    return str((await session.execute(_INSERT_DEPOSIT_AND_INTENTS, params)).scalar_one())


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
