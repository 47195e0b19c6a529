"""The local stack (design 0003): our contracts and test stablecoins on a fresh anvil,
deployed from anvil's public development accounts in a fixed order, so every fresh local
chain has the same addresses (`deployed_addresses` predicts them; `deploy_local` checks).

Accounts (stablegate.chains.anvil.DEV_PRIVATE_KEYS): 0 deploys and is the operator and the
intent signer, 1 is the treasury, 2 the fee recipient, 3..9 are payers with 1,000,000 of
each test token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import RPCEndpoint, TxReceipt

from stablegate.chains.anvil import DEV_PRIVATE_KEYS, LOCAL_CHAIN_ID
from stablegate.rails import contracts

RECEIPT_TIMEOUT_S = 30.0
RECEIPT_POLL_S = 0.01  # anvil mines on arrival: the receipt is there at once
PRIORITY_FEE_WEI = 10**9
GAS_HEADROOM_PERCENT = 20  # added to the node's estimate
MINT_WHOLE_TOKENS = 1_000_000
PRICE_FEED_DECIMALS = 8
PRICE_FEED_ONE_USD = 10**PRICE_FEED_DECIMALS
MAX_NONCE = 2**64 - 1

# (name in LocalStack, contract) in deployment order: the deployer's nonces 0, 1, 2, ...
DEPLOYMENT_ORDER = (
    ("usdc", "TestStablecoin"),
    ("dai", "TestStablecoin"),
    ("fake_usdc", "TestStablecoin"),
    ("router", "PaymentRouter"),
    ("factory", "ForwarderFactory"),
    ("price_feed", "MockPriceFeed"),
    ("disperse", "Disperse"),
)


class TransactionFailed(RuntimeError):
    """A transaction was mined with status 0."""


@dataclass(frozen=True)
class LocalStack:
    """Checksummed addresses of one local deployment."""

    chain_id: int
    usdc: str
    dai: str
    fake_usdc: str  # a look-alike "USD Coin"/"USDC" at another address: never a payment
    router: str
    factory: str
    forwarder_implementation: str
    price_feed: str
    disperse: str
    deployer: str  # also the sweep operator and the intent signer
    treasury: str
    fee_recipient: str
    payers: tuple[str, ...]


class Sender:
    """Signs transactions from one key, counts its nonce locally (no gaps, no reuse within
    one run) and waits for each receipt, failing loudly on a revert. For local chains and
    the operator's simple calls; it does not replace stuck transactions or survive a crash
    between broadcast and receipt (the settlement transaction manager's job)."""

    def __init__(self, w3: Web3, private_key: str) -> None:
        self.w3 = w3
        self.private_key = private_key
        self.address = to_checksum_address(Account.from_key(private_key).address)
        self.chain_id = int(w3.eth.chain_id)
        self.nonce = int(w3.eth.get_transaction_count(self.address, "pending"))

    def fees(self) -> dict[str, int]:
        # Twice the current base fee stays valid through several blocks of rising fees.
        base_fee_wei = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0))
        return {"maxFeePerGas": 2 * base_fee_wei + PRIORITY_FEE_WEI, "maxPriorityFeePerGas": PRIORITY_FEE_WEI}

    def params(self) -> dict[str, Any]:
        return {"from": self.address, "nonce": self.nonce, "chainId": self.chain_id, **self.fees()}

    def transact(self, call: Any) -> TxReceipt:
        """Sends a contract function call or constructor (anything with build_transaction)."""
        tx: dict[str, Any] = dict(call.build_transaction(self.params()))  # estimates the gas
        tx["gas"] = int(tx["gas"]) * (100 + GAS_HEADROOM_PERCENT) // 100
        return self.send(tx)

    def send(self, tx: dict[str, Any]) -> TxReceipt:
        assert tx["nonce"] == self.nonce and tx["from"] == self.address
        signed = Account.sign_transaction(tx, self.private_key)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=RECEIPT_POLL_S
        )
        if receipt["status"] != 1:
            raise TransactionFailed(f"transaction {tx_hash.to_0x_hex()} reverted (gas used {receipt['gasUsed']})")
        return receipt

    def deploy(self, contract_name: str, *args: Any) -> str:
        factory = self.w3.eth.contract(abi=contracts.abi(contract_name), bytecode=contracts.bytecode(contract_name))
        receipt = self.transact(factory.constructor(*args))
        address = receipt["contractAddress"]
        assert address is not None
        return to_checksum_address(address)


