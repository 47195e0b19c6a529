"""The hot-wallet transaction manager (design 0006): every outgoing transaction — payouts,
refunds, batch settlements, sweeps — goes through here, exactly once whatever crashes.

An outgoing transaction is a `tx_intents` row, planned in its owner's database
transaction. One loop per (chain, signer) then drives intents forward, each step a short
database transaction and an idempotent call to the chain:

    planned ─sign─▶ signed ─send─▶ broadcast ─receipt─▶ mined ─depth─▶ confirmed
       │                              ▲   │                 │
       └─(treasury short too long)─▶ failed ◀─(reverted)────┘ (receipt gone: reorg → broadcast)

* The nonce is allocated under the signer's locked `tx_signers` row in the transaction
  that stores the signed attempt: a crash before commit allocates nothing, and after it
  the stored raw transaction owns the nonce (`UNIQUE (chain_id, signer, nonce)`).
* The raw transaction and its hash are committed before `eth_sendRawTransaction`; after a
  crash they are sent again, which is harmless.
* An attempt not mined within `stuck_after_s` is replaced (same nonce, both fee fields up
  by at least the bump); every attempt is watched and whichever is mined wins.
* Owners (payouts, refunds, sweeps) hear `broadcast`, `confirmed` and `failed` through a
  handler called in the same database transaction that records the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from eth_utils.address import to_checksum_address
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from stablegate.chains.registry import ChainConfig
from stablegate.chains.rpc import RpcClient, RpcError, RpcResponseError
from stablegate.db import Database
from stablegate.kit import failpoints
from stablegate.kit.ids import new_id
from stablegate.observability import metrics, tracing
from stablegate.settlement import repository
from stablegate.settlement.signers import Eip1559Tx, Signer, sign_transaction

log = structlog.get_logger(__name__)

Outcome = Literal["broadcast", "confirmed", "failed"]
GWEI = 10**9
MAX_SIGN_PER_TICK = 200
MAX_ATTEMPTS = 99  # tx_attempts.attempt bound; a cap reached long before by the fee cap
LOCK_NAMESPACE = 0x5347_5458 << 32  # "SGTX": one advisory lock per (chain, signer)
STANDBY_POLL_S = 2.0
BALANCE_OF = "0x70a08231"  # balanceOf(address)
_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")


@dataclass(frozen=True)
class IntentOutcome:
    """What an owner hears about its transaction."""

    intent_id: str
    purpose: str
    owner_ref: str
    outcome: Outcome
    tx_hash: str | None = None
    error: str | None = None  # failed: 'reverted' or 'treasury_insufficient'
    logs: tuple[dict[str, Any], ...] = ()  # confirmed: the receipt's logs (e.g. what a sweep moved)


Handler = Callable[[AsyncSession, IntentOutcome], Awaitable[None]]
_HANDLERS: dict[str, Handler] = {}


def on_outcome(purpose: str, handler: Handler) -> None:
    """Register the owner of intents of `purpose` (one per purpose)."""
    _HANDLERS[purpose] = handler


@dataclass(frozen=True)
class TxRequest:
    """What an owner wants sent. `token`/`token_amount`: what it takes from the signer's
    token balance, checked before signing (a short treasury waits, alerts, then fails)."""

    chain_id: int
    signer: str
    purpose: str
    owner_ref: str
    to: str
    data: bytes
    gas_limit: int
    value: int = 0
    token: str | None = None
    token_amount: int = 0


async def plan(session: AsyncSession, request: TxRequest, fail_unsigned_after_s: int) -> Any:
    """Record the intent in the owner's transaction (idempotent per owner_ref)."""
    now = dt.datetime.now(dt.UTC)
    values = {
        "id": new_id("txi"),
        "chain_id": request.chain_id,
        "signer": request.signer.lower(),
        "purpose": request.purpose,
        "owner_ref": request.owner_ref,
        "to_address": request.to.lower(),
        "value": request.value,
        "data": request.data,
        "gas_limit": request.gas_limit,
        "token": request.token.lower() if request.token else None,
        "token_amount": request.token_amount,
        "fail_unsigned_at": now + dt.timedelta(seconds=fail_unsigned_after_s),
    }
    row = await repository.insert_intent(session, values)
    metrics.TX_INTENTS.labels(request.purpose).inc()
    log.info("tx.planned", intent_id=row["id"], purpose=request.purpose, owner_ref=request.owner_ref)
    return row


