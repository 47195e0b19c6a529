"""Quotes (design 0004): how many base units of a token pay a price in another currency.

token_units = ceil(price_units × rate × (1 + spread) × 10^token_scale / 10^price_scale)

in exact `Decimal` arithmetic, rounded **up** to the token's base unit: the payer pays at
least the price, never a unit less. Rates are `Decimal`; amounts stay integers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, localcontext

from stablegate.pricing.rates import Rate

MAX_SPREAD_BPS = 1_000  # 10 %: anything above is a configuration error, not a spread
PRECISION_DIGITS = 100  # enough for 2^256 × any rate without rounding before the final ceil


@dataclass(frozen=True)
class Quote:
    price_units: int  # what the merchant asked, in the price currency's minor units
    price_scale: int
    token_units: int  # what the payer pays, in the token's base units
    token_scale: int
    rate: Decimal  # price currency per token, before the spread
    spread_bps: int
    expires_at: dt.datetime


def token_amount(price_units: int, price_scale: int, rate: Decimal, spread_bps: int, token_scale: int) -> int:
    """`rate` is price-currency units per whole token (USD per USDC ≈ 1)."""
    if price_units <= 0:
        raise ValueError("a price is positive")
    if rate <= 0:
        raise ValueError("a rate is positive")
    if not 0 <= spread_bps <= MAX_SPREAD_BPS:
        raise ValueError(f"spread_bps must be 0 to {MAX_SPREAD_BPS}")
    with localcontext() as ctx:
        ctx.prec = PRECISION_DIGITS
        whole_tokens = Decimal(price_units).scaleb(-price_scale) / rate * (1 + Decimal(spread_bps) / 10_000)
        units = whole_tokens.scaleb(token_scale).to_integral_value(rounding=ROUND_CEILING)
    return int(units)


def quote(
    price_units: int, price_scale: int, rate: Rate, spread_bps: int, token_scale: int, ttl_s: int, now: dt.datetime
) -> Quote:
    units = token_amount(price_units, price_scale, rate.value, spread_bps, token_scale)
    return Quote(
        price_units, price_scale, units, token_scale, rate.value, spread_bps, now + dt.timedelta(seconds=ttl_s)
    )
