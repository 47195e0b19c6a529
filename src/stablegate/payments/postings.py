"""Ledger postings for on-chain receipts (design 0004), through ledger.service only.

Every transfer id derives from the observation and its generation, so a replayed chain
event is a no-op in the ledger, and a log that is orphaned and later re-included gets
fresh postings instead of colliding with the voided ones.

    seen       pending  chain clearing → merchant pending          (amount, fee included)
    confirmed  post that pending transfer, then in the same batch
               merchant pending → merchant available               (amount − fee)
               merchant pending → platform fee revenue             (fee)
    orphaned   void the pending transfer

Where the tokens are follows the chain too. A deposit-address payment stays at its
address (chain clearing) until a sweep moves it to the treasury (settlement books that).
A router payment reaches the treasury and the fee wallet in the same transaction, so its
confirmation also moves clearing → treasury (amount − fee) and clearing → fee wallet
(fee): the treasury's ledger account then matches the treasury's on-chain balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.ledger.service import Transfer

CODE_PAYMENT = 1001  # ledger transfer codes: payments' range


@dataclass(frozen=True)
class Receipt:
    """What the ledger needs to know about one observation credited to a payment."""

    payment_id: str
    merchant_id: str
    mode: str
    chain_id: int
    asset: str
    decimals: int
    token: str
    tx_hash: str
    log_index: int
    generation: int
    amount: int  # token base units, fee included
    fee: int
    rail: str = "deposit_address"  # contract: paid through our router, straight to the treasury

    @property
    def key(self) -> str:
        return f"obs:{self.chain_id}:{self.tx_hash}:{self.log_index}"

    def transfer_id(self, step: str) -> str:
        return f"{self.key}:{step}:{self.generation}"

    @property
    def metadata(self) -> dict[str, Any]:
        return {"type": "payment", "source": self.payment_id, "tx_hash": self.tx_hash, "chain_id": self.chain_id}


async def book_seen(session: AsyncSession, r: Receipt) -> None:
    await ledger.define_asset(session, r.asset, r.decimals, chain_id=r.chain_id, contract=r.token)
    clearing = await chart.clearing_account(session, r.chain_id, r.asset)
    pending = await chart.merchant_account(session, r.merchant_id, r.mode, "pending", r.asset)
    transfer = Transfer(
        id=r.transfer_id("seen"),
        debit_account=clearing.id,
        credit_account=pending.id,
        asset=r.asset,
        amount=r.amount,
        kind="pending",
        code=CODE_PAYMENT,
        metadata=r.metadata,
    )
    await ledger.create_transfers(session, [transfer])


async def book_confirmed(session: AsyncSession, r: Receipt) -> None:
    assert 0 <= r.fee <= r.amount
    pending = await chart.merchant_account(session, r.merchant_id, r.mode, "pending", r.asset)
    available = await chart.merchant_account(session, r.merchant_id, r.mode, "available", r.asset)
    revenue = await chart.platform_account(session, r.mode, "fee_revenue", r.asset)
    batch = [Transfer(id=r.transfer_id("post"), kind="post", pending_id=r.transfer_id("seen"), metadata=r.metadata)]
    moves = ((available.id, r.amount - r.fee, "net"), (revenue.id, r.fee, "fee"))
    batch += [_move(r, step, pending.id, account, amount) for account, amount, step in moves if amount > 0]
    if r.rail == "contract":
        clearing = await chart.clearing_account(session, r.chain_id, r.asset)
        treasury = await chart.treasury_account(session, r.chain_id, r.asset)
        fee_wallet = await chart.fee_wallet_account(session, r.chain_id, r.asset)
        collected = ((treasury.id, r.amount - r.fee, "collect"), (fee_wallet.id, r.fee, "collect_fee"))
        batch += [_move(r, step, account, clearing.id, amount) for account, amount, step in collected if amount > 0]
    await ledger.create_transfers(session, batch)


def _move(r: Receipt, step: str, debit: int, credit: int, amount: int) -> Transfer:
    # The fee leg says so: it is what a merchant's balance transactions call `fee`.
    # (Confirmation books once per receipt generation, in the follower's transaction with
    # the receipt's status, so no earlier leg is replayed with the older label.)
    metadata = r.metadata | {"type": "fee"} if step == "fee" else r.metadata
    return Transfer(
        id=r.transfer_id(step),
        debit_account=debit,
        credit_account=credit,
        asset=r.asset,
        amount=amount,
        code=CODE_PAYMENT,
        metadata=metadata,
    )


async def book_orphaned(session: AsyncSession, r: Receipt) -> None:
    void = Transfer(id=r.transfer_id("void"), kind="void", pending_id=r.transfer_id("seen"), metadata=r.metadata)
    await ledger.create_transfers(session, [void])
