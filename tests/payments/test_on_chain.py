"""Payments paid on a real anvil, followed by the real follower, booked in the real ledger:
both rails, under/over/partial payments, late money, reorgs, and replays."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from stablegate.chains import repository as chain_repository
from stablegate.chains import service as chain_service
from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.errors import InvalidRequest
from stablegate.kit.pagination import PageRequest
from stablegate.ledger import service as ledger
from stablegate.merchants.service import Principal
from stablegate.payments import service
from stablegate.payments.schemas import Payment
from tests.chains.conftest import Chain
from tests.conftest import Tenant
from tests.payments.conftest import (
    CONFIRMATIONS,
    DAI,
    USDC,
    balances,
    create,
    event_types,
    expire_after_grace,
    fetch,
    option,
    pay_contract,
    pay_transfer,
    set_expiry,
)


async def confirm(chain: Chain, follower: Follower) -> None:
    chain.mine(CONFIRMATIONS)
    await follower.sync()


async def test_paid_through_the_contract_succeeds_and_credits_the_merchant_net_of_fees(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, accepted=[{"chain": "local", "asset": "USDC"}])
    assert payment.status == "requires_payment" and option(payment).quote.amount_units == str(25 * USDC)
    fee = int(option(payment).instructions.contract.intent["fee"])  # type: ignore[union-attr]
    assert fee == 25 * USDC // 100  # 1 %

    assert pay_contract(chain, payment)["status"] == 1
    await follower.sync()
    seen = await fetch(db, principal, payment.id)
    assert (seen.status, seen.paid, seen.receipts[0].status, seen.receipts[0].rail) == (
        "processing",
        "none",
        "seen",
        "contract",
    )
    assert await balances(db, tenant) == {"USDC.local": (0, 25 * USDC)}

    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.amount_received) == ("succeeded", "exact", "25.00")
    assert paid.receipts[0].confirmations >= CONFIRMATIONS
    assert await balances(db, tenant) == {"USDC.local": (25 * USDC - fee, 0)}
    assert await event_types(db, payment.id) == ["payment.created", "payment.processing", "payment.succeeded"]

    assert pay_contract(chain, payment, payer=1)["status"] == 0  # the router pays an intent once
    await confirm(chain, follower)
    assert await balances(db, tenant) == {"USDC.local": (25 * USDC - fee, 0)}


async def test_a_deposit_address_transfer_succeeds_with_the_deposit_fee(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="10.50")
    assert {o.asset for o in payment.options} == {"USDC", "DAI"}
    address = option(payment).instructions.deposit_address
    assert address.address == option(payment, "DAI").instructions.deposit_address.address  # one per chain
    assert address.uri.startswith(f"ethereum:{option(payment).token}@{chain.stack.chain_id}/transfer?address=")

    pay_transfer(chain, payment, 10_500_000)
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.receipts[0].rail) == ("succeeded", "exact", "deposit_address")
    assert await balances(db, tenant) == {"USDC.local": (10_500_000 - 105_000, 0)}


async def test_chain_events_delivered_again_change_nothing(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """Replays (a follower re-running a range, a handler retried) are no-ops: the receipt
    moves only forwards and every ledger transfer id derives from the observation."""
    payment = await create(db, principal, ctx, amount="4")
    tx_hash = pay_transfer(chain, payment, 4 * USDC)
    await confirm(chain, follower)
    before = (await fetch(db, principal, payment.id), await balances(db, tenant), await event_types(db, payment.id))
    async with db.session() as session:
        rows = await session.execute(
            text(f"SELECT {chain_repository.OBSERVATION_COLUMNS} FROM chain_observations o WHERE o.chain_id = :c"),
            {"c": chain.stack.chain_id},
        )
        # _stored: what the follower publishes, read back as it reads them (a test of replays only).
        mine = [chain_repository._stored(r._mapping) for r in rows if r._mapping["tx_hash"] == tx_hash.lower()]
    assert len(mine) == 1
    for _ in range(2):
        for kind in ("seen", "confirmed"):
            async with db.session() as session:
                await chain_service.publish(session, kind, chain.stack.chain_id, mine)
    after = (await fetch(db, principal, payment.id), await balances(db, tenant), await event_types(db, payment.id))
    assert after == before
    assert before[0].status == "succeeded" and before[1] == {"USDC.local": (4 * USDC - 40_000, 0)}


async def test_underpaid_then_topped_up_by_a_second_partial_payment(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="20")
    pay_transfer(chain, payment, 15 * USDC)
    await confirm(chain, follower)
    partial = await fetch(db, principal, payment.id)
    assert (partial.status, partial.paid, partial.amount_received) == ("processing", "underpaid", "15.00")
    assert option(partial).amount_received_units == str(15 * USDC)

    pay_transfer(chain, payment, 5 * USDC, payer=1)
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.amount_received, len(paid.receipts)) == ("succeeded", "exact", "20.00", 2)
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.underpaid",
        "payment.succeeded",
    ]
    assert await balances(db, tenant) == {"USDC.local": (20 * USDC - 150_000 - 50_000, 0)}


async def capped_fee_payment(db: Database, principal: Principal, tenant: Tenant, ctx: service.Context) -> Any:
    """A 100 USDC payment whose deposit rail charges 1 % + 0.30, capped at 0.50."""
    async with db.session() as session:
        await service.set_fee_schedule(
            session, tenant.merchant_id, "test", rail="deposit_address", asset="USDC.local", bps=100,
            fixed=300_000, maximum=500_000,
        )  # fmt: skip
    return await create(db, principal, ctx, amount="100", accepted=[{"chain": "local", "asset": "USDC"}])


async def test_a_payment_paid_in_parts_pays_its_fixed_fee_and_maximum_once(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """Four transfers of 25 USDC to the deposit address of a 100 USDC payment, under 1 %
    + 0.30 capped at 0.50: the fee is the payment's, 0.50, not four capped fees (2.00)."""
    payment = await capped_fee_payment(db, principal, tenant, ctx)
    for k in range(4):
        pay_transfer(chain, payment, 25 * USDC, payer=k % 2)
        await confirm(chain, follower)  # one receipt at a time: each sees the ones before
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, len(paid.receipts)) == ("succeeded", "exact", 4)
    assert await balances(db, tenant) == {"USDC.local": (100 * USDC - 500_000, 0)}
    async with db.session() as session:  # the merchant's balance transactions add up to it
        entries = (await ledger.merchant_entries(session, tenant.merchant_id, "test", PageRequest(limit=100))).data
    fees = [e for e in entries if e.type == "fee"]
    assert sum(-e.amount for e in fees) == 500_000 and {e.bucket for e in fees} == {"pending"}
    for bucket, expected in (("available", 100 * USDC - 500_000), ("pending", 0)):
        reached = sum(e.amount for e in entries if e.bucket == bucket)
        assert reached - sum(e.amount for e in entries if e.from_bucket == bucket) == expected, bucket


