"""SQL for the hosted checkout: one read of a payment by id alone, with its merchant's
display name. Read-only; the page has no caller identity, so the id is the only key."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_fetchrow

# The same columns payments.repository reads, so payments.views renders the row as the API
# would; plus the merchant's display name (and nothing else of the merchant's).
_PAYMENT = """
SELECT p.id, p.merchant_id, p.mode, p.status, p.paid, p.late, p.needs_review, p.amount, p.currency,
       p.currency_scale, p.amount_received, p.description, p.metadata, p.reference, p.success_url, p.cancel_url,
       p.expires_at, p.canceled_at, p.late_accepted_at, p.created_at, p.updated_at, m.name AS merchant_name
FROM payments p JOIN merchants m ON m.id = p.merchant_id
WHERE p.id = $1
"""


async def payment(session: AsyncSession, payment_id: str) -> Any:
    """The payment row (asyncpg Record) or None."""
    return await driver_fetchrow(session, _PAYMENT, payment_id)
