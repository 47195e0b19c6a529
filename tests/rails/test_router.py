"""PaymentRouter on a real anvil: both payment paths, and every way a payment must fail."""

from __future__ import annotations

from dataclasses import replace

import pytest
from web3 import Web3
from web3.logs import DISCARD

from stablegate.rails.contracts import INTENT_PAID_TOPIC, TRANSFER_TOPIC
from stablegate.rails.deploy import Sender, TransactionFailed
from stablegate.rails.intents import Intent, Permit, PermitToken, intent_args, intent_digest, sign_permit

from .conftest import DAI, FIXED_GAS, MERCHANT, OPERATOR_KEY, OTHER_PAYER_KEY, PAYER_KEY, USDC, Rails, address_of

SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def holdings(rails: Rails, token: str) -> dict[str, int]:
    payer = address_of(PAYER_KEY)
    return {who: rails.balance(token, who) for who in (payer, MERCHANT, rails.stack.fee_recipient)}


def assert_paid(rails: Rails, receipt: dict, intent: Intent, before: dict[str, int]) -> None:
    """The merchant's share and the fee arrived in the same transaction, with one IntentPaid."""
    payer = address_of(PAYER_KEY)
    after = holdings(rails, intent.token)
    assert after[payer] == before[payer] - intent.amount
    assert after[MERCHANT] == before[MERCHANT] + intent.amount - intent.fee
    assert after[rails.stack.fee_recipient] == before[rails.stack.fee_recipient] + intent.fee
    topics = ["0x" + bytes(log["topics"][0]).hex() for log in receipt["logs"]]
    # A zero fee is not transferred: no empty Transfer log for the fee recipient.
    assert topics.count(TRANSFER_TOPIC) == (2 if intent.fee else 1) and topics.count(INTENT_PAID_TOPIC) == 1
    (event,) = rails.router.events.IntentPaid().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["id"] == intent.id
    assert event["args"]["payer"] == payer
    assert event["args"]["token"] == Web3.to_checksum_address(intent.token)
    assert (event["args"]["amount"], event["args"]["fee"]) == (intent.amount, intent.fee)
    assert event["args"]["recipient"] == MERCHANT
    assert rails.router.functions.paid(intent.id).call() is True


def test_pay_through_approve_with_a_token_without_permit(rails: Rails) -> None:
    intent = rails.intent(rails.stack.dai, amount=100 * DAI, fee=1 * DAI)
    rails.approve(PAYER_KEY, rails.stack.dai, rails.stack.router, intent.amount)
    before = holdings(rails, rails.stack.dai)
    receipt = rails.send(PAYER_KEY, rails.router.functions.pay(intent_args(intent), rails.sign(intent)))
    assert_paid(rails, receipt, intent, before)
    assert rails.token(rails.stack.dai).functions.allowance(address_of(PAYER_KEY), rails.stack.router).call() == 0


def permit_for(rails: Rails, intent: Intent, key: str = PAYER_KEY) -> tuple[int, int, bytes, bytes]:
    """(deadline, v, r, s) of the payer's permit for exactly the intent's amount."""
    owner = address_of(key)
    nonce = rails.token(intent.token).functions.nonces(owner).call()
    deadline_s = rails.now_s() + 600
    token = PermitToken(intent.token, "USD Coin", "2", rails.stack.chain_id)
    v, r, s = sign_permit(token, Permit(owner, rails.stack.router, intent.amount, nonce, deadline_s), key)
    return deadline_s, v, r, s


def test_pay_with_permit_in_one_transaction(rails: Rails) -> None:
    intent = rails.intent(rails.stack.usdc, amount=250 * USDC, fee=2_500_000)
    before = holdings(rails, rails.stack.usdc)
    call = rails.router.functions.payWithPermit(intent_args(intent), rails.sign(intent), *permit_for(rails, intent))
    receipt = rails.send(PAYER_KEY, call)
    assert_paid(rails, receipt, intent, before)
    usdc = rails.token(rails.stack.usdc)
    assert usdc.functions.nonces(address_of(PAYER_KEY)).call() == 1
    assert usdc.functions.allowance(address_of(PAYER_KEY), rails.stack.router).call() == 0


