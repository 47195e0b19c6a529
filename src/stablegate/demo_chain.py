"""The demo's on-chain part: a local anvil with our contracts, both ways to pay, the block
follower turning them into confirmed observations, a look-alike token ignored, a sweep.

Every step acts on the real chain (web3 transactions signed with anvil's dev keys) and
checks what the database and the chain say afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account
from sqlalchemy import text
from web3 import Web3

import stablegate.rails.service as rails
from stablegate import localnet
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.rails import contracts
from stablegate.rails.deploy import connect
from stablegate.rails.deposits import deposit_salt
from stablegate.rails.intents import intent_args
from stablegate.rails.service import IntentTerms
from stablegate.rails.sweeps import sweep

USDC = 10**6
DEMO_CHAIN_ID = 31338
PAYER_KEY = DEV_PRIVATE_KEYS[3]
OPERATOR_KEY = DEV_PRIVATE_KEYS[0]
Check = Callable[[str, bool, str], None]


class Wallet:
    """The payer's wallet, as a script: signs and sends, waits for the receipt."""

    def __init__(self, w3: Web3, chain_id: int) -> None:
        self.w3, self.chain_id = w3, chain_id
        self.address = Account.from_key(PAYER_KEY).address

    def send(self, call: Any) -> Any:
        nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "gas": 300_000, "chainId": self.chain_id}
        tx = call.build_transaction({"from": self.address, "nonce": nonce, **fees})
        tx_hash = self.w3.eth.send_raw_transaction(Account.sign_transaction(tx, PAYER_KEY).raw_transaction)
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)

    def token(self, address: str) -> Any:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=contracts.abi("TestStablecoin"))


async def _observation(db: Database, **where: str) -> Any:
    clause = " AND ".join(f"{column} = :{column}" for column in where)
    async with db.session() as session:
        rows = await session.execute(text(f"SELECT * FROM chain_observations WHERE {clause}"), where)
        return rows.mappings().first()


async def run(db: Database, data_dir: Path, merchant_id: str, check: Check) -> None:
    """The demo's chain is its own (chain id 31338, state in the data dir): each run goes on
    where the last one stopped, so the follower's cursor in the same database stays true,
    and `stablegate dev`'s chain (31337) is never confused with it."""
    state = data_dir / "demo-anvil-state.json"
    with localnet.running(state_path=state, block_time_s=None, chain_id=DEMO_CHAIN_ID, name="demo") as net:
        w3, stack = connect(net.anvil.url), net.stack
        wallet = Wallet(w3, stack.chain_id)
        check("local chain", True, f"anvil {net.anvil.url}, contracts at {stack.router[:10]}…, payers funded")
        follower = Follower(db, net.chain)
        async with follower.leading(wait=False):
            address = await _deposit_payment(db, net, wallet, follower, f"{merchant_id}:order-1001", check)
            await _router_payment(db, net, wallet, follower, f"{merchant_id}:order-1002", check)
            _sweep(net, wallet, address, f"{merchant_id}:order-1001", check)
        await follower.rpc.aclose()


async def _settle(wallet: Wallet, follower: Follower) -> None:
    """Mine the confirmation depth and let the follower read it."""
    wallet.w3.provider.make_request("anvil_mine", [hex(localnet.LOCAL_CONFIRMATIONS)])  # type: ignore[arg-type]
    await follower.sync()


async def _deposit_payment(
    db: Database, net: localnet.LocalNet, wallet: Wallet, follower: Follower, ref: str, check: Check
) -> str:
    async with db.session() as session:
        address = await rails.create_deposit_address(session, net.chain, ref)
    code = wallet.w3.eth.get_code(Web3.to_checksum_address(address))
    check("deposit address (CREATE2)", code == b"", f"{address} — nothing deployed there yet")
    wallet.send(wallet.token(net.stack.fake_usdc).functions.transfer(Web3.to_checksum_address(address), 25 * USDC))
    pay_to = Web3.to_checksum_address(address)
    receipt = wallet.send(wallet.token(net.stack.usdc).functions.transfer(pay_to, 25 * USDC))
    tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
    await follower.sync()
    seen = await _observation(db, tx_hash=tx_hash)
    check("transfer seen", seen is not None and seen["status"] == "seen", f"25 USDC in block {receipt['blockNumber']}")
    await _settle(wallet, follower)
    confirmed = await _observation(db, tx_hash=tx_hash)
    ok = confirmed is not None and confirmed["status"] == "confirmed" and confirmed["owner_ref"] == ref
    check("transfer confirmed", ok, f"after {localnet.LOCAL_CONFIRMATIONS} blocks, for {ref}")
    fake = await _observation(db, token=net.stack.fake_usdc.lower())
    check("look-alike USDC ignored", fake is None, f"25 'USDC' from {net.stack.fake_usdc[:10]}… not counted")
    return address


async def _router_payment(
    db: Database, net: localnet.LocalNet, wallet: Wallet, follower: Follower, ref: str, check: Check
) -> None:
    stack = net.stack
    deadline_s = int(time.time()) + 1800
    terms = IntentTerms(stack.usdc, 40 * USDC, 40 * USDC // 100, stack.treasury, stack.fee_recipient, deadline_s)
    async with db.session() as session:
        signed = await rails.create_intent(session, net.chain, ref, terms, OPERATOR_KEY)
    router = wallet.w3.eth.contract(address=Web3.to_checksum_address(stack.router), abi=contracts.abi("PaymentRouter"))
    wallet.send(wallet.token(stack.usdc).functions.approve(router.address, terms.amount))
    paid = wallet.send(router.functions.pay(intent_args(signed.intent), signed.signature))
    await _settle(wallet, follower)
    intent_id = "0x" + signed.intent.id.hex()
    async with db.session() as session:
        status = await session.scalar(text("SELECT status FROM rails_intents WHERE id = :id"), {"id": intent_id})
    check("intent paid via router", paid["status"] == 1 and status == "paid", "40 USDC, 0.40 fee split atomically")
    again = wallet.send(router.functions.pay(intent_args(signed.intent), signed.signature))
    check("same intent twice", again["status"] == 0, "second payment reverted (AlreadyPaid)")


def _sweep(net: localnet.LocalNet, wallet: Wallet, address: str, ref: str, check: Check) -> None:
    token = wallet.token(net.stack.usdc)
    before = token.functions.balanceOf(net.stack.treasury).call()
    sweep(net.anvil.url, net.stack.factory, [deposit_salt(ref)], [net.stack.usdc], OPERATOR_KEY)
    moved = token.functions.balanceOf(net.stack.treasury).call() - before
    check("sweep to treasury", moved == 25 * USDC, f"{moved / USDC:.2f} USDC moved; forwarder deployed by the sweep")
