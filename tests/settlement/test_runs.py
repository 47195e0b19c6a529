"""Automatic settlement runs on a real anvil and PostgreSQL: schedules, records, one Disperse
batch for many merchants, skips, a reverted batch, and reading settlements back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import text

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.follower import Follower
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.jobs.app import build_app
from stablegate.jobs.runtime import Runtime
from stablegate.kit.pagination import PageRequest
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.ledger.errors import LedgerError
from stablegate.merchants.service import SCOPES, Principal
from stablegate.payments import service as payments
from stablegate.rails.contracts import TRANSFER_TOPIC
from stablegate.settlement import jobs, runs, service
from stablegate.settlement.schemas import DestinationCreate
from stablegate.settlement.txmanager import TxManager
from tests.chains.conftest import CONFIRMATIONS, Chain, follower  # noqa: F401
from tests.conftest import ApiServer, Tenant, make_tenant
from tests.payments.conftest import create, pay_contract
from tests.settlement.conftest import USDC, available, event_types, fund_treasury, settings, token_balance

ASSET = "USDC.local"
_addresses = iter(Account.from_key(bytes([7, i]) + b"\x01" * 30).address for i in range(1, 200))


def tomorrow_at(hour: int, minute: int = 0, days: int = 1) -> dt.datetime:
    """A run time after every destination's creation (cooling-off 0 ends at creation)."""
    day = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)


def principal_of(tenant: Tenant) -> Principal:
    return Principal(
        merchant_id=tenant.merchant_id, mode="test", key_id=tenant.test_key_id, kind="secret", scopes=SCOPES
    )


async def credit(db: Database, chain: Chain, merchant_id: str, amount: int, ref: str) -> None:
    """Available balance as if payments had settled (clearing → available). The asset is
    defined with the token's real address, as the payments postings define it."""
    async with db.session() as session:
        try:
            await ledger.define_asset(session, ASSET, 6, chain_id=31337, contract=chain.config.tokens[0].address)
        except LedgerError as exc:  # defined before by a test with a stand-in contract
            if exc.code != "asset_exists":
                raise
        clearing = await chart.clearing_account(session, 31337, ASSET)
        account = await chart.merchant_account(session, merchant_id, "test", "available", ASSET)
        transfer = ledger.Transfer(
            id=f"runs-credit:{merchant_id}:{ref}",
            debit_account=clearing.id,
            credit_account=account.id,
            asset=ASSET,
            amount=amount,
        )
        await ledger.create_transfers(session, [transfer])


async def add_destination(db: Database, tenant: Tenant, ctx: service.Context) -> tuple[str, str]:
    address = next(_addresses)
    params = DestinationCreate(chain="local", asset="USDC", address=address)
    async with db.session() as session:
        return (await service.create_destination(session, principal_of(tenant), params, ctx)).id, address


async def schedule(db: Database, ctx: service.Context, tenant: Tenant, dst: str, **when: str) -> None:
    params = runs.ScheduleParams(tenant.merchant_id, "test", "local", "USDC", dst, **when)
    async with db.session() as session:
        await runs.set_schedule(session, ctx, params)


async def run(db: Database, ctx: service.Context, now: dt.datetime) -> runs.RunSummary:
    async with db.session() as session:
        return await runs.run_settlements(session, ctx, now)


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.session() as session:
        return [dict(r._mapping) for r in await session.execute(text(sql), params)]


async def fee_revenue(db: Database) -> int:
    async with db.session() as session:
        account = await chart.platform_account(session, "test", "fee_revenue", ASSET)
        return (await ledger.balance(session, account.id)).credit_balance_posted


async def settle_on_chain(chain: Chain, tx_manager: TxManager) -> None:
    await tx_manager.tick()  # signs and sends the approval and the batch; anvil mines at once
    chain.mine(CONFIRMATIONS)
    await tx_manager.tick()  # confirmed: the batch's payouts are paid


