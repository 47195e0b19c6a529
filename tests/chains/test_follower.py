"""The block follower on a real anvil and the real database: detection, confirmation depth,
exactly-once events, look-alike tokens, reorgs, leadership."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from sqlalchemy import text

from stablegate.chains import registry
from stablegate.chains.follower import Follower, watermark
from stablegate.db import Database
from stablegate.observability import metrics
from tests.chains.conftest import CONFIRMATIONS, Chain, Heard, observations

USDC = 10**6


async def test_deposit_is_seen_then_confirmed_at_depth_exactly_once(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, ref = await new_deposit()
    tx_hash = chain.transfer(chain.stack.usdc, address, 125 * USDC)
    await follower.sync()
    [seen] = await observations(db)
    assert (seen["tx_hash"], seen["to_address"], int(seen["amount"]), seen["owner_ref"]) == (
        tx_hash,
        address,
        125 * USDC,
        ref,
    )
    assert seen["status"] == "seen" and heard.kinds() == ["seen"]

    chain.mine(CONFIRMATIONS - 2)  # the inclusion block counts: one short of the depth
    await follower.sync()
    assert (await observations(db))[0]["status"] == "seen"
    chain.mine(1)
    await follower.sync()
    [confirmed] = await observations(db)
    assert confirmed["status"] == "confirmed" and heard.kinds() == ["seen", "confirmed"]

    chain.mine(5)
    await follower.sync()  # later ranges never re-report the log
    assert heard.kinds() == ["seen", "confirmed"]
    assert heard.events[1].owner_ref == ref and heard.events[1].amount == 125 * USDC


async def test_only_watched_addresses_and_configured_tokens_count(
    db: Database, chain: Chain, follower: Follower, new_deposit: Callable[[], Any]
) -> None:
    first, _ = await new_deposit()
    second, _ = await new_deposit()
    chain.transfer(chain.stack.usdc, first, 10 * USDC)
    chain.transfer(chain.stack.usdc, second, 10 * USDC)  # the same amount to another address
    chain.transfer(chain.stack.usdc, chain.stack.payers[1], 10 * USDC)  # not ours
    with structlog.testing.capture_logs() as logs:
        chain.transfer(chain.stack.fake_usdc, first, 10 * USDC)  # the look-alike "USDC"
        await follower.sync()
    found = await observations(db)
    assert sorted(o["to_address"] for o in found) == sorted([first, second])
    assert {o["token"] for o in found} == {chain.stack.usdc.lower()}
    ignored = [e for e in logs if e["event"] == "chain.lookalike_ignored"]
    assert [e["token"] for e in ignored] == [chain.stack.fake_usdc.lower()]


async def test_a_payment_in_the_block_that_creates_it(
    db: Database, chain: Chain, follower: Follower, new_deposit: Callable[[], Any]
) -> None:
    await follower.sync()
    chain.rpc("evm_setAutomine", False)
    address, _ = await new_deposit()
    raw = chain.signed_transfer(chain.stack.dai, address, 7 * 10**18)
    chain.send_raw(raw)
    chain.mine(1)  # the address's registration and the payment share a block
    chain.rpc("evm_setAutomine", True)
    await follower.sync()
    [found] = await observations(db)
    assert found["to_address"] == address and int(found["amount"]) == 7 * 10**18


async def test_a_catch_up_confirms_by_the_blocks_above_its_range(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, _ = await new_deposit()
    await follower.sync()
    chain.transfer(chain.stack.usdc, address, 5 * USDC)
    chain.mine(CONFIRMATIONS - 1)  # the transfer's block has its descendants already
    follower.range_blocks = 1  # a range of that block alone: its depth comes from the headers above
    assert await follower.step() == 1
    [found] = await observations(db)
    assert found["status"] == "confirmed" and heard.kinds() == ["seen", "confirmed"]


async def test_a_catch_up_one_block_short_of_the_depth_stays_seen(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, _ = await new_deposit()
    await follower.sync()
    chain.transfer(chain.stack.usdc, address, 5 * USDC)
    chain.mine(CONFIRMATIONS - 2)
    follower.range_blocks = 1
    await follower.step()
    assert (await observations(db))[0]["status"] == "seen" and heard.kinds() == ["seen"]


async def test_a_deposit_orphaned_before_confirmation_is_never_confirmed(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, _ = await new_deposit()
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    chain.transfer(chain.stack.usdc, address, 5 * USDC)
    await follower.sync()
    assert heard.kinds() == ["seen"]

    chain.rpc("evm_revert", snapshot)
    chain.mine(CONFIRMATIONS + 2)  # the canonical chain goes on without the transfer
    await follower.sync()
    [orphaned] = await observations(db)
    assert orphaned["status"] == "orphaned" and not orphaned["needs_review"]
    assert heard.kinds() == ["seen", "orphaned"]
    async with db.session() as session:
        reorg = (await session.execute(text("SELECT depth, deep FROM chain_reorgs"))).one()
    assert reorg.depth == 1 and reorg.deep is False


async def test_a_deposit_reincluded_in_another_block_is_confirmed_once(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, _ = await new_deposit()
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    raw = chain.signed_transfer(chain.stack.usdc, address, 9 * USDC)
    tx_hash = chain.send_raw(raw)
    await follower.sync()

    chain.rpc("evm_revert", snapshot)
    chain.mine(2)  # a longer branch in which the transaction comes later
    assert chain.send_raw(raw) == tx_hash
    chain.mine(CONFIRMATIONS + 1)
    await follower.sync()
    [again] = await observations(db)
    assert again["status"] == "confirmed" and again["generation"] == 2 and again["tx_hash"] == tx_hash
    assert heard.kinds() == ["seen", "orphaned", "seen", "confirmed"]


async def test_a_reorg_deeper_than_the_confirmations_is_flagged_for_review(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    address, _ = await new_deposit()
    await follower.sync()
    snapshot = chain.rpc("evm_snapshot")
    chain.transfer(chain.stack.usdc, address, 3 * USDC)
    chain.mine(CONFIRMATIONS + 1)
    await follower.sync()
    assert heard.kinds() == ["seen", "confirmed"]

    chain.rpc("evm_revert", snapshot)
    chain.mine(CONFIRMATIONS + 4)
    with structlog.testing.capture_logs() as logs:
        await follower.sync()
    [flagged] = await observations(db)
    assert flagged["status"] == "orphaned" and flagged["needs_review"]
    assert heard.kinds() == ["seen", "confirmed", "deep_reorg"]
    assert any(e["event"] == "chain.deep_reorg" and e["log_level"] == "error" for e in logs)
    async with db.session() as session:
        reorg = (await session.execute(text("SELECT deep, orphaned_confirmed FROM chain_reorgs"))).one()
    assert reorg.deep is True and reorg.orphaned_confirmed == 1


async def test_one_leader_per_chain(db: Database, chain: Chain, follower: Follower) -> None:
    standby = Follower(db, chain.config)
    with pytest.raises(RuntimeError, match="another follower leads"):
        async with standby.leading(wait=False):
            pass
    await standby.rpc.aclose()


async def test_a_standby_stops_when_asked_while_another_leads(db: Database, chain: Chain, follower: Follower) -> None:
    """A standby watcher polls for the lock; SIGTERM (its stop event) ends it at once, not
    after the leader has gone."""
    standby, stop = Follower(db, chain.config), asyncio.Event()
    waiting = asyncio.create_task(standby.run(stop))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    stop.set()
    await asyncio.wait_for(waiting, timeout=1.0)  # the standby polls every 2 s: not a poll's wait
    await standby.rpc.aclose()


async def test_leadership_passes_on_when_the_leader_stops(db: Database, chain: Chain, clean_chain_tables: None) -> None:
    first, second = Follower(db, chain.config), Follower(db, chain.config)
    async with first.leading(wait=False):
        with pytest.raises(RuntimeError, match="another follower leads"):
            async with second.leading(wait=False):
                pass
    async with db.session() as session:  # the lock went with the first one's connection
        held = await session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    assert held == 0
    async with second.leading(wait=False):
        await second.sync()
    for f in (first, second):
        await f.rpc.aclose()


async def test_finality_by_the_finalized_tag(
    db: Database, chain: Chain, clean_chain_tables: None, new_deposit: Callable[[], Any]
) -> None:
    """With finality="finalized" the depth is the node's word: anvil finalizes head − 64."""
    config = replace(chain.config, finality="finalized", confirmations=None)
    follower = Follower(db, config)
    address, _ = await new_deposit()
    receipt_block = chain.head() + 1
    chain.transfer(chain.stack.usdc, address, 2 * USDC)
    async with follower.leading(wait=False):
        chain.mine(60)  # 20 blocks deeper than any confirmation count we use, still not final
        await follower.sync()
        assert [o["status"] for o in await observations(db)] == ["seen"]
        chain.mine(receipt_block + 64 - chain.head())
        await follower.sync()
        assert [o["status"] for o in await observations(db)] == ["confirmed"]
    await follower.rpc.aclose()


