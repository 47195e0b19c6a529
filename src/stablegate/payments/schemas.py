from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from stablegate.kit.validation import NO_NUL_PATTERN, STORABLE, Integer, Metadata

MIN_EXPIRES_IN_S = 60
MAX_EXPIRES_IN_S = 7 * 24 * 3600
DEFAULT_EXPIRES_IN_S = 30 * 60
MAX_OPTIONS = 20

# Amounts travel as decimal strings in the currency's major unit ("25.00"): a JSON number
# would be a binary float to most clients. The digit limits only bound the work; the real
# limits (decimals ≤ the currency's scale, ≤ MAX_AMOUNT) are checked in the service.
AmountText = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,30}(\.[0-9]{1,36})?$"),
    Field(description='A positive decimal string in the currency\'s major unit, e.g. "25.00".', examples=["25.00"]),
]
CurrencyCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z][A-Z0-9]{2,11}$"),
    Field(description="ISO 4217 fiat (USD, EUR, …) or a token symbol (USDC, …).", examples=["USD"]),
]
ChainName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{1,11}$")]
Reference = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL_PATTERN), STORABLE]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL_PATTERN), STORABLE]


def _has_host(url: str) -> str:
    # The payer's browser is sent here: "https:///x" or a bad port would strand them.
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("must name a host")
    _ = parts.port  # raises ValueError for a port that is not 0-65535
    return url


RedirectUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f]+$"),
    STORABLE,
    AfterValidator(_has_host),
]


class AcceptedOption(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    chain: ChainName = Field(description="A configured chain's name, e.g. `base`.")
    asset: Symbol = Field(description="A token symbol configured on that chain, e.g. `USDC`.")


class PaymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount: AmountText
    currency: CurrencyCode
    accepted: list[AcceptedOption] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_OPTIONS,
        description="What the payer may pay with. Default: your account's settings (every configured chain "
        "and token of this mode).",
    )
    description: Description | None = None
    metadata: Metadata = None
    reference: Reference | None = Field(default=None, description="Your order id (indexed, not unique).")
    expires_in_s: Integer = Field(
        default=DEFAULT_EXPIRES_IN_S,
        ge=MIN_EXPIRES_IN_S,
        le=MAX_EXPIRES_IN_S,
        description="Seconds until the payment expires: 60 to 604800 (7 days); default 1800.",
    )
    success_url: RedirectUrl | None = None
    cancel_url: RedirectUrl | None = None


class Quote(BaseModel):
    amount: str = Field(description="What the payer sends, in the token's major unit.")
    amount_units: str = Field(description="The same in the token's base units (an integer string).")
    rate: str = Field(description="Price currency per token, before the spread.")
    rate_source: str
    spread_bps: int
    expires_at: int


class DepositInstructions(BaseModel):
    address: str
    uri: str = Field(description="An EIP-681 payment URI (token transfer of the quoted amount).")


class ContractInstructions(BaseModel):
    router: str
    intent: dict[str, Any] = Field(description="The EIP-712 intent, field for field as the router takes it.")
    signature: str
    fee_units: str


class Instructions(BaseModel):
    deposit_address: DepositInstructions
    contract: ContractInstructions | None


class PaymentOption(BaseModel):
    chain: str
    chain_id: int
    asset: str
    token: str
    decimals: int
    quote: Quote
    amount_received_units: str
    instructions: Instructions


class Receipt(BaseModel):
    chain: str
    chain_id: int
    asset: str
    rail: Literal["contract", "deposit_address"]
    tx_hash: str
    log_index: int
    block_number: int
    from_address: str
    amount: str
    amount_units: str
    status: Literal["seen", "confirmed", "orphaned", "reorged"]
    confirmations: int
    late: bool = Field(
        description="Mined at or after the payment's expiry, or seen once it had closed: counts in `paid`, "
        "never towards `succeeded`."
    )


class Payment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["payment"] = "payment"
    id: str
    livemode: bool
    status: Literal["requires_payment", "processing", "succeeded", "expired", "canceled"]
    paid: Literal["none", "underpaid", "exact", "overpaid"] = Field(
        description="What confirmed payments add up to, against the quote (late money included)."
    )
    late: bool = Field(
        description="Money was mined after the payment's expiry, or arrived once it had expired or been "
        "canceled: accept it (`POST …/accept`) or refund it."
    )
    late_accepted_at: int | None = Field(
        description="When you accepted the late money (unix seconds); null while undecided or not late."
    )
    needs_review: bool = Field(description="A confirmed payment was reorganised away; an operator is looking at it.")
    amount: str
    currency: str
    amount_received: str = Field(description="Confirmed payments, converted at their quotes, in `currency`.")
    description: str | None
    metadata: dict[str, str]
    reference: str | None
    success_url: str | None
    cancel_url: str | None
    hosted_url: str = Field(description="Our hosted checkout page for this payment: send the payer there.")
    expires_at: int
    created: int
    options: list[PaymentOption]
    receipts: list[Receipt]


def major(units: int, scale: int) -> str:
    """Base units as a decimal string in the major unit: 2500, 2 → "25.00"."""
    sign, digits = ("-" if units < 0 else ""), str(abs(units)).rjust(scale + 1, "0")
    return sign + (f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits)
