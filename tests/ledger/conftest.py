from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from stablegate.db import Database
from stablegate.ledger import service as ledger
from stablegate.ledger.models import LedgerAccount

_run = itertools.count()


@dataclass
class Book:
    """A small chart for one test: cash (asset), a merchant liability that may not go
    negative, fee income, and a USDC account for asset-mismatch cases."""

    cash: LedgerAccount
    merchant: LedgerAccount
    fees: LedgerAccount
    usdc: LedgerAccount


@pytest.fixture
async def book(db: Database) -> Book:
    n = next(_run)
    tag = f"{id(db)}:{n}"
    async with db.session() as session:
        await ledger.define_asset(session, "USD", 2)
        await ledger.define_asset(
            session, "USDC.base", 6, chain_id=8453, contract="0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
        )
        cash = await ledger.open_account(session, f"t:{tag}:cash", "USD", "asset")
        merchant = await ledger.open_account(
            session, f"t:{tag}:merchant", "USD", "liability", flags=ledger.FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS
        )
        fees = await ledger.open_account(session, f"t:{tag}:fees", "USD", "income")
        usdc = await ledger.open_account(session, f"t:{tag}:usdc", "USDC.base", "asset")
    return Book(cash, merchant, fees, usdc)
