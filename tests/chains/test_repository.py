"""The observation upsert's two paths on the real database: a fresh range goes in by plain
INSERT, anything that may meet a stored log by ON CONFLICT, and a log stored already that
the freshness check cannot see (a reorg deeper than the follower's window) falls back to
the upsert instead of failing the range. No chain needed: the rows are made up."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import structlog

from stablegate.chains import logs as decode
from stablegate.chains import registry, repository
from stablegate.chains import service as chains
from stablegate.chains.follower import Follower
from stablegate.chains.registry import TokenConfig
from stablegate.chains.repository import Observation, Stored
from stablegate.db import Database
from tests.chains.conftest import observations

CHAIN_ID = 31337
TOKEN = "0x" + "ab" * 20


def _hex(seed: str, size: int) -> str:
    return "0x" + hashlib.sha256(seed.encode()).digest()[:size].hex()


def _log(tx: int, block: int, log_index: int = 0, amount: int = 10**6) -> Observation:
    return Observation(
        _hex(f"tx{tx}", 32),
        log_index,
        block,
        _hex(f"block{block}", 32),
        "transfer",
        TOKEN,
        _hex(f"from{tx}", 20),
        _hex(f"to{tx}", 20),
        amount,
        0,
        None,
        f"ref_{tx}",
    )


async def _upsert(db: Database, items: list[Observation], confirmed_through: int = -1) -> list[Stored]:
    async with db.session() as session:
        return await repository.upsert_observations(session, CHAIN_ID, repository.stage(items), confirmed_through)


async def test_a_fresh_range_is_stored_and_read_back_as_it_was_staged(db: Database, clean_chain_tables: None) -> None:
    items = [_log(n, block=10 + n // 3, log_index=n % 3, amount=2**255 + n) for n in range(9)]
    stored = await _upsert(db, items, confirmed_through=11)
    assert [s.observation for s in stored] == items
    assert {(s.observation.block_number, s.status, s.generation, s.confirmed_generation) for s in stored} == {
        (10, "confirmed", 1, 1),
        (11, "confirmed", 1, 1),
        (12, "seen", 1, None),
    }
    rows = await observations(db)
    assert [(r["tx_hash"], r["block_hash"], r["to_address"], int(r["amount"])) for r in rows] == [
        (o.tx_hash, o.block_hash, o.to_address, o.amount) for o in items
    ]
    assert [r["id"] for r in rows] == [s.id for s in stored]


async def test_a_replayed_range_changes_nothing(db: Database, clean_chain_tables: None) -> None:
    items = [_log(n, block=20) for n in range(3)]
    assert len(await _upsert(db, items)) == 3
    assert await _upsert(db, items) == []
    assert len(await observations(db)) == 3


async def test_an_orphaned_log_mined_again_higher_up_is_revived(db: Database, clean_chain_tables: None) -> None:
    [first] = await _upsert(db, [_log(1, block=30)])
    async with db.session() as session:
        [orphaned] = await repository.orphan_above(session, CHAIN_ID, 29)
    assert (orphaned.id, orphaned.was, orphaned.status) == (first.id, "seen", "orphaned")
    [revived] = await _upsert(db, [_log(1, block=40)])  # above every stored block: only the orphan check sees it
    assert (revived.id, revived.status, revived.generation) == (first.id, "seen", 2)
    [row] = await observations(db)
    assert (row["block_number"], row["status"]) == (40, "seen")


async def test_a_log_stored_already_falls_back_to_the_upsert(db: Database, clean_chain_tables: None) -> None:
    await _upsert(db, [_log(1, block=50)], confirmed_through=50)
    with structlog.testing.capture_logs() as logs:
        # The same log "mined again" at 60, never orphaned: the freshness check passes, the
        # unique constraint does not, and the range still commits (with the new log only).
        stored = await _upsert(db, [_log(1, block=60), _log(2, block=60, log_index=1)])
    assert [s.observation.tx_hash for s in stored] == [_log(2, block=60).tx_hash]
    assert [e["event"] for e in logs] == ["chain.observation_stored_already"]
    rows = await observations(db)
    assert [(r["block_number"], r["status"]) for r in rows] == [(50, "confirmed"), (60, "seen")]


@pytest.mark.parametrize(
    "bad",
    [{"tx_hash": "0x" + "zz" * 32}, {"to_address": "ab" * 21}],
    ids=["not hex", "no 0x prefix"],
)
async def test_a_malformed_hash_or_address_is_refused(db: Database, clean_chain_tables: None, bad: dict) -> None:
    item = _log(1, block=70)._replace(**bad)
    with pytest.raises(ValueError, match=r"non-hexadecimal|must be 0x hex"):
        await _upsert(db, [item])
    assert await observations(db) == []


async def test_recipients_match_by_address_whatever_the_topic_padding_or_case(
    db: Database, clean_chain_tables: None
) -> None:
    """The follower matches recipients per distinct topic: two topics holding one address
    (dirty padding, upper case) must both count, an ERC-721 Transfer and an unwatched
    recipient must not."""
    watched, other = _hex("watched", 20), _hex("other", 20)
    async with db.session() as session:
        await chains.watch_address(session, CHAIN_ID, watched, "ref_watched")
    config = registry.local_chain("http://127.0.0.1:9", (TokenConfig("USDC", TOKEN, 6, "USDC.local"),))
    amount_word = "0x" + f"{5 * 10**6:064x}"

    def raw_log(index: int, *topics: str) -> dict[str, Any]:
        return {
            "address": TOKEN, "topics": [decode.TRANSFER_TOPIC, decode.address_topic(_hex("payer", 20)), *topics],
            "data": amount_word if len(topics) == 1 else "0x", "blockNumber": "0x64", "blockHash": _hex("b", 32),
            "transactionHash": _hex(f"t{index}", 32), "logIndex": hex(index), "removed": False,
        }  # fmt: skip

    clean = decode.address_topic(watched)
    raw_logs = [
        raw_log(0, clean),
        raw_log(1, "0x" + "ff" * 12 + watched[2:]),  # the padding is not the address
        raw_log(2, clean.upper().replace("0X", "0x")),
        raw_log(3, decode.address_topic(other)),
        raw_log(4, clean, "0x" + "00" * 31 + "07"),  # ERC-721: token id as a fourth topic
    ]
    follower = Follower(db, config)
    staged = await follower._observations(raw_logs)
    await follower.rpc.aclose()
    assert [(o.log_index, o.to_address, o.owner_ref, o.amount) for o in staged.items] == [
        (n, watched, "ref_watched", 5 * 10**6) for n in (0, 1, 2)
    ]
    assert [r[7] for r in staged.records] == [bytes.fromhex(watched[2:])] * 3
