"""The block follower of one chain (design 0003, "Block follower").

Each step reads one bounded range of blocks above the cursor: headers (parent-hash
continuity), then the logs of the configured tokens and our router with the header of the
range's last block in the same request to one provider, then commits blocks,
observations, events and the cursor in one transaction. A crash anywhere loses at most
the uncommitted step, which the next run reads again; the unique key per log makes a
replay a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from stablegate.chains import logs as decode
from stablegate.chains import repository, service
from stablegate.chains.registry import ChainConfig
from stablegate.chains.repository import Block, Cursor, Observation, Reorg, Stored
from stablegate.chains.rpc import ProviderBehind, RangeTooLarge, RpcClient, RpcError
from stablegate.db import Database
from stablegate.observability import metrics, tracing

log = structlog.get_logger(__name__)

HEADERS_PER_REQUEST = 100
YIELD_EVERY_LOGS = 1000  # decoding and staging yield to the event loop this often (~10 ms)
LOOKALIKE_ADDRESSES = 500  # recent deposit addresses checked for look-alike tokens per range
STANDBY_POLL_S = 2.0
LOCK_NAMESPACE = 0x5347_4346 << 32  # "SGCF": the follower's advisory locks, one per chain id


def watermark(chain: ChainConfig, head_read_at: dt.datetime, tip_timestamp_s: int | None) -> dt.datetime | None:
    """What the follower at the head may claim as seen: every block mined before the head
    was read. On a chain with steady blocks a tip older than `max_block_interval_s`
    means every provider is stuck (a stalled node still answers with its old head), so
    the claim stops at the tip's time plus that interval until blocks come again; with
    the tip's time unknown there, nothing is claimed (None)."""
    if chain.max_block_interval_s is None:
        return head_read_at
    if tip_timestamp_s is None:
        return None
    stuck_after = dt.datetime.fromtimestamp(tip_timestamp_s + chain.max_block_interval_s, dt.UTC)
    return min(head_read_at, stuck_after)


class _Reorged(Exception):
    """The chain changed under this step (a reorg in progress): read again."""


@dataclass(frozen=True)
class _Range:
    """One range as read from the chain, decoded and matched, ready to commit."""

    blocks: list[Block]
    log_count: int
    observations: repository.StagedObservations


def lock_key(chain_id: int) -> int:
    return LOCK_NAMESPACE | (chain_id & 0xFFFF_FFFF)


