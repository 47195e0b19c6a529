"""Refunds of payments confirmed on a real anvil: partial refunds up to what was received,
over-refunds and unpaid payments refused with nothing written, overpaid and two-token
payments, another merchant's payment, and refunds racing on one payment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import text

from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.errors import InvalidRequest, NotFound
from stablegate.merchants.service import Principal
from stablegate.payments import service as payments
from stablegate.settlement import service
from stablegate.settlement.schemas import RefundCreate
from stablegate.settlement.txmanager import TxManager
from tests.chains.conftest import Chain
from tests.conftest import Tenant, make_tenant
from tests.payments.conftest import CONFIRMATIONS, DAI, USDC, create, pay_contract, pay_transfer
from tests.settlement.conftest import available, credit, event_types, fund_treasury, token_balance
from tests.settlement.test_txmanager import drive

PAYER_REFUND_ADDRESS = Account.from_key("0x" + "43" * 32).address


async def confirm(chain: Chain, follower: Follower) -> None:
    chain.mine(CONFIRMATIONS)
    await follower.sync()


async def refund(db: Database, principal: Principal, sctx: service.Context, **fields: Any) -> Any:
    params = RefundCreate.model_validate({"address": PAYER_REFUND_ADDRESS} | fields)
    async with db.session() as session:
        return await service.create_refund(session, principal, params, sctx)


async def counts(db: Database) -> tuple[int, ...]:
    async with db.session() as session:
        sql = (
            "SELECT (SELECT count(*) FROM refunds), (SELECT count(*) FROM tx_intents),"
            " (SELECT count(*) FROM ledger_transfers)"
        )
        return tuple((await session.execute(text(sql))).one())


async def paid_payment(
    db: Database, chain: Chain, follower: Follower, principal: Principal, pctx: payments.Context
) -> Any:
    payment = await create(db, principal, pctx, accepted=[{"chain": "local", "asset": "USDC"}])
    assert pay_contract(chain, payment)["status"] == 1
    await confirm(chain, follower)
    return payment


async def test_partial_refunds_up_to_the_amount_received_then_refused(
    db: Database,
    chain: Chain,
    follower: Follower,
    tenant: Tenant,
    principal: Principal,
    ctx: payments.Context,
    sctx: service.Context,
    tx_manager: TxManager,
) -> None:
    fund_treasury(chain)
    payment = await paid_payment(db, chain, follower, principal, ctx)  # 25 USDC, 1 % fee: 24.75 available
    first = await refund(db, principal, sctx, payment=payment.id, amount="10", reason="customer request")
    second = await refund(db, principal, sctx, payment=payment.id, amount="10")
    assert (first.status, first.amount_units, first.asset) == ("pending", str(10 * USDC), "USDC")
    assert await available(db, tenant.merchant_id) == 4_750_000  # both reserved at once

    before = await counts(db)
    with pytest.raises(InvalidRequest) as over:  # 5 of 25 remain
        await refund(db, principal, sctx, payment=payment.id, amount="6")
    assert (over.value.code, over.value.param) == ("amount_too_large", "amount")
    with pytest.raises(InvalidRequest) as short:  # 5 remain on the payment, but only 4.75 available
        await refund(db, principal, sctx, payment=payment.id)
    assert (short.value.code, short.value.param) == ("balance_insufficient", "amount")
    assert await counts(db) == before  # nothing written by either

    await drive(tx_manager, chain)
    for r in (first, second):
        async with db.session() as session:
            done = await service.retrieve_refund(session, principal, r.id, sctx)
        assert done.status == "paid" and done.tx_hash is not None
        assert await event_types(db, r.id) == ["refund.created", "refund.broadcast", "refund.succeeded"]
    assert token_balance(chain, PAYER_REFUND_ADDRESS) == 20 * USDC
    assert await available(db, tenant.merchant_id) == 4_750_000


async def test_unpaid_and_seen_only_payments_cannot_be_refunded(
    db: Database,
    chain: Chain,
    follower: Follower,
    principal: Principal,
    ctx: payments.Context,
    sctx: service.Context,
) -> None:
    unpaid = await create(db, principal, ctx)
    seen = await create(db, principal, ctx, accepted=[{"chain": "local", "asset": "USDC"}])
    pay_contract(chain, seen)
    await follower.sync()  # seen, not confirmed
    before = await counts(db)
    for payment in (unpaid, seen):
        with pytest.raises(InvalidRequest) as refused:
            await refund(db, principal, sctx, payment=payment.id, amount="1")
        assert (refused.value.code, refused.value.param) == ("payment_not_refundable", "payment")
    assert await counts(db) == before


async def test_another_merchants_payment_is_not_found(
    db: Database,
    chain: Chain,
    follower: Follower,
    principal: Principal,
    ctx: payments.Context,
    sctx: service.Context,
) -> None:
    payment = await paid_payment(db, chain, follower, principal, ctx)
    other = await make_tenant(db, "Other")
    stranger = Principal(other.merchant_id, "test", other.test_key_id, "secret", principal.scopes)
    before = await counts(db)
    for who, payment_id in ((stranger, payment.id), (principal, "pay_nonsense")):
        with pytest.raises(NotFound) as missing:
            await refund(db, who, sctx, payment=payment_id, amount="1")
        assert missing.value.param in ("id", "payment")
    assert await counts(db) == before


async def test_overpaid_money_and_a_two_token_payment_refund_by_token(
    db: Database,
    chain: Chain,
    follower: Follower,
    tenant: Tenant,
    principal: Principal,
    ctx: payments.Context,
    sctx: service.Context,
    tx_manager: TxManager,
) -> None:
    fund_treasury(chain)
    fund_treasury(chain, 1_000 * DAI, chain.stack.dai)
    overpaid = await create(db, principal, ctx, amount="5")
    pay_transfer(chain, overpaid, 7 * USDC)
    mixed = await create(db, principal, ctx, amount="30")
    pay_transfer(chain, mixed, 15 * USDC)
    pay_transfer(chain, mixed, 15 * DAI, asset="DAI")
    await confirm(chain, follower)

    extra = await refund(db, principal, sctx, payment=overpaid.id, amount="2", reason="overpaid")
    assert extra.amount_units == str(2 * USDC)
    with pytest.raises(InvalidRequest) as ambiguous:
        await refund(db, principal, sctx, payment=mixed.id, amount="1")
    assert ambiguous.value.param == "asset"
    # Without an amount: everything received in DAI, 15 — but the merchant was credited 15
    # less the 1 % fee, so the balance refuses it; a refund is funded by the merchant.
    with pytest.raises(InvalidRequest) as unfunded:
        await refund(db, principal, sctx, payment=mixed.id, chain="local", asset="DAI")
    assert unfunded.value.code == "balance_insufficient"
    dai = await refund(db, principal, sctx, payment=mixed.id, chain="local", asset="DAI", amount="14.85")
    assert (dai.asset, dai.amount_units) == ("DAI", str(1485 * DAI // 100))
    await drive(tx_manager, chain)
    assert token_balance(chain, PAYER_REFUND_ADDRESS, chain.stack.dai) == 1485 * DAI // 100
    assert token_balance(chain, PAYER_REFUND_ADDRESS) == 2 * USDC


async def test_racing_refunds_of_one_payment_never_exceed_what_it_received(
    db: Database,
    chain: Chain,
    follower: Follower,
    tenant: Tenant,
    principal: Principal,
    ctx: payments.Context,
    sctx: service.Context,
) -> None:
    payment = await paid_payment(db, chain, follower, principal, ctx)  # 25 USDC received
    await credit(db, tenant.merchant_id, 100 * USDC)  # the balance is not what limits here

    async def attempt() -> str:
        try:
            await refund(db, principal, sctx, payment=payment.id, amount="10")
        except InvalidRequest as exc:
            return exc.code
        return "ok"

    outcomes = await asyncio.gather(*(attempt() for _ in range(6)))
    assert sorted(outcomes) == ["amount_too_large"] * 4 + ["ok"] * 2


@pytest.mark.parametrize(
    ("chain", "asset", "param"),
    [("base", None, "chain"), ("base", "USDC", "chain"), ("local", "DAI", "asset"), (None, "DAI", "asset")],
)
def test_a_refund_naming_what_the_payment_was_not_paid_in_names_that_parameter(
    chain: str | None, asset: str | None, param: str
) -> None:
    received = [payments.Received(31337, "local", "USDC", "USDC.local", "0x" + "ab" * 20, 6, 5 * USDC)]
    fields = {"payment": "pay_" + "0" * 26, "address": "0x" + "cd" * 20, "chain": chain, "asset": asset}
    params = RefundCreate.model_validate({k: v for k, v in fields.items() if v is not None})
    with pytest.raises(InvalidRequest) as refused:
        service._refunded_token(received, params)
    assert refused.value.param == param
