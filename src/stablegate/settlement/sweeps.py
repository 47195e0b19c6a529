"""Scheduled batch sweeps (designs 0003 and 0006): the deposit addresses holding confirmed
payments move their tokens into the treasury through `ForwarderFactory.sweep`, signed by
the chain's sweep operator through the transaction manager, and the ledger follows the
chain: clearing → treasury, for exactly what moved.

    plan_sweeps    (the sweep job's transaction) candidates → `sweeps` rows (pending),
                   each with one transaction-manager intent of ≤ ITEMS_PER_SWEEP items
    confirmed      (the manager's transaction) the receipt's `Swept` events are booked
                   per asset, the sweep is `swept` with each item's moved amount
    failed         the sweep is `failed`: its deposits are candidates again

What is booked comes from the `Swept` events, not from the plan: a deposit that arrived
between planning and mining moved too (and is booked now), and an address already
emptied by another sweep moves nothing (and books nothing). Ledger transfer ids derive
from the sweep id, so a replayed outcome books nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig
from stablegate.kit.ids import new_id
from stablegate.observability import metrics, tracing
from stablegate.rails.contracts import SWEPT_TOPIC
from stablegate.rails.deposits import deposit_address
from stablegate.rails.sweeps import MAX_SWEEP_ITEMS
from stablegate.settlement import postings, repository, txmanager
from stablegate.settlement.txmanager import IntentOutcome, TxRequest

log = structlog.get_logger(__name__)

PURPOSE = "sweep"
SWEEP_SELECTOR = keccak(text="sweep(bytes32[],address[])")[:4]
# Gas, measured on anvil with our test tokens (tests/settlement/test_sweeps.py): a sweep of
# one undeployed address 108k in all, each further undeployed address ~57k (balanceOf,
# clone deployment, the forwarder's transfer), an already deployed one less. Proxied
# tokens (USDC on mainnet) cost more per item, hence the headroom; unused gas is not paid.
SWEEP_BASE_GAS = 60_000
SWEEP_ITEM_GAS = 90_000
# Half a 30M block: a sweep that needs the whole block would wait for an empty one.
MAX_SWEEP_GAS = 15_000_000
ITEMS_PER_SWEEP = min(MAX_SWEEP_ITEMS, (MAX_SWEEP_GAS - SWEEP_BASE_GAS) // SWEEP_ITEM_GAS)
MAX_ITEMS_PER_RUN = 4 * ITEMS_PER_SWEEP  # the rest waits for the next run


@dataclass(frozen=True)
class SweepItem:
    """One (deposit address, token) a sweep empties; `amount` is what the confirmed
    receipts say it holds (the plan), the `Swept` event says what really moved."""

    address: str
    salt: str  # 0x-hex bytes32
    token: str
    asset: str
    amount: str  # token base units, decimal: JSON numbers lose precision in some readers


@dataclass(frozen=True)
class Moved:
    """One `Swept` event of the factory: what left a deposit address for the treasury."""

    forwarder: str
    token: str
    amount: int


def sweep_call(salts: Sequence[bytes], tokens: Sequence[str]) -> bytes:
    """Calldata of ForwarderFactory.sweep(salts, tokens)."""
    assert len(salts) == len(tokens) and 0 < len(salts) <= MAX_SWEEP_ITEMS
    return SWEEP_SELECTOR + abi_encode(["bytes32[]", "address[]"], [list(salts), list(tokens)])


def sweep_gas_limit(item_count: int) -> int:
    return SWEEP_BASE_GAS + SWEEP_ITEM_GAS * item_count


# --- planning ------------------------------------------------------------------------


async def plan_sweeps(
    session: AsyncSession, chain: ChainConfig, fail_unsigned_after_s: int, limit: int = MAX_ITEMS_PER_RUN
) -> list[str]:
    """Plan sweeps of every deposit address on `chain` with confirmed, unswept payments
    (at most `limit` items), in the caller's transaction; the sweep ids planned. A chain
    without a factory or a sweep operator has nothing to sweep."""
    if not (chain.deposit_factory and chain.forwarder_implementation and chain.operator):
        log.info("sweep.skipped", chain=chain.name, reason="no_factory_or_operator")
        return []
    assert limit > 0
    with tracing.span("sweep.plan", chain_id=chain.chain_id):
        await repository.lock_sweep_planning(session, chain.chain_id)
        rows = await repository.sweep_candidates(session, chain.chain_id, limit)
        items = _items(chain, rows)
        sweep_ids = [await _plan_one(session, chain, chunk, fail_unsigned_after_s) for chunk in _chunks(items)]
    if not sweep_ids:
        log.debug("sweep.nothing_to_sweep", chain=chain.name)
    return sweep_ids


def _items(chain: ChainConfig, rows: Sequence[Any]) -> list[SweepItem]:
    """Candidates as sweep items, each checked against this chain's factory and tokens:
    an address another factory made (an earlier deployment) cannot be swept by this one."""
    assert chain.deposit_factory and chain.forwarder_implementation
    items = []
    for row in rows:
        salt = bytes.fromhex(row["salt"][2:])
        derived = deposit_address(chain.deposit_factory, chain.forwarder_implementation, salt).lower()
        if derived != row["address"] or chain.token(row["token"]) is None:
            log.warning("sweep.candidate_skipped", chain=chain.name, address=row["address"], token=row["token"])
            continue
        items.append(SweepItem(row["address"], row["salt"], row["token"], row["asset"], str(int(row["received"]))))
    return items


def _chunks(items: Sequence[SweepItem]) -> Iterator[Sequence[SweepItem]]:
    for start in range(0, len(items), ITEMS_PER_SWEEP):
        yield items[start : start + ITEMS_PER_SWEEP]


async def _plan_one(
    session: AsyncSession, chain: ChainConfig, items: Sequence[SweepItem], fail_unsigned_after_s: int
) -> str:
    assert chain.operator and chain.deposit_factory
    sweep_id = new_id("swp")
    request = TxRequest(
        chain_id=chain.chain_id,
        signer=chain.operator,
        purpose=PURPOSE,
        owner_ref=sweep_id,
        to=chain.deposit_factory,
        data=sweep_call([bytes.fromhex(i.salt[2:]) for i in items], [i.token for i in items]),
        gas_limit=sweep_gas_limit(len(items)),
    )
    intent = await txmanager.plan(session, request, fail_unsigned_after_s)
    values = {"id": sweep_id, "chain_id": chain.chain_id, "tx_intent_id": intent["id"]}
    await repository.insert_sweep(session, values | {"items": [asdict(i) for i in items]})
    metrics.SWEEPS.labels(chain.name, "planned").inc()
    log.info(
        "sweep.planned",
        sweep_id=sweep_id,
        intent_id=intent["id"],
        chain=chain.name,
        items=len(items),
        planned=_per_asset((i.asset, int(i.amount)) for i in items),
    )
    return sweep_id


# --- outcomes ------------------------------------------------------------------------


def register(chains: Sequence[ChainConfig]) -> None:
    """Own the transaction manager's sweep outcomes (sender processes)."""
    by_id = {c.chain_id: c for c in chains}

    async def handler(session: AsyncSession, news: IntentOutcome) -> None:
        await on_outcome(session, news, by_id)

    txmanager.on_outcome(PURPOSE, handler)


