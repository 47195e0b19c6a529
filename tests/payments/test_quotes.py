"""Quotes at payment creation: rates from the provider, refused when stale or missing,
the merchant's spread and fee schedules applied, amounts rounded towards the platform."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from stablegate.db import Database
from stablegate.errors import InvalidRequest
from stablegate.merchants.service import Principal
from stablegate.payments import repository, service
from stablegate.pricing.rates import Rate, StaticRates
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