async def test_overpaid_succeeds_and_says_so(
    db: Database, chain: Chain, follower: Follower, principal: Principal, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="5")
    pay_transfer(chain, payment, 7 * USDC)
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.amount_received) == ("succeeded", "overpaid", "7.00")
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.succeeded",
        "payment.overpaid",
    ]


async def test_half_in_each_of_two_tokens_adds_up_exactly(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="30")
    pay_transfer(chain, payment, 15 * USDC)
    pay_transfer(chain, payment, 15 * DAI, asset="DAI")
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.amount_received) == ("succeeded", "exact", "30.00")
    assert set(await balances(db, tenant)) == {"USDC.local", "DAI.local"}


async def test_money_after_expiry_is_credited_and_flagged_late(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="3")
    await expire_after_grace(db, follower, payment.id)
    assert (await fetch(db, principal, payment.id)).status == "expired"

    pay_transfer(chain, payment, 3 * USDC)
    await confirm(chain, follower)
    late = await fetch(db, principal, payment.id)
    assert (late.status, late.paid, late.late, late.receipts[0].late) == ("expired", "exact", True, True)
    assert await balances(db, tenant) == {"USDC.local": (3 * USDC - 30_000, 0)}
    assert await event_types(db, payment.id) == ["payment.created", "payment.expired", "payment.paid_late"]

    async with db.session() as session:  # the merchant keeps it
        accepted = await service.accept_late(session, principal, payment.id)
    assert (accepted.status, accepted.late) == ("expired", True) and accepted.late_accepted_at is not None
    assert (await fetch(db, principal, payment.id)).late_accepted_at == accepted.late_accepted_at
    assert (await event_types(db, payment.id))[-1] == "payment.late_accepted"
    assert await balances(db, tenant) == {"USDC.local": (3 * USDC - 30_000, 0)}  # money unmoved

    pay_transfer(chain, payment, 1 * USDC)  # more late money: the merchant decides again
    await confirm(chain, follower)
    again = await fetch(db, principal, payment.id)
    assert (again.late, again.late_accepted_at, len(again.receipts)) == (True, None, 2)
    told = ["payment.late_accepted", "payment.paid_late", "payment.overpaid"]
    assert (await event_types(db, payment.id))[-3:] == told


