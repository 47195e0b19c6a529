"""Payouts end to end on anvil, and a 1,000-merchant settlement run against a bare script
sending the same number of plain token transfers, in one run.

    .venv/bin/python bench/payouts.py [--merchants 1000] [--single 200] [--repeats 3]

Set-up (not timed): a fresh database (DATABASE_URL's server, else the embedded
PostgreSQL), a fresh anvil with our stack (automine: a block per transaction, as fast as
anvil goes), the treasury funded, `--merchants` merchants each with a usable destination,
a threshold schedule and an available balance; confirmations = 1 (anvil has no reorgs;
the depth wait is the chain's, not ours).

- (a) bare script: one funded key signs `--merchants` ERC-20 transfers (eth-account) to
  distinct addresses and sends each with eth_sendRawTransaction, then waits for the last
  receipt: the time anvil needs to mine them, plus the least work a sender can do.
- (b) settlement run: `run_settlements` (records, payouts, ledger reserves, the Disperse
  batch intents, events) commits, then the treasury's transaction manager ticks until
  every intent is confirmed (sign, store, send, receipts, ledger posts, events).
- (c) single payouts: `--single` payouts created one by one through the service (reserve,
  intent, event each), then the manager until all are paid: payouts/s end to end.

Target: (b) < 2 × (a). Medians over repeats; each repeat re-credits the balances.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stablegate import localnet, migrations
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.registry import ChainConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.ledger import chart
from stablegate.ledger import service as ledger
from stablegate.merchants import service as merchants
from stablegate.merchants.service import SCOPES, Principal
from stablegate.observability import logging as obs_logging
from stablegate.rails import contracts
from stablegate.rails.deploy import Sender, connect
from stablegate.settlement import runs, service
from stablegate.settlement.schemas import DestinationCreate, PayoutCreate
from stablegate.settlement.signers import LocalSigner
from stablegate.settlement.txmanager import FeePolicy, TxManager
from tests.conftest import admin_url, recreate_database

BENCH_DB = "stablegate_bench_payouts"
USDC = 10**6
PER_MERCHANT_UNITS = 10 * USDC
SETUP_BATCH = 200


def settings() -> Settings:
    return Settings(destination_cooling_off_s=0, log_level="WARNING", db_pool_size=10)


def fresh_addresses(count: int, salt: int) -> list[str]:
    return [Account.from_key((salt * 10**6 + i + 1).to_bytes(32, "big")).address for i in range(count)]


# --- (a) the bare script -----------------------------------------------------------------


def bare_script(url: str, token: str, count: int, salt: int) -> float:
    key = DEV_PRIVATE_KEYS[3]  # a payer holding 1,000,000 of each test token
    sender = Account.from_key(key).address
    w3 = connect(url)
    contract = w3.eth.contract(address=token, abi=contracts.abi("TestStablecoin"))
    started = time.perf_counter()
    nonce = int(w3.eth.get_transaction_count(sender))
    base = {"gas": 100_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": 31337}
    last = None
    with httpx.Client(timeout=30) as http:
        for i, to in enumerate(fresh_addresses(count, salt)):
            data = contract.encode_abi("transfer", args=[to, 1])
            tx = {**base, "to": token, "data": data, "nonce": nonce + i, "value": 0}
            raw = Account.sign_transaction(tx, key).raw_transaction
            reply = http.post(
                url, json={"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + raw.hex()]}
            )
            last = reply.json()["result"]
    assert w3.eth.wait_for_transaction_receipt(last, timeout=120, poll_latency=0.01)["status"] == 1
    return time.perf_counter() - started


# --- (b) and (c): the platform -----------------------------------------------------------


async def make_merchants(db: Database, ctx: service.Context, count: int) -> list[Principal]:
    principals = []
    addresses = fresh_addresses(count, 999)
    for first in range(0, count, SETUP_BATCH):
        async with db.session() as session:
            for i in range(first, min(first + SETUP_BATCH, count)):
                merchant = await merchants.create_merchant(session, f"Bench {i}")
                p = Principal(merchant.id, "test", "key_bench", "secret", SCOPES)
                dst = await service.create_destination(
                    session, p, DestinationCreate(chain="local", asset="USDC", address=addresses[i]), ctx
                )
                params = runs.ScheduleParams(merchant.id, "test", "local", "USDC", dst.id, threshold="1")
                await runs.set_schedule(session, ctx, params)
                principals.append(p)
    return principals


async def credit(db: Database, principals: list[Principal], amount: int, ref: str) -> None:
    for first in range(0, len(principals), SETUP_BATCH):
        async with db.session() as session:
            clearing = await chart.clearing_account(session, 31337, "USDC.local")
            batch = []
            for p in principals[first : first + SETUP_BATCH]:
                available = await chart.merchant_account(session, p.merchant_id, "test", "available", "USDC.local")
                batch.append(
                    ledger.Transfer(f"bench:{ref}:{p.merchant_id}", clearing.id, available.id, "USDC.local", amount)
                )
            await ledger.create_transfers(session, batch)


async def settlement_run(db: Database, ctx: service.Context, manager: TxManager) -> tuple[float, int]:
    started = time.perf_counter()
    async with db.session() as session:
        summary = await runs.run_settlements(session, ctx, dt.datetime.now(dt.UTC))
    await manager.drain(max_ticks=100_000)
    return time.perf_counter() - started, len(summary.payout_ids)


async def single_payouts(
    db: Database, ctx: service.Context, manager: TxManager, p: Principal, dst: str, n: int
) -> float:
    started = time.perf_counter()
    for _ in range(n):
        async with db.session() as session:
            await service.create_payout(session, p, PayoutCreate(amount="1", destination=dst), ctx)
    await manager.drain(max_ticks=100_000)
    return time.perf_counter() - started


async def bench(args: argparse.Namespace) -> None:
    url = recreate_database(admin_url(), BENCH_DB)
    migrations.upgrade(url)
    db = Database.connect(url, settings())
    rows: dict[str, list[float]] = {"bare": [], "run": [], "single": []}
    principals: list[Principal] = []
    for r in range(args.repeats):
        # A fresh anvil per repeat: anvil slows down as its history grows, which would
        # favour whichever shape runs first. The stack lands at the same addresses.
        with localnet.running(block_time_s=None) as net:
            chain: ChainConfig = localnet.chain_config(net.stack, net.anvil.url, confirmations=1)
            ctx = service.Context.from_settings(settings(), [chain])
            service.register(ctx)
            Sender(connect(net.anvil.url), DEV_PRIVATE_KEYS[0]).transact(_mint(net, 10**15))
            await _forget_transactions(db)
            if not principals:
                await _prime(db, net.stack.usdc)
                principals = await make_merchants(db, ctx, args.merchants)
            signer = LocalSigner(bytes.fromhex(DEV_PRIVATE_KEYS[1][2:]))
            manager = TxManager(db, chain, signer, FeePolicy.from_settings(settings(), chain))
            rows["bare"].append(bare_script(net.anvil.url, net.stack.usdc, args.merchants, r + 1))
            await credit(db, principals, PER_MERCHANT_UNITS, f"run{r}")
            elapsed, paid = await settlement_run(db, ctx, manager)
            assert paid == args.merchants, f"{paid} payouts for {args.merchants} merchants"
            rows["run"].append(elapsed)
            solo = principals[0]
            await credit(db, [solo], args.single * USDC, f"single{r}")
            solo_dst = await _first_destination(db, solo, ctx)
            rows["single"].append(await single_payouts(db, ctx, manager, solo, solo_dst, args.single))
            await manager.rpc.aclose()
    await db.dispose()
    report(args, rows)


async def _forget_transactions(db: Database) -> None:
    """A fresh chain's nonces start at 0: the previous repeat's transactions (and the
    payouts they carried) go."""
    async with db.session() as session:
        await session.execute(text("TRUNCATE tx_signers, tx_attempts, tx_intents CASCADE"))


def _mint(net: localnet.LocalNet, amount: int) -> Any:
    token = connect(net.anvil.url).eth.contract(address=net.stack.usdc, abi=contracts.abi("TestStablecoin"))
    return token.functions.mint(net.stack.treasury, amount)


async def _prime(db: Database, usdc: str) -> None:
    async with db.session() as session:
        await ledger.define_asset(session, "USDC.local", 6, chain_id=31337, contract=usdc.lower())


async def _first_destination(db: Database, p: Principal, ctx: service.Context) -> str:
    from stablegate.kit.pagination import PageRequest

    async with db.session() as session:
        page = await service.list_destinations(session, p, PageRequest(limit=1), ctx)
    return page.data[0].id


def report(args: argparse.Namespace, rows: dict[str, list[float]]) -> None:
    bare, run, single = (statistics.median(rows[k]) for k in ("bare", "run", "single"))
    n, s = args.merchants, args.single
    print(f"\npayouts on anvil (automine), medians of {args.repeats}")
    print(f"{'shape':<52}{'seconds':>10}{'payouts/s':>12}{'ratio':>9}")
    print(f"{f'(a) bare script: {n} token transfers':<52}{bare:>10.2f}{n / bare:>12.1f}{1:>8.2f}×")
    print(
        f"{f'(b) settlement run: {n} merchants, Disperse batches':<52}{run:>10.2f}{n / run:>12.1f}{run / bare:>8.2f}×"
    )
    print(f"{f'(c) single payouts: {s}, one transaction each':<52}{single:>10.2f}{s / single:>12.1f}")
    print(f"target: (b) < 2 × (a): {'met' if run < 2 * bare else 'NOT met'} ({run / bare:.2f}×)")
    print("raw:", {k: [round(v, 2) for v in vs] for k, vs in rows.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--merchants", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    obs_logging.configure("WARNING", "console")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
