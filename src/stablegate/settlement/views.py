"""Rows as the API shows them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from eth_utils.address import to_checksum_address

from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.settlement.schemas import Destination, Payout, Refund, Settlement, SettlementItem


def major(units: int, decimals: int) -> str:
    """Base units as a decimal string in the major unit ("12.500000" for 12.5 USDC)."""
    return f"{Decimal(units).scaleb(-decimals):.{decimals}f}"


def _unix(at: Any) -> int:
    return int(at.timestamp())


def destination(row: Any, token: TokenConfig) -> Destination:
    return Destination(
        id=row["id"],
        livemode=row["mode"] == "live",
        chain=row["chain"],
        chain_id=int(row["chain_id"]),
        asset=token.symbol,
        address=to_checksum_address(row["address"]),
        label=row["label"],
        usable_after=_unix(row["usable_after"]),
        removed=row["removed_at"] is not None,
        created=_unix(row["created_at"]),
    )


def payout(row: Any, chain: ChainConfig, token: TokenConfig) -> Payout:
    amount, charged = int(row["amount"]), int(row["fee"])
    return Payout(
        id=row["id"],
        livemode=row["mode"] == "live",
        status=row["status"],
        chain=chain.name,
        chain_id=chain.chain_id,
        asset=token.symbol,
        destination=row["destination_id"],
        address=to_checksum_address(row["address"]),
        amount=major(amount, token.decimals),
        amount_units=str(amount),
        fee=major(charged, token.decimals),
        fee_units=str(charged),
        net_units=str(amount - charged),
        tx_hash=row["tx_hash"],
        settlement=row["settlement_id"],
        failure_code=row["failure_code"],
        description=row["description"],
        metadata=_metadata(row["metadata"]),
        created=_unix(row["created_at"]),
    )


def refund(row: Any, chain: ChainConfig, token: TokenConfig) -> Refund:
    amount = int(row["amount"])
    return Refund(
        id=row["id"],
        livemode=row["mode"] == "live",
        status=row["status"],
        payment=row["payment_id"],
        chain=chain.name,
        chain_id=chain.chain_id,
        asset=token.symbol,
        address=to_checksum_address(row["address"]),
        amount=major(amount, token.decimals),
        amount_units=str(amount),
        reason=row["reason"],
        tx_hash=row["tx_hash"],
        failure_code=row["failure_code"],
        metadata=_metadata(row["metadata"]),
        created=_unix(row["created_at"]),
    )


def settlement(row: Any, items: list[Any], payout_id: str | None) -> Settlement:
    return Settlement(
        id=row["id"],
        livemode=row["mode"] == "live",
        asset=row["asset"],
        gross_units=str(int(row["gross"])),
        payment_fees_units=str(int(row["payment_fees"])),
        refunds_units=str(int(row["refunds"])),
        payout_amount_units=str(int(row["payout_amount"])),
        payout_fee_units=str(int(row["payout_fee"])),
        payout=payout_id,
        items=[
            SettlementItem(
                kind=i["kind"],
                object_id=i["object_id"],
                amount_units=str(int(i["amount"])),
                fee_units=str(int(i["fee"])),
            )
            for i in items
        ],
        created=_unix(row["created_at"]),
    )


def _metadata(value: Any) -> dict[str, str]:
    if isinstance(value, str):  # asyncpg returns jsonb as text
        loaded: dict[str, str] = json.loads(value)
        return loaded
    return dict(value or {})