async def on_outcome(session: AsyncSession, news: IntentOutcome, chains: dict[int, ChainConfig]) -> None:
    """A sweep transaction was sent, confirmed or failed (in the manager's transaction)."""
    with tracing.span(f"sweep.{news.outcome}", intent_id=news.intent_id, sweep_id=news.owner_ref):
        for row in await repository.sweeps_by_intent(session, news.intent_id):
            chain = chains.get(int(row["chain_id"]))
            if chain is None:
                # Raising would roll back the manager's record and repeat forever; the
                # sweep stays pending and visible instead.
                log.error("sweep.unknown_chain", sweep_id=row["id"], chain_id=row["chain_id"])
                continue
            if news.outcome == "confirmed":
                await _swept(session, row, news, chain)
            elif news.outcome == "failed":
                await _failed(session, row, news, chain)
            else:
                log.info("sweep.broadcast", sweep_id=row["id"], intent_id=news.intent_id, chain=chain.name)


async def _swept(session: AsyncSession, row: Any, news: IntentOutcome, chain: ChainConfig) -> None:
    items: list[dict[str, Any]] = list(row["items"])
    moved = swept_events(chain, news.logs)
    booked = _book_list(chain, items, moved)
    # Idempotent ids: a replay (or a sweep already marked) books nothing new.
    await postings.book_sweep(session, row["id"], chain.chain_id, booked)
    by_key = {(m.forwarder, m.token): m.amount for m in moved}
    recorded = [i | {"swept": str(by_key.get((i["address"], i["token"]), 0))} for i in items]
    if not await repository.finish_sweep(session, row["id"], "swept", recorded):
        return  # a replay: the sweep was finished before
    metrics.SWEEPS.labels(chain.name, "swept").inc()
    planned = _per_asset((i["asset"], int(i["amount"])) for i in items)
    swept = dict(booked)
    event = log.info if planned == swept else log.warning  # a difference is for reconciliation
    event(
        "sweep.swept",
        sweep_id=row["id"],
        intent_id=news.intent_id,
        tx_hash=news.tx_hash,
        chain=chain.name,
        planned=planned,
        swept=swept,
        events=len(moved),
    )


