"""A deployed local stack on a fresh anvil, a follower for it, and small chain helpers."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import text
from web3 import Web3

from stablegate import localnet
from stablegate.chains import service as chains
from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.chains.follower import Follower
from stablegate.chains.registry import ChainConfig
from stablegate.chains.repository import OBSERVATION_COLUMNS
from stablegate.chains.service import ChainEvent
from stablegate.db import Database
from stablegate.rails import contracts
from stablegate.rails.deploy import LocalStack, deploy_local
from stablegate.rails.deposits import deposit_address, deposit_salt

CONFIRMATIONS = localnet.LOCAL_CONFIRMATIONS
_refs = itertools.count()


@dataclass
class Chain:
    """A test's view of its anvil: web3, the deployed stack and token helpers."""

    anvil: Anvil
    w3: Web3
    stack: LocalStack
    config: ChainConfig

    def rpc(self, method: str, *params: Any) -> Any:
        return self.w3.provider.make_request(method, list(params))["result"]  # type: ignore[arg-type]

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", hex(blocks))

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def token(self, address: str) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=contracts.abi("TestStablecoin"))

    def signed_transfer(self, token: str, to: str, amount: int, payer: int = 0, nonce: int | None = None) -> bytes:
        """A signed ERC-20 transfer from payer account `payer` (0 = the first payer)."""
        key = DEV_PRIVATE_KEYS[3 + payer]
        sender = Account.from_key(key).address
        tx = (
            self.token(token)
            .functions.transfer(Web3.to_checksum_address(to), amount)
            .build_transaction(
                {
                    "from": sender,
                    "nonce": self.w3.eth.get_transaction_count(sender, "pending") if nonce is None else nonce,
                    "gas": 100_000,
                    "maxFeePerGas": 10**10,
                    "maxPriorityFeePerGas": 10**9,
                    "chainId": self.stack.chain_id,
                }
            )
        )
        return bytes(Account.sign_transaction(tx, key).raw_transaction)

    def send_raw(self, raw: bytes) -> str:
        return "0x" + self.w3.eth.send_raw_transaction(raw).hex().removeprefix("0x")

    def transfer(self, token: str, to: str, amount: int, payer: int = 0) -> str:
        tx_hash = self.send_raw(self.signed_transfer(token, to, amount, payer))
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1
        return tx_hash


@pytest.fixture
def chain(anvil: Anvil) -> Chain:
    stack = deploy_local(anvil.url)
    config = localnet.chain_config(stack, anvil.url, max_range_blocks=50, poll_interval_ms=100)
    return Chain(anvil, Web3(Web3.HTTPProvider(anvil.url)), stack, config)


@pytest.fixture
async def clean_chain_tables(db: Database) -> None:
    """Each test runs on its own anvil (chain id 31337 every time): forget earlier runs."""
    async with db.session() as session:
        await session.execute(
            text(
                "TRUNCATE chain_events, chain_reorgs, chain_cursors, chain_blocks, chain_watched_addresses,"
                " rails_intents, rails_deposit_addresses, chain_observations"
            )
        )


@pytest.fixture
async def follower(db: Database, chain: Chain, clean_chain_tables: None) -> AsyncIterator[Follower]:
    f = Follower(db, chain.config)
    async with f.leading(wait=False):
        yield f
    await f.rpc.aclose()


@dataclass
class Heard:
    """Every chain event a subscriber heard, in order."""

    events: list[ChainEvent] = field(default_factory=list)

    def kinds(self, observation_id: int | None = None) -> list[str]:
        return [e.kind for e in self.events if observation_id is None or e.observation_id == observation_id]


@pytest.fixture
def heard() -> Iterator[Heard]:
    record = Heard()

    async def handler(_session: Any, event: ChainEvent) -> None:
        record.events.append(event)

    chains.subscribe(handler)
    yield record
    chains.unsubscribe(handler)


@pytest.fixture
def new_deposit(db: Database, chain: Chain) -> Callable[[], Any]:
    """Registers a fresh deposit address (CREATE2, not deployed) and returns (address, ref)."""

    async def make() -> tuple[str, str]:
        ref = f"pay_test_{next(_refs)}_{id(chain)}"
        address = deposit_address(chain.stack.factory, chain.stack.forwarder_implementation, deposit_salt(ref))
        async with db.session() as session:
            await chains.watch_address(session, chain.stack.chain_id, address, ref)
        return address.lower(), ref

    return make


async def observations(db: Database) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.execute(
            text(f"SELECT {OBSERVATION_COLUMNS} FROM chain_observations o ORDER BY block_number, log_index")
        )
        return [dict(r._mapping) for r in rows]
