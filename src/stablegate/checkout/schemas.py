"""What the public checkout answers: the status JSON the page polls. Only what the payer
needs; no metadata, reference, fee terms or merchant ids (design 0007)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The page's states: the payment's status and paid flag, folded into what a payer sees.
State = Literal["waiting", "seen", "paid", "underpaid", "expired", "expired_underpaid", "canceled", "late"]


class OptionStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position: int
    chain: str
    asset: str
    amount: str  # the quote, in the token's major unit
    amount_units: str
    received_units: str  # confirmed and seen (on its way)
    missing: str  # what is left to send in this token alone, major unit ("0.00": nothing)
    missing_units: str
    quote_expires_at: int


class ReceiptStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: str
    asset: str
    tx_hash: str
    amount: str
    status: Literal["seen", "confirmed", "orphaned", "reorged"]
    confirmations: int
    confirmations_required: int | None  # None: the chain counts finality, not depth


class CheckoutStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: State
    status: str
    paid: str
    late: bool
    amount: str
    currency: str
    amount_received: str
    expires_at: int
    now: int  # the server's clock, so the page's countdown survives a wrong phone clock
    success_url: str | None
    cancel_url: str | None
    options: list[OptionStatus]
    receipts: list[ReceiptStatus]