async def _failed(session: AsyncSession, row: Any, news: IntentOutcome, chain: ChainConfig) -> None:
    if not await repository.finish_sweep(session, row["id"], "failed", list(row["items"])):
        return
    metrics.SWEEPS.labels(chain.name, "failed").inc()
    # Nothing moved and nothing was booked; the deposits are candidates for the next run.
    log.error("sweep.failed", sweep_id=row["id"], intent_id=news.intent_id, error=news.error, tx_hash=news.tx_hash)


def swept_events(chain: ChainConfig, logs: Sequence[dict[str, Any]]) -> list[Moved]:
    """The factory's `Swept(salt, forwarder, token, amount)` events in a receipt's logs."""
    assert chain.deposit_factory
    moved = []
    for entry in logs:
        topics = [str(t).lower() for t in entry.get("topics") or ()]
        if str(entry.get("address", "")).lower() != chain.deposit_factory or not topics or topics[0] != SWEPT_TOPIC:
            continue
        assert len(topics) == 4, f"Swept has three indexed fields: {entry}"
        forwarder, token = "0x" + topics[2][-40:], "0x" + topics[3][-40:]
        moved.append(Moved(forwarder, token, int(str(entry["data"]), 16)))
    return moved


def _book_list(chain: ChainConfig, items: Sequence[dict[str, Any]], moved: Sequence[Moved]) -> list[tuple[str, int]]:
    """What moved per ledger asset, sorted by asset (the ledger ids number this list, so
    its order must be the same on every replay)."""
    asked = {(i["address"], i["token"]) for i in items}
    totals: dict[str, int] = {}
    for m in moved:
        token = chain.token(m.token)
        if (m.forwarder, m.token) not in asked or token is None:
            # Cannot happen for our own calldata; the money is in the treasury either way,
            # so it is reported, and booked when the token is one of ours.
            log.error("sweep.unexpected_event", chain=chain.name, forwarder=m.forwarder, token=m.token)
        if token is not None:
            totals[token.asset] = totals.get(token.asset, 0) + m.amount
    return sorted(totals.items())


def _per_asset(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for asset, amount in pairs:
        totals[asset] = totals.get(asset, 0) + amount
    return totals
