"""Quotes at payment creation: rates from the provider, refused when stale or missing,
the merchant's spread and fee schedules applied, amounts rounded towards the platform."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from eth_account import Account
from sqlalchemy import text

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.errors import InvalidRequest, ServiceUnavailable
from stablegate.merchants.service import Principal
from stablegate.payments import repository, service
from stablegate.pricing.rates import Rate, StaticRates
from stablegate.rails import contracts
from tests.chains.conftest import Chain
from tests.conftest import Tenant
from tests.payments.conftest import create, option


class AgedRates:
    """A provider whose every rate is `age_s` old (a feed that stopped updating)."""

    def __init__(self, age_s: float) -> None:
        self.age_s = age_s

    async def rate(self, base: str, quote: str) -> Rate:
        as_of = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.age_s)
        return Rate(base, quote, Decimal("0.92"), as_of, "test-feed")


def with_rates(ctx: service.Context, rates: object, **changes: object) -> service.Context:
    from dataclasses import replace

    return replace(ctx, rates=rates, **changes)  # type: ignore[arg-type]


async def test_eur_price_quoted_through_the_rate_rounded_up(
    db: Database, principal: Principal, ctx: service.Context
) -> None:
    fresh = with_rates(ctx, AgedRates(0))
    payment = await create(
        db, principal, fresh, amount="10.00", currency="EUR", accepted=[{"chain": "local", "asset": "USDC"}]
    )
    quote = option(payment).quote
    # 10 EUR / 0.92 EUR per USDC = 10.869565217… USDC, rounded up to the base unit.
    assert (quote.amount_units, quote.rate, quote.rate_source) == ("10869566", "0.92", "test-feed")


async def test_a_stale_rate_is_refused_and_nothing_is_written(
    db: Database, principal: Principal, ctx: service.Context
) -> None:
    stale = with_rates(ctx, AgedRates(ctx.rate_max_age_s + 1))
    with pytest.raises(InvalidRequest) as refused:
        await create(db, principal, stale, currency="EUR", accepted=[{"chain": "local", "asset": "DAI"}])
    assert (refused.value.code, refused.value.param) == ("rate_stale", "accepted[0][asset]")


async def test_a_token_priced_payment_needs_no_rate(db: Database, principal: Principal, ctx: service.Context) -> None:
    empty = with_rates(ctx, StaticRates({}))
    payment = await create(
        db, principal, empty, amount="5.5", currency="USDC", accepted=[{"chain": "local", "asset": "USDC"}]
    )
    assert (payment.amount, option(payment).quote.amount_units, option(payment).quote.rate_source) == (
        "5.500000",
        "5500000",
        "identity",
    )


async def test_merchant_spread_and_fee_schedules_apply_per_rail(
    db: Database, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    async with db.session() as session:
        await service.set_profile(session, tenant.merchant_id, "test", spread_bps=50, accepted=["local:USDC"])
        await service.set_fee_schedule(session, tenant.merchant_id, "test", rail="contract", asset="*", bps=200)
        await service.set_fee_schedule(
            session, tenant.merchant_id, "test", rail="deposit_address", asset="USDC.local", bps=0, fixed=100_000
        )
    payment = await create(db, principal, ctx, amount="20")
    [usdc] = payment.options  # the profile accepts USDC only
    assert usdc.quote.amount_units == "20100000" and usdc.quote.spread_bps == 50  # 20 × 1.005
    assert usdc.instructions.contract.intent["fee"] == "402000"  # type: ignore[union-attr]  # 2 % of 20.1
    async with db.session() as session:
        [row] = await repository.options(session, [payment.id])
    assert (row["fee_bps"], int(row["fee_fixed"])) == (0, 100_000)


def set_feed(chain: Chain, answer: int, updated_at: int | None = None) -> None:
    """The feed owner reports a round (8 decimals), as an oracle network would."""
    owner = Account.from_key(DEV_PRIVATE_KEYS[0])
    feed = chain.w3.eth.contract(address=chain.stack.price_feed, abi=contracts.abi("MockPriceFeed"))
    call = feed.functions.setAnswer(answer) if updated_at is None else feed.functions.setRoundData(answer, updated_at)
    nonce = chain.w3.eth.get_transaction_count(owner.address)
    tx = call.build_transaction({"from": owner.address, "nonce": nonce, "chainId": chain.stack.chain_id})
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction)
    )


async def test_a_configured_chainlink_feed_prices_its_pair_and_static_rates_the_rest(
    db: Database, principal: Principal, chain: Chain
) -> None:
    set_feed(chain, 95_000_000)  # 0.95 EUR per USDC
    settings = Settings(
        intent_signer_key=DEV_PRIVATE_KEYS[0], fx_feeds=f"USDC/EUR@local:{chain.stack.price_feed}", rate_max_age_s=600
    )
    ctx = service.Context.from_settings(settings, [chain.config])
    payment = await create(db, principal, ctx, amount="19.00", currency="EUR")
    usdc, dai = option(payment, "USDC").quote, option(payment, "DAI").quote
    assert (usdc.rate, usdc.amount_units) == ("0.95", "20000000") and usdc.rate_source.startswith("chainlink:")
    assert (dai.rate, dai.rate_source) == ("0.92", "static")

    set_feed(chain, 95_000_000, updated_at=int(time.time()) - 3600)  # the feed stopped updating
    with pytest.raises(InvalidRequest) as refused:
        await create(db, principal, ctx, amount="19.00", currency="EUR")
    assert (refused.value.code, refused.value.param) == ("rate_stale", "accepted[0][asset]")


async def test_a_feed_that_cannot_be_read_is_a_503_naming_the_asset_and_nothing_is_written(
    db: Database, principal: Principal, chain: Chain
) -> None:
    """A feed address with no contract (the answer is empty, not a round): the pair has no
    rate for now. That is the platform's fault, not the request's: 503, retry later."""
    nowhere = "0x" + "fe" * 20
    settings = Settings(intent_signer_key=DEV_PRIVATE_KEYS[0], fx_feeds=f"USDC/EUR@local:{nowhere}")
    ctx = service.Context.from_settings(settings, [chain.config])
    async with db.session() as session:
        before = await session.scalar(text("SELECT count(*) FROM payments"))
    with pytest.raises(ServiceUnavailable) as refused:
        await create(db, principal, ctx, amount="19.00", currency="EUR")
    assert (refused.value.status_code, refused.value.code) == (503, "rate_unavailable")
    assert refused.value.param == "accepted[0][asset]" and refused.value.headers["Retry-After"] == "5"
    async with db.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM payments")) == before


@pytest.mark.parametrize(
    "text",
    ["USDC/EUR", "USDC/EUR@local", "USDC@local:0x" + "ab" * 20, "USDC/EUR@local:0x1234", "/EUR@local:0x" + "ab" * 20],
)
def test_a_malformed_feed_setting_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="STABLEGATE_FX_FEEDS"):
        service.parse_feeds(text)


def test_a_feed_on_an_unconfigured_chain_is_refused_at_start(chain: Chain) -> None:
    settings = Settings(fx_feeds="USDC/EUR@base:0x" + "ab" * 20)
    with pytest.raises(ValueError, match="not configured"):
        service.Context.from_settings(settings, [chain.config])