async def test_an_underpaid_payment_expires_once_nothing_is_on_its_way_and_the_rest_is_late(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """Part paid, then nothing: the payment does not wait for ever on its old quote. It
    expires (still `underpaid`) once no seen money is waiting for confirmations; the rest,
    paid later, is credited and flagged late for the merchant to accept or refund."""
    payment = await create(db, principal, ctx, amount="20")
    pay_transfer(chain, payment, 15 * USDC)
    await follower.sync()  # seen on time, not confirmed: it may still complete the payment
    await expire_after_grace(db, follower, payment.id)
    assert (await fetch(db, principal, payment.id)).status == "processing"

    await confirm(chain, follower)
    async with db.session() as session:
        await service.expire_due(session)
    expired = await fetch(db, principal, payment.id)
    assert (expired.status, expired.paid, expired.late, expired.amount_received) == (
        "expired",
        "underpaid",
        False,
        "15.00",
    )

    pay_transfer(chain, payment, 5 * USDC, payer=1)
    await confirm(chain, follower)
    late = await fetch(db, principal, payment.id)
    assert (late.status, late.paid, late.late) == ("expired", "exact", True)
    assert {r.amount_units: r.late for r in late.receipts} == {str(15 * USDC): False, str(5 * USDC): True}
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.underpaid",
        "payment.expired",
        "payment.paid_late",
    ]
    assert await balances(db, tenant) == {"USDC.local": (20 * USDC - 200_000, 0)}  # all credited, fee once


async def test_money_mined_after_expiry_is_late_before_the_expiry_job_runs(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """Lateness is the block's time against the expiry, not whether the job has run."""
    payment = await create(db, principal, ctx, amount="3")
    await set_expiry(db, payment.id, "now() - interval '5 seconds'")
    pay_transfer(chain, payment, 3 * USDC)
    await confirm(chain, follower)
    late = await fetch(db, principal, payment.id)
    assert (late.status, late.paid, late.late, late.receipts[0].late) == ("expired", "exact", True, True)
    assert await balances(db, tenant) == {"USDC.local": (3 * USDC - 30_000, 0)}
    assert await event_types(db, payment.id) == ["payment.created", "payment.expired", "payment.paid_late"]


async def test_money_mined_after_expiry_is_late_while_on_time_money_confirms(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """The payment cannot expire while on-time money confirms (it may complete it), but
    money mined after the expiry meanwhile is late all the same: it is credited and
    flagged, never completes the payment, and the payment expires with what came on time."""
    payment = await create(db, principal, ctx, amount="20")
    pay_transfer(chain, payment, 15 * USDC)
    await follower.sync()  # seen on time
    await set_expiry(db, payment.id, f"now() - interval '{service.EXPIRY_GRACE_S + 1} seconds'")
    pay_transfer(chain, payment, 5 * USDC, payer=1)  # mined after the expiry
    await follower.sync()
    flagged = await fetch(db, principal, payment.id)
    assert (flagged.status, flagged.late) == ("processing", True)
    assert {r.amount_units: r.late for r in flagged.receipts} == {str(15 * USDC): False, str(5 * USDC): True}

    await confirm(chain, follower)
    confirmed = await fetch(db, principal, payment.id)  # 20 received, 15 of it on time
    assert (confirmed.status, confirmed.paid, confirmed.amount_received) == ("processing", "exact", "20.00")
    async with db.session() as session:  # the job: the follower is past the expiry and its grace
        await service.expire_due(session)
    expired = await fetch(db, principal, payment.id)
    assert (expired.status, expired.paid, expired.late) == ("expired", "exact", True)
    # Whichever part confirms first leaves it underpaid for a moment; the second makes it exact.
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.paid_late",
        "payment.underpaid",
        "payment.expired",
    ]
    assert await balances(db, tenant) == {"USDC.local": (20 * USDC - 200_000, 0)}  # all credited, fee once


async def test_money_mined_before_expiry_and_followed_after_it_is_on_time(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="3")
    pay_transfer(chain, payment, 3 * USDC)  # mined now; the follower has not read it yet
    await asyncio.sleep(1.1)  # block times are whole seconds
    await set_expiry(db, payment.id, "now()")
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.late, paid.receipts[0].late) == ("succeeded", "exact", False, False)
    assert await event_types(db, payment.id) == ["payment.created", "payment.processing", "payment.succeeded"]


