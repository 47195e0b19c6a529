"""Chain ingestion: the follower against a raw fetch of the same logs, on the same anvil,
in one run; then detection latency against the poll interval.

    .venv/bin/python bench/chain_ingest.py [--blocks 20] [--per-block 1000] [--repeats 3]

Set-up: a fresh anvil with the local stack; <per-block> Transfer logs per block to
watched deposit addresses (Disperse transactions of 250 transfers each), <blocks> blocks.

- (a) raw: `eth_getLogs` over the same ranges the follower uses (its max range), plus
  decoding every log into an observation (`chains.logs.transfer`) and matching its
  recipient against the watched addresses in memory: the floor cost of reading the
  chain, with nothing stored.
- (b) follower: `Follower.sync()` from block 0 into PostgreSQL (headers, continuity,
  watched-address match, inserts, confirmations, subscribers, cursor), fresh tables each
  repeat. Target: (b) ≥ 0.5x (a), in logs/s. The look-alike scan (monitoring: transfers
  to our addresses from unconfigured contracts) runs when the follower is idle at the
  head; it is timed on its own right after, and printed.
- latency: the follower runs its loop (`run`, poll interval <poll-ms>); the bench mines
  a block holding one transfer to a watched address and polls the database until the
  observation is visible. Target: p99 ≤ 1.5x the poll interval.

The process freezes its start-up heap before measuring, as `stablegate watcher` does
(kit/runtime.py), and reads the logs once untimed, so every timed repeat reads from a
warm anvil (its first read of them was ~25 % slower than the rest). The database is
DATABASE_URL's, else the embedded PostgreSQL (as for the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from eth_account import Account
from sqlalchemy import text
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stablegate import migrations
from stablegate.chains import logs as decode
from stablegate.chains import registry
from stablegate.chains import service as chains
from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.chains.follower import Follower
from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.kit.runtime import freeze_startup_heap
from stablegate.rails import contracts
from stablegate.rails.deploy import LocalStack, deploy_local
from stablegate.rails.deposits import deposit_address, deposit_salt
from tests.conftest import admin_url, recreate_database

BENCH_DB = "stablegate_bench_chain"
PER_TX = 250
ADDRESSES = 500
MAX_RANGE_BLOCKS = 10
LATENCY_SAMPLES = 40


def send(w3: Web3, key: str, tx: dict[str, Any]) -> None:
    signed = Account.sign_transaction(tx, key)
    w3.eth.send_raw_transaction(signed.raw_transaction)


def generate(w3: Web3, stack: LocalStack, addresses: list[str], blocks: int, per_block: int) -> None:
    """<blocks> blocks of <per_block> transfers, mined by hand (automine off)."""
    key = DEV_PRIVATE_KEYS[3]
    payer = Account.from_key(key).address
    token = w3.eth.contract(address=stack.usdc, abi=contracts.abi("TestStablecoin"))
    disperse = w3.eth.contract(address=stack.disperse, abi=contracts.abi("Disperse"))
    nonce = w3.eth.get_transaction_count(payer)
    fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": stack.chain_id}
    approve = token.functions.approve(stack.disperse, 2**255).build_transaction(
        {"from": payer, "nonce": nonce, "gas": 100_000, **fees}
    )
    send(w3, key, approve)
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    nonce += 1
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    rng = random.Random(1)
    for _ in range(blocks):
        for _ in range(per_block // PER_TX):
            to = [Web3.to_checksum_address(rng.choice(addresses)) for _ in range(PER_TX)]
            call = disperse.functions.disperseToken(stack.usdc, to, [rng.randint(1, 10**6) for _ in to])
            send(w3, key, call.build_transaction({"from": payer, "nonce": nonce, "gas": 8_000_000, **fees}))
            nonce += 1
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]


async def raw_fetch(config: ChainConfig, head: int, watched: set[str]) -> tuple[int, float]:
    started = time.perf_counter()
    decoded = 0
    query: dict[str, Any] = {"address": [t.address for t in config.tokens], "topics": [[decode.TRANSFER_TOPIC]]}
    async with httpx.AsyncClient(timeout=60) as client:
        for first in range(0, head + 1, config.max_range_blocks):
            last = min(head, first + config.max_range_blocks - 1)
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs"}
            body["params"] = [query | {"fromBlock": hex(first), "toBlock": hex(last)}]
            # The same JSON decoder as the follower's client (orjson): the comparison is the
            # database work, not a faster parser on one side.
            for item in orjson.loads((await client.post(config.rpc_urls[0], json=body)).content)["result"]:
                observation = decode.transfer(item, None)
                decoded += observation is not None and observation.to_address in watched
    return decoded, time.perf_counter() - started


async def reset(db: Database) -> None:
    async with db.session() as session:
        await session.execute(
            text("TRUNCATE chain_events, chain_reorgs, chain_cursors, chain_blocks, chain_observations CASCADE")
        )


async def follower_ingest(db: Database, config: ChainConfig) -> tuple[int, float, float]:
    """(observations stored, seconds to ingest them, seconds for the look-alike scan that
    follows at the head). The follower runs the scan when idle, after the ingest path."""
    await reset(db)
    follower = Follower(db, config, lookalike_scan=False)
    async with follower.leading(wait=False):
        started = time.perf_counter()
        await follower.sync()
        elapsed = time.perf_counter() - started
        follower.lookalike_scan = True
        started = time.perf_counter()
        await follower.sync()
        scan_s = time.perf_counter() - started
    await follower.rpc.aclose()
    async with db.session() as session:
        stored = int((await session.execute(text("SELECT count(*) FROM chain_observations"))).scalar_one())
    return stored, elapsed, scan_s


async def latency(db: Database, config: ChainConfig, w3: Web3, stack: LocalStack, addresses: list[str]) -> list[float]:
    """Seconds from `evm_mine` returning to the observation row being visible."""
    stop = asyncio.Event()
    follower = Follower(db, config)
    task = asyncio.create_task(follower.run(stop))
    key = DEV_PRIVATE_KEYS[4]
    payer = Account.from_key(key).address
    token = w3.eth.contract(address=stack.usdc, abi=contracts.abi("TestStablecoin"))
    rng = random.Random(2)
    samples = []
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    async with db.session() as session:
        before = int((await session.execute(text("SELECT count(*) FROM chain_observations"))).scalar_one())
    for n in range(LATENCY_SAMPLES):
        call = token.functions.transfer(Web3.to_checksum_address(rng.choice(addresses)), 1)
        tx = call.build_transaction(
            {"from": payer, "nonce": w3.eth.get_transaction_count(payer, "pending"), "gas": 100_000}
            | {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": stack.chain_id}
        )
        send(w3, key, tx)
        await asyncio.sleep(rng.uniform(0, config.poll_interval_ms / 1000))  # land anywhere in the poll cycle
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        mined = time.perf_counter()
        while True:
            async with db.session() as session:
                count = int((await session.execute(text("SELECT count(*) FROM chain_observations"))).scalar_one())
            if count > before + n:
                break
            await asyncio.sleep(0.002)
        samples.append(time.perf_counter() - mined)
    stop.set()
    await task
    await follower.rpc.aclose()
    return samples


async def register(db: Database, stack: LocalStack, count: int) -> list[str]:
    addresses = []
    async with db.session() as session:
        for n in range(count):
            ref = f"bench_{n}"
            address = deposit_address(stack.factory, stack.forwarder_implementation, deposit_salt(ref)).lower()
            await chains.watch_address(session, stack.chain_id, address, ref)
            addresses.append(address)
    return addresses


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main_async(args: argparse.Namespace) -> None:
    url = recreate_database(admin_url(), BENCH_DB)
    migrations.upgrade(url)
    db = Database.connect(url, Settings())
    with Anvil(accounts=10, extra_args=("--gas-limit", "300000000")) as anvil:
        stack = deploy_local(anvil.url)
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        tokens = (TokenConfig("USDC", stack.usdc, 6, "USDC.local"),)
        config = registry.local_chain(
            anvil.url,
            tokens,
            router=stack.router,
            confirmations=3,
            max_range_blocks=MAX_RANGE_BLOCKS,
            poll_interval_ms=args.poll_ms,
        )
        addresses = await register(db, stack, ADDRESSES)
        generate(w3, stack, addresses, args.blocks, args.per_block)
        head = int(w3.eth.block_number)
        freeze_startup_heap()  # as `stablegate watcher` does once started (both sides gain)
        await raw_fetch(config, head, set(addresses))  # untimed: anvil's first read of the logs is slow
        raws, ingests, scans = [], [], []
        for _ in range(args.repeats):
            count, elapsed = await raw_fetch(config, head, set(addresses))
            raws.append(count / elapsed)
            stored, elapsed, scan_s = await follower_ingest(db, config)
            assert stored == count, (stored, count)
            ingests.append(stored / elapsed)
            scans.append(stored / scan_s)
        samples = await latency(db, config, w3, stack, addresses)
    await db.dispose()
    raw, ingest = statistics.median(raws), statistics.median(ingests)
    print(f"chain ingest bench: {args.blocks} blocks x {args.per_block} logs, ranges of {MAX_RANGE_BLOCKS} blocks,")
    print(f"  {args.repeats} repeats (medians), anvil + PostgreSQL on this machine")
    print(f"(a) raw eth_getLogs + decode : {raw:9.0f} logs/s   [{', '.join(f'{r:.0f}' for r in raws)}]")
    print(f"(b) follower ingest          : {ingest:9.0f} logs/s   [{', '.join(f'{r:.0f}' for r in ingests)}]")
    print(f"    ratio (b)/(a)            : {ingest / raw:9.2f}x       (target >= 0.5x)")
    scan = statistics.median(scans)
    print(f"look-alike scan afterwards   : {scan:9.0f} logs/s   [{', '.join(f'{r:.0f}' for r in scans)}]")
    print("    (monitoring; the follower runs it when idle at the head, not on the ingest path)")
    p50, p99 = statistics.median(samples), pct(samples, 0.99)
    poll_s = args.poll_ms / 1000
    print(f"detection latency ({len(samples)} blocks, poll {args.poll_ms} ms): p50 {p50 * 1000:.0f} ms,")
    print(f"    p99 {p99 * 1000:.0f} ms = {p99 / poll_s:.2f}x poll interval   (target <= 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=1000, help="multiple of 250")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--poll-ms", type=int, default=250)
    args = parser.parse_args()
    assert args.per_block % PER_TX == 0 and 1 <= args.blocks <= 500 and 1 <= args.repeats <= 20
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
