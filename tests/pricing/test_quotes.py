"""Quotes round up to the token's base unit: the payer never pays less than the price."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stablegate.pricing.quotes import token_amount

rates = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100000"), places=8)


@given(st.integers(1, 10**15), st.sampled_from([0, 2, 3]), rates, st.integers(0, 1000), st.sampled_from([6, 18]))
def test_the_payer_pays_at_least_the_price_and_less_than_one_unit_more(
    price: int, price_scale: int, rate: Decimal, spread: int, token_scale: int
) -> None:
    units = token_amount(price, price_scale, rate, spread, token_scale)
    exact = Fraction(price, 10**price_scale) / Fraction(rate) * (1 + Fraction(spread, 10_000)) * 10**token_scale
    assert exact <= units < exact + 1


def test_examples() -> None:
    assert token_amount(2500, 2, Decimal("1"), 0, 6) == 25_000_000  # 25.00 USD → 25 USDC
    assert token_amount(2500, 2, Decimal("1.08"), 0, 6) == 23_148_149  # 25.00 at 1.08 per token: 23.148148… rounded up
    assert token_amount(2500, 2, Decimal("1"), 50, 18) == 25_125 * 10**15  # 0.5 % spread, DAI


@pytest.mark.parametrize(("price", "rate", "spread"), [(0, "1", 0), (-1, "1", 0), (1, "0", 0), (1, "1", 1001)])
def test_bad_inputs_are_refused(price: int, rate: str, spread: int) -> None:
    with pytest.raises(ValueError, match=r"positive|spread"):
        token_amount(price, 2, Decimal(rate), spread, 6)