class Follower:
    def __init__(
        self, db: Database, chain: ChainConfig, rpc: RpcClient | None = None, lookalike_scan: bool = True
    ) -> None:
        """`lookalike_scan=False` leaves out the look-alike monitoring (the bench measures
        the ingest path alone with it, then the scan on its own)."""
        self.db, self.chain = db, chain
        self.lookalike_scan = lookalike_scan
        self.rpc = rpc or RpcClient(chain.name, chain.rpc_urls)
        # Ranges start at a quarter of the maximum and double per range read: the first
        # read of a catch-up overlaps nothing (no commit to hide behind), so a small one
        # starts the read/commit pipeline sooner. (A range the provider refuses halves.)
        self.range_blocks = max(1, chain.max_range_blocks // 4)
        self._conn: AsyncConnection | None = None
        self._prefetched: tuple[int, int, asyncio.Task[_Range]] | None = None
        self._watch_topics = [decode.TRANSFER_TOPIC] + ([decode.INTENT_PAID_TOPIC] if chain.router else [])
        self._sources = [t.address for t in chain.tokens] + ([chain.router] if chain.router else [])

    # --- leadership -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def leading(self, wait: bool = True, stop: asyncio.Event | None = None) -> AsyncIterator[bool]:
        """Hold the chain's advisory lock on a dedicated connection and write through it:
        losing the connection loses the lock and the ability to write together. A standby
        (wait=True) polls for the lock; it yields False if `stop` is set meanwhile, so that
        a standby watcher stops on SIGTERM like the leader."""
        async with self.db.engine.connect() as conn:
            self._conn = conn
            try:
                leads = await self._try_lead()
                while not leads and not (stop is not None and stop.is_set()):
                    if not wait:
                        raise RuntimeError(f"chain {self.chain.name}: another follower leads")
                    await _wait_or_stop(stop, STANDBY_POLL_S)
                    leads = await self._try_lead()
                if leads:
                    metrics.CHAIN_LEADER.labels(self.chain.name).set(1)
                    log.info("chain.leader_acquired", chain=self.chain.name, chain_id=self.chain.chain_id)
                yield leads
            finally:
                metrics.CHAIN_LEADER.labels(self.chain.name).set(0)
                self._conn = None
                if self._prefetched is not None:
                    self._prefetched[2].cancel()
                    self._prefetched = None
                # Session-level advisory locks outlive the block: a pooled connection would
                # keep the lead for whoever borrows it next. Close it instead.
                await conn.invalidate()

    async def _try_lead(self) -> bool:
        async with self._session() as session:
            return await repository.try_lead(session, lock_key(self.chain.chain_id))

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        assert self._conn is not None, "use `async with follower.leading()`"
        async with AsyncSession(bind=self._conn, expire_on_commit=False) as session:
            yield session

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._session() as session, session.begin():
            yield session

    # --- the loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Follow until `stop` is set; a standby waits for the lock first."""
        async with self.leading(stop=stop) as leads:
            while leads and not stop.is_set():
                try:
                    processed = await self.step()
                except RpcError as exc:
                    log.warning("chain.step_failed", chain=self.chain.name, error=str(exc))
                    processed = 0
                if processed == 0:
                    await _wait_or_stop(stop, self.chain.poll_interval_ms / 1000)

    async def sync(self, max_steps: int = 10_000) -> int:
        """Steps until the follower is at the head (tests, bench, demo); blocks processed."""
        total = 0
        for _ in range(max_steps):
            processed = await self.step()
            if processed == 0 and await self._at_head():
                return total
            total += processed
        raise RuntimeError(f"chain {self.chain.name}: not at the head after {max_steps} steps")

    async def _at_head(self) -> bool:
        head = await self.rpc.head()
        cursor = await self._cursor(head)
        return cursor.block_number >= head

    async def step(self) -> int:
        """One range: the number of blocks committed (0: at the head, or read again)."""
        head_read_at = dt.datetime.now(dt.UTC)  # every block mined before this is at most `head`
        head = await self.rpc.head()
        cursor = await self._cursor(head)
        metrics.CHAIN_HEAD_LAG.labels(self.chain.name).set(max(0, head - cursor.block_number))
        if cursor.block_number >= head:
            if await self._check_tip(cursor, head):
                await self._mark_synced(cursor.block_number, head_read_at)
            await self._scan_lookalikes(cursor.block_number)
            return 0
        first, last = cursor.block_number + 1, min(head, cursor.block_number + self.range_blocks)
        with tracing.span("chain.range", chain=self.chain.name, first=first, last=last):
            try:
                return await self._ingest(cursor, first, last, head, head_read_at)
            except _Reorged:
                return 0
            except RangeTooLarge as exc:
                self.range_blocks = max(1, (last - first + 1) // 2)
                log.info("chain.range_shrunk", chain=self.chain.name, blocks=self.range_blocks, error=exc.message)
                return 0

    async def _cursor(self, head: int) -> Cursor:
        async with self._session() as session:
            cursor = await repository.cursor(session, self.chain.chain_id)
        if cursor is not None:
            return cursor
        start = self.chain.start_block if self.chain.start_block is not None else head
        if start == 0:
            return Cursor(-1, None)
        parent = await self._headers(start - 1, start - 1)
        return Cursor(start - 1, parent[0].hash)

    async def _mark_synced(self, tip: int, head_read_at: dt.datetime) -> None:
        """At the head: the payments expiry job may now trust that money mined before
        the watermark has been seen (design 0004). One small update per idle poll."""
        async with self._transaction() as session:
            tip_timestamp_s = await repository.block_timestamp_s(session, self.chain.chain_id, tip)
            synced_at = watermark(self.chain, head_read_at, tip_timestamp_s)
            if synced_at is None:
                return
            await repository.mark_synced(session, self.chain.chain_id, synced_at)
        self._report_synced(synced_at)

    def _report_synced(self, synced_at: dt.datetime | None) -> None:
        """The committed watermark, for `time() - stablegate_chain_synced_timestamp_seconds`."""
        if synced_at is not None:
            metrics.CHAIN_SYNCED_AT.labels(self.chain.name).set(synced_at.timestamp())

    async def _ingest(self, cursor: Cursor, first: int, last: int, head: int, head_read_at: dt.datetime) -> int:
        read = await self._read_range(first, last)
        if cursor.block_hash is not None and read.blocks[0].parent_hash != cursor.block_hash:
            await self._handle_reorg(cursor)
            return 0
        confirmed_through = await self._confirmed_through(read.blocks[-1], head)
        self.range_blocks = min(self.chain.max_range_blocks, self.range_blocks * 2)  # the provider served it
        if last < head:  # read the next range while this one commits (different resources)
            self._prefetch_range(last + 1, min(head, last + self.range_blocks))
        # Synced only by a range that reaches the head read at `head_read_at`.
        synced_at = watermark(self.chain, head_read_at, read.blocks[-1].timestamp_s) if last == head else None
        await self._commit(read, confirmed_through, synced_at)
        self._report_synced(synced_at)
        return len(read.blocks)

    async def _read_range(self, first: int, last: int) -> _Range:
        """A prefetched read of exactly this range if one is pending, else a fresh one. A
        prefetched read is validated like any other: against the cursor when it commits."""
        pending, self._prefetched = self._prefetched, None
        if pending is not None and pending[:2] == (first, last):
            return await pending[2]
        if pending is not None:
            pending[2].cancel()
        return await self._read(first, last)

    def _prefetch_range(self, first: int, last: int) -> None:
        task = asyncio.create_task(self._read(first, last))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved later or never
        self._prefetched = (first, last, task)

    async def _read(self, first: int, last: int) -> _Range:
        """Headers (continuous within the range), logs (from the same blocks), and the
        observations among them, staged for the upsert. Nothing here writes or uses the
        follower's connection: a prefetch runs while that connection commits the range
        before, and its Python work (decoding, matching, staging: ~100 ms per 10 000 logs)
        overlaps the database's."""
        blocks = await self._headers(first, last)
        if not _continues(blocks[0], blocks[1:]):
            raise _Reorged  # the provider's view changed while we read it
        raw_logs = await self._logs(first, last, blocks[-1])
        hashes = {b.number: b.hash for b in blocks}
        # Per distinct (number, hash) pair, not per log: a range has thousands of logs and a few blocks.
        if any(hashes.get(int(n, 16)) != h.lower() for n, h in {(i["blockNumber"], i["blockHash"]) for i in raw_logs}):
            raise _Reorged
        return _Range(blocks, len(raw_logs), await self._observations(raw_logs))

    async def _confirmed_through(self, tip: Block, head: int) -> int:
        """The highest block of this range deep enough to be confirmed. By depth a block
        needs `confirmations - 1` descendants: those in the range, and those just above
        its tip when the chain has them already, whose headers are read here and must
        continue the range (parent-hash links, as within a range). A catch-up then stores
        its logs confirmed at once instead of seen and updated a range later: that UPDATE
        of ~2 000 rows cost ~60 ms of every 10 000-log range (design 0003)."""
        if self.chain.finality == "finalized":
            finalized = await self._finalized()
            return min(tip.number, finalized if finalized is not None else -1)
        assert self.chain.confirmations is not None
        deepest, above = tip.number, min(head, tip.number + self.chain.confirmations - 1)
        if above > tip.number:
            with contextlib.suppress(RpcError):  # no look ahead: confirmed a range later
                if _continues(tip, await self._headers(tip.number + 1, above)):
                    deepest = above
        return deepest - self.chain.confirmations + 1

    async def _finalized(self) -> int | None:
        if self.chain.finality != "finalized":
            return None
        header = await self.rpc.call("eth_getBlockByNumber", "finalized", False)
        return None if header is None else int(header["number"], 16)

    # --- reads ------------------------------------------------------------------------

    async def _headers(self, first: int, last: int) -> list[Block]:
        blocks: list[Block] = []
        for low in range(first, last + 1, HEADERS_PER_REQUEST):
            high = min(last, low + HEADERS_PER_REQUEST - 1)
            calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(low, high + 1)]
            headers = await self.rpc.batch(calls, check=_all_known)
            blocks += [decode.block(h) for h in headers]
        return blocks

    async def _logs(self, first: int, last: int, tip: Block) -> list[dict[str, Any]]:
        """The range's logs, with the tip's header from the same provider in the same
        request: a provider that does not know the tip (lagging) would answer `[]`."""
        query: dict[str, Any] = {"fromBlock": hex(first), "toBlock": hex(last), "address": self._sources}
        query["topics"] = [self._watch_topics]
        calls: list[tuple[str, list[Any]]] = [
            ("eth_getBlockByNumber", [hex(tip.number), False]),
            ("eth_getLogs", [query]),
        ]

        def same_tip(results: list[Any]) -> None:
            if results[0] is None:
                raise ProviderBehind(f"block {tip.number} unknown")
            if results[0]["hash"].lower() != tip.hash:
                raise _Reorged

        results = await self.rpc.batch(calls, check=same_tip)
        return [item for item in results[1] if not item.get("removed")]

    async def _scan_lookalikes(self, through: int) -> None:
        """Transfers to our recent deposit addresses from contracts we do not count: logged
        and counted for review, never observed. Monitoring, not money: it runs when the
        follower is idle at the head and catches up over what was ingested meanwhile, so a
        follower behind the head spends its time on payments. Best effort per range."""
        async with self._session() as session:
            scanned = await repository.lookalike_block(session, self.chain.chain_id)
            recent = await repository.recent_watched(session, self.chain.chain_id, LOOKALIKE_ADDRESSES)
        if scanned is None or not self.lookalike_scan:
            return
        first = scanned + 1
        while first <= through:
            last = min(through, first + self.range_blocks - 1)
            if recent and not await self._check_lookalikes(first, last, recent):
                return  # the provider refused: try again at the next idle step
            async with self._transaction() as session:
                await repository.move_lookalike_block(session, self.chain.chain_id, last)
            first = last + 1

    async def _check_lookalikes(self, first: int, last: int, recent: list[str]) -> bool:
        topics = [decode.TRANSFER_TOPIC, None, [decode.address_topic(a) for a in recent]]
        query = {"fromBlock": hex(first), "toBlock": hex(last), "topics": topics}
        try:
            found = await self.rpc.call("eth_getLogs", query)
        except RangeTooLarge:
            self.range_blocks = max(1, (last - first + 1) // 2)
            return False
        except RpcError as exc:
            log.info("chain.lookalike_check_skipped", chain=self.chain.name, error=str(exc))
            return False
        counted = {t.address for t in self.chain.tokens}
        for item in found:
            if item["address"].lower() not in counted:
                metrics.CHAIN_LOOKALIKE_LOGS.labels(self.chain.name).inc()
                log.warning(
                    "chain.lookalike_ignored",
                    chain=self.chain.name,
                    token=item["address"].lower(),
                    tx_hash=item["transactionHash"],
                    to=decode.topic_address(item["topics"][2]),
                )
        return True

    # --- writes -----------------------------------------------------------------------

    async def _commit(self, read: _Range, confirmed_through: int, synced_at: dt.datetime | None) -> None:
        chain_id, blocks = self.chain.chain_id, read.blocks
        async with self._transaction() as session:
            stored = await repository.cursor(session, chain_id)
            if stored is not None and stored.block_number != blocks[0].number - 1:
                raise AssertionError(f"cursor moved under the leader: {stored} vs {blocks[0].number - 1}")
            await repository.insert_blocks(session, chain_id, blocks)
            fresh = await repository.upsert_observations(session, chain_id, read.observations, confirmed_through)
            await self._emit(session, "seen", fresh)
            await self._emit(session, "confirmed", _first_confirmations(fresh))
            confirmed = await repository.confirm_up_to(session, chain_id, confirmed_through)
            await self._emit(session, "confirmed", _first_confirmations(confirmed))
            await repository.move_cursor(session, chain_id, blocks[-1].number, blocks[-1].hash, synced_at)
        # Every block at the head would be one info line a second: quiet unless it found something.
        (log.info if fresh or len(blocks) > 1 else log.debug)(
            "chain.range_ingested",
            chain=self.chain.name,
            first=blocks[0].number,
            last=blocks[-1].number,
            logs=read.log_count,
            observations=len(fresh),
        )

    async def _observations(self, raw_logs: list[dict[str, Any]]) -> repository.StagedObservations:
        """The logs we count, staged for the upsert. Recipients of transfers are matched
        against the watched addresses in one query, on a pooled connection: read after
        the logs, it sees every address that had been shown to a payer before these logs'
        blocks were mined (an address is committed before it is shown, design 0003).
        Matching goes by the raw recipient topic, so each distinct recipient is decoded
        once, not once per log. The per-log work comes in chunks with a yield between
        them: in a prefetch it shares the thread with the commit of the range before,
        whose statements would otherwise wait up to ~100 ms (10 000 logs) for the loop."""
        transfer_topic = decode.TRANSFER_TOPIC
        # ERC-20 Transfer logs have three topics (ERC-721's has a fourth): the third is `to`.
        recipients = {t[2] for item in raw_logs if (t := item["topics"])[0] == transfer_topic and len(t) == 3}
        owners = await self._watched(recipients)
        found: list[Observation] = []
        records: list[tuple[Any, ...]] = []
        for start in range(0, len(raw_logs), YIELD_EVERY_LOGS):
            chunk: list[Observation] = []
            for item in raw_logs[start : start + YIELD_EVERY_LOGS]:
                topics = item["topics"]
                if topics[0] == transfer_topic:
                    match = owners.get(topics[2]) if len(topics) == 3 else None
                    if match is not None and (observation := decode.transfer(item, match[1], match[0])) is not None:
                        chunk.append(observation)
                elif item["address"].lower() == self.chain.router:
                    paid = decode.intent_paid(item)
                    # Our router, someone else's token: not a payment we count.
                    if paid is not None and self.chain.token(paid.token) is not None:
                        chunk.append(paid)
            found += chunk
            records += repository.stage(chunk).records
            await asyncio.sleep(0)
        return repository.StagedObservations(found, records)

    async def _watched(self, recipient_topics: set[str]) -> dict[str, tuple[str, str]]:
        """Recipient topic -> (address, owner) for the watched ones among them. (Two
        topics can hold one address: the padding or the case may differ.)"""
        if not recipient_topics:
            return {}
        addresses = {t: decode.topic_address(t) for t in recipient_topics}
        async with self.db.session() as session:
            owners = await repository.watched(session, self.chain.chain_id, list(set(addresses.values())))
        return {t: (a, owners[a]) for t, a in addresses.items() if a in owners}

    async def _emit(self, session: AsyncSession, kind: str, rows: Sequence[Stored]) -> None:
        """Tell the subscribers, inside the cursor's transaction. Seen and confirmed are
        recorded on the observation row (generation, confirmed_generation); what takes
        something back (orphaned, deep_reorg) also gets an event row for review."""
        if kind in ("orphaned", "deep_reorg"):
            ids = [r.id for r in rows]
            generations = [r.generation for r in rows]
            recorded = set(await repository.insert_events(session, self.chain.chain_id, kind, ids, generations))
            rows = [r for r in rows if r.id in recorded]
        if not rows:
            return
        metrics.CHAIN_OBSERVATIONS.labels(self.chain.name, kind).inc(len(rows))
        await service.publish(session, kind, self.chain.chain_id, rows)

    # --- reorgs -----------------------------------------------------------------------

    async def _check_tip(self, cursor: Cursor, head: int) -> bool:
        """At the head, a reorg replaces blocks without adding any: compare the block at
        min(head, cursor) with ours. True when our tip is the provider's, so the follower
        is synced; not after a rewind (the new branch is still to be read) nor when the
        provider lacks our tip."""
        if cursor.block_number < 0:
            return True
        height = min(head, cursor.block_number)
        async with self._session() as session:
            ours = await repository.stored_blocks(session, self.chain.chain_id, height, height)
        if height not in ours:
            return True
        theirs = await self.rpc.call("eth_getBlockByNumber", hex(height), False)
        if theirs is None:
            return False
        if theirs["hash"].lower() != ours[height]:
            await self._handle_reorg(cursor)
            return False
        return True

    async def _handle_reorg(self, cursor: Cursor) -> None:
        low = max(0, cursor.block_number - self.chain.depth + 1)
        async with self._session() as session:
            ours = await repository.stored_blocks(session, self.chain.chain_id, low, cursor.block_number)
        fork = await self._fork_point(ours, low, cursor.block_number)
        if fork is None:
            return  # nothing differs: the provider only lacked blocks
        started = time.perf_counter()
        reorg = await self._rewind(fork, cursor.block_number - fork, ours.get(fork))
        metrics.CHAIN_REORGS.labels(self.chain.name, str(reorg.deep).lower()).inc()
        metrics.CHAIN_REORG_DEPTH.labels(self.chain.name).observe(reorg.depth)
        event = "chain.deep_reorg" if reorg.deep else "chain.reorg"
        (log.error if reorg.deep else log.warning)(
            event,
            chain=self.chain.name,
            fork_block=fork,
            depth=reorg.depth,
            orphaned=reorg.orphaned,
            orphaned_confirmed=reorg.orphaned_confirmed,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _fork_point(self, ours: dict[int, str], low: int, high: int) -> int | None:
        """The highest block below the lowest height where the provider shows another hash
        than ours; None if no height differs. Absence proves nothing (a lagging provider),
        a different hash does: every descendant of a replaced block is replaced too."""
        theirs: dict[int, str] = {}
        for start in range(low, high + 1, HEADERS_PER_REQUEST):
            stop = min(high, start + HEADERS_PER_REQUEST - 1)
            calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(start, stop + 1)]
            for header in await self.rpc.batch(calls):
                if header is not None:
                    theirs[int(header["number"], 16)] = header["hash"].lower()
        differing = [n for n in range(low, high + 1) if n in ours and n in theirs and ours[n] != theirs[n]]
        return min(differing) - 1 if differing else None

    async def _rewind(self, fork: int, depth: int, fork_hash: str | None) -> Reorg:
        chain_id = self.chain.chain_id
        async with self._transaction() as session:
            orphaned = await repository.orphan_above(session, chain_id, fork)
            was_seen = [r for r in orphaned if r.was == "seen"]
            was_confirmed = [r for r in orphaned if r.was == "confirmed"]
            await self._emit(session, "orphaned", was_seen)
            await self._emit(session, "deep_reorg", was_confirmed)
            await repository.delete_blocks_above(session, chain_id, fork)
            await repository.move_cursor(session, chain_id, fork, fork_hash if fork >= 0 else None, None)
            # Blocks of the new branch below the old head are unseen: until the follower is
            # back at the head, nothing says money mined before any time has been seen.
            await repository.forget_synced(session, chain_id)
            assert self.chain.confirmations is not None or self.chain.finality == "finalized"
            deep = bool(was_confirmed) or depth >= (self.chain.confirmations or self.chain.depth)
            reorg = Reorg(fork, depth, deep, len(orphaned), len(was_confirmed))
            await repository.record_reorg(session, chain_id, reorg)
        return reorg


async def _wait_or_stop(stop: asyncio.Event | None, seconds: float) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _first_confirmations(rows: Sequence[Stored]) -> list[Stored]:
    """Rows confirmed now for the first time: a log revived after a deep reorg was
    confirmed in an earlier generation and is not reported again."""
    return [r for r in rows if r.status == "confirmed" and r.confirmed_generation == r.generation]


def _continues(tip: Block, headers: list[Block]) -> bool:
    """`headers` are the blocks right above `tip`, each the parent of the next."""
    return all(child.parent_hash == parent.hash for parent, child in itertools.pairwise([tip, *headers]))


def _all_known(headers: list[Any]) -> None:
    if any(h is None for h in headers):
        raise ProviderBehind("block unknown to this provider")