def connect(rpc_url: str) -> Web3:
    """A web3 client for `rpc_url` that asks the chain id once: web3 re-asks before every
    transaction otherwise, and a node's chain id does not change under a running client."""
    provider = Web3.HTTPProvider(rpc_url, cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")})
    return Web3(provider)


def create_address(sender: str, nonce: int) -> str:
    """The address CREATE gives the `nonce`-th contract of `sender`:
    keccak256(rlp([sender, nonce]))[12:]."""
    assert 0 <= nonce <= MAX_NONCE
    nonce_bytes = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")  # 0 encodes as the empty string
    payload = _rlp_string(to_canonical_address(sender)) + _rlp_string(nonce_bytes)
    assert len(payload) < 56  # a short RLP list: one prefix byte
    return to_checksum_address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


def _rlp_string(data: bytes) -> bytes:
    if len(data) == 1 and data[0] < 0x80:
        return data  # a single low byte is its own encoding
    assert len(data) < 56
    return bytes([0x80 + len(data)]) + data


def deployed_addresses(deployer: str, first_nonce: int = 0) -> dict[str, str]:
    """Where `deploy_local` puts each contract when the deployer starts at `first_nonce`
    (0 on a fresh chain)."""
    addresses = {name: create_address(deployer, first_nonce + i) for i, (name, _) in enumerate(DEPLOYMENT_ORDER)}
    # The factory creates the implementation in its constructor; a contract's first nonce is 1 (EIP-161).
    addresses["forwarder_implementation"] = create_address(addresses["factory"], 1)
    return addresses


def _constructor_args(deployer: str, treasury: str) -> dict[str, tuple[Any, ...]]:
    return {
        "usdc": ("USD Coin", "USDC", 6, True, "2"),
        "dai": ("Dai Stablecoin", "DAI", 18, False, "1"),
        "fake_usdc": ("USD Coin", "USDC", 6, True, "2"),
        "router": (deployer,),  # the intent signer
        "factory": (treasury, deployer),  # (treasury, sweep operator)
        "price_feed": (PRICE_FEED_DECIMALS, "USDC / USD", PRICE_FEED_ONE_USD),
        "disperse": (),
    }


def _deploy_contracts(sender: Sender, treasury: str) -> dict[str, str]:
    args = _constructor_args(sender.address, treasury)
    deployed = {name: sender.deploy(contract, *args[name]) for name, contract in DEPLOYMENT_ORDER}
    factory = sender.w3.eth.contract(
        address=to_checksum_address(deployed["factory"]), abi=contracts.abi("ForwarderFactory")
    )
    deployed["forwarder_implementation"] = to_checksum_address(factory.functions.implementation().call())
    return deployed


def _mint_to_payers(sender: Sender, tokens: list[str], payers: tuple[str, ...]) -> None:
    for address in tokens:
        token = sender.w3.eth.contract(address=to_checksum_address(address), abi=contracts.abi("TestStablecoin"))
        whole_token_units = 10 ** int(token.functions.decimals().call())
        for payer in payers:
            sender.transact(token.functions.mint(payer, MINT_WHOLE_TOKENS * whole_token_units))


def deploy_local(rpc_url: str) -> LocalStack:
    """Deploys the local stack on the chain at `rpc_url` (anvil) and funds the payers."""
    w3 = connect(rpc_url)
    sender = Sender(w3, DEV_PRIVATE_KEYS[0])
    treasury, fee_recipient, *payers = (Account.from_key(key).address for key in DEV_PRIVATE_KEYS[1:])
    expected = deployed_addresses(sender.address, sender.nonce)
    deployed = _deploy_contracts(sender, treasury)
    assert deployed == expected, f"deployment order changed: {deployed} != {expected}"
    _mint_to_payers(sender, [deployed["usdc"], deployed["dai"], deployed["fake_usdc"]], tuple(payers))
    return LocalStack(
        chain_id=sender.chain_id,
        deployer=sender.address,
        treasury=treasury,
        fee_recipient=fee_recipient,
        payers=tuple(payers),
        **deployed,
    )


def planned_local(chain_id: int = LOCAL_CHAIN_ID) -> LocalStack:
    """Where `deploy_local` puts the stack on a fresh chain (nothing is checked on chain):
    enough to configure a process that only signs intents and derives deposit addresses."""
    deployer = Account.from_key(DEV_PRIVATE_KEYS[0]).address
    treasury, fee_recipient, *payers = (Account.from_key(key).address for key in DEV_PRIVATE_KEYS[1:])
    return LocalStack(
        chain_id=chain_id,
        deployer=deployer,
        treasury=treasury,
        fee_recipient=fee_recipient,
        payers=tuple(payers),
        **deployed_addresses(deployer, 0),
    )


def existing_local(rpc_url: str) -> LocalStack | None:
    """The stack a previous `deploy_local` left on this chain (anvil restarted from its
    --state file), or None when any of its contracts is missing."""
    w3 = connect(rpc_url)
    planned = planned_local(int(w3.eth.chain_id))
    addresses = deployed_addresses(planned.deployer, 0)
    if any(w3.eth.get_code(to_checksum_address(a)) in (b"", None) for a in addresses.values()):
        return None
    return planned


def ensure_local(rpc_url: str) -> LocalStack:
    """The local stack on this chain, deployed if it is not there yet."""
    return existing_local(rpc_url) or deploy_local(rpc_url)
