"""What other domains use of `chains`: register the addresses to watch, and hear about
observations (seen, confirmed, orphaned, deep_reorg) inside the follower's transaction.

Subscribers run in the transaction that records the event and advances the cursor, so an
event is handled exactly once: if the handler fails, the range is read again later; if it
succeeds, the event and its effects commit together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains import repository

EVENT_KINDS = ("seen", "confirmed", "orphaned", "deep_reorg")


@dataclass(frozen=True)
class ChainEvent:
    kind: str
    chain_id: int
    observation_id: int
    tx_hash: str
    log_index: int
    block_number: int
    observation_kind: str  # transfer | intent_paid
    token: str
    from_address: str
    to_address: str
    amount: int
    fee: int
    intent_id: str | None
    owner_ref: str | None
    generation: int


Handler = Callable[[AsyncSession, ChainEvent], Awaitable[None]]
# Each handler with the observation kinds it wants (None: all). Building an event for a
# handler that ignores it costs as much as storing the log, so publish skips those.
_handlers: list[tuple[Handler, frozenset[str] | None]] = []


def subscribe(handler: Handler, observation_kinds: Sequence[str] | None = None) -> Handler:
    """Register a handler for chain events (of some observation kinds); idempotent."""
    unsubscribe(handler)
    _handlers.append((handler, None if observation_kinds is None else frozenset(observation_kinds)))
    return handler


def unsubscribe(handler: Handler) -> None:
    _handlers[:] = [(h, kinds) for h, kinds in _handlers if h is not handler]


async def publish(session: AsyncSession, kind: str, chain_id: int, rows: Sequence[repository.Stored]) -> None:
    assert kind in EVENT_KINDS, kind
    for handler, kinds in list(_handlers):
        for row in rows:
            if kinds is None or row.observation.kind in kinds:
                await handler(session, _event(kind, chain_id, row))


def _event(kind: str, chain_id: int, row: repository.Stored) -> ChainEvent:
    o = row.observation
    return ChainEvent(
        kind=kind,
        chain_id=chain_id,
        observation_id=row.id,
        tx_hash=o.tx_hash,
        log_index=o.log_index,
        block_number=o.block_number,
        observation_kind=o.kind,
        token=o.token,
        from_address=o.from_address,
        to_address=o.to_address,
        amount=o.amount,
        fee=o.fee,
        intent_id=o.intent_id,
        owner_ref=o.owner_ref,
        generation=row.generation,
    )


async def watch_address(session: AsyncSession, chain_id: int, address: str, owner_ref: str) -> None:
    """Count token transfers to `address` from now on (in the caller's transaction: the
    address must be committed before anyone is shown it, see design 0003)."""
    await repository.watch(session, chain_id, address, owner_ref)


async def block_time(session: AsyncSession, chain_id: int, block_number: int) -> dt.datetime | None:
    """When a followed block was mined (its header's timestamp). Every block of a range is
    stored before the range's events are published, so a handler finds its event's block;
    None for a block the follower has not stored (or has dropped in a reorg)."""
    timestamp_s = await repository.block_timestamp_s(session, chain_id, block_number)
    return None if timestamp_s is None else dt.datetime.fromtimestamp(timestamp_s, dt.UTC)


async def followed_heights(session: AsyncSession, chain_ids: Sequence[int]) -> dict[int, int]:
    """The last block the follower has processed per chain (for confirmation counts)."""
    return await repository.heights(session, chain_ids)
