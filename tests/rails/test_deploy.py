"""The local stack: deterministic addresses on a fresh chain, funded payers, the price feed
and Disperse."""

from __future__ import annotations

from dataclasses import asdict

import rlp
from web3 import Web3

from stablegate.rails.deploy import MINT_WHOLE_TOKENS, create_address, deployed_addresses

from .conftest import OPERATOR_KEY, PAYER_KEY, USDC, Rails, address_of

# The first contract any fresh dev chain (anvil, hardhat) gets from its account 0: a public
# constant that pins create_address to what nodes compute.
FIRST_CONTRACT_OF_DEV_ACCOUNT_0 = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_deploy_local_puts_every_contract_at_its_predicted_address(rails: Rails) -> None:
    stack = rails.stack
    predicted = deployed_addresses(stack.deployer)
    assert predicted == {name: value for name, value in asdict(stack).items() if name in predicted}
    assert stack.usdc == FIRST_CONTRACT_OF_DEV_ACCOUNT_0
    for address in predicted.values():
        assert len(rails.w3.eth.get_code(address)) > 0, address
    assert stack.chain_id == rails.w3.eth.chain_id == 31337
    assert len({stack.deployer, stack.treasury, stack.fee_recipient, *stack.payers}) == 10
    for nonce in (0, 1, 0x7F, 0x80, 0xFF, 0x100, 2**32, 2**64 - 1):  # RLP's length edges
        encoded = rlp.encode([bytes.fromhex(stack.deployer[2:]), nonce])  # an independent RLP
        assert create_address(stack.deployer, nonce) == Web3.to_checksum_address(Web3.keccak(encoded)[12:])


def test_tokens_are_configured_and_payers_funded(rails: Rails) -> None:
    stack = rails.stack
    expected = {
        stack.usdc: ("USD Coin", "USDC", 6, True, "2"),
        stack.dai: ("Dai Stablecoin", "DAI", 18, False, "1"),
        stack.fake_usdc: ("USD Coin", "USDC", 6, True, "2"),
    }
    for address, (name, symbol, decimals, permit, version) in expected.items():
        f = rails.token(address).functions
        assert (f.name().call(), f.symbol().call(), f.decimals().call()) == (name, symbol, decimals)
        assert (f.permitEnabled().call(), f.version().call()) == (permit, version)
        assert f.totalSupply().call() == len(stack.payers) * MINT_WHOLE_TOKENS * 10**decimals
        assert all(f.balanceOf(p).call() == MINT_WHOLE_TOKENS * 10**decimals for p in stack.payers)
    # Same name, symbol and version, but another contract, hence another EIP-712 domain.
    usdc, fake = rails.token(stack.usdc).functions, rails.token(stack.fake_usdc).functions
    assert usdc.DOMAIN_SEPARATOR().call() != fake.DOMAIN_SEPARATOR().call()
    mint = usdc.mint(address_of(PAYER_KEY), 1)
    assert rails.revert_error(mint, address_of(PAYER_KEY)) == "NotOwner"
    router, factory = rails.router.functions, rails.factory.functions
    assert router.signer().call() == router.owner().call() == stack.deployer
    assert (factory.treasury().call(), factory.operator().call()) == (stack.treasury, stack.deployer)
    forwarder = rails.contract("DepositForwarder", stack.forwarder_implementation)
    assert forwarder.functions.factory().call() == stack.factory


def test_the_price_feed_reports_one_dollar_and_can_be_made_stale(rails: Rails) -> None:
    feed = rails.contract("MockPriceFeed", rails.stack.price_feed)
    assert feed.functions.decimals().call() == 8
    round_id, answer, _, updated_at_s, answered_in = feed.functions.latestRoundData().call()
    assert (round_id, answer, answered_in) == (1, 100_000_000, 1)
    assert 0 < updated_at_s <= rails.now_s()
    stale_at_s = rails.now_s() - 7200
    rails.send(OPERATOR_KEY, feed.functions.setRoundData(99_950_000, stale_at_s))
    assert feed.functions.latestRoundData().call() == [2, 99_950_000, stale_at_s, stale_at_s, 2]
    assert feed.functions.getRoundData(1).call()[1] == 100_000_000
    assert rails.revert_error(feed.functions.setAnswer(1), address_of(PAYER_KEY)) == "NotOwner"
    assert rails.revert_error(feed.functions.getRoundData(3), address_of(PAYER_KEY)) == "NoSuchRound"


def test_disperse_pays_many_from_the_sender_and_is_bounded(rails: Rails) -> None:
    stack = rails.stack
    recipients = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, 101)]
    amounts = [i * USDC for i in range(1, 101)]
    payer = address_of(PAYER_KEY)
    before = rails.balance(stack.usdc, payer)
    disperse = rails.contract("Disperse", stack.disperse)
    rails.approve(PAYER_KEY, stack.usdc, stack.disperse, sum(amounts))
    receipt = rails.send(PAYER_KEY, disperse.functions.disperseToken(stack.usdc, recipients, amounts))
    assert receipt["status"] == 1
    assert [rails.balance(stack.usdc, r) for r in recipients] == amounts
    assert rails.balance(stack.usdc, payer) == before - sum(amounts)
    too_many = disperse.functions.MAX_RECIPIENTS().call() + 1
    over = disperse.functions.disperseToken(stack.usdc, [recipients[0]] * too_many, [1] * too_many)
    assert rails.revert_error(over, payer) == "TooManyRecipients"
    mismatched = disperse.functions.disperseToken(stack.usdc, recipients, amounts[:-1])
    assert rails.revert_error(mismatched, payer) == "LengthMismatch"
    # The allowance is spent: a second identical batch cannot pull more.
    assert (
        rails.revert_error(disperse.functions.disperseToken(stack.usdc, recipients, amounts), payer) == "TransferFailed"
    )


def test_event_topics_match_the_abis_and_the_followers_copy() -> None:
    # chains may not import rails (import-linter), so the follower keeps its own copy.
    from stablegate.chains import logs
    from stablegate.rails import contracts

    def abi_topic(contract: str, event: str) -> str:
        (item,) = [i for i in contracts.abi(contract) if i["type"] == "event" and i["name"] == event]
        return contracts.event_topic(f"{event}({','.join(i['type'] for i in item['inputs'])})")

    assert contracts.TRANSFER_TOPIC == abi_topic("TestStablecoin", "Transfer") == logs.TRANSFER_TOPIC
    assert contracts.INTENT_PAID_TOPIC == abi_topic("PaymentRouter", "IntentPaid") == logs.INTENT_PAID_TOPIC
    assert abi_topic("ForwarderFactory", "Swept") == contracts.SWEPT_TOPIC
