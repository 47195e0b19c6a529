"""Money out (design 0006): payout destinations, payouts and refunds.

Every create runs in the request's transaction: the ledger reserve, the transaction
manager's intent, the object and its event commit together or not at all. Outcomes come
back from the transaction manager (`on_intent`) in the transaction that records them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import structlog
from eth_utils.address import is_checksum_address
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.config import Settings
from stablegate.errors import InvalidRequest, NotFound
from stablegate.kit.ids import is_valid_id, new_id
from stablegate.kit.pagination import Page, PageRequest
from stablegate.merchants.service import Principal
from stablegate.observability import metrics
from stablegate.payments import service as payments
from stablegate.pricing.fees import FeeSchedule, fee
from stablegate.settlement import postings, repository, txmanager, views
from stablegate.settlement.postings import Outgoing
from stablegate.settlement.schemas import (
    Destination,
    DestinationCreate,
    Payout,
    PayoutCreate,
    Refund,
    RefundCreate,
)
from stablegate.settlement.txmanager import IntentOutcome, TxRequest
from stablegate.webhooks import service as webhooks

log = structlog.get_logger(__name__)

ZERO_ADDRESS = "0x" + "0" * 40
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
TRANSFER_GAS = 100_000  # an ERC-20 transfer needs ~35-65k; the rest is headroom
PREFIXES = {"payouts": "po", "refunds": "re", "payout_destinations": "dst", "settlement_records": "stl"}


@dataclass(frozen=True)
class Context:
    chains: tuple[ChainConfig, ...]
    cooling_off_s: int
    payout_fee_bps: int
    fail_unsigned_after_s: int

    @classmethod
    def from_settings(cls, settings: Settings, chains: Sequence[ChainConfig]) -> Context:
        return cls(
            chains=tuple(chains),
            cooling_off_s=settings.destination_cooling_off_s,
            payout_fee_bps=settings.payout_fee_bps,
            fail_unsigned_after_s=settings.tx_fail_unsigned_after_s,
        )

    def chain(self, mode: str, name: str, param: str) -> ChainConfig:
        for chain in self.chains:
            if chain.name == name and chain.livemode == (mode == "live"):
                return chain
        raise InvalidRequest(f"Unsupported chain {name} in {mode} mode.", param=param, code="chain_unsupported")

    def by_id(self, chain_id: int) -> ChainConfig:
        return next(c for c in self.chains if c.chain_id == chain_id)


def token_by_asset(chain: ChainConfig, asset: str) -> TokenConfig:
    return next(t for t in chain.tokens if t.asset == asset)


def _symbol_token(chain: ChainConfig, symbol: str, param: str) -> TokenConfig:
    token = next((t for t in chain.tokens if t.symbol == symbol), None)
    if token is None:
        raise InvalidRequest(f"Unsupported asset {symbol} on {chain.name}.", param=param, code="asset_unsupported")
    return token


def check_address(text: str, chain: ChainConfig, param: str) -> str:
    """A lower-case address we may send tokens to: EIP-55 valid when mixed case, never the
    zero address or a token contract (tokens sent there are lost)."""
    lower = text.lower()
    if text not in (lower, "0x" + text[2:].upper()) and not is_checksum_address(text):
        raise InvalidRequest(
            "address has mixed case but an invalid EIP-55 checksum.", param=param, code="parameter_invalid"
        )
    if lower == ZERO_ADDRESS or any(t.address == lower for t in chain.tokens):
        raise InvalidRequest(
            "address cannot receive tokens (zero address or a token contract).", param=param, code="parameter_invalid"
        )
    return lower


def transfer_call(recipient: str, amount: int) -> bytes:
    assert 0 < amount < 2**256
    return TRANSFER_SELECTOR + bytes.fromhex(recipient[2:].rjust(64, "0")) + amount.to_bytes(32, "big")


async def _emit(session: AsyncSession, row: Any, type: str, data: Any) -> None:
    await webhooks.emit(
        session,
        merchant_id=row["merchant_id"],
        mode=row["mode"],
        type=type,
        object_id=row["id"],
        data=data.model_dump(mode="json"),
    )


def _owned_id(object_id: str, table: str, param: str = "id") -> None:
    if not is_valid_id(object_id, PREFIXES[table]):
        raise NotFound(f"No such {table[:-1].replace('_', ' ')}: '{object_id[:64]}'.", param=param)


async def _get(
    session: AsyncSession, principal: Principal, table: str, object_id: str, *, param: str = "id", lock: bool = False
) -> Any:
    _owned_id(object_id, table, param)
    row = await repository.get_owned(session, table, principal.merchant_id, principal.mode, object_id, for_update=lock)
    if row is None:  # the same answer for another merchant's id and for nobody's
        raise NotFound(f"No such {table[:-1].replace('_', ' ')}: '{object_id[:64]}'.", param=param)
    return row


# --- destinations --------------------------------------------------------------------


async def create_destination(
    session: AsyncSession, principal: Principal, params: DestinationCreate, ctx: Context
) -> Destination:
    chain = ctx.chain(principal.mode, params.chain, "chain")
    token = _symbol_token(chain, params.asset, "asset")
    address = check_address(params.address, chain, "address")
    values = {
        "id": new_id("dst"),
        "merchant_id": principal.merchant_id,
        "mode": principal.mode,
        "chain_id": chain.chain_id,
        "chain": chain.name,
        "asset": token.asset,
        "address": address,
        "label": params.label,
        "usable_after": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ctx.cooling_off_s),
    }
    try:
        row = await repository.insert_destination(session, values, principal.key_id)
    except asyncpg.UniqueViolationError as exc:  # one live row per (merchant, mode, asset, address)
        if exc.constraint_name != "ux_payout_destinations_live":
            raise
        raise InvalidRequest(
            "This address is already a destination for this asset.", param="address", code="destination_exists"
        ) from None
    view = views.destination(row, token)
    await _emit(session, row, "payout_destination.created", view)
    log.info("payout_destination.created", destination_id=row["id"], merchant_id=principal.merchant_id)
    return view


async def remove_destination(
    session: AsyncSession, principal: Principal, destination_id: str, ctx: Context
) -> Destination:
    row = await _get(session, principal, "payout_destinations", destination_id, lock=True)
    removed = await repository.remove_destination(session, row, principal.key_id)
    view = views.destination(removed, token_by_asset(ctx.by_id(row["chain_id"]), row["asset"]))
    if row["removed_at"] is None:
        await _emit(session, row, "payout_destination.removed", view)
    return view


async def retrieve_destination(
    session: AsyncSession, principal: Principal, destination_id: str, ctx: Context
) -> Destination:
    row = await _get(session, principal, "payout_destinations", destination_id)
    return views.destination(row, token_by_asset(ctx.by_id(row["chain_id"]), row["asset"]))


async def list_destinations(
    session: AsyncSession, principal: Principal, page: PageRequest, ctx: Context
) -> Page[Destination]:
    result = await repository.list_destinations(session, principal.merchant_id, principal.mode, page)
    data = [views.destination(r, token_by_asset(ctx.by_id(r["chain_id"]), r["asset"])) for r in result.data]
    return Page(data=data, has_more=result.has_more)


async def usable_destination(session: AsyncSession, principal: Principal, destination_id: str) -> Any:
    row = await _get(session, principal, "payout_destinations", destination_id, param="destination")
    if row["removed_at"] is not None:
        raise InvalidRequest("This destination was removed.", param="destination", code="destination_removed")
    if row["usable_after"] > dt.datetime.now(dt.UTC):
        raise InvalidRequest(
            f"This destination is in its cooling-off period until {row['usable_after'].isoformat()}.",
            param="destination",
            code="destination_cooling_off",
        )
    return row


# --- payouts -------------------------------------------------------------------------


async def payout_fee_schedule(session: AsyncSession, principal: Principal, asset: str, ctx: Context) -> FeeSchedule:
    return await payments.payout_fee_schedule(session, principal.merchant_id, principal.mode, asset, ctx.payout_fee_bps)


async def create_payout(session: AsyncSession, principal: Principal, params: PayoutCreate, ctx: Context) -> Payout:
    dest = await usable_destination(session, principal, params.destination)
    chain = ctx.by_id(dest["chain_id"])
    token = token_by_asset(chain, dest["asset"])
    if params.asset is not None and params.asset != token.symbol:
        raise InvalidRequest(f"The destination takes {token.symbol}.", param="asset", code="asset_mismatch")
    amount = payments.parse_amount(params.amount, token.decimals)
    charged = fee(amount, await payout_fee_schedule(session, principal, token.asset, ctx))
    if charged >= amount:
        raise InvalidRequest("The amount does not cover the payout fee.", param="amount", code="amount_too_small")
    payout_id = new_id("po")
    row = dict(dest) | {"merchant_id": principal.merchant_id, "mode": principal.mode}
    # The treasury sends amount − fee; the fee goes to revenue: together, the amount.
    await postings.reserve(session, [_outgoing(payout_id, row, amount - charged, charged)])
    intent = await _plan_transfer(session, chain, token, "payout", payout_id, dest["address"], amount - charged, ctx)
    values = {
        "id": payout_id,
        "merchant_id": principal.merchant_id,
        "mode": principal.mode,
        "destination_id": dest["id"],
        "chain_id": chain.chain_id,
        "asset": token.asset,
        "address": dest["address"],
        "amount": amount,
        "fee": charged,
        "tx_intent_id": intent["id"],
        "settlement_id": None,
        "description": params.description,
        "metadata": params.metadata or {},
    }
    (created,) = await repository.insert_payouts(session, [values])
    view = views.payout(created, chain, token)
    await _emit(session, created, "payout.created", view)
    log.info("payout.created", payout_id=payout_id, amount=amount, fee=charged, intent_id=intent["id"])
    return view


def _outgoing(object_id: str, row: Any, amount: int, charged: int = 0) -> Outgoing:
    return Outgoing(object_id, row["merchant_id"], row["mode"], int(row["chain_id"]), row["asset"], amount, charged)


def _stored_outgoing(table: str, row: Any) -> Outgoing:
    """A stored payout or refund as the ledger reserved it."""
    charged = int(row["fee"]) if table == "payouts" else 0
    return _outgoing(row["id"], row, int(row["amount"]) - charged, charged)


async def _plan_transfer(
    session: AsyncSession,
    chain: ChainConfig,
    token: TokenConfig,
    purpose: str,
    owner_ref: str,
    recipient: str,
    amount: int,
    ctx: Context,
) -> Any:
    if chain.treasury is None:
        raise InvalidRequest(
            f"No treasury is configured on {chain.name}.", param="destination", code="chain_unsupported"
        )
    request = TxRequest(
        chain_id=chain.chain_id,
        signer=chain.treasury,
        purpose=purpose,
        owner_ref=owner_ref,
        to=token.address,
        data=transfer_call(recipient, amount),
        gas_limit=TRANSFER_GAS,
        token=token.address,
        token_amount=amount,
    )
    return await txmanager.plan(session, request, ctx.fail_unsigned_after_s)


async def retrieve_payout(session: AsyncSession, principal: Principal, payout_id: str, ctx: Context) -> Payout:
    return _payout_view(await _get(session, principal, "payouts", payout_id), ctx)


def _payout_view(row: Any, ctx: Context) -> Payout:
    chain = ctx.by_id(row["chain_id"])
    return views.payout(row, chain, token_by_asset(chain, row["asset"]))


async def list_payouts(
    session: AsyncSession, principal: Principal, page: PageRequest, status: str | None, ctx: Context
) -> Page[Payout]:
    rows = await repository.list_owned(
        session, "payouts", principal.merchant_id, principal.mode, page, {"status": status}
    )
    return Page(data=[_payout_view(r, ctx) for r in rows.data], has_more=rows.has_more)


async def cancel_payout(session: AsyncSession, principal: Principal, payout_id: str, ctx: Context) -> Payout:
    """Only while its transaction is not signed: once signed, it owns a nonce and will be sent."""
    row = await _get(session, principal, "payouts", payout_id, lock=True)
    intent = await repository.intent(session, row["tx_intent_id"], for_update=True)
    assert intent is not None
    batched = intent["purpose"] != "payout"
    if row["status"] != "pending" or intent["status"] != "planned" or batched:
        raise InvalidRequest(
            "Only a pending payout whose transaction is not yet signed can be canceled"
            + (" (this one is part of a settlement batch)." if batched else "."),
            param="id",
            code="payout_not_cancelable",
        )
    await repository.set_intent(session, intent["id"], status="canceled")
    (canceled,) = await repository.set_status(session, "payouts", [payout_id], "canceled", ["pending"])
    await postings.resolve(session, [_stored_outgoing("payouts", row)], "void")
    view = _payout_view(canceled, ctx)
    await _emit(session, canceled, "payout.canceled", view)
    metrics.PAYOUTS.labels("canceled").inc()
    return view


# --- refunds -------------------------------------------------------------------------


async def create_refund(session: AsyncSession, principal: Principal, params: RefundCreate, ctx: Context) -> Refund:
    try:
        payment, received = await payments.lock_received(session, principal, params.payment)
    except NotFound:  # the same answer for another merchant's payment and for nobody's
        raise NotFound(f"No such payment: '{params.payment[:64]}'.", param="payment") from None
    got = _refunded_token(received, params)
    chain = ctx.by_id(got.chain_id)
    token = token_by_asset(chain, got.asset)
    address = check_address(params.address, chain, "address")
    already = await repository.refunded(session, payment["id"], got.chain_id, got.asset)
    left = got.amount - already
    amount = left if params.amount is None else payments.parse_amount(params.amount, token.decimals)
    if amount > left or left <= 0:
        raise InvalidRequest(
            f"Refunds of this payment in {token.symbol} may total {got.amount} base units; {max(left, 0)} remain.",
            param="amount",
            code="amount_too_large",
        )
    refund_id = new_id("re")
    row = {"merchant_id": principal.merchant_id, "mode": principal.mode, "chain_id": chain.chain_id, "asset": got.asset}
    await postings.reserve(session, [_outgoing(refund_id, row, amount)])
    intent = await _plan_transfer(session, chain, token, "refund", refund_id, address, amount, ctx)
    values = row | {
        "id": refund_id,
        "payment_id": payment["id"],
        "address": address,
        "amount": amount,
        "reason": params.reason,
        "tx_intent_id": intent["id"],
        "metadata": params.metadata or {},
    }
    created = await repository.insert_refund(session, values)
    view = views.refund(created, chain, token)
    await _emit(session, created, "refund.created", view)
    log.info("refund.created", refund_id=refund_id, payment_id=payment["id"], amount=amount)
    return view


def _refunded_token(received: Sequence[payments.Received], params: RefundCreate) -> payments.Received:
    if not received:
        raise InvalidRequest(
            "This payment has no confirmed money to refund.", param="payment", code="payment_not_refundable"
        )
    matching = [
        r
        for r in received
        if (params.chain is None or r.chain == params.chain) and (params.asset is None or r.symbol == params.asset)
    ]
    if not matching:
        on_chain = params.chain is None or any(r.chain == params.chain for r in received)
        raise InvalidRequest(
            "The payment received nothing in that chain and asset.", param="asset" if on_chain else "chain"
        )
    if len(matching) > 1:
        raise InvalidRequest(
            "The payment was paid in several tokens: name the chain and asset to refund.", param="asset"
        )
    return matching[0]


async def retrieve_refund(session: AsyncSession, principal: Principal, refund_id: str, ctx: Context) -> Refund:
    return _refund_view(await _get(session, principal, "refunds", refund_id), ctx)


def _refund_view(row: Any, ctx: Context) -> Refund:
    chain = ctx.by_id(row["chain_id"])
    return views.refund(row, chain, token_by_asset(chain, row["asset"]))


async def list_refunds(
    session: AsyncSession, principal: Principal, page: PageRequest, payment: str | None, ctx: Context
) -> Page[Refund]:
    rows = await repository.list_owned(
        session, "refunds", principal.merchant_id, principal.mode, page, {"payment_id": payment}
    )
    return Page(data=[_refund_view(r, ctx) for r in rows.data], has_more=rows.has_more)


# --- outcomes from the transaction manager --------------------------------------------

_PAYOUT_EVENTS = {"broadcast": "payout.broadcast", "paid": "payout.paid", "failed": "payout.failed"}
_REFUND_EVENTS = {"broadcast": "refund.broadcast", "paid": "refund.succeeded", "failed": "refund.failed"}
_MOVES: dict[str, tuple[tuple[str, ...], Literal["post", "void"] | None]] = {
    "broadcast": (("pending",), None),
    "paid": (("pending", "broadcast"), "post"),
    "failed": (("pending", "broadcast"), "void"),
}


async def on_intent(session: AsyncSession, news: IntentOutcome, ctx: Context) -> None:
    """A payout (single or batch) or refund transaction was sent, confirmed or failed."""
    table = "refunds" if news.purpose == "refund" else "payouts"
    status = {"broadcast": "broadcast", "confirmed": "paid", "failed": "failed"}[news.outcome]
    rows = await repository.by_intent(session, table, news.intent_id)
    from_states, how = _MOVES[status]
    ids = [r["id"] for r in rows if r["status"] in from_states]
    if not ids:
        return
    extra: dict[str, Any] = {"tx_hash": news.tx_hash} if news.tx_hash else {}
    if status == "failed":
        extra["failure_code"] = news.error or "failed"
    changed = await repository.set_status(session, table, ids, status, from_states, **extra)
    if how is not None:
        await postings.resolve(session, [_stored_outgoing(table, r) for r in changed], how)
    if status == "failed" and table == "payouts":
        # A failed settlement payout covered nothing: its payments and refunds are free
        # for the next settlement (the money is back in the balance).
        await repository.release_settlement_items(
            session, sorted({r["settlement_id"] for r in changed if r["settlement_id"]})
        )
    events = _PAYOUT_EVENTS if table == "payouts" else _REFUND_EVENTS
    for r in changed:
        view = _payout_view(r, ctx) if table == "payouts" else _refund_view(r, ctx)
        await _emit(session, r, events[status], view)
    if status != "broadcast":
        (metrics.PAYOUTS if table == "payouts" else metrics.REFUNDS).labels(status).inc(len(changed))
    log.info(f"{table[:-1]}.{status}", ids=ids[:20], count=len(ids), intent_id=news.intent_id, tx_hash=news.tx_hash)


def register(ctx: Context) -> None:
    """Own the transaction manager's payout, batch and refund outcomes (sender processes)."""

    async def handler(session: AsyncSession, news: IntentOutcome) -> None:
        await on_intent(session, news, ctx)

    for purpose in ("payout", "payout_batch", "refund"):
        txmanager.on_outcome(purpose, handler)