async def test_a_standby_takes_over_when_the_leader_goes(
    db: Database, chain: Chain, clean_chain_tables: None, new_deposit: Callable[[], Any]
) -> None:
    """Two followers of one chain run their loops; only the leader writes. When the leader
    stops, the standby acquires the lock and carries on from the cursor."""
    address, _ = await new_deposit()
    leader, standby = Follower(db, chain.config), Follower(db, chain.config)
    stop_leader, stop_standby = asyncio.Event(), asyncio.Event()
    leading = asyncio.create_task(leader.run(stop_leader))
    await asyncio.sleep(0.5)
    waiting = asyncio.create_task(standby.run(stop_standby))
    chain.transfer(chain.stack.usdc, address, 1 * USDC)
    await asyncio.sleep(1.0)
    assert metrics.CHAIN_LEADER.labels("local")._value.get() == 1  # one of them leads
    stop_leader.set()
    await leading
    chain.transfer(chain.stack.usdc, address, 2 * USDC)
    chain.mine(CONFIRMATIONS)
    for _ in range(100):  # the standby polls the lock every 2 s
        if [o["status"] for o in await observations(db)] == ["confirmed", "confirmed"]:
            break
        await asyncio.sleep(0.1)
    stop_standby.set()
    await waiting
    assert sorted(int(o["amount"]) for o in await observations(db)) == [1 * USDC, 2 * USDC]
    assert all(o["status"] == "confirmed" for o in await observations(db))
    for f in (leader, standby):
        await f.rpc.aclose()


