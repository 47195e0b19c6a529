"""The transaction manager on a real anvil and PostgreSQL: concurrency and nonces, stuck
transactions and replacement, reverts, a short treasury, reorgs and a key used elsewhere."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from eth_account import Account
from sqlalchemy import text

from stablegate.db import Database
from stablegate.merchants.service import Principal
from stablegate.observability import metrics
from stablegate.settlement import service
from stablegate.settlement.txmanager import LOCK_NAMESPACE, TxManager
from tests.chains.conftest import CONFIRMATIONS, Chain
from tests.conftest import Tenant
from tests.settlement.conftest import (
    DESTINATION,
    TREASURY_KEY,
    USDC,
    available,
    credit,
    destination,
    event_types,
    fetch_payout,
    fund_treasury,
    manager,
    payout,
    token_balance,
)
from tests.settlement.test_crash import transfers_to

PAYOUTS = 100
STUCK_AFTER_S = 1.0


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.session() as session:
        return list((await session.execute(text(sql), params)).all())


async def drive(m: TxManager, chain: Chain, ticks: int = 2) -> None:
    """Tick, then bury what was mined under enough blocks, then tick again."""
    for _ in range(ticks):
        await m.tick()
        chain.mine(CONFIRMATIONS)
    await m.tick()


async def test_100_concurrent_payouts_from_one_signer_contiguous_nonces_none_twice(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, PAYOUTS * USDC)
    dst = await destination(db, principal, sctx)
    # Two managers for the same signer tick at once while payouts are being created: the
    # signer's locked nonce row, not the advisory lock, is what keeps nonces unique.
    managers = [manager(db, chain), manager(db, chain)]
    created: list[Any] = []
    creating_done = asyncio.Event()

    async def create_one() -> None:
        await asyncio.sleep(random.uniform(0, 0.5))
        created.append(await payout(db, principal, sctx, dst, "1"))

    async def keep_ticking(m: TxManager) -> None:
        while not creating_done.is_set() or await open_intents(db):
            await m.tick()
            chain.mine(1)
            await asyncio.sleep(0.01)

    tickers = [asyncio.create_task(keep_ticking(m)) for m in managers]
    await asyncio.gather(*(create_one() for _ in range(PAYOUTS)))
    creating_done.set()
    await asyncio.wait_for(asyncio.gather(*tickers), timeout=120)

    nonces = [r[0] for r in await rows(db, "SELECT nonce FROM tx_intents ORDER BY nonce")]
    assert nonces == list(range(PAYOUTS))  # contiguous from the signer's first nonce
    paid = [await fetch_payout(db, principal, sctx, p.id) for p in created]
    assert {p.status for p in paid} == {"paid"}
    hashes = transfers_to(chain, DESTINATION)
    assert len(hashes) == PAYOUTS and sorted(hashes) == sorted(p.tx_hash for p in paid)
    assert token_balance(chain, DESTINATION) == PAYOUTS * USDC
    assert await available(db, tenant.merchant_id) == 0
    assert chain.w3.eth.get_transaction_count(chain.stack.treasury) == PAYOUTS
    for m in managers:
        await m.rpc.aclose()


async def open_intents(db: Database) -> int:
    result = await rows(db, "SELECT count(*) FROM tx_intents WHERE status IN ('planned','signed','broadcast','mined')")
    return int(result[0][0])


async def test_stuck_transaction_is_replaced_with_higher_fees_and_paid_once(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    m = manager(db, chain, tx_stuck_after_s=STUCK_AFTER_S)
    chain.rpc("evm_setAutomine", False)
    await m.tick()  # signed and sent: waiting in the mempool
    # Fees spike: the next block's base fee is far above what the first attempt pays.
    base_fee = int(chain.w3.eth.get_block("latest")["baseFeePerGas"])
    chain.rpc("anvil_setNextBlockBaseFeePerGas", hex(base_fee * 50))
    chain.rpc("evm_mine")
    assert token_balance(chain, DESTINATION) == 0  # not included
    await asyncio.sleep(STUCK_AFTER_S)
    await m.tick()  # stuck: replaced and the replacement sent
    attempts = await rows(
        db, "SELECT attempt, max_fee_per_gas, max_priority_fee_per_gas, tx_hash FROM tx_attempts ORDER BY attempt"
    )
    assert [a[0] for a in attempts] == [0, 1]
    assert attempts[1][1] >= attempts[0][1] * 1125 / 1000 and attempts[1][2] >= attempts[0][2] * 1125 / 1000
    chain.rpc("evm_setAutomine", True)
    chain.mine(1)
    await drive(m, chain)
    paid = await fetch_payout(db, principal, sctx, created.id)
    assert paid.status == "paid" and paid.tx_hash == attempts[1][3]
    assert transfers_to(chain, DESTINATION) == [paid.tx_hash]
    statuses = await rows(db, "SELECT status FROM tx_attempts ORDER BY attempt")
    assert [s[0] for s in statuses] == ["replaced", "mined"]
    await m.rpc.aclose()


async def test_reverted_transfer_fails_the_payout_and_returns_the_funds(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    # Too little gas: the token transfer runs out of gas on chain, a real mined revert.
    async with db.session() as session:
        await session.execute(text("UPDATE tx_intents SET gas_limit = 30000"))
    await drive(tx_manager, chain)
    failed = await fetch_payout(db, principal, sctx, created.id)
    assert failed.status == "failed" and failed.failure_code == "reverted" and failed.tx_hash is not None
    assert chain.w3.eth.get_transaction_receipt(failed.tx_hash)["status"] == 0
    assert await available(db, tenant.merchant_id) == 100 * USDC
    assert await event_types(db, created.id) == ["payout.created", "payout.broadcast", "payout.failed"]
    # The nonce was spent by the revert; the next payout takes the next one.
    again = await payout(db, principal, sctx, dst, "10")
    await drive(tx_manager, chain)
    assert (await fetch_payout(db, principal, sctx, again.id)).status == "paid"
    assert [r[0] for r in await rows(db, "SELECT nonce FROM tx_intents ORDER BY nonce")] == [0, 1]


async def test_short_treasury_waits_alerts_then_fails_cleanly(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context, tx_manager: TxManager
) -> None:
    await credit(db, tenant.merchant_id, 100 * USDC)  # the merchant has a balance; the treasury holds nothing
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    await tx_manager.tick()
    assert (await fetch_payout(db, principal, sctx, created.id)).status == "pending"
    assert [r[0] for r in await rows(db, "SELECT status FROM tx_intents")] == ["planned"]
    gauge = metrics.TREASURY_LOW.labels(chain.config.name, chain.stack.usdc.lower())
    assert gauge._value.get() == 1  # the alert
    async with db.session() as session:  # its deadline passes
        await session.execute(text("UPDATE tx_intents SET fail_unsigned_at = now() - interval '1 second'"))
    await tx_manager.tick()
    failed = await fetch_payout(db, principal, sctx, created.id)
    assert failed.status == "failed" and failed.failure_code == "treasury_insufficient" and failed.tx_hash is None
    assert await available(db, tenant.merchant_id) == 100 * USDC
    assert chain.w3.eth.get_transaction_count(chain.stack.treasury) == 0  # nothing was sent, no nonce spent


async def test_reorg_that_drops_a_mined_payout_resends_it_and_pays_once(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context, tx_manager: TxManager
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    snapshot = chain.rpc("evm_snapshot")
    await tx_manager.tick()  # sent and mined at once
    await tx_manager.tick()  # mined, not deep enough
    assert [r[0] for r in await rows(db, "SELECT status FROM tx_intents")] == ["mined"]
    assert token_balance(chain, DESTINATION) == 10 * USDC
    chain.rpc("evm_revert", snapshot)  # the block with the payout is gone
    assert token_balance(chain, DESTINATION) == 0
    await tx_manager.tick()  # its receipt is gone: back to broadcast, sent again
    await drive(tx_manager, chain)
    paid = await fetch_payout(db, principal, sctx, created.id)
    assert paid.status == "paid"
    assert transfers_to(chain, DESTINATION) == [paid.tx_hash]
    assert await available(db, tenant.merchant_id) == 90 * USDC


async def test_nonce_spent_by_a_transaction_not_ours_gets_a_new_nonce(
    db: Database, chain: Chain, tenant: Tenant, principal: Principal, sctx: service.Context
) -> None:
    fund_treasury(chain)
    await credit(db, tenant.merchant_id, 100 * USDC)
    dst = await destination(db, principal, sctx)
    created = await payout(db, principal, sctx, dst, "10")
    m = manager(db, chain, tx_stuck_after_s=0.0)
    chain.rpc("evm_setAutomine", False)
    await m.tick()  # ours: nonce 0, in the mempool
    # Someone uses the treasury key directly and outbids us for nonce 0.
    outside = {
        "to": Account.from_key("0x" + "77" * 32).address,
        "value": 1,
        "gas": 21_000,
        "nonce": 0,
        "maxFeePerGas": 10**12,
        "maxPriorityFeePerGas": 10**11,
        "chainId": chain.stack.chain_id,
    }
    chain.w3.eth.send_raw_transaction(Account.sign_transaction(outside, TREASURY_KEY).raw_transaction)
    chain.rpc("evm_mine")
    chain.rpc("evm_setAutomine", True)
    await m.tick()  # nonce 0 is spent and none of ours mined: back to planned
    await drive(m, chain, ticks=3)
    paid = await fetch_payout(db, principal, sctx, created.id)
    assert paid.status == "paid"
    assert transfers_to(chain, DESTINATION) == [paid.tx_hash]
    assert [r[0] for r in await rows(db, "SELECT nonce FROM tx_intents")] == [1]
    await m.rpc.aclose()


async def test_one_leader_per_signer_and_a_standby_that_stops_cleanly(db: Database, chain: Chain) -> None:
    first, second = manager(db, chain), manager(db, chain)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(m.run(stop, poll_interval_s=0.05)) for m in (first, second)]
    await asyncio.sleep(1.0)
    held = await rows(
        db,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :namespace"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        namespace=LOCK_NAMESPACE >> 32,
    )
    assert held[0][0] == 1  # one leader; the other stands by
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)  # the standby stops too
    for m in (first, second):
        await m.rpc.aclose()
