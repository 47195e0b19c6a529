"""The platform's chart of accounts: predictable codes, created on demand (design 0002)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.ledger import service
from stablegate.ledger.models import LedgerAccount

MerchantBucket = Literal["available", "pending", "reserve"]
PlatformKind = Literal["fee_revenue", "fx", "suspense"]

# What the platform owes a merchant never goes negative, in any bucket.
_MERCHANT_FLAGS = service.FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS
_PLATFORM_TYPES: dict[str, str] = {"fee_revenue": "income", "fx": "equity", "suspense": "liability"}


def merchant_code(merchant_id: str, mode: str, bucket: MerchantBucket, asset: str) -> str:
    return f"merchant:{merchant_id}:{mode}:{bucket}:{asset}"


async def merchant_account(
    session: AsyncSession, merchant_id: str, mode: str, bucket: MerchantBucket, asset: str
) -> LedgerAccount:
    code = merchant_code(merchant_id, mode, bucket, asset)
    return await service.open_account(
        session, code, asset, "liability", flags=_MERCHANT_FLAGS, merchant_id=merchant_id, mode=mode
    )


async def merchant_accounts(
    session: AsyncSession, keys: Sequence[tuple[str, str, MerchantBucket, str]]
) -> list[LedgerAccount]:
    """`merchant_account` for many (merchant, mode, bucket, asset) in two round trips."""
    specs = [
        service.AccountSpec(
            merchant_code(m, mode, bucket, asset), asset, "liability", _MERCHANT_FLAGS, merchant_id=m, mode=mode
        )
        for m, mode, bucket, asset in keys
    ]
    return await service.open_accounts(session, specs)


async def platform_account(session: AsyncSession, mode: str, kind: PlatformKind, asset: str) -> LedgerAccount:
    return await service.open_account(session, f"platform:{mode}:{kind}:{asset}", asset, _PLATFORM_TYPES[kind])


async def clearing_account(session: AsyncSession, chain_id: int, asset: str) -> LedgerAccount:
    """Funds seen on chain for payments, before they are swept to the treasury."""
    return await service.open_account(session, f"chain:{chain_id}:{asset}:clearing", asset, "asset")


async def fee_wallet_account(session: AsyncSession, chain_id: int, asset: str) -> LedgerAccount:
    """The platform's fee wallet on a chain (where the router sends each payment's fee)."""
    return await service.open_account(session, f"treasury:{chain_id}:{asset}:fee_wallet", asset, "asset")


async def treasury_account(session: AsyncSession, chain_id: int, asset: str) -> LedgerAccount:
    """The platform's hot wallet on a chain."""
    return await service.open_account(session, f"treasury:{chain_id}:{asset}:hot_wallet", asset, "asset")
