"""Ledger postings for money out (design 0006), through ledger.service only.

Money leaves the treasury (an asset account) and the merchant's liability shrinks:

    payout created    pending  merchant available → treasury       (amount − fee)
                      pending  merchant available → fee revenue     (fee)
    refund created    pending  merchant available → treasury       (amount)
    paid (confirmed)  post both pendings
    failed/canceled   void both pendings: the funds are available again
    sweep confirmed   chain clearing → treasury                     (each swept amount)

The reserve is a pending transfer, so the available balance drops at creation (a second
payout cannot spend the same money) and the ledger's flag refuses an overdraft with
nothing written. Reserves have no timeout: expiry must never return funds while the
transaction manager could still mine the transfer (failure voids them explicitly).
Transfer ids derive from the owner's id, so replays are no-ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.errors import InvalidRequest
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.ledger.errors import ExceedsCredits
from stablegate.ledger.service import Transfer

CODE_PAYOUT = 2001  # ledger transfer codes: settlement's range
CODE_PAYOUT_FEE = 2002
CODE_REFUND = 2003
CODE_SWEEP = 2004


@dataclass(frozen=True)
class Outgoing:
    """One payout or refund as the ledger sees it."""

    object_id: str  # po_… or re_…
    merchant_id: str
    mode: str
    chain_id: int
    asset: str
    amount: int  # leaves the treasury
    fee: int = 0  # to fee revenue (payouts)

    @property
    def kind(self) -> str:
        return "payout" if self.object_id.startswith("po_") else "refund"

    @property
    def metadata(self) -> dict[str, Any]:
        return {"type": self.kind, "source": self.object_id, "chain_id": self.chain_id}


def _id(o: Outgoing, leg: str, step: str) -> str:
    return f"{o.object_id}:{leg}:{step}"


async def reserve(session: AsyncSession, items: Sequence[Outgoing], *, isolated: bool = False) -> None:
    """Pending transfers for every item, as one linked batch (all or nothing). An
    overdraft raises 400 balance_insufficient naming `amount`."""
    batch: list[Transfer] = []
    availables = await chart.merchant_accounts(session, [(o.merchant_id, o.mode, "available", o.asset) for o in items])
    treasuries = {k: await chart.treasury_account(session, *k) for k in sorted({(o.chain_id, o.asset) for o in items})}
    revenues = {
        k: await chart.platform_account(session, k[0], "fee_revenue", k[1])
        for k in sorted({(o.mode, o.asset) for o in items if o.fee > 0})
    }
    for o, available in zip(items, availables, strict=True):
        code = CODE_PAYOUT if o.kind == "payout" else CODE_REFUND
        treasury = treasuries[(o.chain_id, o.asset)]
        batch.append(_pending(_id(o, "out", "reserve"), available.id, treasury.id, o, o.amount, code))
        if o.fee > 0:
            revenue = revenues[(o.mode, o.asset)]
            batch.append(_pending(_id(o, "fee", "reserve"), available.id, revenue.id, o, o.fee, CODE_PAYOUT_FEE))
    try:
        await ledger.create_transfers(session, batch, isolated=isolated)
    except ExceedsCredits:
        raise InvalidRequest(
            "The available balance does not cover this amount (fees included).",
            param="amount",
            code="balance_insufficient",
        ) from None


def _pending(transfer_id: str, debit: int, credit: int, o: Outgoing, amount: int, code: int) -> Transfer:
    return Transfer(
        id=transfer_id,
        debit_account=debit,
        credit_account=credit,
        asset=o.asset,
        amount=amount,
        kind="pending",
        code=code,
        metadata=o.metadata,
    )


async def resolve(session: AsyncSession, items: Sequence[Outgoing], how: Literal["post", "void"]) -> None:
    """Post (paid) or void (failed, canceled) every item's reserves, as one batch."""
    batch = []
    for o in items:
        legs = ("out", "fee") if o.fee > 0 else ("out",)
        batch += [
            Transfer(id=_id(o, leg, how), kind=how, pending_id=_id(o, leg, "reserve"), metadata=o.metadata)
            for leg in legs
        ]
    if batch:
        await ledger.create_transfers(session, batch)


async def book_sweep(session: AsyncSession, sweep_id: str, chain_id: int, swept: Sequence[tuple[str, int]]) -> None:
    """Swept amounts per asset leave clearing for the treasury."""
    batch = []
    for i, (asset, amount) in enumerate(swept):
        if amount <= 0:
            continue
        clearing = await chart.clearing_account(session, chain_id, asset)
        treasury = await chart.treasury_account(session, chain_id, asset)
        batch.append(
            Transfer(
                id=f"{sweep_id}:{i}",
                debit_account=treasury.id,
                credit_account=clearing.id,
                asset=asset,
                amount=amount,
                code=CODE_SWEEP,
                metadata={"type": "sweep", "source": sweep_id, "chain_id": chain_id},
            )
        )
    if batch:
        await ledger.create_transfers(session, batch)


async def availables(session: AsyncSession, keys: Sequence[tuple[str, str, str]]) -> list[int]:
    """Available balances of many (merchant, mode, asset), in two round trips."""
    accounts = await chart.merchant_accounts(session, [(m, mode, "available", asset) for m, mode, asset in keys])
    return [ledger.balance_of(a).credit_balance_available for a in accounts]