def test_a_front_run_permit_does_not_block_the_payment(rails: Rails) -> None:
    intent = rails.intent(rails.stack.usdc, amount=40 * USDC, fee=0)
    deadline_s, v, r, s = permit_for(rails, intent)
    # Someone copies the permit from the mempool and submits it first: its nonce is spent.
    permit = rails.token(rails.stack.usdc).functions.permit(
        address_of(PAYER_KEY), rails.stack.router, intent.amount, deadline_s, v, r, s
    )
    rails.send(OTHER_PAYER_KEY, permit)
    before = holdings(rails, rails.stack.usdc)
    call = rails.router.functions.payWithPermit(intent_args(intent), rails.sign(intent), deadline_s, v, r, s)
    receipt = rails.send(PAYER_KEY, call)
    assert_paid(rails, receipt, intent, before)


def test_pay_with_permit_without_a_usable_permit_moves_nothing(rails: Rails) -> None:
    # DAI-like has permit disabled and the payer approved nothing: the swallowed permit
    # failure must not let the payment through.
    intent = rails.intent(rails.stack.dai, amount=5 * DAI, fee=0)
    call = rails.router.functions.payWithPermit(
        intent_args(intent), rails.sign(intent), 2**40, 27, b"\x01" * 32, b"\x01" * 32
    )
    assert rails.revert_error(call, address_of(PAYER_KEY)) == "TransferFailed"
    assert rails.router.functions.paid(intent.id).call() is False


def test_an_intent_is_paid_once(rails: Rails) -> None:
    intent = rails.intent(rails.stack.dai, amount=10 * DAI, fee=DAI // 10)
    rails.approve(PAYER_KEY, rails.stack.dai, rails.stack.router, 3 * intent.amount)
    pay = rails.router.functions.pay(intent_args(intent), rails.sign(intent))
    rails.send(PAYER_KEY, pay)
    before = holdings(rails, rails.stack.dai)
    assert rails.revert_error(pay, address_of(PAYER_KEY)) == "AlreadyPaid"
    sender = Sender(rails.w3, PAYER_KEY)
    with pytest.raises(TransactionFailed, match="reverted"):  # mined, and reverted
        sender.send(dict(pay.build_transaction(sender.params() | {"gas": FIXED_GAS})))
    assert holdings(rails, rails.stack.dai) == before


def test_the_deadline_is_inclusive_and_later_payments_revert_expired(rails: Rails) -> None:
    on_time = rails.intent(rails.stack.dai, amount=DAI, fee=0, ref="on_time", ttl_s=100)
    late = replace(on_time, id=bytes(32))
    rails.approve(PAYER_KEY, rails.stack.dai, rails.stack.router, 2 * DAI)
    rails.rpc("anvil_setNextBlockTimestamp", on_time.deadline)
    pay_on_time = rails.router.functions.pay(intent_args(on_time), rails.sign(on_time))
    assert rails.send(PAYER_KEY, pay_on_time, gas=FIXED_GAS)["status"] == 1
    assert rails.now_s() == on_time.deadline
    rails.advance_time(1)
    before = holdings(rails, rails.stack.dai)
    pay_late = rails.router.functions.pay(intent_args(late), rails.sign(late))
    assert rails.revert_error(pay_late, address_of(PAYER_KEY)) == "Expired"
    assert rails.send(PAYER_KEY, pay_late, gas=FIXED_GAS)["status"] == 0
    assert holdings(rails, rails.stack.dai) == before


def test_a_wrong_signer_or_tampered_terms_revert_bad_signature(rails: Rails) -> None:
    intent = rails.intent(rails.stack.dai, amount=50 * DAI, fee=DAI)
    rails.approve(PAYER_KEY, rails.stack.dai, rails.stack.router, 10**6 * DAI)
    good = rails.sign(intent)
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    high_s_twin = r + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - v])  # same signer, malleated
    cases = {
        "wrong signer": (intent, rails.sign(intent, key=OTHER_PAYER_KEY)),
        "amount lowered": (replace(intent, amount=intent.amount - 1), good),
        "fee raised": (replace(intent, fee=intent.fee + 1), good),
        "recipient swapped": (replace(intent, recipient=address_of(OTHER_PAYER_KEY)), good),
        "deadline extended": (replace(intent, deadline=intent.deadline + 1), good),
        "high s": (intent, high_s_twin),
        "v of 0/1": (intent, good[:64] + bytes([v - 27])),
        "64 bytes": (intent, good[:64]),
    }
    for case, (terms, signature) in cases.items():
        call = rails.router.functions.pay(intent_args(terms), signature)
        assert rails.revert_error(call, address_of(PAYER_KEY)) == "BadSignature", case
    # The untampered original still pays: the failures were the signature's, not the setup's.
    assert rails.send(PAYER_KEY, rails.router.functions.pay(intent_args(intent), good))["status"] == 1


