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
    fixed: int = 0  # base units of the asset, added once per payment (see next_fee)
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


def next_fee(amount: int, paid_before: int, charged_before: int, schedule: FeeSchedule) -> int:
    """The fee of a payment's next partial payment of `amount`, after `paid_before` that
    was charged `charged_before`: what the schedule charges the whole so far, less what
    was charged already. So a payment paid in parts pays the fixed fee, the minimum and
    the maximum once, and its parts' fees add up to `fee(total)` exactly.

    Never negative and never above `amount` (fee is monotonic, and grows by at most
    `amount` when the paid total does); the clamps only matter after a part's fee was
    reversed (a reorg), when `charged_before` is no longer fee(paid_before)."""
    assert amount >= 0 and paid_before >= 0 and charged_before >= 0
    return min(max(fee(paid_before + amount, schedule) - charged_before, 0), amount)


def split(amount: int, schedule: FeeSchedule) -> Split:
    charged = fee(amount, schedule)
    result = Split(fee=charged, merchant=amount - charged)
    assert result.fee + result.merchant == amount and 0 <= result.fee <= amount
    return result
