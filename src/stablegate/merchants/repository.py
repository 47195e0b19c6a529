"""SQL for merchants and API keys."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

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


async def find_key_by_hash(session: AsyncSession, secret_hash: bytes) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.secret_hash == secret_hash))


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
