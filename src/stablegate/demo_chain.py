"""The demo's chain (design 0007, "The demo"): a fresh anvil per run with our contracts and
test tokens, a small async JSON-RPC client, and the payer's wallet as a script.

Every run gets a chain id no earlier run used in this database. The follower's cursor,
the transaction manager's nonces and the ledger's token assets are keyed by chain id, so
a fresh chain under an old id would contradict what the database remembers of the old
one; and `stablegate dev`'s chain (31337) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from eth_abi.abi import encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import text

from stablegate import localnet
from stablegate.chains.anvil import DEV_PRIVATE_KEYS, LOCAL_CHAIN_ID
from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.db import Database

FIRST_CHAIN_ID = LOCAL_CHAIN_ID + 1
LAST_CHAIN_ID = FIRST_CHAIN_ID + 999_999
# One demo at a time per database picks its chain id (pg_advisory_lock key: "sgdemo").
CHAIN_ID_LOCK = int.from_bytes(b"sgdemo", "big")
# What remembers a chain id: the follower's cursor, watched deposit addresses, ledger
# token assets and the transaction manager's nonces.
USED_CHAIN_IDS_SQL = """
SELECT max(chain_id) FROM (
    SELECT max(chain_id) AS chain_id FROM chain_cursors WHERE chain_id BETWEEN :first AND :last
    UNION ALL SELECT max(chain_id) FROM chain_watched_addresses WHERE chain_id BETWEEN :first AND :last
    UNION ALL SELECT max(chain_id) FROM ledger_assets WHERE chain_id BETWEEN :first AND :last
    UNION ALL SELECT max(chain_id) FROM tx_signers WHERE chain_id BETWEEN :first AND :last
) AS used
"""
PAYER_KEY = DEV_PRIVATE_KEYS[3]  # anvil's public dev key #3: 1,000,000 of each test token
POLL_INTERVAL_MS = 100  # the follower's; the demo mines blocks as it waits
RPC_TIMEOUT_S = 10.0
RECEIPT_TIMEOUT_S = 30.0
RECEIPT_POLL_S = 0.02  # anvil mines a transaction on arrival
GAS_LIMIT = 300_000  # approve ~46k, router pay ~100k, a transfer ~52k
MAX_FEE_PER_GAS_WEI = 50 * 10**9
PRIORITY_FEE_WEI = 10**9

INTENT_TUPLE = "(bytes32,address,uint256,uint256,address,address,uint256)"
TRANSFER = keccak(text="transfer(address,uint256)")[:4]
APPROVE = keccak(text="approve(address,uint256)")[:4]
BALANCE_OF = keccak(text="balanceOf(address)")[:4]
PAY = keccak(text=f"pay({INTENT_TUPLE},bytes)")[:4]


@contextlib.asynccontextmanager
async def claimed_chain_id(db: Database) -> AsyncIterator[int]:
    """The next chain id after every one this database has seen, held (an advisory lock)
    until the block exits, so a concurrent demo on the same database waits its turn."""
    async with db.engine.connect() as conn:
        try:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": CHAIN_ID_LOCK})
            used = await conn.scalar(text(USED_CHAIN_IDS_SQL), {"first": FIRST_CHAIN_ID, "last": LAST_CHAIN_ID})
            await conn.commit()
            chain_id = FIRST_CHAIN_ID if used is None else int(used) + 1
            assert FIRST_CHAIN_ID <= chain_id <= LAST_CHAIN_ID, "demo chain ids used up: use a fresh database"
            yield chain_id
        finally:
            await conn.invalidate()  # the session lock goes with the connection


@dataclass(frozen=True)
class Sent:
    """A mined transaction."""

    tx_hash: str
    block: int
    ok: bool


class Rpc:
    """Just enough JSON-RPC for the demo, without blocking the event loop the API server,
    the worker, the follower and the sender share."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(timeout=RPC_TIMEOUT_S)

    async def call(self, method: str, *params: Any) -> Any:
        reply = await self.client.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        body = reply.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error']}")
        return body["result"]

    async def mine(self, blocks: int = 1) -> None:
        await self.call("anvil_mine", hex(blocks))

    async def balance(self, token: str, holder: str) -> int:
        data = BALANCE_OF + encode(["address"], [holder])
        return int(await self.call("eth_call", {"to": token, "data": "0x" + data.hex()}, "latest"), 16)

    async def receipt(self, tx_hash: str) -> Sent:
        deadline = time.monotonic() + RECEIPT_TIMEOUT_S
        while time.monotonic() < deadline:
            found = await self.call("eth_getTransactionReceipt", tx_hash)
            if found is not None:
                return Sent(tx_hash, int(found["blockNumber"], 16), int(found["status"], 16) == 1)
            await asyncio.sleep(RECEIPT_POLL_S)
        raise TimeoutError(f"no receipt for {tx_hash} after {RECEIPT_TIMEOUT_S:g}s")

    async def aclose(self) -> None:
        await self.client.aclose()


