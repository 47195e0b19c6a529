"""Payments as the API (and every event) shows them, built from rows: one function, so a
webhook's `data.object` is byte-for-byte what `GET /v1/payments/{id}` returned then."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stablegate.config import get_settings
from stablegate.kit.evm import cached_checksum_address, checksum_address
from stablegate.payments.schemas import (
    ContractInstructions,
    DepositInstructions,
    Instructions,
    Payment,
    PaymentOption,
    Quote,
    Receipt,
    major,
)
from stablegate.rails.service import SignedIntent

_INTENT_KEYS = ("id", "token", "amount", "fee", "recipient", "feeRecipient", "deadline")

# The hosted checkout's origin (STABLEGATE_PUBLIC_URL). The API process sets it from the
# settings it was built with; other processes (follower, worker) render payments for
# webhooks too, and read the same variable from their environment.
_public_url: str | None = None


def set_public_url(url: str) -> None:
    global _public_url
    _public_url = url.rstrip("/")


def hosted_url(payment_id: str) -> str:
    base = _public_url if _public_url is not None else get_settings().public_url.rstrip("/")
    return f"{base}/pay/{payment_id}"


def intent_json(signed: SignedIntent) -> dict[str, Any]:
    """The signed intent as a wallet submits it: struct fields (uint256 as decimal
    strings), the signature, the router and its chain."""
    intent = signed.intent
    values = (intent.token, intent.amount, intent.fee, intent.recipient, intent.fee_recipient, intent.deadline)
    fields = {"id": "0x" + intent.id.hex()} | {
        key: cached_checksum_address(v) if isinstance(v, str) else str(v)
        for key, v in zip(_INTENT_KEYS[1:], values, strict=True)
    }
    return {
        "intent": fields,
        "signature": "0x" + signed.signature.hex(),
        "router": cached_checksum_address(signed.router),
        "chain_id": signed.chain_id,
    }


def eip681(chain_id: int, token: str, to: str, units: int) -> str:
    """ERC-20 transfer request (EIP-681): wallets prefill the token, recipient and amount."""
    token, to = cached_checksum_address(token), cached_checksum_address(to)
    return f"ethereum:{token}@{chain_id}/transfer?address={to}&uint256={units}"


def _option(o: Mapping[str, Any], received_units: int) -> PaymentOption:
    units, decimals = int(o["token_amount"]), o["decimals"]
    contract = None
    if o["intent"] is not None:
        signed = _json(o["intent"])
        contract = ContractInstructions(
            router=signed["router"],
            intent=signed["intent"],
            signature=signed["signature"],
            fee_units=signed["intent"]["fee"],
        )
    # Remembered too: a payment shows its one address in every option, and the LRU keeps
    # the tokens and routers that every payment shows.
    address = cached_checksum_address(o["deposit_address"])
    deposit = DepositInstructions(address=address, uri=eip681(o["chain_id"], o["token"], address, units))
    return PaymentOption(
        chain=o["chain"],
        chain_id=o["chain_id"],
        asset=o["symbol"],
        token=cached_checksum_address(o["token"]),
        decimals=decimals,
        quote=Quote(
            amount=major(units, decimals),
            amount_units=str(units),
            rate=_decimal_text(o["rate"]),
            rate_source=o["rate_source"],
            spread_bps=o["spread_bps"],
            expires_at=int(o["quote_expires_at"].timestamp()),
        ),
        amount_received_units=str(received_units),
        instructions=Instructions(deposit_address=deposit, contract=contract),
    )


def _decimal_text(value: Any) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _receipt(r: Mapping[str, Any], option: Mapping[str, Any], heights: Mapping[int, int]) -> Receipt:
    height = heights.get(r["chain_id"], -1)
    counted = r["status"] in ("seen", "confirmed")
    return Receipt(
        chain=option["chain"],
        chain_id=r["chain_id"],
        asset=option["symbol"],
        rail=r["rail"],
        tx_hash=r["tx_hash"],
        log_index=r["log_index"],
        block_number=r["block_number"],
        from_address=checksum_address(r["from_address"]),
        amount=major(int(r["amount"]), option["decimals"]),
        amount_units=str(int(r["amount"])),
        status=r["status"],
        confirmations=max(0, height - r["block_number"] + 1) if counted else 0,
        late=r["late"],
    )


def payment(
    row: Mapping[str, Any],
    options: Sequence[Mapping[str, Any]],
    receipts: Sequence[Mapping[str, Any]],
    heights: Mapping[int, int],
) -> Payment:
    by_position = {o["position"]: o for o in options}
    received = {p: 0 for p in by_position}
    for r in receipts:
        if r["status"] == "confirmed":
            received[r["position"]] += int(r["amount"])
    scale = row["currency_scale"]
    return Payment(
        id=row["id"],
        livemode=row["mode"] == "live",
        status=row["status"],
        paid=row["paid"],
        late=row["late"],
        late_accepted_at=_unix(row["late_accepted_at"]),
        needs_review=row["needs_review"],
        amount=major(int(row["amount"]), scale),
        currency=row["currency"],
        amount_received=major(int(row["amount_received"]), scale),
        description=row["description"],
        metadata=_json(row["metadata"]),
        reference=row["reference"],
        success_url=row["success_url"],
        cancel_url=row["cancel_url"],
        hosted_url=hosted_url(row["id"]),
        expires_at=int(row["expires_at"].timestamp()),
        created=int(row["created_at"].timestamp()),
        options=[_option(o, received[o["position"]]) for o in options],
        receipts=[_receipt(r, by_position[r["position"]], heights) for r in receipts],
    )


def _unix(at: Any) -> int | None:
    return None if at is None else int(at.timestamp())


def _json(value: Any) -> dict[str, Any]:
    """jsonb arrives as text from the driver, and as a dict from a freshly built option."""
    loaded = json.loads(value) if isinstance(value, str) else value
    assert isinstance(loaded, dict)
    return loaded