async def test_metrics_count_observations_and_lag(
    db: Database, chain: Chain, follower: Follower, new_deposit: Callable[[], Any]
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"chain": "local", **labels}) or 0.0

    seen_before = sample("stablegate_chain_observations_total", status="seen")
    confirmed_before = sample("stablegate_chain_observations_total", status="confirmed")
    address, _ = await new_deposit()
    chain.transfer(chain.stack.usdc, address, 1)
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    assert sample("stablegate_chain_observations_total", status="seen") == seen_before + 1
    assert sample("stablegate_chain_observations_total", status="confirmed") == confirmed_before + 1
    assert sample("stablegate_chain_head_lag_blocks") == 0


async def test_a_cursor_set_back_rereads_without_duplicates(
    db: Database, chain: Chain, follower: Follower, heard: Heard, new_deposit: Callable[[], Any]
) -> None:
    """The runbook's re-read (cursor moved back by hand): stored blocks are rewritten, known
    logs are no-ops, nobody hears anything twice."""
    address, _ = await new_deposit()
    chain.transfer(chain.stack.usdc, address, 4 * USDC)
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    async with db.session() as session:
        await session.execute(
            text("UPDATE chain_cursors SET block_number = -1, block_hash = NULL WHERE chain_id = :id"),
            {"id": chain.stack.chain_id},
        )
    await follower.sync()
    assert len(await observations(db)) == 1 and heard.kinds() == ["seen", "confirmed"]