async def test_the_expiry_job_waits_for_the_follower_to_pass_the_expiry(
    db: Database, chain: Chain, follower: Follower, principal: Principal, ctx: service.Context
) -> None:
    """Just past its expiry an unpaid payment stays open; once the follower has been at
    the chain's head the grace past the expiry, the job expires it."""
    payment = await create(db, principal, ctx, amount="1")
    await set_expiry(db, payment.id, "now() - interval '10 seconds'")
    await follower.sync()
    async with db.session() as session:
        await service.expire_due(session)
    assert (await fetch(db, principal, payment.id)).status == "requires_payment"
    await expire_after_grace(db, follower, payment.id)
    assert (await fetch(db, principal, payment.id)).status == "expired"


async def test_money_mined_before_expiry_is_on_time_however_long_the_follower_lags(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """The job does not expire a payment the follower has not yet followed past its
    expiry: money mined in time and found late (an RPC outage) still counts as on time.
    Only after EXPIRY_MAX_WAIT_S does a lagging chain stop holding payments open."""
    payment = await create(db, principal, ctx, amount="3")
    await follower.sync()  # at the head now, then it stops following
    pay_transfer(chain, payment, 3 * USDC)  # mined in time, not yet seen
    await asyncio.sleep(1.1)  # block times are whole seconds
    await set_expiry(db, payment.id, "now()")
    a_minute_on = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60 + service.EXPIRY_GRACE_S)
    async with db.session() as session:
        await service.expire_due(session, a_minute_on)
    assert (await fetch(db, principal, payment.id)).status == "requires_payment"  # the follower lags
    await confirm(chain, follower)  # it catches up
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.late, paid.receipts[0].late) == ("succeeded", False, False)
    assert await balances(db, tenant) == {"USDC.local": (3 * USDC - 30_000, 0)}

    lagging = await create(db, principal, ctx, amount="1", expires_in_s=60)
    an_hour_on = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61 + service.EXPIRY_MAX_WAIT_S)
    async with db.session() as session:  # nothing followed it past its expiry
        await service.expire_due(session, an_hour_on)
    assert (await fetch(db, principal, lagging.id)).status == "expired"


async def test_a_chain_not_yet_followed_past_the_expiry_holds_the_payment_open(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """A payment accepting two chains, money mined after its expiry on one: that chain
    has passed the expiry, but the other's follower has not, and on-time money may wait
    there. The payment stays open, the money is booked late, and it expires once the
    other chain is followed past the expiry (here: never, so after the last resort)."""
    payment = await create(db, principal, ctx, amount="3")
    async with db.session() as session:  # a second chain the test cannot run: its follower is behind
        await session.execute(
            text(
                "INSERT INTO payment_options SELECT payment_id, position + 10, 424242, 'elsewhere', symbol, asset,"
                " token, decimals, token_amount, rate, rate_source, rate_as_of, spread_bps, quote_expires_at,"
                " fee_bps, fee_fixed, fee_minimum, fee_maximum, deposit_address, NULL, NULL"
                " FROM payment_options WHERE payment_id = :id AND position = 0"
            ),
            {"id": payment.id},
        )
    await set_expiry(db, payment.id, f"now() - interval '{service.EXPIRY_GRACE_S + 1} seconds'")
    pay_transfer(chain, payment, 3 * USDC)  # mined after the expiry
    await confirm(chain, follower)
    held = await fetch(db, principal, payment.id)
    assert (held.status, held.paid, held.late, held.receipts[0].late) == ("processing", "exact", True, True)
    async with db.session() as session:
        await service.expire_due(session)
    assert (await fetch(db, principal, payment.id)).status == "processing"
    an_hour_on = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=service.EXPIRY_MAX_WAIT_S)
    async with db.session() as session:
        await service.expire_due(session, an_hour_on)
    expired = await fetch(db, principal, payment.id)
    assert (expired.status, expired.paid, expired.late) == ("expired", "exact", True)
    assert await balances(db, tenant) == {"USDC.local": (3 * USDC - 30_000, 0)}


