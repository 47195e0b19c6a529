"""Fee rounding properties (design 0004): never negative, never above the amount,
merchant + fee = paid, proportional part rounded up by less than one unit, monotone."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stablegate.pricing.fees import FeeSchedule, fee, next_fee, split

amounts = st.integers(min_value=0, max_value=10**30)  # up to 10^12 DAI in 18-decimal units


@st.composite
def schedules(draw: st.DrawFn) -> FeeSchedule:
    minimum = draw(st.integers(0, 10**8))
    maximum = draw(st.one_of(st.none(), st.integers(minimum, 10**12)))
    return FeeSchedule(draw(st.integers(0, 10_000)), draw(st.integers(0, 10**8)), minimum, maximum)


@given(amounts, schedules())
def test_fee_is_bounded_and_the_split_adds_up(amount: int, schedule: FeeSchedule) -> None:
    parts = split(amount, schedule)
    assert 0 <= parts.fee <= amount
    assert parts.fee + parts.merchant == amount


@given(amounts, st.integers(0, 10_000))
def test_proportional_part_rounds_up_by_less_than_one_unit(amount: int, bps: int) -> None:
    exact = Fraction(amount * bps, 10_000)
    charged = fee(amount, FeeSchedule(bps))
    assert exact <= charged < exact + 1 or charged == amount


@given(amounts, amounts, schedules())
def test_a_larger_payment_never_pays_a_smaller_fee(a: int, b: int, schedule: FeeSchedule) -> None:
    low, high = sorted((a, b))
    assert fee(low, schedule) <= fee(high, schedule)


@given(st.lists(st.integers(0, 10**24), min_size=1, max_size=8), schedules())
def test_a_payment_paid_in_parts_pays_the_fee_of_its_total(parts: list[int], schedule: FeeSchedule) -> None:
    """Each part pays what the total so far costs less what was charged: the parts' fees
    add up to fee(total), the fixed fee, minimum and maximum apply once, and every part's
    fee lies within its own amount without the clamps ever cutting."""
    paid = charged = 0
    for amount in parts:
        unclamped = fee(paid + amount, schedule) - charged
        part_fee = next_fee(amount, paid, charged, schedule)
        assert part_fee == unclamped and 0 <= part_fee <= amount
        paid, charged = paid + amount, charged + part_fee
    assert charged == fee(sum(parts), schedule)


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12), schedules())
def test_a_part_fee_is_bounded_whatever_was_charged_before(
    amount: int, paid_before: int, charged_before: int, schedule: FeeSchedule
) -> None:
    """After a reorg reversed an earlier part, what was charged no longer matches."""
    assert 0 <= next_fee(amount, paid_before, charged_before, schedule) <= amount


def test_examples() -> None:
    assert split(25_000_000, FeeSchedule(bps=100)).fee == 250_000  # 1 % of 25 USDC
    assert fee(1, FeeSchedule(bps=1)) == 1  # rounds up: a payment is never free by rounding
    assert fee(10, FeeSchedule(bps=0, fixed=30)) == 10  # never above the amount
    assert fee(10**6, FeeSchedule(bps=50, fixed=100_000, maximum=120_000)) == 105_000
    # 100 USDC in four parts, 1 % + 0.30 capped at 0.50: 0.50 in all, not 4 x 0.50
    capped = FeeSchedule(bps=100, fixed=300_000, maximum=500_000)
    assert next_fee(25_000_000, 0, 0, capped) == 500_000  # 0.25 + 0.30, capped
    assert next_fee(25_000_000, 25_000_000, 500_000, capped) == 0  # the cap is reached already


@pytest.mark.parametrize(
    "kwargs", [{"bps": -1}, {"bps": 10_001}, {"bps": 1, "fixed": -1}, {"bps": 1, "minimum": 5, "maximum": 4}]
)
def test_bad_schedules_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"bps|fixed|maximum"):
        FeeSchedule(**kwargs)
