"""Request and response models of the settlement API: payout destinations, payouts,
refunds and settlement records (design 0006). Amounts travel as decimal strings in the
token's major unit plus integer base units, as for payments."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from stablegate.kit.validation import NO_NUL_PATTERN, STORABLE, Metadata
from stablegate.payments.schemas import AmountText, ChainName, Description, Symbol

AddressText = Annotated[
    str,
    StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$"),
    Field(description="A 0x address; mixed case must be a valid EIP-55 checksum.", examples=["0x" + "ab" * 20]),
]
Label = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL_PATTERN), STORABLE]
Reason = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL_PATTERN), STORABLE]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]
PayoutStatus = Literal["pending", "broadcast", "paid", "failed", "canceled"]


class DestinationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    chain: ChainName = Field(description="A configured chain's name, e.g. `base`.")
    asset: Symbol = Field(description="A token symbol configured on that chain, e.g. `USDC`.")
    address: AddressText
    label: Label | None = None


class Destination(BaseModel):
    object: Literal["payout_destination"] = "payout_destination"
    id: str
    livemode: bool
    chain: str
    chain_id: int
    asset: str
    address: str = Field(description="EIP-55 checksummed.")
    label: str | None
    usable_after: int = Field(description="Unix time from which payouts may use it (the cooling-off period).")
    removed: bool
    created: int


class PayoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount: AmountText = Field(description="Debited from your available balance, in the token's major unit.")
    destination: ObjectId = Field(description="A `dst_` payout destination past its cooling-off period.")
    asset: Symbol | None = Field(default=None, description="If given, must be the destination's token.")
    description: Description | None = None
    metadata: Metadata = None


class Payout(BaseModel):
    object: Literal["payout"] = "payout"
    id: str
    livemode: bool
    status: PayoutStatus
    chain: str
    chain_id: int
    asset: str
    destination: str
    address: str
    amount: str = Field(description="Debited from the available balance (major unit).")
    amount_units: str
    fee: str
    fee_units: str
    net_units: str = Field(description="What the destination receives: amount − fee, base units.")
    tx_hash: str | None
    settlement: str | None
    failure_code: str | None
    description: str | None
    metadata: dict[str, str]
    created: int


class RefundCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    payment: ObjectId = Field(description="The `pay_` payment to refund.")
    amount: AmountText | None = Field(
        default=None, description="Token major units; default: everything of that token not yet refunded."
    )
    chain: ChainName | None = Field(default=None, description="Needed only when the payment was paid on several.")
    asset: Symbol | None = Field(default=None, description="Needed only when the payment was paid in several tokens.")
    address: AddressText = Field(
        description="Where the refund goes. Always given: a payment's sender may be an exchange's shared wallet."
    )
    reason: Reason | None = None
    metadata: Metadata = None


class Refund(BaseModel):
    object: Literal["refund"] = "refund"
    id: str
    livemode: bool
    status: PayoutStatus
    payment: str
    chain: str
    chain_id: int
    asset: str
    address: str
    amount: str
    amount_units: str
    reason: str | None
    tx_hash: str | None
    failure_code: str | None
    metadata: dict[str, str]
    created: int


class SettlementItem(BaseModel):
    kind: Literal["payment", "refund"]
    object_id: str
    amount_units: str
    fee_units: str


class Settlement(BaseModel):
    object: Literal["settlement"] = "settlement"
    id: str
    livemode: bool
    asset: str
    gross_units: str = Field(description="Payments covered, fees included.")
    payment_fees_units: str
    refunds_units: str
    payout_amount_units: str = Field(description="Debited from the available balance by the payout.")
    payout_fee_units: str
    payout: str | None
    items: list[SettlementItem]
    created: int
