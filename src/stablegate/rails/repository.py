"""SQL for rails: payment intents and deposit addresses (tables of migration 0005)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_deposit_address(session: AsyncSession, values: dict[str, Any]) -> str:
    """The owner's address on the chain: the one stored if it exists (idempotent)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO rails_deposit_addresses (chain_id, address, salt, factory, owner_ref)"
                " VALUES (:chain_id, :address, :salt, :factory, :owner_ref)"
                " ON CONFLICT (chain_id, owner_ref) DO UPDATE SET owner_ref = EXCLUDED.owner_ref"
                " RETURNING address"
            ),
            values,
        )
    ).one()
    return str(row.address)


async def insert_intent(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(
        text(
            "INSERT INTO rails_intents (id, chain_id, router, token, amount, fee, recipient, fee_recipient,"
            " deadline_s, owner_ref, signature)"
            " VALUES (:id, :chain_id, :router, :token, :amount, :fee, :recipient, :fee_recipient,"
            " :deadline_s, :owner_ref, :signature)"
        ),
        values,
    )


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
