"""SQL for merchants and API keys."""

from __future__ import annotations

import asyncpg
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.db import driver_fetchrow
from stablegate.merchants.models import ApiKey, Merchant


async def insert_merchant(session: AsyncSession, merchant: Merchant) -> Merchant:
    session.add(merchant)
    await session.flush()
    return merchant


async def get_merchant(session: AsyncSession, merchant_id: str) -> Merchant | None:
    return await session.get(Merchant, merchant_id)


async def list_merchants(session: AsyncSession, limit: int) -> list[Merchant]:
    rows = await session.scalars(select(Merchant).order_by(Merchant.id.desc()).limit(limit))
    return list(rows)


async def insert_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


_ACTIVE_KEY_SQL = (
    "SELECT merchant_id, mode, id, kind, scopes FROM api_keys"
    " WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
)


async def find_active_key(session: AsyncSession, secret_hash: bytes) -> asyncpg.Record | None:
    """The columns authentication needs. Runs on the driver connection: this is the one
    statement every API request makes, and before the request's transaction begins."""
    row: asyncpg.Record | None = await driver_fetchrow(session, _ACTIVE_KEY_SQL, secret_hash)
    return row


async def list_keys(session: AsyncSession, merchant_id: str) -> list[ApiKey]:
    rows = await session.scalars(select(ApiKey).where(ApiKey.merchant_id == merchant_id).order_by(ApiKey.id.desc()))
    return list(rows)


async def revoke_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    """Mark revoked (idempotent: an already revoked key keeps its first revoked_at)."""
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=func.now())
    )
    key = await session.get(ApiKey, key_id, populate_existing=True)
    return key
