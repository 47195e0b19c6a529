"""Payments on a real anvil: a deployed stack, a follower, the payments context for it, and
helpers that pay the way a payer would (wallet through the router, or a plain transfer)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import text
from web3 import Web3

import stablegate.payments.receipts  # noqa: F401 (subscribes to chain events)
from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.chains.follower import Follower
from stablegate.config import Settings
from stablegate.db import Database
from stablegate.merchants.service import SCOPES, Principal
from stablegate.payments import service
from stablegate.payments.schemas import Payment, PaymentCreate
from stablegate.rails import contracts
from tests.chains.conftest import CONFIRMATIONS, Chain, chain, clean_chain_tables, follower  # noqa: F401
from tests.conftest import Tenant

USDC = 10**6
DAI = 10**18


@pytest.fixture
def ctx(chain: Chain) -> service.Context:  # noqa: F811
    settings = Settings(intent_signer_key=DEV_PRIVATE_KEYS[0], fee_bps=100)
    return service.Context.from_settings(settings, [chain.config])


@pytest.fixture
def principal(tenant: Tenant) -> Principal:
    return Principal(
        merchant_id=tenant.merchant_id, mode="test", key_id=tenant.test_key_id, kind="secret", scopes=SCOPES
    )


async def create(db: Database, principal: Principal, ctx: service.Context, **fields: Any) -> Payment:
    params = PaymentCreate.model_validate({"amount": "25.00", "currency": "USD"} | fields)
    async with db.session() as session:
        return await service.create(session, principal, params, ctx)


async def set_expiry(db: Database, payment_id: str, sql_time: str) -> None:
    """Move the payment's expiry (the clock cannot be moved; the chain decides the rest)."""
    async with db.session() as session:
        await session.execute(text(f"UPDATE payments SET expires_at = {sql_time} WHERE id = :id"), {"id": payment_id})


async def expire_after_grace(db: Database, chain_follower: Follower, payment_id: str) -> None:
    """As a minute after the expiry in production: the expiry moved back past the job's
    grace, the follower at the chain's head, the job run (over every test's payments: a
    test checks its own payment's status, not the job's count)."""
    await set_expiry(db, payment_id, f"now() - interval '{service.EXPIRY_GRACE_S + 1} seconds'")
    await chain_follower.sync()
    async with db.session() as session:
        await service.expire_due(session)


async def fetch(db: Database, principal: Principal, payment_id: str) -> Payment:
    async with db.session() as session:
        return await service.retrieve(session, principal, payment_id)


def option(payment: Payment, asset: str = "USDC") -> Any:
    return next(o for o in payment.options if o.asset == asset)


def pay_contract(chain: Chain, payment: Payment, asset: str = "USDC", payer: int = 0) -> Any:  # noqa: F811
    """The payer's wallet: approve the router, then pay the signed intent."""
    instructions = option(payment, asset).instructions.contract
    assert instructions is not None
    key = DEV_PRIVATE_KEYS[3 + payer]
    sender = Account.from_key(key).address
    w3 = chain.w3
    intent = instructions.intent
    args = (
        bytes.fromhex(intent["id"][2:]),
        intent["token"],
        int(intent["amount"]),
        int(intent["fee"]),
        intent["recipient"],
        intent["feeRecipient"],
        int(intent["deadline"]),
    )
    fees = {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "chainId": chain.stack.chain_id, "gas": 300_000}
    token = chain.token(intent["token"])
    router = w3.eth.contract(address=Web3.to_checksum_address(instructions.router), abi=contracts.abi("PaymentRouter"))
    signature = bytes.fromhex(instructions.signature[2:])
    receipt = None
    for call in (token.functions.approve(router.address, args[2]), router.functions.pay(args, signature)):
        nonce = w3.eth.get_transaction_count(sender, "pending")
        tx = call.build_transaction({"from": sender, "nonce": nonce, **fees})
        tx_hash = w3.eth.send_raw_transaction(Account.sign_transaction(tx, key).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    return receipt


def pay_transfer(chain: Chain, payment: Payment, units: int, asset: str = "USDC", payer: int = 0) -> str:  # noqa: F811
    o = option(payment, asset)
    return chain.transfer(o.token, o.instructions.deposit_address.address, units, payer)


async def balances(db: Database, tenant: Tenant) -> dict[str, tuple[int, int]]:
    """Per ledger asset: (available, pending) for the tenant's test mode."""
    from stablegate.ledger import service as ledger

    async with db.session() as session:
        return {
            b.asset: (b.available, b.pending)
            for b in await ledger.merchant_balances(session, tenant.merchant_id, "test")
        }


async def event_types(db: Database, payment_id: str) -> list[str]:
    async with db.session() as session:
        rows = await session.execute(
            text("SELECT type FROM events WHERE object_id = :id ORDER BY id"), {"id": payment_id}
        )
        return [r[0] for r in rows]


__all__ = ["CONFIRMATIONS", "DAI", "USDC"]
