"""The hand-encoded EIP-712 intent digest and signature agree with eth-account's generic
typed-data encoder and signer for any intent (the router's own digest is checked against
it on anvil in test_router.py)."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import _hash_eip191_message
from hypothesis import given, settings
from hypothesis import strategies as st

from stablegate.chains.anvil import DEV_PRIVATE_KEYS
from stablegate.rails.intents import Intent, intent_digest, intent_typed_data, sign_intent, typed_data_digest

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
uint256 = st.integers(min_value=0, max_value=2**256 - 1)


@st.composite
def intents(draw: st.DrawFn) -> Intent:
    amount = draw(st.integers(min_value=1, max_value=2**256 - 1))
    return Intent(
        id=draw(st.binary(min_size=32, max_size=32)),
        token=draw(addresses),
        amount=amount,
        fee=draw(st.integers(min_value=0, max_value=amount)),
        recipient=draw(addresses),
        fee_recipient=draw(addresses),
        deadline=draw(uint256),
    )


@settings(max_examples=60, deadline=None)
@given(intent=intents(), chain_id=st.integers(min_value=1, max_value=2**64), router=addresses)
def test_fast_digest_equals_the_generic_typed_data_encoding(intent: Intent, chain_id: int, router: str) -> None:
    signable = intent_typed_data(intent, chain_id=chain_id, router=router)
    assert intent_digest(intent, chain_id=chain_id, router=router) == typed_data_digest(signable)
    assert typed_data_digest(signable) == _hash_eip191_message(signable)


@settings(max_examples=30, deadline=None)
@given(intent=intents(), chain_id=st.integers(min_value=1, max_value=2**64), router=addresses)
def test_signature_recovers_the_signer_and_matches_eth_account(intent: Intent, chain_id: int, router: str) -> None:
    key = DEV_PRIVATE_KEYS[0]
    signature = sign_intent(intent, chain_id=chain_id, router=router, private_key=key)
    signable = intent_typed_data(intent, chain_id=chain_id, router=router)
    assert Account.recover_message(signable, signature=signature) == Account.from_key(key).address
    assert signature == bytes(Account.sign_message(signable, key).signature)  # RFC 6979: deterministic
