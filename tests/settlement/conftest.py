"""Settlement on a real anvil: the deployed stack, a funded treasury, merchants with
available balances, and a transaction manager for the treasury signer driven tick by tick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import text

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.merchants.service import SCOPES, Principal
from stablegate.rails.deploy import Sender, connect, planned_local
from stablegate.settlement import service
from stablegate.settlement.schemas import DestinationCreate, PayoutCreate
from stablegate.settlement.signers import LocalSigner
from stablegate.settlement.txmanager import FeePolicy, TxManager
from tests.chains.conftest import Chain, chain, clean_chain_tables, follower  # noqa: F401
from tests.conftest import Tenant
from tests.payments.conftest import ctx  # noqa: F401

USDC = 10**6
TREASURY_KEY = DEV_PRIVATE_KEYS[1]
TREASURY_USDC = 1_000_000 * USDC
# A destination address nobody else uses in the tests (anvil account 9 is a payer; use a fresh one).
DESTINATION = Account.from_key("0x" + "42" * 32).address

SETTLEMENT_TABLES = (
    "sweeps, settlement_schedules, settlement_items, payouts, refunds, settlement_records,"
    " payout_destination_events, payout_destinations, tx_attempts, tx_intents, tx_signers"
)


@pytest.fixture
async def clean_settlement(db: Database, clean_chain_tables: None) -> None:  # noqa: F811
    """Every test has a fresh anvil whose nonces start at 0: forget earlier runs' transactions."""
    async with db.session() as session:
        await session.execute(text(f"TRUNCATE {SETTLEMENT_TABLES} CASCADE"))


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"destination_cooling_off_s": 0, "tx_stuck_after_s": 3600.0} | overrides
    return Settings(**values)


@pytest.fixture
def sctx(chain: Chain, clean_settlement: None) -> service.Context:  # noqa: F811
    context = service.Context.from_settings(settings(), [chain.config])
    service.register(context)
    return context


@pytest.fixture
def principal(tenant: Tenant) -> Principal:
    return Principal(
        merchant_id=tenant.merchant_id, mode="test", key_id=tenant.test_key_id, kind="secret", scopes=SCOPES
    )


def fund_treasury(chain: Chain, amount: int = TREASURY_USDC, token: str | None = None) -> None:  # noqa: F811
    sender = Sender(connect(chain.anvil.url), DEV_PRIVATE_KEYS[0])
    contract = chain.token(token or chain.stack.usdc)
    sender.transact(contract.functions.mint(chain.stack.treasury, amount))


def manager(db: Database, chain: Chain, **overrides: Any) -> TxManager:  # noqa: F811
    signer = LocalSigner(bytes.fromhex(TREASURY_KEY[2:]))
    return TxManager(db, chain.config, signer, FeePolicy.from_settings(settings(**overrides), chain.config))


async def credit(db: Database, merchant_id: str, amount: int, asset: str = "USDC.local", ref: str = "seed") -> None:
    """Give a merchant available balance as if payments had settled (clearing → available)."""
    async with db.session() as session:
        # The local USDC's address: the same on every fresh anvil, as real payments define it.
        await ledger.define_asset(session, asset, 6, chain_id=31337, contract=planned_local().usdc.lower())
        clearing = await chart.clearing_account(session, 31337, asset)
        available = await chart.merchant_account(session, merchant_id, "test", "available", asset)
        transfer = ledger.Transfer(
            id=f"test-credit:{merchant_id}:{ref}",
            debit_account=clearing.id,
            credit_account=available.id,
            asset=asset,
            amount=amount,
        )
        await ledger.create_transfers(session, [transfer])


async def available(db: Database, merchant_id: str, asset: str = "USDC.local") -> int:
    async with db.session() as session:
        account = await chart.merchant_account(session, merchant_id, "test", "available", asset)
        return (await ledger.balance(session, account.id)).credit_balance_available


async def destination(db: Database, principal: Principal, context: service.Context, address: str = DESTINATION) -> str:
    params = DestinationCreate(chain="local", asset="USDC", address=address)
    async with db.session() as session:
        return (await service.create_destination(session, principal, params, context)).id


async def payout(db: Database, principal: Principal, context: service.Context, dst: str, amount: str = "10") -> Any:
    async with db.session() as session:
        return await service.create_payout(session, principal, PayoutCreate(amount=amount, destination=dst), context)


async def fetch_payout(db: Database, principal: Principal, context: service.Context, payout_id: str) -> Any:
    async with db.session() as session:
        return await service.retrieve_payout(session, principal, payout_id, context)


def token_balance(chain: Chain, holder: str, token: str | None = None) -> int:  # noqa: F811
    return int(chain.token(token or chain.stack.usdc).functions.balanceOf(holder).call())


@pytest.fixture
async def tx_manager(db: Database, chain: Chain, sctx: service.Context) -> AsyncIterator[TxManager]:  # noqa: F811
    m = manager(db, chain)
    yield m
    await m.rpc.aclose()


async def event_types(db: Database, object_id: str) -> list[str]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT type FROM events WHERE object_id = :id ORDER BY id"), {"id": object_id}
        )
        return [r[0] for r in rows]
