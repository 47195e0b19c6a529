"""Scheduled batch sweeps on a real anvil and PostgreSQL: payments paid by plain transfer to
their (counterfactual) deposit addresses, followed by the real follower, swept into the
treasury by one transaction of the operator's transaction manager, and booked clearing →
treasury in the ledger for exactly what moved."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import text
from web3 import Web3

from stablegate.chains import registry
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.jobs.runtime import Runtime
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.merchants.service import Principal
from stablegate.payments import service as payments
from stablegate.payments.schemas import Payment
from stablegate.rails import contracts
from stablegate.rails.deploy import Sender, connect
from stablegate.settlement import sweep_jobs, sweeps, txmanager
from stablegate.settlement.signers import LocalSigner
from stablegate.settlement.txmanager import FeePolicy, IntentOutcome, TxManager
from tests.chains.conftest import CONFIRMATIONS, Chain, follower  # noqa: F401
from tests.payments.conftest import DAI, USDC, create, ctx, option, pay_transfer  # noqa: F401
from tests.settlement.conftest import settings, token_balance

OPERATOR_KEY = DEV_PRIVATE_KEYS[0]  # the local deployer: the factory's sweep operator
FAIL_UNSIGNED_AFTER_S = 3600
FORWARDER_DEPLOYED_TOPIC = contracts.event_topic("ForwarderDeployed(bytes32,address)")


@dataclasses.dataclass
class Sweeper:
    """The operator's transaction manager and every sweep outcome it reported."""

    manager: TxManager
    heard: list[IntentOutcome]


@pytest.fixture
async def sweeper(db: Database, chain: Chain, clean_settlement: None) -> AsyncIterator[Sweeper]:
    heard: list[IntentOutcome] = []
    chains = {chain.config.chain_id: chain.config}

    async def recording(session: Any, news: IntentOutcome) -> None:
        heard.append(news)
        await sweeps.on_outcome(session, news, chains)

    sweeps.register([chain.config])  # what a sender process does
    txmanager.on_outcome("sweep", recording)  # the same handler, heard by the test
    signer = LocalSigner(bytes.fromhex(OPERATOR_KEY[2:]))
    manager = TxManager(db, chain.config, signer, FeePolicy.from_settings(settings(), chain.config))
    assert manager.address == chain.config.operator
    yield Sweeper(manager, heard)
    await manager.rpc.aclose()


async def confirm(chain: Chain, follower: Follower) -> None:  # noqa: F811
    chain.mine(CONFIRMATIONS)
    await follower.sync()


async def plan(db: Database, chain: Chain, **kwargs: Any) -> list[str]:
    async with db.session() as session:
        planned: list[str] = await sweeps.plan_sweeps(session, chain.config, FAIL_UNSIGNED_AFTER_S, **kwargs)
        return planned


async def drive(chain: Chain, sweeper: Sweeper) -> None:
    """Sign and send (anvil mines at once), then bury the block and see it confirmed."""
    await sweeper.manager.tick()
    chain.mine(CONFIRMATIONS)
    await sweeper.manager.tick()


async def sweep_rows(db: Database) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.execute(
            text(
                "SELECT s.id, s.status, s.items, i.status AS intent_status, i.tx_hash, i.gas_limit, i.to_address"
                " FROM sweeps s JOIN tx_intents i ON i.id = s.tx_intent_id ORDER BY s.created_at, s.id"
            )
        )
        return [dict(r._mapping) for r in rows]


async def ledger_positions(db: Database, chain: Chain, asset: str) -> tuple[int, int]:
    """(clearing, treasury) posted balances of a debit-normal asset account pair."""
    async with db.session() as session:
        result = []
        for account in (
            await chart.clearing_account(session, chain.config.chain_id, asset),
            await chart.treasury_account(session, chain.config.chain_id, asset),
        ):
            b = await ledger.balance(session, account.id)
            result.append(b.debits_posted - b.credits_posted)
        return result[0], result[1]


def address_of(payment: Payment) -> str:
    deposit = option(payment).instructions.deposit_address
    assert deposit is not None
    return str(deposit.address)


def deployed(chain: Chain, address: str) -> bool:
    return bytes(chain.w3.eth.get_code(Web3.to_checksum_address(address))) != b""


def receipt(chain: Chain, tx_hash: str) -> dict[str, Any]:
    answer: dict[str, Any] = chain.rpc("eth_getTransactionReceipt", tx_hash)
    return answer


def set_operator(chain: Chain, operator: str) -> None:
    factory = chain.w3.eth.contract(address=chain.stack.factory, abi=contracts.abi("ForwarderFactory"))
    Sender(connect(chain.anvil.url), OPERATOR_KEY).transact(factory.functions.setOperator(operator))


