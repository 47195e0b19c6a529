"""What the chain follower's events do to payments (design 0004), inside the follower's
transaction: the receipt row, its ledger postings, the payment's new state and its events
commit together with the follower's cursor, or not at all.

Replays are harmless twice over: a receipt changes only forwards (by generation and
status), and every ledger transfer id derives from the observation.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains import service as chains
from stablegate.chains.service import ChainEvent
from stablegate.observability import metrics, tracing
from stablegate.payments import postings, repository, service
from stablegate.pricing.fees import FeeSchedule, next_fee

log = structlog.get_logger(__name__)
PAYMENT_OWNER_PREFIX = "pay_"
LATE_STATUSES = ("expired", "canceled")  # money seen in these is late


async def on_chain_event(session: AsyncSession, event: ChainEvent) -> None:
    with tracing.span(
        f"payment.chain_{event.kind}", chain_id=event.chain_id, tx_hash=event.tx_hash, log_index=event.log_index
    ):
        await _handle(session, event)


async def _handle(session: AsyncSession, event: ChainEvent) -> None:
    option = await _option(session, event)
    if option is None:
        return
    payment = await repository.lock(session, option["payment_id"])
    receipt = await repository.receipt(session, event.observation_id)
    if event.kind == "seen":
        payment, past_expiry = await _expired_by_chain_time(session, event, payment, receipt)
        late = _late(payment, receipt, past_expiry)
        changed, needs_review = await _seen(session, event, payment, option, receipt, late)
    else:
        late = False
        changed, needs_review = await _HANDLERS[event.kind](session, event, payment, option, receipt)
    if changed:
        metrics.PAYMENT_RECEIPTS.labels(event.kind).inc()
        log.info(
            "payment.receipt",
            kind=event.kind,
            payment_id=payment["id"],
            tx_hash=event.tx_hash,
            log_index=event.log_index,
            amount=event.amount,
            generation=event.generation,
        )
        # A new transfer of late money (not the same one mined again after a reorg) also
        # asks the merchant again.
        late_arrival = late and receipt is None
        await service.refresh(session, payment, needs_review=needs_review, late_arrival=late_arrival, late_money=late)


async def _expired_by_chain_time(
    session: AsyncSession, event: ChainEvent, payment: Any, receipt: Any
) -> tuple[Any, bool]:
    """Money mined at or after the payment's expiry is late, whether or not the expiry
    job has run yet: an open payment past its expiry by the block's time expires first
    (as the job would have done: unpaid, or underpaid with nothing on its way, and its
    other chains followed past the expiry), so the receipt below counts as late. Without
    this, money arriving in the minute before the job's next run was taken as on time.
    Also says whether the block is past the expiry: a payment that stays open (money on
    its way, another chain's follower behind) takes this money as late all the same. An
    on-time transfer mined again after a reorg is not new money: it expires nothing."""
    if payment["status"] not in ("requires_payment", "processing"):
        return payment, False
    if receipt is not None and not receipt["late"]:
        return payment, False
    mined_at = await chains.block_time(session, event.chain_id, event.block_number)
    if mined_at is None or mined_at < payment["expires_at"]:
        return payment, False
    expired = await service.expire_past_block(session, payment, event.chain_id)
    if expired["status"] == "expired":
        log.info("payment.expired_by_chain_time", payment_id=payment["id"], tx_hash=event.tx_hash)
    return expired, True


def _late(payment: Any, receipt: Any, past_expiry: bool) -> bool:
    """Is money seen now late? Yes if the payment is expired or canceled (a new transfer,
    or one mined again after a reorg), or still open but the block is past its expiry: a
    payment waiting for on-time money to confirm does not turn later money into on-time
    money. A transfer mined again after a reorg keeps the time of its first sighting, when
    the payer sent it; after a success money is an overpayment, never late."""
    if payment["status"] in LATE_STATUSES:
        return True
    if payment["status"] == "succeeded":
        return False
    return bool(receipt["late"]) if receipt is not None else past_expiry


async def _option(session: AsyncSession, event: ChainEvent) -> Any:
    if event.observation_kind == "intent_paid":
        assert event.intent_id is not None
        option = await repository.option_by_intent(session, event.intent_id)
        if option is not None and option["token"] != event.token:
            option = None  # the router checks the signed token; this would be a bug, not a payment
    elif event.owner_ref is not None and event.owner_ref.startswith(PAYMENT_OWNER_PREFIX):
        option = await repository.option_by_deposit(
            session, event.owner_ref, event.chain_id, event.token, event.to_address
        )
    else:
        return None  # another domain's address
    if option is None:
        # A configured token the payment did not ask for, or an intent we did not sign:
        # the money sits in clearing on chain; reconciliation reports it.
        log.warning(
            "payment.receipt_unmatched",
            kind=event.kind,
            owner_ref=event.owner_ref,
            intent_id=event.intent_id,
            token=event.token,
            tx_hash=event.tx_hash,
        )
        metrics.PAYMENT_RECEIPTS.labels("unmatched").inc()
    return option


def _ledger_receipt(event: ChainEvent, payment: Any, option: Any, receipt_fee: int) -> postings.Receipt:
    return postings.Receipt(
        payment_id=payment["id"],
        merchant_id=payment["merchant_id"],
        mode=payment["mode"],
        chain_id=event.chain_id,
        asset=option["asset"],
        decimals=option["decimals"],
        token=option["token"],
        tx_hash=event.tx_hash,
        log_index=event.log_index,
        generation=event.generation,
        amount=event.amount,
        fee=receipt_fee,
        rail="contract" if event.observation_kind == "intent_paid" else "deposit_address",
    )


async def _fee(session: AsyncSession, event: ChainEvent, option: Any, counted: tuple[str, ...]) -> int:
    """A router payment split its fee on chain (as signed); a transfer pays the option's
    deposit-rail fee, fixed when the payment was quoted, charged per payment rather than
    per transfer, so a payer who splits a payment into parts does not multiply the fixed
    fee or escape the maximum: the option's other receipts in a `counted` status count as
    paid before. The fee is booked at confirmation, counting the confirmed ones only
    (`reorged` were confirmed and booked too); when seen, it is an estimate over those not
    orphaned. A reorg therefore cannot charge the fixed fee twice or drop it. The payment
    is locked by the caller, so no concurrent receipt changes the sums."""
    if event.observation_kind == "intent_paid":
        return event.fee
    maximum = None if option["fee_maximum"] is None else int(option["fee_maximum"])
    schedule = FeeSchedule(option["fee_bps"], int(option["fee_fixed"]), int(option["fee_minimum"]), maximum)
    earlier = [
        r
        for r in await repository.receipts(session, [option["payment_id"]])
        if r["position"] == option["position"]
        and r["rail"] == "deposit_address"
        and r["status"] in counted
        and r["observation_id"] != event.observation_id
    ]
    paid_before = sum(int(r["amount"]) for r in earlier)
    charged_before = sum(int(r["fee"]) for r in earlier)
    return next_fee(event.amount, paid_before, charged_before, schedule)


async def _seen(
    session: AsyncSession, event: ChainEvent, payment: Any, option: Any, receipt: Any, late: bool
) -> tuple[bool, bool]:
    if receipt is not None and (receipt["status"] != "orphaned" or receipt["generation"] >= event.generation):
        return False, False  # a replay
    values = {
        "observation_id": event.observation_id,
        "payment_id": payment["id"],
        "position": option["position"],
        "rail": "contract" if event.observation_kind == "intent_paid" else "deposit_address",
        "chain_id": event.chain_id,
        "tx_hash": event.tx_hash,
        "log_index": event.log_index,
        "block_number": event.block_number,
        "from_address": event.from_address,
        "amount": event.amount,
        "fee": await _fee(session, event, option, counted=("seen", "confirmed", "reorged")),
        "status": "seen",
        "generation": event.generation,
        "late": late,
    }
    if receipt is None:
        await repository.insert_receipt(session, values)
    else:
        await repository.update_receipt(
            session, event.observation_id, "seen", event.generation, event.block_number, late=late
        )
    await postings.book_seen(session, _ledger_receipt(event, payment, option, values["fee"]))
    return True, False


def _seen_in(receipt: Any, generation: int) -> bool:
    """The receipt is pending confirmation in this generation: the one state that a
    confirmation or an orphaning moves on from."""
    return receipt is not None and (receipt["status"], receipt["generation"]) == ("seen", generation)


async def _confirmed(
    session: AsyncSession, event: ChainEvent, payment: Any, option: Any, receipt: Any
) -> tuple[bool, bool]:
    if not _seen_in(receipt, event.generation):
        if receipt is None or receipt["generation"] < event.generation:
            # Seen and confirmed in one range arrive in order; anything else is a bug upstream.
            log.error("payment.confirmed_unseen", tx_hash=event.tx_hash, observation_id=event.observation_id)
        return False, False
    fee = await _fee(session, event, option, counted=("confirmed", "reorged"))
    await repository.update_receipt(
        session, event.observation_id, "confirmed", event.generation, event.block_number, fee=fee
    )
    await postings.book_confirmed(session, _ledger_receipt(event, payment, option, fee))
    return True, False


async def _orphaned(
    session: AsyncSession, event: ChainEvent, payment: Any, option: Any, receipt: Any
) -> tuple[bool, bool]:
    if not _seen_in(receipt, event.generation):
        return False, False
    await repository.update_receipt(session, event.observation_id, "orphaned", event.generation, event.block_number)
    await postings.book_orphaned(session, _ledger_receipt(event, payment, option, int(receipt["fee"])))
    return True, False


async def _deep_reorg(
    session: AsyncSession, event: ChainEvent, payment: Any, option: Any, receipt: Any
) -> tuple[bool, bool]:
    """A confirmed payment vanished: nothing automatic (the merchant may have shipped);
    the payment is flagged and the runbook decides (design 0004)."""
    if receipt is None or receipt["status"] != "confirmed":
        return False, False
    await repository.update_receipt(session, event.observation_id, "reorged", event.generation, event.block_number)
    log.error("payment.deep_reorg", payment_id=payment["id"], tx_hash=event.tx_hash)
    return True, True


_HANDLERS = {"confirmed": _confirmed, "orphaned": _orphaned, "deep_reorg": _deep_reorg}  # and _seen, above

chains.subscribe(on_chain_event)
