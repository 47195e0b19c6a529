"""Deposit addresses and sweeps on a real anvil: counterfactual CREATE2 addresses that
receive tokens before anything is deployed, swept to the treasury in batches."""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from stablegate.rails import sweeps
from stablegate.rails.deposits import deposit_address, deposit_salt

from .conftest import DAI, OPERATOR_KEY, PAYER_KEY, USDC, Rails, address_of

BLOCK_GAS_LIMIT = 30_000_000  # anvil's default, and below every supported chain's


def clone_runtime(implementation: str) -> bytes:
    """EIP-1167 runtime code: delegate everything to `implementation`."""
    return (
        bytes.fromhex("363d3d373d3d3d363d73")
        + bytes.fromhex(implementation[2:])
        + bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
    )


def test_python_deposit_address_equals_the_factorys(rails: Rails) -> None:
    stack = rails.stack
    for ref in ("pay_1", "pay_2", "pay_ü", "x" * 200):
        salt = deposit_salt(ref)
        expected = rails.factory.functions.addressOf(salt).call()
        assert deposit_address(stack.factory, stack.forwarder_implementation, salt) == expected
        # Inputs as the database stores them (lowercase) give the same checksummed address.
        assert deposit_address(stack.factory.lower(), stack.forwarder_implementation.lower(), salt) == expected
    assert rails.factory.functions.implementation().call() == stack.forwarder_implementation
    assert deposit_salt("pay_1") != deposit_salt("pay_2")


def test_tokens_sent_before_deployment_are_swept_to_the_treasury(rails: Rails) -> None:
    stack = rails.stack
    salt = deposit_salt("pay_early")
    address = deposit_address(stack.factory, stack.forwarder_implementation, salt)
    rails.send(PAYER_KEY, rails.token(stack.usdc).functions.transfer(address, 125 * USDC))
    rails.send(PAYER_KEY, rails.token(stack.dai).functions.transfer(address, 3 * DAI))
    assert rails.w3.eth.get_code(address) == b""  # nothing there yet: the tokens just wait
    treasury_usdc, treasury_dai = rails.balance(stack.usdc, stack.treasury), rails.balance(stack.dai, stack.treasury)

    tx_hash = sweeps.sweep(rails.anvil.url, stack, [salt, salt], [stack.usdc, stack.dai], OPERATOR_KEY)

    assert rails.balance(stack.usdc, stack.treasury) == treasury_usdc + 125 * USDC
    assert rails.balance(stack.dai, stack.treasury) == treasury_dai + 3 * DAI
    assert rails.balance(stack.usdc, address) == rails.balance(stack.dai, address) == 0
    assert bytes(rails.w3.eth.get_code(address)) == clone_runtime(stack.forwarder_implementation)
    receipt = rails.w3.eth.get_transaction_receipt(tx_hash)
    swept = rails.factory.events.Swept().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["forwarder"], e["args"]["token"], e["args"]["amount"]) for e in swept] == [
        (address, stack.usdc, 125 * USDC),
        (address, stack.dai, 3 * DAI),
    ]
    assert all(e["args"]["salt"] == salt for e in swept)
    assert len(rails.factory.events.ForwarderDeployed().process_receipt(receipt, errors=DISCARD)) == 1


def fund(rails: Rails, token: str, recipients: list[str], amounts: list[int]) -> None:
    """Pays many addresses in one transaction through Disperse, as a batch payout would."""
    rails.approve(PAYER_KEY, token, rails.stack.disperse, sum(amounts))
    disperse = rails.contract("Disperse", rails.stack.disperse)
    rails.send(PAYER_KEY, disperse.functions.disperseToken(token, recipients, amounts))


def test_a_batch_of_50_addresses_is_swept_in_one_transaction(rails: Rails) -> None:
    stack = rails.stack
    salts = [deposit_salt(f"pay_batch_{i}") for i in range(50)]
    addresses = [deposit_address(stack.factory, stack.forwarder_implementation, salt) for salt in salts]
    tokens = [stack.usdc if i % 2 == 0 else stack.dai for i in range(50)]  # mixed tokens
    amounts = [(i + 1) * (USDC if i % 2 == 0 else DAI) for i in range(50)]
    for token in (stack.usdc, stack.dai):
        chosen = [i for i in range(50) if tokens[i] == token]
        fund(rails, token, [addresses[i] for i in chosen], [amounts[i] for i in chosen])
    before = {token: rails.balance(token, stack.treasury) for token in (stack.usdc, stack.dai)}

    tx_hash = sweeps.sweep(rails.anvil.url, stack.factory, salts, tokens, OPERATOR_KEY)

    receipt = rails.w3.eth.get_transaction_receipt(tx_hash)
    swept = rails.factory.events.Swept().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["forwarder"], e["args"]["token"], e["args"]["amount"]) for e in swept] == list(
        zip(addresses, tokens, amounts, strict=True)
    )
    for token in (stack.usdc, stack.dai):
        expected = sum(a for t, a in zip(tokens, amounts, strict=True) if t == token)
        assert rails.balance(token, stack.treasury) == before[token] + expected
    assert all(rails.balance(t, a) == 0 for t, a in zip(tokens, addresses, strict=True))
    # A full batch of first-time sweeps must fit in one block.
    gas_per_item = receipt["gasUsed"] / len(salts)
    assert gas_per_item * sweeps.MAX_SWEEP_ITEMS < BLOCK_GAS_LIMIT, gas_per_item


