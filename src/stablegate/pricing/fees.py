"""Fees in integer base units (design 0004). The rounding rule, in one place:

    fee = min(max(ceil(amount × bps / 10 000) + fixed, minimum), maximum, amount)

The proportional part rounds up (towards the platform) by less than one base unit; the
fee never exceeds what was paid and is never negative, so merchant + fee = paid exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

BPS_PER_UNIT = 10_000
MAX_BPS = 10_000


@dataclass(frozen=True)
class FeeSchedule:
    bps: int  # basis points of the amount
    fixed: int = 0  # base units of the asset, added per payment
    minimum: int = 0
    maximum: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.bps <= MAX_BPS:
            raise ValueError(f"bps must be 0 to {MAX_BPS}")
        if self.fixed < 0 or self.minimum < 0:
            raise ValueError("fixed and minimum fees are not negative")
        if self.maximum is not None and self.maximum < self.minimum:
            raise ValueError("the maximum fee is not below the minimum")


@dataclass(frozen=True)
class Split:
    fee: int
    merchant: int


def fee(amount: int, schedule: FeeSchedule) -> int:
    assert amount >= 0, "amounts are not negative"
    proportional = -(-amount * schedule.bps // BPS_PER_UNIT)  # ceiling division, integers only
    charged = max(proportional + schedule.fixed, schedule.minimum)
    if schedule.maximum is not None:
        charged = min(charged, schedule.maximum)
    return min(charged, amount)


def split(amount: int, schedule: FeeSchedule) -> Split:
    charged = fee(amount, schedule)
    result = Split(fee=charged, merchant=amount - charged)
    assert result.fee + result.merchant == amount and 0 <= result.fee <= amount
    return result
