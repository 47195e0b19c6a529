"""The hosted checkout (design 0007): a payment as its payer sees it.

A payment is found by its id alone (80 random bits: the link is the capability). The
payment is rendered by payments.views exactly as the API renders it, then reduced to
what the payer needs; nothing merchant-private (metadata, reference, fee terms, ids of
the merchant) reaches a public response.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig
from stablegate.checkout import messages, repository
from stablegate.checkout.schemas import CheckoutStatus, OptionStatus, ReceiptStatus, State
from stablegate.kit.ids import is_valid_id
from stablegate.payments import service as payments
from stablegate.payments.schemas import Payment, PaymentOption, major
from stablegate.payments.views import eip681

MIN_DISPLAY_DECIMALS = 2


class CheckoutNotFound(Exception):
    """No payment behind this id: unknown, malformed or another object's id alike."""


@dataclass(frozen=True)
class Checkout:
    payment: Payment
    merchant_name: str
    test_mode: bool


async def load(session: AsyncSession, payment_id: str) -> Checkout:
    # A malformed id never reaches the database (nor a NUL byte the driver would refuse).
    if not is_valid_id(payment_id, payments.PREFIX):
        raise CheckoutNotFound
    row = await repository.payment(session, payment_id)
    if row is None:
        raise CheckoutNotFound
    [view] = await payments.render(session, [row])
    return Checkout(payment=view, merchant_name=str(row["merchant_name"]), test_mode=row["mode"] == "test")


def now_s() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())


# --- status ------------------------------------------------------------------------------


def state(p: Payment) -> State:
    """What the page shows. Seen money wins over "underpaid": while a top-up confirms, the
    payer should wait, not send more. Only on-time money counts towards completing an
    open payment: one holding late money with nothing on time on its way can only close
    as it is, so the page says the money came late rather than asking for more."""
    if p.status == "succeeded":
        return "paid"
    if p.status in ("expired", "canceled"):
        if p.late:
            return "late"
        if p.status == "expired" and p.paid == "underpaid":
            return "expired_underpaid"  # part arrived in time: not "start again" (pay it all twice)
        return "expired" if p.status == "expired" else "canceled"
    on_time = [r for r in p.receipts if not r.late]
    if any(r.status == "seen" for r in on_time):
        return "seen"
    if p.late:
        return "late"
    if any(r.status == "confirmed" for r in on_time):
        return "underpaid"  # open, so short of the quote
    return "waiting"


def received_units(p: Payment) -> dict[int, int]:
    """Per option position: confirmed plus seen units (what is on its way counts), on
    time only: late money never completes a payment, so it does not shrink what is
    missing."""
    position = {(o.chain_id, o.asset): i for i, o in enumerate(p.options)}
    received = {i: 0 for i in range(len(p.options))}
    for r in p.receipts:
        if r.status in ("seen", "confirmed") and not r.late:
            received[position[r.chain_id, r.asset]] += int(r.amount_units)
    return received


