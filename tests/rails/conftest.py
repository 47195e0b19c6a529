"""A deployed local stack on a fresh anvil per test, and helpers to call it as its users do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.types import TxReceipt

from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.rails import contracts
from stablegate.rails.deploy import LocalStack, Sender, connect, deploy_local
from stablegate.rails.intents import Intent, intent_id, sign_intent

OPERATOR_KEY = DEV_PRIVATE_KEYS[0]
PAYER_KEY = DEV_PRIVATE_KEYS[3]
OTHER_PAYER_KEY = DEV_PRIVATE_KEYS[4]
MERCHANT = Web3.to_checksum_address("0x" + "4d" * 20)
USDC = 10**6
DAI = 10**18
FIXED_GAS = 1_000_000  # for transactions expected to revert: an estimate would refuse to send them
CONTRACT_NAMES = (
    "TestStablecoin",
    "PaymentRouter",
    "ForwarderFactory",
    "DepositForwarder",
    "Disperse",
    "MockPriceFeed",
)


def _error_selectors() -> dict[str, str]:
    """4-byte selector (0x-hex) → custom error name, over all our contracts."""
    selectors = {}
    for name in CONTRACT_NAMES:
        for item in contracts.abi(name):
            if item["type"] == "error":
                signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                selectors["0x" + keccak(text=signature)[:4].hex()] = item["name"]
    return selectors


ERRORS = _error_selectors()


@dataclass
class Rails:
    anvil: Anvil
    w3: Web3
    stack: LocalStack

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=contracts.abi(name))

    def token(self, address: str) -> Contract:
        return self.contract("TestStablecoin", address)

    @property
    def router(self) -> Contract:
        return self.contract("PaymentRouter", self.stack.router)

    @property
    def factory(self) -> Contract:
        return self.contract("ForwarderFactory", self.stack.factory)

    def balance(self, token: str, holder: str) -> int:
        return int(self.token(token).functions.balanceOf(Web3.to_checksum_address(holder)).call())

    def send(self, key: str, call: Any, gas: int | None = None) -> TxReceipt:
        """Sends as `key`; with `gas` given, sends without an estimate (and returns even a
        reverted receipt)."""
        sender = Sender(self.w3, key)
        if gas is None:
            return sender.transact(call)
        tx = dict(call.build_transaction(sender.params() | {"gas": gas}))
        signed = Account.sign_transaction(tx, key)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)

    def revert_error(self, call: Any, sender: str) -> str:
        """The custom error `call` reverts with when sent by `sender` (fails if it succeeds)."""
        with pytest.raises(ContractCustomError) as raised:
            call.call({"from": Web3.to_checksum_address(sender)})
        data = raised.value.data
        assert isinstance(data, str)
        return ERRORS.get(data[:10], data)

    def rpc(self, method: str, *params: Any) -> Any:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        assert "error" not in reply, reply
        return reply["result"]

    def now_s(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", seconds)
        self.rpc("evm_mine")

    def intent(self, token: str, amount: int, fee: int, ref: str | None = None, ttl_s: int = 900) -> Intent:
        ref = ref or f"pay_{time.monotonic_ns()}"
        return Intent(
            id=intent_id(ref),
            token=token,
            amount=amount,
            fee=fee,
            recipient=MERCHANT,
            fee_recipient=self.stack.fee_recipient,
            deadline=self.now_s() + ttl_s,
        )

    def sign(self, intent: Intent, key: str = OPERATOR_KEY) -> bytes:
        return sign_intent(intent, chain_id=self.stack.chain_id, router=self.stack.router, private_key=key)

    def approve(self, key: str, token: str, spender: str, amount: int) -> None:
        self.send(key, self.token(token).functions.approve(Web3.to_checksum_address(spender), amount))


@pytest.fixture
def rails(anvil: Anvil) -> Rails:
    stack = deploy_local(anvil.url)
    return Rails(anvil, connect(anvil.url), stack)


def address_of(key: str) -> str:
    return str(Account.from_key(key).address)