def test_sweeping_an_empty_address_again_is_a_no_op(rails: Rails) -> None:
    stack = rails.stack
    swept_salt, never_funded_salt = deposit_salt("pay_swept"), deposit_salt("pay_never_funded")
    rails.send(
        PAYER_KEY,
        rails.token(stack.usdc).functions.transfer(rails.factory.functions.addressOf(swept_salt).call(), USDC),
    )
    sweeps.sweep(rails.anvil.url, stack, [swept_salt], [stack.usdc], OPERATOR_KEY)
    treasury = rails.balance(stack.usdc, stack.treasury)

    tx_hash = sweeps.sweep(rails.anvil.url, stack, [swept_salt, never_funded_salt], [stack.usdc] * 2, OPERATOR_KEY)

    receipt = rails.w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1 and receipt["logs"] == []
    assert rails.balance(stack.usdc, stack.treasury) == treasury
    # Nothing is deployed for an address with nothing to sweep.
    assert rails.w3.eth.get_code(rails.factory.functions.addressOf(never_funded_salt).call()) == b""


def test_only_the_operator_sweeps_and_only_the_factory_moves_a_forwarders_funds(rails: Rails) -> None:
    stack = rails.stack
    salt = deposit_salt("pay_guarded")
    address = deposit_address(stack.factory, stack.forwarder_implementation, salt)
    rails.send(PAYER_KEY, rails.token(stack.usdc).functions.transfer(address, 9 * USDC))
    with pytest.raises(ContractCustomError) as raised:
        sweeps.sweep(rails.anvil.url, stack, [salt], [stack.usdc], PAYER_KEY)
    assert (
        rails.revert_error(rails.factory.functions.sweep([salt], [stack.usdc]), address_of(PAYER_KEY)) == "NotOperator"
    )
    assert raised.value.data == rails.w3.keccak(text="NotOperator()")[:4].to_0x_hex()
    sweeps.sweep(rails.anvil.url, stack, [salt], [stack.usdc], OPERATOR_KEY)  # deploys the forwarder
    rails.send(PAYER_KEY, rails.token(stack.usdc).functions.transfer(address, 4 * USDC))
    forwarder = rails.contract("DepositForwarder", address)
    steal = forwarder.functions.sweep(stack.usdc, address_of(PAYER_KEY))
    assert rails.revert_error(steal, address_of(PAYER_KEY)) == "NotFactory"
    assert rails.revert_error(steal, address_of(OPERATOR_KEY)) == "NotFactory"
    assert rails.balance(stack.usdc, address) == 4 * USDC


def test_sweep_batches_are_checked_and_bounded(rails: Rails) -> None:
    stack = rails.stack
    salt = deposit_salt("pay_bounds")
    operator = address_of(OPERATOR_KEY)
    assert rails.revert_error(rails.factory.functions.sweep([salt], []), operator) == "LengthMismatch"
    too_many = rails.factory.functions.MAX_SWEEP_ITEMS().call() + 1
    assert (
        rails.revert_error(rails.factory.functions.sweep([salt] * too_many, [stack.usdc] * too_many), operator)
        == "TooManyItems"
    )
    assert rails.factory.functions.MAX_SWEEP_ITEMS().call() == sweeps.MAX_SWEEP_ITEMS
    with pytest.raises(ValueError, match="salts"):
        sweeps.sweep(rails.anvil.url, stack, [salt], [], OPERATOR_KEY)
    with pytest.raises(ValueError, match=r"1\.\.400"):
        sweeps.sweep(rails.anvil.url, stack, [salt] * too_many, [stack.usdc] * too_many, OPERATOR_KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        sweeps.sweep(rails.anvil.url, stack, [salt[:31]], [stack.usdc], OPERATOR_KEY)
    assert Web3.to_checksum_address(rails.factory.functions.treasury().call()) == stack.treasury