async def pay_one_payment(db: Database, chain: Chain, tenant: Tenant, follower: Follower) -> str:  # noqa: F811
    """A real payment through the router, confirmed by the follower: credits the tenant
    25 USDC less the 1 % payment fee."""
    pctx = payments.Context.from_settings(Settings(intent_signer_key=DEV_PRIVATE_KEYS[0], fee_bps=100), [chain.config])
    payment = await create(db, principal_of(tenant), pctx, accepted=[{"chain": "local", "asset": "USDC"}])
    assert pay_contract(chain, payment)["status"] == 1
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    return payment.id


async def test_one_disperse_batch_settles_many_merchants_and_the_books_tie_out(
    db: Database,
    chain: Chain,
    tenant: Tenant,
    sctx: service.Context,
    tx_manager: TxManager,
    follower: Follower,  # noqa: F811
) -> None:
    fund_treasury(chain)
    payment_id = await pay_one_payment(db, chain, tenant, follower)
    tenants = [tenant] + [await make_tenant(db, f"Batch {i}") for i in range(5)]
    destinations: dict[str, str] = {}
    for i, t in enumerate(tenants):
        if t is not tenant:
            await credit(db, chain, t.merchant_id, (10 + i) * USDC + i, "seed")
        dst, destinations[t.merchant_id] = await add_destination(db, t, sctx)
        if i % 2:  # some merchants pay a payout fee: 0.5 % + 0.1 USDC
            async with db.session() as session:
                await payments.set_fee_schedule(
                    session, t.merchant_id, "test", rail="payout", asset=ASSET, bps=50, fixed=USDC // 10
                )
        when = {"threshold": "5"} if i == 3 else {"daily_at": "09:00"}
        await schedule(db, sctx, t, dst, **when)
    before = {t.merchant_id: await available(db, t.merchant_id) for t in tenants}
    assert before[tenant.merchant_id] == 25 * USDC - 25 * USDC // 100
    revenue_before = await fee_revenue(db)
    treasury_nonce = chain.w3.eth.get_transaction_count(chain.stack.treasury)

    summary = await run(db, sctx, tomorrow_at(9, 30))
    assert len(summary.settlement_ids) == len(tenants) and len(summary.batch_intent_ids) == 1
    assert [await available(db, t.merchant_id) for t in tenants] == [0] * len(tenants)  # reserved at once

    await settle_on_chain(chain, tx_manager)
    intents = await rows(db, "SELECT purpose, status, tx_hash, to_address FROM tx_intents ORDER BY nonce")
    assert [(i["purpose"], i["status"]) for i in intents] == [("allowance", "confirmed"), ("payout_batch", "confirmed")]
    assert intents[1]["to_address"] == chain.stack.disperse.lower()
    assert chain.w3.eth.get_transaction_count(chain.stack.treasury) == treasury_nonce + 2
    receipt = chain.w3.eth.get_transaction_receipt(intents[1]["tx_hash"])
    transfers = [log for log in receipt["logs"] if "0x" + log["topics"][0].hex().removeprefix("0x") == TRANSFER_TOPIC]
    assert len(transfers) == len(tenants)

    paid = await rows(db, "SELECT * FROM payouts ORDER BY id")
    records = {r["id"]: r for r in await rows(db, "SELECT * FROM settlement_records")}
    assert {p["status"] for p in paid} == {"paid"} and len(paid) == len(tenants)
    assert sum(int(p["amount"]) for p in paid) == sum(before.values())  # payouts = available reductions
    for p in paid:
        assert int(p["amount"]) == before[p["merchant_id"]] and p["tx_hash"] == intents[1]["tx_hash"]
        assert int(records[p["settlement_id"]]["payout_amount"]) == int(p["amount"])
        assert int(records[p["settlement_id"]]["payout_fee"]) == int(p["fee"])
        assert token_balance(chain, destinations[p["merchant_id"]]) == int(p["amount"]) - int(p["fee"])
        assert await available(db, p["merchant_id"]) == 0
        assert await event_types(db, p["id"]) == ["payout.created", "payout.broadcast", "payout.paid"]
        assert await event_types(db, p["settlement_id"]) == ["settlement.created"]
    assert sum(int(p["fee"]) > 0 for p in paid) == 3
    assert await fee_revenue(db) - revenue_before == sum(int(p["fee"]) for p in paid)

    own = next(r for r in records.values() if r["merchant_id"] == tenant.merchant_id)
    assert (int(own["gross"]), int(own["payment_fees"]), int(own["refunds"])) == (25 * USDC, 25 * USDC // 100, 0)
    items = await rows(
        db, "SELECT kind, object_id, amount, fee FROM settlement_items WHERE settlement_id = :s", s=own["id"]
    )
    assert [(i["kind"], i["object_id"], int(i["amount"]), int(i["fee"])) for i in items] == [
        ("payment", payment_id, 25 * USDC, 25 * USDC // 100)
    ]
    others = [r for r in records.values() if r["merchant_id"] != tenant.merchant_id]
    assert all(int(r["gross"]) == 0 for r in others)  # credited outside payments: nothing to list


async def test_schedules_settle_only_when_due_and_once_a_day(
    db: Database, chain: Chain, tenant: Tenant, sctx: service.Context
) -> None:
    await credit(db, chain, tenant.merchant_id, 100 * USDC, "first")
    dst, _ = await add_destination(db, tenant, sctx)
    await schedule(db, sctx, tenant, dst, daily_at="10:00", minimum="1")

    assert (await run(db, sctx, tomorrow_at(9, 59))).settlement_ids == ()  # not yet its time
    due = await run(db, sctx, tomorrow_at(10, 0))
    assert len(due.settlement_ids) == 1 and await available(db, tenant.merchant_id) == 0

    await credit(db, chain, tenant.merchant_id, 50 * USDC, "second")
    assert (await run(db, sctx, tomorrow_at(11, 0))).settlement_ids == ()  # once a day

    await schedule(db, sctx, tenant, dst, threshold="80")
    assert (await run(db, sctx, tomorrow_at(11, 1))).settlement_ids == ()  # 50 is below the threshold
    await schedule(db, sctx, tenant, dst, threshold="40", minimum="60")
    below = await run(db, sctx, tomorrow_at(11, 2))
    assert below.settlement_ids == () and below.skipped == {"below_minimum": 1}
    await schedule(db, sctx, tenant, dst, daily_at="10:00", minimum="60")
    assert (await run(db, sctx, tomorrow_at(10, 0, days=2))).skipped == {"below_minimum": 1}

    counts = await rows(db, "SELECT (SELECT count(*) FROM payouts) AS p, (SELECT count(*) FROM tx_intents) AS i")
    assert counts == [{"p": 1, "i": 2}]  # the one settlement: its batch and the approval
    assert await available(db, tenant.merchant_id) == 50 * USDC

    await schedule(db, sctx, tenant, dst, threshold="40", minimum="10")
    assert len((await run(db, sctx, tomorrow_at(10, 1, days=2))).settlement_ids) == 1
    assert await available(db, tenant.merchant_id) == 0
    intents = await rows(db, "SELECT purpose, owner_ref FROM tx_intents ORDER BY created_at, id")
    assert [i["purpose"] for i in intents] == ["allowance", "payout_batch", "payout_batch"]  # approval reused


async def test_a_destination_in_cooling_off_is_skipped_while_the_others_are_paid(
    db: Database, chain: Chain, tenant: Tenant, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    cautious = service.Context.from_settings(settings(destination_cooling_off_s=7 * 86400), [chain.config])
    tenants = [tenant] + [await make_tenant(db, f"Cooling {i}") for i in range(2)]
    addresses = {}
    for i, t in enumerate(tenants):
        await credit(db, chain, t.merchant_id, 20 * USDC, "seed")
        dst, addresses[t.merchant_id] = await add_destination(db, t, cautious if i == 0 else sctx)
        await schedule(db, sctx, t, dst, daily_at="08:00")

    summary = await run(db, sctx, tomorrow_at(9))
    assert len(summary.settlement_ids) == 2 and summary.skipped == {"destination_cooling_off": 1}
    await settle_on_chain(chain, tx_manager)
    assert token_balance(chain, addresses[tenant.merchant_id]) == 0
    assert await available(db, tenant.merchant_id) == 20 * USDC
    for t in tenants[1:]:
        assert token_balance(chain, addresses[t.merchant_id]) == 20 * USDC
        assert await available(db, t.merchant_id) == 0
    [waiting] = await rows(
        db, "SELECT last_run_on FROM settlement_schedules WHERE merchant_id = :m", m=tenant.merchant_id
    )
    assert waiting["last_run_on"] is None  # tried again on the next run

    later = await run(db, sctx, tomorrow_at(9, days=8))  # the cooling-off is over
    assert len(later.settlement_ids) == 1
    await settle_on_chain(chain, tx_manager)
    assert token_balance(chain, addresses[tenant.merchant_id]) == 20 * USDC


async def test_a_reverted_batch_fails_every_payout_and_returns_every_balance(
    db: Database, chain: Chain, tenant: Tenant, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    tenants = [tenant] + [await make_tenant(db, f"Revert {i}") for i in range(2)]
    addresses = {}
    for t in tenants:
        await credit(db, chain, t.merchant_id, 30 * USDC, "seed")
        dst, addresses[t.merchant_id] = await add_destination(db, t, sctx)
        await schedule(db, sctx, t, dst, daily_at="00:00")
    summary = await run(db, sctx, tomorrow_at(1))
    assert len(summary.payout_ids) == 3
    async with db.session() as session:  # enough to start, too little for three transfers
        await session.execute(text("UPDATE tx_intents SET gas_limit = 50000 WHERE purpose = 'payout_batch'"))

    await tx_manager.tick()
    [batch] = await rows(db, "SELECT status, error FROM tx_intents WHERE purpose = 'payout_batch'")
    assert (batch["status"], batch["error"]) == ("failed", "reverted")
    failed = await rows(db, "SELECT id, merchant_id, status, failure_code FROM payouts")
    assert {(p["status"], p["failure_code"]) for p in failed} == {("failed", "reverted")}
    for p in failed:
        assert await available(db, p["merchant_id"]) == 30 * USDC  # the reserve was voided
        assert token_balance(chain, addresses[p["merchant_id"]]) == 0
        assert await event_types(db, p["id"]) == ["payout.created", "payout.broadcast", "payout.failed"]


async def test_settlements_are_listed_and_retrieved_by_their_merchant_only(
    db: Database,
    chain: Chain,
    tenant: Tenant,
    other_tenant: Tenant,
    sctx: service.Context,
    api: ApiServer,
) -> None:
    await credit(db, chain, tenant.merchant_id, 12 * USDC, "seed")
    dst, _ = await add_destination(db, tenant, sctx)
    await schedule(db, sctx, tenant, dst, daily_at="00:00")
    [settlement_id] = (await run(db, sctx, tomorrow_at(0, 5))).settlement_ids

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        auth = {"Authorization": f"Bearer {tenant.test_key}"}
        listed = await client.get("/v1/settlements", headers=auth)
        assert listed.status_code == 200, listed.text
        assert [s["id"] for s in listed.json()["data"]][:1] == [settlement_id]
        one = await client.get(f"/v1/settlements/{settlement_id}", headers=auth)
        assert one.json() == listed.json()["data"][0]
        body = one.json()
        assert (body["payout_amount_units"], body["asset"], body["items"]) == (str(12 * USDC), ASSET, [])
        [payout] = await rows(db, "SELECT id FROM payouts WHERE settlement_id = :s", s=settlement_id)
        assert body["payout"] == payout["id"]
        other = {"Authorization": f"Bearer {other_tenant.test_key}"}
        assert (await client.get(f"/v1/settlements/{settlement_id}", headers=other)).status_code == 404
        assert (await client.get("/v1/settlements", headers=other)).json()["data"] == []
        assert (await client.get("/v1/settlements/stl_nope", headers=auth)).status_code == 404

    async with db.session() as session:  # the service, as the API calls it
        page = await runs.list_settlements(session, principal_of(tenant), PageRequest(limit=1))
    assert [s.id for s in page.data] == [settlement_id]


async def test_the_periodic_job_runs_a_settlement(
    db: Database, chain: Chain, tenant: Tenant, sctx: service.Context
) -> None:
    assert "settlement.run" in build_app(db.url).tasks
    await credit(db, chain, tenant.merchant_id, 7 * USDC, "seed")
    dst, _ = await add_destination(db, tenant, sctx)
    await schedule(db, sctx, tenant, dst, threshold="5")
    Runtime.db = db
    jobs.configure(sctx)
    try:
        assert await jobs.run(int(tomorrow_at(3).timestamp())) == 1
        assert await jobs.run(int(tomorrow_at(3, 1).timestamp())) == 0  # nothing left above the threshold
    finally:
        Runtime.db = None
        jobs._Configured.ctx = None
    assert await available(db, tenant.merchant_id) == 0


async def test_a_failed_approval_is_planned_again_before_the_next_batch(
    db: Database, chain: Chain, tenant: Tenant, sctx: service.Context
) -> None:
    await credit(db, chain, tenant.merchant_id, 9 * USDC, "seed")
    dst, _ = await add_destination(db, tenant, sctx)
    await schedule(db, sctx, tenant, dst, threshold="1")
    await run(db, sctx, tomorrow_at(2))
    async with db.session() as session:  # as if the approval had reverted
        await session.execute(text("UPDATE tx_intents SET status = 'failed' WHERE purpose = 'allowance'"))
    await credit(db, chain, tenant.merchant_id, 4 * USDC, "more")
    assert len((await run(db, sctx, tomorrow_at(2, 1))).settlement_ids) == 1
    await credit(db, chain, tenant.merchant_id, 3 * USDC, "again")
    assert len((await run(db, sctx, tomorrow_at(2, 2))).settlement_ids) == 1

    intents = await rows(db, "SELECT purpose, owner_ref FROM tx_intents ORDER BY created_at, id")
    assert [i["purpose"] for i in intents] == ["allowance", "payout_batch", "allowance", "payout_batch", "payout_batch"]
    base = f"allowance:31337:{chain.config.tokens[0].address}:{chain.stack.disperse.lower()}"
    assert [intents[0]["owner_ref"], intents[2]["owner_ref"]] == [base, f"{base}:1"]  # the new one, then reused


async def test_a_failed_settlement_releases_its_payments_for_the_next_one(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    tenant: Tenant,
    sctx: service.Context,
    tx_manager: TxManager,
) -> None:
    fund_treasury(chain)
    payment_id = await pay_one_payment(db, chain, tenant, follower)
    dst, address = await add_destination(db, tenant, sctx)
    await schedule(db, sctx, tenant, dst, daily_at="00:00")
    [first] = (await run(db, sctx, tomorrow_at(1))).settlement_ids
    async with db.session() as session:
        await session.execute(text("UPDATE tx_intents SET gas_limit = 30000 WHERE purpose = 'payout_batch'"))
    await settle_on_chain(chain, tx_manager)
    assert [p["status"] for p in await rows(db, "SELECT status FROM payouts")] == ["failed"]

    [second] = (await run(db, sctx, tomorrow_at(1, days=2))).settlement_ids
    await settle_on_chain(chain, tx_manager)
    items = await rows(db, "SELECT settlement_id, object_id, released FROM settlement_items ORDER BY settlement_id")
    assert [(i["settlement_id"], i["object_id"], i["released"]) for i in items] == [
        (first, payment_id, True),  # kept as history
        (second, payment_id, False),  # covered by the settlement that paid
    ]
    assert token_balance(chain, address) == 25 * USDC - 25 * USDC // 100
    assert await available(db, tenant.merchant_id) == 0
