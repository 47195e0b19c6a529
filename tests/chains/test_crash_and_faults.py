"""The follower under abuse: SIGKILLed again and again while transfers keep arriving, and
behind faulty providers. Either way the observations must equal an independent full scan
of the chain: no gap, no duplicate, each log seen and confirmed exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stablegate.chains import logs as decode
from stablegate.chains.follower import Follower
from stablegate.chains.rpc import RpcClient
from stablegate.db import Database
from tests.chains.conftest import CONFIRMATIONS, Chain, observations
from tests.fakes.rpc_proxy import Faults, RpcProxy

KILLS = 6
DEPOSITS = 12


def full_scan(chain: Chain, watched: set[str]) -> set[tuple[str, int]]:
    """Every Transfer of a configured token to a watched address, read in one request
    straight from the node: the truth the follower is compared with."""
    tokens = [t.address for t in chain.config.tokens]
    query = {"fromBlock": "0x0", "toBlock": hex(chain.head()), "address": tokens, "topics": [decode.TRANSFER_TOPIC]}
    found = chain.rpc("eth_getLogs", query)
    return {
        (item["transactionHash"].lower(), int(item["logIndex"], 16))
        for item in found
        if decode.topic_address(item["topics"][2]) in watched
    }


class Payers(threading.Thread):
    """Sends transfers to random deposit addresses (and elsewhere) until stopped."""

    def __init__(self, chain: Chain, addresses: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.chain, self.addresses, self.random = chain, addresses, random.Random(seed)
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            token = self.random.choice([self.chain.stack.usdc, self.chain.stack.dai])
            to = self.random.choice([*self.addresses, self.chain.stack.payers[2]])
            self.chain.transfer(token, to, self.random.randint(1, 10**6), payer=self.random.randint(0, 1))
            if self.random.random() < 0.2:
                self.chain.mine(self.random.randint(1, 3))
            self.sent += 1
            time.sleep(0.02)


async def assert_matches_full_scan(db: Database, chain: Chain, addresses: list[str]) -> None:
    chain.mine(CONFIRMATIONS)
    follower = Follower(db, chain.config)
    async with follower.leading(wait=False):
        await follower.sync()
    await follower.rpc.aclose()
    found = await observations(db)
    truth = full_scan(chain, set(addresses))
    assert {(o["tx_hash"], o["log_index"]) for o in found} == truth
    assert all(o["status"] == "confirmed" for o in found)
    assert all(o["confirmed_generation"] == 1 for o in found)  # confirmed once each
    assert all(o["generation"] == 1 for o in found)  # no reorg here: each log stored once


def start_watcher(chain: Chain, database_url: str, config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DATABASE_URL": database_url,
        "STABLEGATE_CHAINS_FILE": str(config_path),
        "STABLEGATE_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed process leaves no buffered lines behind
    }
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "stablegate", "watcher", "--metrics-port", "0"],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )


def leaders(log_path: Path) -> int:
    return log_path.read_text().count("chain.leader_acquired") if log_path.exists() else 0


async def until_leading(log_path: Path, before: int, watcher: subprocess.Popen[bytes]) -> None:
    """Wait until this watcher took the lock (its start-up imports take a few seconds)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if leaders(log_path) > before:
            return
        assert watcher.poll() is None, "the watcher exited; see watcher.log"
        await asyncio.sleep(0.05)
    raise AssertionError("the watcher never took the lead")


def chains_file(chain: Chain, path: Path) -> Path:
    config = asdict(chain.config) | {"max_range_blocks": 3, "poll_interval_ms": 50}
    path.write_text(json.dumps([config]))
    return path


async def test_sigkill_mid_range_many_times_loses_and_duplicates_nothing(
    db: Database,
    chain: Chain,
    clean_chain_tables: None,
    new_deposit: Callable[[], Any],
    database_url: str,
    tmp_path: Path,
) -> None:
    addresses = [(await new_deposit())[0] for _ in range(DEPOSITS)]
    payers = Payers(chain, addresses, seed=7)
    payers.start()
    config = chains_file(chain, tmp_path / "chains.json")
    rng = random.Random(11)
    try:
        for _ in range(KILLS):
            log_path = tmp_path / "watcher.log"
            leading_before = leaders(log_path)
            watcher = start_watcher(chain, database_url, config, log_path)
            await until_leading(log_path, leading_before, watcher)
            await asyncio.sleep(rng.uniform(0.05, 1.5))  # the kill lands while it follows
            watcher.send_signal(signal.SIGKILL)
            watcher.wait()
    finally:
        payers.stopped.set()
        payers.join()
    log_text = (tmp_path / "watcher.log").read_text()
    assert "chain.range_ingested" in log_text, log_text[-3000:]
    assert payers.sent > 20
    await assert_matches_full_scan(db, chain, addresses)


async def test_faulty_and_lagging_providers_cause_no_gap_and_no_duplicate(
    db: Database, chain: Chain, clean_chain_tables: None, new_deposit: Callable[[], Any]
) -> None:
    addresses = [(await new_deposit())[0] for _ in range(DEPOSITS)]
    faults = Faults(
        seed=3,
        timeout_rate=0.05,
        timeout_s=2.0,
        http_429_rate=0.1,
        http_5xx_rate=0.1,
        max_log_range_blocks=4,
        drop_connection_rate=0.03,
    )
    with RpcProxy(chain.anvil.url, Faults(seed=5, lag_blocks=6)) as lagging, RpcProxy(chain.anvil.url, faults) as bad:
        # The lagging provider is listed first: it answers quickly and is wrong by silence.
        rpc = RpcClient("local", [lagging.url, bad.url], timeout_s=1.0)
        follower = Follower(db, chain.config, rpc)
        payers = Payers(chain, addresses, seed=13)
        payers.start()
        try:
            async with follower.leading(wait=False):
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    await follower.step()
        finally:
            payers.stopped.set()
            payers.join()
        await rpc.aclose()
        fired = bad.stats
    assert payers.sent > 20
    assert sum(fired.values()) > 0, fired
    await assert_matches_full_scan(db, chain, addresses)