@dataclass(frozen=True)
class FeePolicy:
    max_fee_per_gas_wei: int
    max_priority_fee_wei: int
    min_priority_fee_wei: int
    bump_permille: int = 125
    stuck_after_s: float = 120.0
    fail_unsigned_after_s: int = 6 * 3600
    gas_low_wei: int = 10**16
    treasury_low_units: dict[str, int] = field(default_factory=dict)  # token address → base units

    @classmethod
    def from_settings(cls, settings: Any, chain: ChainConfig) -> FeePolicy:
        return cls(
            max_fee_per_gas_wei=settings.max_fee_per_gas_gwei * GWEI,
            max_priority_fee_wei=settings.max_priority_fee_gwei * GWEI,
            min_priority_fee_wei=settings.min_priority_fee_wei,
            bump_permille=settings.fee_bump_permille,
            stuck_after_s=settings.tx_stuck_after_s,
            fail_unsigned_after_s=settings.tx_fail_unsigned_after_s,
            gas_low_wei=settings.gas_low_wei,
            treasury_low_units={t.address: settings.treasury_low_whole_tokens * 10**t.decimals for t in chain.tokens},
        )

    def bumped(self, old: int) -> int:
        return -(-old * (1000 + self.bump_permille) // 1000)  # ceiling: at least the node's minimum


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def lock_key(chain_id: int, signer: str) -> int:
    return LOCK_NAMESPACE | ((chain_id * 31 + int(signer[2:10], 16)) & 0xFFFF_FFFF)


class TxManager:
    """The loop for one (chain, signer). `tick()` runs one pass (tests drive it step by
    step); `run()` ticks until stopped, as the leader of its advisory lock."""

    def __init__(
        self, db: Database, chain: ChainConfig, signer: Signer, policy: FeePolicy, rpc: RpcClient | None = None
    ) -> None:
        self.db, self.chain, self.signer, self.policy = db, chain, signer, policy
        self.address = signer.address.lower()
        self.rpc = rpc or RpcClient(chain.name, chain.rpc_urls)

    # --- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, poll_interval_s: float = 1.0) -> None:
        async with self._leading(stop) as leading:
            while leading and not stop.is_set():
                try:
                    busy = await self.tick()
                except RpcError as exc:
                    log.warning("tx.tick_failed", chain=self.chain.name, signer=self.address, error=str(exc))
                    busy = 0
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_interval_s)

    @contextlib.asynccontextmanager
    async def _leading(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Stand by until this process holds the (chain, signer) lock; yields False when
        stopped before that."""
        key = lock_key(self.chain.chain_id, self.address)
        async with self.db.engine.connect() as conn:
            try:
                leading = False
                while not stop.is_set():
                    leading = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar())
                    await conn.commit()
                    if leading:
                        log.info("tx.leader_acquired", chain=self.chain.name, signer=self.address)
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), STANDBY_POLL_S)
                yield leading
            finally:
                await conn.invalidate()  # the session lock goes with the connection

    async def tick(self) -> int:
        """One pass; how much happened (0: idle)."""
        with tracing.span("tx.tick", chain_id=self.chain.chain_id, signer=self.address):
            done = await self._fail_unsignable()
            done += await self._sign_planned()
            done += await self._send_signed()
            done += await self._check_receipts()
            return done

    async def drain(self, max_ticks: int = 1000, idle_ticks: int = 1) -> None:
        """Tick until nothing is open (tests, demo); raises if that never happens."""
        for _ in range(max_ticks):
            await self.tick()
            async with self.db.session() as session:
                summary = await repository.signer_summary(session, self.chain.chain_id, self.address)
            if not any(summary.get(s, 0) for s in repository.OPEN_INTENT_STATES):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"transactions still open after {max_ticks} ticks: {summary}")

    # --- planned → signed --------------------------------------------------------------

    async def _sign_planned(self) -> int:
        async with self.db.session() as session:
            rows = await repository.planned(session, self.chain.chain_id, self.address, MAX_SIGN_PER_TICK)
            if not rows:
                return 0
            failpoints.hit("txmanager.before_sign")
            fundable = await self._fundable(session, rows)
            if not fundable:
                return 0
            chain_nonce, fees = await self._chain_nonce_and_fees()
            nonce = await repository.lock_signer(session, self.chain.chain_id, self.address, chain_nonce)
            for row in fundable:
                # A re-planned intent (its nonce was spent elsewhere) keeps its old attempts.
                await self._sign_one(session, row, nonce, int(row["attempts"]), fees, new_nonce=True)
                nonce += 1
            await repository.set_next_nonce(session, self.chain.chain_id, self.address, nonce)
        failpoints.hit("txmanager.after_sign")
        metrics.TX_SIGNED.labels(self.chain.name).inc(len(fundable))
        return len(fundable)

    async def _sign_one(
        self, session: AsyncSession, row: Any, nonce: int, attempt: int, fees: Fees, *, new_nonce: bool
    ) -> dict[str, Any]:
        tx = Eip1559Tx(
            chain_id=self.chain.chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
            max_fee_per_gas=fees.max_fee_per_gas,
            gas_limit=int(row["gas_limit"]),
            to=row["to_address"],
            value=int(row["value"]),
            data=bytes(row["data"]),
        )
        signed = await sign_transaction(self.signer, tx)
        stored = {
            "intent_id": row["id"],
            "attempt": attempt,
            "nonce": nonce,
            "max_fee_per_gas": fees.max_fee_per_gas,
            "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
            "raw_tx": signed.raw,
            "tx_hash": signed.tx_hash,
        }
        await repository.insert_attempt(session, stored)
        if new_nonce:
            await repository.set_intent(session, row["id"], status="signed", nonce=nonce)
        log.info("tx.signed", intent_id=row["id"], nonce=nonce, attempt=attempt, tx_hash=signed.tx_hash)
        return stored

    async def _fundable(self, session: AsyncSession, rows: Sequence[Any]) -> list[Any]:
        """The planned intents the signer's token balances can cover, in order; the rest
        wait (and alert)."""
        tokens = sorted({r["token"] for r in rows if r["token"]})
        balances = await self._token_balances(tokens)
        committed = await repository.committed_token_amounts(session, self.chain.chain_id, self.address)
        spare = {t: balances[t] - committed.get(t, 0) for t in tokens}
        fundable = []
        for row in rows:
            token, amount = row["token"], int(row["token_amount"])
            if token is None or amount <= spare[token]:
                fundable.append(row)
                if token is not None:
                    spare[token] -= amount
            else:
                self._treasury_short(row, spare[token])
        for token in tokens:
            low = balances[token] < self.policy.treasury_low_units.get(token, 0)
            metrics.TREASURY_LOW.labels(self.chain.name, token).set(1 if low else 0)
        return fundable

    def _treasury_short(self, row: Any, spare: int) -> None:
        metrics.TREASURY_LOW.labels(self.chain.name, row["token"]).set(1)
        log.error(
            "tx.treasury_short",
            intent_id=row["id"],
            chain=self.chain.name,
            signer=self.address,
            token=row["token"],
            needed=int(row["token_amount"]),
            spare=spare,
            fails_at=row["fail_unsigned_at"].isoformat(),
        )

    async def _fail_unsignable(self) -> int:
        """Planned intents the treasury could not fund before their deadline fail, and
        their owners return the funds."""
        now = dt.datetime.now(dt.UTC)
        async with self.db.session() as session:
            rows = await repository.due_unsigned(session, self.chain.chain_id, self.address, now)
            for row in rows:
                await repository.set_intent(session, row["id"], status="failed", error="treasury_insufficient")
                await self._notify(session, row, "failed", error="treasury_insufficient")
                log.error("tx.failed_unsigned", intent_id=row["id"], owner_ref=row["owner_ref"])
        return len(rows)

    # --- signed → broadcast ------------------------------------------------------------

    async def _send_signed(self) -> int:
        async with self.db.session() as session:
            pending = await repository.attempts(session, self.chain.chain_id, self.address, ["signed"])
        if not pending:
            return 0
        sent = [a for a in pending if await self._send(a)]
        failpoints.hit("txmanager.after_broadcast")
        async with self.db.session() as session:
            await repository.mark_attempts(session, [a["tx_hash"] for a in sent], "broadcast", sent=True)
            for row in await repository.mark_broadcast(session, sorted({a["intent_id"] for a in sent})):
                await self._notify(session, row, "broadcast")
        metrics.TX_BROADCAST.labels(self.chain.name).inc(len(sent))
        return len(sent)

    async def _send(self, attempt: Any) -> bool:
        """Send a stored raw transaction; True when the node has it (or had it)."""
        raw = "0x" + bytes(attempt["raw_tx"]).hex()
        try:
            await self.rpc.call("eth_sendRawTransaction", raw)
        except RpcResponseError as exc:
            message = str(exc).lower()
            if any(m in message for m in _ALREADY_KNOWN + _NONCE_TOO_LOW):
                # Known, or its nonce is spent: the receipt check tells which attempt won.
                return True
            log.warning("tx.send_refused", intent_id=attempt["intent_id"], tx_hash=attempt["tx_hash"], error=message)
            return False
        log.info("tx.sent", intent_id=attempt["intent_id"], tx_hash=attempt["tx_hash"], nonce=attempt["nonce"])
        return True

    # --- broadcast → mined → confirmed; stuck → replaced -------------------------------

    async def _check_receipts(self) -> int:
        async with self.db.session() as session:
            live = await repository.attempts(session, self.chain.chain_id, self.address, ["broadcast", "mined"])
        if not live:
            return 0
        hashes = [a["tx_hash"] for a in live]
        answers = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        receipts = {h: r for h, r in zip(hashes, answers, strict=True) if r is not None}
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        failpoints.hit("txmanager.after_receipt")
        by_intent: dict[str, list[Any]] = {}
        for a in live:
            by_intent.setdefault(a["intent_id"], []).append(a)
        done = 0
        for intent_id, intent_attempts in by_intent.items():
            done += await self._settle_intent(intent_id, intent_attempts, receipts, head)
        return done

    async def _settle_intent(self, intent_id: str, attempts: list[Any], receipts: dict[str, Any], head: int) -> int:
        mined = next((a for a in attempts if a["tx_hash"] in receipts), None)
        if mined is None:
            if attempts[0]["intent_status"] == "mined":
                return await self._unmined(intent_id, attempts)
            return await self._maybe_replace(intent_id, attempts)
        receipt = receipts[mined["tx_hash"]]
        block = int(receipt["blockNumber"], 16)
        confirmations = head - block + 1
        succeeded = int(receipt["status"], 16) == 1
        deep_enough = confirmations >= (self.chain.confirmations or 1)
        async with self.db.session() as session:
            row = await repository.intent(session, intent_id, for_update=True)
            assert row is not None
            if row["status"] not in ("broadcast", "mined"):
                return 0
            status = "failed" if not succeeded else ("confirmed" if deep_enough else "mined")
            changed = (status, mined["tx_hash"], block) != (row["status"], row["tx_hash"], row["block_number"])
            if not changed:
                return 0
            await self._record_mined(session, row, mined, attempts, receipt, status)
        return 1

    async def _record_mined(
        self, session: AsyncSession, row: Any, mined: Any, attempts: list[Any], receipt: Any, status: str
    ) -> None:
        others = [a["tx_hash"] for a in attempts if a["tx_hash"] != mined["tx_hash"]]
        await repository.mark_attempts(session, [mined["tx_hash"]], "mined")
        if others:
            await repository.mark_attempts(session, others, "replaced")
        await repository.set_intent(
            session,
            row["id"],
            status=status,
            tx_hash=mined["tx_hash"],
            block_number=int(receipt["blockNumber"], 16),
            block_hash=receipt["blockHash"],
            gas_used=int(receipt["gasUsed"], 16),
            error="reverted" if status == "failed" else None,
        )
        log.info("tx.outcome", intent_id=row["id"], status=status, tx_hash=mined["tx_hash"], owner=row["owner_ref"])
        if status in ("confirmed", "failed"):
            metrics.TX_OUTCOMES.labels(self.chain.name, row["purpose"], status).inc()
            error = "reverted" if status == "failed" else None
            logs = tuple(receipt.get("logs") or ()) if status == "confirmed" else ()
            await self._notify(session, row, status, tx_hash=mined["tx_hash"], error=error, logs=logs)  # type: ignore[arg-type]

    async def _unmined(self, intent_id: str, attempts: list[Any]) -> int:
        """A mined attempt's receipt is gone: a reorg dropped its block. Back to broadcast;
        the raw transactions are still valid and are sent again."""
        async with self.db.session() as session:
            await repository.set_intent(session, intent_id, status="broadcast", tx_hash=None, block_number=None)
            await repository.mark_attempts(session, [a["tx_hash"] for a in attempts], "broadcast")
        for a in attempts:
            await self._send(a)
        metrics.TX_REORGED.labels(self.chain.name).inc()
        log.warning("tx.reorged", intent_id=intent_id, chain=self.chain.name)
        return 1

    async def _maybe_replace(self, intent_id: str, attempts: list[Any]) -> int:
        latest = attempts[-1]
        sent_at = latest["broadcast_at"] or latest["created_at"]
        age_s = (dt.datetime.now(dt.UTC) - sent_at).total_seconds()
        if age_s < self.policy.stuck_after_s:
            return 0
        if await self._nonce_taken_by_another(intent_id, attempts):
            return 1
        fees = await self._replacement_fees(latest)
        if fees is None or latest["attempt"] + 1 > MAX_ATTEMPTS:
            async with self.db.session() as session:
                await repository.resend_attempt(session, latest["tx_hash"])
            await self._send(latest)  # the node may have dropped it: keep it known
            log.warning("tx.stuck_at_cap", intent_id=intent_id, tx_hash=latest["tx_hash"])
            return 0
        async with self.db.session() as session:
            row = await repository.intent(session, intent_id, for_update=True)
            if row is None or row["status"] != "broadcast":
                return 0
            attempt = int(latest["attempt"]) + 1
            replacement = await self._sign_one(session, row, int(latest["nonce"]), attempt, fees, new_nonce=False)
        # Stored first, sent now: the old attempt stays watched until one of them is mined.
        if await self._send(replacement):
            async with self.db.session() as session:
                await repository.mark_attempts(session, [replacement["tx_hash"]], "broadcast", sent=True)
        metrics.TX_REPLACED.labels(self.chain.name).inc()
        log.warning("tx.replaced", intent_id=intent_id, attempt=latest["attempt"] + 1, age_s=round(age_s, 1))
        return 1

    async def _nonce_taken_by_another(self, intent_id: str, attempts: list[Any]) -> bool:
        """The chain counts past our nonce, yet none of our attempts has a receipt (read
        after the count, so a just-mined attempt of ours is seen): the key was used outside
        the manager and spent the nonce. None of our attempts can ever be mined now, so the
        intent goes back to planned and gets a new nonce."""
        chain_nonce = int(
            await self.rpc.call("eth_getTransactionCount", to_checksum_address(self.address), "latest"), 16
        )
        if chain_nonce <= int(attempts[0]["nonce"]):
            return False
        answers = await self.rpc.batch([("eth_getTransactionReceipt", [a["tx_hash"]]) for a in attempts])
        if any(answer is not None for answer in answers):
            return False
        async with self.db.session() as session:
            await repository.clear_attempts(session, intent_id)
            await repository.set_intent(session, intent_id, status="planned", nonce=None)
        log.error("tx.nonce_taken", intent_id=intent_id, nonce=int(attempts[0]["nonce"]), chain_nonce=chain_nonce)
        return True

    async def _replacement_fees(self, latest: Any) -> Fees | None:
        """Both fee fields up by at least the bump, and at least today's market; None when
        the cap leaves no room for a valid replacement."""
        _, market = await self._chain_nonce_and_fees()
        priority = max(self.policy.bumped(int(latest["max_priority_fee_per_gas"])), market.max_priority_fee_per_gas)
        max_fee = max(self.policy.bumped(int(latest["max_fee_per_gas"])), market.max_fee_per_gas, priority)
        if max_fee > self.policy.max_fee_per_gas_wei:
            return None
        return Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority)

    # --- chain reads -------------------------------------------------------------------

    async def _chain_nonce_and_fees(self) -> tuple[int, Fees]:
        nonce_hex, block, tip_hex, gas_hex = await self.rpc.batch(
            [
                ("eth_getTransactionCount", [to_checksum_address(self.address), "latest"]),
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_maxPriorityFeePerGas", []),
                ("eth_getBalance", [to_checksum_address(self.address), "latest"]),
            ]
        )
        self._check_gas(int(gas_hex, 16))
        policy = self.policy
        priority = min(max(int(tip_hex, 16), policy.min_priority_fee_wei), policy.max_priority_fee_wei)
        base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
        # Twice the base fee stays valid through several full blocks of rising fees.
        max_fee = min(2 * base_fee + priority, policy.max_fee_per_gas_wei)
        return int(nonce_hex, 16), Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=min(priority, max_fee))

    def _check_gas(self, balance_wei: int) -> None:
        low = balance_wei < self.policy.gas_low_wei
        metrics.GAS_LOW.labels(self.chain.name, self.address).set(1 if low else 0)
        if low:
            log.error("tx.gas_low", chain=self.chain.name, signer=self.address, balance_wei=balance_wei)

    async def _token_balances(self, tokens: Sequence[str]) -> dict[str, int]:
        if not tokens:
            return {}
        holder = self.address[2:].rjust(64, "0")
        calls = [("eth_call", [{"to": t, "data": BALANCE_OF + holder}, "latest"]) for t in tokens]
        answers = await self.rpc.batch(calls)
        return {t: int(a, 16) if a not in (None, "0x") else 0 for t, a in zip(tokens, answers, strict=True)}

    # --- owners ------------------------------------------------------------------------

    @staticmethod
    async def _notify(
        session: AsyncSession,
        row: Any,
        outcome: Outcome,
        tx_hash: str | None = None,
        error: str | None = None,
        logs: tuple[dict[str, Any], ...] = (),
    ) -> None:
        handler = _HANDLERS.get(row["purpose"])
        if handler is not None:
            news = IntentOutcome(row["id"], row["purpose"], row["owner_ref"], outcome, tx_hash, error, logs)
            await handler(session, news)