class Wallet:
    """The payer's wallet, as a script: it signs locally, sends, and waits for the receipt."""

    def __init__(self, rpc: Rpc, chain_id: int, private_key: str = PAYER_KEY) -> None:
        self.rpc, self.chain_id, self.private_key = rpc, chain_id, private_key
        self.address = to_checksum_address(Account.from_key(private_key).address)

    async def send(self, to: str, data: bytes) -> Sent:
        nonce = int(await self.rpc.call("eth_getTransactionCount", self.address, "pending"), 16)
        tx = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": to_checksum_address(to),
            "value": 0,
            "data": data,
            "gas": GAS_LIMIT,
            "maxFeePerGas": MAX_FEE_PER_GAS_WEI,
            "maxPriorityFeePerGas": PRIORITY_FEE_WEI,
        }
        signed = Account.sign_transaction(tx, self.private_key)
        tx_hash = await self.rpc.call("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        return await self.rpc.receipt(tx_hash)

    async def transfer(self, token: str, to: str, units: int) -> Sent:
        return await self.send(token, TRANSFER + encode(["address", "uint256"], [to, units]))

    async def approve(self, token: str, spender: str, units: int) -> Sent:
        return await self.send(token, APPROVE + encode(["address", "uint256"], [spender, units]))

    async def pay(self, router: str, intent: dict[str, Any], signature: str) -> Sent:
        """PaymentRouter.pay(intent, signature): the signed intent exactly as the API gave it."""
        fields = (
            bytes.fromhex(intent["id"][2:]),
            intent["token"],
            int(intent["amount"]),
            int(intent["fee"]),
            intent["recipient"],
            intent["feeRecipient"],
            int(intent["deadline"]),
        )
        data = PAY + encode([INTENT_TUPLE, "bytes"], [fields, bytes.fromhex(signature[2:])])
        return await self.send(router, data)


@dataclass(frozen=True)
class DemoChain:
    net: localnet.LocalNet
    config: ChainConfig  # this run's chain: its own id, name and ledger assets
    rpc: Rpc

    @property
    def usdc(self) -> TokenConfig:
        return self.config.tokens[0]


@contextlib.asynccontextmanager
async def running(chain_id: int) -> AsyncIterator[DemoChain]:
    """A fresh anvil under `chain_id` with our stack deployed (before anything else runs:
    the deployment blocks). It mines a block per transaction; confirmations come from the
    blocks the demo mines while it waits."""
    name = f"demo-{chain_id - LOCAL_CHAIN_ID}"
    with localnet.running(block_time_s=None, chain_id=chain_id, name=name) as net:
        s = net.stack
        tokens = (TokenConfig("USDC", s.usdc, 6, f"USDC.{name}"), TokenConfig("DAI", s.dai, 18, f"DAI.{name}"))
        config = dataclasses.replace(net.chain, tokens=tokens, poll_interval_ms=POLL_INTERVAL_MS)
        rpc = Rpc(net.anvil.url)
        try:
            yield DemoChain(net, config, rpc)
        finally:
            await rpc.aclose()
