"""SQL for merchants and API keys."""

from __future__ import annotations

from sqlalchemy import Row, bindparam, func, select, update
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


# Built once: constructing a statement costs more CPU than running it on this hot path.
_ACTIVE_KEY = select(ApiKey.merchant_id, ApiKey.mode, ApiKey.id, ApiKey.kind, ApiKey.scopes).where(
    ApiKey.secret_hash == bindparam("secret_hash"), ApiKey.revoked_at.is_(None)
)


async def find_active_key(session: AsyncSession, secret_hash: bytes) -> Row[str, str, str, str, list[str]] | None:
    """The columns authentication needs (a Core row: no ORM identity map on the hot path)."""
    return (await session.execute(_ACTIVE_KEY, {"secret_hash": secret_hash})).first()


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
