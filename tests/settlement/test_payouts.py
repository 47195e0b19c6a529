"""Payouts on a real anvil and PostgreSQL, the transaction manager driven tick by tick."""

from __future__ import annotations

from stablegate.db import Database
from stablegate.merchants.service import Principal
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