async def test_a_reorg_that_orphans_a_seen_payment_reverses_its_pending_posting(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="8")
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    pay_transfer(chain, payment, 8 * USDC)
    await follower.sync()
    assert (await fetch(db, principal, payment.id)).status == "processing"
    assert await balances(db, tenant) == {"USDC.local": (0, 8 * USDC)}

    chain.rpc("evm_revert", snapshot)
    chain.mine(2)  # a longer fork without the transfer
    await follower.sync()
    back = await fetch(db, principal, payment.id)
    assert (back.status, back.receipts[0].status) == ("requires_payment", "orphaned")
    assert await balances(db, tenant) == {"USDC.local": (0, 0)}
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.requires_payment",
    ]


async def test_a_payment_orphaned_then_mined_again_is_credited_once(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """The same transaction seen, orphaned by a reorg, then included in another block:
    the second generation books its own postings once, and the first's are reversed."""
    payment = await create(db, principal, ctx, amount="6")
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    raw = chain.signed_transfer(option(payment).token, option(payment).instructions.deposit_address.address, 6 * USDC)
    tx_hash = chain.send_raw(raw)
    await follower.sync()
    assert await balances(db, tenant) == {"USDC.local": (0, 6 * USDC)}

    chain.rpc("evm_revert", snapshot)
    chain.mine(2)  # a longer branch without it: orphaned
    await follower.sync()
    assert await balances(db, tenant) == {"USDC.local": (0, 0)}
    assert chain.send_raw(raw) == tx_hash  # the same transaction, mined again on the new branch
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, [r.status for r in paid.receipts]) == ("succeeded", "exact", ["confirmed"])
    assert await balances(db, tenant) == {"USDC.local": (6 * USDC - 60_000, 0)}
    assert await event_types(db, payment.id) == [
        "payment.created",
        "payment.processing",
        "payment.requires_payment",
        "payment.processing",
        "payment.succeeded",
    ]


async def seen_then_orphaned(chain: Chain, follower: Follower, payment: Payment, amount: int) -> tuple[bytes, str]:
    """A transfer to the payment's deposit address, seen, then dropped by a reorg (a
    longer branch without it): the signed transaction, to mine it again, and its hash."""
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    raw = chain.signed_transfer(option(payment).token, option(payment).instructions.deposit_address.address, amount)
    tx_hash = chain.send_raw(raw)
    await follower.sync()
    chain.rpc("evm_revert", snapshot)
    chain.mine(2)
    await follower.sync()
    return raw, tx_hash