async def _synced_at(db: Database, chain: Chain) -> dt.datetime | None:
    async with db.session() as session:
        sql = text("SELECT synced_at FROM chain_cursors WHERE chain_id = :id")
        return (await session.execute(sql, {"id": chain.stack.chain_id})).scalar()


async def _fork_the_tip(chain: Chain, follower: Follower) -> None:
    """A block the follower has read, then taken back (the chain reverted below it)."""
    snapshot = chain.rpc("evm_snapshot")
    chain.mine(1)
    await follower.sync()
    chain.rpc("evm_revert", snapshot)


async def test_synced_at_says_when_the_follower_last_had_every_block_to_the_head(
    db: Database, chain: Chain, follower: Follower
) -> None:
    """What the payments expiry job trusts: money mined before `synced_at` has been seen.
    It moves only when a range reaches the head read before it (or an idle poll finds the
    cursor there), never for a range short of it, and a reorg forgets it."""
    before = dt.datetime.now(dt.UTC)
    await follower.sync()
    first = await _synced_at(db, chain)
    assert first is not None and before <= first <= dt.datetime.now(dt.UTC)
    assert REGISTRY.get_sample_value("stablegate_chain_synced_timestamp_seconds", {"chain": "local"}) == (
        first.timestamp()
    )

    chain.mine(5)
    follower.range_blocks = 2  # a range short of the head: not synced by it
    assert await follower.step() == 2
    assert await _synced_at(db, chain) == first
    await follower.sync()
    second = await _synced_at(db, chain)
    assert second is not None and second > first

    await _fork_the_tip(chain, follower)
    chain.mine(2)  # another branch above the fork
    follower.range_blocks = 1
    await follower.step()  # finds the fork and rewinds: the new branch is unseen
    assert await _synced_at(db, chain) is None
    await follower.sync()
    third = await _synced_at(db, chain)
    assert third is not None and third > second

    await _fork_the_tip(chain, follower)
    chain.rpc("evm_mine", int(third.timestamp()) + 100)  # the tip replaced at the same height
    assert await follower.step() == 0  # at the head, its tip differs: rewound, not synced
    assert await _synced_at(db, chain) is None


def test_the_watermark_stops_at_a_stuck_head() -> None:
    """A provider stuck on an old head still answers: on a chain with steady blocks the
    follower vouches for no time past the tip's plus the chain's longest gap."""
    base = registry.PRESETS["base"]
    assert base.max_block_interval_s == 30
    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    fresh_tip_s = int(now.timestamp()) - 2
    assert watermark(base, now, fresh_tip_s) == now
    stuck_tip_s = int(now.timestamp()) - 600
    assert watermark(base, now, stuck_tip_s) == now - dt.timedelta(seconds=570)
    assert watermark(base, now, None) is None  # no stored tip: nothing to judge by, nothing claimed
    assert watermark(registry.PRESETS["local"], now, stuck_tip_s) == now  # blocks on demand
    # A stuck provider hides at most the gap, which the payments expiry grace covers.
    assert all((c.max_block_interval_s or 0) <= registry.MAX_BLOCK_INTERVAL_S for c in registry.PRESETS.values())
    with pytest.raises(AssertionError):
        replace(base, max_block_interval_s=registry.MAX_BLOCK_INTERVAL_S + 1)


async def test_a_follower_on_a_stuck_chain_vouches_only_to_the_tip_plus_its_gap(
    db: Database, chain: Chain, clean_chain_tables: None
) -> None:
    steady = replace(chain.config, max_block_interval_s=1)
    chain.mine()
    await asyncio.sleep(2.1)  # no block since: the head is older than the chain's gap
    follower = Follower(db, steady)
    try:
        async with follower.leading(wait=False):
            await follower.sync()
            tip = chain.w3.eth.get_block("latest")
            synced = await _synced_at(db, chain)
            assert synced == dt.datetime.fromtimestamp(tip["timestamp"] + 1, dt.UTC)
            assert synced < dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    finally:
        await follower.rpc.aclose()
