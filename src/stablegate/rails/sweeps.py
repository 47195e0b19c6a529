"""Sweeps (design 0003): one ForwarderFactory.sweep transaction moves the balances of many
deposit addresses to the treasury, deploying each address's forwarder on first use.

A thin sender for now; choosing what to sweep and recording it comes with settlement.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils.address import is_address, to_checksum_address

from stablegate.rails import contracts
from stablegate.rails.deploy import LocalStack, Sender, connect

# ForwarderFactory.MAX_SWEEP_ITEMS; checked here too so a caller learns before paying gas.
MAX_SWEEP_ITEMS = 400
SALT_BYTES = 32


def sweep(
    rpc_url: str,
    stack_or_factory_address: LocalStack | str,
    salts: Sequence[bytes],
    tokens: Sequence[str],
    operator_key: str,
) -> str:
    """Sweeps token `tokens[i]` at the deposit address of `salts[i]`, for every i, in one
    transaction signed by the factory's operator; returns its 0x-hex hash once mined.

    A revert the node predicts (e.g. NotOperator) raises web3's ContractCustomError before
    anything is sent; a mined revert raises deploy.TransactionFailed.
    """
    if len(salts) != len(tokens):
        raise ValueError(f"{len(salts)} salts but {len(tokens)} tokens")
    if not 0 < len(salts) <= MAX_SWEEP_ITEMS:
        raise ValueError(f"a sweep has 1..{MAX_SWEEP_ITEMS} items, got {len(salts)}")
    if any(len(salt) != SALT_BYTES for salt in salts):
        raise ValueError("every salt must be 32 bytes")
    if not all(is_address(token) for token in tokens):
        raise ValueError("every token must be an address")
    factory_address = (
        stack_or_factory_address.factory
        if isinstance(stack_or_factory_address, LocalStack)
        else stack_or_factory_address
    )
    w3 = connect(rpc_url)
    factory = w3.eth.contract(address=to_checksum_address(factory_address), abi=contracts.abi("ForwarderFactory"))
    call = factory.functions.sweep([bytes(salt) for salt in salts], [to_checksum_address(t) for t in tokens])
    receipt = Sender(w3, operator_key).transact(call)
    return "0x" + bytes(receipt["transactionHash"]).hex()