async def test_on_time_money_mined_again_after_the_expiry_stays_on_time(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """The payer sent in time; a reorg dropped the transfer and the chain mined it again
    after the expiry, before the expiry job ran. It is the same money, sent in time: it
    completes the payment instead of expiring it."""
    payment = await create(db, principal, ctx, amount="6")
    raw, tx_hash = await seen_then_orphaned(chain, follower, payment, 6 * USDC)
    await set_expiry(db, payment.id, "now() - interval '5 seconds'")
    assert chain.send_raw(raw) == tx_hash  # mined again, after the expiry
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert (paid.status, paid.paid, paid.late, paid.receipts[0].late) == ("succeeded", "exact", False, False)
    assert await balances(db, tenant) == {"USDC.local": (6 * USDC - 60_000, 0)}


async def test_a_part_orphaned_and_mined_again_after_another_does_not_pay_the_fixed_fee_twice(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    """Part A is seen (its fee estimated with the fixed part), orphaned, part C confirms
    (paying the fixed part), then A is mined again: A's fee is settled at its confirmation,
    against C, so the payment pays 1 % + 0.30 capped at 0.50 once (A's stale estimate
    would have charged 0.50 twice)."""
    payment = await capped_fee_payment(db, principal, tenant, ctx)
    raw, _ = await seen_then_orphaned(chain, follower, payment, 25 * USDC)  # A
    pay_transfer(chain, payment, 25 * USDC, payer=1)
    await confirm(chain, follower)  # C confirmed: 0.25 + 0.30, capped at 0.50
    chain.send_raw(raw)  # A again, on the new branch
    await confirm(chain, follower)
    paid = await fetch(db, principal, payment.id)
    assert sorted(r.status for r in paid.receipts) == ["confirmed", "confirmed"]
    assert await balances(db, tenant) == {"USDC.local": (50 * USDC - 500_000, 0)}


async def test_cancel_only_before_money_is_seen(
    db: Database, chain: Chain, follower: Follower, principal: Principal, ctx: service.Context
) -> None:
    first = await create(db, principal, ctx)
    async with db.session() as session:
        canceled = await service.cancel(session, principal, first.id)
    assert canceled.status == "canceled"

    second = await create(db, principal, ctx, amount="1")
    pay_transfer(chain, second, USDC)
    await follower.sync()
    with pytest.raises(InvalidRequest) as refused:
        async with db.session() as session:
            await service.cancel(session, principal, second.id)
    assert refused.value.code == "payment_unexpected_state"


async def test_the_contract_refuses_a_quote_after_it_expired_and_a_transfer_is_still_credited_late(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="2", expires_in_s=60)
    deadline = int(option(payment).instructions.contract.intent["deadline"])  # type: ignore[union-attr]
    assert deadline == option(payment).quote.expires_at <= payment.expires_at
    chain.rpc("evm_increaseTime", 120)
    chain.mine()
    assert pay_contract(chain, payment)["status"] == 0  # the router checks the signed deadline
    pay_transfer(chain, payment, 2 * USDC)  # mined past the expiry by the chain's clock: late
    await confirm(chain, follower)
    late = await fetch(db, principal, payment.id)
    assert (late.status, late.late, [r.rail for r in late.receipts]) == ("expired", True, ["deposit_address"])


async def test_a_confirmed_payment_reorganised_away_is_flagged_for_review_not_clawed_back(
    db: Database, chain: Chain, follower: Follower, principal: Principal, tenant: Tenant, ctx: service.Context
) -> None:
    payment = await create(db, principal, ctx, amount="4")
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    pay_transfer(chain, payment, 4 * USDC)
    chain.mine(CONFIRMATIONS + 1)
    await follower.sync()
    assert (await fetch(db, principal, payment.id)).status == "succeeded"

    chain.rpc("evm_revert", snapshot)
    chain.mine(CONFIRMATIONS + 4)
    await follower.sync()
    flagged = await fetch(db, principal, payment.id)
    assert (flagged.status, flagged.needs_review, flagged.receipts[0].status) == ("succeeded", True, "reorged")
    assert await balances(db, tenant) == {"USDC.local": (4 * USDC - 40_000, 0)}  # an operator decides
    assert (await event_types(db, payment.id))[-1] == "payment.needs_review"


async def _where(db: Database, chain: Chain) -> dict[str, int]:
    """Ledger (debit-normal) balances of the chain's USDC clearing, treasury and fee wallet."""
    from stablegate.ledger import chart
    from stablegate.ledger import service as ledger

    usdc = next(t for t in chain.config.tokens if t.symbol == "USDC")
    async with db.session() as session:
        accounts = {
            "clearing": await chart.clearing_account(session, chain.stack.chain_id, usdc.asset),
            "treasury": await chart.treasury_account(session, chain.stack.chain_id, usdc.asset),
            "fee_wallet": await chart.fee_wallet_account(session, chain.stack.chain_id, usdc.asset),
        }
        result = {}
        for name, account in accounts.items():
            b = await ledger.balance(session, account.id)
            result[name] = b.debits_posted - b.credits_posted
        return result


def _on_chain(chain: Chain, holder: str) -> int:
    return int(chain.token(chain.stack.usdc).functions.balanceOf(holder).call())


async def test_the_ledger_follows_where_the_tokens_are(
    db: Database, chain: Chain, follower: Follower, principal: Principal, ctx: service.Context
) -> None:
    """Router payments land in the treasury and the fee wallet at once; deposit payments
    stay at their address (clearing) until a sweep."""
    await _where(db, chain)  # opens the accounts
    before = await _where(db, chain)
    treasury_before = _on_chain(chain, chain.stack.treasury)
    fees_before = _on_chain(chain, chain.stack.fee_recipient)
    by_router = await create(db, principal, ctx, accepted=[{"chain": "local", "asset": "USDC"}])
    pay_contract(chain, by_router)
    by_transfer = await create(db, principal, ctx, amount="10")
    pay_transfer(chain, by_transfer, 10 * USDC)
    await confirm(chain, follower)
    after = await _where(db, chain)
    assert after["treasury"] - before["treasury"] == _on_chain(chain, chain.stack.treasury) - treasury_before
    assert after["fee_wallet"] - before["fee_wallet"] == _on_chain(chain, chain.stack.fee_recipient) - fees_before
    assert after["clearing"] - before["clearing"] == 10 * USDC  # at the deposit address, until swept