def missing_units(p: Payment, received: Mapping[int, int]) -> dict[int, int]:
    """Per option: what is still to send in that token alone. Payments in several tokens
    add up as fractions of each quote (as payments.service does), on a common
    denominator so the sums stay exact integers; the rest rounds up (the payer covers it)."""
    quotes = [int(o.quote.amount_units) for o in p.options]
    due = math.lcm(*quotes)
    paid = sum(received[i] * (due // q) for i, q in enumerate(quotes))
    left = max(0, due - paid)
    return {i: -(-left * q // due) for i, q in enumerate(quotes)}


def display_amount(text: str) -> str:
    """ "25.000000" → "25.00", "1.234500" → "1.2345": exact, without noise zeros."""
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(MIN_DISPLAY_DECIMALS, "0") if fraction else ""
    return f"{whole}.{fraction}" if fraction else whole


def status(checkout: Checkout, chains: Sequence[ChainConfig], now: int) -> CheckoutStatus:
    p = checkout.payment
    depth = {c.chain_id: c.confirmations if c.finality == "depth" else None for c in chains}
    received = received_units(p)
    missing = missing_units(p, received)
    return CheckoutStatus(
        state=state(p),
        status=p.status,
        paid=p.paid,
        late=p.late,
        amount=p.amount,
        currency=p.currency,
        amount_received=p.amount_received,
        expires_at=p.expires_at,
        now=now,
        success_url=p.success_url,
        cancel_url=p.cancel_url,
        options=[_option_status(i, o, received[i], missing[i]) for i, o in enumerate(p.options)],
        receipts=[
            ReceiptStatus(
                chain=messages.chain_label(r.chain),
                asset=r.asset,
                tx_hash=r.tx_hash,
                amount=display_amount(r.amount),
                status=r.status,
                confirmations=r.confirmations,
                confirmations_required=depth.get(r.chain_id),
            )
            for r in p.receipts
        ],
    )


def status_text(current: CheckoutStatus, position: int = 0) -> str:
    """The status line for `position`'s token (checkout.js words later changes the same way)."""
    t = messages.translate
    if current.state == "seen":
        r = next(r for r in current.receipts if r.status == "seen")
        if r.confirmations_required is None:
            return t("status_seen_unknown_depth", chain=r.chain, confirmations=r.confirmations)
        shown = min(r.confirmations, r.confirmations_required)
        return t("status_seen", chain=r.chain, confirmations=shown, required=r.confirmations_required)
    if current.state == "underpaid":
        o = current.options[position]
        return t("status_underpaid", missing=o.missing, asset=o.asset)
    if current.state == "paid" and current.success_url:
        return t("status_paid_redirect")
    return t(f"status_{current.state}")


def _option_status(position: int, o: PaymentOption, received: int, missing: int) -> OptionStatus:
    return OptionStatus(
        position=position,
        chain=messages.chain_label(o.chain),
        asset=o.asset,
        amount=display_amount(o.quote.amount),
        amount_units=o.quote.amount_units,
        received_units=str(received),
        missing=display_amount(major(missing, o.decimals)),
        missing_units=str(missing),
        quote_expires_at=o.quote.expires_at,
    )


# --- the page ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionView:
    """One accepted (chain, token) as the template and checkout.js need it. `send_*` is
    what to send now: the quote, or only what is missing once part has arrived."""

    position: int
    chain: str
    chain_id: int
    asset: str
    token: str
    decimals: int
    amount: str
    amount_units: str
    send_amount: str
    send_uri: str
    quote_expires_at: int
    deposit_address: str
    router: str | None
    intent_json: str | None  # the signed intent for checkout.js (a data attribute)


@dataclass(frozen=True)
class PageView:
    payment_id: str
    merchant_name: str
    test_mode: bool
    description: str | None
    amount: str
    currency: str
    options: list[OptionView]
    partial: bool  # part has arrived: only the rest is asked for, by transfer
    pay_open: bool  # the payer may still send money (and something is missing)
    status: CheckoutStatus
    status_json: str


OPEN_STATES = ("waiting", "seen", "underpaid")


def page(checkout: Checkout, chains: Sequence[ChainConfig], now: int) -> PageView:
    p = checkout.payment
    current = status(checkout, chains, now)
    to_send = send_units(checkout)
    return PageView(
        payment_id=p.id,
        merchant_name=checkout.merchant_name,
        test_mode=checkout.test_mode,
        description=p.description,
        amount=p.amount,
        currency=p.currency,
        options=[_option_view(i, o, to_send[i]) for i, o in enumerate(p.options)],
        partial=is_partial(current),
        pay_open=current.state in OPEN_STATES and any(o.missing_units != "0" for o in current.options),
        status=current,
        status_json=current.model_dump_json(),
    )


def is_partial(current: CheckoutStatus) -> bool:
    return any(o.received_units != "0" for o in current.options)


def send_units(checkout: Checkout) -> dict[int, int]:
    """Per option, the units to ask for now: the quote, or what is missing after a part
    arrived (a payer who scans the QR code again must not pay the whole price twice)."""
    p = checkout.payment
    received = received_units(p)
    if not any(received.values()):
        return {i: int(o.quote.amount_units) for i, o in enumerate(p.options)}
    return missing_units(p, received)


def _option_view(position: int, o: PaymentOption, units: int) -> OptionView:
    contract = o.instructions.contract
    intent = None
    if contract is not None:
        intent = json.dumps({"intent": contract.intent, "signature": contract.signature}, separators=(",", ":"))
    deposit = o.instructions.deposit_address
    return OptionView(
        position=position,
        chain=messages.chain_label(o.chain),
        chain_id=o.chain_id,
        asset=o.asset,
        token=o.token,
        decimals=o.decimals,
        amount=display_amount(o.quote.amount),
        amount_units=o.quote.amount_units,
        send_amount=display_amount(major(units, o.decimals)),
        send_uri=eip681(o.chain_id, o.token, deposit.address, units),
        quote_expires_at=o.quote.expires_at,
        deposit_address=deposit.address,
        router=None if contract is None else contract.router,
        intent_json=intent,
    )


def qr_payload(checkout: Checkout, position: int) -> tuple[str, str]:
    """The option's EIP-681 URI for what is to be sent now, and the image's title."""
    if not 0 <= position < len(checkout.payment.options):
        raise CheckoutNotFound
    o = checkout.payment.options[position]
    units = send_units(checkout)[position]
    address = o.instructions.deposit_address.address
    title = messages.translate(
        "qr_alt",
        amount=display_amount(major(units, o.decimals)),
        asset=o.asset,
        chain=messages.chain_label(o.chain),
        address=address,
    )
    return eip681(o.chain_id, o.token, address, units), title