def test_a_lookalike_token_cannot_pay_an_intent_for_the_real_one(rails: Rails) -> None:
    intent = rails.intent(rails.stack.usdc, amount=70 * USDC, fee=USDC)
    fake = rails.token(rails.stack.fake_usdc)
    assert fake.functions.symbol().call() == "USDC" and fake.functions.name().call() == "USD Coin"
    rails.approve(PAYER_KEY, rails.stack.fake_usdc, rails.stack.router, intent.amount)
    forged = replace(intent, token=rails.stack.fake_usdc)
    call = rails.router.functions.pay(intent_args(forged), rails.sign(intent))
    assert rails.revert_error(call, address_of(PAYER_KEY)) == "BadSignature"
    assert rails.send(PAYER_KEY, call, gas=FIXED_GAS)["status"] == 0
    assert rails.router.functions.paid(intent.id).call() is False
    assert rails.balance(rails.stack.fake_usdc, MERCHANT) == 0


def test_bad_amounts_revert_before_the_signature_is_checked(rails: Rails) -> None:
    intent = rails.intent(rails.stack.usdc, amount=USDC, fee=0)
    args = intent_args(intent)
    for amount, fee in ((0, 0), (USDC, USDC + 1)):
        call = rails.router.functions.pay((*args[:2], amount, fee, *args[4:]), rails.sign(intent))
        assert rails.revert_error(call, address_of(PAYER_KEY)) == "BadAmount"
    with pytest.raises(ValueError, match="fee"):
        replace(intent, fee=intent.amount + 1)


def test_python_digest_equals_the_contracts(rails: Rails) -> None:
    intent = rails.intent(rails.stack.usdc, amount=123_456_789, fee=1_234)
    onchain = rails.router.functions.intentDigest(intent_args(intent)).call()
    assert onchain == intent_digest(intent, chain_id=rails.stack.chain_id, router=rails.stack.router)


def test_tokens_without_a_return_value_pay_and_a_false_return_fails(rails: Rails) -> None:
    payer = address_of(PAYER_KEY)
    deployer = Sender(rails.w3, OPERATOR_KEY)
    for mode, pays in ((0, True), (1, False)):  # NonStandardToken.NO_RETURN, RETURNS_FALSE
        address = deployer.deploy("NonStandardToken", mode)
        token = rails.contract("NonStandardToken", address)
        rails.send(PAYER_KEY, token.functions.mint(payer, 1_000))
        rails.send(PAYER_KEY, token.functions.approve(rails.stack.router, 1_000))
        intent = rails.intent(address, amount=600, fee=6, ref=f"nonstandard_{mode}")
        call = rails.router.functions.pay(intent_args(intent), rails.sign(intent))
        if pays:
            rails.send(PAYER_KEY, call)
            assert token.functions.balanceOf(MERCHANT).call() == 594
            assert token.functions.balanceOf(rails.stack.fee_recipient).call() == 6
        else:
            assert rails.revert_error(call, payer) == "TransferFailed"
    # An address without code "accepts" any call with empty return data: it must not count as paid.
    intent = rails.intent(address_of(OTHER_PAYER_KEY), amount=600, fee=0, ref="no_code")
    call = rails.router.functions.pay(intent_args(intent), rails.sign(intent))
    assert rails.revert_error(call, payer) == "TransferFailed"


def test_only_the_owner_rotates_the_signer(rails: Rails) -> None:
    new_signer_key = OTHER_PAYER_KEY
    set_signer = rails.router.functions.setSigner(address_of(new_signer_key))
    assert rails.revert_error(set_signer, address_of(PAYER_KEY)) == "NotOwner"
    receipt = rails.send(OPERATOR_KEY, set_signer)
    (changed,) = rails.router.events.SignerChanged().process_receipt(receipt, errors=DISCARD)
    assert changed["args"]["newSigner"] == address_of(new_signer_key)
    intent = rails.intent(rails.stack.dai, amount=DAI, fee=0)
    rails.approve(PAYER_KEY, rails.stack.dai, rails.stack.router, DAI)
    old = rails.router.functions.pay(intent_args(intent), rails.sign(intent, key=OPERATOR_KEY))
    assert rails.revert_error(old, address_of(PAYER_KEY)) == "BadSignature"
    rails.send(PAYER_KEY, rails.router.functions.pay(intent_args(intent), rails.sign(intent, key=new_signer_key)))
    assert rails.router.functions.paid(intent.id).call() is True
