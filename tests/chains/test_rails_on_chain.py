"""Both ways to pay, end to end on a real anvil: an intent paid through the router is
detected, confirmed at depth and marks the intent paid; a deposit address receives a plain
transfer, is detected, and a sweep moves the funds to the treasury."""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account
from sqlalchemy import text
from web3 import Web3

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.rails import contracts
from stablegate.rails import service as rails
from stablegate.rails.deposits import deposit_salt
from stablegate.rails.intents import intent_args
from stablegate.rails.service import IntentTerms, SignedIntent
from stablegate.rails.sweeps import sweep
from tests.chains.conftest import CONFIRMATIONS, Chain, Heard, observations

USDC = 10**6


def pay(chain: Chain, signed: SignedIntent, payer: int = 0) -> Any:
    """The payer's wallet: approve the router, then pay the signed intent."""
    key = DEV_PRIVATE_KEYS[3 + payer]
    sender = Account.from_key(key).address
    w3 = chain.w3
    fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": chain.stack.chain_id, "gas": 300_000}
    token = chain.token(signed.intent.token)
    router = w3.eth.contract(address=Web3.to_checksum_address(signed.router), abi=contracts.abi("PaymentRouter"))
    for call in (
        token.functions.approve(router.address, signed.intent.amount),
        router.functions.pay(intent_args(signed.intent), signed.signature),
    ):
        nonce = w3.eth.get_transaction_count(sender, "pending")
        tx = call.build_transaction({"from": sender, "nonce": nonce, **fees})
        tx_hash = w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    return receipt  # the payment's: status 1 paid, 0 reverted (the approve always succeeds)


async def new_intent(db: Database, chain: Chain, ref: str, amount: int, fee: int) -> SignedIntent:
    terms = IntentTerms(
        token=chain.stack.usdc,
        amount=amount,
        fee=fee,
        recipient=chain.stack.treasury,
        fee_recipient=chain.stack.fee_recipient,
        deadline_s=int(time.time()) + 3600,
    )
    async with db.session() as session:
        return await rails.create_intent(session, chain.config, ref, terms, DEV_PRIVATE_KEYS[0])


async def intent_status(db: Database, signed: SignedIntent) -> str:
    async with db.session() as session:
        row = await session.execute(
            text("SELECT status FROM rails_intents WHERE id = :id"), {"id": "0x" + signed.intent.id.hex()}
        )
        return str(row.scalar_one())


async def test_intent_paid_through_the_router_is_confirmed_and_marked_paid(
    db: Database, chain: Chain, follower: Follower, heard: Heard
) -> None:
    signed = await new_intent(db, chain, "pay_router_1", 40 * USDC, 1 * USDC)
    treasury_before = chain.token(chain.stack.usdc).functions.balanceOf(chain.stack.treasury).call()
    assert pay(chain, signed)["status"] == 1
    await follower.sync()
    [seen] = await observations(db)
    assert (seen["kind"], int(seen["amount"]), int(seen["fee"])) == ("intent_paid", 40 * USDC, 1 * USDC)
    assert seen["intent_id"] == "0x" + signed.intent.id.hex()
    assert await intent_status(db, signed) == "open"  # seen is not paid

    chain.mine(CONFIRMATIONS)
    await follower.sync()
    assert await intent_status(db, signed) == "paid"
    assert heard.kinds() == ["seen", "confirmed"]
    treasury_after = chain.token(chain.stack.usdc).functions.balanceOf(chain.stack.treasury).call()
    assert treasury_after - treasury_before == 39 * USDC  # merchant share; the fee went elsewhere

    assert pay(chain, signed, payer=1)["status"] == 0  # the same intent a second time: reverted
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    assert len(await observations(db)) == 1 and heard.kinds() == ["seen", "confirmed"]


async def test_deposit_address_detected_then_swept_to_the_treasury(
    db: Database, chain: Chain, follower: Follower
) -> None:
    async with db.session() as session:
        address = await rails.create_deposit_address(session, chain.config, "pay_deposit_1")
        again = await rails.create_deposit_address(session, chain.config, "pay_deposit_1")
    assert again == address and chain.w3.eth.get_code(Web3.to_checksum_address(address)) == b""
    chain.transfer(chain.stack.usdc, address, 15 * USDC)
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    [found] = await observations(db)
    assert (found["status"], found["owner_ref"], int(found["amount"])) == ("confirmed", "pay_deposit_1", 15 * USDC)

    token = chain.token(chain.stack.usdc)
    before = token.functions.balanceOf(chain.stack.treasury).call()
    sweep(
        chain.anvil.url, chain.stack.factory, [deposit_salt("pay_deposit_1")], [chain.stack.usdc], DEV_PRIVATE_KEYS[0]
    )
    assert token.functions.balanceOf(chain.stack.treasury).call() - before == 15 * USDC
    assert token.functions.balanceOf(Web3.to_checksum_address(address)).call() == 0
    await follower.sync()  # the sweep is a transfer *from* the address: not a payment
    assert len(await observations(db)) == 1
