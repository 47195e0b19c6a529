from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Amounts are strings: 18-decimal tokens overflow the 53-bit integers JSON parsers keep.
Amount = str


class BalanceAmount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset: str = Field(description="Asset code, e.g. `USD` or `USDC.base`.")
    amount: Amount = Field(description="Integer in the asset's smallest unit, as a string.")
    scale: int = Field(description="Decimal places: amount / 10**scale is the human amount.")


class Balance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["balance"] = "balance"
    livemode: bool
    available: list[BalanceAmount]
    pending: list[BalanceAmount]


class BalanceTransaction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["balance_transaction"] = "balance_transaction"
    id: str
    amount: Amount = Field(description="Signed: positive adds to `bucket`, negative takes from it.")
    asset: str
    scale: int
    status: Literal["pending", "posted", "voided", "expired"]
    bucket: str = Field(description="available, pending or reserve.")
    from_bucket: str | None = Field(
        description="For a move between two of your buckets (e.g. `pending` → `available` when a payment"
        " confirms): the bucket the amount left, and `bucket` the one it reached. Per bucket, the posted and"
        " pending entries reaching it less those leaving it add up to the balance (voided and expired ones"
        " moved nothing)."
    )
    type: str | None = Field(description="What moved the money, e.g. `payment` or `fee`.")
    source: str | None = Field(description="The id of the object that caused it, e.g. a payment.")
    created: int
