"""Payouts on a real anvil and PostgreSQL, the transaction manager driven tick by tick."""

from __future__ import annotations

from stablegate.db import Database
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.merchants.service import Principal
from stablegate.payments import service as payments
from stablegate.settlement import service
from stablegate.settlement.txmanager import TxManager
from tests.chains.conftest import CONFIRMATIONS, Chain
from tests.conftest import Tenant
from tests.settlement.conftest import (
    DESTINATION,
    USDC,
    available,
    credit,
    destination,
    event_types,
    fetch_payout,
    fund_treasury,
    payout,
    token_balance,
)


async def test_payout_reserved_sent_confirmed_and_posted(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    assert created.status == "pending" and created.amount_units == str(10 * USDC)
    assert await available(db, tenant.merchant_id) == 90 * USDC  # reserved at once

    await tx_manager.tick()  # signs and sends; anvil mines at once
    sent = await fetch_payout(db, principal, sctx, created.id)
    assert sent.status == "broadcast"
    assert token_balance(chain, DESTINATION) == 10 * USDC

    chain.mine(CONFIRMATIONS)
    await tx_manager.tick()
    paid = await fetch_payout(db, principal, sctx, created.id)
    assert paid.status == "paid" and paid.tx_hash is not None
    assert await available(db, tenant.merchant_id) == 90 * USDC
    assert await event_types(db, created.id) == ["payout.created", "payout.broadcast", "payout.paid"]
    receipt = chain.w3.eth.get_transaction_receipt(paid.tx_hash)
    assert receipt["from"].lower() == chain.stack.treasury.lower()


async def test_payout_fee_is_charged_on_top_of_what_the_destination_receives(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    revenue_before, treasury_before = await platform_balances(db)
    async with db.session() as session:
        await payments.set_fee_schedule(session, tenant.merchant_id, "test", rail="payout", asset="USDC.local", bps=100)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    assert (created.fee_units, created.net_units) == (str(USDC // 10), str(9_900_000))
    assert await available(db, tenant.merchant_id) == 90 * USDC  # amount reserved, fee included

    await tx_manager.tick()
    chain.mine(CONFIRMATIONS)
    await tx_manager.tick()
    assert (await fetch_payout(db, principal, sctx, created.id)).status == "paid"
    assert token_balance(chain, DESTINATION) == 9_900_000
    revenue_after, treasury_after = await platform_balances(db)
    assert revenue_after - revenue_before == USDC // 10
    assert treasury_after - treasury_before == 9_900_000  # what left on chain
    assert await available(db, tenant.merchant_id) == 90 * USDC


async def platform_balances(db: Database) -> tuple[int, int]:
    """(fee revenue, treasury credits) in USDC.local: shared accounts, so tests compare deltas."""
    async with db.session() as session:
        revenue = await chart.platform_account(session, "test", "fee_revenue", "USDC.local")
        treasury = await chart.treasury_account(session, 31337, "USDC.local")
        return (
            (await ledger.balance(session, revenue.id)).credit_balance_posted,
            (await ledger.balance(session, treasury.id)).credits_posted,
        )