async def test_one_transaction_sweeps_every_paid_address_and_the_ledger_follows(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
) -> None:
    stack = chain.stack
    first = await create(db, principal, ctx, amount="25")
    both = await create(db, principal, ctx, amount="30")
    third = await create(db, principal, ctx, amount="7")
    pay_transfer(chain, first, 25 * USDC)
    pay_transfer(chain, both, 10 * USDC)
    pay_transfer(chain, both, 20 * DAI, asset="DAI")
    pay_transfer(chain, third, 7 * USDC, payer=1)
    addresses = [address_of(p) for p in (first, both, third)]
    # Counterfactual: the tokens sit at addresses where nothing is deployed yet.
    assert not any(deployed(chain, a) for a in addresses)
    await confirm(chain, follower)
    usdc_before, dai_before = (
        await ledger_positions(db, chain, "USDC.local"),
        await ledger_positions(db, chain, "DAI.local"),
    )
    treasury_usdc, treasury_dai = token_balance(chain, stack.treasury), token_balance(chain, stack.treasury, stack.dai)

    planned = await plan(db, chain)

    assert len(planned) == 1  # one transaction for every address and token
    [row] = await sweep_rows(db)
    assert (row["id"], row["status"], row["intent_status"]) == (planned[0], "pending", "planned")
    assert row["to_address"] == stack.factory.lower()
    assert sorted((i["address"], i["token"], int(i["amount"])) for i in row["items"]) == sorted(
        [
            (addresses[0].lower(), stack.usdc.lower(), 25 * USDC),
            (addresses[1].lower(), stack.usdc.lower(), 10 * USDC),
            (addresses[1].lower(), stack.dai.lower(), 20 * DAI),
            (addresses[2].lower(), stack.usdc.lower(), 7 * USDC),
        ]
    )

    await drive(chain, sweeper)

    [row] = await sweep_rows(db)
    assert (row["status"], row["intent_status"]) == ("swept", "confirmed")
    assert {(i["address"], i["token"]): int(i["swept"]) for i in row["items"]} == {
        (i["address"], i["token"]): int(i["amount"]) for i in row["items"]
    }
    assert [n.outcome for n in sweeper.heard] == ["broadcast", "confirmed"]
    # On chain: the treasury received exactly the deposits; the addresses hold nothing.
    assert token_balance(chain, stack.treasury) == treasury_usdc + 42 * USDC
    assert token_balance(chain, stack.treasury, stack.dai) == treasury_dai + 20 * DAI
    assert all(token_balance(chain, a, t) == 0 for a in addresses for t in (stack.usdc, stack.dai))
    assert all(deployed(chain, a) for a in addresses)  # deployed by the sweep
    # In the ledger: clearing → treasury by exactly what moved.
    assert await ledger_positions(db, chain, "USDC.local") == (usdc_before[0] - 42 * USDC, usdc_before[1] + 42 * USDC)
    assert await ledger_positions(db, chain, "DAI.local") == (dai_before[0] - 20 * DAI, dai_before[1] + 20 * DAI)
    # Gas: the estimate covers a first-time sweep of every item, with room.
    mined = receipt(chain, row["tx_hash"])
    gas_used = int(mined["gasUsed"], 16)
    assert gas_used <= row["gas_limit"] and gas_used < sweeps.SWEEP_BASE_GAS + 4 * (sweeps.SWEEP_ITEM_GAS * 3 // 4)
    assert sum(1 for log in mined["logs"] if log["topics"][0] == FORWARDER_DEPLOYED_TOPIC) == 3

    assert await plan(db, chain) == []  # nothing left to sweep


async def test_a_replayed_outcome_changes_nothing(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
) -> None:
    payment = await create(db, principal, ctx, amount="12")
    pay_transfer(chain, payment, 12 * USDC)
    pay_transfer(chain, payment, 3 * DAI, asset="DAI")
    await confirm(chain, follower)
    await plan(db, chain)
    await drive(chain, sweeper)
    [before] = await sweep_rows(db)
    positions = [await ledger_positions(db, chain, a) for a in ("USDC.local", "DAI.local")]
    confirmed = next(n for n in sweeper.heard if n.outcome == "confirmed")
    assert len(sweeps.swept_events(chain.config, confirmed.logs)) == 2

    chains = {chain.config.chain_id: chain.config}
    for news in (confirmed, confirmed, dataclasses.replace(confirmed, outcome="failed", error="reverted")):
        async with db.session() as session:
            await sweeps.on_outcome(session, news, chains)

    assert await sweep_rows(db) == [before]
    assert [await ledger_positions(db, chain, a) for a in ("USDC.local", "DAI.local")] == positions


async def test_a_later_payment_to_a_swept_address_is_swept_by_the_next_run(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
) -> None:
    payment = await create(db, principal, ctx, amount="5")
    pay_transfer(chain, payment, 5 * USDC)
    await confirm(chain, follower)
    await plan(db, chain)
    await drive(chain, sweeper)
    address = address_of(payment)
    assert deployed(chain, address)
    treasury = token_balance(chain, chain.stack.treasury)

    pay_transfer(chain, payment, 3 * USDC, payer=1)  # an overpayment, after the sweep
    await confirm(chain, follower)
    clearing, hot_wallet = await ledger_positions(db, chain, "USDC.local")
    planned = await plan(db, chain)
    await drive(chain, sweeper)

    assert len(planned) == 1
    later = (await sweep_rows(db))[-1]
    assert later["id"] == planned[0] and later["status"] == "swept"
    assert [(i["address"], int(i["amount"]), int(i["swept"])) for i in later["items"]] == [
        (address.lower(), 3 * USDC, 3 * USDC)
    ]
    topics = [log["topics"][0] for log in receipt(chain, later["tx_hash"])["logs"]]
    assert FORWARDER_DEPLOYED_TOPIC not in topics and contracts.SWEPT_TOPIC in topics  # already deployed
    assert token_balance(chain, chain.stack.treasury) == treasury + 3 * USDC
    assert token_balance(chain, address) == 0
    assert await ledger_positions(db, chain, "USDC.local") == (clearing - 3 * USDC, hot_wallet + 3 * USDC)
    assert await plan(db, chain) == []


async def test_a_reverted_sweep_fails_and_its_deposits_are_swept_by_the_next_run(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
) -> None:
    payment = await create(db, principal, ctx, amount="9")
    pay_transfer(chain, payment, 9 * USDC)
    await confirm(chain, follower)
    clearing, hot_wallet = await ledger_positions(db, chain, "USDC.local")
    set_operator(chain, Account.from_key(DEV_PRIVATE_KEYS[2]).address)  # our operator is refused now

    failed = await plan(db, chain)
    await drive(chain, sweeper)

    [row] = await sweep_rows(db)
    assert (row["id"], row["status"], row["intent_status"]) == (failed[0], "failed", "failed")
    assert await ledger_positions(db, chain, "USDC.local") == (clearing, hot_wallet)  # nothing moved or booked
    assert token_balance(chain, address_of(payment)) == 9 * USDC

    set_operator(chain, chain.stack.deployer)
    retried = await plan(db, chain)
    await drive(chain, sweeper)

    assert len(retried) == 1 and retried != failed
    assert [r["status"] for r in await sweep_rows(db)] == ["failed", "swept"]
    assert token_balance(chain, address_of(payment)) == 0
    assert await ledger_positions(db, chain, "USDC.local") == (clearing - 9 * USDC, hot_wallet + 9 * USDC)


async def test_many_items_are_chunked_into_several_transactions(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paid = [await create(db, principal, ctx, amount=str(n)) for n in (1, 2, 3)]
    for n, payment in enumerate(paid, start=1):
        pay_transfer(chain, payment, n * USDC)
    await confirm(chain, follower)
    monkeypatch.setattr(sweeps, "ITEMS_PER_SWEEP", 2)

    planned = await plan(db, chain)
    await drive(chain, sweeper)

    rows = await sweep_rows(db)
    assert [r["id"] for r in rows] == planned and [len(r["items"]) for r in rows] == [2, 1]
    assert all(r["status"] == "swept" for r in rows) and len({r["tx_hash"] for r in rows}) == 2
    assert all(token_balance(chain, address_of(p)) == 0 for p in paid)


async def test_a_chain_without_a_factory_or_operator_has_nothing_to_sweep(
    db: Database,
    chain: Chain,
    clean_settlement: None,
) -> None:
    for missing in ("operator", "deposit_factory"):
        config = dataclasses.replace(chain.config, **{missing: None})
        async with db.session() as session:
            assert await sweeps.plan_sweeps(session, config, FAIL_UNSIGNED_AFTER_S) == []
    assert await sweep_rows(db) == []


async def test_the_periodic_job_plans_sweeps_on_every_configured_chain(
    db: Database,
    chain: Chain,
    follower: Follower,  # noqa: F811
    principal: Principal,
    ctx: payments.Context,  # noqa: F811
    sweeper: Sweeper,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payment = await create(db, principal, ctx, amount="4")
    pay_transfer(chain, payment, 4 * USDC)
    await confirm(chain, follower)
    chains_file = tmp_path / "chains.json"
    chains_file.write_text(json.dumps([registry.to_dict(chain.config)]))
    monkeypatch.setenv("STABLEGATE_CHAINS_FILE", str(chains_file))
    monkeypatch.delenv("STABLEGATE_CHAINS", raising=False)
    monkeypatch.setattr(Runtime, "db", db)  # what the worker process sets

    assert await sweep_jobs.sweep(timestamp=0) == 1
    assert await sweep_jobs.sweep(timestamp=0) == 0  # planned already: nothing new

    await drive(chain, sweeper)
    assert [r["status"] for r in await sweep_rows(db)] == ["swept"]
    assert token_balance(chain, address_of(payment)) == 0
