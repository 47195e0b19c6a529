"""How payments are paid on-chain: signed intents for the router, and per-payment deposit
addresses (design 0003). Other domains call these; the follower reports back through
`chains.service` events, which `on_chain_event` turns into intent state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains import service as chains
from stablegate.chains.registry import ChainConfig
from stablegate.chains.service import ChainEvent
from stablegate.rails import repository
from stablegate.rails.deposits import deposit_address, deposit_salt
from stablegate.rails.intents import Intent, intent_id, sign_intent

log = structlog.get_logger(__name__)
MAX_OWNER_REF_CHARS = 200


@dataclass(frozen=True)
class SignedIntent:
    intent: Intent
    signature: bytes
    router: str
    chain_id: int


async def create_deposit_address(session: AsyncSession, chain: ChainConfig, owner_ref: str) -> str:
    """The owner's counterfactual deposit address on `chain`, watched from this transaction
    on. Idempotent per (chain, owner). Nothing is deployed: the first sweep deploys it."""
    return (await create_payment_instructions(session, chain, owner_ref, [], None))[0]


async def create_payment_instructions(
    session: AsyncSession,
    chain: ChainConfig,
    owner_ref: str,
    intents: Sequence[tuple[str, IntentTerms]],
    signer_key: str | None,
) -> tuple[str, list[SignedIntent]]:
    """Both ways to pay on one chain, stored in one statement: the owner's deposit address
    (watched from this transaction on) and a signed intent per (intent owner, terms)."""
    assert 1 <= len(owner_ref) <= MAX_OWNER_REF_CHARS
    if chain.deposit_factory is None or chain.forwarder_implementation is None:
        raise ValueError(f"chain {chain.name}: no deposit factory configured")
    salt = deposit_salt(owner_ref)
    address = deposit_address(chain.deposit_factory, chain.forwarder_implementation, salt).lower()
    deposit = {
        "chain_id": chain.chain_id,
        "address": address,
        "salt": "0x" + salt.hex(),
        "factory": chain.deposit_factory,
        "owner_ref": owner_ref,
    }
    signed = _sign_all(chain, intents, signer_key)
    rows = [_row(s, ref) for s, (ref, _) in zip(signed, intents, strict=True)]
    stored = await repository.insert_deposit_address_and_intents(session, deposit, rows)
    assert stored == address, "an owner's deposit address never changes"
    await chains.watch_address(session, chain.chain_id, address, owner_ref)
    return address, signed


@dataclass(frozen=True)
class IntentTerms:
    token: str
    amount: int  # base units the payer pays in total
    fee: int  # of which the platform's fee
    recipient: str
    fee_recipient: str
    deadline_s: int  # unix seconds


async def create_intent(
    session: AsyncSession, chain: ChainConfig, owner_ref: str, terms: IntentTerms, signer_key: str
) -> SignedIntent:
    """Sign and store the intent for `owner_ref` (one per owner: the id derives from it)."""
    [signed] = _sign_all(chain, [(owner_ref, terms)], signer_key)
    await repository.insert_intents(session, [_row(signed, owner_ref)])
    return signed


def _sign_all(
    chain: ChainConfig, items: Sequence[tuple[str, IntentTerms]], signer_key: str | None
) -> list[SignedIntent]:
    if not items:
        return []
    if chain.router is None or signer_key is None:
        raise ValueError(f"chain {chain.name}: no payment router or no intent signer configured")
    return [_sign(chain, chain.router, owner_ref, terms, signer_key) for owner_ref, terms in items]


def _sign(chain: ChainConfig, router: str, owner_ref: str, terms: IntentTerms, signer_key: str) -> SignedIntent:
    assert chain.token(terms.token) is not None, "intents are for configured tokens only"
    assert 0 <= terms.fee <= terms.amount and terms.amount > 0
    intent = Intent(
        id=intent_id(owner_ref),
        token=terms.token.lower(),
        amount=terms.amount,
        fee=terms.fee,
        recipient=terms.recipient.lower(),
        fee_recipient=terms.fee_recipient.lower(),
        deadline=terms.deadline_s,
    )
    signature = sign_intent(intent, chain_id=chain.chain_id, router=router, private_key=signer_key)
    return SignedIntent(intent, signature, router, chain.chain_id)


def _row(signed: SignedIntent, owner_ref: str) -> dict[str, Any]:
    intent = signed.intent
    return {
        "id": "0x" + intent.id.hex(),
        "chain_id": signed.chain_id,
        "router": signed.router,
        "token": intent.token,
        "amount": str(intent.amount),  # JSON for the batch insert: exact as text
        "fee": str(intent.fee),
        "recipient": intent.recipient,
        "fee_recipient": intent.fee_recipient,
        "deadline_s": intent.deadline,
        "owner_ref": owner_ref,
        "signature": "0x" + signed.signature.hex(),
    }


async def on_chain_event(session: AsyncSession, event: ChainEvent) -> None:
    """A confirmed router payment marks its intent paid (in the follower's transaction)."""
    if event.kind != "confirmed" or event.intent_id is None:
        return
    terms = {"chain_id": event.chain_id, "token": event.token, "amount": event.amount, "fee": event.fee}
    if await repository.mark_intent_paid(session, event.intent_id, event.observation_id, terms):
        log.info("rails.intent_paid", intent_id=event.intent_id, tx_hash=event.tx_hash, owner_ref=event.owner_ref)
    else:
        log.warning("rails.intent_payment_unmatched", intent_id=event.intent_id, tx_hash=event.tx_hash)


chains.subscribe(on_chain_event, observation_kinds=("intent_paid",))
